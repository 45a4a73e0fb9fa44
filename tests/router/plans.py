"""Plans, scenarios and managers for the domain tests, built in code with only what a test cares about."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from router.board import ManagerBoard
from router.model import Call, Lead
from router.routing import Manager, Pool, RoutingPlan, Scenario

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)  # a Tuesday


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def manager(number: int, **fields: Any) -> Manager:
    return Manager(f"m{number}", f"Manager {number}", str(100 + number), **fields)


def scenario(name: str = "s", *managers: str, **fields: Any) -> Scenario:
    """A scenario whose pool is the managers named (everyone if none)."""
    policy: dict[str, Any] = {"hold_limit": 30, "ring_timeout": 15, "max_attempts": 3, "retry_delays": (60,)}
    return Scenario(name=name, **{**policy, "pool": Pool(managers=frozenset(managers)), **fields})


ANYONE = scenario()


def offered(board: ManagerBoard, chosen: Scenario = ANYONE, now: datetime = T0) -> list[str]:
    """The free managers in the order the board offers them a client: its pick, asked again and again."""
    picked: list[str] = []
    while (found := board.pick(chosen, set(picked), now)) is not None:
        picked.append(found.id)
    return picked


def plan(*managers: Manager, scenarios: tuple[Scenario, ...] = (ANYONE,), timezone: tzinfo = UTC) -> RoutingPlan:
    return RoutingPlan(managers=managers, scenarios=scenarios, timezone=timezone)


def talked(manager_id: str, seconds: float, call_id: int = 1) -> Call:
    """A call the manager talked in for ``seconds``, ended at T0 + seconds."""
    call = Call(lead_id=1, attempt=1, scenario="s", channel_id=f"lr-{call_id}", phone="+79161234567",
                started_at=T0, id=call_id)  # fmt: skip
    call.client_answered(T0)
    call.connect_to(manager_id, T0)
    call.bridged(T0)
    call.hung_up(T0 + timedelta(seconds=seconds), 16)
    return call


def lead(phone: str = "+79161234567", source: str = "site", **payload: Any) -> Lead:
    return Lead(phone=phone, name="Иван", source=source, external_id=None, payload=payload, created_at=T0, id=7)
