"""``leadrouter stats`` reads the day through the daemon's own wiring: same query, same day, every manager."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import insert

from leadrouter.cli import main
from router.model import Call, Lead
from storage.engine import Database
from storage.schema import manager_states
from storage.uow import SqlUnitOfWork

# 23:30 on the 24th in Moscow, and already 09:30 on the 25th in Auckland.
TALK_STARTED = datetime(2026, 11, 24, 20, 30, tzinfo=UTC)


def _config(tmp_path: Path) -> Path:
    routing = {
        "version": 1,
        "managers": [
            {"id": "anna", "name": "Anna", "extension": "101"},
            {"id": "boris", "name": "Boris", "extension": "102"},
        ],
        "scenarios": [{"name": "default"}],
    }
    (tmp_path / "routing.yaml").write_text(yaml.safe_dump(routing))
    settings = {"ami": {"secret": "unused"}, "database": {"url": f"sqlite+aiosqlite:///{tmp_path / 'lr.db'}"}}
    path = tmp_path / "leadrouter.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


async def _one_talk(url: str) -> None:
    async with Database(url) as db, SqlUnitOfWork(db) as uow:
        lead = Lead(phone="+79161234567", name="", source="", external_id=None, payload={}, created_at=TALK_STARTED)
        await uow.leads.add([lead])
        assert lead.id is not None
        call = Call(lead_id=lead.id, attempt=1, scenario="default", channel_id="lr-1", phone=lead.phone,
                    started_at=TALK_STARTED)  # fmt: skip
        await uow.calls.add([call])
        call.client_answered(TALK_STARTED)
        call.connect_to("anna", TALK_STARTED)
        call.bridged(TALK_STARTED)
        call.hung_up(TALK_STARTED + timedelta(seconds=90), 16)
        await uow.calls.update([call])
        await uow.commit()


async def _paused_at_23_msk(url: str) -> None:
    async with Database(url) as db, db.engine.begin() as conn:
        at = datetime(2026, 11, 24, 20, 0, tzinfo=UTC)
        paused = {"manager_id": "anna", "state": "paused", "previous_state": "available", "reason": "lunch", "at": at}
        await conn.execute(insert(manager_states).values(paused))


def test_stats_of_a_day_in_a_time_zone_list_every_manager(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    assert main(["db-upgrade", "--config", str(config)]) == 0
    asyncio.run(_one_talk(f"sqlite+aiosqlite:///{tmp_path / 'lr.db'}"))
    capsys.readouterr()

    assert main(["stats", "--config", str(config), "--date", "2026-11-24", "--tz", "Europe/Moscow"]) == 0
    moscow = capsys.readouterr().out.splitlines()
    assert moscow[0] == "By manager, 2026-11-24 (Europe/Moscow)"
    assert moscow[1].split()[:9] == [
        "manager",
        "id",
        "name",
        "offers",
        "answered",
        "missed",
        "calls",
        "talk",
        "average",
    ]
    # one offer she answered; calls, talk, average, longest, first and last call, owned, won, lost
    assert moscow[2].split() == ["anna", "Anna", "1", "1", "0", "1", "0:01:30", "0:01:30", "0:01:30",
                                 "2026-11-24", "23:30", "2026-11-24", "23:30", "0", "0", "0"]  # fmt: skip
    assert moscow[3].split() == ["boris", "Boris", "0", "0", "0", "0", "0:00:00", "0:00:00", "0:00:00",
                                 "-", "-", "0", "0", "0"]  # fmt: skip

    # In Auckland the talk fell on the 25th: their 24th had none.
    assert main(["stats", "--config", str(config), "--date", "2026-11-24", "--tz", "Pacific/Auckland"]) == 0
    assert capsys.readouterr().out.splitlines()[2].split()[2] == "0"


def test_periods_tables_and_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    assert main(["db-upgrade", "--config", str(config)]) == 0
    asyncio.run(_one_talk(f"sqlite+aiosqlite:///{tmp_path / 'lr.db'}"))
    capsys.readouterr()
    common = ["stats", "--config", str(config), "--tz", "Europe/Moscow"]

    assert main([*common, "--from", "2026-11-20", "--to", "2026-11-26", "--manager", "anna", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("manager_id,name,offers,answered,missed,calls,talk_seconds,")
    assert lines[1].startswith("anna,Anna,1,1,0,1,90.0,90.0,90.0,2026-11-24T23:30:00+03:00,") and len(lines) == 2

    assert main([*common, "--date", "2026-11-24", "--by", "source", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == [{"source": "", "leads": 1, "reached": 1, "assigned": 1, "won": 0,
                               "reached_pct": 100.0, "assigned_pct": 100.0, "won_pct": 0.0}]  # fmt: skip
    assert report["speed_to_lead"]["manager_bridged"] == {"leads": 1, "p50": 0.0, "p90": 0.0, "max": 0.0}

    assert main([*common, "--date", "2026-11-24", "--by", "hour"]) == 0
    hours = capsys.readouterr().out.splitlines()
    assert hours[0] == "By hour, 2026-11-24 (Europe/Moscow)" and hours[1].split() == ["hour", "calls", "answered",
                                                                                       "bridged", "talk"]  # fmt: skip
    assert hours[2 + 23].split() == ["23", "1", "1", "1", "0:01:30"]

    asyncio.run(_paused_at_23_msk(f"sqlite+aiosqlite:///{tmp_path / 'lr.db'}"))
    assert main([*common, "--date", "2026-11-24", "--by", "state", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "manager_id,name,available_seconds,ringing_seconds,on_call_seconds,wrap_up_seconds,paused_seconds,"
        "offline_seconds,known_seconds",
        "anna,Anna,0.0,0.0,0.0,0.0,3600.0,0.0,3600.0",  # paused from 23:00 to the day's end
        "boris,Boris,0.0,0.0,0.0,0.0,0.0,0.0,0.0",
    ]
    assert main([*common, "--date", "2026-11-24", "--by", "state"]) == 0
    assert capsys.readouterr().out.splitlines()[2].split() == ["anna", "Anna", *["0:00:00"] * 4, "1:00:00",
                                                               "0:00:00", "1:00:00"]  # fmt: skip

    assert main([*common, "--from", "2026-11-26", "--to", "2026-11-20"]) == 2
    assert "ends (2026-11-20) before it starts" in capsys.readouterr().err


def test_an_unknown_time_zone_is_refused_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["stats", "--config", str(_config(tmp_path)), "--tz", "Mars/Olympus"])
    assert exited.value.code == 2
    assert "unknown time zone 'Mars/Olympus'" in capsys.readouterr().err


def test_a_day_no_period_can_cover_is_refused_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for option in ("--date", "--from", "--to"):
        with pytest.raises(SystemExit) as exited:
            main(["stats", "--config", str(_config(tmp_path)), option, "9999-12-31"])
        assert exited.value.code == 2
        assert "9999-12-31: outside 1970-01-01..9999-12-30" in capsys.readouterr().err
