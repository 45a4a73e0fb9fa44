"""Bearer tokens with scopes, and a brake on guessing them.

Scopes: ``intake`` (CRMs: post leads, report outcomes, read a lead), ``supervisor`` (stats,
lead histories, the dashboard), ``admin`` (everything). Each scope takes several tokens so one
can be rotated in before the old one is removed. Every presented token is compared with every
configured one in constant time, so neither a match nor its position shows in the timing.

Failed attempts are counted per client address: past ``max_failures`` within ``window``
seconds that address gets 429 (even with a good token) until the window has room again, and
the log says ``http.auth_failed`` once per burst, not once per request.

Endpoints say what they need with ``dependencies=[Depends(require_scope(TokenScope.SUPERVISOR))]``.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import structlog
from fastapi import Request

log = structlog.get_logger("api")

# A burst of failures from one address ends after this long without one.
BURST_QUIET = 60.0


class TokenScope(StrEnum):
    INTAKE = "intake"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


class Unauthorized(Exception):
    pass


class Forbidden(Exception):
    """A valid token of another scope: no guess, so not counted as a failure."""


class TooManyFailures(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__("too many failed authentications from this address")
        self.retry_after = retry_after


@dataclass(frozen=True)
class AuthLimits:
    max_failures: int = 20
    window: float = 60.0


class Authenticator:
    def __init__(
        self,
        tokens: Mapping[TokenScope, Sequence[str]],
        limits: AuthLimits = AuthLimits(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tokens = [(token.encode(), scope) for scope, listed in tokens.items() for token in listed]
        self._limits = limits
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._burst_end: dict[str, float] = {}

    def check(self, header: str, address: str, scopes: frozenset[TokenScope]) -> None:
        """Raise Unauthorized, Forbidden or TooManyFailures unless ``header`` carries a token of ``scopes`` or admin."""
        now = self._clock()
        wait = self._wait(address, now)
        if wait:
            raise TooManyFailures(wait)
        scheme, _, given = header.partition(" ")
        granted: set[TokenScope] = set()
        presented = given.strip().encode()
        for token, token_scope in self._tokens:  # every one, always: no early exit to time
            if secrets.compare_digest(presented, token):
                granted.add(token_scope)
        if scheme.lower() == "bearer" and granted:
            if granted & (scopes | {TokenScope.ADMIN}):
                return
            raise Forbidden
        self._failed(address, now, scopes)
        raise Unauthorized

    def _wait(self, address: str, now: float) -> float:
        stamps = self._failures.get(address)
        if not stamps:
            return 0.0
        while stamps and now - stamps[0] >= self._limits.window:
            stamps.popleft()
        if len(stamps) < self._limits.max_failures:
            return 0.0
        return stamps[0] + self._limits.window - now

    def _failed(self, address: str, now: float, scopes: frozenset[TokenScope]) -> None:
        self._failures.setdefault(address, deque()).append(now)
        if now >= self._burst_end.get(address, 0.0):
            log.warning("http.auth_failed", address=address, scopes=sorted(scopes), burst_quiet=BURST_QUIET)
        self._burst_end[address] = now + BURST_QUIET
        if len(self._failures) > 10_000:  # many addresses: forget those quiet for a window
            self._failures = {a: s for a, s in self._failures.items() if s and now - s[-1] < self._limits.window}
            self._burst_end = {a: end for a, end in self._burst_end.items() if end > now}


def require_scope(*scopes: TokenScope) -> Callable[[Request], Awaitable[None]]:
    """A FastAPI dependency: the request must carry a token of one of ``scopes`` (or an admin token).

    ``async``, as every dependency of the API: FastAPI runs a plain ``def`` one in a worker
    thread, a hand-off that cost a lead more than the check itself.
    """
    wanted = frozenset(scopes)

    async def authorized(request: Request) -> None:
        authenticator: Authenticator = request.app.state.authenticator
        address = request.client.host if request.client else "unknown"
        authenticator.check(request.headers.get("authorization", ""), address, wanted)

    return authorized
