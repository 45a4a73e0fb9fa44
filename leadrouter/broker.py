"""A private mosquitto for the demo and the tests when no broker is reachable."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def reachable(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 0.5)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


@contextlib.asynccontextmanager
async def private_mosquitto() -> AsyncIterator[int]:
    """Start mosquitto on a free loopback port for the block's lifetime; yields the port."""
    # Debian installs it in /usr/sbin, which is not on every user's PATH.
    binary = shutil.which("mosquitto", path=os.environ.get("PATH", "") + os.pathsep + "/usr/sbin")
    if binary is None:
        raise FileNotFoundError("mosquitto is not installed (Debian: apt-get install mosquitto)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="leadrouter-mqtt-") as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        proc = await asyncio.create_subprocess_exec(
            binary, "-c", str(conf), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        try:
            for _ in range(100):
                if await reachable("127.0.0.1", port):
                    break
                if proc.returncode is not None:
                    raise RuntimeError(f"mosquitto exited with {proc.returncode}")
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError("mosquitto did not start listening")
            yield port
        finally:
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()
