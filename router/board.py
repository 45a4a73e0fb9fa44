"""Which managers are free right now, and who gets the next client.

A manager is offered a client only when the PBX says the phone is idle *and* no call of
ours holds them. Free managers wait in rotation order: whoever has been free longest is
picked first, and a manager who finishes a call goes to the back (round robin under load).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass

from router.pbx_events import DeviceState
from router.routing import Manager, Scenario

_IDLE_STATES = frozenset({DeviceState.FREE, DeviceState.UNKNOWN})


@dataclass(slots=True)
class _Slot:
    manager: Manager
    device: DeviceState = DeviceState.UNKNOWN
    call_id: int | None = None  # the call of ours this manager is reserved for

    @property
    def free(self) -> bool:
        return self.call_id is None and self.device in _IDLE_STATES


class ManagerBoard:
    def __init__(self, managers: Iterable[Manager] = ()) -> None:
        self._slots: dict[str, _Slot] = {}
        self._by_extension: dict[str, str] = {}
        self._free: OrderedDict[str, None] = OrderedDict()
        self.replace(managers)

    def replace(self, managers: Iterable[Manager]) -> None:
        """Take a new manager list (config reload), keeping what we know of those who stay."""
        old = self._slots
        self._slots = {}
        for m in managers:
            slot = old.get(m.id)
            self._slots[m.id] = _Slot(m, slot.device, slot.call_id) if slot else _Slot(m)
        self._by_extension = {s.manager.extension: mid for mid, s in self._slots.items()}
        kept = [mid for mid in self._free if mid in self._slots and self._slots[mid].free]
        fresh = [mid for mid, s in self._slots.items() if s.free and mid not in self._free]
        self._free = OrderedDict.fromkeys(kept + fresh)

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def free_count(self) -> int:
        return len(self._free)

    def manager(self, manager_id: str) -> Manager | None:
        slot = self._slots.get(manager_id)
        return slot.manager if slot else None

    def is_free(self, manager_id: str) -> bool:
        return manager_id in self._free

    def _refresh(self, manager_id: str) -> bool:
        """Keep the free list in step with one slot; True if the manager just became free."""
        slot = self._slots[manager_id]
        if slot.free:
            if manager_id not in self._free:
                self._free[manager_id] = None
                return True
        else:
            self._free.pop(manager_id, None)
        return False

    def device_changed(self, extension: str, state: DeviceState) -> str | None:
        """Record a phone's state; returns the manager id if they just became free."""
        manager_id = self._by_extension.get(extension)
        if manager_id is None:
            return None
        self._slots[manager_id].device = state
        return manager_id if self._refresh(manager_id) else None

    def devices_listed(self, states: Mapping[str, DeviceState], *, keep: Set[str] = frozenset()) -> list[str]:
        """Take the PBX's listing of phones by extension after an AMI gap, when changes were missed.

        A phone the listing leaves out is idle as far as the PBX knows (Asterisk lists only the
        devices whose state it caches). Extensions in ``keep`` changed since the listing was
        asked for and stay as they are. Returns the managers who became free.
        """
        freed = []
        for manager_id, slot in self._slots.items():
            if slot.manager.extension in keep:
                continue
            slot.device = states.get(slot.manager.extension, DeviceState.UNKNOWN)
            if self._refresh(manager_id):
                freed.append(manager_id)
        return freed

    def pick(self, scenario: Scenario, exclude: set[str]) -> Manager | None:
        for manager_id in self._free:
            if manager_id not in exclude and scenario.allows(manager_id):
                return self._slots[manager_id].manager
        return None

    def reserve(self, manager_id: str, call_id: int) -> None:
        self._slots[manager_id].call_id = call_id
        self._free.pop(manager_id, None)

    def release(self, manager_id: str, call_id: int) -> bool:
        """Free a manager from one of our calls; True if they are free to take another."""
        slot = self._slots.get(manager_id)
        if slot is None or slot.call_id != call_id:
            return False
        slot.call_id = None
        return self._refresh(manager_id)

    def snapshot(self) -> list[dict[str, object]]:
        return [
            {"id": mid, "extension": s.manager.extension, "device": s.device.value, "call_id": s.call_id}
            for mid, s in self._slots.items()
        ]
