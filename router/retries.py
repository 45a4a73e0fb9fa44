"""What follows an attempt that reached no manager, by how it ended.

A busy line is worth trying again in minutes, a number that rings out in hours, an unreachable
one perhaps never; a client who hung up while on hold wanted us and deserves a quick second try.
Each outcome has its own delays and attempt limit, and the state a lead ends in when that limit
is reached (``failed`` unless the scenario names another, e.g. ``wrong_number``), so a CRM can
tell "nobody ever answered" from "the number does not exist".

The limit counts every attempt the lead had, whatever their outcomes: "busy: 6 attempts" means a
lead whose last attempt was busy is tried again while it has had fewer than six.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# The outcomes a scenario may set rules for, by their disposition names (router.model.Disposition).
# ``machine`` is an answering machine the PBX detected: the rule applies once the dialer reports it.
OUTCOMES = ("busy", "no_answer", "unreachable", "abandoned", "no_manager", "ended_unobserved", "machine")
DEFAULT_FINAL_STATE = "failed"


@dataclass(frozen=True, slots=True)
class RetryRule:
    max_attempts: int
    delays: tuple[float, ...]  # seconds after attempt 1, 2, ...; the last one repeats
    final_state: str = DEFAULT_FINAL_STATE

    def delay(self, attempts_made: int) -> float:
        return self.delays[min(max(attempts_made, 1), len(self.delays)) - 1]


@dataclass(frozen=True, slots=True)
class RetryDecision:
    retry_in: float | None  # seconds; None: no more attempts
    final_state: str  # the state the lead ends in when retry_in is None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    default: RetryRule  # the scenario's max_attempts and retry_delays
    by_outcome: Mapping[str, RetryRule] = field(default_factory=dict)

    def rule(self, outcome: str) -> RetryRule:
        return self.by_outcome.get(outcome, self.default)

    def after(self, outcome: str, attempts_made: int) -> RetryDecision:
        rule = self.rule(outcome)
        if attempts_made >= rule.max_attempts:
            return RetryDecision(None, rule.final_state)
        return RetryDecision(rule.delay(attempts_made), rule.final_state)
