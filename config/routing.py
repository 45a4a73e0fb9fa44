"""``routing.yaml``: who takes calls and by which rules, checked before it replaces the running plan.

Two formats: ``version: 1`` (scenarios by lead source over lists of managers, longest idle first)
keeps working unchanged; ``version: 2`` adds match rules, groups and skills, capacity, shifts and
strategies. Both become the same RoutingPlan.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
import pickle
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from config.document import Document, Loc
from config.fields import (
    AmiText,
    Count,
    Country,
    Digits,
    Duration,
    DurationOrOff,
    Identifier,
    Line,
    OneOrMore,
    Pattern,
    Share,
    TimeWindow,
    TimeZoneName,
)
from config.problems import ConfigError, Problem
from router.call_window import DEFAULT_CLIENT_HOURS, BacklogOrder, CallWindow, ClientZone
from router.caller_name import check_template
from router.matching import Match, Patterns
from router.pacing import Pacing, PacingMode
from router.phone import NumberType
from router.retries import DEFAULT_FINAL_STATE, RetryRule
from router.routing import (
    DEFAULT_DUPLICATE_WINDOW,
    DEFAULT_WEIGHT,
    ClosingRate,
    DialOrder,
    Manager,
    Overflow,
    OwnerFirst,
    Pool,
    RoutingPlan,
    Scenario,
    Strategy,
)
from router.schedule import Schedule
from router.sla import DEFAULT_RELEASE_AFTER, SlaPolicy
from router.strategies import MAX_HISTORY

_CLOSING_RATE = ClosingRate()  # its defaults
_PACING = Pacing()


# The schemas are built at their first use, not at import: `leadrouter run` reads routing.yaml in
# a forked copy of itself (RoutingSource.load_beside) and reloads it in a process of its own, so
# the daemon never validates a routing file itself.
class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, defer_build=True)


EntryT = TypeVar("EntryT", bound=_Entry)
T = TypeVar("T")


class _ManagerEntry(_Entry):
    id: Identifier
    name: Line
    extension: Digits
    pbx: Identifier | None = None  # his phone's PBX, named under leadrouter.yaml's `pbxes:`; absent: the first


class _CallPolicy(_Entry):
    name: Identifier
    hold_limit: Duration = 45
    ring_timeout: Duration = 20
    max_attempts: Count = 3
    retry_delays: Annotated[list[Duration], Field(min_length=1)] = [300, 900, 3600]
    pbx: Identifier | None = None  # the PBX that dials its leads; absent: the one its pools' managers are on


# -- version 1 ---------------------------------------------------------------------------------


class _ScenarioV1(_CallPolicy):
    # Absent means "every source" / "every manager"; an empty list is refused as ambiguous.
    sources: Annotated[list[Line], Field(min_length=1)] | None = None
    managers: Annotated[list[Identifier], Field(min_length=1)] | None = None


class _RoutingV1(_Entry):
    # Files that are not version 2 are read as version 1; a wrong number is reported here, so
    # the message names both formats.
    version: Literal[1, 2]
    managers: Annotated[list[_ManagerEntry], Field(min_length=1)]
    scenarios: Annotated[list[_ScenarioV1], Field(min_length=1)]


# -- version 2 ---------------------------------------------------------------------------------


class _ManagerV2(_ManagerEntry):
    groups: OneOrMore[Identifier] | None = None
    skills: OneOrMore[Identifier] | None = None
    weight: Annotated[int, Field(strict=True, ge=1, le=100)] = DEFAULT_WEIGHT
    max_open_leads: Count | None = None
    shift: OneOrMore[TimeWindow] | None = None


class _MatchEntry(_Entry):
    sources: OneOrMore[Pattern] | None = None
    tags: OneOrMore[Pattern] | None = None
    payload: Annotated[dict[str, OneOrMore[Pattern]], Field(min_length=1)] | None = None
    countries: OneOrMore[Country] | None = None
    regions: OneOrMore[Pattern] | None = None
    when: OneOrMore[TimeWindow] | None = None


class _PoolEntry(_Entry):
    managers: OneOrMore[Identifier] | None = None
    groups: OneOrMore[Identifier] | None = None
    skills: OneOrMore[Identifier] | None = None


class _ClosingRateEntry(_Entry):
    prior_won: Annotated[float, Field(gt=0, allow_inf_nan=False)] = _CLOSING_RATE.prior_won
    prior_lost: Annotated[float, Field(gt=0, allow_inf_nan=False)] = _CLOSING_RATE.prior_lost
    history: Annotated[int, Field(strict=True, ge=1, le=MAX_HISTORY)] = _CLOSING_RATE.history
    fairness_floor: Share = _CLOSING_RATE.fairness_floor
    fairness_window: Count | None = _CLOSING_RATE.fairness_window


class _OwnerFirstEntry(_Entry):
    owner_wait: Duration = 15
    owner_changes: Annotated[bool, Field(strict=True)] = True


class _OverflowEntry(_Entry):
    after: Duration
    pool: _PoolEntry


class _PhonesEntry(_Entry):
    # In place of the daemon's phones.allowed_regions / allowed_types for this scenario's leads.
    allowed_regions: OneOrMore[Country] | None = None
    allowed_types: OneOrMore[NumberType] | None = None


class _RetryEntry(_Entry):
    max_attempts: Count
    delays: OneOrMore[Duration]
    final_state: Identifier = DEFAULT_FINAL_STATE


class _RetriesEntry(_Entry):
    """Rules per outcome; an outcome left out follows the scenario's max_attempts and retry_delays."""

    busy: _RetryEntry | None = None
    no_answer: _RetryEntry | None = None
    unreachable: _RetryEntry | None = None
    abandoned: _RetryEntry | None = None  # the client hung up while on hold
    no_manager: _RetryEntry | None = None  # nobody free within the hold limit
    ended_unobserved: _RetryEntry | None = None
    machine: _RetryEntry | None = None  # an answering machine (AMD)


