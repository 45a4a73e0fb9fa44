"""Token scopes: a CRM's intake token posts leads but reads no stats (403); a supervisor's token reads
stats but posts nothing; several tokens per scope, from the config and from files (systemd
credentials); guessing is cut short per address and logged once per burst."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from api.auth import Authenticator, AuthLimits, Forbidden, TokenScope, TooManyFailures, Unauthorized
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
