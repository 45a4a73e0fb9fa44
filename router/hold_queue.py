"""Answered clients waiting on hold, and which free manager each of them gets.

The client who has waited longest is served first. A client whose manager did not answer
goes back to the head of the queue, not the tail, so a manager who lets the phone ring does
not cost the client their place. Each manager is offered a client once per call: the free
manager the scenario's strategy picks among those the call has not tried yet.
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


class HoldQueue:
    def __init__(self) -> None:
        # Insertion order is waiting order; keyed by channel id so a hangup leaves in O(1).
        self._waiting: dict[str, tuple[Call, Scenario]] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def join(self, call: Call, scenario: Scenario) -> None:
        """A client starts waiting, behind everyone already on hold."""
        self._waiting[call.channel_id] = (call, scenario)

    def put_back(self, call: Call, scenario: Scenario) -> None:
        """A manager failed this client: back to the head of the queue."""
        self._waiting = {call.channel_id: (call, scenario), **self._waiting}

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
        for channel_id, (call, scenario) in list(self._waiting.items()):
            if board.free_count == 0:
                break
            manager = board.pick(scenario, call.tried_managers(), now)
            if manager is None:
                continue
            del self._waiting[channel_id]
            assert call.id is not None
            board.give(scenario, manager.id, call.id, now)
            call.connect_to(manager.id, now)
            connections.append(Connection(call, manager))
        return connections