class _CallWindowEntry(_Entry):
    timezone: TimeZoneName | None = None  # of hours and holidays; default: the file's
    hours: OneOrMore[TimeWindow] | None = None  # company hours; default: any time
    holidays: OneOrMore[Annotated[date, Field(strict=False)]] | None = None
    client_hours: OneOrMore[TimeWindow] = [str(DEFAULT_CLIENT_HOURS)]  # type: ignore[list-item]  # parsed
    backlog: BacklogOrder = BacklogOrder.NEWEST_FIRST
    client_zone: ClientZone = ClientZone.NUMBER


class _SlaEntry(_Entry):
    after: DurationOrOff = DEFAULT_RELEASE_AFTER  # off: an owner keeps his leads
    call_new_owner: Annotated[bool, Field(strict=True)] = False


def _template(value: str) -> str:
    problem = check_template(value)
    if problem is not None:
        raise ValueError(problem)
    return value


CallerNameTemplate = Annotated[Line, AfterValidator(_template)]


class _ManagerSideV2(_CallPolicy):
    """The manager's side of a call (issue 8): states, caller name, whisper, answering machines."""

    wrap_up: Duration | None = None
    auto_pause_after: Count | None = None
    caller_name: CallerNameTemplate | None = None
    whisper: AmiText | None = None
    amd: Annotated[bool, Field(strict=True)] = False


class _ScenarioV2(_ManagerSideV2):
    match: _MatchEntry | None = None
    pool: _PoolEntry | None = None
    strategy: Strategy = Strategy.LONGEST_IDLE
    closing_rate: _ClosingRateEntry | None = None
    owner_first: _OwnerFirstEntry | None = None
    overflow: Annotated[list[_OverflowEntry], Field(min_length=1)] | None = None
    dial_order: DialOrder = DialOrder.CLIENT_FIRST
    client_ring_timeout: Duration | None = None
    managers_to_try: Count | None = None
    phones: _PhonesEntry | None = None
    # The lead lifecycle over time (issue 8); `off` turns duplicates or SLA release off.
    retries: _RetriesEntry | None = None
    call_window: _CallWindowEntry | None = None
    duplicate_window: DurationOrOff = DEFAULT_DUPLICATE_WINDOW
    sla_release: _SlaEntry = _SlaEntry()


