"""A database that cannot take writes: leads get 503 + Retry-After, the log says so once, nothing is lost.

The full disk is real: the daemon's SQLite lives on a small tmpfs that a file then fills
(mounting needs root, which CI is). The read-only database is SQLite refusing writes as it
does for a read-only file (``PRAGMA query_only``), as a file system cannot be remounted
read-only while the daemon holds the database open for writing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import RETRY_AFTER_STORAGE
from pbxsim import World
from pbxsim.tests.amitools import wait_until
from tests.conftest import JsonLog, sqlite_read_only
from tests.integration.rig import Rig, running

ROUTING = {
    "version": 1,
    "managers": [{"id": "anna", "name": "Anna", "extension": "101"}],
    "scenarios": [{"name": "default"}],
}
QUICK_PROBE = {"database": {"probe_interval": 0.2}}


def _phone(index: int) -> str:
    return f"+7916800{index:04d}"


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root (CI runs as root)")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=False)


def _fill(directory: Path) -> Path:
    """Write a file until the file system has no byte left."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as out:
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * 65536)
        with pytest.raises(OSError) as full:
            out.write(b"\0")
    assert full.value.errno == errno.ENOSPC
    return filler


def _assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == str(RETRY_AFTER_STORAGE)
    assert response.json()["error"] == "storage_unavailable"
    assert response.json()["problems"][0]["field"] == "database"


async def _health(rig: Rig) -> tuple[int, dict[str, Any]]:
    response = await rig.http.get("/health")
    return response.status_code, response.json()


async def test_a_full_disk_refuses_leads_with_503_logs_once_and_stores_every_201(
    small_filesystem: Path, json_log: JsonLog
) -> None:
    async with running(small_filesystem, world=World(), routing=ROUTING, sections=QUICK_PROBE) as rig:
        # Only the API writes here: dialled calls would write too, with retries of their own.
        rig.daemon.dialer.stop_dialing()
        accepted = [(await rig.post(phone=_phone(0))).json()["id"]]
        filler = _fill(small_filesystem)

        refused = 0
        for index in range(1, 41):
            response = await rig.post(phone=_phone(index), payload={"note": "x" * 2000})
            if response.status_code == 201:  # whatever still fitted is stored, and answered so
                accepted.append(response.json()["id"])
            else:
                _assert_refused(response)
                refused += 1
        assert refused >= 30
        status, body = await _health(rig)
        assert status == 503 and body["status"] == "unhealthy"
        assert body["checks"]["database"]["state"] == "failing"
        assert "full" in body["checks"]["database"]["error"]
        assert "leadrouter_database_writable 0.0" in (await rig.http.get("/metrics")).text

        # Ops free some space: the daemon notices by itself, with no lead posted to prove it.
        filler.unlink()
        await wait_until(lambda: rig.daemon.database.writable, 5, "the probe's write to succeed")
        status, body = await _health(rig)
        assert status == 200 and body["checks"]["database"]["state"] == "up"
        after = await rig.post(phone=_phone(99))
        assert after.status_code == 201
        accepted.append(after.json()["id"])

        # Every 201 is a stored lead, and nothing else was stored.
        for lead_id in accepted:
            assert (await rig.http.get(f"/leads/{lead_id}")).status_code == 200
        assert sum((await rig.daemon.queries.lead_status_counts()).values()) == len(accepted)

    (failing,) = json_log.events("database.failing")
    assert "database or disk is full" in failing["error"]
    assert len(json_log.events("database.recovered")) == 1
    # Not a traceback per refused lead: no line carries one, and uvicorn has nothing to report.
    assert [line for line in json_log.lines() if "exception" in line] == []
    assert [line for line in json_log.lines() if line["logger"].startswith("uvicorn") and line["level"] != "info"] == []


async def test_a_read_only_database_refuses_leads_with_503_and_recovers_by_itself(
    tmp_path: Path, json_log: JsonLog
) -> None:
    async with running(tmp_path, world=World(), routing=ROUTING, sections=QUICK_PROBE) as rig:
        rig.daemon.dialer.stop_dialing()
        read_only = [True]
        engine = rig.daemon.database.engine.sync_engine

        with sqlite_read_only(engine, read_only):
            # The kept writer is checked out already, and the intake's transactions begin on its
            # driver, not through SQLAlchemy (storage.engine.Database.write): one statement made
            # through SQLAlchemy sets the pragma there too, as the probe's writes later clear it.
            async with rig.daemon.database.write() as conn:
                await conn.exec_driver_sql("SELECT 1")
            for index in range(20):
                _assert_refused(await rig.post(phone=_phone(index)))
            status, body = await _health(rig)
            assert status == 503 and "readonly" in body["checks"]["database"]["error"]
            read_only[0] = False
            await wait_until(lambda: rig.daemon.database.writable, 5, "the probe's write to succeed")
            # Still listening: every connection (the daemon's jobs may have opened several) is made
            # writable again as it is checked out or begins a transaction, as a disk that came back is for all.
            assert (await rig.post(phone=_phone(99))).status_code == 201
        assert sum((await rig.daemon.queries.lead_status_counts()).values()) == 1

    (failing,) = json_log.events("database.failing")
    assert "attempt to write a readonly database" in failing["error"]
    assert len(json_log.events("database.recovered")) == 1
    assert [line for line in json_log.lines() if "exception" in line] == []
