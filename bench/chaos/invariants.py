"""What a chaos run must never break, judged from evidence the daemon cannot vouch for itself.

Three independent witnesses: the database rows (what was committed), the PBX simulator's
channel history (what really rang, answered and hung up, whatever the daemon believed),
and an MQTT subscriber's capture (what a CRM really received). Nothing here takes the
daemon's word for how it did: the one belief of its own that is used, which managers it
counts free, is itself what ``managers_stuck`` judges, against the PBX. Each invariant is a
count that must be 0, with the evidence behind it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

FINAL_STATUSES = frozenset({"assigned", "failed"})
EXAMPLES = 10  # ids shown per finding, enough to look a few up in the database or the log


@dataclass(frozen=True)
class LeadRow:
    id: int
    status: str  # the stored LeadStatus value
    attempts: int  # attempts the lead was charged for


@dataclass(frozen=True)
class CallRow:
    lead_id: int
    channel_id: str  # the client leg's Uniqueid, chosen by the daemon
    state: str  # the stored CallState value

    @property
    def ended(self) -> bool:
        return self.state == "ended"


@dataclass(frozen=True)
class ClientLeg:
    """One client leg as the PBX lived it (the ;1 half of a Local/<number>@sim-clients pair)."""

    channel_id: str
    lead_id: int | None  # the lead whose number it dialled; None for a number no posted lead has
    created: datetime
    answered: datetime | None
    ended: datetime | None  # None: still up when the evidence was taken
    bridged: bool  # the client talked to a manager (the connect context's Dial answered)
    shut_down: bool  # cut by a PBX restart rather than hung up


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    id: str
    type: str
    lead_id: int
    published: bool  # the daemon marked it sent (the broker acknowledged it)


@dataclass(frozen=True)
class Delivery:
    """One message as the subscriber received it."""

    id: str
    lead_id: int


@dataclass
class Evidence:
    posted: set[int]  # ids of the leads the API answered 2xx
    not_accepted: int  # leads the API never answered 2xx within the harness's patience
    leads: list[LeadRow]
    calls: list[CallRow]
    legs: list[ClientLeg]  # every client leg of every PBX incarnation
    originated: set[str]  # ChannelIds of every Originate any PBX incarnation read, run or not
    outbox: list[OutboxRow]
    deliveries: list[Delivery]  # in arrival order
    # (how many messages had arrived, fault) when the daemon was killed or the broker stopped,
    # in order: at-least-once delivery may re-send after these, and only after these.
    fault_marks: list[tuple[int, str]]
    # (managers free on the PBX, managers free in the daemon's view) at a few moments at the end.
    managers: list[tuple[int, int]]


@dataclass(frozen=True)
class Finding:
    value: int
    evidence: dict[str, Any] = field(default_factory=dict)


def _examples(ids: Iterable[Any]) -> list[Any]:
    return sorted(ids)[:EXAMPLES]


def leads_lost(evidence: Evidence) -> Finding:
    """Acknowledged with 2xx, then missing from the database or never finished (assigned or failed)."""
    stored = {lead.id: lead for lead in evidence.leads}
    missing = evidence.posted - stored.keys()
    unfinished = {i for i in evidence.posted - missing if stored[i].status not in FINAL_STATUSES}
    return Finding(
        len(missing) + len(unfinished),
        {
            "missing": _examples(missing),
            "unfinished_by_status": dict(Counter(stored[i].status for i in unfinished)),
            "unfinished": _examples(unfinished),
            "not_accepted_by_api": evidence.not_accepted,
        },
    )


def _legs_by_lead(legs: Iterable[ClientLeg]) -> dict[int, list[ClientLeg]]:
    by_lead: dict[int, list[ClientLeg]] = defaultdict(list)
    for leg in legs:
        if leg.lead_id is not None:
            by_lead[leg.lead_id].append(leg)
    return by_lead


def overlapping_attempts(evidence: Evidence) -> Finding:
    """Leads with two client legs up at once on the PBX: a second dial while the first still rang or talked."""
    overlapping: dict[int, list[str]] = {}
    after_answer = 0
    for lead_id, legs in _legs_by_lead(evidence.legs).items():
        legs.sort(key=lambda leg: leg.created)
        up: list[ClientLeg] = []
        for leg in legs:
            up = [earlier for earlier in up if earlier.ended is None or earlier.ended > leg.created]
            if up:
                overlapping.setdefault(lead_id, [up[0].channel_id]).append(leg.channel_id)
                # The known defect: the first leg's client had answered and was left waiting.
                after_answer += any(e.answered is not None and e.answered <= leg.created for e in up)
            up.append(leg)
    return Finding(
        len(overlapping),
        {
            "leads": {str(lead): overlapping[lead] for lead in _examples(overlapping)},
            "second_dials_while_an_answered_client_waited": after_answer,
        },
    )


def _reached_the_client(leg: ClientLeg) -> bool:
    """The client's line gave the attempt its outcome, unless a PBX restart cut it before a manager took it.

    A client who answered and waited on hold when the PBX went down did nothing an attempt
    should be charged for; one who had talked to a manager had the call the attempt was for.
    """
    return not (leg.shut_down and not leg.bridged)


def attempts_burnt_by_pbx(evidence: Evidence) -> Finding:
    """Attempts charged to a lead beyond the client legs that really reached its client.

    Per lead: ``leads.attempts`` minus its legs on the PBX whose outcome came from the
    client's line (rang out, busy, unreachable, hung up, talked). What is left was charged
    while the PBX or the link failed: an Originate that never reached a PBX, one a hung or
    dying PBX read but never ran, or a leg a PBX restart cut before the client reached a
    manager. The calls without such a leg are classified from the Originates each PBX read,
    to say where the attempt died.
    """
    legs_by_lead = _legs_by_lead(evidence.legs)
    burnt: dict[int, int] = {}
    for lead in evidence.leads:
        if lead.id not in evidence.posted:
            continue
        reached = sum(_reached_the_client(leg) for leg in legs_by_lead.get(lead.id, []))
        if lead.attempts > reached:
            burnt[lead.id] = lead.attempts - reached
    legs = {leg.channel_id: leg for leg in evidence.legs}
    why: Counter[str] = Counter()
    for call in evidence.calls:
        leg = legs.get(call.channel_id)
        if leg is None:
            why[
                "originate_never_reached_a_pbx"
                if call.channel_id not in evidence.originated
                else "pbx_read_it_no_channel"
            ] += 1
        elif not _reached_the_client(leg):
            why["leg_cut_by_pbx_restart_before_a_manager"] += 1
    return Finding(
        sum(burnt.values()),
        {"leads": len(burnt), "examples": _examples(burnt), "calls_without_a_client_outcome": dict(why)},
    )


def calls_open(evidence: Evidence) -> Finding:
    """Calls still open at the end: not ended in the database, or a client leg still up on the PBX."""
    open_rows = {call.channel_id for call in evidence.calls if not call.ended}
    up_on_pbx = {leg.channel_id: leg for leg in evidence.legs if leg.ended is None}
    # The known defect's signature: the client answered while nobody steered the call, and the
    # database still says the phone rings.
    ringing_in_db = {call.channel_id for call in evidence.calls if call.state == "dialing"}
    answered = {i for i in ringing_in_db & up_on_pbx.keys() if up_on_pbx[i].answered is not None}
    return Finding(
        len(open_rows | up_on_pbx.keys()),
        {
            "open_in_db_and_up_on_pbx": len(open_rows & up_on_pbx.keys()),
            "dialing_in_db_but_answered_on_pbx": len(answered),
            "open_in_db_gone_from_pbx": len(open_rows - up_on_pbx.keys()),
            "ended_in_db_still_up_on_pbx": len(up_on_pbx.keys() - open_rows),
            "examples": _examples(open_rows | up_on_pbx.keys()),
        },
    )


def managers_stuck(evidence: Evidence) -> Finding:
    """Managers the daemon believes busy while the PBX has no channel of their phone up.

    The daemon's view is the one thing judged here against the PBX; the smallest gap over the
    samples counts, so a call starting or ending between the two looks cannot make one up.
    """
    gaps = [max(on_pbx - in_daemon, 0) for on_pbx, in_daemon in evidence.managers]
    return Finding(min(gaps, default=0), {"free_on_pbx_vs_daemon": sorted(set(evidence.managers))})


def events_missing(evidence: Evidence) -> Finding:
    """Outbox rows the subscriber never received."""
    delivered = {delivery.id for delivery in evidence.deliveries}
    missing = [row for row in evidence.outbox if row.id not in delivered]
    unknown = delivered - {row.id for row in evidence.outbox}
    return Finding(
        len(missing),
        {
            "by_type": dict(Counter(row.type for row in missing)),
            "marked_published": sum(row.published for row in missing),
            "received_but_not_in_outbox": len(unknown),
        },
    )


def order_violations(evidence: Evidence) -> Finding:
    """Events that first arrived after a later-committed event of the same lead (outbox seq is commit order)."""
    seq = {row.id: row.seq for row in evidence.outbox}
    latest: dict[int, int] = {}
    seen: set[str] = set()
    late: list[int] = []
    for delivery in evidence.deliveries:
        if delivery.id in seen or delivery.id not in seq:
            continue
        seen.add(delivery.id)
        if seq[delivery.id] < latest.get(delivery.lead_id, 0):
            late.append(delivery.lead_id)
        latest[delivery.lead_id] = max(latest.get(delivery.lead_id, 0), seq[delivery.id])
    return Finding(len(late), {"leads": _examples(set(late))})


def duplicates_delivered(evidence: Evidence) -> Finding:
    """Messages received again with an id already received, by the last fault before the repeat.

    At-least-once delivery re-sends what a killed daemon had not marked published, and what a
    broker's restart left unacknowledged; both copies may arrive after the fault, so the
    repeat is charged to the fault before it, and "no_fault_before" is one nothing explains.
    """
    seen: set[str] = set()
    after: Counter[str] = Counter()
    for index, delivery in enumerate(evidence.deliveries):
        if delivery.id in seen:
            faults = [fault for at, fault in evidence.fault_marks if at <= index]
            after[faults[-1] if faults else "no_fault_before"] += 1
        seen.add(delivery.id)
    return Finding(sum(after.values()), {"copies_after": dict(after)})


CHECKS = {
    "leads_lost": leads_lost,
    "overlapping_attempts": overlapping_attempts,
    "attempts_burnt_by_pbx": attempts_burnt_by_pbx,
    "calls_open": calls_open,
    "managers_stuck": managers_stuck,
    "events_missing": events_missing,
    "order_violations": order_violations,
    "duplicates_delivered": duplicates_delivered,
}
INVARIANTS = tuple(CHECKS)


def witnessed(evidence: Evidence) -> dict[str, int]:
    """How much evidence each witness gave: a zero proves little when there was nothing to see."""
    return {
        "leads_posted": len(evidence.posted),
        "calls_stored": len(evidence.calls),
        "client_legs_on_pbx": len(evidence.legs),
        "legs_cut_by_pbx_restarts": sum(leg.shut_down for leg in evidence.legs),
        "originates_read_by_pbx": len(evidence.originated),
        "outbox_rows": len(evidence.outbox),
        "messages_received": len(evidence.deliveries),
        "managers_free_on_pbx": max((on_pbx for on_pbx, _ in evidence.managers), default=0),
    }


def audit(evidence: Evidence) -> dict[str, Finding]:
    """Every invariant, in INVARIANTS order."""
    return {name: check(evidence) for name, check in CHECKS.items()}
