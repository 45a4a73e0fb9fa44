"""The simulator against AMI transcripts captured from a real Asterisk (tests/fixtures/ami/).

Each ``flow_*.json`` is replayed the way ``ami_capture.py`` replayed it against Asterisk, on a
simulator running the transcripts' own dialplan, and what comes back is compared with the
recorded ``*.txt``. Real Asterisk interleaves its threads differently between runs, so the
comparison is per channel (the order of one channel's call-progress events is deterministic),
per ActionID, and as multisets where only the content is stable.

The transcripts in ``shipped/`` were recorded with leadrouter's shipped dialplan and replay on
the simulator running that same file (as it is today), with the AMI users of their
``manager.conf``: the least-privilege user sending the actions, whose ``eventfilter`` shapes
what it receives, and an observer seeing everything; each session is compared on its own.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from ami_adapter.asterisk import SHIPPED_DIALPLAN
from pbxsim import ManagerConf, ScaledClock, Simulator, read_manager_conf
from tests.transcripts import FIXTURES, Block, load

SCALE = 10.0  # simulated seconds per real second; the transcripts last 0.5-23 s
# Where a replay's clock starts: mid-day, so no replay crosses midnight UTC, which the call-end
# handler's day (its AstDB family, its sweep) would see; a clock that started at the real time did
# in a run a few seconds before midnight, and so did its second replay.
REPLAY_START = datetime(2026, 11, 26, 12, tzinfo=UTC)
SETTLE = 1.0  # simulated seconds to keep listening after the transcript's last message
# Simulated seconds. Measured: at most 0.07 on an idle machine; with two busy loops hogging both
# cores, mostly up to 0.3 and now and then 0.9 (a read delayed by tens of milliseconds), which the
# second replay in test_flow_matches_transcript absorbs.
LIFETIME_TOLERANCE = 0.4

SHIPPED = FIXTURES / "shipped"
FLOWS = sorted(p.stem.removeprefix("flow_") for p in FIXTURES.glob("flow_*.json"))
SHIPPED_FLOWS = sorted(f"shipped/{p.stem.removeprefix('flow_')}" for p in SHIPPED.glob("flow_*.json"))

PROGRESS_EVENTS = {
    "Newchannel",
    "Newstate",
    "LocalBridge",
    "DialBegin",
    "DialState",
    "DialEnd",
    "MixMonitorStart",
    "BridgeEnter",
    "BridgeLeave",
    "HangupRequest",
    "SoftHangupRequest",
    "Hangup",
}
CDR_FIELDS = (
    "Disposition",
    "Duration",
    "BillableSeconds",
    "Source",
    "Destination",
    "DestinationContext",
    "Channel",
    "DestinationChannel",
    "LastApplication",
    "LastData",
)
# Fields of a CoreShowChannel that do not depend on when exactly the list was asked for.
SHOW_FIELDS = (
    "Channel",
    "Uniqueid",
    "Linkedid",
    "ChannelState",
    "Context",
    "Exten",
    "CallerIDNum",
    "CallerIDName",
    "ConnectedLineNum",
    "ConnectedLineName",
    "BridgeId",
)


@dataclass
class Message:
    sent: bool
    t: float
    headers: list[tuple[str, str]]
    session: str = ""  # as in tests/transcripts.py: "" is the session that sent the actions
    fields: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.fields = dict(self.headers)

    @property
    def event(self) -> str | None:
        return self.fields.get("Event")


def parse_transcript(name: str) -> list[Message]:
    return [Message(b.sent, b.t, b.headers(), b.session) for b in load(name).blocks if b.t is not None]


def pbx_for(flow: str) -> tuple[str | Path, ManagerConf | None]:
    """The dialplan and manager.conf a transcript was recorded with."""
    if flow.startswith("shipped/"):
        # As start-asterisk assembled extensions.conf: the simulated world, then the included files.
        parts = (SHIPPED / "sim-extensions.conf", SHIPPED_DIALPLAN, SHIPPED / "extra.conf")
        dialplan = "\n".join(p.read_text(encoding="utf-8") for p in parts)
        return dialplan, read_manager_conf((SHIPPED / "manager.conf").read_text(encoding="utf-8"))
    return FIXTURES / "extensions.conf", None


class Normaliser:
    """Rename what Asterisk invents (ids, channel-name counters, bridge ids) by order of first appearance."""

    _UNIQUEID = re.compile(r"\b\d{9,11}\.\d+\b")
    # The call-end hangup handler's AstDB keys and notes name the day and the moment it ran, and its
    # sweep the days it keeps (LEADROUTER_DAYS a list of them): each day is written as its distance
    # from the session's day (``messages``), so a replay on another day than the recording compares
    # equal, and the sweep's arithmetic (keep the two days before) is still compared.
    _CALL_END_DAYS = re.compile(
        r"(?:(?<=leadrouter-call-end/)|(?<=LEADROUTER_DAYS=)|(?<=LEADROUTER_DAY=)|(?<=LEADROUTER_KEEP=))\d{8}(?:,\d{8})*\b"
    )
    _DAY = re.compile(r"\d{8}")
    _DAY_VARIABLES = frozenset({"LEADROUTER_DAY", "LEADROUTER_DAYS", "LEADROUTER_KEEP"})  # VarSet's names of them
    _CALL_END_NOTE = re.compile(r"(?<=\)=)\d{9,11}\.\d{3}(?=,)")
    _COUNTER = re.compile(r"-([0-9a-f]{8})(?=;[12]\b)")
    _BRIDGE = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
    # Where recordings go is asterisk.conf's astspooldir: the capture's private Asterisk had its own.
    _SPOOL = re.compile(r"\S*/spool/(?:asterisk/)?monitor/")

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self._day: date | None = None

    def _day_offset(self, match: re.Match[str]) -> str:
        day = datetime.strptime(match.group(0), "%Y%m%d").date()
        if self._day is None:
            self._day = day
        offset = (day - self._day).days
        return f"<day{offset:+d}>" if offset else "<day>"

    def _rename(self, kind: str, match: re.Match[str]) -> str:
        original = match.group(0)
        if original not in self.names:
            self.names[original] = f"{kind}{sum(1 for n in self.names.values() if n.startswith(kind)) + 1}"
        return self.names[original]

    def value(self, text: str) -> str:
        text = self._CALL_END_DAYS.sub(lambda days: self._DAY.sub(self._day_offset, days.group(0)), text)
        text = self._CALL_END_NOTE.sub("<end>", text)
        text = self._UNIQUEID.sub(lambda m: self._rename("uid", m), text)
        text = self._BRIDGE.sub(lambda m: self._rename("bridge", m), text)
        text = self._SPOOL.sub("<spool>/monitor/", text)
        return self._COUNTER.sub(lambda m: "-" + self._rename("n", m), text)

    def header(self, name: str, value: str, variable: str | None = None) -> str:
        # An event's time (timestampevents) looks like a Uniqueid but is when it happened: it is
        # compared by the timing checks, and must not take a Uniqueid's place in the numbering.
        if name == "Timestamp":
            return "<stamp>"
        if name == "Value" and variable in self._DAY_VARIABLES:  # a VarSet of the sweep's days
            return self.value(f"{variable}={value}").removeprefix(f"{variable}=")
        return self.value(value)

    def messages(self, messages: Iterable[Message]) -> list[Message]:
        listed = list(messages)
        # The days are counted from the UTC day of the session's first event time where events carry
        # one (timestampevents), so days shifted all alike (a wrong zone, a clock's start ignored)
        # still differ; else from the first day seen.
        stamp = next((m.fields["Timestamp"] for m in listed if "Timestamp" in m.fields), None)
        if stamp is not None:
            self._day = datetime.fromtimestamp(float(stamp), UTC).date()
        return [
            Message(m.sent, m.t, [(k, self.header(k, v, m.fields.get("Variable"))) for k, v in m.headers], m.session)
            for m in listed
        ]


async def replay(flow: str) -> list[Message]:
    """What the capture script would have recorded had the simulator been the Asterisk.

    Every session logs in when it did in the recording, with the same Login; the flow's steps
    go out on the session that sent the actions, starting 0.5 s after the last login.
    """
    recorded = parse_transcript(flow)
    steps = json.loads((FIXTURES / Path(flow).parent / f"flow_{Path(flow).name}.json").read_text(encoding="utf-8"))
    logins = [m for m in recorded if m.sent and m.fields.get("Action") == "Login"]
    transcript_end = recorded[-1].t
    dialplan, manager_conf = pbx_for(flow)
    clock = ScaledClock(SCALE, start=REPLAY_START)
    received: list[Message] = []
    channels: dict[str, str] = {}
    async with Simulator(
        clock=clock,
        dialplan=dialplan,
        users=manager_conf.users if manager_conf else None,
        timestamp_events=manager_conf.timestamp_events if manager_conf else False,
    ) as sim:
        t0 = clock.monotonic()

        async def record(reader: asyncio.StreamReader, session: str) -> None:
            lines: list[str] = []
            while line := await reader.readline():
                text = line.decode("utf-8").rstrip("\r\n")
                if text:
                    lines.append(text)
                    continue
                if lines:
                    headers = Block(False, None, tuple(lines)).headers()
                    message = Message(False, clock.monotonic() - t0, headers, session)
                    if message.event == "Newchannel":
                        channels[message.fields["Uniqueid"]] = message.fields["Channel"]
                    received.append(message)
                    lines = []

        def send(writer: asyncio.StreamWriter, fields: list[tuple[str, str]]) -> None:
            fields = [(k, re.sub(r"\$\{chan:([^}]+)\}", lambda m: channels.get(m.group(1), "?"), v)) for k, v in fields]
            fields = [(k, v.replace("${day}", f"{clock.now():%Y%m%d}")) for k, v in fields]  # as capture.py
            writer.write(("".join(f"{k}: {v}\r\n" for k, v in fields) + "\r\n").encode())

        writers: dict[str, asyncio.StreamWriter] = {}
        recorders = []
        for login in logins:
            await clock.sleep(login.t - (clock.monotonic() - t0))
            reader, writers[login.session] = await asyncio.open_connection("127.0.0.1", sim.port)
            assert await reader.readline() == b"Asterisk Call Manager/13.0.0\r\n"
            recorders.append(asyncio.create_task(record(reader, login.session)))
            send(writers[login.session], login.headers)
        await clock.sleep(0.5)
        for step in steps:
            await clock.sleep(step.get("after", 0))
            if "send" in step:  # a step without one only waits
                send(writers[""], [(k, v) for k, v in step["send"]])
        await clock.sleep(transcript_end + SETTLE - (clock.monotonic() - t0))
        for writer in writers.values():
            writer.close()
        for recorder in recorders:
            recorder.cancel()
    return received


# ---- what is compared ----


def responses(messages: list[Message]) -> dict[str, list[tuple[str, str]]]:
    return {
        m.fields["ActionID"]: [(k, v) for k, v in m.headers if k != "Timestamp"]
        for m in messages
        if not m.sent and "Response" in m.fields and "ActionID" in m.fields
    }


def _roles(m: Message) -> list[tuple[str, str]]:
    f = m.fields
    if m.event == "LocalBridge":
        return [("one", f["LocalOneUniqueid"]), ("two", f["LocalTwoUniqueid"])]
    roles = [("self", f["Uniqueid"])] if "Uniqueid" in f else []
    if "DestUniqueid" in f:
        roles.append(("dest", f["DestUniqueid"]))
    return roles


def _progress_key(m: Message, role: str) -> tuple[str, ...]:
    f = m.fields
    match m.event:
        case "Newchannel":
            return ("Newchannel", f["Channel"], f["ChannelState"], f["Context"], f["Exten"], f["Linkedid"])
        case "Newstate":
            return ("Newstate", f["ChannelState"], f["Context"], f["Exten"], f["Priority"])
        case "LocalBridge":
            return ("LocalBridge", role, f["Context"], f["Exten"])
        case "DialBegin" | "DialState" | "DialEnd":
            peer = f["DestUniqueid"] if role == "self" else f.get("Uniqueid", "")
            return (m.event, role, peer, f.get("DialString") or f.get("DialStatus", ""))
        case "MixMonitorStart":
            return ("MixMonitorStart", f["Context"], f["Exten"])
        case "BridgeEnter" | "BridgeLeave":
            return (m.event, f["BridgeUniqueid"], f["BridgeNumChannels"], f["Context"], f["Exten"])
        case "HangupRequest" | "SoftHangupRequest":
            return (m.event, f["Cause"], f["Context"], f["Exten"], f["Priority"])
        case _:
            return ("Hangup", f["Cause"], f["Cause-txt"], f["ChannelState"], f["Context"], f["Exten"], f["Priority"])


_AMD_MEASURED = re.compile(r"\b(HUMAN|LONGGREETING|INITIALSILENCE|MAXWORDS|LONGNUMBER|TOOLONG)-\d+")


def _dialplan_key(m: Message) -> tuple[str, ...]:
    f = m.fields
    if m.event == "Newexten":
        data = _AMD_MEASURED.sub(r"\1-<ms>", f["AppData"]) if f["Application"] == "UserEvent" else f["AppData"]
        return ("Newexten", f["Context"], f["Exten"], f["Priority"], f["Application"], data)
    value = f["Value"]
    if f["Variable"].endswith("_MS") and value:
        value = "<ms>"  # milliseconds differ from run to run
    if f["Variable"] == "AMDCAUSE":
        value = _AMD_MEASURED.sub(r"\1-<ms>", value)  # AMD's measured milliseconds too; its thresholds stay
    return ("VarSet", f["Variable"], value)


def per_channel(messages: list[Message]) -> dict[str, list[tuple[str, ...]]]:
    sequences: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    for m in messages:
        if m.event in PROGRESS_EVENTS:
            for role, uniqueid in _roles(m):
                sequences[uniqueid].append(_progress_key(m, role))
        elif m.event in ("Newexten", "VarSet"):
            sequences[m.fields["Uniqueid"]].append(_dialplan_key(m))
    return dict(sequences)


def originate_responses(messages: list[Message]) -> dict[str, tuple[str, ...]]:
    keys = ("Response", "Reason", "Channel", "Uniqueid", "Context", "Exten", "CallerIDNum", "CallerIDName")
    return {m.fields["ActionID"]: tuple(m.fields[k] for k in keys) for m in messages if m.event == "OriginateResponse"}


def cdrs(messages: list[Message]) -> Counter[tuple[str, ...]]:
    return Counter(
        (m.fields["UniqueID"], *(f"{k}={m.fields[k]}" for k in CDR_FIELDS)) for m in messages if m.event == "Cdr"
    )


def device_states(messages: list[Message]) -> Counter[tuple[str, str]]:
    return Counter((m.fields["Device"], m.fields["State"]) for m in messages if m.event == "DeviceStateChange")


def shown_channels(messages: list[Message]) -> dict[str, set[tuple[str, ...]]]:
    shown: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    for m in messages:
        if m.event == "CoreShowChannel":
            shown[m.fields["ActionID"]].add(tuple(m.fields[k] for k in SHOW_FIELDS))
    return dict(shown)


def shown_durations(messages: list[Message]) -> dict[tuple[str, str], int]:
    def seconds(text: str) -> int:
        h, m, s = (int(x) for x in text.split(":"))
        return h * 3600 + m * 60 + s

    return {
        (m.fields["ActionID"], m.fields["Uniqueid"]): seconds(m.fields["Duration"])
        for m in messages
        if m.event == "CoreShowChannel"
    }


def lifetimes(messages: list[Message]) -> dict[str, float]:
    """Seconds from each channel's Newchannel to its Hangup."""
    born: dict[str, float] = {}
    lived: dict[str, float] = {}
    for m in messages:
        if m.event == "Newchannel":
            born[m.fields["Uniqueid"]] = m.t
        elif m.event == "Hangup" and m.fields["Uniqueid"] in born:
            lived[m.fields["Uniqueid"]] = m.t - born[m.fields["Uniqueid"]]
    return lived


