"""CSV import through the real intake on SQLite: every bad row named, every good row in, once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from bench.lead_import import BAD_KINDS, sample_csv
from dialer.importing import Columns, ImportRefused, import_csv
from dialer.intake import LeadIntake, RateLimit
from router.routing import RoutingPlan
from storage.engine import Database
from storage.schema import lead_history, leads, outbox
from storage.uow import SqlUnitOfWork
from tests.fakes import ManualClock
from tests.router.plans import manager, plan, scenario

PLAN = plan(manager(1))  # one scenario for anyone: duplicates of an open lead within 24 h are merged
EVERY_LEAD = plan(manager(1), scenarios=(scenario(duplicate_window=0.0),))  # no merging: each row a lead


def _intake(
    db: Database, woken: list[int], per_number: RateLimit | None = None, routing: RoutingPlan = PLAN
) -> LeadIntake:
    return LeadIntake(
        uow=lambda: SqlUnitOfWork(db),
        clock=ManualClock(datetime(2026, 11, 26, 9, 0, tzinfo=UTC)),
        routing=lambda: routing,
        default_region="RU",
        on_new_lead=lambda: woken.append(1),
        per_number=per_number,
    )


async def _count(db: Database, table: object) -> int:
    async with db.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())  # type: ignore[arg-type]


async def test_a_thousand_rows_with_one_percent_bad_every_bad_row_named_every_good_row_in(db: Database) -> None:
    text, bad = sample_csv(1000, bad_every=100)
    woken: list[int] = []
    report = await import_csv(text, Columns(), _intake(db, woken), batch_size=50)
    assert report.rows == 1000
    assert {error.row for error in report.errors} == set(bad)  # each bad row, and no good one
    for error in report.errors:
        assert error.reason and error.field == bad[error.row]  # the column the row is wrong in
    assert report.created == 1000 - len(bad) and report.duplicates == 0
    assert await _count(db, leads) == report.created
    assert await _count(db, outbox) == report.created  # a lead.created event for each new lead
    assert len(woken) == 1000 // 50  # the dialer is told once a batch, not once a row

    again = await import_csv(text, Columns(), _intake(db, woken))
    assert again.created == 0 and again.duplicates == 1000 - len(bad)  # same external_ids: found, not doubled
    assert await _count(db, leads) == report.created


async def test_a_dry_run_checks_everything_and_stores_nothing(db: Database) -> None:
    text, bad = sample_csv(200, bad_every=50)
    woken: list[int] = []
    report = await import_csv(text, Columns(), _intake(db, woken), dry_run=True)
    assert report.dry_run and report.created == 200 - len(bad)
    assert {error.row for error in report.errors} == set(bad)
    assert await _count(db, leads) == 0 and await _count(db, outbox) == 0 and woken == []


async def test_a_dry_run_counts_what_a_real_import_would_across_its_batches(db: Database) -> None:
    """Rows repeating an earlier batch's external_id or phone, and a number past its share, are
    reported by the dry run as the import then reports them (batches of 2 rows here)."""
    text = (
        "phone,name,external_id\n"
        "+79161234501,Иван,a-1\n"
        "+79161234502,Ольга,a-2\n"
        "+79161234503,Пётр,a-1\n"  # the external_id of row 2: the lead stored there
        "+79161234501,Иван,a-4\n"  # the phone of row 2's open lead: merged into it
        "+79161234505,Анна,\n"
        "+79161234505,Анна,\n"  # the same number again in the next batch: merged too
        "+79161234507,Борис,\n"
    )
    # Without merging, the repeated numbers would be new leads, past their share of one an hour.
    limited = _intake(db, [], per_number=RateLimit(1, timedelta(hours=1)), routing=EVERY_LEAD)
    every = await import_csv(text, Columns(), limited, dry_run=True, batch_size=2)
    assert (every.created, every.duplicates) == (4, 1)
    assert [(error.row, error.field) for error in every.errors] == [(5, "phone"), (7, "phone")]

    dry = await import_csv(text, Columns(), _intake(db, []), dry_run=True, batch_size=2)
    assert await _count(db, leads) == 0 and await _count(db, lead_history) == 0
    real = await import_csv(text, Columns(), _intake(db, []), batch_size=2)
    assert (dry.created, dry.duplicates, dry.errors) == (real.created, real.duplicates, real.errors) == (4, 3, [])


async def test_columns_are_mapped_the_rest_goes_to_the_payload_and_duplicates_count_once(db: Database) -> None:
    text = (
        "Телефон;ФИО;crm_id;utm;note\n"
        "+7 916 123-45-67;Иван;a-1;spring;\n"
        "\n"  # a blank line: skipped, still counted as a row by a spreadsheet
        "8 916 123 45 68;Ольга;a-1;autumn;same id as row 2\n"
        "8 916 123 45 69;Пётр;a-3;;\n"
    )
    columns = Columns(phone="Телефон", name="ФИО", external_id="crm_id", default_source="fair-2026", delimiter=";")
    report = await import_csv(text, columns, _intake(db, []))
    assert (report.rows, report.created, report.duplicates, report.errors) == (3, 2, 1, [])
    async with db.engine.connect() as conn:
        stored = (await conn.execute(select(leads).order_by(leads.c.id))).mappings().all()
    assert [(row["phone"], row["name"], row["source"], row["external_id"]) for row in stored] == [
        ("+79161234567", "Иван", "fair-2026", "a-1"),
        ("+79161234569", "Пётр", "fair-2026", "a-3"),
    ]
    assert stored[0]["payload"] == {"utm": "spring"}  # empty cells are left out


async def test_a_row_with_the_phone_of_an_open_lead_is_merged_into_it_as_the_scenario_says(db: Database) -> None:
    """PLAN merges a lead from a number that has an open lead of the last 24 h: whether that lead
    came over HTTP before, or from an earlier row of the file, in the same batch or an earlier one."""
    await import_csv("phone,name\n+79161234567,Иван\n", Columns(), _intake(db, []))
    text = (
        "phone,name,utm\n"
        "8 916 123-45-67,Иван,repeat-of-stored\n"
        "+79161230000,Ольга,\n"
        "+79161230000,Ольга,same-batch\n"
        "+79165550000,Пётр,\n"
        "+79165550000,Пётр,later-batch\n"
    )
    report = await import_csv(text, Columns(), _intake(db, []), batch_size=4)
    assert (report.rows, report.created, report.duplicates, report.errors) == (5, 2, 3, [])
    async with db.engine.connect() as conn:
        stored = (await conn.execute(select(leads.c.id, leads.c.phone).order_by(leads.c.id))).all()
        merged = (await conn.execute(select(lead_history.c.lead_id, lead_history.c.kind, lead_history.c.details))).all()
    assert [phone for _, phone in stored] == ["+79161234567", "+79161230000", "+79165550000"]
    ids = {phone: lead_id for lead_id, phone in stored}
    assert sorted((lead_id, kind, details["payload"]["utm"]) for lead_id, kind, details in merged) == sorted(
        [
            (ids["+79161234567"], "duplicate", "repeat-of-stored"),
            (ids["+79161230000"], "duplicate", "same-batch"),
            (ids["+79165550000"], "duplicate", "later-batch"),
        ]
    )


async def test_the_per_number_limit_holds_within_one_batch(db: Database) -> None:
    rows = "".join(f"+79161234567,n{index}\n" for index in range(5))
    # Duplicates off: five leads of one number, of which the limit lets three in.
    intake = _intake(db, [], RateLimit(3, timedelta(hours=1)), EVERY_LEAD)
    report = await import_csv("phone,name\n" + rows, Columns(), intake)
    assert report.created == 3
    assert [(error.row, error.field) for error in report.errors] == [(5, "phone"), (6, "phone")]


@pytest.mark.parametrize(
    ("text", "columns", "says"),
    [
        ("", Columns(), "empty"),
        ("name,source\nIvan,web\n", Columns(), "no 'phone' column"),
        ("tel,name\n+79161234567,Ivan\n", Columns(phone="tel", external_id="crm"), "no 'crm' column"),
        ("phone,phone\n1,2\n", Columns(), "appears twice"),
    ],
)
async def test_a_file_that_does_not_fit_is_refused_before_anything_is_stored(
    db: Database, text: str, columns: Columns, says: str
) -> None:
    with pytest.raises(ImportRefused, match=says):
        await import_csv(text, columns, _intake(db, []))
    assert await _count(db, leads) == 0


def test_the_sample_has_every_kind_of_bad_row() -> None:
    _, bad = sample_csv(1000, bad_every=100)
    assert len(bad) == 10 and set(bad.values()) == {field for field, _ in BAD_KINDS}
