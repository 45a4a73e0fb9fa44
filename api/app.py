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
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import (
    SESSION_COOKIE,
    Authenticator,
    AuthLimits,
    CsrfRefused,
    Forbidden,
    Session,
    Sessions,
    TooManyFailures,
    Unauthorized,
    authenticate,
    require_scope,
    session_key,
)
from api.lead_post import PlainLeadPost
from api.scopes import TokenScope
from dialer.importing import BatchIntake, Columns, ImportRefused, import_csv
from dialer.intake import KeyedWindow, RateLimit, TooManyLeads
from dialer.requests import (
    RETRY_AFTER_STOPPING,
    RETRY_AFTER_STORAGE,
    Accepted,
    LeadIn,
    OutcomeIn,
    Refused,
    no_control_characters,
    validation_problems,
)
from recordings.access import RecordingLinks, redirect_url, resolve
from router.model import Call, HistoryEntry, Lead
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


class LeadRequestsPort(Protocol):
    """dialer.requests.LeadRequests: the validation and answers every channel shares."""

    async def submit(self, lead: LeadIn) -> Accepted | Refused: ...

    async def report_valid(self, lead_id: int, report: OutcomeIn) -> Accepted | Refused: ...


class LeadQueriesPort(Protocol):
    async def lead_with_calls(self, lead_id: int) -> tuple[Lead, list[Call]] | None: ...

    async def lead_history(self, lead_id: int) -> list[HistoryEntry] | None: ...


class ManagersPort(Protocol):
    """The managers in routing.yaml: listed as in force, changed by an edit of the file applied as a reload."""

    def managers(self) -> list[dict[str, Any]]: ...

    async def change_manager(
        self, manager_id: str, changes: dict[str, Any] | None, *, create: bool = False
    ) -> dict[str, Any] | Refused: ...


class WebhooksPort(Protocol):
    async def overview(self) -> list[dict[str, Any]]: ...

    async def dead(self, subscriber: str | None, limit: int) -> list[dict[str, Any]]: ...

    async def retry(self, subscriber: str | None, event_ids: list[str]) -> int: ...


class StatsPort(Protocol):
    async def lead_events(self, lead_id: int) -> list[dict[str, Any]]: ...

    async def recording_in_progress(self, name: str) -> bool: ...

    def period(
        self, *, first: date | None, last: date | None, named: str | None, zone: tzinfo | None
    ) -> Period: ...  # by default today, in the company's zone

    async def managers(self, period: Period, manager_id: str | None = None) -> list[ManagerFigures]: ...

    async def states(self, period: Period, manager_id: str | None = None) -> list[dict[str, object]]: ...

    async def report(self, period: Period, manager_id: str | None = None) -> StatsReport: ...


DASHBOARD = Path(__file__).parent / "dashboard"  # vendored static files: nothing to build

# Lead ids are SQL BIGINTs; a larger one is a 422, not an overflow deep in the driver.
LeadId = Annotated[int, PathParam(ge=1, le=2**63 - 1)]
ManagerPath = Annotated[str, PathParam(min_length=1, max_length=64, pattern=r"^[a-z0-9_.-]+$")]


