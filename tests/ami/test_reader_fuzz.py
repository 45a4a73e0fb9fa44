"""The AMI reader under hostile bytes: real transcript streams cut at random points, garbage
frames between them, events with headers missing or mangled, truncated streams and frames
that never end. It never raises (an exception would end the AMI session) and never loses
its place: every real event after the noise arrives intact.

The example counts are fixed so the figures in issue 10's note are the suite's own.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from ami_adapter.protocol import AmiProtocol
from ami_adapter.translate import EventTranslator, TranslatorSettings
from router.pbx_events import PbxEvent
from tests.transcripts import CALL_TRANSCRIPTS, load

EXAMPLES = 150
BANNER = b"Asterisk Call Manager/13.0.0\r\n"
FRAME_END = b"\r\n\r\n"

_STREAMS = {name: load(name) for name in CALL_TRANSCRIPTS}


def _frames(name: str) -> list[bytes]:
    """The transcript's frames as Asterisk sent them, each with its blank line."""
    wire = _STREAMS[name].wire_bytes().removeprefix(BANNER)
    return [frame + FRAME_END for frame in wire.split(FRAME_END) if frame]


def _expected(name: str) -> list[dict[str, str]]:
    return [
        dict(block.headers()) for block in _STREAMS[name].received if block.get("Event") and not block.get("ActionID")
    ]


class _Transport(asyncio.Transport):
    closed = False

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def _reader(wanted: frozenset[str]) -> tuple[AmiProtocol, list[dict[str, str]], _Transport]:
    seen: list[dict[str, str]] = []
    transport = _Transport()
    proto = AmiProtocol()
    proto.connection_made(transport)
    proto.on_event = lambda _name, headers: seen.append(headers)
    proto.wanted_events = wanted
    return proto, seen, transport


def _wanted(name: str) -> frozenset[str]:
    return frozenset(headers["Event"] for headers in _expected(name))


def _feed(proto: AmiProtocol, data: bytes, cuts: list[int]) -> None:
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    for start, end in itertools.pairwise(points):
        proto.data_received(data[start:end])


transcripts = st.sampled_from(CALL_TRANSCRIPTS)
cuts = st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=60)
# Bytes of any kind, ':' excepted so that no garbage can pass for an "Event: " or "Response: "
# frame; each piece ends in a blank line, as anything framed like AMI does.
garbage = st.binary(min_size=1, max_size=300).map(lambda raw: raw.replace(b":", b";") + FRAME_END)


@settings(max_examples=EXAMPLES, deadline=None)
@given(transcripts, cuts)
def test_a_stream_cut_anywhere_yields_every_event_intact(name: str, cut_at: list[int]) -> None:
    proto, seen, transport = _reader(_wanted(name))
    _feed(proto, _STREAMS[name].wire_bytes(), cut_at)
    assert seen == _expected(name) and not transport.closed


@settings(max_examples=EXAMPLES, deadline=None)
@given(transcripts, st.lists(st.tuples(st.integers(min_value=0), garbage), max_size=10), cuts)
def test_garbage_between_frames_is_skipped_and_every_real_event_still_arrives(
    name: str, noise: list[tuple[int, bytes]], cut_at: list[int]
) -> None:
    frames = _frames(name)
    for position, piece in noise:
        frames.insert(position % (len(frames) + 1), piece)
    proto, seen, transport = _reader(_wanted(name))
    with capture_logs():
        _feed(proto, BANNER + b"".join(frames), cut_at)
    assert seen == _expected(name) and not transport.closed


@settings(max_examples=EXAMPLES, deadline=None)
@given(transcripts, st.integers(min_value=0), cuts)
def test_a_truncated_stream_yields_the_events_it_completed(name: str, length: int, cut_at: list[int]) -> None:
    data = _STREAMS[name].wire_bytes()
    truncated = data[: length % (len(data) + 1)]
    proto, seen, transport = _reader(_wanted(name))
    _feed(proto, truncated, cut_at)
    assert seen == _expected(name)[: len(seen)] and not transport.closed
    proto.data_received(data[len(truncated) :])  # the rest arrives after all: nothing lost
    assert seen == _expected(name)


