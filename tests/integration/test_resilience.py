"""Faults on the PBX side, on the whole daemon against the simulator: the PBX restarting, the
daemon away while a client answers, the AMI link gone while calls and phones move on."""

from __future__ import annotations

from pathlib import Path

from pbxsim import Behaviour, World
from pbxsim.tests.amitools import wait_until
from router.model import CallState, Disposition, LeadStatus
from tests.integration.rig import Rig, actions_received, running, scrape_metrics
from tests.router.plans import offered

# The PBX notes a call's end to the millisecond as its hangup handler runs, an instant before the
# channel is gone (the simulator's history): at 50x, a few real milliseconds of simulated time.
PBX_NOTE_SLACK = 0.25
SCENARIO = {"name": "default", "hold_limit": "120s", "ring_timeout": "60s", "max_attempts": 1, "retry_delays": ["5m"]}


def _routing(*extensions: str, **scenario: object) -> dict[str, object]:
    return {
        "version": 1,
        "managers": [{"id": f"m{ext}", "name": f"Manager {ext}", "extension": ext} for ext in extensions],
        "scenarios": [SCENARIO | scenario],
    }


def _phone(index: int) -> str:
    return f"+7916{3000000 + index:07d}"


async def _post(rig: Rig, phone: str) -> int:
    response = await rig.post(phone=phone)
    assert response.status_code == 201, response.text
    lead_id: int = response.json()["id"]
    return lead_id


async def _call_state(rig: Rig, lead_id: int, attempt: int = 0) -> CallState | None:
    found = await rig.daemon.queries.lead_with_calls(lead_id)
    assert found is not None
    _, calls = found
    return calls[attempt].state if len(calls) > attempt else None


def _leg(rig: Rig, channel_id: str) -> tuple[str, str] | None:
    """The client leg's (state, context) in the simulated PBX, if it is there."""
    for channel in rig.sim.live_channels():
        if channel.uniqueid == channel_id:
            return channel.state, channel.context
    return None


def _originated(rig: Rig, phone: str) -> list[str]:
    """The ChannelIds of every Originate the PBX was sent for ``phone``."""
    digits = phone.removeprefix("+")
    return [action["ChannelId"] for action in actions_received(rig.sim, "Originate") if digits in action["Channel"]]


async def test_a_pbx_restart_mid_burst_costs_no_attempt_and_dialling_resumes_after_it(
    tmp_path: Path, database_url: str
) -> None:
    managers = [str(101 + offset) for offset in range(10)]
    # Clients still ringing when the PBX restarts (however long a loaded machine takes to get
    # there); after it, every one of them answers.
    world = World(clients={_phone(index)[1:]: Behaviour(answer_after=None) for index in range(30)})
    # One attempt each: an attempt spent on the restart would fail the lead.
    async with running(tmp_path, database=database_url, world=world, routing=_routing(*managers), scale=50) as rig:
        leads = [await _post(rig, _phone(index)) for index in range(20)]
        await wait_until(lambda: len(actions_received(rig.sim, "Originate")) >= 10, 10, "the first ten dials")
        before = len(actions_received(rig.sim, "Originate"))
        await rig.sim.shut_down()  # core restart now: ringing calls fail, Originates are refused
        dialer = rig.daemon.dialer
        await wait_until(lambda: dialer.breaker_state == "open", 10, "the breaker to open on the refusals")
        # The dialer stopped firing into the dying PBX after a handful of refusals (measured before
        # the breaker: 29 Originates within 80 ms, each costing its lead an attempt).
        refused = len(actions_received(rig.sim, "Originate")) - before
        assert refused <= rig.settings.pbx.breaker_failures
        leads.append(await _post(rig, _phone(20)))  # intake goes on while the PBX is away
        # Ops see it: /health degraded (leads are taken, dials wait), the breaker and failures in /metrics.
        health = await rig.http.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "degraded"
        assert health.json()["checks"]["dialer"]["state"] == "pbx_paused"
        samples = await scrape_metrics(rig)
        assert samples[("leadrouter_breaker_state", (("pbx", "default"), ("state", "open")))] == 1
        assert samples[("leadrouter_pbx_failures_total", (("pbx", "default"),))] == dialer.pbx_failures >= 1
        # Patient clients: one who hung up on hold before a manager came (5 s of the scaled clock
        # were 0.1 s of a loaded machine's) would end abandoned, a failure of the lead, not of this.
        world.clients = {_phone(index)[1:]: Behaviour(answer_after=2, talk=30) for index in range(30)}
        await rig.sim.boot()
        await wait_until(lambda: dialer.breaker_state == "closed", 10, "the breaker to close after the PBX is back")
        assert (await scrape_metrics(rig))[("leadrouter_breaker_state", (("pbx", "default"), ("state", "closed")))] == 1

        async def all_assigned() -> bool:
            counts = await rig.daemon.queries.lead_status_counts()
            return counts.get("assigned", 0) == len(leads)

        await wait_until(all_assigned, 30, "every lead to be dialled again and put through")

        async def all_ended() -> bool:
            for lead_id in leads:
                found = await rig.daemon.queries.lead_with_calls(lead_id)
                if found is None or found[1][-1].state is not CallState.ENDED:
                    return False
            return True

        await wait_until(all_ended, 30, "every call to end")
        failed_by_pbx = 0
        for lead_id in leads:
            found = await rig.daemon.queries.lead_with_calls(lead_id)
            assert found is not None
            lead, calls = found
            assert lead.attempts == 1, (lead, calls)
            *earlier, last = calls
            assert last.disposition is Disposition.COMPLETED
            for call in earlier:
                assert call.disposition is Disposition.PBX_FAILED and call.pbx_failure, call
            failed_by_pbx += len(earlier)
        assert failed_by_pbx >= 10  # the ten that were ringing
        assert dialer.pbx_failures == failed_by_pbx


