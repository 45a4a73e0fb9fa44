"""CSV import: many leads at once, each row validated as ``POST /leads`` validates one lead.

Columns are mapped to the lead's fields (``Columns``); every other non-empty cell goes into the
lead's payload under its column's name, so a CRM export keeps what it carried. A bad row is
reported with its row number (as a spreadsheet shows it: the header is row 1), the column
and the reason, and costs nothing to the rows around it. A repeated ``external_id`` (in the
file, or already stored) is a duplicate: the stored lead stays, as on HTTP; so is a row the
scenario merges into an open lead of the same phone.

Rows are stored in batches, one transaction each, with the event loop free between them:
an import of thousands of rows never holds the database or the loop long enough to keep the
dialer from its calls.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from dialer.intake import YIELD_EVERY, DryRun, LeadInput, Submitted
from dialer.requests import LeadIn, intake_refusal, validation_problems

BATCH_SIZE = 50  # rows per transaction: a few milliseconds of phone parsing and SQL each


class BatchIntake(Protocol):
    async def submit_batch(self, batch: Sequence[LeadInput], *, dry_run: DryRun | None = None) -> list[Submitted]: ...


class ImportRefused(ValueError):
    """The file as a whole cannot be imported (no phone column, not CSV...); nothing was stored."""


@dataclass(frozen=True)
class Columns:
    """Which CSV column holds each of the lead's fields."""

    phone: str = "phone"
    name: str = "name"
    source: str = "source"
    external_id: str = "external_id"
    default_source: str = ""  # the source of rows without one (a campaign's name, say)
    delimiter: str = ","

    def mapped(self) -> dict[str, str]:
        """Lead field -> column."""
        return {"phone": self.phone, "name": self.name, "source": self.source, "external_id": self.external_id}


@dataclass(frozen=True)
class RowError:
    row: int
    field: str  # the column, as the file names it
    reason: str


@dataclass
class ImportReport:
    dry_run: bool
    rows: int = 0  # data rows read (blank lines not counted)
    created: int = 0  # new leads (in a dry run: would be)
    duplicates: int = 0  # rows whose external_id was known, or merged into an open lead of their phone
    errors: list[RowError] = field(default_factory=list)

    @property
    def refused(self) -> int:
        return len({error.row for error in self.errors})

    def add(self, other: ImportReport) -> None:
        """Add a later part of the same file (the CLI sends a big file in parts)."""
        self.rows += other.rows
        self.created += other.created
        self.duplicates += other.duplicates
        self.errors.extend(other.errors)

    def as_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "rows": self.rows,
            "created": self.created,
            "duplicates": self.duplicates,
            "refused": self.refused,
            "errors": [{"row": e.row, "field": e.field, "reason": e.reason} for e in self.errors],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImportReport:
        errors = [RowError(e["row"], e["field"], e["reason"]) for e in data["errors"]]
        return cls(data["dry_run"], data["rows"], data["created"], data["duplicates"], errors)


async def import_csv(
    text: str,
    columns: Columns,
    intake: BatchIntake,
    *,
    dry_run: bool = False,
    first_row: int = 2,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Import ``text`` (a header line, then rows); ``first_row``: the number of the first data row.

    Raises ImportRefused before storing anything if the header does not fit the columns.
    """
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=columns.delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise ImportRefused("the file is empty: it needs a header line naming the columns") from None
    except csv.Error as exc:
        raise ImportRefused(f"row 1: {exc}") from None
    _check_header(header, columns)
    report = ImportReport(dry_run)
    stored_so_far = DryRun() if dry_run else None  # a dry run's batches, as if kept
    pending: list[tuple[int, LeadInput]] = []
    row = first_row - 1
    while True:
        row += 1
        try:
            cells = next(reader, None)
        except csv.Error as exc:
            # A broken quote swallows the rest of the file: say where, keep what was read.
            report.errors.append(RowError(row, "row", f"not CSV from here on: {exc}"))
            report.rows += 1
            break
        if cells is None:
            break
        if not cells:
            continue  # a blank line
        report.rows += 1
        if report.rows % YIELD_EVERY == 0:
            await asyncio.sleep(0)  # validating rows is pure CPU: the loop's turn every few
        lead = _lead(row, header, cells, columns, report.errors)
        if lead is not None:
            pending.append((row, lead))
        if len(pending) >= batch_size:
            await _store(pending, intake, columns, report, stored_so_far)
            pending = []
            if progress is not None:
                progress(report.rows)
    if pending:
        await _store(pending, intake, columns, report, stored_so_far)
    if progress is not None:
        progress(report.rows)
    report.errors.sort(key=lambda error: error.row)
    return report


def _check_header(header: list[str], columns: Columns) -> None:
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise ImportRefused(f"row 1: the column {name!r} appears twice")
        seen.add(name)
    if columns.phone not in seen:
        raise ImportRefused(f"row 1: no {columns.phone!r} column (the header has {', '.join(map(repr, header))})")
    for lead_field, column in columns.mapped().items():
        if column not in seen and column != lead_field:  # a column asked for by name must be there
            raise ImportRefused(f"row 1: no {column!r} column for the lead's {lead_field}")


def _lead(row: int, header: list[str], cells: list[str], columns: Columns, errors: list[RowError]) -> LeadInput | None:
    if len(cells) != len(header):
        errors.append(RowError(row, "row", f"{len(cells)} cells where the header has {len(header)} columns"))
        return None
    values = dict(zip(header, cells, strict=True))
    mapped = columns.mapped()
    source = values.get(columns.source, "").strip() or columns.default_source
    body = {
        "phone": values[columns.phone],
        "name": values.get(columns.name, ""),
        "source": source,
        "external_id": values.get(columns.external_id, "").strip() or None,
        "payload": {name: value for name, value in values.items() if value and name not in mapped.values()},
    }
    try:
        return LeadIn.model_validate(body).as_input()
    except ValidationError as exc:
        errors.extend(
            RowError(row, _column(problem_field, mapped), reason)
            for problem_field, reason in validation_problems(exc.errors())
        )
        return None


def _column(lead_field: str, mapped: dict[str, str]) -> str:
    """The file's name for a field the lead's validation names (payload.x: the column x)."""
    if lead_field.startswith("payload."):
        return lead_field.removeprefix("payload.").split(".")[0]
    return mapped.get(lead_field, lead_field)


async def _store(
    pending: list[tuple[int, LeadInput]],
    intake: BatchIntake,
    columns: Columns,
    report: ImportReport,
    dry_run: DryRun | None,
) -> None:
    results = await intake.submit_batch([lead for _, lead in pending], dry_run=dry_run)
    mapped = columns.mapped()
    for (row, _), result in zip(pending, results, strict=True):
        if isinstance(result, tuple):
            if result[1]:
                report.created += 1
            else:
                report.duplicates += 1
            continue
        for problem_field, reason in intake_refusal(result).problems:
            report.errors.append(RowError(row, _column(problem_field, mapped), reason))
    await asyncio.sleep(0)  # the dialer's turn, whatever the storage's awaits gave it