def header_names(messages: list[Message]) -> dict[str, set[tuple[str, ...]]]:
    names: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    for m in messages:
        if not m.sent and m.event is not None:
            names[m.event].add(tuple(k for k, _ in m.headers))
    return dict(names)


def _first_difference(expected: list[tuple[str, ...]], actual: list[tuple[str, ...]]) -> str:
    for i, (e, a) in enumerate(zip(expected, actual, strict=False)):
        if e != a:
            return f"item {i}: expected {e}, got {a}"
    if len(expected) > len(actual):
        return f"missing from item {len(actual)}: {expected[len(actual)]}"
    return f"extra from item {len(expected)}: {actual[len(expected)]}"


def compare(expected: list[Message], actual: list[Message]) -> list[str]:
    problems: list[str] = []
    received = [m for m in expected if not m.sent]

    want, got = responses(received), responses(actual)
    for action_id in sorted(want.keys() | got.keys()):
        if want.get(action_id) != got.get(action_id):
            problems.append(f"response to {action_id}: expected {want.get(action_id)}, got {got.get(action_id)}")

    want_types = {m.event for m in received if m.event}
    got_types = {m.event for m in actual if m.event}
    if want_types != got_types:
        problems.append(f"event types: missing {want_types - got_types}, unexpected {got_types - want_types}")

    want_seq, got_seq = per_channel(received), per_channel(actual)
    for uniqueid in sorted(want_seq.keys() | got_seq.keys()):
        e, a = want_seq.get(uniqueid, []), got_seq.get(uniqueid, [])
        if e != a:
            problems.append(f"channel {uniqueid}: {_first_difference(e, a)}")

    checks = [
        ("OriginateResponse", originate_responses),
        ("Cdr", cdrs),
        ("DeviceStateChange", device_states),
        ("CoreShowChannel", shown_channels),
    ]
    for label, extract in checks:
        e_value, a_value = extract(received), extract(actual)
        if e_value != a_value:
            problems.append(f"{label}: expected {e_value}, got {a_value}")

    want_durations, got_durations = shown_durations(received), shown_durations(actual)
    for key, seconds in want_durations.items():
        if key in got_durations and abs(got_durations[key] - seconds) > 1:
            problems.append(f"CoreShowChannel Duration {key}: expected ~{seconds}s, got {got_durations[key]}s")

    # How long each channel lived, so a wait the simulator gets wrong shows even when whole-second
    # CDR figures happen to agree (an Answer() that waited 0.5 s for media instead of 20 ms did).
    want_lived, got_lived = lifetimes(received), lifetimes(actual)
    for uniqueid, lived in want_lived.items():
        if uniqueid in got_lived and abs(got_lived[uniqueid] - lived) > LIFETIME_TOLERANCE:
            problems.append(f"channel {uniqueid} lived {got_lived[uniqueid]:.2f}s, on Asterisk {lived:.2f}s")

    for event in ("BridgeCreate", "BridgeDestroy"):
        e_count = sum(m.event == event for m in received)
        a_count = sum(m.event == event for m in actual)
        if e_count != a_count:
            problems.append(f"{event}: expected {e_count}, got {a_count}")

    want_names, got_names = header_names(received), header_names(actual)
    for event in sorted(want_names.keys() & got_names.keys()):
        if want_names[event] != got_names[event]:
            problems.append(f"{event} headers: expected {want_names[event]}, got {got_names[event]}")
    return problems


