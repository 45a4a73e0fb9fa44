"""Who can take calls and by which rules: the domain side of ``routing.yaml``."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING

from router.call_window import BacklogOrder, CallWindow, client_zones
from router.matching import LeadFacts, Match
from router.pacing import Pacing
from router.phone import NumberType, PhonePolicy
from router.retries import RetryPolicy, RetryRule
from router.schedule import Schedule
from router.sla import SlaPolicy

if TYPE_CHECKING:
    from router.model import Lead

DEFAULT_WEIGHT = 50  # the middle of 1..100: a manager without a grade is average
DEFAULT_DUPLICATE_WINDOW = 24 * 3600.0  # seconds: a second lead from an open lead's phone is merged into it


@dataclass(frozen=True, slots=True)
class Manager:
    id: str
    name: str
    extension: str  # digits; the PBX dials it, the config checked it
    groups: frozenset[str] = frozenset()
    skills: frozenset[str] = frozenset()
    weight: int = DEFAULT_WEIGHT  # grade 1..100: the `weighted` strategy's share
    max_open_leads: int | None = None  # owning this many undecided leads takes him out of rotation
    shift: Schedule | None = None  # None: always on shift
    pbx: str | None = None  # the PBX his phone is on, by its name in leadrouter.yaml; None: the first

    def __reduce__(self) -> tuple[type[Manager], tuple[object, ...]]:
        # Unpickled by a call with his fields (the reload process hands plans back pickled): half
        # the time of the dataclass's generic __setstate__, ~15 ms less per 10,000 on the loop.
        return Manager, tuple(getattr(self, each.name) for each in fields(self))


def manager_json(manager: Manager) -> dict[str, object]:
    """A manager as the API lists him and ``manager.changed`` carries him."""
    return {
        "id": manager.id,
        "name": manager.name,
        "extension": manager.extension,
        "groups": sorted(manager.groups),
        "skills": sorted(manager.skills),
        "weight": manager.weight,
        "max_open_leads": manager.max_open_leads,
        "on_shift_always": manager.shift is None,
        "pbx": manager.pbx,
    }


@dataclass(frozen=True, slots=True)
class Pool:
    """Who may take a scenario's clients: the managers and groups named (everyone if none), with every skill."""

    managers: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    skills: frozenset[str] = frozenset()

    def admits(self, manager: Manager) -> bool:
        if self.managers or self.groups:
            if manager.id not in self.managers and self.groups.isdisjoint(manager.groups):
                return False
        return self.skills <= manager.skills

    def describe(self) -> str:
        parts = [f"{kind} {', '.join(sorted(names))}" for kind, names in self._named() if names]
        return "; ".join(parts) or "every manager"

    def _named(self) -> tuple[tuple[str, frozenset[str]], ...]:
        return (("managers", self.managers), ("groups", self.groups), ("skills", self.skills))


class Strategy(enum.StrEnum):
    """How a scenario picks among the free managers of its pool (router.strategies)."""

    LONGEST_IDLE = "longest_idle"  # free longest first; what version 1 files do
    ROUND_ROBIN = "round_robin"  # turns: whose last client in this scenario is oldest
    FEWEST_CALLS = "fewest_calls"  # fewest calls talked today
    LEAST_TALK_TIME = "least_talk_time"  # least talk time today
    RANDOM = "random"
    WEIGHTED = "weighted"  # random in proportion to each manager's weight
    CLOSING_RATE = "closing_rate"  # Thompson sampling over reported outcomes, with a fairness floor


@dataclass(frozen=True, slots=True)
class ClosingRate:
    """How ``closing_rate`` weighs each manager's record in a scenario."""

    # A manager with no record counts as having won and lost this many leads: a Beta(won, lost)
    # prior, so a newcomer is tried rather than starved.
    prior_won: float = 1.0
    prior_lost: float = 1.0
    history: int = 50  # the last decided leads of each manager that count
    fairness_floor: float = 0.5  # nobody in the pool gets fewer than this part of a fair share...
    fairness_window: int | None = None  # ...of the last this many offers; None: 20 per pool member

    def window(self, pool_size: int) -> int:
        return self.fairness_window or 20 * max(pool_size, 1)

    def describe(self, pool_size: int) -> str:
        return (
            f"prior {self.prior_won:g} won / {self.prior_lost:g} lost, last {self.history} decided leads each, "
            f"floor {self.fairness_floor:.0%} of a fair share over the last {self.window(pool_size)} offers"
        )


