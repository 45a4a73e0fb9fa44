"""The HTTP API: CRMs post leads, supervisors read histories and stats, ops read health and metrics.

Every refusal names the field and the reason, in one shape:
``{"error": "...", "problems": [{"field": "phone", "reason": "..."}]}``.

A lead is answered 201 only once it is committed. When it cannot be (the database is full,
read-only or gone) or the daemon is stopping, the answer is 503 with ``Retry-After``: the
CRM tries again later or elsewhere, and nothing is lost on either side.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import Authenticator, AuthLimits, Forbidden, TokenScope, TooManyFailures, Unauthorized, require_scope
from dialer.intake import InvalidPayload, KeyedWindow, LeadInput, RateLimit, TooManyLeads
from recordings.access import RecordingLinks, resolve
from router.model import Call, Lead, Outcome
from router.phone import InvalidPhone
from router.stats import (
    FIRST_DAY,
    LAST_DAY,
    PERIODS,
    ManagerFigures,
    Period,
    StatsReport,
    csv_text,
    group_rows,
    hour_rows,
    manager_rows,
    report_summary,
)


class LeadIntakePort(Protocol):
    async def submit(self, data: LeadInput) -> tuple[Lead, bool]: ...


class LeadQueriesPort(Protocol):
    async def lead_with_calls(self, lead_id: int) -> tuple[Lead, list[Call]] | None: ...


class LeadOutcomesPort(Protocol):
    async def report(self, lead_id: int, outcome: Outcome, *, reason: str, author: str) -> Lead | None: ...


class StatsPort(Protocol):
    async def lead_events(self, lead_id: int) -> list[dict[str, Any]]: ...

    async def recording_in_progress(self, name: str) -> bool: ...

    def period(
        self, *, first: date | None, last: date | None, named: str | None, zone: tzinfo | None
    ) -> Period: ...  # by default today, in the company's zone

    async def managers(self, period: Period, manager_id: str | None = None) -> list[ManagerFigures]: ...

    async def report(self, period: Period, manager_id: str | None = None) -> StatsReport: ...


DASHBOARD = Path(__file__).parent / "dashboard"  # vendored static files: nothing to build

# Lead ids are SQL BIGINTs; a larger one is a 422, not an overflow deep in the driver.
LeadId = Annotated[int, PathParam(ge=1, le=2**63 - 1)]

# Seconds a client is asked to wait: a full or read-only disk takes a person to fix; a
# stopping daemon is back (or another one answers) within seconds.
RETRY_AFTER_STORAGE = 30
RETRY_AFTER_STOPPING = 5


@dataclass(frozen=True)
class ApiDeps:
    intake: LeadIntakePort
    queries: LeadQueriesPort
    outcomes: LeadOutcomesPort
    stats: StatsPort
    live: Callable[[], AsyncIterator[str]]  # the live board as server-sent events, until the daemon stops
    recordings: Path | None  # the PBX's recording folder, when the daemon serves the files
    recording_links: RecordingLinks
    now: Callable[[], float]  # wall-clock seconds, for links' expiry
    health: Callable[[], tuple[bool, dict[str, Any]]]  # serving (200, else 503), and the body
    metrics: Callable[[], Awaitable[tuple[bytes, str]]]  # the exposition and its content type
    intake_open: Callable[[], bool]  # False while the daemon stops
    unavailable: tuple[type[Exception], ...]  # what the storage raises when it cannot serve now
    tokens: Mapping[TokenScope, Sequence[str]]  # several per scope, for rotation; admin may do everything
    auth_limits: AuthLimits
    max_body_bytes: int
    # POST /leads per client address; None: unlimited (behind a proxy every client is the proxy)
    leads_per_address: RateLimit | None = None


def _no_control_characters(value: str | None) -> str | None:
    if value is not None and any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError("must not contain control characters (CR, LF, TAB...)")
    return value


class LeadIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    phone: str = Field(min_length=1, max_length=32, description="as typed; normalised to E.164")
    name: str = Field("", max_length=200)
    source: str = Field("", max_length=100, description="site, landing or campaign; scenarios match on it")
    external_id: str | None = Field(None, min_length=1, max_length=200, description="your id; repeats are idempotent")
    payload: dict[str, Any] = Field(default_factory=dict, description="free-form, stored and published as is")

    _plain_text = field_validator("name", "source", "external_id")(_no_control_characters)


class OutcomeIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    outcome: Outcome = Field(description="worked (in progress), won or lost; the latest report is in force")
    reason: str = Field("", max_length=500, description="why, in the CRM's words")
    author: str = Field(min_length=1, max_length=200, description="who in the CRM reported it")

    _plain_text = field_validator("reason", "author")(_no_control_characters)


def _problem(status: int, error: str, problems: Sequence[tuple[str, str]]) -> JSONResponse:
    return JSONResponse(
        {"error": error, "problems": [{"field": field, "reason": reason} for field, reason in problems]},
        status_code=status,
    )


class BodyLimit:
    """Refuse bodies over the limit before they are read into memory, with or without Content-Length."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = _problem(413, "body_too_large", [("body", f"larger than {self.max_bytes} bytes")])
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await too_big(scope, receive, send)
            return
        seen = 0
        refused = False

        async def limited_receive() -> Message:
            nonlocal seen, refused
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes and not refused:
                refused = True
                await too_big(scope, receive, send)
                # The app sees the client go away and stops; whatever it answers is dropped below.
                return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)


