"""Token scopes: a CRM's intake token posts leads but reads no stats (403); a supervisor's token reads
stats but posts nothing; several tokens per scope, from the config and from files (systemd
credentials); guessing is cut short per address and logged once per burst."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from api.auth import (
    SESSION_COOKIE,
    Authenticator,
    AuthLimits,
    Forbidden,
    Sessions,
    TokenScope,
    TooManyFailures,
    Unauthorized,
    session_key,
)
from pbxsim import Behaviour, World
from tests.conftest import JsonLog
from tests.integration.rig import running

ROUTING = {
    "version": 1,
    "managers": [{"id": "anna", "name": "Anna", "extension": "101"}],
    "scenarios": [{"name": "default"}],
}
INTAKE_OLD, INTAKE_NEW = "intake-token-old-0123456789", "intake-token-new-0123456789"
SUPERVISOR, FROM_FILE = "supervisor-token-0123456789", "supervisor-file-token-012345"


@pytest.fixture
async def rig(tmp_path: Path, database_url: str):  # type: ignore[no-untyped-def]
    credentials = tmp_path / "supervisor-tokens"
    credentials.write_text(f"# one a line\n{FROM_FILE}\n")
    http = {
        "tokens": {"intake": [INTAKE_OLD, INTAKE_NEW], "supervisor": [SUPERVISOR]},
        "token_files": {"supervisor": str(credentials)},
        "max_auth_failures": 5,
    }
    world = World(clients={"79161234567": Behaviour(answer_after=None)})
    async with running(tmp_path, database=database_url, world=world, routing=ROUTING, sections={"http": http}) as rig:
        yield rig


def _client(rig, token: str | None) -> httpx.AsyncClient:  # type: ignore[no-untyped-def]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=str(rig.http.base_url), headers=headers)


async def test_each_scope_reaches_its_endpoints_only(rig) -> None:  # type: ignore[no-untyped-def]
    async with _client(rig, INTAKE_OLD) as old, _client(rig, INTAKE_NEW) as new:
        created = await old.post("/leads", json={"phone": "+79161234567"})
        assert created.status_code == 201
        assert (await new.post("/leads", json={"phone": "+79161234568"})).status_code == 201
        lead = f"/leads/{created.json()['id']}"
        assert (await new.get(lead)).status_code == 200
        assert (await new.patch(lead, json={"outcome": "won", "author": "crm"})).status_code == 200
        assert (await new.get("/stats/managers")).status_code == 403
    for token in (SUPERVISOR, FROM_FILE):
        async with _client(rig, token) as supervisor:
            assert (await supervisor.get("/stats/managers")).status_code == 200
            assert (await supervisor.get(lead)).status_code == 200
            assert (await supervisor.post("/leads", json={"phone": "+79161234569"})).status_code == 403
            assert (await supervisor.patch(lead, json={"outcome": "lost", "author": "x"})).status_code == 403
    assert (await rig.http.get("/stats/managers")).status_code == 200  # http.token: admin, every scope
    assert sum((await rig.daemon.queries.lead_status_counts()).values()) == 2


async def test_guessing_is_cut_short_per_address_and_logged_once(rig, json_log: JsonLog) -> None:  # type: ignore[no-untyped-def]
    async with _client(rig, "guess-0123456789abcdef") as guesser, _client(rig, None) as anonymous:
        for _ in range(3):
            assert (await guesser.get("/stats/managers")).status_code == 401
        for _ in range(2):
            assert (await anonymous.post("/leads", json={"phone": "+79161234567"})).status_code == 401
        blocked = await guesser.get("/stats/managers")
        assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) > 0
    async with _client(rig, SUPERVISOR) as supervisor:  # same address: a good token waits too
        assert (await supervisor.get("/stats/managers")).status_code == 429
    failures = json_log.events("http.auth_failed")
    assert len(failures) == 1 and failures[0]["address"] == "127.0.0.1"
    assert "guess" not in json_log.lines().__repr__()


def test_the_window_frees_up_and_other_addresses_are_not_blocked() -> None:
    now = [0.0]
    auth = Authenticator({TokenScope.INTAKE: [INTAKE_OLD]}, AuthLimits(max_failures=2, window=60), lambda: now[0])
    for _ in range(2):
        with pytest.raises(Unauthorized):
            auth.check("Bearer wrong", "10.0.0.1", frozenset({TokenScope.INTAKE}))
    with pytest.raises(TooManyFailures) as blocked:
        auth.check(f"Bearer {INTAKE_OLD}", "10.0.0.1", frozenset({TokenScope.INTAKE}))
    assert blocked.value.retry_after == 60
    auth.check(f"Bearer {INTAKE_OLD}", "10.0.0.2", frozenset({TokenScope.INTAKE}))
    now[0] = 60.0
    auth.check(f"Bearer {INTAKE_OLD}", "10.0.0.1", frozenset({TokenScope.INTAKE}))
    with pytest.raises(Unauthorized):  # the scheme matters, not only the token
        auth.check(f"Basic {INTAKE_OLD}", "10.0.0.3", frozenset({TokenScope.INTAKE}))
    for _ in range(3):  # a good token of another scope is refused, and is no guess: no block follows
        with pytest.raises(Forbidden):
            auth.check(f"Bearer {INTAKE_OLD}", "10.0.0.4", frozenset({TokenScope.SUPERVISOR}))
    auth.check(f"Bearer {INTAKE_OLD}", "10.0.0.4", frozenset({TokenScope.INTAKE}))


# -- the dashboard's session cookie -------------------------------------------------------------


async def _login(rig, token: str, **headers: str) -> httpx.Response:  # type: ignore[no-untyped-def]
    async with _client(rig, None) as anonymous:
        return await anonymous.post("/session", json={"token": token}, headers=headers)


def _cookie(response: httpx.Response) -> str:
    name, _, rest = response.headers["set-cookie"].partition("=")
    assert name == SESSION_COOKIE
    return rest.partition(";")[0]


async def test_a_supervisor_token_opens_an_httponly_strict_session_that_reads_stats_only(rig) -> None:  # type: ignore[no-untyped-def]
    assert (await _login(rig, "wrong-token-0123456789")).status_code == 401
    assert (await _login(rig, INTAKE_OLD)).status_code == 403  # a CRM's token opens no dashboard
    response = await _login(rig, SUPERVISOR)
    assert response.status_code == 200
    flags = {part.strip().lower() for part in response.headers["set-cookie"].split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/", "max-age=43200"} <= flags
    assert "secure" not in flags  # plain HTTP here: a Secure cookie would never come back
    behind_tls = await _login(rig, SUPERVISOR, **{"X-Forwarded-Proto": "https"})
    assert "secure" in {part.strip().lower() for part in behind_tls.headers["set-cookie"].split(";")}
    csrf = response.json()["csrf_token"]
    cookie = {"Cookie": f"{SESSION_COOKIE}={_cookie(response)}"}

    async with _client(rig, None) as browser:
        assert (await browser.get("/stats/managers", headers=cookie)).status_code == 200
        assert (await browser.get("/session", headers=cookie)).json()["csrf_token"] == csrf
        # A state-changing request riding the cookie needs the CSRF token, and even with it the
        # session is a supervisor's: no leads, no outcomes.
        post = await browser.post("/leads", json={"phone": "+79161234567"}, headers=cookie)
        assert (post.status_code, post.json()["error"]) == (403, "csrf")
        post = await browser.post("/leads", json={"phone": "+79161234567"}, headers={**cookie, "X-CSRF-Token": csrf})
        assert (post.status_code, post.json()["error"]) == (403, "forbidden")
        value = _cookie(response)
        forged = {"Cookie": f"{SESSION_COOKIE}={value[:-1]}{'1' if value.endswith('0') else '0'}"}  # one hex digit off
        assert (await browser.get("/stats/managers", headers=forged)).status_code == 401

        # Logging out needs the CSRF token too (another site cannot log a supervisor out), then
        # the cookie is refused even though a copy of it survives.
        assert (await browser.delete("/session", headers=cookie)).status_code == 403
        assert (await browser.get("/stats/managers", headers=cookie)).status_code == 200
        out = await browser.delete("/session", headers={**cookie, "X-CSRF-Token": csrf})
        assert out.status_code == 204 and f'{SESSION_COOKIE}=""' in out.headers["set-cookie"]
        assert (await browser.get("/stats/managers", headers=cookie)).status_code == 401
        assert (await browser.get("/session", headers=cookie)).status_code == 401


def test_a_session_expires_and_a_token_rotation_ends_it() -> None:
    now = [1_000_000.0]
    sessions = Sessions(session_key("token-a"), ttl=3600, clock=lambda: now[0])
    session, cookie = sessions.open()
    assert sessions.find(cookie) == session
    assert Sessions(session_key("token-b"), ttl=3600, clock=lambda: now[0]).find(cookie) is None
    now[0] += 3601
    assert sessions.find(cookie) is None
    assert sessions.find("9999999999.nonce.signature") is None


def test_odd_cookies_and_tokens_are_refused_not_crashed_on() -> None:
    sessions = Sessions(session_key("token-a"), ttl=3600, clock=lambda: 1_000_000.0)
    for cookie in ("9" * 5000 + ".n.s", "١٢٣.n.s", "", "..", "12.\udcff.s"):
        assert sessions.find(cookie) is None
    authenticator = Authenticator({TokenScope.SUPERVISOR: ["supervisor-token-0123456789"]})
    with pytest.raises(Unauthorized):
        authenticator.check("Bearer \ud800", "10.0.0.1", frozenset({TokenScope.SUPERVISOR}))
