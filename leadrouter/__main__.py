"""The ``leadrouter`` command (and ``python -m leadrouter``): leadrouter.cli with the garbage
collector off while it loads.

Loading the daemon's libraries makes hundreds of thousands of objects that live as long as the
process, and the collector's passes over them while they are made are wasted: ~60 ms of a start's
CPU on a 2-core machine. ``leadrouter run`` keeps it off until the daemon has started
(Daemon._start freezes what the start made, then turns it on); every other command turns it
back on once parsed.
"""

from __future__ import annotations

import gc
import sys


def main() -> int:
    gc.disable()
    from leadrouter.cli import main as cli

    return cli()


if __name__ == "__main__":
    sys.exit(main())