class ManagerStatesPort(Protocol):
    """Managers' states as the board has them now; pause and resume (None: no such manager), which
    every daemon on the database applies."""

    def states(self) -> list[dict[str, Any]]: ...

    async def pause(self, manager_id: str, reason: str) -> dict[str, Any] | None: ...

    async def resume(self, manager_id: str) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class ApiDeps:
    requests: LeadRequestsPort
    queries: LeadQueriesPort
    managers: ManagersPort
    stats: StatsPort
    live: Callable[[], AsyncIterator[str]]  # the live board as server-sent events, until the daemon stops
    recordings: Path | None  # the PBX's recording folder, when the daemon serves the files
    recording_redirect: str | None  # "https://files.example.com/{file}": links redirect there instead
    recording_links: RecordingLinks
    now: Callable[[], float]  # wall-clock seconds, for links' expiry
    health: Callable[[], tuple[bool, dict[str, Any]]]  # serving (200, else 503), and the body
    metrics: Callable[[], Awaitable[tuple[bytes, str]]]  # the exposition and its content type
    intake_open: Callable[[], bool]  # False while the daemon stops
    manager_states: ManagerStatesPort
    unavailable: tuple[type[Exception], ...]  # what the storage raises when it cannot serve now
    tokens: Mapping[TokenScope, Sequence[str]]  # several per scope, for rotation; admin may do everything
    auth_limits: AuthLimits
    max_body_bytes: int
    importer: BatchIntake  # POST /leads/import stores its rows through it
    max_import_bytes: int  # the largest CSV POST /leads/import takes
    session_ttl: float  # seconds a dashboard login lasts
    # POST /leads per client address; None: unlimited (behind a proxy every client is the proxy)
    leads_per_address: RateLimit | None = None
    webhooks: WebhooksPort | None = None  # delivery state and retries, for admins
    # Stores a logout (the session's nonce and expiry) for every daemon on the database, and for
    # the next start: the session is refused everywhere, not only by the daemon that was asked.
    logouts: Callable[[str, int], Awaitable[None]] | None = None
    # The event contract, by path under /schema/: asyncapi.json, events/<type>.json
    schemas: Mapping[str, bytes] = field(default_factory=dict)


class WebhookRetryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subscriber: str | None = Field(None, max_length=64, description="only this subscriber's dead events")
    event_ids: list[Annotated[str, Field(max_length=36)]] = Field(
        default_factory=list,
        max_length=1000,
        description="only these events' leads (all their dead events, in order); none: every dead event",
    )


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1, max_length=1000, description="a supervisor or admin API token")


class PauseIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    reason: str = Field(min_length=1, max_length=100, description="why: lunch, training, meeting...")

    _plain_text = field_validator("reason")(no_control_characters)


class _Json(JSONResponse):
    """orjson's rendering, ~10 µs less a lead's answer: the same JSON as the standard library's
    (dates in ISO 8601 too); only a float's spelling may differ (1e-7 where json writes 1e-07)."""

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content)
        except TypeError:  # an integer past 64 bits (a payload may carry one), which only json writes
            return super().render(_jsonable(content))


_UNPARSED = "There was an error parsing the body"  # FastAPI's detail (fastapi/routing.py, Starlette's exception)


def _problem(status: int, error: str, problems: Sequence[tuple[str, str]]) -> JSONResponse:
    return JSONResponse(
        {"error": error, "problems": [{"field": field, "reason": reason} for field, reason in problems]},
        status_code=status,
    )


class BodyLimit:
    """Refuse bodies over the limit before they are read into memory, with or without Content-Length."""

    def __init__(self, app: ASGIApp, max_bytes: int, per_path: Mapping[str, int] | None = None) -> None:
        """``per_path``: other limits for some paths (a CSV import is bigger than a lead)."""
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = per_path or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.per_path.get(scope["path"], self.max_bytes)

        def too_big() -> JSONResponse:  # built when needed: most requests are not too big
            return _problem(413, "body_too_large", [("body", f"larger than {max_bytes} bytes")])

        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > max_bytes:
                await too_big()(scope, receive, send)
                return
            # The HTTP parser hands the app exactly Content-Length bytes of body: nothing to count.
            await self.app(scope, receive, send)
            return
        seen = 0
        refused = False

        async def limited_receive() -> Message:
            nonlocal seen, refused
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > max_bytes and not refused:
                refused = True
                await too_big()(scope, receive, send)
                # The app sees the client go away and stops; whatever it answers is dropped below.
                return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)


_STATUS = {
    "not_found": 404,
    "manager_exists": 409,
    "too_many_leads": 429,
    "storage_unavailable": 503,
    "stopping": 503,
    "routing_file_unavailable": 503,
}