# Header lines of real events, mangled: a value replaced, a line dropped or doubled.
mangling = st.lists(
    st.tuples(st.integers(min_value=0), st.sampled_from(["drop", "value", "double"]), st.text(max_size=30)),
    max_size=8,
)


def _mangle(frame: bytes, edits: list[tuple[int, str, str]]) -> bytes:
    lines = frame.removesuffix(FRAME_END).split(b"\r\n")
    for index, how, text in edits:
        at = 1 + index % max(1, len(lines) - 1)  # the Event line stays, so the frame is an event
        if at >= len(lines):
            continue
        key = lines[at].partition(b": ")[0]
        value = text.replace("\r", "").replace("\n", "").encode()
        if how == "drop":
            del lines[at]
        elif how == "value":
            lines[at] = key + b": " + value
        else:
            lines.insert(at, lines[at])
    return b"\r\n".join(lines) + FRAME_END


@settings(max_examples=EXAMPLES, deadline=None)
@given(transcripts, st.lists(st.tuples(st.integers(min_value=0), mangling), max_size=6), cuts)
def test_mangled_events_reach_the_translator_without_ending_the_session(
    name: str, damage: list[tuple[int, list[tuple[int, str, str]]]], cut_at: list[int]
) -> None:
    frames = _frames(name)
    for position, edits in damage:
        at = position % len(frames)
        frames[at] = _mangle(frames[at], edits)
    events: list[PbxEvent] = []
    translator = EventTranslator(TranslatorSettings("lr", ("Local/", "@sim-managers")), sink=events.append)
    transport = _Transport()
    proto = AmiProtocol()
    proto.connection_made(transport)
    proto.on_event = translator
    proto.wanted_events = _wanted(name)
    with capture_logs():
        _feed(proto, BANNER + b"".join(frames), cut_at)
    assert not transport.closed


def test_an_event_the_daemon_chokes_on_is_logged_and_skipped_and_the_next_one_arrives() -> None:
    seen: list[str] = []

    def choosy(_name: str, headers: dict[str, str]) -> None:
        if headers.get("Uniqueid") == "lr-bad":
            raise KeyError("Channel")
        seen.append(headers["Uniqueid"])

    proto = AmiProtocol()
    proto.connection_made(_Transport())
    proto.on_event = choosy
    proto.wanted_events = frozenset({"Hangup"})
    logs: list[dict[str, Any]]
    with capture_logs() as logs:
        proto.data_received(BANNER)
        for _ in range(30):
            proto.data_received(b"Event: Hangup\r\nUniqueid: lr-bad\r\n\r\nEvent: Hangup\r\nUniqueid: lr-ok\r\n\r\n")
    assert seen == ["lr-ok"] * 30
    skipped = [line for line in logs if line["event"] == "ami.event_skipped"]
    assert skipped and "KeyError" in skipped[0]["error"]
    assert len(skipped) == 10, "rate-limited: ten a minute"


def test_a_huge_frame_is_dropped_and_the_stream_resynchronises() -> None:
    name = CALL_TRANSCRIPTS[0]
    proto, seen, transport = _reader(_wanted(name))
    with capture_logs() as logs:
        proto.data_received(BANNER)
        for _ in range(40):  # 2.5 MB with no blank line, as one read after another
            proto.data_received(b"Event: Newchannel\r\nX-Junk: " + b"y" * 65536 + b"\r\n")
        proto.data_received(FRAME_END)
        _feed(proto, b"".join(_frames(name)), [17, 4000, 4001])
    assert seen == _expected(name) and not transport.closed
    assert [line["event"] for line in logs].count("ami.frame_dropped") >= 1
