"""`leadrouter pause|resume` against the running daemon: the same endpoints as the API, its answer printed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from leadrouter.cli import main
from pbxsim import World
from tests.integration.rig import TOKEN, running

ROUTING = {
    "version": 2,
    "timezone": "Europe/Moscow",
    "managers": [{"id": "anna", "name": "Anna", "extension": "101"}],
    "scenarios": [{"name": "default"}],
}


@pytest.mark.timeout(60)
async def test_pause_and_resume_reach_the_running_daemon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with running(tmp_path, world=World(clients={}, managers={}), routing=ROUTING) as rig:
        cli = ["--config", str(tmp_path / "leadrouter.yaml"), "--url", str(rig.http.base_url), "--token", TOKEN]

        async def state() -> tuple[str, str | None]:
            (anna,) = (await rig.http.get("/managers")).json()["managers"]
            return anna["state"], anna["reason"]

        assert await asyncio.to_thread(main, ["pause", "anna", "--reason", "lunch", *cli]) == 0
        assert "\nanna\tpaused\tlunch\n" in "\n" + capsys.readouterr().out  # (the daemon's log lines go there too)
        assert await state() == ("paused", "lunch")

        assert await asyncio.to_thread(main, ["resume", "anna", *cli]) == 0
        assert "\nanna\tavailable\n" in "\n" + capsys.readouterr().out
        assert await state() == ("available", None)

        # An unknown manager: the daemon's problem, on stderr, exit 1; nothing changed.
        assert await asyncio.to_thread(main, ["pause", "nobody", "--reason", "lunch", *cli]) == 1
        err = capsys.readouterr().err
        assert err.startswith("leadrouter pause:") and "manager_id" in err, err
        assert await state() == ("available", None)
