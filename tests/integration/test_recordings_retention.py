"""Recordings older than recordings.retention_days are deleted by a daily job (only ours, only of
ended calls, never one a call still up writes), each deletion logged and its call marked; and
recordings kept elsewhere are reached by a redirect after the same checks."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update
from structlog.testing import capture_logs

from config.problems import ConfigError
from pbxsim import World
from pbxsim.tests.amitools import wait_until
from recordings.retention import sweep
from storage.recordings import SqlRecordings
from storage.schema import calls
from tests.integration.rig import load_written, running
from tests.integration.test_recordings_api import ROUTING, write_wav
from tests.storage.test_stats import add_call, add_lead


async def _calls(rig, now: datetime) -> None:  # type: ignore[no-untyped-def]
    """1 old, 2 old but its file is gone, 3 recent, 4 old but 5 (still up) records into its name."""
    old, recent = now - timedelta(days=40), now - timedelta(days=10)
    async with rig.daemon.database.write() as conn:
        await add_lead(conn, 1, "site", old)
        for call_id, ended, file in (
            (1, old, "leadrouter/lr-1.wav"),
            (2, old, "leadrouter/lr-2.wav"),
            (3, recent, "leadrouter/lr-3.wav"),
            (4, old, "leadrouter/lr-4.wav"),
            (5, None, "leadrouter/lr-4.wav"),
        ):
            start = (ended or now) - timedelta(minutes=5)
            await add_call(conn, call_id, 1, start, ended_at=ended, recording_file=file, attempt=call_id)
        await conn.commit()


async def test_the_daily_job_deletes_old_recordings_of_ended_calls_and_marks_them(tmp_path: Path) -> None:
    folder = tmp_path / "monitor"
    for name in ("lr-1", "lr-3", "lr-4", "someone-elses"):  # an old file no call of ours names
        write_wav(folder / "leadrouter" / f"{name}.wav", 0.1)
    sections = {"recordings": {"directory": str(folder), "retention_days": 30}}
    with capture_logs() as started:
        async with running(tmp_path, world=World(), routing=ROUTING, sections=sections) as rig:
            # The daemon sweeps at start (then daily), beside the rest of its start: its first
            # sweep must be over before the calls below are stored, or it races this test's.
            await wait_until(lambda: any(line["event"] == "recordings.retention" for line in started))
            now = rig.clock.now()
            await _calls(rig, now)
            with capture_logs() as logs:
                swept = await sweep(SqlRecordings(rig.daemon.database), folder, 30, now)
            assert (swept.deleted, swept.missing, swept.in_use) == (1, 1, 1)
            assert sorted(p.name for p in (folder / "leadrouter").iterdir()) == [
                "lr-3.wav",
                "lr-4.wav",
                "someone-elses.wav",
            ]
            audit = [(line["event"], line["call_id"], line["file"]) for line in logs if "call_id" in line]
            assert audit == [
                ("recordings.deleted", 1, "leadrouter/lr-1.wav"),
                ("recordings.missing", 2, "leadrouter/lr-2.wav"),
            ]
            lead = (await rig.http.get("/leads/1")).json()
            marked = {call["id"]: call["recording_deleted_at"] for call in lead["calls"]}
            assert marked[1] is not None and marked[2] is not None and marked[3] is marked[4] is marked[5] is None
            assert (await rig.http.get("/recordings/leadrouter/lr-1.wav")).status_code == 404
            # A second pass finds nothing more to do, and the call still up keeps its file.
            assert await sweep(SqlRecordings(rig.daemon.database), folder, 30, now) == type(swept)(0, 0, 1)

            # The daemon runs the job itself at start (then daily): once call 5 has ended, the shared
            # name's file goes with call 4's retention.
            async with rig.daemon.database.write() as conn:
                await conn.execute(update(calls).where(calls.c.id == 5).values(ended_at=now))
                await conn.commit()
            await rig.stop_daemon()
            await rig.start_daemon()
            await wait_until(lambda: not (folder / "leadrouter" / "lr-4.wav").exists())
            assert (folder / "leadrouter" / "lr-3.wav").exists()


async def test_recordings_kept_elsewhere_are_reached_by_a_redirect_after_the_same_checks(tmp_path: Path) -> None:
    template = "https://files.example.com/rec/{file}?kind=call"
    sections = {"recordings": {"directory": None, "redirect_template": template}}
    async with running(tmp_path, world=World(), routing=ROUTING, sections=sections) as rig:
        link = (await rig.http.get("/recording-links/leadrouter/lr 7.wav")).json()
        async with httpx.AsyncClient(base_url=str(rig.http.base_url)) as browser:
            moved = await browser.get(link["url"])
            assert moved.status_code == 302
            assert moved.headers["location"] == "https://files.example.com/rec/leadrouter/lr%207.wav?kind=call"
            assert (await browser.get("/recordings/leadrouter/lr 7.wav")).status_code == 401
            tampered = link["url"].replace("lr%207", "lr%208")
            assert (await browser.get(tampered)).status_code == 403
        for name in ("../etc/passwd", "%2Fetc%2Fpasswd"):
            assert (await rig.http.get(f"/recording-links/{name}")).status_code == 404
        now = rig.clock.now()
        async with rig.daemon.database.write() as conn:
            await add_lead(conn, 1, "site", now)
            await add_call(conn, 1, 1, now, recording_file="leadrouter/lr-up.wav")  # still up
            await conn.commit()
        assert (await rig.http.get("/recordings/leadrouter/lr-up.wav")).status_code == 409


@pytest.mark.parametrize(
    ("recordings", "reason"),
    [
        ({"directory": "/var/spool/asterisk/monitor", "redirect_template": "https://x.example/{file}"}, "not both"),
        ({"retention_days": 30}, "set it too"),
    ],
)
def test_recording_settings_that_contradict_each_other_are_refused(
    tmp_path: Path, recordings: dict[str, object], reason: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_written(tmp_path, {"ami": {"secret": "s3cret"}, "recordings": recordings})
    (problem,) = caught.value.problems
    assert problem.path == "recordings" and reason in problem.message