class _PacingEntry(_Entry):
    mode: PacingMode = PacingMode.PROGRESSIVE
    abandon_cap: Share = _PACING.abandon_cap
    window: Duration = _PACING.window
    max_ratio: Annotated[float, Field(strict=False, ge=1, le=10, allow_inf_nan=False)] = _PACING.max_ratio
    min_sample: Count = _PACING.min_sample


class _RoutingV2(_Entry):
    version: Literal[2]
    timezone: TimeZoneName
    pacing: _PacingEntry = _PacingEntry()
    managers: Annotated[list[_ManagerV2], Field(min_length=1)]
    scenarios: Annotated[list[_ScenarioV2], Field(min_length=1)]


# -- checks across entries -----------------------------------------------------------------------


def _duplicates(section: str, key: str, values: Sequence[str], what: str) -> Iterator[tuple[Loc, str]]:
    first: dict[str, int] = {}
    for index, value in enumerate(values):
        earlier = first.setdefault(value, index)
        if earlier != index:
            yield (section, index, key), f"duplicate {what} {value!r}: {section}[{earlier}] already has it"


def _section(adapter: TypeAdapter[list[EntryT]], data: object, key: str) -> list[EntryT] | None:
    """The section if all its entries are valid: its cross-checks mean something even if others fail."""
    try:
        return adapter.validate_python(data.get(key) if isinstance(data, dict) else None)
    except ValidationError:
        return None


def _unique_managers(managers: Sequence[_ManagerEntry], pbxes: Sequence[str]) -> Iterator[tuple[Loc, str]]:
    yield from _duplicates("managers", "id", [manager.id for manager in managers], "manager id")
    # An extension is a phone on one PBX: two offices may both have a 101.
    default = pbxes[0] if pbxes else None
    on = [
        f"{manager.extension} on PBX {manager.pbx or default}" if pbxes else manager.extension for manager in managers
    ]
    yield from _duplicates("managers", "extension", on, "extension")


def _unknown_managers(loc: Loc, ids: Sequence[str], managers: Sequence[_ManagerEntry]) -> Iterator[tuple[Loc, str]]:
    known = sorted(manager.id for manager in managers)
    for item, manager_id in enumerate(ids):
        if manager_id not in known:
            yield (*loc, item), f"no manager has the id {manager_id!r}; known ids: {', '.join(known)}"


_DEFERRED = ConfigDict(defer_build=True)  # as _Entry's
_MANAGERS_V1 = TypeAdapter(list[_ManagerEntry], config=_DEFERRED)
_SCENARIOS_V1 = TypeAdapter(list[_ScenarioV1], config=_DEFERRED)
_MANAGERS_V2 = TypeAdapter(list[_ManagerV2], config=_DEFERRED)
_SCENARIOS_V2 = TypeAdapter(list[_ScenarioV2], config=_DEFERRED)


def _pbx_names(data: object, pbxes: Sequence[str]) -> Iterator[tuple[Loc, str]]:
    """Every `pbx:` names a PBX of leadrouter.yaml (read before the schema: a typo is found with the rest)."""
    if not isinstance(data, dict):
        return
    if pbxes:
        known = f"leadrouter.yaml's `pbxes:` are {', '.join(pbxes)}"
    else:
        known = "leadrouter.yaml speaks to one PBX (`ami:`); name several under `pbxes:` to say which"
    for section in ("managers", "scenarios"):
        entries = data.get(section)
        for index, entry in enumerate(entries if isinstance(entries, list) else ()):
            name = entry.get("pbx") if isinstance(entry, dict) else None
            if isinstance(name, str) and name not in pbxes:
                yield (section, index, "pbx"), f"no PBX is named {name!r}: {known}"


def _cross_check_v1(data: object, pbxes: Sequence[str] = ()) -> Iterator[tuple[Loc, str]]:
    yield from _pbx_names(data, pbxes)
    managers = _section(_MANAGERS_V1, data, "managers")
    scenarios = _section(_SCENARIOS_V1, data, "scenarios")
    if managers is not None:
        yield from _unique_managers(managers, pbxes)
    if scenarios is None:
        return
    yield from _duplicates("scenarios", "name", [scenario.name for scenario in scenarios], "scenario name")
    if managers is not None:
        for index, scenario in enumerate(scenarios):
            yield from _unknown_managers(("scenarios", index, "managers"), scenario.managers or (), managers)
    yield from _source_order(scenarios)


