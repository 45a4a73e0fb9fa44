"""Who the simulated phones are and what they do when called.

The default rules mirror the ``sim-clients``/``sim-managers`` contexts of the real-Asterisk
transcripts (tests/fixtures/ami/extensions.conf), so a daemon sees the same shapes of calls
from the simulator as the transcripts show.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Behaviour:
    """What a simulated phone (client number or manager extension) does when it is called."""

    answer_after: float | None = 1.0  # seconds ringing before it answers; None = never answers
    talk: float | None = None  # seconds after answer until THIS side hangs up; None = until the other side does
    busy: bool = False  # rejects at once (BUSY)
    unavailable: bool = False  # cannot be reached (congestion)
    # Seconds it speaks on answering ("hello?" or a voicemail greeting), then silence while it listens;
    # None: no audio at all (a Local channel in Wait() sends no frames: AMD gives up, NOTSURE).
    greeting: float | None = None


CLIENT_ANSWERS = Behaviour(answer_after=1.0, talk=60.0)
CLIENT_BUSY = Behaviour(busy=True)
CLIENT_NEVER_ANSWERS = Behaviour(answer_after=None)
CLIENT_SHORT_CALL = Behaviour(answer_after=1.0, talk=2.0)
MANAGER_ANSWERS = Behaviour(answer_after=1.0, talk=3.0)
MANAGER_NEVER_ANSWERS = Behaviour(answer_after=None)


def transcript_client(number: str) -> Behaviour:
    """The last digit picks the behaviour: 7 busy, 8 never answers, 9 hangs up 2 s after answering."""
    last = number[-1:]
    if last == "7":
        return CLIENT_BUSY
    if last == "8":
        return CLIENT_NEVER_ANSWERS
    if last == "9":
        return CLIENT_SHORT_CALL
    return CLIENT_ANSWERS


def transcript_manager(extension: str) -> Behaviour:
    """2xx never answer; every other extension answers like 1xx and hangs up after 3 s of talk."""
    if len(extension) == 3 and extension.startswith("2") and extension.isdigit():
        return MANAGER_NEVER_ANSWERS
    return MANAGER_ANSWERS


class World:
    """Behaviours per client number and manager extension; tests may change them while calls run."""

    def __init__(
        self,
        clients: Mapping[str, Behaviour] | None = None,
        managers: Mapping[str, Behaviour] | None = None,
        default_client: Callable[[str], Behaviour] = transcript_client,
        default_manager: Callable[[str], Behaviour] = transcript_manager,
    ) -> None:
        self.clients: dict[str, Behaviour] = dict(clients or {})
        self.managers: dict[str, Behaviour] = dict(managers or {})
        self.default_client = default_client
        self.default_manager = default_manager

    def client(self, number: str) -> Behaviour:
        found = self.clients.get(number)
        return found if found is not None else self.default_client(number)

    def manager(self, extension: str) -> Behaviour:
        found = self.managers.get(extension)
        return found if found is not None else self.default_manager(extension)
