"""Routing what-if: the stored leads of a period replayed through another routing plan.

For each lead: the scenario the plan would match (at its first dial), and, if a manager talked
to the client, who the plan would have given him to at that moment, given who was free then.
"Free" is read from the stored calls: a manager is busy while a leg of another of our calls
rang or talked on his phone (personal calls and shifts beyond the plan's are not stored, so the
plan's shifts stand in). When nobody in the pool was free, its overflow pools are looked at
in order, as if the client had waited for them. Leads nobody reached stay unreached: the
client's line is not the plan's doing.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from router.board import ManagerBoard
from router.model import Call, Lead
from router.pbx_events import DeviceState
from router.routing import Manager, RoutingPlan, Scenario


@dataclass(frozen=True, slots=True)
class PastLead:
    lead: Lead
    calls: Sequence[Call]  # oldest first


@dataclass(frozen=True, slots=True)
class Replayed:
    lead_id: int
    phone: str
    scenario_now: str | None  # of its first call; None: never dialled
    scenario_new: str
    owner_now: str | None  # who talked to the client; None: nobody reached him
    owner_new: str | None


@dataclass(frozen=True)
class WhatIf:
    leads: list[Replayed]

    def per_scenario(self) -> dict[str, tuple[int, int]]:
        now = Counter(lead.scenario_now for lead in self.leads if lead.scenario_now is not None)
        new = Counter(lead.scenario_new for lead in self.leads)
        return {name: (now[name], new[name]) for name in sorted({*now, *new})}

    def per_manager(self) -> dict[str, tuple[int, int]]:
        now = Counter(lead.owner_now for lead in self.leads if lead.owner_now is not None)
        new = Counter(lead.owner_new for lead in self.leads if lead.owner_new is not None)
        return {name: (now[name], new[name]) for name in sorted({*now, *new})}

    def changed_hands(self) -> list[Replayed]:
        return [lead for lead in self.leads if lead.owner_now is not None and lead.owner_new != lead.owner_now]


@dataclass(frozen=True, slots=True)
class _Span:
    manager_id: str
    call_id: int | None
    start: datetime
    end: datetime


def replay(history: Sequence[PastLead], plan: RoutingPlan, rng: random.Random | None = None) -> WhatIf:
    spans = [
        _Span(leg.manager_id, call.id, leg.started_at, leg.ended_at or call.ended_at or leg.started_at)
        for past in history
        for call in past.calls
        for leg in call.legs
    ]
    board = ManagerBoard(plan, rng or random.Random(0))  # seeded: the same history, the same answer
    owners: dict[str, str] = {}  # phone -> owner under the plan, for owner first
    replayed = []
    for past in sorted(history, key=_first_moment):
        lead, calls = past.lead, past.calls
        assert lead.id is not None
        scenario = plan.scenario_for(lead, calls[0].started_at if calls else lead.created_at)
        taken = next((call for call in calls if call.bridged_at is not None), None)
        owner_new = None
        if taken is not None:
            moment = taken.answered_at or taken.bridged_at
            assert moment is not None and taken.id is not None
            _free_as_stored(board, plan.managers, spans, taken.id, moment)
            owner_new = _pick(board, scenario, owners.get(lead.phone), taken.id, moment)
            if owner_new is not None:
                first = scenario.owner_first
                if first is None or first.owner_changes or lead.phone not in owners:
                    owners[lead.phone] = owner_new
        replayed.append(
            Replayed(
                lead_id=lead.id,
                phone=lead.phone,
                scenario_now=calls[0].scenario if calls else None,
                scenario_new=scenario.name,
                owner_now=taken.manager_id if taken is not None else None,
                owner_new=owner_new,
            )
        )
    return WhatIf(replayed)


def _first_moment(past: PastLead) -> datetime:
    return past.calls[0].started_at if past.calls else past.lead.created_at


def _free_as_stored(
    board: ManagerBoard, managers: Sequence[Manager], spans: Sequence[_Span], call_id: int, moment: datetime
) -> None:
    busy = {span.manager_id for span in spans if span.call_id != call_id and span.start <= moment < span.end}
    for manager in managers:
        board.device_changed(manager.extension, DeviceState.IN_USE if manager.id in busy else DeviceState.FREE)


def _pick(board: ManagerBoard, scenario: Scenario, owner: str | None, call_id: int, moment: datetime) -> str | None:
    """Who the plan gives the client: his owner if free (owner first), else the pools in order."""
    if scenario.owner_first is not None and owner is not None and board.is_free(owner):
        return owner
    for level in range(len(scenario.pools)):
        manager = board.pick(scenario, frozenset(), moment, level)
        if manager is not None:
            board.give(scenario, manager.id, call_id, moment, level)  # his turn counts in the strategy
            board.release(manager.id, call_id)  # his phone's state comes from the stored calls
            return manager.id
    return None