def _too_many_leads(exc: TooManyLeads, field: str) -> JSONResponse:
    response = _problem(429, "too_many_leads", [(field, str(exc))])
    response.headers["Retry-After"] = str(math.ceil(exc.retry_after))
    return response


def _lead_json(lead: Lead) -> dict[str, Any]:
    return {
        "id": lead.id,
        "phone": lead.phone,
        "name": lead.name,
        "source": lead.source,
        "external_id": lead.external_id,
        "payload": lead.payload,
        "status": lead.status.value,
        "owner_id": lead.owner_id,
        "attempts": lead.attempts,
        "next_attempt_at": lead.next_attempt_at,
        "last_disposition": lead.last_disposition.value if lead.last_disposition else None,
        "created_at": lead.created_at,
        "outcome": lead.outcome.value if lead.outcome else None,
    }


def _call_json(call: Call) -> dict[str, Any]:
    return {
        "id": call.id,
        "attempt": call.attempt,
        "scenario": call.scenario,
        "state": call.state.value,
        "disposition": call.disposition.value if call.disposition else None,
        "hangup_cause": call.hangup_cause,
        "manager_id": call.manager_id if call.bridged_at else None,
        "started_at": call.started_at,
        "answered_at": call.answered_at,
        "bridged_at": call.bridged_at,
        "ended_at": call.ended_at,
        "ring_seconds": call.ring_seconds,
        "hold_seconds": call.hold_seconds,
        "talk_seconds": call.talk_seconds,
        "total_seconds": call.total_seconds,
        "pbx_billable_seconds": call.pbx_billable_seconds,
        "recording_file": call.recording_file,
        "recording_url": call.recording_url,
        "managers_tried": [
            {
                "manager_id": leg.manager_id,
                "result": leg.result.value if leg.result else None,
                "started_at": leg.started_at,
                "answered_at": leg.answered_at,
                "ended_at": leg.ended_at,
            }
            for leg in call.legs
        ],
    }


def _stats_period(
    request: Request,
    day: Annotated[
        date | None,
        Query(alias="date", ge=FIRST_DAY, le=LAST_DAY, description="YYYY-MM-DD: one day (as from=to=)"),
    ] = None,
    first: Annotated[
        date | None, Query(alias="from", ge=FIRST_DAY, le=LAST_DAY, description="YYYY-MM-DD, the first day")
    ] = None,
    last: Annotated[
        date | None, Query(alias="to", ge=FIRST_DAY, le=LAST_DAY, description="YYYY-MM-DD, the last day, inclusive")
    ] = None,
    period: Annotated[str | None, Query(description="today, week or month (the calendar one)")] = None,
    tz: Annotated[str | None, Query(description="IANA zone; routing.yaml's timezone by default")] = None,
) -> Period:
    try:
        zone = ZoneInfo(tz) if tz else None
    except (ZoneInfoNotFoundError, ValueError):
        raise _BadQuery("tz", f"unknown time zone {tz!r}") from None
    if period is not None and period not in PERIODS:
        raise _BadQuery("period", f"one of {', '.join(PERIODS)}")
    try:
        stats: StatsPort = request.app.state.stats
        return stats.period(first=first or day, last=last or day, named=period, zone=zone)
    except ValueError as exc:
        raise _BadQuery("to", str(exc)) from None


