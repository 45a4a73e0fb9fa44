"""What to do with our calls after a (re)login, decided from the PBX's listing alone.

After every login the PBX lists the client legs it has right now. Given that listing, the
calls a previous run left open (read from storage on the first login, to adopt) and the
calls this run holds as live, ``decide_resync`` says which calls to take over and what each
still needs, and which calls to close because their client leg vanished while nobody was
listening. It reads no clock and touches nothing; the Dialer applies the decision.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Set
from dataclasses import dataclass
from datetime import datetime

from router.model import Call, CallState


class Resume(enum.Enum):
    """What an adopted call that the PBX still has needs from this run."""

    AWAIT_ANSWER = "await_answer"  # the client's phone still rings: the dial deadline starts again
    HOLD = "hold"  # the client waits on hold: back in the queue, the hold limit starts again
    KEEP_MANAGER = "keep_manager"  # a manager's phone rings or talks: they stay reserved for it


@dataclass(frozen=True, slots=True)
class Adoption:
    call: Call
    resume: Resume | None  # None: the PBX no longer has it, so it is also among the calls to close


@dataclass(frozen=True, slots=True)
class ResyncDecision:
    adopt: list[Adoption]
    close: list[Call]  # this run's live calls first, then the adopted ones, in the order given


def decide_resync(
    *, listed: Set[str], asked_at: datetime, adopted: Iterable[Call], live: Iterable[Call]
) -> ResyncDecision:
    """``listed``: the channel ids the PBX has, as asked for at ``asked_at``."""
    live = list(live)
    adopted = list(adopted)
    known = {call.channel_id for call in live}
    adopt = [
        Adoption(call, _resume(call) if call.channel_id in listed else None)
        for call in adopted
        if call.channel_id not in known  # a login that came quickly after another adopted it already
    ]
    from_previous_run = {call.channel_id for call in adopted}
    close = [
        call
        for call in [*live, *(adoption.call for adoption in adopt)]
        if call.channel_id not in listed
        # A call dialled after the listing was asked for may simply be missing from it.
        and (call.channel_id in from_previous_run or call.started_at < asked_at)
    ]
    return ResyncDecision(adopt, close)


def _resume(call: Call) -> Resume:
    if call.state is CallState.DIALING:
        return Resume.AWAIT_ANSWER
    if call.state is CallState.HOLDING:
        return Resume.HOLD
    return Resume.KEEP_MANAGER  # connecting or bridged: storage never lists ended calls as unfinished