def _source_order(scenarios: list[_ScenarioV1]) -> Iterator[tuple[Loc, str]]:
    """First match wins: exactly the last scenario is the catch-all and no source is listed twice."""
    last = len(scenarios) - 1
    taken_by: dict[str, str] = {}
    for index, scenario in enumerate(scenarios):
        if scenario.sources is None and index != last:
            yield (
                ("scenarios", index),
                "has no `sources`, so it takes every lead and the scenarios after it are never used; "
                "only the last scenario may leave `sources` out",
            )
        if scenario.sources is not None and index == last:
            yield (
                ("scenarios", index, "sources"),
                "the last scenario is the catch-all for every other source: remove `sources` here, "
                "or add a scenario without `sources` after it",
            )
        for item, source in enumerate(scenario.sources or ()):
            if source in taken_by:
                yield (
                    ("scenarios", index, "sources", item),
                    f"source {source!r} is already listed in scenario {taken_by[source]!r}, which wins",
                )
            taken_by.setdefault(source, scenario.name)


def _cross_check_v2(data: object, pbxes: Sequence[str] = ()) -> Iterator[tuple[Loc, str]]:
    yield from _pbx_names(data, pbxes)
    managers = _section(_MANAGERS_V2, data, "managers")
    scenarios = _section(_SCENARIOS_V2, data, "scenarios")
    if managers is not None:
        yield from _unique_managers(managers, pbxes)
    if scenarios is None:
        return
    yield from _duplicates("scenarios", "name", [scenario.name for scenario in scenarios], "scenario name")
    for index, scenario in enumerate(scenarios):
        here: Loc = ("scenarios", index)
        if scenario.closing_rate is not None and scenario.strategy is not Strategy.CLOSING_RATE:
            message = f"is read only by `strategy: closing_rate`; this scenario has {scenario.strategy}"
            yield (*here, "closing_rate"), message
        match = scenario.match
        if match is not None and match.tags is not None and match.payload is not None and "tags" in match.payload:
            yield (*here, "match", "tags"), "`tags` is short for `payload.tags`: write one of the two"
        if managers is not None and scenario.pool is not None:
            yield from _pool_problems((*here, "pool"), scenario.pool, managers)
        yield from _overflow_problems(here, scenario, managers)
        manager_first = scenario.dial_order is DialOrder.MANAGER_FIRST
        if manager_first and scenario.overflow is not None:
            message = "waits for nobody under `dial_order: manager_first`: no client is on hold to overflow"
            yield (*here, "overflow"), message
        if manager_first and scenario.amd:
            message = "runs on a client_first answer only: under manager_first the manager is already on the line"
            yield (*here, "amd"), message
        if not manager_first and scenario.client_ring_timeout is not None:
            message = "is read only by `dial_order: manager_first`; client_first rings for pbx.originate_timeout"
            yield (*here, "client_ring_timeout"), message
        yield from _refused_countries(here, scenario)
        if managers is not None and scenario.pbx is not None and scenario.pbx in pbxes:
            yield from _pbx_pool(here, scenario, managers, pbxes[0])
    yield from _match_order(scenarios)


def _pbx_pool(here: Loc, scenario: _ScenarioV2, managers: list[_ManagerV2], default: str) -> Iterator[tuple[Loc, str]]:
    """A call stays on the PBX that dialled it: its pool must have managers there."""
    pools = [Pool() if scenario.pool is None else _pool(scenario.pool)]
    pools += [_pool(step.pool) for step in scenario.overflow or ()]
    there = [manager for manager in managers if (manager.pbx or default) == scenario.pbx]
    if not any(pool.admits(_manager(manager)) for pool in pools for manager in there):
        message = f"no manager of this scenario's pools is on PBX {scenario.pbx!r}: its clients would wait for nobody"
        yield (*here, "pbx"), message


