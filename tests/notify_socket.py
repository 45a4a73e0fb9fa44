"""systemd's end of NOTIFY_SOCKET: a real AF_UNIX datagram socket that records what the daemon says."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class FakeSystemd:
    """The receiving end of NOTIFY_SOCKET; records each datagram with when it arrived."""

    address: str  # as NOTIFY_SOCKET spells it
    received: list[tuple[float, str]] = field(default_factory=list)

    def messages(self) -> list[str]:
        return [message for _, message in self.received]

    def arrivals(self, message: str) -> list[float]:
        return [at for at, got in self.received if got == message]

    def said(self, assignment: str) -> bool:
        """Whether any datagram carried this line, e.g. READY=1."""
        return any(assignment in message.split("\n") for message in self.messages())


def _listen(sock: socket.socket, systemd: FakeSystemd, stop: threading.Event) -> None:
    # A thread of its own, so arrivals are timed even while the event loop under test is stuck.
    sock.settimeout(0.05)
    while not stop.is_set():
        try:
            data = sock.recv(4096)
        except TimeoutError:
            continue
        systemd.received.append((time.monotonic(), data.decode()))


@contextlib.contextmanager
def listening(directory: Path, *, abstract: bool = False) -> Iterator[FakeSystemd]:
    """A socket bound at a path in ``directory``, or at an abstract name (NOTIFY_SOCKET=@name)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"leadrouter-test-{os.getpid()}-{id(sock)}"
        sock.bind("\0" + name)
        address = "@" + name
    else:
        address = str(directory / "notify.sock")
        sock.bind(address)
    fake = FakeSystemd(address)
    stop = threading.Event()
    listener = threading.Thread(target=_listen, args=(sock, fake, stop), daemon=True)
    listener.start()
    try:
        yield fake
    finally:
        stop.set()
        listener.join()
        sock.close()
