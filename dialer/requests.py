"""What a CRM may ask of the daemon, whichever way it asks: create a lead, report an outcome.

HTTP (``api/``), MQTT commands (``events/subscriber.py``) and CSV import all validate with the
models here and get their answers from ``LeadRequests``, so a lead refused on one channel is
refused on every other with the same field and reason, and a repeated ``external_id`` returns
the lead already stored on all of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dialer.intake import InvalidPayload, LeadInput, TooManyLeads
from router.model import Lead, Outcome
from router.phone import InvalidPhone

LEAD_ID_MAX = 2**63 - 1  # lead ids are SQL BIGINTs

# Seconds a client is asked to wait: a full or read-only disk takes a person to fix; a
# stopping daemon is back (or another one answers) within seconds.
RETRY_AFTER_STORAGE = 30
RETRY_AFTER_STOPPING = 5


# A regular expression, not a loop over the characters: a lead's three fields cost ~5 µs that way.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def no_control_characters(value: str | None) -> str | None:
    if value is not None and _CONTROL.search(value):
        raise ValueError("must not contain control characters (CR, LF, TAB...)")
    return value


class LeadIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    phone: str = Field(min_length=1, max_length=32, description="as typed; normalised to E.164")
    name: str = Field("", max_length=200)
    source: str = Field("", max_length=100, description="site, landing or campaign; scenarios match on it")
    external_id: str | None = Field(None, min_length=1, max_length=200, description="your id; repeats are idempotent")
    payload: dict[str, Any] = Field(default_factory=dict, description="free-form, stored and published as is")

    _plain_text = field_validator("name", "source", "external_id")(no_control_characters)

    def as_input(self) -> LeadInput:
        return LeadInput(
            phone=self.phone, name=self.name, source=self.source, external_id=self.external_id, payload=self.payload
        )


class OutcomeIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    outcome: Outcome = Field(description="worked (in progress), won or lost; the latest report is in force")
    reason: str = Field("", max_length=500, description="why, in the CRM's words")
    author: str = Field(min_length=1, max_length=200, description="who in the CRM reported it")

    _plain_text = field_validator("reason", "author")(no_control_characters)


Problem = tuple[str, str]  # (field, reason)


def validation_problems(errors: Iterable[Mapping[str, Any]], *, skip: Sequence[str] = ()) -> list[Problem]:
    """pydantic's errors as (field, reason): ``payload.x``, not ``('body', 'payload', 'x')``.

    ``skip``: location parts that are the channel's, not the field's (FastAPI's ``body``).
    """
    problems = []
    for error in errors:
        loc = [str(part) for part in error["loc"] if part not in skip]
        problems.append((".".join(loc) or "body", str(error["msg"]).removeprefix("Value error, ")))
    return problems


@dataclass(frozen=True)
class Accepted:
    lead: Lead
    created: bool = False  # a new lead (else the one already stored under its external_id, or an outcome)


@dataclass(frozen=True)
class Refused:
    """Why not, in the API's shape: ``error`` is the kind, ``problems`` name field and reason."""

    error: str  # invalid_lead, invalid_request, too_many_leads, not_found, storage_unavailable, stopping,
    # internal_error (an MQTT command that raised: a bug, logged)
    problems: list[Problem] = field(default_factory=list)
    retry_after: float | None = None  # try again after this many seconds; None: not as it is


class IntakePort(Protocol):
    async def submit(self, data: LeadInput) -> tuple[Lead, bool]: ...


class OutcomesPort(Protocol):
    async def report(self, lead_id: int, outcome: Outcome, *, reason: str, author: str) -> Lead | None: ...


class LeadRequests:
    def __init__(
        self,
        intake: IntakePort,
        outcomes: OutcomesPort,
        *,
        is_open: Callable[[], bool],
        unavailable: tuple[type[Exception], ...],
    ) -> None:
        """``is_open``: False while the daemon stops; ``unavailable``: what the storage raises when it
        cannot serve now."""
        self._intake = intake
        self._outcomes = outcomes
        self._is_open = is_open
        self._unavailable = unavailable

    async def create(self, body: object) -> Accepted | Refused:
        """A lead from a JSON object as a CRM sent it."""
        try:
            lead = LeadIn.model_validate(body)
        except ValidationError as exc:
            return Refused("invalid_lead", validation_problems(exc.errors()))
        return await self.submit(lead)

    async def submit(self, lead: LeadIn) -> Accepted | Refused:
        """A validated lead: stored (or found by its external_id), or refused saying why."""
        if not self._is_open():
            return _stopping()
        try:
            stored, created = await self._intake.submit(lead.as_input())
        except (InvalidPhone, InvalidPayload, TooManyLeads) as exc:
            return intake_refusal(exc)
        except self._unavailable as exc:
            return _storage_unavailable(exc)
        return Accepted(stored, created)

    async def report(self, lead_id: int, body: object) -> Accepted | Refused:
        """An outcome from a JSON object as a CRM sent it."""
        if not 1 <= lead_id <= LEAD_ID_MAX:
            return Refused("invalid_request", [("lead_id", f"must be from 1 to {LEAD_ID_MAX}")])
        try:
            report = OutcomeIn.model_validate(body)
        except ValidationError as exc:
            return Refused("invalid_request", validation_problems(exc.errors()))
        return await self.report_valid(lead_id, report)

    async def report_valid(self, lead_id: int, report: OutcomeIn) -> Accepted | Refused:
        try:
            lead = await self._outcomes.report(lead_id, report.outcome, reason=report.reason, author=report.author)
        except self._unavailable as exc:
            return _storage_unavailable(exc)
        if lead is None:
            return Refused("not_found", [("lead_id", f"no lead {lead_id}")])
        return Accepted(lead)


def intake_refusal(exc: InvalidPhone | InvalidPayload | TooManyLeads) -> Refused:
    """Why the intake refused a lead, with the field it names."""
    if isinstance(exc, TooManyLeads):
        return Refused("too_many_leads", [("phone", str(exc))], exc.retry_after)
    return Refused("invalid_lead", [("payload" if isinstance(exc, InvalidPayload) else "phone", str(exc))])


def _stopping() -> Refused:
    return Refused("stopping", [("service", "leadrouter is stopping; send the lead again")], RETRY_AFTER_STOPPING)


def _storage_unavailable(exc: Exception) -> Refused:
    # The storage has logged the outage once; a line per refused request would flood the log.
    return Refused("storage_unavailable", [("database", f"cannot store now: {exc}")], RETRY_AFTER_STORAGE)
