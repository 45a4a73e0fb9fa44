"""Two daemons on one PostgreSQL and one PBX: each singleton job runs in one of them, and a pause,
a resume, a logout and a routing.yaml edit made through one reach the other within a second or
two (storage.cluster.SharedChanges)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.auth import SESSION_COOKIE
from config.routing import RoutingSource
from leadrouter.daemon import Daemon
from pbxsim import Behaviour, World
from pbxsim.tests.amitools import wait_until
from router.board import ManagerState
from tests.integration.rig import TOKEN, running

ROUTING: dict[str, Any] = {
    "version": 2,
    "timezone": "Europe/Moscow",
    "managers": [
        {"id": "anna", "name": "Anna", "extension": "101"},
        {"id": "boris", "name": "Boris", "extension": "102"},
    ],
    "scenarios": [{"name": "default"}],
}
SUPERVISOR = "supervisor-token-0123456789"


def _held_once(job: str, daemons: tuple[Daemon, ...]) -> bool:
    return [job in daemon.cluster.jobs for daemon in daemons].count(True) == 1


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_what_one_daemon_is_told_the_other_applies_within_seconds(tmp_path: Path, database_url: str) -> None:
    world = World(default_manager=lambda _extension: Behaviour(answer_after=1, talk=2))
    async with (
        running(
            tmp_path,
            world=world,
            routing=ROUTING,
            database=database_url,
            sections={"http": {"tokens": {"supervisor": [SUPERVISOR]}}},
        ) as rig,
        Daemon(rig.settings, RoutingSource.load(rig.routing_file), rig.clock) as other,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{other.http_port}") as other_http,
    ):
        first = rig.daemon
        for job in ("webhooks", "sla", "outbox-retention"):  # each run by one of the two, not both
            await wait_until(partial(_held_once, job, (first, other)), 10, f"{job} held by one daemon")
        assert (await rig.http.post("/managers/anna/pause", json={"reason": "lunch"})).status_code == 200
        await wait_until(lambda: other.board.state("anna") == (ManagerState.PAUSED, "lunch"), 5, "anna paused there")
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert (await other_http.post("/managers/anna/resume", headers=bearer)).status_code == 200
        await wait_until(lambda: first.board.state("anna") == (ManagerState.AVAILABLE, None), 5, "anna back here")
        assert other.board.state("anna") == (ManagerState.AVAILABLE, None)

        # A dashboard session logged out through one daemon is refused by the other as well.
        login = await rig.http.post("/session", json={"token": SUPERVISOR})
        cookie = {"Cookie": f"{SESSION_COOKIE}={login.cookies[SESSION_COOKIE]}"}
        assert (await other_http.get("/session", headers=cookie)).status_code == 200
        async with httpx.AsyncClient(base_url=rig.http.base_url) as browser:  # the cookie alone, as a browser
            out = await browser.delete("/session", headers={**cookie, "X-CSRF-Token": login.json()["csrf_token"]})
        assert out.status_code == 204

        async def refused_there() -> bool:
            return (await other_http.get("/session", headers=cookie)).status_code == 401

        await wait_until(refused_there, 5, "the other daemon to refuse the session")

        # A manager added through one daemon: the other reads the same routing.yaml again.
        vera = {"id": "vera", "name": "Vera", "extension": "103"}
        added = await rig.http.post("/managers", json=vera, timeout=30)  # the file is checked in a process of its own
        assert added.status_code == 201, added.text
        await wait_until(lambda: other.board.state("vera") is not None, 5, "vera on the other daemon's board")
