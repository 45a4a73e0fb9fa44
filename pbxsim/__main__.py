"""Run the simulator standalone so a daemon can be pointed at it: python -m pbxsim."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from . import ScaledClock, Simulator


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pbxsim", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5038)
    parser.add_argument("--scale", type=float, default=1.0, help="simulated seconds per real second")
    parser.add_argument(
        "--dialplan", type=Path, required=True, help="the extensions.conf to run (e.g. leadrouter's shipped one)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(_serve(args.host, args.port, args.scale, args.dialplan))
    except KeyboardInterrupt:
        return 130  # stopped with Ctrl-C, the usual way
    return 0


async def _serve(host: str, port: int, scale: float, dialplan: Path) -> None:
    async with Simulator(clock=ScaledClock(scale), dialplan=dialplan, host=host, port=port) as sim:
        logging.getLogger("pbxsim").info(
            "AMI simulator on %s:%d (scale %g); login leadrouter/s3cret", host, sim.port, scale
        )
        await asyncio.Event().wait()


if __name__ == "__main__":
    sys.exit(main())
