"""AMI wire format, permission classes and the event bus the PBX publishes on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

Headers = Sequence[tuple[str, str]]

BANNER = b"Asterisk Call Manager/13.0.0\r\n"

# manager.c's permission classes, in its order (the order also fixes how they are printed).
CLASSES = (
    "system",
    "call",
    "log",
    "verbose",
    "command",
    "agent",
    "user",
    "config",
    "dtmf",
    "reporting",
    "cdr",
    "dialplan",
    "originate",
)
ALL = frozenset(CLASSES)

SYSTEM = "system"
CALL = "call"
CDR = "cdr"
DIALPLAN = "dialplan"


def parse_classes(text: str) -> frozenset[str]:
    """A manager.conf ``read``/``write`` list or an ``Events`` mask: on/off, all/none, or class names."""
    value = text.strip().lower()
    if value in ("on", "yes", "true", "y", "t", "1"):
        return ALL
    if value in ("off", "no", "false", "n", "f", "0", "none", ""):
        return frozenset()
    names = {part.strip() for part in value.split(",")}
    if "all" in names:
        return ALL
    return frozenset(names & ALL)


@dataclass
class AmiUser:
    """An AMI account as manager.conf declares it (class names for read and write)."""

    secret: str
    read: frozenset[str]
    write: frozenset[str]


# The account of tests/fixtures/ami/manager.conf, the one the transcripts were captured with.
DEFAULT_USERS = {
    "leadrouter": AmiUser(
        secret="s3cret",
        read=parse_classes("system,call,log,verbose,command,agent,user,config,dtmf,reporting,cdr,dialplan,originate"),
        write=parse_classes("system,call,command,agent,user,config,reporting,originate"),
    )
}


def encode(headers: Headers) -> bytes:
    return ("".join(f"{key}: {value}\r\n" for key, value in headers) + "\r\n").encode()


class EventBus(Protocol):
    """Where the PBX publishes events; building them is skipped when nobody would receive them."""

    def wants(self, category: str) -> bool: ...

    def publish(self, category: str, event: str, headers: Headers) -> None: ...