async def test_a_client_who_answers_while_the_daemon_is_down_is_put_through_after_the_restart(
    tmp_path: Path,
    database_url: str,
) -> None:
    phone = _phone(1)
    # Rings long enough (a second here) for the daemon to be stopped first; answers within the
    # Originate's 25 s; talks past the old dial deadline (25 s + 30 s after the dial).
    world = World(clients={phone[1:]: Behaviour(answer_after=20, talk=60)}, managers={"101": Behaviour(answer_after=1)})
    async with running(tmp_path, database=database_url, world=world, routing=_routing("101"), scale=20) as rig:
        lead_id = await _post(rig, phone)
        await wait_until(lambda: _originated(rig, phone), 5, "the Originate")
        (channel_id,) = _originated(rig, phone)
        await rig.stop_daemon()
        await wait_until(lambda: _leg(rig, channel_id) == ("Up", "leadrouter-hold"), 5, "the client to answer, unheard")
        await rig.start_daemon()

        async def bridged() -> bool:
            return await _call_state(rig, lead_id) is CallState.BRIDGED

        await wait_until(bridged, 10, "the adopted client to be put through")
        # The old dial deadline (25 s + 30 s) passes while the client talks: no second dial.
        await wait_until(lambda: _leg(rig, channel_id) is None, 10, "the call to end")

        async def assigned() -> bool:
            found = await rig.daemon.queries.lead_with_calls(lead_id)
            return found is not None and found[0].status is LeadStatus.ASSIGNED

        await wait_until(assigned, 10, "the lead to be assigned")
        found = await rig.daemon.queries.lead_with_calls(lead_id)
        assert found is not None
        lead, (call,) = found
        assert _originated(rig, phone) == [channel_id]  # dialled once, ever
        assert call.disposition is Disposition.COMPLETED and call.manager_id == "m101"
        assert call.answered_at is not None and lead.owner_id == "m101" and lead.attempts == 1


