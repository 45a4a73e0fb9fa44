"""Answered clients waiting on hold, and which free manager each of them gets.

The client who has waited longest is served first. A client whose manager did not answer
goes back to the head of the queue, not the tail, so a manager who lets the phone ring does
not cost the client their place. Each manager is offered a client once per call.

Who may take a client changes while he waits (TaskRouter's "targets with timeouts"): a repeat
lead's owner alone during the scenario's ``owner_wait`` (owner first), then the scenario's pool,
joined by each overflow pool once the client has waited its ``after``. The hold limit caps it all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from router.board import ManagerBoard
from router.model import Call
from router.routing import Manager, Scenario


@dataclass(frozen=True, slots=True)
class Connection:
    """A client taken off hold and the manager whose phone is to ring for them."""

    call: Call
    manager: Manager


@dataclass(frozen=True, slots=True)
class _Waiting:
    call: Call
    scenario: Scenario
    owner_id: str | None  # the owner of the client's phone, offered him first under owner first


def _offer(
    board: ManagerBoard, call: Call, scenario: Scenario, owner_id: str | None, now: datetime
) -> Connection | None:
    """The manager this waiting client gets now, if any: reserved on the board, the call CONNECTING."""
    assert call.id is not None and call.answered_at is not None
    waited = (now - call.answered_at).total_seconds()
    tried = call.tried_managers()
    first = scenario.owner_first
    if first is not None and owner_id is not None and owner_id not in tried and waited < first.wait:
        owner = board.manager(owner_id)
        if owner is not None and board.is_free(owner_id):
            board.reserve(owner_id, call.id)  # not a turn of the scenario's strategy: his own client
            call.connect_to(owner_id, now)
            return Connection(call, owner)
        if board.available(owner_id):
            return None  # on a call: kept for him until owner_wait has passed
        # Off shift, unregistered or at capacity: the pool takes the client at once.
    for level in range(scenario.levels_open(waited)):
        manager = board.pick(scenario, tried, now, level)
        if manager is not None:
            board.give(scenario, manager.id, call.id, now, level)
            call.connect_to(manager.id, now)
            return Connection(call, manager)
    return None


class HoldQueue:
    def __init__(self) -> None:
        # Insertion order is waiting order; keyed by channel id so a hangup leaves in O(1).
        self._waiting: dict[str, _Waiting] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def join(self, call: Call, scenario: Scenario, owner_id: str | None = None) -> None:
        """A client starts waiting, behind everyone already on hold."""
        self._waiting[call.channel_id] = _Waiting(call, scenario, owner_id)

    def put_back(self, call: Call, scenario: Scenario, owner_id: str | None = None) -> None:
        """A manager failed this client: back to the head of the queue."""
        self._waiting = {call.channel_id: _Waiting(call, scenario, owner_id), **self._waiting}

    def leave(self, channel_id: str) -> None:
        """The client hung up or was given up on; nothing happens if they were not waiting."""
        self._waiting.pop(channel_id, None)

    def connect(self, board: ManagerBoard, now: datetime) -> list[Connection]:
        """Give free managers to waiting clients, longest waiting first.

        Each client served leaves the queue, its call moves to CONNECTING and its manager is
        reserved on the board, so the next client cannot be given the same manager. A client
        for whom no free manager fits keeps their place and lets the next one be served.
        """
        connections: list[Connection] = []
        for channel_id, waiting in list(self._waiting.items()):
            if board.free_count == 0:
                break
            connection = _offer(board, waiting.call, waiting.scenario, waiting.owner_id, now)
            if connection is not None:
                del self._waiting[channel_id]
                connections.append(connection)
        return connections
