"""Managers changed from outside (API, CLI): an edit of routing.yaml itself.

The file stays the one place the managers live (README, "Managers from outside", says why not
the database): a change is made to the file's text with its comments and layout kept (a
ruamel.yaml round trip), the result is checked exactly as a reload checks a file (in the reload
process, with ``file:line:col`` problems), and only a file that passes replaces the old one,
atomically. Applying it is then the daemon's ordinary reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import io
import os
import re
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from config.problems import Problem
from config.routing import RoutingSource
from router.routing import RoutingPlan

if TYPE_CHECKING:  # ruamel.yaml is imported by the first edit: most daemons never make one
    from ruamel.yaml import YAML


class Change(enum.StrEnum):
    ADDED = "added"
    CHANGED = "changed"
    REMOVED = "removed"


class NoSuchManager(LookupError):
    pass


class ManagerExists(LookupError):
    pass


def _yaml() -> YAML:
    from ruamel.yaml import YAML

    yaml = YAML()  # round trip: comments, order and quoting survive
    yaml.preserve_quotes = True
    yaml.width = 4096
    return yaml


def edited(text: str, manager_id: str, changes: dict[str, Any] | None, *, create: bool = False) -> tuple[str, Change]:
    """The routing file's text with the manager added (``create``), changed, or removed (``changes`` None).

    ``changes``: fields to set; a None value removes the key (its default applies).

    Raises NoSuchManager, ManagerExists, or ValueError for a file that is no YAML or has no
    managers list to edit.
    """
    from ruamel.yaml import YAMLError

    try:
        return _edited(text, manager_id, changes, create=create)
    except YAMLError as exc:  # as ValueError: callers need not import ruamel.yaml to catch it
        raise ValueError(str(exc)) from exc


def _edited(text: str, manager_id: str, changes: dict[str, Any] | None, *, create: bool) -> tuple[str, Change]:
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    yaml = _yaml()
    document = yaml.load(text)
    managers = document.get("managers") if isinstance(document, CommentedMap) else None
    if not isinstance(managers, CommentedSeq):
        raise ValueError("the routing file has no managers list to edit")
    index = next(
        (i for i, entry in enumerate(managers) if isinstance(entry, dict) and entry.get("id") == manager_id), None
    )
    if create:
        if index is not None:
            raise ManagerExists(manager_id)
        entry = CommentedMap(id=manager_id)
        managers.append(entry)
        change = Change.ADDED
    elif index is None:
        raise NoSuchManager(manager_id)
    elif changes is None:
        del managers[index]
        change = Change.REMOVED
    else:
        entry = managers[index]
        change = Change.CHANGED
    if changes is not None:
        for key, value in changes.items():
            if value is None:
                entry.pop(key, None)
            else:
                entry[key] = value
    out = io.StringIO()
    yaml.dump(document, out)
    return out.getvalue(), change


async def checked_write(
    routing: RoutingSource, text: str, *, max_bytes: int, time_cap: float
) -> RoutingPlan | list[Problem]:
    """Replace the routing file with ``text`` if it passes the reload's check, and return its plan;
    else its problems.

    The candidate is written beside the file and checked by the reload process; the rename that
    puts it in place is atomic, so a crash leaves the old file or the new one, never half of one.
    Raises OSError when the folder cannot be written.
    """
    path = routing.path
    candidate = await asyncio.to_thread(_write_candidate, path, text)
    try:
        checked = RoutingSource(candidate, routing.plan)
        problems = await checked.reload_off_loop(max_bytes=max_bytes, time_cap=time_cap)
        if problems:
            # Named as the file they would have been in.
            return [replace(problem, file=str(path)) for problem in problems]
        await asyncio.to_thread(os.replace, candidate, path)
        return checked.plan
    finally:
        await asyncio.to_thread(_remove, candidate)


def _write_candidate(path: Path, text: str) -> Path:
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".candidate", dir=path.parent)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(text)
    with contextlib.suppress(OSError):
        os.chmod(name, path.stat().st_mode & 0o777)  # the file's mode, not mkstemp's 0600
    return Path(name)


def _remove(candidate: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        candidate.unlink()


def field_of(problem: Problem) -> str:
    """The manager field a problem names (``managers[3].extension`` -> ``extension``), else its path."""
    field = re.fullmatch(r"managers\[\d+\]\.(.+)", problem.path)
    return field.group(1) if field else problem.path or "routing_file"