class DialOrder(enum.StrEnum):
    """Which phone rings first."""

    CLIENT_FIRST = "client_first"  # the client; once he answers he waits on hold for a free manager
    MANAGER_FIRST = "manager_first"  # a free manager; once he answers the client is dialled: nobody holds


@dataclass(frozen=True, slots=True)
class OwnerFirst:
    """A repeat lead (its phone has an owner) is offered to that owner before the pool."""

    # Seconds from the client's answer during which only the owner may take him: a busy owner is
    # waited for that long. An owner off shift or unregistered, or whose phone was not answered,
    # hands the client to the pool at once.
    wait: float
    owner_changes: bool = True  # False: the phone's owner stays the lead's owner when someone else talks


@dataclass(frozen=True, slots=True)
class Overflow:
    """A further pool that may also take a scenario's client once he has waited ``after`` seconds."""

    pool: Pool
    after: float  # seconds since the client's answer


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    hold_limit: float  # seconds an answered client may wait for a free manager
    ring_timeout: float  # seconds a manager's phone rings before the next one is tried
    max_attempts: int
    retry_delays: tuple[float, ...]  # seconds after attempt 1, 2, ...; the last one repeats
    match: Match = field(default_factory=Match)  # no rules: the catch-all
    pool: Pool = field(default_factory=Pool)  # everyone
    strategy: Strategy = Strategy.LONGEST_IDLE
    closing_rate: ClosingRate = field(default_factory=ClosingRate)  # read by the closing_rate strategy only
    owner_first: OwnerFirst | None = None
    overflow: tuple[Overflow, ...] = ()  # by rising ``after``; the hold limit still caps the wait
    dial_order: DialOrder = DialOrder.CLIENT_FIRST
    client_ring_timeout: float | None = None  # manager first: seconds the client's phone rings; None: the PBX's
    managers_to_try: int | None = None  # manager legs per attempt before giving up on it; None: no limit
    # Numbers this scenario's leads may have, in place of the daemon's `phones` settings; None: those.
    allowed_regions: frozenset[str] | None = None
    allowed_types: frozenset[NumberType] | None = None
    retries: tuple[tuple[str, RetryRule], ...] = ()  # by outcome; others follow max_attempts/retry_delays
    call_window: CallWindow | None = None  # None: any time
    duplicate_window: float = DEFAULT_DUPLICATE_WINDOW  # seconds; 0: every lead is dialled
    sla: SlaPolicy | None = field(default_factory=SlaPolicy)  # None: an owner keeps his leads
    # -- the manager's side of a call (manager states, caller name, whisper, AMD) --
    wrap_up: float = 0.0  # seconds a manager gets after each talked call before the next offer
    auto_pause_after: int | None = None  # offers in a row he does not answer before he is paused (`missed`)
    caller_name: str | None = None  # template of the name his phone shows, e.g. "{name} · {source}"
    whisper: str | None = None  # a sound file played to him alone before the bridge
    amd: bool = False  # run Asterisk's AMD() on the client's answer: a machine is hung up, never bridged
    # The PBX that dials its leads: routing.yaml's `pbx:`, else the one its pools' managers are on.
    # None: any (one PBX, or pools spanning several: whichever has a free manager of the pool first).
    pbx: str | None = None

    @property
    def pools(self) -> tuple[Pool, ...]:
        """The pool, then each overflow pool: level 0, 1, ... of who may take a waiting client."""
        return (self.pool, *(step.pool for step in self.overflow))

    def levels_open(self, waited: float) -> int:
        """How many of ``pools`` may take a client who has waited ``waited`` seconds since his answer."""
        return 1 + sum(1 for step in self.overflow if waited >= step.after)

    def next_change(self, waited: float) -> float | None:
        """Seconds after the answer when the next owner or overflow step changes who may take him."""
        moments = [step.after for step in self.overflow]
        if self.owner_first is not None:
            moments.append(self.owner_first.wait)
        later = [moment for moment in moments if moment > waited]
        return min(later) if later else None

    def next_allowed(self, phone: str, moment: datetime) -> datetime | None:
        """The first moment from ``moment`` on when ``phone`` may be called; None: the window never opens."""
        if self.call_window is None:
            return moment
        return self.call_window.next_allowed(moment, client_zones(phone))

    def backlog_rank(self, created_at: datetime) -> float:
        """Among leads due at the same opening, the lower rank is dialled first."""
        if self.call_window is None or self.call_window.backlog is BacklogOrder.OLDEST_FIRST:
            return created_at.timestamp()
        return -created_at.timestamp()

    def describe_lifecycle(self) -> list[str]:
        """What ``check-config`` shows ops of the lead's life over time in this scenario."""
        lines = []
        if self.call_window is not None:
            lines.append(f"calls:    {self.call_window.describe()}")
        for outcome, rule in self.retries:
            delays = ", ".join(_duration(delay) for delay in rule.delays)
            lines.append(
                f"retries:  {outcome}: up to {rule.max_attempts} attempts, after {delays}; then {rule.final_state}"
            )
        duplicates = (
            f"merged within {_duration(self.duplicate_window)}"
            if self.duplicate_window
            else "off: every lead is dialled"
        )
        lines.append(f"duplicates: {duplicates}")
        if self.sla is None:
            lines.append("SLA release: off")
        else:
            call = "; the new owner is called with the client" if self.sla.call_new_owner else ""
            lines.append(
                f"SLA release: an owned lead with no outcome {_duration(self.sla.release_after)} after assignment{call}"
            )
        return lines

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(RetryRule(self.max_attempts, self.retry_delays), dict(self.retries))