@pytest.mark.parametrize("flow", FLOWS + SHIPPED_FLOWS)
async def test_flow_matches_transcript(flow: str) -> None:
    recorded = parse_transcript(flow)

    async def differences() -> list[str]:
        replayed = await replay(flow)
        problems = []
        for session in dict.fromkeys(m.session for m in recorded):
            expected = Normaliser().messages(m for m in recorded if m.session == session)
            actual = Normaliser().messages(m for m in replayed if m.session == session)
            problems += [f"[{session or 'actions'}] {p}" for p in compare(expected, actual)]
        return problems

    # The simulator is deterministic but for time: on a loaded machine a stalled loop or a late
    # read can move a whole-second CDR figure or a lifetime. A real difference shows again on
    # a second replay; a stall seldom hits the same spot twice, so only a repeat fails.
    first = await differences()
    again = await differences() if first else []
    assert not again, (
        f"{flow}: {len(again)} difference(s) on a second replay\n"
        + "\n".join(again)
        + f"\n(first replay: {len(first)})\n"
        + "\n".join(first)
    )


def test_shipped_transcripts_were_recorded_with_todays_dialplan() -> None:
    """They replay on today's shipped dialplan: a change to it needs new recordings (see capture.py)."""
    recorded = (SHIPPED / "extensions_leadrouter.conf").read_text(encoding="utf-8")
    assert SHIPPED_DIALPLAN.read_text(encoding="utf-8") == recorded, (
        "ami_adapter/asterisk/extensions_leadrouter.conf changed since tests/fixtures/ami/shipped/ was recorded: "
        "record again with tests/fixtures/ami/shipped/capture.py"
    )


async def test_login_failure_matches_transcript() -> None:
    """login_failure.txt: a wrong secret gets the error, then Asterisk closes the connection."""
    transcript = (FIXTURES / "login_failure.txt").read_text(encoding="utf-8")
    assert "Message: Authentication failed" in transcript
    clock = ScaledClock(SCALE)
    async with Simulator(clock=clock, dialplan=FIXTURES / "extensions.conf") as sim:
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
        assert await reader.readline() == b"Asterisk Call Manager/13.0.0\r\n"
        writer.write(b"Action: Login\r\nUsername: leadrouter\r\nSecret: wrong\r\nActionID: login-bad\r\n\r\n")
        reply = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert reply == b"Response: Error\r\nActionID: login-bad\r\nMessage: Authentication failed\r\n\r\n"
        writer.write(b"Action: Ping\r\nActionID: ping-unauth\r\n\r\n")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
