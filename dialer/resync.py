"""What to do with our calls after a (re)login, decided from the PBX's listing alone.

After every login the PBX lists the client legs it has right now and the stage each is at
(ringing, screened by AMD, on hold, at a manager, bridged, hearing the apology). Given that listing, the calls a
previous run left open (read from storage on the first login, to adopt) and the calls this run
holds as live, ``decide_resync`` says which calls to take over, what each listed call went through
while nobody listened (a client who answered, a manager who did not, a bridge), and which calls to
close because their client leg is gone. It reads no clock and touches nothing; the Dialer applies
the decision.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass
from datetime import datetime, timedelta

from router.model import Call, CallState
from router.pbx_events import LegStage, LiveLeg

# An Originate's leg shows up in the listing a moment after the PBX said "queued" (a thread of its
# own creates it): a call dialled this shortly before the listing was asked for may be missing yet.
LISTING_GRACE = timedelta(seconds=5)


class Missed(enum.Enum):
    """A step a call took on the PBX that we did not hear of."""

    ANSWER = "answer"  # the client answered
    MANAGER_NO_ANSWER = "manager_no_answer"  # the manager's phone stopped ringing: back on hold
    SENT_TO_MANAGER = "sent_to_manager"  # our Redirect to a manager went out, its record did not
    BRIDGE = "bridge"  # client and manager talk
    APOLOGY = "apology"  # we sent the client to the apology


@dataclass(frozen=True, slots=True)
class CatchUp:
    """A call the PBX still has, the steps it took unheard, and where it stands now."""

    call: Call
    missed: tuple[Missed, ...]
    leg: LiveLeg
    manager_id: str | None  # the manager the PBX has the client with, if one of ours


@dataclass(frozen=True, slots=True)
class ResyncDecision:
    adopt: list[Call]  # a previous run's calls to take over; those gone are also in ``close``
    catch_up: list[CatchUp]  # every listed call, this run's and adopted, in the order given
    close: list[Call]  # this run's live calls first, then the adopted ones, in the order given


def decide_resync(
    *,
    legs: Mapping[str, LiveLeg],
    asked_at: datetime,
    adopted: Iterable[Call],
    live: Iterable[Call],
    managers: Mapping[str, str],
    heard_since: Set[str] = frozenset(),
) -> ResyncDecision:
    """``legs``: the PBX's listing, asked for at ``asked_at``; ``managers``: manager id by extension.

    ``heard_since``: calls whose events arrived after the listing was asked for. What we know of
    them is newer than the listing, so it is left as it is.
    """
    live = list(live)
    known = {call.channel_id for call in live}
    # A login that came quickly after another adopted them already.
    adopt = [call for call in adopted if call.channel_id not in known]
    calls = [call for call in [*live, *adopt] if call.channel_id not in heard_since]
    catch_up = []
    for call in calls:
        leg = legs.get(call.channel_id)
        if leg is not None:
            manager_id = managers.get(leg.extension) if leg.extension is not None else None
            catch_up.append(CatchUp(call, missed(call, leg.stage, manager_id), leg, manager_id))
    close = [call for call in calls if call.channel_id not in legs and _surely_gone(call, asked_at)]
    return ResyncDecision(adopt, catch_up, close)


def missed(call: Call, stage: LegStage, manager_id: str | None) -> tuple[Missed, ...]:
    """The steps that take ``call`` from what we know to the ``stage`` the PBX shows.

    The PBX only ever moves a call forward (ringing, on hold, at a manager, bridged, apology),
    so a stage behind ours means nothing was missed; a manager who did not answer sends the
    client back on hold, which the listing shows as on hold again.
    """
    state = call.state
    if state is CallState.ENDED or stage is LegStage.RINGING:
        return ()
    answered = (Missed.ANSWER,) if state is CallState.DIALING else ()
    leg = call.current_leg
    ringing = leg.manager_id if leg is not None and state is CallState.CONNECTING else None
    same_manager = ringing is not None and ringing == manager_id
    # The client is with another manager than the one we rang: that one gave up, the client moved on.
    gave_up = (Missed.MANAGER_NO_ANSWER,) if ringing is not None and not same_manager else ()
    match stage:
        case LegStage.SCREENING | LegStage.ON_HOLD:
            return (*answered, *gave_up)
        case LegStage.AT_MANAGER:
            if state is CallState.BRIDGED or same_manager:
                return ()
            return (*answered, *gave_up, Missed.SENT_TO_MANAGER)
        case LegStage.BRIDGED:
            if state is CallState.BRIDGED:
                return ()
            if same_manager:
                return (Missed.BRIDGE,)
            return (*answered, *gave_up, Missed.SENT_TO_MANAGER, Missed.BRIDGE)
        case LegStage.APOLOGY:
            if state is CallState.BRIDGED or call.hold_expired:
                return ()
            return (*answered, *gave_up, Missed.APOLOGY)
    return ()


def _surely_gone(call: Call, asked_at: datetime) -> bool:
    # An answered call's leg existed long before the listing; a just-dialled one may not show yet.
    return call.state is not CallState.DIALING or call.started_at <= asked_at - LISTING_GRACE