def _refused_countries(here: Loc, scenario: _ScenarioV2) -> Iterator[tuple[Loc, str]]:
    """A country the scenario matches on but does not allow: every lead it takes from there is refused."""
    allowed = scenario.phones.allowed_regions if scenario.phones is not None else None
    countries = scenario.match.countries if scenario.match is not None else None
    if allowed is None or countries is None:
        return
    for item, country in enumerate(countries):
        if country not in allowed:
            message = f"matches {country} leads, but phones.allowed_regions refuses every one; add {country} there"
            yield (*here, "match", "countries", item), message


def _pool_problems(loc: Loc, pool: _PoolEntry, managers: list[_ManagerV2]) -> Iterator[tuple[Loc, str]]:
    yield from _unknown_managers((*loc, "managers"), pool.managers or (), managers)
    for kind, names in (("groups", pool.groups), ("skills", pool.skills)):
        known = sorted({name for manager in managers for name in getattr(manager, kind) or ()})
        for item, name in enumerate(names or ()):
            if name not in known:
                listed = ", ".join(known) if known else "none: give managers `" + kind + "`"
                yield (*loc, kind, item), f"no manager has {kind[:-1]} {name!r}; known {kind}: {listed}"
    domain = _pool(pool)
    if not any(domain.admits(_manager(manager)) for manager in managers):
        yield loc, f"takes nobody: no manager is in {domain.describe()}"


def _overflow_problems(
    here: Loc, scenario: _ScenarioV2, managers: list[_ManagerV2] | None
) -> Iterator[tuple[Loc, str]]:
    """Each overflow step opens later than the one before, and before the hold limit ends the wait."""
    earlier = 0.0
    for index, step in enumerate(scenario.overflow or ()):
        loc: Loc = (*here, "overflow", index)
        if step.after >= scenario.hold_limit:
            yield (
                (*loc, "after"),
                (
                    f"{step.after:g}s is not within the hold limit ({scenario.hold_limit:g}s): "
                    "no client waits that long, so this pool is never reached"
                ),
            )
        elif step.after <= earlier:
            yield (*loc, "after"), f"must be later than the step before it ({earlier:g}s)"
        earlier = max(earlier, step.after)
        if managers is not None:
            yield from _pool_problems((*loc, "pool"), step.pool, managers)


def _match_order(scenarios: list[_ScenarioV2]) -> Iterator[tuple[Loc, str]]:
    """First match wins: exactly the last scenario is the catch-all, and no scenario is shadowed whole."""
    last = len(scenarios) - 1
    seen: dict[Match, str] = {}
    for index, scenario in enumerate(scenarios):
        match = Match() if scenario.match is None else _match(scenario.match)
        everything = match.takes_everything
        if everything and index != last:
            yield (
                ("scenarios", index),
                "has no `match` rules, so it takes every lead and the scenarios after it are never used; "
                "only the last scenario may leave `match` out",
            )
        if not everything and index == last:
            yield (
                ("scenarios", index, "match"),
                "the last scenario is the catch-all for every other lead: remove `match` here, "
                "or add a scenario without `match` after it",
            )
        if not everything:
            if match in seen:
                yield (
                    ("scenarios", index, "match"),
                    f"matches exactly what scenario {seen[match]!r} matches, which wins: it is never used",
                )
            seen.setdefault(match, scenario.name)


# -- from the file to the plan -------------------------------------------------------------------


def _match(entry: _MatchEntry) -> Match:
    payload = dict(entry.payload or {})
    if entry.tags is not None:
        payload["tags"] = entry.tags
    return Match(
        sources=None if entry.sources is None else Patterns.of(entry.sources),
        payload=tuple((name, Patterns.of(values)) for name, values in payload.items()),
        countries=None if entry.countries is None else frozenset(entry.countries),
        regions=None if entry.regions is None else Patterns.of(entry.regions),
        when=None if entry.when is None else Schedule(tuple(entry.when)),
    )


def _pool(entry: _PoolEntry) -> Pool:
    return Pool(*(frozenset(names or ()) for names in (entry.managers, entry.groups, entry.skills)))