class ManagerPatch(BaseModel):
    """Fields to change: given ones replace routing.yaml's, null removes one (its default applies),
    omitted ones stay. The values are checked by routing.yaml's own rules, as a reload checks them."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=200)
    extension: str | None = Field(None, max_length=32, description="digits; the PBX dials it")
    groups: list[Annotated[str, Field(max_length=100)]] | None = Field(None, max_length=100)
    skills: list[Annotated[str, Field(max_length=100)]] | None = Field(None, max_length=100)
    weight: int | None = Field(None, description="1..100, default 50; version 2 files")
    max_open_leads: int | None = Field(None, description="capacity: undecided leads he may own; null: no limit")
    pbx: str | None = Field(None, max_length=64, description="his phone's PBX (a name under pbxes:); null: the first")
    shift: list[Annotated[str, Field(max_length=100)]] | None = Field(
        None, max_length=50, description='e.g. ["mon-fri 09:00-18:00"]; null: always on shift'
    )

    def changes(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.model_fields_set}


class ManagerNew(ManagerPatch):
    id: str = Field(min_length=1, max_length=100, description="lowercase letters, digits, _ . -")
    name: str = Field(max_length=200)  # required when adding
    extension: str = Field(max_length=32, description="digits; the PBX dials it")

    def changes(self) -> dict[str, Any]:
        return {key: value for key, value in super().changes().items() if key != "id"}


ManagerId = Annotated[str, PathParam(min_length=1, max_length=100)]


def _refused(refused: Refused) -> JSONResponse:
    """The shared answer as HTTP: 422 for what is wrong with the request, else as the kind says."""
    response = _problem(_STATUS.get(refused.error, 422), refused.error, refused.problems)
    if refused.retry_after is not None:
        response.headers["Retry-After"] = str(math.ceil(refused.retry_after))
    return response


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
        "pbx": call.pbx,  # leadrouter.yaml's name of its PBX ("default": `ami:`); None: stored before it was kept
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
        "recording_deleted_at": call.recording_deleted_at,
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
    except (ZoneInfoNotFoundError, ValueError, OSError, RecursionError):  # "UTC/x/x/..." recursed
        raise _BadQuery("tz", f"unknown time zone {str(tz)[:100]!r}") from None
    if period is not None and period not in PERIODS:
        raise _BadQuery("period", f"one of {', '.join(PERIODS)}")
    try:
        stats: StatsPort = request.app.state.stats
        return stats.period(first=first or day, last=last or day, named=period, zone=zone)
    except ValueError as exc:
        raise _BadQuery("to", str(exc)) from None


DELIMITERS = {"comma": ",", "semicolon": ";", "tab": "\t"}
ColumnName = Annotated[str, Query(min_length=1, max_length=200, description="the CSV column holding this field")]
StatsPeriod = Annotated[Period, Depends(_stats_period)]
# A manager id is at most 64 plain characters (storage.schema); a NUL could not even be compared on PostgreSQL.
Manager = Annotated[
    str | None,
    Query(alias="manager", max_length=64, description="one manager's id"),
    AfterValidator(no_control_characters),
]
Format = Annotated[Literal["json", "csv"], Query(alias="format", description="csv: a download")]


class _Api(FastAPI):
    """FastAPI with the plain ``POST /leads`` served in front of its layers (api/lead_post.py); the
    route stays, for the OpenAPI document and every request that is not plain."""

    plain_leads: PlainLeadPost | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.plain_leads is not None
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] == "/leads"
        ):
            await self.plain_leads(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def fastapi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI's own way through, for what the path in front leaves to it."""
        await super().__call__(scope, receive, send)

    async def answer_exception(self, exc: BaseException, scope: Scope, receive: Receive, send: Send) -> None:
        """What FastAPI's layers make of ``exc`` raised by an endpoint: its exception handler's answer,
        else a 500 and ``exc`` raised again for the server to log. Starlette's own middlewares do it,
        with the handlers split between them as ``build_middleware_stack`` splits them."""

        async def raising(_scope: Scope, _receive: Receive, _send: Send) -> None:
            raise exc

        server_error = None
        handlers: dict[Any, Any] = {}
        for key, handler in self.exception_handlers.items():
            if key in (500, Exception):
                server_error = handler
            else:
                handlers[key] = handler
        scope["app"] = self  # as Starlette's own entry sets it, for the handlers' Request
        inner = ExceptionMiddleware(raising, handlers=handlers, debug=self.debug)
        await ServerErrorMiddleware(inner, handler=server_error, debug=self.debug)(scope, receive, send)


