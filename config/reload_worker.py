"""Check a routing file in a process of its own and hand the plan back pickled (config/routing.py).

Run as ``python -m config.reload_worker PATH [PBX...]`` (PBX: leadrouter.yaml's PBX names): writes
a pickle of ``("plan", RoutingPlan without its managers, [pickled managers, a piece at a time])``
(config.routing.plan_in_pieces) or ``("problems", [Problem, ...])`` to stdout. A process, not a
thread: YAML parsing, the garbage collections it sets off and pydantic's validation each hold the
GIL for long stretches and would stall the daemon's event loop from a thread just the same.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

from config.problems import ConfigError
from config.routing import load_routing, plan_in_pieces


def main() -> None:
    try:
        result: tuple[object, ...] = ("plan", *plan_in_pieces(load_routing(Path(sys.argv[1]), sys.argv[2:])))
    except ConfigError as exc:
        result = ("problems", exc.problems)
    sys.stdout.buffer.write(pickle.dumps(result))


if __name__ == "__main__":
    main()
