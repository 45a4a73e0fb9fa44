"""200 leads through the real daemon, the PBX simulator over TCP and a real mosquitto."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from pbxsim import Behaviour, World
from pbxsim.tests.amitools import wait_until
from router.model import Disposition, LeadStatus, LegResult
from tests.integration.rig import running

MANAGERS = [(f"m{101 + offset}", str(101 + offset)) for offset in range(10)]  # m109 never answers, m110 is busy
ROUTING = {
    "version": 1,
    "managers": [
        {"id": manager_id, "name": f"Manager {extension}", "extension": extension} for manager_id, extension in MANAGERS
    ],
    "scenarios": [
        {"name": "default", "hold_limit": "60s", "ring_timeout": "8s", "max_attempts": 2, "retry_delays": ["10s"]}
    ],
}
ANSWERING = {manager_id for manager_id, _ in MANAGERS[:8]}  # the eight who pick up
# Each lead's client behaves by its index modulo 10.
KINDS = {
    0: "talks",
    1: "talks",
    2: "talks",
    3: "talks",
    4: "talks",
    5: "busy",
    6: "never_answers",
    7: "unreachable",
    8: "gives_up",  # answers, hangs up 0.3 s later, long before any manager picks up
    9: "talks",
}
CLIENT = {
    "talks": Behaviour(answer_after=2, talk=30),
    "busy": Behaviour(busy=True),
    "never_answers": Behaviour(answer_after=None),
    "unreachable": Behaviour(unavailable=True),
    "gives_up": Behaviour(answer_after=1, talk=0.3),
}
EXPECTED = {
    "talks": (LeadStatus.ASSIGNED, [Disposition.COMPLETED]),
    "busy": (LeadStatus.FAILED, [Disposition.BUSY] * 2),
    "never_answers": (LeadStatus.FAILED, [Disposition.NO_ANSWER] * 2),
    "unreachable": (LeadStatus.FAILED, [Disposition.UNREACHABLE] * 2),
    "gives_up": (LeadStatus.FAILED, [Disposition.ABANDONED] * 2),
}


# Simulated seconds from the CDR's answer to the OriginateResponse's stamp: the simulator sends
# it in the loop turn of the answer (~0.004 here at x30), as Asterisk does 0.5 ms after
# (tests/fixtures/ami/timestamps.txt).
ANSWER_REPORTED_AFTER = 0.01


def _phone(index: int) -> str:
    return f"+7916{5000000 + index:07d}"


@pytest.mark.timeout(180)
async def test_two_hundred_leads_end_where_their_clients_lead_them(
    tmp_path: Path, database_url: str, mosquitto_port: int
) -> None:
    kinds = {index: KINDS[index % 10] for index in range(200)}
    world = World(
        clients={_phone(index)[1:]: CLIENT[kind] for index, kind in kinds.items()},
        managers={
            **{extension: Behaviour(answer_after=3) for _, extension in MANAGERS[:8]},
            "109": Behaviour(answer_after=None),
            "110": Behaviour(busy=True),
        },
    )
    async with running(
        tmp_path, database=database_url, world=world, routing=ROUTING, mqtt_port=mosquitto_port, scale=30
    ) as rig:
        ids = {}
        for index in range(200):
            response = await rig.post(
                phone=_phone(index), name=f"Клиент {index}", source="site", external_id=f"e2e-{index}"
            )
            assert response.status_code == 201, response.text
            ids[index] = response.json()["id"]

        async def settled() -> bool:
            counts = await rig.daemon.queries.lead_status_counts()
            return counts.get("assigned", 0) + counts.get("failed", 0) == 200 and rig.daemon.dialer.live_calls == 0

        await wait_until(settled, 150, "every lead assigned or failed")
        histories = {index: await rig.daemon.queries.lead_with_calls(ids[index]) for index in range(200)}

        managers_used: Counter[str] = Counter()
        waited_out = 0
        for index, found in histories.items():
            assert found is not None
            lead, calls = found
            kind = kinds[index]
            status, dispositions = EXPECTED[kind]
            assert lead.status is status, (index, kind, lead)
            if kind == "talks" and len(calls) == 2:
                # The board counts m109 and m110 free, so two clients more than the eight who answer
                # may be dialled; one may then wait out his 30 s on hold for the first of them to
                # finish: abandoned, never offered a manager who answered, then called back.
                waited_out += 1
                assert calls[0].disposition is Disposition.ABANDONED, (index, calls)
                assert all(leg.result is not LegResult.ANSWERED for leg in calls[0].legs), (index, calls)
                calls = calls[1:]
            assert [call.disposition for call in calls] == dispositions, (index, kind, calls)
            if kind == "talks":
                (call,) = calls
                assert lead.owner_id == call.manager_id and call.manager_id in ANSWERING
                managers_used[call.manager_id] += 1
                # Lower bounds hold on any machine: the world's 2 s of ringing, the manager's 3 s.
                assert call.ring_seconds >= 2
                assert call.hold_seconds >= 3
                # The PBX's own figure for the same call: the world hangs up 30 s after the answer
                # (later, never sooner, when this machine is loaded), Asterisk floors each CDR
                # segment, and every manager tried starts a new one.
                billed = call.pbx_billable_seconds
                assert billed is not None and 30 - len(call.legs) <= billed
                # The daemon takes call times from the PBX's stamped events, so its hold + talk is
                # the PBX's own answer-to-hangup whatever the load on this machine: at most one
                # floored second per CDR segment above the billed sum, and a little below it, as
                # the PBX reports the answer (OriginateResponse) a moment after the CDR's answer.
                measured = call.hold_seconds + call.talk_seconds
                assert billed - ANSWER_REPORTED_AFTER <= measured < billed + len(call.legs)
                assert call.hangup_cause == 16
                assert call.recording_file == f"leadrouter/{call.channel_id}.wav"
                assert call.recording_url == f"https://pbx.example.com/recordings/leadrouter/{call.channel_id}.wav"
                # Whoever was tried before the one who answered was m109 (no answer) or m110 (busy).
                for leg in call.legs[:-1]:
                    assert (leg.manager_id, leg.result) in {("m109", LegResult.NO_ANSWER), ("m110", LegResult.BUSY)}
                assert call.legs[-1].result is LegResult.ANSWERED
            else:
                assert lead.owner_id is None
            if kind == "gives_up":
                assert all(leg.result is not LegResult.ANSWERED for call in calls for leg in call.legs)
        assert waited_out <= 10, waited_out  # a rare few: at most two at a time, only while all eight talk
        # Round robin spreads the talks over the eight managers who answer.
        assert set(managers_used) == ANSWERING
        assert max(managers_used.values()) - min(managers_used.values()) <= 8

        # Every outbox event reached the CRM over MQTT, with its id, in per-lead commit order.
        publisher = rig.daemon.publisher
        assert publisher is not None

        async def all_sent() -> bool:
            return await rig.daemon.queries.pending_outbox(1) == []

        await wait_until(all_sent, 10, "outbox drained")
        await wait_until(lambda: len({event["id"] for event in rig.mqtt}) >= publisher.published, 10, "MQTT delivery")
        received = {event["id"]: event for event in rig.mqtt}
        types = Counter(event["type"] for event in received.values())
        assert types["lead.created"] == 200
        assert types["lead.assigned"] == 120
        assert types["lead.failed"] == 80
        assert types["call.ended"] == 120 + waited_out + 80 * 2
        assert types["call.dialing"] == types["call.ended"]
        for index in range(0, 200, 7):
            mine = [event["type"] for event in rig.mqtt if event["lead_id"] == ids[index]]
            assert mine[0] == "lead.created" and mine[1] == "call.dialing"
            assert mine[-1] in ("call.ended", "lead.failed")