def create_app(deps: ApiDeps) -> FastAPI:
    # No OpenTelemetry here (Prometheus at /metrics): FastAPI's own telemetry would look for its
    # providers at every request otherwise.
    app = _Api(
        title="leadrouter",
        version="0.1.0",
        docs_url="/docs",
        redoc_url=None,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.add_middleware(BodyLimit, max_bytes=deps.max_body_bytes, per_path={"/leads/import": deps.max_import_bytes})
    app.state.stats = deps.stats  # for _stats_period, a dependency declared outside this closure

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _problem(422, "invalid_request", validation_problems(exc.errors(), skip=("body", "query", "path")))

    @app.exception_handler(HTTPException)
    async def unreadable(request: Request, exc: HTTPException) -> Response:
        # FastAPI's answer to a body json.loads raised on other than as malformed JSON: a refusal
        # in the API's shape, which says which field and why, as every other one does.
        if exc.status_code == 400 and exc.detail == _UNPARSED:
            reason = "cannot be read as JSON: not UTF-8, a number of more than 4,300 digits, or nested too deep"
            return _problem(400, "invalid_request", [("body", reason)])
        return await http_exception_handler(request, exc)

    every_token = "\n".join(sorted(token for scoped in deps.tokens.values() for token in scoped))
    sessions = Sessions(session_key(every_token), deps.session_ttl, deps.now)
    app.state.authenticator = authenticator = Authenticator(deps.tokens, deps.auth_limits, sessions=sessions)
    app.state.sessions = sessions  # the daemon refuses here the sessions logged out through another daemon

    @app.exception_handler(Unauthorized)
    async def unauthorized(_request: Request, _exc: Unauthorized) -> JSONResponse:
        response = _problem(401, "unauthorized", [("authorization", "send 'Authorization: Bearer <token>'")])
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(Forbidden)
    async def forbidden(_request: Request, _exc: Forbidden) -> JSONResponse:
        return _problem(403, "forbidden", [("authorization", "this token's scope does not include this endpoint")])

    @app.exception_handler(CsrfRefused)
    async def csrf_refused(_request: Request, _exc: CsrfRefused) -> JSONResponse:
        reason = "missing or wrong; the dashboard sends the one GET /session gives"
        return _problem(403, "csrf", [("x-csrf-token", reason)])

    @app.exception_handler(TooManyFailures)
    async def too_many_failures(_request: Request, exc: TooManyFailures) -> JSONResponse:
        response = _problem(429, "too_many_failures", [("authorization", str(exc))])
        response.headers["Retry-After"] = str(math.ceil(exc.retry_after))
        return response

    intake = [Depends(require_scope(TokenScope.INTAKE))]
    readers = [Depends(require_scope(TokenScope.INTAKE, TokenScope.SUPERVISOR))]
    supervisor = [Depends(require_scope(TokenScope.SUPERVISOR))]
    admin = [Depends(require_scope(TokenScope.ADMIN))]

    async def storage_unavailable(_request: Request, exc: Exception) -> JSONResponse:
        # The storage has logged the outage once; a line per refused request would flood the log.
        response = _problem(503, "storage_unavailable", [("database", f"cannot store now: {exc}")])
        response.headers["Retry-After"] = str(RETRY_AFTER_STORAGE)
        return response

    for error in deps.unavailable:
        app.add_exception_handler(error, storage_unavailable)

    async def open_for_leads() -> None:
        if not deps.intake_open():
            raise _Stopping

    @app.exception_handler(_Stopping)
    async def stopping(_request: Request, _exc: _Stopping) -> JSONResponse:
        response = _problem(503, "stopping", [("service", "leadrouter is stopping; post the lead again")])
        response.headers["Retry-After"] = str(RETRY_AFTER_STOPPING)
        return response

    per_address = KeyedWindow(deps.leads_per_address) if deps.leads_per_address else None

    async def within_address_limit(request: Request) -> None:
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

    intake_token = require_scope(TokenScope.INTAKE)

    async def may_post_lead(request: Request) -> None:
        # One dependency, not three: FastAPI's solving costs ~8 µs a dependency on every request.
        await intake_token(request)
        await within_address_limit(request)
        await open_for_leads()

    intake_scope = frozenset({TokenScope.INTAKE})

    def plain_lead_may_pass(authorization: str, address: str) -> bool:
        """Whether may_post_lead would let the request through, without raising: then the lead is
        counted against its address as it counts it; else nothing is counted, and may_post_lead
        itself, on FastAPI's path, counts what it counts and says why not."""
        if not authenticator.grants(authorization, address, intake_scope) or not deps.intake_open():
            return False
        if per_address is not None:
            now = datetime.now(UTC)
            if per_address.wait(address, now):
                return False
            per_address.add(address, now)
        return True

    async def lead_answer(lead: LeadIn) -> JSONResponse:
        answer = await deps.requests.submit(lead)
        if isinstance(answer, Refused):
            return _refused(answer)
        return _Json(_lead_json(answer.lead), status_code=201 if answer.created else 200)

    @app.post("/leads", dependencies=[Depends(may_post_lead)], status_code=201)
    async def post_lead(body: LeadIn) -> JSONResponse:
        # A plain request is answered before FastAPI's layers (api/lead_post.py), by lead_answer too.
        return await lead_answer(body)

    app.plain_leads = PlainLeadPost(
        app.fastapi, deps.max_body_bytes, plain_lead_may_pass, lead_answer, app.answer_exception
    )

    @app.post("/leads/import", dependencies=[*intake, Depends(open_for_leads)])
    async def import_leads(
        request: Request,
        dry_run: Annotated[bool, Query(description="check every row as for real, store nothing")] = False,
        phone_column: ColumnName = "phone",
        name_column: ColumnName = "name",
        source_column: ColumnName = "source",
        external_id_column: ColumnName = "external_id",
        source: Annotated[str, Query(max_length=100, description="the source of rows without one")] = "",
        delimiter: Annotated[Literal["comma", "semicolon", "tab"], Query(description="between cells")] = "comma",
        first_row: Annotated[
            int, Query(ge=2, le=2**31, description="the number of the body's first data row, for the report")
        ] = 2,
    ) -> JSONResponse:
        """Leads from a CSV file (UTF-8, a header line naming the columns; other columns go into each
        lead's payload), validated row by row as ``POST /leads`` validates one lead. Answers 200 with
        the counts and every bad row's number, column and reason; 413 over ``http.max_import_bytes``."""
        raw = await request.body()
        try:
            text = raw.decode("utf-8-sig")  # spreadsheets save a byte-order mark
        except UnicodeDecodeError as exc:
            return _problem(422, "invalid_file", [("body", f"not UTF-8 (byte {exc.start})")])
        columns = Columns(
            phone=phone_column,
            name=name_column,
            source=source_column,
            external_id=external_id_column,
            default_source=source,
            delimiter=DELIMITERS[delimiter],
        )
        try:
            report = await import_csv(text, columns, deps.importer, dry_run=dry_run, first_row=first_row)
        except ImportRefused as exc:
            return _problem(422, "invalid_file", [("body", str(exc))])
        return JSONResponse(report.as_json())

    async def manager_change(manager_id: str, changes: dict[str, Any] | None, *, create: bool) -> JSONResponse:
        answer = await deps.managers.change_manager(manager_id, changes, create=create)
        if isinstance(answer, Refused):
            return _refused(answer)
        return JSONResponse(answer, status_code=201 if create else 200)

    @app.post("/managers", dependencies=admin, status_code=201)
    async def add_manager(body: ManagerNew) -> JSONResponse:
        """Add a manager to routing.yaml; checked as a reload checks the file, then in force at once
        and published as ``manager.changed``. 422 names the field and the file's rule it breaks."""
        return await manager_change(body.id, body.changes(), create=True)

    @app.patch("/managers/{manager_id}", dependencies=admin)
    async def change_manager(manager_id: ManagerId, body: ManagerPatch) -> JSONResponse:
        """Change a manager's fields in routing.yaml (as POST /managers applies them)."""
        return await manager_change(manager_id, body.changes(), create=False)

    @app.delete("/managers/{manager_id}", dependencies=admin)
    async def remove_manager(manager_id: ManagerId) -> JSONResponse:
        """Remove a manager from routing.yaml; refused while a scenario's pool names him."""
        return await manager_change(manager_id, None, create=False)

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
        answer = await deps.requests.report_valid(lead_id, body)
        if isinstance(answer, Refused):
            return _refused(answer)
        return JSONResponse(_jsonable(_lead_json(answer.lead)))

    @app.get("/managers", dependencies=supervisor)
    async def managers() -> JSONResponse:
        """The managers in force (routing.yaml as last loaded), each with his state now: available,
        ringing, on_call, wrap_up, paused (with its reason) or offline."""
        states = {state["id"]: state for state in deps.manager_states.states()}
        listed = [{**manager, **states.get(manager["id"], {})} for manager in deps.managers.managers()]
        return JSONResponse({"managers": listed})

    @app.post("/managers/{manager_id}/pause", dependencies=supervisor)
    async def pause(manager_id: ManagerPath, body: PauseIn) -> JSONResponse:
        """Take a manager out of rotation until resumed (a call he is on goes on); ``manager.state`` is published."""
        state = await deps.manager_states.pause(manager_id, body.reason)
        if state is None:
            return _problem(404, "not_found", [("manager_id", f"no manager {manager_id!r} in routing.yaml")])
        return JSONResponse(state)

    @app.post("/managers/{manager_id}/resume", dependencies=supervisor)
    async def resume(manager_id: ManagerPath) -> JSONResponse:
        """Back in rotation, whatever paused him (a supervisor, himself, or missed offers)."""
        state = await deps.manager_states.resume(manager_id)
        if state is None:
            return _problem(404, "not_found", [("manager_id", f"no manager {manager_id!r} in routing.yaml")])
        return JSONResponse(state)

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

    @app.get("/stats/states", dependencies=supervisor)
    async def stats_states(period: StatsPeriod, manager_id: Manager = None, form: Format = "json") -> Response:
        """Per manager, seconds in each state (available, ringing, on_call, wrap_up, paused, offline)
        within the period, up to now for one still running; ``known_seconds``: all the time his state was
        known. From the stored state changes: a change lasts until his next."""
        return table("states", period, await deps.stats.states(period, manager_id), form)

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

    def session_json(session: Session) -> JSONResponse:
        body = {"csrf_token": session.csrf_token(sessions.key), "expires": session.expires}
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    @app.post("/session")
    async def login(request: Request, body: LoginIn) -> JSONResponse:
        """The dashboard's login: a supervisor or admin token in, a session cookie out (HttpOnly,
        SameSite=Strict, Secure over TLS) that grants the supervisor scope until ``expires``
        (``http.session_ttl``). State-changing requests riding the cookie send ``csrf_token`` as
        ``X-CSRF-Token``. Wrong tokens count towards the address's failed authentications."""
        address = request.client.host if request.client else "unknown"
        authenticator.check(f"Bearer {body.token}", address, frozenset({TokenScope.SUPERVISOR}))
        session, cookie = sessions.open()
        response = session_json(session)
        # Behind a TLS-terminating proxy the scheme arrives as X-Forwarded-Proto; trusting it
        # can only add the Secure flag, never take it away.
        over_tls = request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "").lower() == "https"
        response.set_cookie(
            SESSION_COOKIE,
            cookie,
            max_age=int(deps.session_ttl),
            path="/",
            httponly=True,
            samesite="strict",
            secure=over_tls,
        )
        return response

    @app.get("/session")
    async def session_info(request: Request) -> JSONResponse:
        """The current session's CSRF token and expiry (the dashboard asks after a page reload)."""
        session = authenticate(request, frozenset({TokenScope.SUPERVISOR}))
        if session is None:
            return _problem(404, "no_session", [("cookie", "a bearer token has no session; POST /session opens one")])
        return session_json(session)

    @app.delete("/session", status_code=204)
    async def logout(request: Request) -> Response:
        """Log out: the cookie is cleared and refused from now on, even if a copy survives."""
        session = authenticate(request, frozenset({TokenScope.SUPERVISOR}))
        response = Response(status_code=204, headers={"Cache-Control": "no-store"})
        if session is not None:
            if deps.logouts is not None:
                await deps.logouts(session.nonce, session.expires)
            sessions.close(session)
            response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    @app.get("/live", dependencies=supervisor, response_class=StreamingResponse)
    async def live() -> StreamingResponse:
        """The live board as server-sent events (``event: board``, JSON data) whenever it changes:
        managers' states and since when, calls in progress, leads waiting, today's counters."""
        return StreamingResponse(
            deps.live(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def recording(name: str) -> Path | str:
        """The file to serve, or the URL to send the player to; raises when there is neither."""
        if deps.recording_redirect is not None:
            found: Path | str | None = redirect_url(deps.recording_redirect, name)
        else:
            found = resolve(deps.recordings, name) if deps.recordings else None
        if found is None:
            raise _NoRecording(name)
        if await deps.stats.recording_in_progress(name):
            raise _RecordingInProgress(name)
        return found

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

    @app.get("/leads/{lead_id}/history", dependencies=readers)
    async def lead_history(lead_id: LeadId) -> JSONResponse:
        """What happened to the lead outside its calls: each duplicate merged into it (what that
        form sent) and each SLA release (both owners and the reason), oldest first."""
        history = await deps.queries.lead_history(lead_id)
        if history is None:
            return _problem(404, "not_found", [("lead_id", f"no lead {lead_id}")])
        entries = [{"kind": entry.kind.value, "at": entry.at, **entry.details} for entry in history]
        return JSONResponse(_jsonable({"lead_id": lead_id, "history": entries}))

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
        """The recording (WAV), seekable with HTTP Range: with a signed link, or with the token. With
        ``recordings.redirect_template`` a 302 to where the files are kept, after the same checks."""
        if expires is None or signature is None:
            await require_scope(TokenScope.SUPERVISOR)(request)  # as `supervisor` does
        elif refused := deps.recording_links.check(name, expires, signature, deps.now()):
            return _problem(403, "forbidden", [("signature", refused)])
        found = await recording(name)
        if isinstance(found, str):
            return RedirectResponse(found, status_code=302, headers={"Cache-Control": "no-store"})
        return FileResponse(found, media_type="audio/wav")

    admin = [Depends(require_scope(TokenScope.ADMIN))]

    @app.get("/webhooks", dependencies=admin)
    async def webhooks(
        subscriber: Annotated[str | None, Query(max_length=64, description="one subscriber's dead events")] = None,
        limit: Annotated[int, Query(ge=1, le=10000, description="dead events listed at most")] = 100,
    ) -> JSONResponse:
        """Each webhook subscriber (configured, or only in the database since a reload removed it):
        events pending and dead, since when its oldest waiting event fails; then the dead events,
        oldest first, with their last error."""
        if deps.webhooks is None:
            return _problem(404, "not_found", [("webhooks", "not available")])
        return JSONResponse(
            _jsonable(
                {
                    "subscribers": await deps.webhooks.overview(),
                    "dead": await deps.webhooks.dead(subscriber, limit),
                }
            )
        )

    @app.post("/webhooks/retry", dependencies=admin)
    async def webhooks_retry(body: WebhookRetryIn) -> JSONResponse:
        """Send dead events again from now, in order per lead; answers how many were re-queued."""
        if deps.webhooks is None:
            return _problem(404, "not_found", [("webhooks", "not available")])
        return JSONResponse({"requeued": await deps.webhooks.retry(body.subscriber, body.event_ids)})

    # The event contract is public like the API's own OpenAPI document: it names no lead or person.
    @app.get("/schema/{path:path}")
    async def schema(path: str) -> Response:
        """The event contract: ``asyncapi.json`` (the MQTT topics), ``events/<type>.json`` (a JSON
        Schema per event, also the webhook bodies')."""
        document = deps.schemas.get(path)
        if document is None:
            return _problem(404, "not_found", [("path", f"no schema {path!r}; start at asyncapi.json")])
        return Response(document, media_type="application/json")

    # Static files only, no data: the page logs in (POST /session) and rides the session cookie.
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
