"""``leadrouter what-if``: the stored leads of a period replayed through another routing file."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from leadrouter.cli import main
from router.model import Call, CallState, Disposition, Lead, LeadStatus, LegResult, ManagerLeg
from storage.engine import Database
from storage.uow import SqlUnitOfWork

MANAGERS = [{"id": "anna", "name": "Anna", "extension": "101"}, {"id": "boris", "name": "Boris", "extension": "102"}]


async def _store(db: Database, lead_id: int, ago: timedelta, manager: str, vip: bool) -> None:
    start = datetime.now(UTC) - ago
    lead = Lead(phone=f"+7916000000{lead_id}", name="", source="site", external_id=None,
                payload={"tags": ["vip"]} if vip else {}, created_at=start, status=LeadStatus.ASSIGNED,
                owner_id=manager)  # fmt: skip
    async with SqlUnitOfWork(db) as uow:
        await uow.leads.add([lead])
        assert lead.id is not None
        call = Call(lead_id=lead.id, attempt=1, scenario="default", channel_id=f"lr-{lead.id}", phone=lead.phone,
                    started_at=start, state=CallState.ENDED, answered_at=start + timedelta(seconds=5),
                    bridged_at=start + timedelta(seconds=8), ended_at=start + timedelta(seconds=60),
                    manager_id=manager, disposition=Disposition.COMPLETED)  # fmt: skip
        call.legs.append(ManagerLeg(manager, start + timedelta(seconds=5), start + timedelta(seconds=8),
                                    start + timedelta(seconds=60), LegResult.ANSWERED))  # fmt: skip
        await uow.calls.add([call])
        await uow.calls.update([call])
        await uow.commit()


async def test_what_if_counts_leads_per_scenario_and_manager_and_lists_those_that_change_hands(
    tmp_path: Path, db: Database, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await _store(db, 1, timedelta(days=2), "boris", vip=True)  # would be Anna's under the new file
    await _store(db, 2, timedelta(days=1), "anna", vip=False)
    await _store(db, 3, timedelta(days=30), "boris", vip=True)  # before the period
    current = tmp_path / "routing.yaml"
    current.write_text(yaml.safe_dump({"version": 1, "managers": MANAGERS, "scenarios": [{"name": "default"}]}))
    new = tmp_path / "new.yaml"
    vip = {"name": "vip", "match": {"tags": "vip"}, "pool": {"managers": "anna"}}
    new.write_text(
        yaml.safe_dump({"version": 2, "timezone": "UTC", "managers": MANAGERS, "scenarios": [vip, {"name": "default"}]})
    )
    config = tmp_path / "leadrouter.yaml"
    database = {"url": database_url}
    config.write_text(yaml.safe_dump({"ami": {"secret": "unused"}, "routing_file": str(current), "database": database}))

    code = await asyncio.to_thread(main, ["what-if", "--config", str(config), "--routing", str(new), "--since", "7d"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("what-if: 2 leads since ") and lines[0].endswith(f"routed by {new} instead of {current}")
    assert [line.split() for line in lines[2:5]] == [
        ["scenario", "now", "new"],
        ["default", "2", "1"],
        ["vip", "0", "1"],
    ]
    # Lead 2 then goes to Boris: free longer than Anna, who just had lead 1 (longest_idle).
    assert [line.split() for line in lines[7:9]] == [["anna", "1", "1"], ["boris", "1", "1"]]
    assert lines[-3:] == [
        "leads that change hands: 2",
        "  lead 1        +79160000001     vip: boris -> anna",
        "  lead 2        +79160000002     default: anna -> boris",
    ]


def test_what_if_refuses_a_broken_file_and_a_bad_period(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "leadrouter.yaml"
    config.write_text(yaml.safe_dump({"ami": {"secret": "unused"}, "routing_file": str(tmp_path / "r.yaml")}))
    broken = tmp_path / "new.yaml"
    broken.write_text("version: 2\n")
    assert main(["what-if", "--config", str(config), "--routing", str(broken)]) == 1
    assert "timezone" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["what-if", "--config", str(config), "--routing", str(broken), "--since", "7 days"])
