"""How many clients to dial for the free managers.

``progressive`` dials one client per free manager: nobody answered waits for long, but at a 30 %
answer rate managers spend most of their time waiting for someone to pick up. ``predictive``
dials more clients than there are free managers when few answer, as many as keep the expected
share of answered clients who would find no manager under a target:

* the answer rate ``p`` and the mean talk time are measured over the last ``window`` seconds;
* the managers who can take a client answered now are the free ones not spoken for by clients
  on hold, plus those expected to finish a talk within the hold limit (a talking manager frees
  up within it with probability ``1 - exp(-hold_limit / mean talk)``);
* of ``n`` clients ringing, ``X ~ Binomial(n, p)`` answer; the share left without a manager is
  ``E[max(0, X - m)] / E[X]``, and ``n`` is the largest that keeps it under the target.

The target is half of ``abandon_cap`` (regulators cap abandons at 3 % for predictive diallers),
so that chance keeps the measured rate under the cap, while the abandon rate measured over the
window stays under the cap; above it the target shrinks in proportion, so a run of bad luck
dials more cautiously until the window forgets it. Never fewer clients than
progressive would dial, never more than ``max_ratio`` per manager who can take one. Until
``min_sample`` attempts ended in the window it dials progressively (a cold start, a quiet night).

An attempt counts when the client's line decided it (busy, no answer, unreachable, answered);
attempts the PBX failed or whose fate was lost say nothing of the clients. An answered client is
abandoned when he never reached a manager: given up after the hold limit (``no_manager``) or
hanging up while he waited (``abandoned``); both are what dialling ahead risks.
"""

from __future__ import annotations

import enum
import functools
import math
from collections import deque
from dataclasses import dataclass

# Of the abandon cap, the expected abandon rate aimed at: the measured one varies around it.
TARGET_SHARE = 0.5


class PacingMode(enum.StrEnum):
    PROGRESSIVE = "progressive"
    PREDICTIVE = "predictive"


@dataclass(frozen=True, slots=True)
class Pacing:
    mode: PacingMode = PacingMode.PROGRESSIVE
    abandon_cap: float = 0.03  # share of answered clients who may get no manager
    window: float = 900.0  # seconds of attempts the rates are measured over
    max_ratio: float = 3.0  # clients ringing per manager who can take one, at most
    min_sample: int = 20  # attempts ended in the window before dialling ahead


@dataclass(slots=True)
class _Second:
    """The attempts that ended within one whole second."""

    at: int  # the second, monotonic
    attempts: int = 0
    answered: int = 0
    abandoned: int = 0  # answered, and never reached a manager
    talks: int = 0  # attempts in which a manager talked to the client
    talk_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class PacingReading:
    """The attempts that ended in the window."""

    attempts: int
    answered: int
    abandoned: int
    talks: int
    talk_seconds: float

    @property
    def answer_rate(self) -> float | None:
        return self.answered / self.attempts if self.attempts else None

    @property
    def abandon_rate(self) -> float | None:
        return self.abandoned / self.answered if self.answered else None

    @property
    def mean_talk(self) -> float | None:
        return self.talk_seconds / self.talks if self.talks else None


class PacingMeter:
    """The attempts that ended in the last ``window`` seconds, counted per whole second.

    The counts are kept as attempts end and leave the window, and the window holds a bucket per
    second, not a record per attempt: at 200 attempts a second a record each was 180,000 live
    objects over the default window for every full garbage collection to walk (and they were
    dropped only when read, which progressive pacing never does: memory grew without bound).
    """

    def __init__(self, pacing: Pacing) -> None:
        self.pacing = pacing
        self._seconds: deque[_Second] = deque()
        self._total = _Second(0)

    def ended(self, at: float, *, answered: bool, abandoned: bool, talk: float | None) -> None:
        second = math.floor(at)
        if not self._seconds or self._seconds[-1].at != second:
            self._seconds.append(_Second(second))
        for counts in (self._seconds[-1], self._total):
            counts.attempts += 1
            counts.answered += answered
            counts.abandoned += abandoned and answered
            if talk is not None:
                counts.talks += 1
                counts.talk_seconds += talk
        self._forget(at)

    def reading(self, now: float) -> PacingReading:
        self._forget(now)
        total = self._total
        return PacingReading(total.attempts, total.answered, total.abandoned, total.talks, total.talk_seconds)

    def _forget(self, now: float) -> None:
        """Drop the seconds that ended before the window began (one that straddles its start stays)."""
        horizon = now - self.pacing.window
        seconds, total = self._seconds, self._total
        while seconds and seconds[0].at + 1 <= horizon:
            gone = seconds.popleft()
            total.attempts -= gone.attempts
            total.answered -= gone.answered
            total.abandoned -= gone.abandoned
            total.talks -= gone.talks
            total.talk_seconds -= gone.talk_seconds
        if not seconds:
            total.talk_seconds = 0.0  # no rounding left over once the window is empty


@dataclass(frozen=True, slots=True)
class Floor:
    """What the dialer has now."""

    free: int  # managers free
    holding: int  # answered clients waiting for one
    ringing: int  # clients dialled, not answered yet
    talking: int  # managers talking to our clients
    hold_limit: float  # seconds an answered client may wait


def clients_to_dial(pacing: Pacing, reading: PacingReading, floor: Floor) -> int:
    """How many more clients to dial now (may be 0 or less: none)."""
    progressive = floor.free - floor.holding - floor.ringing
    answer_rate = reading.answer_rate
    if pacing.mode is PacingMode.PROGRESSIVE or reading.attempts < pacing.min_sample or not answer_rate:
        return progressive
    abandon_rate = reading.abandon_rate or 0.0
    target = pacing.abandon_cap * TARGET_SHARE
    if abandon_rate > pacing.abandon_cap:
        target *= pacing.abandon_cap / abandon_rate
    mean_talk = reading.mean_talk
    freeing = floor.talking * (1 - math.exp(-floor.hold_limit / mean_talk)) if mean_talk else 0.0
    takers = floor.free - floor.holding + freeing
    if takers < 1:
        return progressive
    ringing = _ringing_allowed(math.floor(takers), round(answer_rate, 2), round(target, 4), pacing.max_ratio)
    return max(progressive, ringing - floor.ringing)


@functools.lru_cache(maxsize=4096)
def _ringing_allowed(takers: int, answer_rate: float, target: float, max_ratio: float) -> int:
    """The most clients that may ring at once for ``takers`` managers: the expected share of the
    answered who find none stays within ``target``. Cached: the dialer asks at every dispatch."""
    most = max(takers, math.floor(takers * max_ratio))
    allowed = takers
    for ringing in range(takers + 1, most + 1):
        if _left_without(ringing, takers, answer_rate) > target * ringing * answer_rate:
            break
        allowed = ringing
    return allowed


def _left_without(ringing: int, takers: int, answer_rate: float) -> float:
    """E[max(0, X - takers)] for X ~ Binomial(ringing, answer_rate)."""
    miss = 1.0 - answer_rate
    return sum(
        (answered - takers) * math.comb(ringing, answered) * answer_rate**answered * miss ** (ringing - answered)
        for answered in range(takers + 1, ringing + 1)
    )
