"""Which managers are free right now, and who gets the next client.

A manager is offered a client only when the PBX says the phone is idle, no call of ours holds
them, their shift is on, they are neither paused nor in their wrap-up after a call, and they own
fewer undecided leads than their ``max_open_leads``. Among
the free managers of a scenario's pool, the scenario's strategy picks (router.strategies); each
scenario keeps its own index of them, so a pick does not walk every free manager.

Times come in from the caller (``now``): shifts start and end, wrap-ups end, and "today" for
fewest_calls and least_talk_time turns over at midnight, in the plan's time zone.

Each manager has one state a supervisor reads (``ManagerState``); every change of it is kept in
``changes`` until the caller takes them (``take_changes``) to store and publish.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import random
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta

from router.model import Call, Lead, OutcomeReport
from router.pbx_events import DeviceState
from router.routing import Manager, RoutingPlan, Scenario, Strategy
from router.schedule import Schedule
from router.strategies import MAX_HISTORY, ScenarioMemory, Selector, selector

_IDLE_STATES = frozenset({DeviceState.FREE, DeviceState.UNKNOWN})
_AT_ONCE = datetime.min.replace(tzinfo=UTC)  # a shift to look at on the next tick
_DAILY = frozenset({Strategy.FEWEST_CALLS, Strategy.LEAST_TALK_TIME})


class ManagerState(enum.StrEnum):
    """What a manager is doing, as supervisors and CRMs see it."""

    AVAILABLE = "available"  # may be offered a client (capacity permitting)
    RINGING = "ringing"  # his phone rings: a client of ours, or a personal call
    ON_CALL = "on_call"  # talking: to a client of ours, or on a personal call
    WRAP_UP = "wrap_up"  # the seconds after a call his scenario gives him
    PAUSED = "paused"  # by himself or a supervisor (with a reason), or for missed offers (`missed`)
    OFFLINE = "offline"  # phone unregistered (the PBX says unavailable) or off shift


MISSED = "missed"  # the pause reason after too many offers in a row not answered


@dataclass(frozen=True, slots=True)
class StateChange:
    manager_id: str
    state: ManagerState
    previous: ManagerState
    reason: str | None  # why he is paused or offline; None otherwise
    paused: str | None  # his pause's reason while paused, also when a call shows over the pause


@dataclass(slots=True)
class _Slot:
    manager: Manager
    device: DeviceState = DeviceState.UNKNOWN
    call_id: int | None = None  # the call of ours this manager is reserved for
    talking: bool = False  # he answered the call of ours he is reserved for
    paused: str | None = None  # the reason, while paused
    wrap_until: datetime | None = None  # in wrap-up after a call until then
    missed: int = 0  # offers in a row he did not answer
    state: ManagerState = ManagerState.AVAILABLE  # as last reported
    reason: str | None = None
    reported_pause: str | None = None
    on_shift: bool = True
    shift_due: datetime | None = None  # when his shift is next looked at
    open_leads: int = 0  # owned leads without a decided outcome
    calls_today: int = 0  # calls he talked in since midnight
    talk_today: float = 0.0
    idle_seq: int = 0  # grows each time he becomes free: lower has been free longer

    @property
    def free(self) -> bool:
        limit = self.manager.max_open_leads
        return (
            self.call_id is None
            and self.device in _IDLE_STATES
            and self.on_shift
            and self.paused is None
            and self.wrap_until is None
            and (limit is None or self.open_leads < limit)
        )

    def current(self) -> tuple[ManagerState, str | None]:
        """His state now. A call (ours or personal) shows over a pause or a wrap-up: he is on it."""
        if self.device is DeviceState.UNAVAILABLE:
            return ManagerState.OFFLINE, "unregistered"
        if not self.on_shift:
            return ManagerState.OFFLINE, "off_shift"
        if self.call_id is not None:
            return (ManagerState.ON_CALL if self.talking else ManagerState.RINGING), None
        if self.device is DeviceState.IN_USE:
            return ManagerState.ON_CALL, None
        if self.device is DeviceState.RINGING:
            return ManagerState.RINGING, None
        if self.paused is not None:
            return ManagerState.PAUSED, self.paused
        if self.wrap_until is not None:
            return ManagerState.WRAP_UP, None
        return ManagerState.AVAILABLE, None


@dataclass(frozen=True)
class History:
    """What the board rebuilds from storage at start, so a restart keeps turns, counts and records."""

    # Per scenario, from the stored manager legs (a leg is an offer): each manager's last offer,
    # and for closing_rate the managers offered its recent clients, oldest first.
    turns: Mapping[str, Mapping[str, datetime]] = field(default_factory=dict)
    offers: Mapping[str, Sequence[str]] = field(default_factory=dict)
    today: Mapping[str, tuple[int, float]] = field(default_factory=dict)  # per manager: calls, talk seconds
    open_leads: Mapping[str, int] = field(default_factory=dict)
    outcomes: Sequence[OutcomeReport] = ()  # the decided ones in force, oldest first
    paused: Mapping[str, str] = field(default_factory=dict)  # per manager paused when the last run ended: why


class ManagerBoard:
    def __init__(self, plan: RoutingPlan, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._plan = plan
        self._slots: dict[str, _Slot] = {}
        self._by_extension: dict[str, str] = {}
        self._free: dict[str, None] = {}  # insertion order: longest free first
        self._idle_seq = itertools.count(1)
        self._shifts: list[tuple[datetime, str]] = []  # heap of (shift_due, manager id)
        self._wrap_ups: list[tuple[datetime, str]] = []  # heap of (wrap_until, manager id)
        self._changes: list[StateChange] = []
        self._day_end: datetime | None = None  # set by the first tick or restore
        # By scenario name, so they outlive reloads: what each scenario remembers, and each
        # manager's decided leads in it (lead id -> won), oldest first.
        self._memories: dict[str, ScenarioMemory] = {}
        self._records: dict[str, dict[str, OrderedDict[int, bool]]] = {}
        self._selectors: dict[tuple[str, int], tuple[Scenario, Selector]] = {}  # by (scenario, level)
        self._memberships: dict[str, list[Selector]] = {}  # manager id -> selectors of the pools he is in
        # While a rebuild (``rebuild``) is under way: the slots of managers the new plan adds, and
        # who changed in the meantime (their place in the free list and the indexes is redone).
        self._incoming: dict[str, _Slot] = {}
        self._touched: set[str] | None = None
        self.replace(plan)

    # -- the plan and what the board remembers ---------------------------------------------

    def replace(self, plan: RoutingPlan) -> None:
        """Take a new plan (config reload), keeping what we know of the managers who stay."""
        for _ in self.rebuild(plan):
            pass

    def rebuild(self, plan: RoutingPlan, batch: int = 500) -> Iterator[None]:
        """``replace`` in steps of about ``batch`` managers' work, yielding between them, so that a
        caller with an event loop lets it run meanwhile: with 10,000 managers the whole takes tens
        of milliseconds. Until the last step the board works on under the old plan (what happens
        meanwhile is tracked and redone in the new indexes); the new plan takes over at once at the end.
        """
        assert self._touched is None, "one rebuild at a time"
        self._touched = set()
        try:
            yield from self._rebuild(plan, batch)
        finally:
            self._incoming = {}
            self._touched = None

    def _rebuild(self, plan: RoutingPlan, batch: int) -> Iterator[None]:
        slots: dict[str, _Slot] = {}
        shifts_due: list[str] = []  # newcomers' shifts: a tick under the old plan would not find them
        for count, manager in enumerate(plan.managers, start=1):
            slot = self._slots.get(manager.id)
            if slot is None:
                slot = self._incoming[manager.id] = _Slot(manager)
            else:
                slot.manager = manager  # whether he is free under it is worked out below
            if manager.shift is None:
                slot.on_shift, slot.shift_due = True, None
            else:
                # Until the next tick looks at the (maybe new) shift, he stays as he was.
                slot.shift_due = _AT_ONCE
                if manager.id in self._incoming:
                    shifts_due.append(manager.id)
                else:
                    heapq.heappush(self._shifts, (_AT_ONCE, manager.id))
            slots[manager.id] = slot
            if count % batch == 0:
                yield
        by_extension = {slot.manager.extension: manager_id for manager_id, slot in slots.items()}
        yield
        # The free keep their turn, whatever the file's order; newcomers queue behind them.
        free = dict.fromkeys(manager_id for manager_id in self._free if manager_id in slots and slots[manager_id].free)
        yield
        for count, (manager_id, slot) in enumerate(slots.items(), start=1):
            if slot.free and manager_id not in free and manager_id not in self._free:
                slot.idle_seq = next(self._idle_seq)
                free[manager_id] = None
            if count % batch == 0:
                yield
        selectors: dict[tuple[str, int], tuple[Scenario, Selector]] = {}
        memberships: dict[str, list[Selector]] = {manager_id: [] for manager_id in slots}
        yield from self._build_selectors(plan, free, selectors, memberships, batch)
        # The new plan takes over: what changed meanwhile is put right in its free list and indexes.
        was_free = self._free
        self._plan, self._slots, self._by_extension = plan, slots, by_extension
        self._free, self._selectors, self._memberships = free, selectors, memberships
        for manager_id in shifts_due:
            heapq.heappush(self._shifts, (_AT_ONCE, manager_id))
        for manager_id in self._touched or ():
            slot = slots.get(manager_id)
            if slot is None:
                continue
            if manager_id in free:
                for chosen in memberships[manager_id]:
                    if slot.free:
                        chosen.reorder(manager_id)
                    else:
                        chosen.leave(manager_id)
                if not slot.free:
                    del free[manager_id]
            elif slot.free:
                if manager_id not in was_free:  # free by the new plan's doing (capacity, shift)
                    slot.idle_seq = next(self._idle_seq)
                free[manager_id] = None
                for chosen in memberships[manager_id]:
                    chosen.enter(manager_id)

    def _touch(self, *manager_ids: str) -> None:
        if self._touched is not None:
            self._touched.update(manager_ids)

    def _build_selectors(
        self,
        plan: RoutingPlan,
        free: Mapping[str, None],
        selectors: dict[tuple[str, int], tuple[Scenario, Selector]],
        memberships: dict[str, list[Selector]],
        batch: int,
    ) -> Iterator[None]:
        # One index per scenario and overflow level: an overflow pool is picked from by the
        # scenario's strategy too, with its own turns (memory) and the scenario's records.
        for scenario in plan.scenarios:
            for level in range(len(scenario.pools)):
                pool = plan.pool(scenario, level)
                yield
                key = scenario.name if level == 0 else f"{scenario.name}#overflow{level}"
                memory = self._memories.setdefault(key, ScenarioMemory())
                closing = scenario.strategy is Strategy.CLOSING_RATE
                memory.window = scenario.closing_rate.window(len(pool)) if closing else 0
                self._touch(*memory.trim())
                chosen = selector(
                    scenario.strategy,
                    memory=memory,
                    pool=pool,
                    options=scenario.closing_rate,
                    records=self._records.setdefault(scenario.name, {}),
                    facts=self,
                    rng=self._rng,
                )
                members = {manager.id for manager in pool}
                yield
                yield from chosen.filling((manager_id for manager_id in free if manager_id in members), batch)
                selectors[scenario.name, level] = (scenario, chosen)
                for count, manager_id in enumerate(members, start=1):
                    memberships[manager_id].append(chosen)
                    if count % batch == 0:
                        yield

    def restore(self, history: History, now: datetime) -> None:
        """At start: what storage says about today, capacity, outcomes and recent offers."""
        self._day_end = self._next_midnight(now)
        for manager_id, slot in self._slots.items():
            slot.calls_today, slot.talk_today = history.today.get(manager_id, (0, 0.0))
            slot.open_leads = history.open_leads.get(manager_id, 0)
            slot.paused = history.paused.get(manager_id)
        for report in history.outcomes:
            self._record(report)
        for name in {*history.turns, *history.offers}:
            memory = self._memories.setdefault(name, ScenarioMemory())
            memory.restore(history.turns.get(name, {}), history.offers.get(name, ()))
        # Capacity may have changed who is free, and every index its order.
        for manager_id in self._slots:
            self._refresh(manager_id)
        self._selectors, self._memberships = {}, {manager_id: [] for manager_id in self._slots}
        for _ in self._build_selectors(self._plan, self._free, self._selectors, self._memberships, batch=1 << 20):
            pass

    # -- time -------------------------------------------------------------------------------

    def _next_midnight(self, now: datetime) -> datetime:
        local = now.astimezone(self._plan.timezone)
        return datetime.combine(local.date() + timedelta(days=1), time(), tzinfo=self._plan.timezone)

    def tick(self, now: datetime) -> float:
        """Apply the shift starts and ends and the new day due by ``now``; seconds until the next one."""
        if self._day_end is None:
            self._day_end = self._next_midnight(now)
        elif now >= self._day_end:
            self._day_end = self._next_midnight(now)
            self._new_day()
        local = now.astimezone(self._plan.timezone)
        # Whole teams share a shift and change at the same minute: work each shift out once.
        looked_at: dict[Schedule, tuple[bool, datetime]] = {}
        while self._shifts and self._shifts[0][0] <= now:
            due, manager_id = heapq.heappop(self._shifts)
            slot = self._slots.get(manager_id)
            shift = slot.manager.shift if slot is not None else None
            if slot is None or shift is None or slot.shift_due != due:
                continue  # gone, or looked at since: a newer entry stands
            if shift not in looked_at:
                looked_at[shift] = (shift.contains(local), shift.next_change(local))
            slot.on_shift, slot.shift_due = looked_at[shift]
            heapq.heappush(self._shifts, (slot.shift_due, manager_id))
            self._refresh(manager_id)
        while self._wrap_ups and self._wrap_ups[0][0] <= now:
            due, manager_id = heapq.heappop(self._wrap_ups)
            slot = self._slots.get(manager_id)
            if slot is not None and slot.wrap_until == due:  # else gone, or a later call's wrap-up stands
                slot.wrap_until = None
                self._refresh(manager_id)
        upcoming = self._day_end
        for heap in (self._shifts, self._wrap_ups):
            if heap:
                upcoming = min(upcoming, heap[0][0])
        return max((upcoming - now).total_seconds(), 0.0)

    def _new_day(self) -> None:
        self._touch(*self._slots)
        for slot in self._slots.values():
            slot.calls_today, slot.talk_today = 0, 0.0
        for (_, level), (scenario, chosen) in self._selectors.items():
            if scenario.strategy in _DAILY:
                members = {manager.id for manager in self._plan.pool(scenario, level)}
                chosen.fill(manager_id for manager_id in self._free if manager_id in members)

    # -- who is free --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def free_count(self) -> int:
        return len(self._free)

    def manager(self, manager_id: str) -> Manager | None:
        slot = self._slots.get(manager_id)
        return slot.manager if slot else None

    def is_free(self, manager_id: str) -> bool:
        return manager_id in self._free

    def _refresh(self, manager_id: str) -> bool:
        """Keep the free list, the indexes and his reported state in step with one slot; True if he
        just became free."""
        self._touch(manager_id)
        slot = self._slots[manager_id]
        state, reason = slot.current()
        if (state, reason, slot.paused) != (slot.state, slot.reason, slot.reported_pause):
            self._changes.append(StateChange(manager_id, state, slot.state, reason, slot.paused))
            slot.state, slot.reason, slot.reported_pause = state, reason, slot.paused
        if slot.free:
            if manager_id not in self._free:
                slot.idle_seq = next(self._idle_seq)
                self._free[manager_id] = None
                for chosen in self._memberships[manager_id]:
                    chosen.enter(manager_id)
                return True
        elif manager_id in self._free:
            del self._free[manager_id]
            for chosen in self._memberships[manager_id]:
                chosen.leave(manager_id)
        return False

    def _reorder(self, manager_id: str) -> None:
        self._touch(manager_id)
        for chosen in self._memberships.get(manager_id, ()):
            chosen.reorder(manager_id)

    def device_changed(self, extension: str, state: DeviceState) -> str | None:
        """Record a phone's state; returns the manager id if they just became free."""
        manager_id = self._by_extension.get(extension)
        if manager_id is None:
            return None
        self._slots[manager_id].device = state
        return manager_id if self._refresh(manager_id) else None

    def devices_listed(self, states: Mapping[str, DeviceState], *, keep: Set[str] = frozenset()) -> list[str]:
        """Take the PBX's listing of phones by extension after an AMI gap, when changes were missed.

        A phone the listing leaves out is idle as far as the PBX knows (Asterisk lists only the
        devices whose state it caches). Extensions in ``keep`` changed since the listing was
        asked for and stay as they are. Returns the managers who became free.
        """
        freed = []
        for manager_id, slot in self._slots.items():
            if slot.manager.extension in keep:
                continue
            slot.device = states.get(slot.manager.extension, DeviceState.UNKNOWN)
            if self._refresh(manager_id):
                freed.append(manager_id)
        return freed

    # -- picking ------------------------------------------------------------------------------

    def _current(self, scenario: Scenario, level: int) -> Selector | None:
        entry = self._selectors.get((scenario.name, level))
        if entry is None or (entry[0] is not scenario and entry[0] != scenario):
            return None
        return entry[1]

    def pick(self, scenario: Scenario, exclude: Set[str], now: datetime, level: int = 0) -> Manager | None:
        """The free manager the scenario's strategy gives the next client from its pool at ``level``
        (0: the scenario's own, 1...: its overflow pools), skipping ``exclude``."""
        self.tick(now)
        chosen = self._current(scenario, level)
        if chosen is not None:
            manager_id = chosen.pick(exclude)
        else:
            # A call that began under an earlier plan keeps its scenario's pools; the few such
            # calls alive across a reload get the member free longest.
            pool = scenario.pools[level]
            manager_id = next(
                (
                    manager_id
                    for manager_id in self._free
                    if manager_id not in exclude and pool.admits(self._slots[manager_id].manager)
                ),
                None,
            )
        return None if manager_id is None else self._slots[manager_id].manager

    def available(self, manager_id: str) -> bool:
        """Whether he could take a client soon: on shift with a registered phone, under capacity,
        though maybe on a call now (owner first waits for such a manager, not for one who is away)."""
        slot = self._slots.get(manager_id)
        if slot is None or not slot.on_shift or slot.device is DeviceState.UNAVAILABLE or slot.paused is not None:
            return False
        limit = slot.manager.max_open_leads
        return limit is None or slot.open_leads < limit

    def give(self, scenario: Scenario, manager_id: str, call_id: int, now: datetime, level: int = 0) -> None:
        """Reserve the picked manager for the call; his turn and the offer count in the scenario."""
        self.reserve(manager_id, call_id)
        chosen = self._current(scenario, level)
        if chosen is not None:  # a call from before a reload counts in no scenario's turns
            self._touch(*chosen.given(manager_id, now))

    def reserve(self, manager_id: str, call_id: int) -> None:
        """Keep the manager for the call. One no longer in the plan (dropped from routing.yaml while on
        a call a restarted daemon adopts) has no place on the board: his call goes on without one."""
        slot = self._slots.get(manager_id)
        if slot is None:
            return
        slot.call_id = call_id
        self._refresh(manager_id)

    def release(self, manager_id: str, call_id: int) -> bool:
        """Free a manager from one of our calls; True if they are free to take another."""
        slot = self._slots.get(manager_id)
        if slot is None or slot.call_id != call_id:
            return False
        slot.call_id = None
        slot.talking = False
        return self._refresh(manager_id)

    # -- the manager's own state: talking, pauses, wrap-up, missed offers ---------------------

    def answered(self, manager_id: str, call_id: int) -> None:
        """He picked up the call of ours he was reserved for: on a call, and his missed offers start over."""
        slot = self._slots.get(manager_id)
        if slot is None or slot.call_id != call_id:
            return
        slot.talking = True
        slot.missed = 0
        self._refresh(manager_id)

    def missed_offer(self, manager_id: str, limit: int | None) -> bool:
        """He let an offer ring out; at ``limit`` in a row he is paused (reason ``missed``). True if he was."""
        slot = self._slots.get(manager_id)
        if slot is None:
            return False
        slot.missed += 1
        if limit is None or slot.missed < limit or slot.paused is not None:
            return False
        slot.paused = MISSED
        self._refresh(manager_id)
        return True

    def pause(self, manager_id: str, reason: str) -> ManagerState:
        """Take him out of rotation until resumed; a call he is on goes on. Raises KeyError for no such manager."""
        slot = self._slots[manager_id]
        slot.paused = reason
        self._refresh(manager_id)
        return slot.state

    def resume(self, manager_id: str) -> bool:
        """Back in rotation (his missed offers start over); True if he just became free. KeyError: no such manager."""
        slot = self._slots[manager_id]
        slot.paused = None
        slot.missed = 0
        return self._refresh(manager_id)

    def state(self, manager_id: str) -> tuple[ManagerState, str | None] | None:
        slot = self._slots.get(manager_id)
        return None if slot is None else (slot.state, slot.reason)

    @property
    def has_changes(self) -> bool:
        return bool(self._changes)

    def take_changes(self) -> list[StateChange]:
        """The state changes since the last call, oldest first, for the caller to store and publish."""
        changes, self._changes = self._changes, []
        return changes

    # -- what happened: calls, owners, outcomes ---------------------------------------------------

    def call_ended(self, call: Call, now: datetime, wrap_up: float = 0.0) -> None:
        """Count a talked call for today's fewest_calls and least_talk_time, and start the
        manager's ``wrap_up`` seconds (he is released from the call separately)."""
        self.tick(now)
        slot = self._slots.get(call.manager_id or "")
        if slot is None or call.bridged_at is None:
            return
        slot.calls_today += 1
        slot.talk_today += call.talk_seconds or 0.0
        self._reorder(slot.manager.id)
        if wrap_up > 0:
            slot.wrap_until = now + timedelta(seconds=wrap_up)
            heapq.heappush(self._wrap_ups, (slot.wrap_until, slot.manager.id))
            self._refresh(slot.manager.id)

    def lead_assigned(self, lead: Lead, previous_owner_id: str | None) -> None:
        """The lead has a new owner: an undecided lead moves to his count of open leads."""
        if lead.owner_id == previous_owner_id or (lead.outcome is not None and lead.outcome.decided):
            return
        self._count_open(previous_owner_id, -1)
        self._count_open(lead.owner_id, +1)

    def outcome(self, report: OutcomeReport) -> None:
        """The CRM reported an outcome: the owner's open leads and his record in the scenario."""
        was_open = report.previous is None or not report.previous.decided
        if was_open != (not report.outcome.decided):
            self._count_open(report.manager_id, -1 if was_open else +1)
        self._record(report)
        if report.scenario is not None and report.manager_id is not None:
            self._touch(report.manager_id)
            for (name, _), (_, chosen) in self._selectors.items():
                if name == report.scenario:
                    chosen.reorder(report.manager_id)

    def _count_open(self, manager_id: str | None, change: int) -> None:
        slot = self._slots.get(manager_id or "")
        if slot is not None:
            slot.open_leads = max(slot.open_leads + change, 0)
            self._refresh(slot.manager.id)

    def _record(self, report: OutcomeReport) -> None:
        if report.scenario is None or report.manager_id is None:
            return
        record = self._records.setdefault(report.scenario, {}).setdefault(report.manager_id, OrderedDict())
        record.pop(report.lead_id, None)  # a corrected outcome replaces the earlier one, and counts as the newest
        if report.outcome.decided:
            record[report.lead_id] = report.won
            while len(record) > MAX_HISTORY:
                record.popitem(last=False)

    # -- what strategies read (router.strategies.Facts) ---------------------------------------

    def _fact_slot(self, manager_id: str) -> _Slot:
        # Indexes a rebuild fills read the managers it adds too.
        slot = self._slots.get(manager_id)
        return self._incoming[manager_id] if slot is None else slot

    def idle_seq(self, manager_id: str) -> int:
        return self._fact_slot(manager_id).idle_seq

    def calls_today(self, manager_id: str) -> int:
        return self._fact_slot(manager_id).calls_today

    def talk_today(self, manager_id: str) -> float:
        return self._fact_slot(manager_id).talk_today

    def snapshot(self) -> list[dict[str, object]]:
        return [
            {
                "id": manager_id,
                "extension": slot.manager.extension,
                "device": slot.device.value,
                "call_id": slot.call_id,
                "state": slot.state.value,
                "reason": slot.reason,
            }
            for manager_id, slot in self._slots.items()
        ]
