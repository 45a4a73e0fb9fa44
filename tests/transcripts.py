"""Reading the recorded AMI transcripts in tests/fixtures/ami (captured from a real Asterisk).

A transcript may hold more than one AMI session: blocks whose time stamp is followed by a
name (``<<< t=0.705 observer``) belong to that session; unmarked blocks are the session that
sent the actions. Names may have a folder: ``shipped/connect`` is ``shipped/connect.txt``.
"""

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
    session: str = ""  # "" for the session that sent the actions

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
        """What Asterisk sent to the session that sent the actions."""
        return [block for block in self.blocks if not block.sent and not block.session]

    @property
    def sessions(self) -> list[str]:
        """The sessions in the order they first appear ("" is the one that sent the actions)."""
        return list(dict.fromkeys(block.session for block in self.blocks))

    def session(self, name: str) -> list[Block]:
        return [block for block in self.blocks if block.session == name]

    def wire_bytes(self) -> bytes:
        """What Asterisk wrote to the acting session's socket: the banner line, then every message it sent."""
        messages = ("\r\n".join(block.lines) + "\r\n\r\n" for block in self.received if block.lines)
        text = self.banner + "\r\n" + "".join(messages)
        return text.encode("utf-8")


def load(name: str) -> Transcript:
    banner = ""
    blocks: list[Block] = []
    current: tuple[bool, float | None, str] | None = None
    lines: list[str] = []

    def close() -> None:
        if current is not None:
            blocks.append(Block(current[0], current[1], tuple(lines), current[2]))

    for raw in (FIXTURES / f"{name}.txt").read_text(encoding="utf-8").splitlines():
        if raw.startswith("# banner: "):
            banner = raw.removeprefix("# banner: ")
        elif raw.startswith((">>>", "<<<")):
            close()
            lines = []
            stamp, _, session = raw[3:].strip().partition(" ")
            try:
                seconds: float | None = float(stamp.removeprefix("t="))
            except ValueError:
                seconds, session = None, ""
            current = (raw.startswith(">>>"), seconds, session.strip())
        elif raw and current is not None and not raw.startswith("("):
            lines.append(raw)
    close()
    return Transcript(name, banner, tuple(blocks))


def flow(name: str) -> list[dict[str, object]]:
    """The action script a transcript was captured with (flow_<name>.json beside it)."""
    path = FIXTURES / name
    return json.loads((path.parent / f"flow_{path.name}.json").read_text(encoding="utf-8"))


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
