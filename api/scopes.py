"""The API's token scopes (see api.auth), apart from the web framework: leadrouter.yaml names them,
and config.settings reads that file before the daemon imports FastAPI."""

from __future__ import annotations

from enum import StrEnum


class TokenScope(StrEnum):
    INTAKE = "intake"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"
