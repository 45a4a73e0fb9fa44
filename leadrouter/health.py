"""What /health says: each part's state, and one status that ops alert on and load balancers route by.

- ``ok``: every part is up.
- ``degraded`` (HTTP 200): the daemon takes and stores leads, but something it talks to is
  away (the PBX, the broker): dials or events wait and nothing is lost. Restarting would not
  help, and refusing leads would lose them, so a load balancer keeps sending them.
- ``unhealthy`` (HTTP 503): a lead posted now could not be stored (the database fails), or a
  background task died (systemd restarts the daemon: the watchdog is no longer fed).
- ``stopping`` (HTTP 503): SIGTERM was received; leads go elsewhere while live calls finish.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


class Severity(enum.IntEnum):
    OK = 0
    DEGRADED = 1
    UNHEALTHY = 2


@dataclass(frozen=True)
class Check:
    name: str
    state: str
    severity: Severity = Severity.OK
    detail: dict[str, Any] = field(default_factory=dict)


def assess(checks: Iterable[Check], *, stopping: bool) -> tuple[bool, dict[str, Any]]:
    """Whether the daemon serves (HTTP 200) and the /health body: the overall status and every check."""
    checks = list(checks)
    worst = max((check.severity for check in checks), default=Severity.OK)
    if stopping:
        status = "stopping"
    else:
        status = {Severity.OK: "ok", Severity.DEGRADED: "degraded", Severity.UNHEALTHY: "unhealthy"}[worst]
    body = {
        "status": status,
        "checks": {check.name: {"state": check.state, **check.detail} for check in checks},
    }
    return status in ("ok", "degraded"), body
