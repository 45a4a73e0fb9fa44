"""``routing.yaml``: who takes calls and by which rules, checked before it replaces the running plan."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from config.document import Document, Loc
from config.fields import Count, Digits, Duration, Identifier, Line
from config.problems import ConfigError, Problem
from router.routing import Manager, RoutingPlan, Scenario


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


EntryT = TypeVar("EntryT", bound=_Entry)


class _ManagerEntry(_Entry):
    id: Identifier
    name: Line
    extension: Digits


class _ScenarioEntry(_Entry):
    name: Identifier
    # Absent means "every source" / "every manager"; an empty list is refused as ambiguous.
    sources: Annotated[list[Line], Field(min_length=1)] | None = None
    managers: Annotated[list[Identifier], Field(min_length=1)] | None = None
    hold_limit: Duration = 45
    ring_timeout: Duration = 20
    max_attempts: Count = 3
    retry_delays: Annotated[list[Duration], Field(min_length=1)] = [300, 900, 3600]


class _RoutingFile(_Entry):
    version: Literal[1]
    managers: Annotated[list[_ManagerEntry], Field(min_length=1)]
    scenarios: Annotated[list[_ScenarioEntry], Field(min_length=1)]


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


_MANAGERS = TypeAdapter(list[_ManagerEntry])
_SCENARIOS = TypeAdapter(list[_ScenarioEntry])


def _cross_check(data: object) -> Iterator[tuple[Loc, str]]:
    managers = _section(_MANAGERS, data, "managers")
    scenarios = _section(_SCENARIOS, data, "scenarios")
    if managers is not None:
        yield from _duplicates("managers", "id", [manager.id for manager in managers], "manager id")
        yield from _duplicates("managers", "extension", [manager.extension for manager in managers], "extension")
    if scenarios is None:
        return
    yield from _duplicates("scenarios", "name", [scenario.name for scenario in scenarios], "scenario name")
    if managers is not None:
        known = sorted(manager.id for manager in managers)
        for index, scenario in enumerate(scenarios):
            for item, manager_id in enumerate(scenario.managers or ()):
                if manager_id not in known:
                    yield (
                        ("scenarios", index, "managers", item),
                        f"no manager has the id {manager_id!r}; known ids: {', '.join(known)}",
                    )
    yield from _source_order(scenarios)


def _source_order(scenarios: list[_ScenarioEntry]) -> Iterator[tuple[Loc, str]]:
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


def load_routing(path: Path) -> RoutingPlan:
    """Read and check a routing file; raise ConfigError listing every problem."""
    routing = Document.read(path).validate(_RoutingFile, _cross_check)
    return RoutingPlan(
        managers=tuple(Manager(id=entry.id, name=entry.name, extension=entry.extension) for entry in routing.managers),
        scenarios=tuple(
            Scenario(
                name=entry.name,
                sources=frozenset(entry.sources or ()),
                managers=frozenset(entry.managers or ()),
                hold_limit=entry.hold_limit,
                ring_timeout=entry.ring_timeout,
                max_attempts=entry.max_attempts,
                retry_delays=tuple(entry.retry_delays),
            )
            for entry in routing.scenarios
        ),
    )


class RoutingSource:
    """The routing plan in force and the file it comes from; a bad reload keeps the plan."""

    def __init__(self, path: Path, plan: RoutingPlan) -> None:
        self.path = path
        self._plan = plan

    @classmethod
    def load(cls, path: Path) -> RoutingSource:
        """The first load has no plan to fall back on: raise ConfigError."""
        return cls(path, load_routing(path))

    @property
    def plan(self) -> RoutingPlan:
        return self._plan

    def reload(self) -> list[Problem]:
        """Re-read the file (on SIGHUP); return its problems, or [] once the new plan is in force."""
        try:
            plan = load_routing(self.path)
        except ConfigError as exc:
            return exc.problems
        self._plan = plan
        return []
