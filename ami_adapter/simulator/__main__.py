"""Run the simulator standalone so a daemon can be pointed at it: python -m ami_adapter.simulator."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from leadrouter.clock import ScaledClock

from . import Simulator


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ami_adapter.simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5038)
    parser.add_argument("--scale", type=float, default=1.0, help="simulated seconds per real second")
    parser.add_argument("--dialplan", type=Path, help="an extensions.conf to run instead of the default")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(_serve(args.host, args.port, args.scale, args.dialplan))
    except KeyboardInterrupt:
        return 130  # stopped with Ctrl-C, the usual way
    return 0


async def _serve(host: str, port: int, scale: float, dialplan: Path | None) -> None:
    async with Simulator(clock=ScaledClock(scale), dialplan=dialplan, host=host, port=port) as sim:
        logging.getLogger("ami_adapter.simulator").info(
            "AMI simulator on %s:%d (scale %g); login leadrouter/s3cret", host, sim.port, scale
        )
        await asyncio.Event().wait()


if __name__ == "__main__":
    sys.exit(main())