async def test_a_managers_phone_going_idle_during_an_ami_gap_is_free_after_the_reconnect(
    tmp_path: Path, database_url: str
) -> None:
    first, second = _phone(1), _phone(2)
    world = World(
        clients={first[1:]: Behaviour(answer_after=1, talk=30), second[1:]: Behaviour(answer_after=1, talk=5)},
        managers={"101": Behaviour(answer_after=1)},  # talks until the client hangs up
    )
    async with running(tmp_path, database=database_url, world=world, routing=_routing("101"), scale=50) as rig:
        lead_id = await _post(rig, first)

        async def bridged() -> bool:
            return await _call_state(rig, lead_id) is CallState.BRIDGED

        await wait_until(bridged, 10, "the first call to be bridged")
        board = rig.daemon.board
        assert "m101" not in offered(board, now=rig.clock.now())
        await rig.sim.stop_listening()  # the AMI link is gone; the call goes on without it
        await wait_until(lambda: not rig.sim.live_channels(), 10, "the call to end unheard")
        await rig.sim.start()
        # The call's end, and the phone's NOT_INUSE, were never heard of.
        await wait_until(
            lambda: "m101" in offered(board, now=rig.clock.now()),
            10,
            "the manager to be free again after the reconnect",
        )
        await rig.daemon.dialer.idle()  # the board changes at once, the call's closing is committed after
        found = await rig.daemon.queries.lead_with_calls(lead_id)
        assert found is not None
        _, (call,) = found
        assert call.disposition is Disposition.COMPLETED  # it was bridged: that much is known
        next_lead = await _post(rig, second)

        async def put_through() -> bool:
            return await _call_state(rig, next_lead) is CallState.BRIDGED

        await wait_until(put_through, 10, "the next client to be put through to m101")


async def test_calls_that_ended_during_an_ami_gap_are_closed_with_what_is_known(
    tmp_path: Path, database_url: str
) -> None:
    talks, leaves = _phone(1), _phone(2)
    world = World(
        clients={
            talks[1:]: Behaviour(answer_after=1, talk=30),  # bridged, ends during the gap
            leaves[1:]: Behaviour(answer_after=1, talk=40),  # at a phone nobody answers, hangs up in the gap
        },
        managers={"101": Behaviour(answer_after=1), "102": Behaviour(answer_after=None)},
    )
    async with running(tmp_path, database=database_url, world=world, routing=_routing("101", "102"), scale=50) as rig:
        talking = await _post(rig, talks)

        async def state(lead_id: int) -> CallState | None:
            return await _call_state(rig, lead_id)

        await wait_until(lambda: state(talking), 10, "the first call")
        leaving = await _post(rig, leaves)

        async def both_steady() -> bool:
            return await state(talking) is CallState.BRIDGED and await state(leaving) is CallState.CONNECTING

        await wait_until(both_steady, 10, "one call bridged, the other ringing a manager")
        await rig.sim.stop_listening()
        await wait_until(lambda: not rig.sim.live_channels(), 10, "both calls to end unheard")
        await rig.sim.start()

        async def closed() -> bool:
            return await state(talking) is CallState.ENDED and await state(leaving) is CallState.ENDED

        await wait_until(closed, 10, "both calls to be closed after the reconnect")
        results = {}
        for lead_id in (talking, leaving):
            found = await rig.daemon.queries.lead_with_calls(lead_id)
            assert found is not None
            results[lead_id] = found
        lead, (call,) = results[talking]
        assert call.disposition is Disposition.COMPLETED and lead.owner_id == "m101"
        lead, (call,) = results[leaving]
        # The client had answered: never "unreachable". The PBX noted that they hung up (cause 16)
        # while the manager's phone rang, and when.
        assert call.disposition is Disposition.ABANDONED and lead.status is LeadStatus.FAILED
        (leg,) = (record for record in rig.sim.channel_history() if record.uniqueid == call.channel_id)
        assert leg.ended is not None and call.ended_at is not None and call.hangup_cause == leg.cause == 16
        assert abs((call.ended_at - leg.ended).total_seconds()) < PBX_NOTE_SLACK
        assert rig.daemon.board.free_count == 2


