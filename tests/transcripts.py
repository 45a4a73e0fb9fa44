"""Reading the recorded AMI transcripts in tests/fixtures/ami (captured from a real Asterisk)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures" / "ami"


@dataclass(frozen=True)
class Block:
    sent: bool  # ">>>" an action we sent, "<<<" a message Asterisk sent
    t: float | None
    lines: tuple[str, ...]

    def headers(self) -> list[tuple[str, str]]:
        pairs = []
        for line in self.lines:
            key, sep, value = line.partition(": ")
            if sep:
                pairs.append((key, value))
            elif line.endswith(":"):
                pairs.append((line[:-1], ""))
        return pairs

    def get(self, key: str) -> str | None:
        return dict(self.headers()).get(key)


@dataclass(frozen=True)
class Transcript:
    name: str
    banner: str
    blocks: tuple[Block, ...]

    @property
    def received(self) -> list[Block]:
        return [block for block in self.blocks if not block.sent]

    def wire_bytes(self) -> bytes:
        """What Asterisk wrote to the socket: the banner line, then every message it sent."""
        messages = ("\r\n".join(block.lines) + "\r\n\r\n" for block in self.received if block.lines)
        text = self.banner + "\r\n" + "".join(messages)
        return text.encode("utf-8")


def load(name: str) -> Transcript:
    banner = ""
    blocks: list[Block] = []
    current: tuple[bool, float | None] | None = None
    lines: list[str] = []

    def close() -> None:
        if current is not None:
            blocks.append(Block(current[0], current[1], tuple(lines)))

    for raw in (FIXTURES / f"{name}.txt").read_text(encoding="utf-8").splitlines():
        if raw.startswith("# banner: "):
            banner = raw.removeprefix("# banner: ")
        elif raw.startswith((">>>", "<<<")):
            close()
            lines = []
            stamp = raw[3:].strip().removeprefix("t=")
            try:
                seconds: float | None = float(stamp)
            except ValueError:
                seconds = None
            current = (raw.startswith(">>>"), seconds)
        elif raw and current is not None and not raw.startswith("("):
            lines.append(raw)
    close()
    return Transcript(name, banner, tuple(blocks))


def flow(name: str) -> list[dict[str, object]]:
    """The action script a transcript was captured with (flow_<name>.json)."""
    return json.loads((FIXTURES / f"flow_{name}.json").read_text(encoding="utf-8"))


CALL_TRANSCRIPTS = (
    "client_first",
    "manager_first",
    "client_busy",
    "client_noanswer",
    "manager_noanswer",
    "client_hangup_on_hold",
    "protocol_basics",
    "three_concurrent",
)
