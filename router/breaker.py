"""When the dialer may dial: a circuit breaker on the PBX.

An Originate into a PBX that is down, booting, stopping or refusing calls fails before the
client's phone ever rings. Such a failure costs the lead no attempt, but firing the whole queue
into a dying PBX in a few milliseconds helps nobody, so the breaker stops new dials when

* the AMI link is down, or it is up but the PBX has not said ``FullyBooted`` on this session,
  or the PBX's live calls have not been read since the login (the resync: until then a dial
  could double one the PBX already has);
* the PBX failed ``failures`` Originates within ``window`` seconds (refusals, channels it could
  not create, Originates it never answered).

After a trip it waits ``pause`` seconds, then lets one dial through as a probe: the client's line
answering for it (answer, busy, no answer: the PBX dialled) closes the breaker; another PBX
failure opens it again for twice the pause (up to ``max_pause``). A new session that is booted and
resynced proves the PBX is back by itself and closes the breaker without a probe.

A PBX whose AMI user cannot read system events never says FullyBooted: after ``boot_wait``
seconds without it the breaker takes the PBX as booted (the failures rule still guards).

Pure: times are monotonic seconds handed in by the caller. Each input returns the state change
it caused, if any, for the caller to log.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass


class BreakerState(enum.StrEnum):
    CLOSED = "closed"  # dialling
    OPEN = "open"  # no new dials
    PROBING = "probing"  # one dial allowed; how it ends decides


@dataclass(frozen=True)
class BreakerSettings:
    failures: int = 5
    window: float = 10.0
    pause: float = 15.0
    max_pause: float = 300.0
    boot_wait: float = 30.0


@dataclass(frozen=True, slots=True)
class BreakerChange:
    state: BreakerState
    reason: str


class PbxBreaker:
    def __init__(self, settings: BreakerSettings) -> None:
        self._settings = settings
        self._link_up = False
        self._stopping = False  # the PBX said it is shutting down; its link is about to drop
        self._login_at = 0.0
        self._booted = False
        self._synced = False
        self._failures: deque[float] = deque()
        self._tripped_until: float | None = None  # set while tripped by failures
        self._pause = settings.pause
        self._probe_out = False
        self._current = BreakerChange(BreakerState.OPEN, "AMI not connected yet")

    @property
    def state(self) -> BreakerState:
        return self._current.state

    @property
    def reason(self) -> str:
        return self._current.reason

    # -- inputs ---------------------------------------------------------------------------

    def link_down(self, now: float) -> BreakerChange | None:
        self._link_up = self._booted = self._synced = False
        return self._update(now)

    def shutting_down(self, now: float) -> BreakerChange | None:
        """The PBX stops or restarts: as good as the link down, a moment early."""
        self._stopping = True
        return self.link_down(now)

    def link_up(self, now: float) -> BreakerChange | None:
        """Logged in; the resync of this session is still to come.

        Only ``link_down`` forgets the PBX's ``FullyBooted``: Asterisk sends it right behind the
        login response, so it may well be reported before the login itself.
        """
        self._link_up, self._login_at, self._stopping = True, now, False
        return self._update(now)

    def booted(self, now: float) -> BreakerChange | None:
        self._booted = True
        return self._update(now)

    def synced(self, now: float) -> BreakerChange | None:
        """The PBX answered the resync listing of this session."""
        if self._link_up and not self._synced:
            self._synced = True
            if self._ready(now):
                self._untrip()  # a booted, listed session is proof enough that the PBX is back
        return self._update(now)

    def failed(self, now: float) -> BreakerChange | None:
        """The PBX failed an Originate."""
        self._failures.append(now)
        while self._failures and self._failures[0] <= now - self._settings.window:
            self._failures.popleft()
        if self._probe_out:
            self._probe_out = False
            self._pause = min(self._pause * 2, self._settings.max_pause)
            self._tripped_until = now + self._pause
        elif self._tripped_until is None and len(self._failures) >= self._settings.failures:
            self._tripped_until = now + self._pause
        return self._update(now)

    def succeeded(self, now: float) -> BreakerChange | None:
        """The PBX dialled a client (whatever the client's line then did)."""
        if self._probe_out or (self._tripped_until is not None and now >= self._tripped_until):
            self._untrip()
        return self._update(now)

    def dialling(self, count: int) -> None:
        """``count`` Originates are going out; in PROBING the first is the probe."""
        if count and self.state is BreakerState.PROBING:
            self._probe_out = True

    # -- what the dialer asks -------------------------------------------------------------

    def tick(self, now: float) -> BreakerChange | None:
        """Let time pass: a pause ends, a boot wait runs out."""
        return self._update(now)

    def allowed(self) -> int | None:
        """How many new dials may start now (None: no limit of the breaker's)."""
        match self.state:
            case BreakerState.CLOSED:
                return None
            case BreakerState.PROBING:
                return 0 if self._probe_out else 1
        return 0

    def next_change_in(self, now: float) -> float | None:
        """Seconds until time alone may change the state (a pause or a boot wait ending)."""
        moments = []
        if self._tripped_until is not None and not self._probe_out:
            moments.append(self._tripped_until)
        if self._link_up and not self._booted:
            moments.append(self._login_at + self._settings.boot_wait)
        future = [moment - now for moment in moments if moment > now]
        return min(future, default=None)

    # -- the rules ------------------------------------------------------------------------

    def _ready(self, now: float) -> bool:
        return self._link_up and self._synced and self._seems_booted(now)

    def _seems_booted(self, now: float) -> bool:
        return self._booted or now - self._login_at >= self._settings.boot_wait

    def _untrip(self) -> None:
        self._tripped_until = None
        self._probe_out = False
        self._pause = self._settings.pause
        self._failures.clear()

    def _decide(self, now: float) -> BreakerChange:
        if not self._link_up:
            return BreakerChange(BreakerState.OPEN, "PBX shutting down" if self._stopping else "AMI link down")
        if not self._seems_booted(now):
            return BreakerChange(BreakerState.OPEN, "waiting for FullyBooted")
        if not self._synced:
            return BreakerChange(BreakerState.OPEN, "reading the PBX's live calls")
        if self._tripped_until is not None:
            if self._probe_out or now >= self._tripped_until:
                return BreakerChange(BreakerState.PROBING, "one dial to see whether the PBX takes calls again")
            settings = self._settings
            return BreakerChange(BreakerState.OPEN, f"{settings.failures} PBX failures within {settings.window:g}s")
        if not self._booted:
            waited = f"no FullyBooted {self._settings.boot_wait:g}s after login"
            return BreakerChange(BreakerState.CLOSED, f"{waited} (does the AMI user read system events?)")
        return BreakerChange(BreakerState.CLOSED, "PBX up")

    def _update(self, now: float) -> BreakerChange | None:
        decided, before = self._decide(now), self._current.state
        self._current = decided
        return decided if decided.state is not before else None
