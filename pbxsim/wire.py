"""AMI wire format, permission classes and the event bus the PBX publishes on."""

from __future__ import annotations

import re
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
USER = "user"


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
    """An AMI account as manager.conf declares it (class names for read and write, event filters)."""

    secret: str
    read: frozenset[str]
    write: frozenset[str]
    # manager.conf's ``eventfilter`` regexes (a leading "!" excludes), applied to every event's
    # text; replies to actions, event lists included, pass unfiltered (shipped/connect.txt).
    eventfilter: tuple[str, ...] = ()


@dataclass(frozen=True)
class ManagerConf:
    """What of a manager.conf shapes the simulator: its accounts and whether events are stamped."""

    users: dict[str, AmiUser]
    timestamp_events: bool  # [general] timestampevents: a Timestamp header on every event


def read_manager_conf(text: str) -> ManagerConf:
    """Every section but [general] is a user; of [general] only ``timestampevents`` matters.

    Only what shapes a session is read (secret, read, write, eventfilter); ACLs and the
    listening address are the caller's business (the simulator listens where it is told).
    """
    users: dict[str, AmiUser] = {}
    timestamp_events = False
    section: str | None = None
    for raw in text.splitlines():
        line = re.sub(r"(?<!\\);.*", "", raw).replace("\\;", ";").strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip().lower()
            if section != "general":
                users[section] = AmiUser(secret="", read=frozenset(), write=frozenset())
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key, value = key.strip().lower().rstrip(">"), value.lstrip(">").strip()
        if section == "general":
            if key == "timestampevents":
                timestamp_events = value.lower() in ("yes", "true", "on", "1")
            continue
        user = users.get(section or "")
        if user is None:
            continue
        if key == "secret":
            user.secret = value
        elif key == "read":
            user.read = parse_classes(value)
        elif key == "write":
            user.write = parse_classes(value)
        elif key == "eventfilter":
            user.eventfilter = (*user.eventfilter, value)
    return ManagerConf(users, timestamp_events)


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
