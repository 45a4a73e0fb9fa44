"""``leadrouter leads import FILE.csv``: a CSV file of leads into the running daemon.

The file goes to the daemon's ``POST /leads/import`` in parts of ``--chunk-rows`` rows, so the
leads are dialled at once by the daemon that owns the dialer (a write straight into the database
would wait for the dialer's next look), rate limits and duplicates are the daemon's, any size
of file fits under the endpoint's limit, and the progress bar moves part by part.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from dialer.importing import ImportReport
from leadrouter.api_client import ApiFailed, ApiTarget

DELIMITERS = {"comma": ",", "semicolon": ";", "tab": "\t"}
BAR_WIDTH = 30


class ImportFailed(Exception):
    """The import stopped: the daemon refused the file or a part, or could not be reached."""


def parts(text: str, delimiter: str, rows: int) -> Iterator[tuple[int, int, str]]:
    """(first row number, rows in it, CSV text with the header) for each part of ``text``.

    Blank lines are kept, so the daemon numbers the rows as a spreadsheet does.
    """
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        header = []
    except csv.Error as exc:
        raise ImportFailed(f"row 1: not CSV: {exc}") from None
    chunk: list[list[str]] = []
    first = 2
    row = 1
    while True:
        try:
            cells = next(reader, None)
        except csv.Error as exc:
            raise ImportFailed(f"row {row + 1}: not CSV: {exc}; nothing from this part on was sent") from None
        if cells is not None:
            row += 1
            chunk.append(cells)
        if chunk and (cells is None or len(chunk) >= rows):
            yield first, len(chunk), _csv_text([header, *chunk], delimiter)
            first += len(chunk)
            chunk = []
        if cells is None:
            if row == 1:  # a header alone (or nothing): let the daemon say what it thinks of it
                yield first, 0, _csv_text([header] if header else [], delimiter)
            return


def _csv_text(rows: list[list[str]], delimiter: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\n")
    for cells in rows:
        writer.writerow(cells)
    return out.getvalue()


def import_file(
    path: Path,
    target: ApiTarget,
    query: dict[str, str],
    *,
    chunk_rows: int,
    progress: Callable[[int, int, ImportReport], None],
) -> ImportReport:
    """Send ``path`` part by part; the report of all parts. Raises ImportFailed (parts before stay imported)."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise ImportFailed(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ImportFailed(f"{path} is not UTF-8 (byte {exc.start}); save it as CSV UTF-8") from None
    delimiter = DELIMITERS[query.get("delimiter", "comma")]
    total = sum(1 for _ in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)) - 1
    report = ImportReport(dry_run=query.get("dry_run") == "true")
    for first, _rows, body in parts(text, delimiter, chunk_rows):
        try:
            answer = target.call("POST", "/leads/import", query={**query, "first_row": str(first)}, csv_body=body)
        except ApiFailed as exc:
            raise ImportFailed(f"rows from {first} on: {exc}") from None
        report.add(ImportReport.from_json(answer))
        progress(report.rows, max(total, 0), report)
    return report


def progress_bar(stream: TextIO) -> Callable[[int, int, ImportReport], None]:
    """A one-line bar on a terminal (stderr, so stdout's report stays clean); nothing elsewhere."""

    def show(done: int, total: int, report: ImportReport) -> None:
        if not stream.isatty():
            return
        filled = BAR_WIDTH * done // total if total else BAR_WIDTH
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        counts = f"created {report.created}  duplicates {report.duplicates}  refused {report.refused}"
        end = "\n" if done >= total else ""
        stream.write(f"\r[{bar}] {done}/{total} rows  {counts}{end}")
        stream.flush()

    return show


def print_report(report: ImportReport, out: TextIO = sys.stdout) -> None:
    for error in report.errors:
        print(f"row {error.row}: {error.field}: {error.reason}", file=out)
    verb = "would be created" if report.dry_run else "created"
    print(
        f"{report.rows} rows: {report.created} leads {verb}, {report.duplicates} duplicates "
        f"(an external_id already known, or merged into an open lead of the same phone), {report.refused} refused",
        file=out,
    )


def write_errors(report: ImportReport, path: Path) -> None:
    """The bad rows as CSV (row, field, reason), for a spreadsheet next to the file."""
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["row", "field", "reason"])
        writer.writerows([error.row, error.field, error.reason] for error in report.errors)
