"""AMI events of real calls -> the domain events the dialer acts on."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from ami_adapter.protocol import AmiProtocol
from ami_adapter.translate import WANTED_EVENTS, EventTranslator, TranslatorSettings
from router.pbx_events import (
    Billed,
    Bridged,
    DeviceState,
    DialEnded,
    DialOutcome,
    ExtensionState,
    HungUp,
    InboundCall,
    LegStage,
    LiveLeg,
    MachineDetected,
    OriginateOutcome,
    OriginateResult,
    PbxBooted,
    PbxEvent,
    PbxShuttingDown,
    RecordingStarted,
)
from tests.transcripts import load


class _Nowhere(asyncio.Transport):
    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


def _reading_into(translator: EventTranslator) -> AmiProtocol:
    """Our AMI framing on a socket that goes nowhere, handing events to ``translator``."""
    proto = AmiProtocol()
    proto.connection_made(_Nowhere())
    proto.on_event = translator
    proto.wanted_events = WANTED_EVENTS
    return proto


def _translate(name: str, prefix: str) -> tuple[EventTranslator, list[PbxEvent]]:
    out: list[PbxEvent] = []
    translator = EventTranslator(TranslatorSettings(prefix, ("Local/", "@sim-managers")), sink=out.append)
    _reading_into(translator).data_received(load(name).wire_bytes())
    return translator, out


@pytest.mark.parametrize(
    ("name", "channel", "expected"),
    [
        (
            "client_first",
            "lead42-c1",
            [
                OriginateResult("lead42-c1", OriginateOutcome.ANSWERED),
                RecordingStarted("lead42-c1"),
                DialEnded("lead42-c1", DialOutcome.ANSWER),
                Bridged("lead42-c1"),
                HungUp("lead42-c1", 16),
                Billed("lead42-c1", 6),
            ],
        ),
        ("client_busy", "lead44-c1", [HungUp("lead44-c1", 0), OriginateResult("lead44-c1", OriginateOutcome.BUSY)]),
        (
            "client_noanswer",
            "lead45-c1",
            [OriginateResult("lead45-c1", OriginateOutcome.NO_ANSWER), HungUp("lead45-c1", 19)],
        ),
        (
            "manager_noanswer",
            "lead46-c1",
            [
                OriginateResult("lead46-c1", OriginateOutcome.ANSWERED),
                RecordingStarted("lead46-c1"),
                Billed("lead46-c1", 21),
                DialEnded("lead46-c1", DialOutcome.NO_ANSWER),
                Billed("lead46-c1", 0),
                HungUp("lead46-c1", 16),
            ],
        ),
        (
            "client_hangup_on_hold",
            "lead47-c1",
            [OriginateResult("lead47-c1", OriginateOutcome.ANSWERED), HungUp("lead47-c1", 16), Billed("lead47-c1", 2)],
        ),
    ],
)
def test_a_client_legs_story_in_domain_events(name: str, channel: str, expected: list[PbxEvent]) -> None:
    prefix = channel.split("-")[0]
    _, events = _translate(name, prefix)
    ours = [event for event in events if getattr(event, "channel_id", None) == channel]
    assert ours == expected
    # The ";2" half of the Local channel is never taken for ours.
    assert not [event for event in events if ";" in getattr(event, "channel_id", "")]


def test_manager_phones_are_followed_by_device_state() -> None:
    _, events = _translate("client_first", "lead42")
    states = [event for event in events if isinstance(event, ExtensionState)]
    assert [(state.extension, state.state) for state in states if state.extension == "101"] == [
        ("101", DeviceState.IN_USE),
        ("101", DeviceState.IN_USE),
        ("101", DeviceState.FREE),
        ("101", DeviceState.FREE),
    ]
    # A client's Local device does not look like a manager's.
    assert {state.extension for state in states} == {"101"}


def test_channel_names_are_learned_for_redirects_and_forgotten_at_hangup() -> None:
    out: list[PbxEvent] = []
    translator = EventTranslator(TranslatorSettings("lead42", ("PJSIP/", "")), sink=out.append)
    proto = _reading_into(translator)
    data = load("client_first").wire_bytes()
    redirect_at = data.index(b"Event: MixMonitorStart")
    proto.data_received(data[:redirect_at])
    assert translator.channel_name("lead42-c1") == "Local/79160000001@sim-clients-00000000;1"
    proto.data_received(data[redirect_at:])
    assert translator.channel_name("lead42-c1") is None


def _listed(name: str, action_id: str, event: str) -> list[dict[str, str]]:
    """The items of one event list answering ``action_id`` in a recorded transcript."""
    return [
        dict(block.headers())
        for block in load(name).received
        if block.get("ActionID") == action_id and block.get("Event") == event
    ]


def test_a_listing_tells_the_stage_of_each_of_our_legs_and_which_phones_are_busy() -> None:
    """Recorded: a client ringing, one on hold, one whose manager's phone rings, one bridged."""
    translator = EventTranslator(TranslatorSettings("lr", ("Local/", "@sim-managers")), sink=print)
    channels = _listed("resilience/resync_listing", "csc-mixed", "CoreShowChannel")
    snapshot = translator.snapshot(
        channels,
        [],
        hold_context="leadrouter-hold",
        connect_context="leadrouter-connect",
        apology_context="leadrouter-sorry",
    )
    assert snapshot.legs == {
        "lr-ringing": LiveLeg("lr-ringing", LegStage.RINGING),
        "lr-onhold": LiveLeg("lr-onhold", LegStage.ON_HOLD),
        "lr-atmanager": LiveLeg("lr-atmanager", LegStage.AT_MANAGER, "201"),
        "lr-bridged": LiveLeg("lr-bridged", LegStage.BRIDGED, "301"),
    }
    # Asterisk lists no state of Local devices: the managers' channels in the listing show them busy.
    assert snapshot.devices == {"201": DeviceState.IN_USE, "301": DeviceState.IN_USE}
    assert translator.channel_name("lr-onhold") == "Local/79160000010@sim-clients-00000001;1"


