"""Supervisors' stats over HTTP: any period in the company's zone, JSON and CSV, behind the token."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from pbxsim import World
from tests.integration.rig import running
from tests.storage.test_stats import company_day

ROUTING = {
    "version": 2,
    "timezone": "Europe/Moscow",
    "managers": [
        {"id": "anna", "name": "Anna", "extension": "101"},
        {"id": "boris", "name": "Boris", "extension": "102"},
        {"id": "vera", "name": "Vera", "extension": "103"},
    ],
    "scenarios": [{"name": "default"}],
}


@pytest.fixture
async def rig(tmp_path: Path, database_url: str):  # type: ignore[no-untyped-def]
    async with running(tmp_path, database=database_url, world=World(), routing=ROUTING) as rig:
        await company_day(rig.daemon.database)
        yield rig


async def test_a_day_in_the_company_zone_as_json_and_csv(rig) -> None:  # type: ignore[no-untyped-def]
    # No tz given: routing.yaml's Moscow, where Boris's call across midnight gave the 24th 600 s.
    day = await rig.http.get("/stats/managers", params={"date": "2026-11-24"})
    assert day.status_code == 200, day.text
    body = day.json()
    assert (body["zone"], body["from"], body["date"]) == ("Europe/Moscow", "2026-11-23T21:00:00+00:00", "2026-11-24")
    assert [(m["manager_id"], m["calls"], m["talk_seconds"]) for m in body["managers"]] == [
        ("anna", 1, 300.0),
        ("boris", 1, 600.0),
        ("vera", 0, 0.0),
    ]
    boris = await rig.http.get(
        "/stats/managers", params={"from": "2026-11-24", "to": "2026-11-25", "manager": "boris", "format": "csv"}
    )
    assert boris.headers["content-type"].startswith("text/csv")
    assert 'filename="leadrouter-managers-2026-11-24_2026-11-25.csv"' in boris.headers["content-disposition"]
    header, row = boris.text.splitlines()
    assert dict(zip(header.split(","), row.split(","), strict=True))["talk_seconds"] == "1800.0"

    sources = await rig.http.get("/stats/sources", params={"date": "2026-11-24", "format": "csv"})
    assert sources.text.splitlines()[1:] == ["ads,2,1,1,0,50.0,50.0,0.0", "site,2,1,1,1,50.0,50.0,50.0"]
    hours = (await rig.http.get("/stats/hours", params={"date": "2026-11-24"})).json()["hours"]
    assert hours[10] == {"hour": 10, "calls": 2, "answered": 1, "bridged": 1, "talk_seconds": 300.0}

    report = (await rig.http.get("/stats", params={"date": "2026-11-24"})).json()
    assert report["speed_to_lead"]["first_dial"] == {"leads": 3, "p50": 120.0, "p90": 2400.0, "max": 2400.0}
    assert report["never_reached"] == {"leads": 2, "by_status": {"new": 1, "scheduled": 1}, "lead_ids": [2, 4]}
    assert [s["scenario"] for s in report["scenarios"]] == ["(not dialled)", "default", "vip"]
    assert report["fairness"][0]["max_share_pct"] == 50.0
    states = (await rig.http.get("/stats/states", params={"date": "2026-11-24", "manager": "anna"})).json()
    assert states["zone"] == "Europe/Moscow" and [row["manager_id"] for row in states["states"]] == ["anna"]
    assert {"available_seconds", "paused_seconds", "offline_seconds", "known_seconds"} <= states["states"][0].keys()
    paths = {"/stats", "/stats/managers", "/stats/sources", "/stats/scenarios", "/stats/hours", "/stats/states"}
    assert paths <= set((await rig.http.get("/openapi.json")).json()["paths"])


async def test_named_periods_and_bad_queries(rig) -> None:  # type: ignore[no-untyped-def]
    month = (await rig.http.get("/stats/managers", params={"period": "month"})).json()
    assert month["first_day"].endswith("-01") and "date" not in month
    for params, field in [
        ({"period": "year"}, "period"),
        ({"tz": "Mars/Olympus"}, "tz"),
        ({"from": "2026-11-25", "to": "2026-11-24"}, "to"),
        ({"date": "24.11.2026"}, "date"),
        ({"format": "xml"}, "format"),
    ]:
        refused = await rig.http.get("/stats/managers", params=params)
        assert refused.status_code == 422 and refused.json()["problems"][0]["field"] == field, (params, refused.text)


async def test_a_leads_events_as_published(rig) -> None:  # type: ignore[no-untyped-def]
    lead = (await rig.post(phone="+79161234567", source="site")).json()
    await rig.http.patch(f"/leads/{lead['id']}", json={"outcome": "lost", "reason": "too dear", "author": "crm"})
    events = (await rig.http.get(f"/leads/{lead['id']}/events")).json()["events"]
    # The call goes on meanwhile: its events may come before or after the outcome's.
    assert events[0]["type"] == "lead.created" and events[0]["created_at"] is not None
    (outcome,) = [e for e in events if e["type"] == "lead.outcome"]
    assert outcome["payload"]["reason"] == "too dear"
    assert (await rig.http.get("/leads/999/events")).json()["events"] == []


async def test_every_stats_endpoint_needs_the_token(rig) -> None:  # type: ignore[no-untyped-def]
    base = str(rig.http.base_url)
    for path in [
        "/stats",
        "/stats/managers",
        "/stats/sources",
        "/stats/scenarios",
        "/stats/hours",
        "/stats/states",
        "/live",
        "/leads/1/events",
        "/recording-links/x.wav",
    ]:
        for headers in [{}, {"Authorization": "Bearer wrong-token-0123456789"}]:
            async with httpx.AsyncClient(base_url=base, headers=headers) as stranger:
                refused = await stranger.get(path, params={"tz": "Mars/Olympus", "format": "csv"})
            assert refused.status_code == 401, (path, headers, refused.text)
