"""The API app in-process over stand-in ports: what reaches ``create_app`` is what the daemon's
LeadRequests would give, without a database, a PBX or a server."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message

from api.app import ApiDeps, create_app
from api.auth import AuthLimits
from api.scopes import TokenScope
from dialer.intake import InvalidPayload, LeadInput, RateLimit, TooManyLeads
from dialer.requests import LeadRequests
from recordings.access import RecordingLinks
from router.model import Lead
from router.phone import InvalidPhone

INTAKE = "intake-token-0123456789"
SUPERVISOR = "supervisor-token-0123456789"
MAX_BODY = 4096


class Unavailable(Exception):
    """The storage's 'cannot serve now', as deps.unavailable names it."""


@dataclass
class Intake:
    """Stores leads in a dict by external_id; a phone starting with 'x' is invalid, 'down' raises Unavailable."""

    stored: dict[str, Lead] = field(default_factory=dict)
    submitted: int = 0

    async def submit(self, data: LeadInput) -> tuple[Lead, bool]:
        self.submitted += 1
        if data.phone.startswith("x"):
            raise InvalidPhone("not part of a phone number")
        if data.phone == "down":
            raise Unavailable("the disk is full")
        if data.phone == "busy":
            raise TooManyLeads("this number has its share", 30.5)
        if data.payload.get("bad"):
            raise InvalidPayload("payload too deep")
        if data.external_id is not None and data.external_id in self.stored:
            return self.stored[data.external_id], False
        lead = Lead(
            phone=data.phone,
            name=data.name,
            source=data.source,
            external_id=data.external_id,
            payload=data.payload,
            created_at=datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
            id=len(self.stored) + 1,
        )
        if data.external_id is not None:
            self.stored[data.external_id] = lead
        return lead, True


class _Unused:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"POST /leads does not use {name}")


@dataclass
class Rig:
    app: FastAPI
    intake: Intake
    open: list[bool]


class Raising:
    """A LeadRequestsPort whose submit raises (what LeadRequests never lets out, or a bug)."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    async def submit(self, _lead: object) -> None:
        raise self.exc


def rig(*, leads_per_address: RateLimit | None = None, max_failures: int = 20, raising: Exception | None = None) -> Rig:
    intake = Intake()
    is_open = [True]
    requests: Any = LeadRequests(intake, _Unused(), is_open=lambda: is_open[0], unavailable=(Unavailable,))
    if raising is not None:
        requests = Raising(raising)
    tokens: Mapping[TokenScope, list[str]] = {TokenScope.INTAKE: [INTAKE], TokenScope.SUPERVISOR: [SUPERVISOR]}
    deps = ApiDeps(
        requests=requests,
        queries=_Unused(),  # type: ignore[arg-type]
        managers=_Unused(),  # type: ignore[arg-type]
        stats=_Unused(),  # type: ignore[arg-type]
        live=_Unused(),  # type: ignore[arg-type]
        recordings=Path("/nonexistent"),
        recording_redirect=None,
        recording_links=RecordingLinks(b"k" * 32, 60.0),
        now=lambda: 1.8e9,
        health=lambda: (True, {}),
        metrics=_Unused(),  # type: ignore[arg-type]
        intake_open=lambda: is_open[0],
        manager_states=_Unused(),  # type: ignore[arg-type]
        unavailable=(Unavailable,),
        tokens=tokens,
        auth_limits=AuthLimits(max_failures=max_failures),
        max_body_bytes=MAX_BODY,
        importer=_Unused(),  # type: ignore[arg-type]
        max_import_bytes=MAX_BODY * 10,
        session_ttl=3600.0,
        leads_per_address=leads_per_address,
    )
    return Rig(create_app(deps), intake, is_open)


def scope(body: bytes, headers: list[tuple[bytes, bytes]], *, client: str = "10.0.0.1") -> dict[str, Any]:
    """A POST /leads as uvicorn's httptools protocol hands it to the app."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8080),
        "client": (client, 40000),
        "scheme": "http",
        "method": "POST",
        "root_path": "",
        "path": "/leads",
        "raw_path": b"/leads",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8080"), *headers, (b"content-length", str(len(body)).encode())],
        "state": {},
    }


async def call(
    app: ASGIApp, request: dict[str, Any], body: bytes | list[Message], sent: list[Message] | None = None
) -> list[Message]:
    """The messages ``app`` sends (into ``sent``, if given) for one request whose body arrives in one
    piece, or as the messages given."""
    sent = [] if sent is None else sent
    chunks = [{"type": "http.request", "body": body, "more_body": False}] if isinstance(body, bytes) else list(body)

    async def receive() -> Message:
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(request, receive, send)
    return sent