def _manager(entry: _ManagerV2) -> Manager:
    return Manager(
        id=entry.id,
        name=entry.name,
        extension=entry.extension,
        groups=frozenset(entry.groups or ()),
        skills=frozenset(entry.skills or ()),
        weight=entry.weight,
        max_open_leads=entry.max_open_leads,
        shift=None if entry.shift is None else Schedule(tuple(entry.shift)),
        pbx=entry.pbx,
    )


def _plan_v1(routing: _RoutingV1) -> RoutingPlan:
    return RoutingPlan(
        managers=tuple(
            Manager(id=entry.id, name=entry.name, extension=entry.extension, pbx=entry.pbx)
            for entry in routing.managers
        ),
        scenarios=tuple(
            Scenario(
                name=entry.name,
                hold_limit=entry.hold_limit,
                ring_timeout=entry.ring_timeout,
                max_attempts=entry.max_attempts,
                retry_delays=tuple(entry.retry_delays),
                # Version 1 compared sources exactly: a `*` in one stays a `*`.
                match=Match() if entry.sources is None else Match(sources=Patterns.of(entry.sources, globs=False)),
                pool=Pool(managers=frozenset(entry.managers or ())),
                # Version 1 files keep working unchanged: every lead is dialled, owners keep theirs.
                duplicate_window=0.0,
                sla=None,
                pbx=entry.pbx,
            )
            for entry in routing.scenarios
        ),
    )


def _retries(entry: _RetriesEntry | None) -> tuple[tuple[str, RetryRule], ...]:
    if entry is None:
        return ()
    return tuple(
        (outcome, RetryRule(rule.max_attempts, tuple(rule.delays), rule.final_state))
        for outcome, rule in ((name, getattr(entry, name)) for name in _RetriesEntry.model_fields)
        if rule is not None
    )


def _call_window(entry: _CallWindowEntry | None, zone: str) -> CallWindow | None:
    if entry is None:
        return None
    return CallWindow(
        zone=ZoneInfo(entry.timezone or zone),
        hours=None if entry.hours is None else Schedule(tuple(entry.hours)),
        holidays=frozenset(entry.holidays or ()),
        client_hours=Schedule(tuple(entry.client_hours)),
        backlog=entry.backlog,
        client_zone=entry.client_zone,
    )


def _plan_v2(routing: _RoutingV2) -> RoutingPlan:
    return RoutingPlan(
        managers=tuple(_manager(entry) for entry in routing.managers),
        scenarios=tuple(
            Scenario(
                name=entry.name,
                hold_limit=entry.hold_limit,
                ring_timeout=entry.ring_timeout,
                max_attempts=entry.max_attempts,
                retry_delays=tuple(entry.retry_delays),
                match=Match() if entry.match is None else _match(entry.match),
                pool=Pool() if entry.pool is None else _pool(entry.pool),
                strategy=entry.strategy,
                closing_rate=_CLOSING_RATE
                if entry.closing_rate is None
                else ClosingRate(**entry.closing_rate.model_dump()),
                owner_first=None
                if entry.owner_first is None
                else OwnerFirst(wait=entry.owner_first.owner_wait, owner_changes=entry.owner_first.owner_changes),
                overflow=tuple(Overflow(pool=_pool(step.pool), after=step.after) for step in entry.overflow or ()),
                dial_order=entry.dial_order,
                client_ring_timeout=entry.client_ring_timeout,
                managers_to_try=entry.managers_to_try,
                allowed_regions=_listed(entry.phones.allowed_regions if entry.phones else None),
                allowed_types=_listed(entry.phones.allowed_types if entry.phones else None),
                retries=_retries(entry.retries),
                call_window=_call_window(entry.call_window, routing.timezone),
                duplicate_window=entry.duplicate_window,
                sla=SlaPolicy(entry.sla_release.after, entry.sla_release.call_new_owner)
                if entry.sla_release.after > 0
                else None,
                wrap_up=entry.wrap_up or 0.0,
                auto_pause_after=entry.auto_pause_after,
                caller_name=entry.caller_name,
                whisper=entry.whisper,
                amd=entry.amd,
                pbx=entry.pbx,
            )
            for entry in routing.scenarios
        ),
        timezone=ZoneInfo(routing.timezone),
        pacing=Pacing(**routing.pacing.model_dump()),
    )