def test_a_listing_tells_a_client_amd_still_screens_from_one_it_has_put_on_hold() -> None:
    """Recorded: the same client leg listed while AMD() listens, then once it has decided."""
    translator = EventTranslator(TranslatorSettings("lr", ("Local/", "@sim-managers")), sink=print)
    stages = []
    for action_id in ("action/capture/1/2", "action/capture/1/3"):
        channels = _listed("shipped/amd_listing", action_id, "CoreShowChannel")
        snapshot = translator.snapshot(
            channels,
            [],
            hold_context="leadrouter-hold",
            connect_context="leadrouter-connect",
            apology_context="leadrouter-sorry",
        )
        stages.append(snapshot.legs["lr-b2e1d7a2f0c3e4b5a6d7"].stage)
    assert stages == [LegStage.SCREENING, LegStage.ON_HOLD]


def test_a_caller_the_inbound_context_holds_is_listed_with_what_his_user_event_said() -> None:
    """Recorded: a caller in leadrouter-inbound's music, listed by a daemon that never heard his
    UserEvent; the other half of the trunk's Local channel is not ours."""
    translator = EventTranslator(TranslatorSettings("lr", ("Local/", "@sim-managers")), sink=print)
    channels = _listed("shipped/inbound_listing", "action/capture/1/2", "CoreShowChannel")
    snapshot = translator.snapshot(
        channels, [], hold_context="leadrouter-hold", connect_context="leadrouter-connect", apology_context=None
    )
    assert snapshot.callers == (InboundCall("trunk-0001;2", "74951234567", "79160000001"),)
    assert set(snapshot.legs) == {"trunk-0001;2"} and translator.is_ours("trunk-0001;2")
    withheld = [{**item, "CallerIDNum": "<unknown>"} for item in channels]
    assert translator.snapshot(
        withheld, [], hold_context="leadrouter-hold", connect_context="leadrouter-connect", apology_context=None
    ).callers == (InboundCall("trunk-0001;2", "74951234567", ""),)


def test_a_listing_of_three_bridged_calls_names_each_manager() -> None:
    translator = EventTranslator(TranslatorSettings("c3", ("PJSIP/", "")), sink=print)
    channels = _listed("three_concurrent", "csc-busy", "CoreShowChannel")
    snapshot = translator.snapshot(
        channels, [], hold_context="leadrouter-hold", connect_context="leadrouter-connect-rec", apology_context=None
    )
    assert {leg.channel_id: (leg.stage, leg.extension) for leg in snapshot.legs.values()} == {
        "c3-a": (LegStage.BRIDGED, "101"),
        "c3-b": (LegStage.BRIDGED, "102"),
        "c3-c": (LegStage.BRIDGED, "103"),
    }
    assert snapshot.devices == {}  # the managers here are Local/, not PJSIP/ devices
    assert translator.channel_name("c3-b") == "Local/79160000012@sim-clients-0000002b;1"


def test_the_device_state_list_gives_every_cached_managers_phone() -> None:
    """Recorded DeviceStateList: custom device states besides voicemail's MWI ones."""
    translator = EventTranslator(TranslatorSettings("lr", ("Custom:", "")), sink=print)
    devices = _listed("resilience/resync_listing", "dsl-mixed", "DeviceStateChange")
    snapshot = translator.snapshot(
        [], devices, hold_context="leadrouter-hold", connect_context="leadrouter-connect", apology_context=None
    )
    assert snapshot.devices == {
        "101": DeviceState.IN_USE,
        "102": DeviceState.FREE,
        "103": DeviceState.UNAVAILABLE,
        "104": DeviceState.RINGING,
        "105": DeviceState.IN_USE,  # ONHOLD
    }


