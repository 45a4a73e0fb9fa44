"""Reading the PBX's notes of how calls ended (AstDB, written by the shipped dialplan's
``leadrouter-call-end`` hangup handler) through the AMI adapter, over TCP to the simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest

from ami_adapter.asterisk import SHIPPED_DIALPLAN
from ami_adapter.client import AmiClient, AmiSettings
from ami_adapter.pbx import AsteriskPbx
from ami_adapter.translate import EventTranslator
from config.settings import PbxSection
from dialer.ports import PbxError
from pbxsim import ScaledClock, Simulator
from pbxsim.wire import AmiUser, parse_classes
from router.pbx_events import CallEndRecord

NOON = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@asynccontextmanager
async def adapter(sim: Simulator, username: str = "leadrouter") -> AsyncIterator[AsteriskPbx]:
    settings = AmiSettings(host="127.0.0.1", port=sim.port, username=username, secret="s3cret", reconnect_delay=1)
    async with AmiClient(settings, on_event=lambda name, headers: None, wanted_events=frozenset()) as client:
        await client.wait_connected()
        section = PbxSection()
        translator = EventTranslator(section.translator_settings(), sink=lambda event: None)
        yield AsteriskPbx(client, translator, section.asterisk_settings())


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    users = {
        "leadrouter": AmiUser("s3cret", parse_classes("call"), parse_classes("originate,call,reporting")),
        "nosy": AmiUser("s3cret", parse_classes("call"), parse_classes("originate,call")),
    }
    async with Simulator(clock=ScaledClock(20), dialplan=SHIPPED_DIALPLAN, users=users) as sim:
        yield sim


async def test_a_note_is_found_on_the_day_the_call_ended_and_says_what_the_pbx_noted(sim: Simulator) -> None:
    late = datetime(2026, 11, 25, 23, 20, 0, 250000, tzinfo=UTC)
    sim.astdb["/leadrouter-call-end/20261125/lr-a"] = f"{late.timestamp():.3f},16,ANSWER"
    sim.astdb["/leadrouter-call-end/20261126/lr-b"] = f"{NOON.timestamp():.3f},17,"
    async with adapter(sim) as pbx:
        # Answered before midnight, noticed after it: yesterday's family is read too.
        record = await pbx.call_end("lr-a", since=NOON - timedelta(days=1), until=NOON)
        assert record == CallEndRecord("lr-a", late, 16, talked=True)
        # Answered today: yesterday's is not asked for.
        assert await pbx.call_end("lr-a", since=NOON - timedelta(hours=1), until=NOON) is None
        assert await pbx.call_end("lr-b", since=NOON, until=NOON) == CallEndRecord("lr-b", NOON, 17, talked=False)
        assert await pbx.call_end("lr-none", since=NOON - timedelta(days=9), until=NOON) is None


async def test_a_note_that_is_not_ours_counts_as_none(sim: Simulator) -> None:
    sim.astdb["/leadrouter-call-end/20261126/lr-c"] = "hello"
    async with adapter(sim) as pbx:
        assert await pbx.call_end("lr-c", since=NOON, until=NOON) is None


async def test_a_user_without_reporting_is_refused_and_told(sim: Simulator) -> None:
    async with adapter(sim, "nosy") as pbx:
        with pytest.raises(PbxError, match="Permission denied"):
            await pbx.call_end("lr-a", since=NOON, until=NOON)