def _listed(values: Sequence[T] | None) -> frozenset[T] | None:
    return None if values is None else frozenset(values)


def _version(data: Any) -> object:
    return data.get("version") if isinstance(data, dict) else None


def load_routing(path: Path, pbxes: Sequence[str] = ()) -> RoutingPlan:
    """Read and check a routing file; raise ConfigError listing every problem.

    ``pbxes``: the names of leadrouter.yaml's `pbxes:`, first the default (): one PBX, unnamed).
    """
    document = Document.read(path)
    if _version(document.data) == 2:
        plan = _plan_v2(document.validate(_RoutingV2, lambda data: _cross_check_v2(data, pbxes)))
    else:
        plan = _plan_v1(document.validate(_RoutingV1, lambda data: _cross_check_v1(data, pbxes)))
    return _with_pbxes(plan, tuple(pbxes))


def _with_pbxes(plan: RoutingPlan, pbxes: tuple[str, ...]) -> RoutingPlan:
    """Each scenario's PBX settled once: its own, else the one PBX its pools' managers are on
    (pools spanning several: None, any of them dials it with its own managers of the pool)."""
    if len(pbxes) < 2:
        return replace(plan, pbxes=pbxes)
    scenarios = []
    for scenario in plan.scenarios:
        if scenario.pbx is None:
            admits = [pool.admits for pool in scenario.pools]
            on = {manager.pbx or pbxes[0] for manager in plan.managers if any(admit(manager) for admit in admits)}
            scenario = replace(scenario, pbx=next(iter(on)) if len(on) == 1 else None)
        scenarios.append(scenario)
    return replace(plan, scenarios=tuple(scenarios), pbxes=pbxes)