def test_a_restarting_pbx_fails_the_calls_it_could_not_place_then_says_so_and_boots() -> None:
    """Recorded ``core restart now`` in a burst of Originates, and the login after it."""
    _, events = _translate("resilience/pbx_restart_now", "lr")
    failed = {event.channel_id for event in events if isinstance(event, OriginateResult)}
    assert all(
        event.outcome is OriginateOutcome.PBX_FAILED
        for event in events
        if isinstance(event, OriginateResult) and event.channel_id.startswith("lr-burst-")
    )
    assert {f"lr-burst-{number}" for number in range(1, 10)} <= failed
    assert HungUp("lr-onhold", 0) in [replace(event, at=None) for event in events if isinstance(event, HungUp)]
    lifecycle = [event for event in events if isinstance(event, PbxBooted | PbxShuttingDown)]
    # FullyBooted says how long the PBX has been up: 1 s at the first login, 0 after the restart.
    assert lifecycle == [PbxBooted(1), PbxShuttingDown(restart=True), PbxBooted(0)]


def test_events_stamped_by_the_pbx_carry_its_time() -> None:
    """manager.conf ``timestampevents = yes`` (recorded): call times come from the PBX's own clock."""
    _, events = _translate("timestamps", "lr")
    progress = [event for event in events if not isinstance(event, Billed | ExtensionState)]
    assert [type(event).__name__ for event in progress] == [
        "OriginateResult",
        "RecordingStarted",
        "DialEnded",
        "Bridged",
        "HungUp",
    ]
    answered, *_, bridged, ended = (event.at for event in progress)
    assert answered == datetime.fromtimestamp(1795652949.456209, UTC)  # the OriginateResponse's stamp
    assert bridged is not None and ended is not None
    # The capture: redirected 2 s after the Originate, the manager answers after 1 s and talks 3 s.
    assert 0.5 < (bridged - answered).total_seconds() < 2.5
    assert 3.0 < (ended - bridged).total_seconds() < 4.0  # 3 s of talk, then the client leg hangs up


def test_an_unstamped_or_garbled_stamp_leaves_the_time_to_the_daemon() -> None:
    _, events = _translate("client_first", "lr")
    assert all(getattr(event, "at", None) is None for event in events)
    out: list[PbxEvent] = []
    translator = EventTranslator(TranslatorSettings("lr", ("Local/", "@sim-managers")), sink=out.append)
    translator("BridgeEnter", {"Uniqueid": "lr-x", "Timestamp": "nan"})
    translator("BridgeEnter", {"Uniqueid": "lr-y", "Timestamp": "1e999"})
    assert out == [Bridged("lr-x"), Bridged("lr-y")]


@pytest.mark.parametrize(
    ("name", "channel", "machine", "status"),
    [
        ("shipped/amd_machine", "lr-a2d0c6a1e9b2f43a8c72", True, "MACHINE LONGGREETING-1500-1500"),
        ("shipped/amd_human", "lr-a1d0c6a1e9b2f43a8c71", False, "HUMAN HUMAN-800-800"),
        ("shipped/amd_silent", "lr-a3d0c6a1e9b2f43a8c73", False, "NOTSURE TOOLONG-"),
    ],
)
def test_amds_verdict_reaches_the_dialer_from_the_shipped_dialplans_user_event(
    name: str, channel: str, machine: bool, status: str
) -> None:
    """Recorded with the least-privilege user (read ``user`` for UserEvent) on the real Asterisk."""
    _, events = _translate(name, "lr")
    (verdict,) = [event for event in events if isinstance(event, MachineDetected)]
    assert (verdict.channel_id, verdict.machine) == (channel, machine)
    assert verdict.status.startswith(status)  # AMD's measured milliseconds vary from run to run
    assert verdict.at is not None


def test_an_inbound_caller_handed_over_by_the_shipped_dialplan_becomes_ours() -> None:
    """shipped/inbound.txt: the caller's channel (named by the PBX) is announced by UserEvent
    LeadrouterInbound; from then on its dial, bridge and hangup reach the dialer."""
    translator, events = _translate("shipped/inbound", "lr")
    (inbound,) = [event for event in events if isinstance(event, InboundCall)]
    assert (inbound.channel_id, inbound.number, inbound.caller) == ("trunk-0001;2", "74951234567", "79160000001")
    mine = [type(event).__name__ for event in events if getattr(event, "channel_id", None) == "trunk-0001;2"]
    assert mine[0] == "InboundCall" and {"DialEnded", "Bridged", "HungUp"} <= set(mine)
    assert not translator.is_ours("trunk-0001;2")  # forgotten once it hung up