def _duration(seconds: float) -> str:
    """As ops write it in routing.yaml: ``90s``, ``15m``, ``24h``."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True, slots=True)
class RoutingPlan:
    managers: tuple[Manager, ...]
    scenarios: tuple[Scenario, ...]  # first match wins; the config guarantees a catch-all last
    timezone: tzinfo = UTC  # the company's: days and hours in the plan are read in it
    pacing: Pacing = field(default_factory=Pacing)  # clients dialled per free manager (one dial queue)
    pbxes: tuple[str, ...] = ()  # the PBXes managers may name, first the default; () : one, unnamed

    @property
    def reads_regions(self) -> bool:
        """Whether a rule compares the phone's region (router.matching.region_geocoder)."""
        return any(scenario.match.regions is not None for scenario in self.scenarios)

    def scenario_for(self, lead: Lead, now: datetime) -> Scenario:
        facts = LeadFacts(lead.source, lead.payload, lead.phone)
        local = now.astimezone(self.timezone)
        for scenario in self.scenarios:
            if scenario.match.matches(facts, local):
                return scenario
        return self.scenarios[-1]

    def phone_policy(self, lead: Lead, default: PhonePolicy) -> tuple[PhonePolicy, str | None]:
        """The numbers ``lead`` may have, and the scenario whose own lists say so (None: ``default``'s).

        Judged by the first scenario the lead matches at some hour: its time windows are left
        out, so a lead that comes in after hours is judged by the scenario that calls it during them.
        """
        facts = LeadFacts(lead.source, lead.payload, lead.phone)
        scenario = next((s for s in self.scenarios if s.match.matches(facts, None)), self.scenarios[-1])
        if scenario.allowed_regions is None and scenario.allowed_types is None:
            return default, None
        return default.with_lists(scenario.allowed_regions, scenario.allowed_types), scenario.name

    def scenario(self, name: str) -> Scenario:
        for scenario in self.scenarios:
            if scenario.name == name:
                return scenario
        # A reload may drop a scenario while its calls are live; they finish under the default.
        return self.scenarios[-1]

    def on_pbx(self, name: str) -> RoutingPlan:
        """The plan as the dialer of PBX ``name`` sees it: only the managers whose phones are there."""
        default = self.pbxes[0] if self.pbxes else name
        return replace(self, managers=tuple(m for m in self.managers if (m.pbx or default) == name))

    def pool(self, scenario: Scenario, level: int = 0) -> list[Manager]:
        admits = scenario.pools[level].admits
        return [manager for manager in self.managers if admits(manager)]
