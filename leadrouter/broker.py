"""A private mosquitto for the demo and the tests when no broker is reachable."""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def private_mosquitto(
    port: int | None = None,
    state_dir: Path | None = None,
    listener: str = "",
    password_file: Path | None = None,
    acl_file: Path | None = None,
) -> Iterator[int]:
    """Run mosquitto on a loopback port (a free one by default) for the block's lifetime.

    With ``state_dir`` the broker keeps sessions and queued messages across restarts, like
    a production broker would. ``listener``: more lines for the listener (TLS: cafile,
    certfile, keyfile); ``password_file``: only its users may connect; ``acl_file``: who may read
    and write which topics. Blocking on purpose: it is started before anything needs it.
    """
    # Debian installs it in /usr/sbin, which is not on every user's PATH.
    binary = shutil.which("mosquitto", path=os.environ.get("PATH", "") + os.pathsep + "/usr/sbin")
    if binary is None:
        raise FileNotFoundError("mosquitto is not installed (Debian: apt-get install mosquitto)")
    port = port or free_port()
    with tempfile.TemporaryDirectory(prefix="leadrouter-mqtt-") as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        persistence = f"persistence true\npersistence_location {state_dir}/\n" if state_dir else "persistence false\n"
        # Run as whoever started us: as root, mosquitto would switch to its own user, which
        # cannot write a state directory we made.
        user = f"user {getpass.getuser()}\n"
        access = (
            f"allow_anonymous false\npassword_file {password_file}\n" if password_file else "allow_anonymous true\n"
        )
        if acl_file is not None:
            access += f"acl_file {acl_file}\n"
        conf.write_text(f"listener {port} 127.0.0.1\n{listener}{access}{user}{persistence}")
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 5
            while not reachable("127.0.0.1", port):
                if proc.poll() is not None:
                    raise RuntimeError(f"mosquitto exited: {proc.stderr.read().decode() if proc.stderr else ''}")
                if time.monotonic() > deadline:
                    raise RuntimeError("mosquitto did not start listening")
                time.sleep(0.02)
            yield port
        finally:
            proc.terminate()
            proc.wait(timeout=5)