async def _gap_with_a_bridged_call(tmp_path: Path, *, daemon_down: bool) -> None:
    """A call bridged when the daemon stops (or the AMI link goes) ends during the gap; the gap
    goes on 30 s before the daemon is back. The call is closed at the PBX's end, with its cause."""
    phone = _phone(1)
    world = World(clients={phone[1:]: Behaviour(answer_after=1, talk=20)}, managers={"101": Behaviour(answer_after=1)})
    async with running(tmp_path, world=world, routing=_routing("101"), scale=50) as rig:
        lead_id = await _post(rig, phone)

        async def bridged() -> bool:
            return await _call_state(rig, lead_id) is CallState.BRIDGED

        await wait_until(bridged, 10, "the call to be bridged")
        (channel_id,) = _originated(rig, phone)
        if daemon_down:
            await rig.stop_daemon()
        else:
            await rig.sim.stop_listening()
        await wait_until(lambda: _leg(rig, channel_id) is None, 10, "the call to end during the gap")
        await rig.clock.sleep(30)
        if daemon_down:
            await rig.start_daemon()
        else:
            await rig.sim.start()

        async def ended() -> bool:
            return await _call_state(rig, lead_id) is CallState.ENDED

        await wait_until(ended, 10, "the call to be closed after the gap")
        found = await rig.daemon.queries.lead_with_calls(lead_id)
        assert found is not None
        lead, (call,) = found
        (leg,) = (record for record in rig.sim.channel_history() if record.uniqueid == channel_id)
        assert leg.ended is not None and call.ended_at is not None and call.bridged_at is not None
        assert call.disposition is Disposition.COMPLETED and lead.owner_id == "m101"
        # The PBX's end, not the moment the daemon noticed (30 s and more later).
        assert abs((call.ended_at - leg.ended).total_seconds()) < PBX_NOTE_SLACK
        assert call.talk_seconds is not None
        assert abs(call.talk_seconds - (leg.ended - call.bridged_at).total_seconds()) < PBX_NOTE_SLACK
        # About 18 s (the client hangs up 20 s after answering, 2 s before the bridge), stretched a
        # little by a loaded machine; closed when the daemon noticed it would be over 30 s.
        assert 15 < call.talk_seconds < 25
        assert call.hangup_cause == leg.cause == 16


async def test_a_bridged_call_that_ended_while_the_daemon_was_down_closes_at_the_pbxs_end_with_its_cause(
    tmp_path: Path,
) -> None:
    await _gap_with_a_bridged_call(tmp_path, daemon_down=True)


async def test_a_bridged_call_that_ended_during_an_ami_gap_closes_at_the_pbxs_end_with_its_cause(
    tmp_path: Path,
) -> None:
    await _gap_with_a_bridged_call(tmp_path, daemon_down=False)


async def test_a_client_ringing_through_an_ami_gap_costs_no_attempt_and_one_answering_in_it_is_put_through(
    tmp_path: Path,
    database_url: str,
) -> None:
    rings_out, answers = _phone(1), _phone(2)
    world = World(
        clients={
            rings_out[1:]: Behaviour(answer_after=None),  # rings until the Originate times out, in the gap
            answers[1:]: Behaviour(answer_after=20, talk=600),  # answers in the gap, talks long after it
        },
        managers={"101": Behaviour(answer_after=1), "102": Behaviour(answer_after=1)},
    )
    async with running(tmp_path, database=database_url, world=world, routing=_routing("101", "102"), scale=50) as rig:
        lost = await _post(rig, rings_out)
        answered = await _post(rig, answers)
        await wait_until(lambda: _originated(rig, rings_out) and _originated(rig, answers), 5, "both dials")
        (answering_leg,) = _originated(rig, answers)
        await rig.sim.stop_listening()
        await wait_until(lambda: _leg(rig, _originated(rig, rings_out)[0]) is None, 10, "the first to ring out unheard")
        await wait_until(lambda: _leg(rig, answering_leg) == ("Up", "leadrouter-hold"), 10, "the second to answer")
        world.clients[rings_out[1:]] = Behaviour(answer_after=1, talk=5)  # this time they answer
        await rig.sim.start()

        async def bridged() -> bool:
            return await _call_state(rig, answered) is CallState.BRIDGED

        async def assigned() -> bool:
            found = await rig.daemon.queries.lead_with_calls(lost)
            return found is not None and found[0].status is LeadStatus.ASSIGNED

        await wait_until(bridged, 10, "the client who answered in the gap to be put through")
        await wait_until(assigned, 10, "the other to be dialled again and put through")
        assert _originated(rig, answers) == [answering_leg]  # never dialled again
        found = await rig.daemon.queries.lead_with_calls(lost)
        assert found is not None
        lead, (first, second) = found
        assert first.disposition is Disposition.LOST_TRACK and second.disposition is Disposition.COMPLETED
        assert lead.attempts == 1  # only the call that reached the client counted
