"""Bearer tokens with scopes, and a brake on guessing them.

Scopes: ``intake`` (CRMs: post leads, report outcomes, read a lead), ``supervisor`` (stats,
lead histories, the dashboard), ``admin`` (everything). Each scope takes several tokens so one
can be rotated in before the old one is removed. Every presented token is compared with every
configured one in constant time, so neither a match nor its position shows in the timing.

Failed attempts are counted per client address: past ``max_failures`` within ``window``
seconds that address gets 429 (even with a good token) until the window has room again, and
the log says ``http.auth_failed`` once per burst, not once per request.

The dashboard logs in once (``POST /session`` with a supervisor or admin token) and then
rides a session cookie: ``HttpOnly`` (no script reads it, so an injected one cannot steal it),
``SameSite=Strict`` (another site's page never sends it), ``Secure`` when the request came over
TLS. The cookie is stateless (an expiry and a nonce signed with a key derived from every
token), so a daemon restart keeps supervisors logged in and rotating a token logs everyone out.
A session grants the ``supervisor`` scope only, whatever token opened it. A request riding the
cookie that changes state must also carry ``X-CSRF-Token``, a value derived from the session
that only the dashboard's own script can learn (``GET /session``, same origin).

Endpoints say what they need with ``dependencies=[Depends(require_scope(TokenScope.SUPERVISOR))]``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog
from fastapi import Request

from api.scopes import TokenScope

log = structlog.get_logger("api")

# A burst of failures from one address ends after this long without one.
BURST_QUIET = 60.0

SESSION_COOKIE = "leadrouter_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Unauthorized(Exception):
    pass


class Forbidden(Exception):
    """A valid token of another scope: no guess, so not counted as a failure."""


class CsrfRefused(Exception):
    """A state-changing request rode the session cookie without the session's X-CSRF-Token."""


class TooManyFailures(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__("too many failed authentications from this address")
        self.retry_after = retry_after


@dataclass(frozen=True)
class AuthLimits:
    max_failures: int = 20
    window: float = 60.0


def session_key(every_token: str) -> bytes:
    """Derived, so neither a cookie nor a CSRF value says anything about a token."""
    return hmac.new(every_token.encode(), b"leadrouter sessions v1", hashlib.sha256).digest()


@dataclass(frozen=True)
class Session:
    nonce: str
    expires: int  # wall-clock seconds

    def csrf_token(self, key: bytes) -> str:
        return hmac.new(key, f"csrf\n{self.nonce}".encode(), hashlib.sha256).hexdigest()


class Sessions:
    """Signed, expiring session cookies, and the ones logged out before their expiry."""

    def __init__(self, key: bytes, ttl: float, clock: Callable[[], float] = time.time) -> None:
        self.key = key
        self.ttl = ttl
        self._clock = clock
        self._closed: dict[str, int] = {}  # nonce -> expiry: after it the cookie is dead anyway

    def _signature(self, expires: int, nonce: str) -> str:
        return hmac.new(
            self.key, f"session\n{expires}\n{nonce}".encode(errors="surrogatepass"), hashlib.sha256
        ).hexdigest()

    def open(self) -> tuple[Session, str]:
        """A new session and its cookie value."""
        session = Session(base64.urlsafe_b64encode(secrets.token_bytes(18)).decode(), int(self._clock() + self.ttl))
        return session, f"{session.expires}.{session.nonce}.{self._signature(session.expires, session.nonce)}"

    def find(self, cookie: str) -> Session | None:
        """The session a cookie stands for, or None when it is forged, expired or logged out."""
        expires, _, rest = cookie.partition(".")
        nonce, _, signature = rest.partition(".")
        if not (expires.isascii() and expires.isdigit() and len(expires) <= 12) or not nonce:
            return None
        good = hmac.compare_digest(signature.encode(), self._signature(int(expires), nonce).encode())
        if not good or int(expires) < self._clock() or nonce in self._closed:
            return None
        return Session(nonce, int(expires))

    def close(self, session: Session) -> None:
        self.revoke(session.nonce, session.expires)

    def revoke(self, nonce: str, expires: int) -> None:
        """Refuse the session from now on (logged out here, or through another daemon)."""
        now = self._clock()
        self._closed = {closed: end for closed, end in self._closed.items() if end >= now}
        if expires >= now:
            self._closed[nonce] = expires


class Authenticator:
    def __init__(
        self,
        tokens: Mapping[TokenScope, Sequence[str]],
        limits: AuthLimits = AuthLimits(),
        clock: Callable[[], float] = time.monotonic,
        sessions: Sessions | None = None,
    ) -> None:
        self._tokens = [(token.encode(), scope) for scope, listed in tokens.items() for token in listed]
        self.sessions = sessions
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
        granted = self._granted(header)
        if granted:
            if granted & (scopes | {TokenScope.ADMIN}):
                return
            raise Forbidden
        self._failed(address, now, scopes)
        raise Unauthorized

    def grants(self, header: str, address: str, scopes: frozenset[TokenScope]) -> bool:
        """Whether ``check`` would let the request through, counting nothing either way: for a path
        that serves the allowed requests itself and leaves every other one to ``check``."""
        granted = self._granted(header)
        return bool(granted & (scopes | {TokenScope.ADMIN})) and not self._wait(address, self._clock())

    def _granted(self, header: str) -> set[TokenScope]:
        """The scopes of the bearer token ``header`` carries (none: not a bearer token of ours)."""
        scheme, _, given = header.partition(" ")
        granted: set[TokenScope] = set()
        presented = given.strip().encode(errors="surrogatepass")  # a JSON login may carry lone surrogates
        for token, token_scope in self._tokens:  # every one, always: no early exit to time
            if secrets.compare_digest(presented, token):
                granted.add(token_scope)
        return granted if scheme.lower() == "bearer" else set()

    def check_session(self, cookie: str, csrf: str | None, address: str, scopes: frozenset[TokenScope]) -> Session:
        """The session behind ``cookie`` if it grants ``scopes``; ``csrf``: the header of a state-changing
        request (None for a safe one). Raises as ``check`` does."""
        now = self._clock()
        wait = self._wait(address, now)
        if wait:
            raise TooManyFailures(wait)
        session = self.sessions.find(cookie) if self.sessions else None
        if session is None or self.sessions is None:
            self._failed(address, now, scopes)
            raise Unauthorized
        if csrf is not None and not hmac.compare_digest(csrf.encode(), session.csrf_token(self.sessions.key).encode()):
            raise CsrfRefused
        if TokenScope.SUPERVISOR not in scopes:
            raise Forbidden
        return session

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
        authenticate(request, wanted)

    return authorized


def authenticate(request: Request, scopes: frozenset[TokenScope]) -> Session | None:
    """Check the request's bearer token, else its session cookie; the session when it rode one."""
    authenticator: Authenticator = request.app.state.authenticator
    address = request.client.host if request.client else "unknown"
    header = request.headers.get("authorization")
    cookie = request.cookies.get(SESSION_COOKIE)
    if header is None and cookie is not None:
        # A browser sends the cookie with any request to us, including one another site's page
        # provokes: a state-changing one must prove it comes from the dashboard's own script.
        csrf = None if request.method in SAFE_METHODS else request.headers.get(CSRF_HEADER, "")
        return authenticator.check_session(cookie, csrf, address, scopes)
    authenticator.check(header or "", address, scopes)
    return None
