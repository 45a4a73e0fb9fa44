"""AMI ingest: our whole reader path vs panoramisk's bare parse, on the same bytes, in one run.

The bytes are every message of the recorded transcripts (tests/fixtures/ami, a real
Asterisk), with our client legs renamed to the daemon's channel-id prefix so that the
translator does real work, repeated to a few megabytes and fed in 4 KiB reads.

* panoramisk bare: panoramisk 1.4 AMIProtocol.data_received -> Message objects, dispatch
  to a no-op (what the library does before any application code runs);
* leadrouter full: ami_adapter.protocol.AmiProtocol -> EventTranslator -> the dialer's
  event queue (Dialer.pbx_event), and the queue drained: everything the AMI reader does;
* leadrouter parser alone, like for like with panoramisk: every event parsed into its
  headers (no event skipped unparsed), handed to a no-op.

Run: .venv/bin/python -m bench.ami_ingest   (figures are medians of interleaved runs)
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from typing import Any

from panoramisk.ami_protocol import AMIProtocol

from ami_adapter.protocol import AmiProtocol
from ami_adapter.translate import WANTED_EVENTS, EventTranslator, TranslatorSettings
from tests.transcripts import CALL_TRANSCRIPTS, load

READ_SIZE = 4096
TARGET_BYTES = 8 << 20
ROUNDS = 7


class _Transport(asyncio.Transport):
    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass

    def close(self) -> None:
        pass


class _Every(frozenset[str]):
    """Every event name is wanted: our parser parses every frame, as panoramisk does."""

    def __contains__(self, item: object) -> bool:
        return True


def corpus(target_bytes: int = TARGET_BYTES) -> tuple[bytes, int]:
    parts = []
    for name in CALL_TRANSCRIPTS:
        wire = load(name).wire_bytes().decode()
        body = wire.split("\r\n", 1)[1]  # without the banner
        # lead42-c1 -> lr-lead42c1: the daemon's own channel ids look like this.
        parts.append(re.sub(r"\b(lead\d+|c3|hup|mask|bad-ctx)-(\w+)", r"lr-\1\2", body))
    one = "".join(parts)
    repeat = max(1, target_bytes // len(one.encode()))
    data = ("Asterisk Call Manager/13.0.0\r\n" + one * repeat).encode()
    return data, one.count("\r\n\r\n") * repeat


def run_panoramisk(data: bytes) -> float:
    proto = AMIProtocol()
    proto.connection_made(_Transport())
    proto.factory = type("Factory", (), {"dispatch": staticmethod(lambda message: None)})()
    proto.encoding = "utf8"
    started = time.perf_counter()
    for offset in range(0, len(data), READ_SIZE):
        proto.data_received(data[offset : offset + READ_SIZE])
    return time.perf_counter() - started


def run_leadrouter(data: bytes) -> tuple[float, int]:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    translator = EventTranslator(TranslatorSettings("lr", ("Local/", "@sim-managers")), sink=queue.put_nowait)
    proto = AmiProtocol()
    proto.connection_made(_Transport())
    proto.on_event = translator
    proto.wanted_events = WANTED_EVENTS
    drained = 0
    started = time.perf_counter()
    for offset in range(0, len(data), READ_SIZE):
        proto.data_received(data[offset : offset + READ_SIZE])
        while not queue.empty():
            queue.get_nowait()
            drained += 1
    return time.perf_counter() - started, drained


def run_parser_alone(data: bytes) -> float:
    proto = AmiProtocol()
    proto.connection_made(_Transport())
    proto.on_event = lambda name, headers: None
    proto.wanted_events = _Every()
    started = time.perf_counter()
    for offset in range(0, len(data), READ_SIZE):
        proto.data_received(data[offset : offset + READ_SIZE])
    return time.perf_counter() - started


def measure(rounds: int = ROUNDS, target_bytes: int = TARGET_BYTES) -> dict[str, float]:
    """``python -m bench``'s figures: our reader's speed over panoramisk's, whole pipeline and parser alone."""
    data, _ = corpus(target_bytes)
    ours, alone, theirs = [], [], []
    for _ in range(rounds):  # interleaved, so machine noise hits all alike
        theirs.append(run_panoramisk(data))
        ours.append(run_leadrouter(data)[0])
        alone.append(run_parser_alone(data))
    t_theirs = statistics.median(theirs)
    return {
        "ami_ingest_ratio_vs_panoramisk": round(t_theirs / statistics.median(ours), 3),
        "ami_parse_alone_ratio_vs_panoramisk": round(t_theirs / statistics.median(alone), 3),
    }


def main() -> None:
    data, messages = corpus()
    ours, alone, theirs, domain_events = [], [], [], 0
    for _ in range(ROUNDS):  # interleaved, so machine noise hits all alike
        theirs.append(run_panoramisk(data))
        seconds, domain_events = run_leadrouter(data)
        ours.append(seconds)
        alone.append(run_parser_alone(data))
    t_theirs, t_ours, t_alone = statistics.median(theirs), statistics.median(ours), statistics.median(alone)
    mb = len(data) / 1e6
    print(f"AMI ingest: {mb:.1f} MB, {messages} messages (transcripts repeated), {READ_SIZE} B reads, {ROUNDS} rounds")
    print(f"  panoramisk 1.4 bare parse : {messages / t_theirs:>11,.0f} msg/s  {mb / t_theirs:6.1f} MB/s")
    print(
        f"  leadrouter full pipeline  : {messages / t_ours:>11,.0f} msg/s  {mb / t_ours:6.1f} MB/s"
        f"  ({domain_events} domain events)"
    )
    print(
        f"  leadrouter parser alone   : {messages / t_alone:>11,.0f} msg/s  {mb / t_alone:6.1f} MB/s"
        "  (every event parsed)"
    )
    print(
        f"  ratio leadrouter/panoramisk: {t_theirs / t_ours:.2f}x (bar: >= 1.0x);"
        f" parser alone {t_theirs / t_alone:.2f}x"
    )


if __name__ == "__main__":
    main()
