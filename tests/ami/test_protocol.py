"""Our AMI framing on the bytes a real Asterisk sent, cut into TCP reads every which way."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from panoramisk.ami_protocol import AMIProtocol

from ami_adapter.protocol import AmiProtocol
from tests.transcripts import CALL_TRANSCRIPTS, load


class _Transport(asyncio.Transport):
    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


def _protocol(wanted: frozenset[str]) -> tuple[AmiProtocol, list[tuple[str, dict[str, str]]]]:
    seen: list[tuple[str, dict[str, str]]] = []
    proto = AmiProtocol()
    proto.connection_made(_Transport())
    proto.on_event = lambda name, headers: seen.append((name, headers))
    proto.wanted_events = wanted
    return proto, seen


def _chunks(data: bytes, sizes: str, rng: random.Random) -> list[bytes]:
    if sizes == "whole":
        return [data]
    if sizes == "bytes":
        return [data[offset : offset + 1] for offset in range(len(data))]
    out, offset = [], 0
    while offset < len(data):
        size = rng.randint(1, 700)
        out.append(data[offset : offset + size])
        offset += size
    return out


@pytest.mark.parametrize("sizes", ["whole", "bytes", "random"])
@pytest.mark.parametrize("name", CALL_TRANSCRIPTS)
async def test_every_event_of_a_transcript_arrives_intact_however_the_bytes_are_cut(name: str, sizes: str) -> None:
    transcript = load(name)
    expected = [
        dict(block.headers()) for block in transcript.received if block.get("Event") and not block.get("ActionID")
    ]
    proto, seen = _protocol(frozenset(headers["Event"] for headers in expected))
    for chunk in _chunks(transcript.wire_bytes(), sizes, random.Random(name)):
        proto.data_received(chunk)
    assert [headers for _, headers in seen] == expected
    assert proto.version == "13.0.0"


def test_a_cyrillic_name_split_inside_a_letter_survives_where_panoramisk_loses_it() -> None:
    data = load("three_concurrent").wire_bytes()
    cut = data.index("Иван".encode()) + 1  # between the two bytes of "И"
    proto, seen = _protocol(frozenset({"NewCallerid"}))
    proto.data_received(data[:cut])
    proto.data_received(data[cut:])
    names = [headers["CallerIDName"] for _, headers in seen]
    assert "Ольга" in names and "ван Петров" not in names
    first = names.index("Иван Петров")

    # The trap we wrap: panoramisk 1.4 decodes each read alone and drops the split letter.
    received: list[Any] = []
    bare = AMIProtocol()
    bare.connection_made(_Transport())
    bare.factory = type("F", (), {"dispatch": staticmethod(received.append)})()
    bare.encoding = "utf8"
    bare.data_received(data[:cut])
    bare.data_received(data[cut:])
    bare_names = [message["CallerIDName"] for message in received if message.get("Event") == "NewCallerid"]
    assert bare_names[first] == "ван Петров"


def test_unwanted_events_are_not_parsed_and_broken_frames_are_skipped() -> None:
    proto, seen = _protocol(frozenset({"Hangup"}))
    proto.data_received(b"Asterisk Call Manager/13.0.0\r\n")
    proto.data_received(b"Event: VarSet\r\nVariable: X\r\n\r\n")
    proto.data_received(b"garbage without a colon\r\nmore garbage\r\n\r\n")
    proto.data_received(b"Event: Hangup\r\nUniqueid: lr-1\r\nCause: 16\r\nAccountCode:\r\n\r\n")
    assert seen == [("Hangup", {"Event": "Hangup", "Uniqueid": "lr-1", "Cause": "16", "AccountCode": ""})]


def test_a_frame_that_never_ends_is_dropped_instead_of_growing_forever() -> None:
    proto, seen = _protocol(frozenset({"Hangup"}))
    proto.data_received(b"Asterisk Call Manager/13.0.0\r\n")
    proto.data_received(b"Event: Hangup\r\n" + b"X: " + b"y" * (1 << 20) + b"\r\n")
    proto.data_received(b"\r\n")  # the end of that monster frame: dropped up to here
    proto.data_received(b"Event: Hangup\r\nUniqueid: lr-2\r\n\r\n")
    assert seen == [("Hangup", {"Event": "Hangup", "Uniqueid": "lr-2"})]
