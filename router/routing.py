"""Who can take calls and by which rules: the domain side of ``routing.yaml``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Manager:
    id: str
    name: str
    extension: str  # digits; the PBX dials it, the config checked it


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    sources: frozenset[str]  # lead sources it takes; empty = every source
    managers: frozenset[str]  # manager ids it may use; empty = every manager
    hold_limit: float  # seconds an answered client may wait for a free manager
    ring_timeout: float  # seconds a manager's phone rings before the next one is tried
    max_attempts: int
    retry_delays: tuple[float, ...]  # seconds after attempt 1, 2, ...; the last one repeats

    def retry_delay(self, attempts_made: int) -> float:
        return self.retry_delays[min(attempts_made, len(self.retry_delays)) - 1]

    def takes(self, source: str) -> bool:
        return not self.sources or source in self.sources

    def allows(self, manager_id: str) -> bool:
        return not self.managers or manager_id in self.managers


@dataclass(frozen=True, slots=True)
class RoutingPlan:
    managers: tuple[Manager, ...]
    scenarios: tuple[Scenario, ...]  # first match wins; the config guarantees a catch-all last

    def scenario_for(self, source: str) -> Scenario:
        for scenario in self.scenarios:
            if scenario.takes(source):
                return scenario
        return self.scenarios[-1]

    def scenario(self, name: str) -> Scenario:
        for scenario in self.scenarios:
            if scenario.name == name:
                return scenario
        # A reload may drop a scenario while its calls are live; they finish under the default.
        return self.scenarios[-1]