StatsPeriod = Annotated[Period, Depends(_stats_period)]
# A manager id is at most 64 plain characters (storage.schema); a NUL could not even be compared on PostgreSQL.
Manager = Annotated[
    str | None,
    Query(alias="manager", max_length=64, description="one manager's id"),
    AfterValidator(_no_control_characters),
]
Format = Annotated[Literal["json", "csv"], Query(alias="format", description="csv: a download")]


def create_app(deps: ApiDeps) -> FastAPI:
    app = FastAPI(title="leadrouter", version="0.1.0", docs_url="/docs", redoc_url=None)
    app.add_middleware(BodyLimit, max_bytes=deps.max_body_bytes)
    app.state.stats = deps.stats  # for _stats_period, a dependency declared outside this closure

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            loc = [str(part) for part in err["loc"] if part not in ("body", "query", "path")]
            reason = str(err["msg"]).removeprefix("Value error, ")
            problems.append((".".join(loc) or "body", reason))
        return _problem(422, "invalid_request", problems)

    app.state.authenticator = Authenticator(deps.tokens, deps.auth_limits)

    @app.exception_handler(Unauthorized)
    async def unauthorized(_request: Request, _exc: Unauthorized) -> JSONResponse:
        response = _problem(401, "unauthorized", [("authorization", "send 'Authorization: Bearer <token>'")])
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(Forbidden)
    async def forbidden(_request: Request, _exc: Forbidden) -> JSONResponse:
        return _problem(403, "forbidden", [("authorization", "this token's scope does not include this endpoint")])

    @app.exception_handler(TooManyFailures)
    async def too_many_failures(_request: Request, exc: TooManyFailures) -> JSONResponse:
        response = _problem(429, "too_many_failures", [("authorization", str(exc))])
        response.headers["Retry-After"] = str(math.ceil(exc.retry_after))
        return response

    intake = [Depends(require_scope(TokenScope.INTAKE))]
    readers = [Depends(require_scope(TokenScope.INTAKE, TokenScope.SUPERVISOR))]
    supervisor = [Depends(require_scope(TokenScope.SUPERVISOR))]

    async def storage_unavailable(_request: Request, exc: Exception) -> JSONResponse:
        # The storage has logged the outage once; a line per refused request would flood the log.
        response = _problem(503, "storage_unavailable", [("database", f"cannot store now: {exc}")])
        response.headers["Retry-After"] = str(RETRY_AFTER_STORAGE)
        return response

    for error in deps.unavailable:
        app.add_exception_handler(error, storage_unavailable)

    def open_for_leads() -> None:
        if not deps.intake_open():
            raise _Stopping

    @app.exception_handler(_Stopping)
    async def stopping(_request: Request, _exc: _Stopping) -> JSONResponse:
        response = _problem(503, "stopping", [("service", "leadrouter is stopping; post the lead again")])
        response.headers["Retry-After"] = str(RETRY_AFTER_STOPPING)
        return response

    per_address = KeyedWindow(deps.leads_per_address) if deps.leads_per_address else None

    def within_address_limit(request: Request) -> None:
        if per_address is None:
            return
        address, now = request.client.host if request.client else "unknown", datetime.now(UTC)
        wait = per_address.wait(address, now)
        if wait:
            raise TooManyLeads("this address posted its share of leads; try later", wait)
        per_address.add(address, now)

    @app.exception_handler(TooManyLeads)
    async def too_many_leads(_request: Request, exc: TooManyLeads) -> JSONResponse:
        return _too_many_leads(exc, "source")

    @app.post(
        "/leads",
        dependencies=[*intake, Depends(within_address_limit), Depends(open_for_leads)],
        status_code=201,
    )
    async def post_lead(body: LeadIn) -> JSONResponse:
        try:
            lead, created = await deps.intake.submit(
                LeadInput(
                    phone=body.phone,
                    name=body.name,
                    source=body.source,
                    external_id=body.external_id,
                    payload=body.payload,
                )
            )
        except InvalidPhone as exc:
            return _problem(422, "invalid_lead", [("phone", str(exc))])
        except InvalidPayload as exc:
            return _problem(422, "invalid_lead", [("payload", str(exc))])
        except TooManyLeads as exc:
            return _too_many_leads(exc, "phone")
        return JSONResponse(_jsonable(_lead_json(lead)), status_code=201 if created else 200)

    @app.get("/leads/{lead_id}", dependencies=readers)
    async def get_lead(lead_id: LeadId) -> JSONResponse:
        found = await deps.queries.lead_with_calls(lead_id)
        if found is None:
            return _problem(404, "not_found", [("lead_id", f"no lead {lead_id}")])
        lead, calls = found
        return JSONResponse(_jsonable({**_lead_json(lead), "calls": [_call_json(call) for call in calls]}))

    @app.patch("/leads/{lead_id}", dependencies=intake)
    async def report_outcome(lead_id: LeadId, body: OutcomeIn) -> JSONResponse:
        """Report what became of a lead: stored with time and author, published as ``lead.outcome``.

        ``won`` and ``lost`` credit the lead's owner in the scenario he took it in (the
        ``closing_rate`` strategy) and take it off his open leads (``max_open_leads``).
        """
        lead = await deps.outcomes.report(lead_id, body.outcome, reason=body.reason, author=body.author)
        if lead is None:
            return _problem(404, "not_found", [("lead_id", f"no lead {lead_id}")])
        return JSONResponse(_jsonable(_lead_json(lead)))

    def table(name: str, period: Period, rows: list[dict[str, object]], form: str) -> Response:
        if form == "csv":
            filename = f"leadrouter-{name}-{period.first}_{period.last}.csv"
            return Response(
                csv_text(rows),
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": f'attachment; filename="{filename}"'},
            )
        when = {"from": period.start, "to": period.end, "first_day": period.first, "last_day": period.last}
        if period.first == period.last:
            when["date"] = period.first  # what this endpoint answered before periods
        return JSONResponse(_jsonable({**when, "zone": str(period.zone), name: rows}))

    @app.exception_handler(_BadQuery)
    async def bad_query(_request: Request, exc: _BadQuery) -> JSONResponse:
        return _problem(422, "invalid_request", [(exc.field, exc.reason)])

    @app.get("/stats/managers", dependencies=supervisor)
    async def stats_managers(period: StatsPeriod, manager_id: Manager = None, form: Format = "json") -> Response:
        """Per manager: offers, answered, missed, calls, talk (total within the period, average and
        longest of whole calls), first and last call, leads owned, won and lost; every manager in
        routing.yaml, idle ones with zeros."""
        return table("managers", period, manager_rows(await deps.stats.managers(period, manager_id), period.zone), form)

    @app.get("/stats/sources", dependencies=supervisor)
    async def stats_sources(period: StatsPeriod, form: Format = "json") -> Response:
        """Per lead source, leads created in the period: reached, assigned (a manager talked), won, in %."""
        return table("sources", period, group_rows((await deps.stats.report(period)).sources, "source"), form)

    @app.get("/stats/scenarios", dependencies=supervisor)
    async def stats_scenarios(period: StatsPeriod, form: Format = "json") -> Response:
        """Per scenario (of each lead's first call), as /stats/sources."""
        return table("scenarios", period, group_rows((await deps.stats.report(period)).scenarios, "scenario"), form)

    @app.get("/stats/hours", dependencies=supervisor)
    async def stats_hours(period: StatsPeriod, form: Format = "json") -> Response:
        """Calls started in each hour of the day (company time): dialled, answered, bridged, talk."""
        return table("hours", period, hour_rows((await deps.stats.report(period)).hours), form)

    @app.get("/stats", dependencies=supervisor)
    async def stats_report(period: StatsPeriod, manager_id: Manager = None) -> JSONResponse:
        """Everything at once: the tables above, speed-to-lead (p50/p90/max seconds from a lead's
        creation to its first dial, the client's answer, a manager), leads never reached, fairness."""
        report = await deps.stats.report(period, manager_id)
        return JSONResponse(
            _jsonable(
                {
                    **report_summary(report),
                    "managers": manager_rows(report.managers, period.zone),
                    "sources": group_rows(report.sources, "source"),
                    "scenarios": group_rows(report.scenarios, "scenario"),
                    "hours": hour_rows(report.hours),
                }
            )
        )

    @app.get("/live", dependencies=supervisor, response_class=StreamingResponse)
    async def live() -> StreamingResponse:
        """The live board as server-sent events (``event: board``, JSON data) whenever it changes:
        managers' states and since when, calls in progress, leads waiting, today's counters."""
        return StreamingResponse(
            deps.live(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def recording(name: str) -> Path:
        path = resolve(deps.recordings, name) if deps.recordings else None
        if path is None:
            raise _NoRecording(name)
        if await deps.stats.recording_in_progress(name):
            raise _RecordingInProgress(name)
        return path

    @app.exception_handler(_RecordingInProgress)
    async def recording_in_progress(_request: Request, exc: _RecordingInProgress) -> JSONResponse:
        # MixMonitor writes the WAV header's lengths at the end: a player would stop short.
        response = _problem(409, "recording_in_progress", [("name", f"the call recording {str(exc)!r} is still up")])
        response.headers["Retry-After"] = "10"
        return response

    @app.exception_handler(_NoRecording)
    async def no_recording(_request: Request, exc: _NoRecording) -> JSONResponse:
        # The same answer for a missing file and a name outside the folder: nothing to probe with.
        return _problem(404, "not_found", [("name", f"no recording {str(exc)!r} here")])

    @app.get("/leads/{lead_id}/events", dependencies=supervisor)
    async def lead_events(lead_id: LeadId) -> JSONResponse:
        """The events about the lead, as published to MQTT (``published_at`` null: still in the
        outbox): its arrival, every call, owner changes, outcomes."""
        return JSONResponse(_jsonable({"lead_id": lead_id, "events": await deps.stats.lead_events(lead_id)}))

    @app.get("/recording-links/{name:path}", dependencies=supervisor)
    async def recording_link(name: str) -> JSONResponse:
        """A link to the recording that works without the token (for a browser's audio player)
        until ``expires`` (``recordings.link_ttl``)."""
        await recording(name)
        expires, signature = deps.recording_links.sign(name, deps.now())
        query = urlencode({"expires": expires, "signature": signature})
        return JSONResponse({"url": f"/recordings/{quote(name)}?{query}", "expires": expires})

    @app.get("/recordings/{name:path}", response_class=FileResponse)
    async def recording_file(
        request: Request, name: str, expires: int | None = None, signature: str | None = None
    ) -> Response:
        """The recording (WAV), seekable with HTTP Range: with a signed link, or with the token."""
        if expires is None or signature is None:
            require_scope(TokenScope.SUPERVISOR)(request)  # as `supervisor` does
        elif refused := deps.recording_links.check(name, expires, signature, deps.now()):
            return _problem(403, "forbidden", [("signature", refused)])
        return FileResponse(await recording(name), media_type="audio/wav")

    # Static files only, no data: the page asks for the token and sends it with every request.
    app.mount("/dashboard", StaticFiles(directory=DASHBOARD, html=True), name="dashboard")

    @app.get("/health")
    async def health() -> JSONResponse:
        serving, body = deps.health()
        return JSONResponse(body, status_code=200 if serving else 503)

    # Open like /health: Prometheus scrapes without a token, and the figures name no lead,
    # phone or person. It listens where the API does (http.host).
    @app.get("/metrics")
    async def metrics() -> Response:
        body, content_type = await deps.metrics()
        return Response(body, media_type=content_type)

    return app


class _Stopping(Exception):
    pass


class _NoRecording(Exception):
    pass


class _RecordingInProgress(Exception):
    pass


class _BadQuery(Exception):
    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value