def oversized(path: Path, max_bytes: int) -> Problem | None:
    """Why ``path`` is not to be read (over ``max_bytes``, or unreadable), or None; it is not opened."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        return Problem(str(path), 0, 0, "", f"cannot read the file: {exc.strerror or exc}")
    if size > max_bytes:
        return Problem(str(path), 0, 0, "", f"is {size} bytes, over the cap of {max_bytes} (routing_max_bytes)")
    return None


# The folder holding the config package: the reload process imports it from there.
_PACKAGES = Path(__file__).resolve().parent.parent
# Managers unpickled at a time on the loop after a reload: a couple of milliseconds' work.
MANAGERS_PER_PIECE = 500


def plan_in_pieces(plan: RoutingPlan) -> tuple[RoutingPlan, list[bytes]]:
    """The plan without its managers, and its managers pickled a piece at a time (the reload process's
    answer): the loop unpickles them a piece at a time, with its other work in between."""
    managers = plan.managers
    pieces = [
        pickle.dumps(managers[at : at + MANAGERS_PER_PIECE]) for at in range(0, len(managers), MANAGERS_PER_PIECE)
    ]
    return dataclasses.replace(plan, managers=()), pieces


class RoutingSource:
    """The routing plan in force and the file it comes from; a bad reload keeps the plan."""

    def __init__(self, path: Path, plan: RoutingPlan) -> None:
        self.path = path
        self._plan = plan

    @property
    def pbxes(self) -> tuple[str, ...]:
        """The PBX names the file is checked against (leadrouter.yaml's), kept by every reload."""
        return self._plan.pbxes

    @classmethod
    def load(cls, path: Path, pbxes: Sequence[str] = ()) -> RoutingSource:
        """The first load has no plan to fall back on: raise ConfigError."""
        return cls(path, load_routing(path, pbxes))

    @classmethod
    def load_beside(cls, path: Path, pbxes: Sequence[str] = ()) -> Callable[[], RoutingSource]:
        """``load`` in a forked copy of this process, which goes on meanwhile; call the result for
        the source (it raises ConfigError as ``load`` does). At start the daemon imports its
        libraries while the copy reads routing.yaml (each most of a second at 10,000 managers) on
        the machine's other core; a copy, not a new interpreter, so nothing is imported twice.
        """
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the copy: its answer down the pipe, then gone without running the parent's exit code
            status = 1
            # Short-lived, so no collections: each would walk every object inherited from the
            # daemon too, touching (so copying) their pages. They took two thirds of its time.
            gc.disable()
            try:
                os.close(read)
                try:
                    result: tuple[str, object] = ("plan", load_routing(path, pbxes))
                except ConfigError as exc:
                    result = ("problems", exc.problems)
                # Pickled whole, then written: streamed into the pipe, the pickling would wait for
                # the daemon to read, which it does only once its libraries have loaded.
                answer = pickle.dumps(result)
                with os.fdopen(write, "wb") as out:
                    out.write(answer)
                status = 0
            finally:
                os._exit(status)
        os.close(write)

        def collect() -> RoutingSource:
            with os.fdopen(read, "rb") as answer:
                data = answer.read()
            _, status = os.waitpid(pid, 0)
            if status != 0 or not data:
                # The copy died (killed, out of memory): read it here, as ``load`` would.
                return cls.load(path, pbxes)
            kind, result = pickle.loads(data)  # our own copy's answer, on a pipe only it writes to
            if kind == "problems":
                raise ConfigError(result)
            return cls(path, result)

        return collect

    @property
    def plan(self) -> RoutingPlan:
        return self._plan

    async def reload_off_loop(self, *, max_bytes: int, time_cap: float) -> list[Problem]:
        """``reload`` with the reading, parsing and checking in a process of its own (``check_off_loop``)."""
        checked = await self.check_off_loop(max_bytes=max_bytes, time_cap=time_cap)
        if isinstance(checked, list):
            return checked
        self._plan = checked
        return []

    async def check_off_loop(self, *, max_bytes: int, time_cap: float) -> RoutingPlan | list[Problem]:
        """The file's plan, or its problems, with the reading, parsing and checking in a process of
        its own; the plan in force stays until the caller ``adopt``s the new one.

        Parsing a big YAML file takes seconds of pure Python; on the event loop it would stall the
        AMI reader (Asterisk drops a reader that stalls ~100 ms) and the API, and from a thread
        its garbage collections and pydantic's validation would still hold the GIL for 100 ms and
        more (config/reload_worker.py). The running plan stays in force until the new one is ready.
        A file over ``max_bytes`` is refused before it is read; a check still running after
        ``time_cap`` seconds is killed and the running plan stays.
        """
        source = str(self.path)
        too_big = oversized(self.path, max_bytes)
        if too_big is not None:
            return [too_big]
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "config.reload_worker",
            str(self.path.resolve()),
            *self.pbxes,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=_PACKAGES,
        )
        try:
            out, err = await asyncio.wait_for(worker.communicate(), time_cap)
        except TimeoutError:
            worker.kill()
            await worker.wait()
            return [Problem(source, 0, 0, "", f"took over {time_cap:g} s to check (routing_reload_timeout)")]
        if worker.returncode != 0:
            return [Problem(source, 0, 0, "", f"could not be checked: {err.decode(errors='replace').strip()[-300:]}")]
        # Our own child's output, on a pipe only it writes to. Rebuilding the plan is the one part
        # left on the loop (pickle's C code would hold the GIL in a thread too): ~5 ms per 1,000
        # managers, so a piece at a time, the loop running its other work in between.
        kind, *result = pickle.loads(out)
        if kind == "problems":
            return list(result[0])
        shell, pieces = result
        managers: list[Manager] = []
        for piece in pieces:
            await asyncio.sleep(0)
            managers += pickle.loads(piece)
        plan: RoutingPlan = dataclasses.replace(shell, managers=tuple(managers))
        return plan

    def adopt(self, plan: RoutingPlan) -> None:
        """Put in force a plan checked from exactly what the file now holds (``check_off_loop``, or
        config/managers.py's checked write)."""
        self._plan = plan

    def reload(self) -> list[Problem]:
        """Re-read the file (on SIGHUP); return its problems, or [] once the new plan is in force."""
        try:
            plan = load_routing(self.path, self.pbxes)
        except ConfigError as exc:
            return exc.problems
        self._plan = plan
        return []
