"""The whole daemon against a real Asterisk running the shipped dialplan, in real time.

Runs when LEADROUTER_ASTERISK names a folder holding ``start-asterisk`` (the team's
shared/asterisk: an upstream Asterisk build with simulated clients and managers on Local
channels); otherwise it is reported as skipped, with the reason. The Asterisk is private to
the test (its own folder and AMI port), includes ami_adapter/asterisk/extensions_leadrouter.conf
unchanged and has the AMI user of deploy/asterisk/manager_leadrouter.conf, so the daemon runs
with exactly the least privilege and event filter we tell ops to configure.

The simulated world (shared/asterisk/sim-extensions.conf): a client number's last digit
picks its behaviour (1, 2, 3 answer after 1 s; 7 busy; 8 never answers); manager 1XX answers
after 1 s and hangs up 3.5 s after answering (Answer() waits 0.5 s for audio, then talks
3 s), 2XX never answers.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml

from ami_adapter.asterisk import SHIPPED_DIALPLAN
from config.routing import RoutingSource
from config.settings import Settings
from leadrouter.daemon import Daemon, SystemClock
from pbxsim.tests.amitools import RawAmi, wait_until
from router.model import Call, Disposition, LeadStatus, LegResult
from tests.integration.rig import load_written

REPO = Path(__file__).resolve().parents[2]
DEPLOY_MANAGER_CONF = REPO / "deploy" / "asterisk" / "manager_leadrouter.conf"
SECRET = "real-asterisk-test-secret"
TOKEN = "real-asterisk-test-token-0123456789"

# Manager 201 comes first in the rotation: a client given to them rings a phone nobody picks
# up and goes back on hold for the next manager.
MANAGERS = {"m201": "201", "m101": "101", "m102": "102", "m103": "103"}
RULES = {"ring_timeout": "2s", "max_attempts": 3, "retry_delays": ["1h"]}
ROUTING = {
    "version": 1,
    "managers": [{"id": mid, "name": f"Manager {ext}", "extension": ext} for mid, ext in MANAGERS.items()],
    "scenarios": [
        # Only 201 takes these: the client waits 3 s at most, then hears the apology.
        {"name": "nobody", "sources": ["night"], "managers": ["m201"], "hold_limit": "3s", **RULES},
        {"name": "default", "hold_limit": "20s", **RULES},
    ],
}
ANSWERS = ("+79160000001", "+79160000002")
APOLOGY = "+79160000003"  # answers too, but its scenario has nobody who answers
BUSY = "+79160000007"
NO_ANSWER = "+79160000008"
ORIGINATE_TIMEOUT = 6  # seconds a client's phone rings before Asterisk gives up
TALK = 3.5  # seconds from a 1XX manager's answer to their hang-up


@dataclass(frozen=True)
class Asterisk:
    folder: Path
    port: int

    def recording(self, name: str) -> Path:
        return self.folder / "var" / "spool" / "monitor" / name


def _start_asterisk_script() -> Path:
    folder = os.environ.get("LEADROUTER_ASTERISK")
    if not folder:
        pytest.skip(
            "needs a real Asterisk: set LEADROUTER_ASTERISK to a folder holding start-asterisk "
            "(e.g. the team's shared/asterisk; .ci/run does when it is there)"
        )
    script = Path(folder) / "start-asterisk"
    if not os.access(script, os.X_OK):
        pytest.skip(f"LEADROUTER_ASTERISK={folder} holds no executable start-asterisk")
    return script


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def asterisk(tmp_path: Path) -> Iterator[Asterisk]:
    script = _start_asterisk_script()
    manager_conf = tmp_path / "manager.conf"
    text = DEPLOY_MANAGER_CONF.read_text(encoding="utf-8")
    manager_conf.write_text(re.sub(r"^secret = change-me.*$", f"secret = {SECRET}", text, flags=re.M))
    folder, port = tmp_path / "asterisk", _free_port()
    start = [str(script), str(folder), "--ami-port", str(port), "--include", str(SHIPPED_DIALPLAN)]
    # The first start on a machine unpacks the build (and may install runtime libraries).
    started = subprocess.run(
        [*start, "--manager-conf", str(manager_conf)], timeout=300, capture_output=True, text=True, check=False
    )
    if started.returncode != 0:
        pytest.fail(f"start-asterisk failed ({started.returncode}): {started.stderr.strip()}")
    try:
        yield Asterisk(folder, port)
    finally:
        subprocess.run([str(script), "--stop", str(folder)], check=False, timeout=30)


def _settings(tmp_path: Path, port: int) -> Settings:
    routing_file = tmp_path / "routing.yaml"
    routing_file.write_text(yaml.safe_dump(ROUTING, sort_keys=False))
    return load_written(
        tmp_path,
        {
            "ami": {"port": port, "secret": SECRET},
            "pbx": {
                "client_channel": "Local/{phone}@sim-clients",
                "manager_channel": "Local/{extension}@sim-managers",
                "manager_device": "Local/{extension}@sim-managers",
                "originate_timeout": f"{ORIGINATE_TIMEOUT}s",
            },
            "database": {"url": f"sqlite+aiosqlite:///{tmp_path / 'lr.db'}"},
            "mqtt": {"enabled": False},
            "http": {"port": 0, "token": TOKEN},
            "recordings": {"url_template": "https://rec.example/{file}"},
            "routing_file": str(routing_file),
        },
    )


@pytest.mark.timeout(360)  # the Asterisk's first start on a machine may apt-get its libraries
async def test_leads_through_the_daemon_and_a_real_asterisk(tmp_path: Path, asterisk: Asterisk) -> None:
    settings = _settings(tmp_path, asterisk.port)
    async with AsyncExitStack() as stack:
        daemon = await stack.enter_async_context(
            Daemon(settings, RoutingSource.load(settings.routing_file), SystemClock())
        )
        http = await stack.enter_async_context(
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{daemon.http_port}", headers={"Authorization": f"Bearer {TOKEN}"}
            )
        )
        await wait_until(lambda: daemon.ami.connected, 10, "AMI login as the least-privilege user")

        ids: dict[str, int] = {}
        for phone in (*ANSWERS, APOLOGY, BUSY, NO_ANSWER):
            source = "night" if phone == APOLOGY else "site"
            response = await http.post("/leads", json={"phone": phone, "source": source})
            assert response.status_code == 201, response.text
            ids[phone] = response.json()["id"]

        async def settled() -> bool:
            counts = await daemon.queries.lead_status_counts()
            if not (
                counts.get("assigned", 0) == 2 and counts.get("scheduled", 0) == 3 and daemon.dialer.live_calls == 0
            ):
                return False
            # Asterisk may send a call's Cdr after its Hangup: the bill comes when it comes.
            for phone in ANSWERS:
                found = await daemon.queries.lead_with_calls(ids[phone])
                if found is None or any(call.pbx_billable_seconds is None for call in found[1]):
                    return False
            return True

        await wait_until(settled, ORIGINATE_TIMEOUT + 20, "two leads assigned, three scheduled, every bill in")
        now = datetime.now(UTC)

        owners = set()
        first_day = now.date()  # of the talks, in UTC: a run may cross midnight
        for phone in ANSWERS:
            found = await daemon.queries.lead_with_calls(ids[phone])
            assert found is not None
            lead, (call,) = found
            assert lead.status is LeadStatus.ASSIGNED and call.disposition is Disposition.COMPLETED
            assert lead.owner_id == call.manager_id and call.manager_id in {"m101", "m102", "m103"}
            owners.add(call.manager_id)
            assert call.bridged_at is not None
            first_day = min(first_day, call.bridged_at.astimezone(UTC).date())
            assert call.hangup_cause == 16  # the manager hung up: normal clearing
            assert call.legs[-1].result is LegResult.ANSWERED
            assert [leg.manager_id for leg in call.legs[:-1]] in ([], ["m201"])
            assert call.talk_seconds == pytest.approx(TALK, abs=0.5)
            # Asterisk bills the client leg from its answer, hold included, flooring each CDR
            # segment (one per manager dialled): the daemon's own clock must agree with it.
            assert call.pbx_billable_seconds is not None and call.hold_seconds is not None
            on_line = call.hold_seconds + call.talk_seconds
            assert on_line - len(call.legs) - 0.5 <= call.pbx_billable_seconds <= on_line + 0.5
            assert call.recording_file == f"leadrouter/{call.channel_id}.wav"
            assert asterisk.recording(call.recording_file).is_file()
        assert len(owners) == 2

        # Nobody answered the night lead: after its hold limit it heard the apology (the shipped
        # leadrouter-sorry context) and hung up; it is called back later.
        found = await daemon.queries.lead_with_calls(ids[APOLOGY])
        assert found is not None
        lead, (sorry,) = found
        assert sorry.disposition is Disposition.NO_MANAGER and sorry.hangup_cause == 16
        assert lead.status is LeadStatus.SCHEDULED and lead.owner_id is None
        assert sorry.bridged_at is None and sorry.answered_at is not None and sorry.ended_at is not None
        # The apology went out when the hold limit passed (or when a manager rung after it failed),
        # and the shipped prompt (1.5 s here) played to its end before the hang-up.
        apology_at = max(
            [sorry.answered_at + timedelta(seconds=3), *(leg.ended_at for leg in sorry.legs if leg.ended_at)]
        )
        assert (sorry.ended_at - apology_at).total_seconds() == pytest.approx(1.5, abs=0.4)
        # Asterisk billed it from the answer: one CDR segment per manager rung, and the last.
        assert sorry.hold_seconds is not None and sorry.pbx_billable_seconds is not None
        assert sorry.hold_seconds - len(sorry.legs) - 1.5 <= sorry.pbx_billable_seconds <= sorry.hold_seconds + 0.5

        # 201 was rung (by whichever client got them first) and never answered, each time for
        # the scenario's 2 s; a client it failed went back on hold.
        legs = [leg for phone in (*ANSWERS, APOLOGY) for leg in (await _only_call(daemon, ids[phone])).legs]
        rang_201 = [leg for leg in legs if leg.manager_id == "m201"]
        assert rang_201 and {leg.result for leg in rang_201} == {LegResult.NO_ANSWER}
        for leg in rang_201:
            assert leg.ended_at is not None
            assert (leg.ended_at - leg.started_at).total_seconds() == pytest.approx(2, abs=0.5)

        for phone, disposition in ((BUSY, Disposition.BUSY), (NO_ANSWER, Disposition.NO_ANSWER)):
            found = await daemon.queries.lead_with_calls(ids[phone])
            assert found is not None
            lead, (call,) = found
            assert call.disposition is disposition and call.answered_at is None and not call.legs
            assert lead.status is LeadStatus.SCHEDULED and lead.owner_id is None
            assert lead.next_attempt_at is not None and lead.next_attempt_at > now
        no_answer = await _only_call(daemon, ids[NO_ANSWER])
        assert no_answer.ring_seconds == pytest.approx(ORIGINATE_TIMEOUT, abs=1)

        # Nobody is left busy: every manager is free on our board and on the PBX.
        _, health = daemon.health()
        assert health["managers_free"] == len(MANAGERS)
        assert {row["call_id"] for row in daemon.board.snapshot()} == {None}
        # (A manager whose phone never rang has no device state yet: unknown counts as idle.)
        assert {row["device"] for row in daemon.board.snapshot()} <= {"free", "unknown"}

        # A supervisor's view of the days of the run: two calls, each about TALK seconds.
        days = {"tz": "UTC", "from": first_day.isoformat(), "to": datetime.now(UTC).date().isoformat()}
        stats = (await http.get("/stats/managers", params=days)).json()["managers"]
        talked = {row["manager_id"]: row for row in stats if row["calls"]}
        assert set(talked) == owners and sum(row["calls"] for row in talked.values()) == 2
        assert sum(row["talk_seconds"] for row in talked.values()) == pytest.approx(2 * TALK, abs=1)


async def _only_call(daemon: Daemon, lead_id: int) -> Call:
    found = await daemon.queries.lead_with_calls(lead_id)
    assert found is not None
    (call,) = found[1]
    return call


@pytest.mark.timeout(360)
async def test_a_call_that_ended_while_the_daemon_was_down_closes_at_asterisks_end(
    tmp_path: Path, asterisk: Asterisk
) -> None:
    """The daemon stops while a client talks; the call ends while it is away, and it starts again
    3 s later: the call closes at Asterisk's own end (its hangup handler's note, read with DBGet
    by the least-privilege user), not when the daemon noticed, with Asterisk's cause."""
    settings = _settings(tmp_path, asterisk.port)
    routing = {**ROUTING, "scenarios": [{"name": "default", "managers": ["m101"], "hold_limit": "20s", **RULES}]}
    settings.routing_file.write_text(yaml.safe_dump(routing, sort_keys=False))
    watcher = await RawAmi.connect(asterisk.port)
    await watcher.login("leadrouter", SECRET, events="call")
    try:
        async with AsyncExitStack() as stack:
            daemon = await stack.enter_async_context(
                Daemon(settings, RoutingSource.load(settings.routing_file), SystemClock())
            )
            http = await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{daemon.http_port}", headers={"Authorization": f"Bearer {TOKEN}"}
                )
            )
            await wait_until(lambda: daemon.ami.connected, 10, "AMI login")
            response = await http.post("/leads", json={"phone": ANSWERS[0], "source": "site"})
            assert response.status_code == 201, response.text
            lead_id = response.json()["id"]

            async def bridged() -> bool:
                found = await daemon.queries.lead_with_calls(lead_id)
                return found is not None and any(call.bridged_at for call in found[1])

            await wait_until(bridged, 15, "the client to be put through")
            channel_id = (await _only_call(daemon, lead_id)).channel_id
        hangup = await watcher.event("Hangup", limit=TALK + 5, Uniqueid=channel_id)
        await asyncio.sleep(3)  # the daemon stays away a while after the call ended
        async with Daemon(settings, RoutingSource.load(settings.routing_file), SystemClock()) as daemon:

            async def closed() -> bool:
                return (await _only_call(daemon, lead_id)).ended_at is not None

            await wait_until(closed, 15, "the adopted call to be closed")
            found = await daemon.queries.lead_with_calls(lead_id)
    finally:
        await watcher.close()
    assert found is not None
    lead, (call,) = found
    ended = datetime.fromtimestamp(float(hangup["Timestamp"]), UTC)
    assert call.disposition is Disposition.COMPLETED and lead.owner_id == "m101"
    assert call.ended_at is not None and call.hangup_cause == int(hangup["Cause"]) == 16
    # The handler notes the end (to the millisecond) as the leg hangs up, just before its Hangup event.
    assert 0 <= (ended - call.ended_at).total_seconds() < 0.1
    assert call.talk_seconds == pytest.approx(TALK, abs=0.5)
