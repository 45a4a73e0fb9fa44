"""Supervisors' figures on hand-built calls, each figure computed by hand in the comments.

The company's zone is Moscow (UTC+3, no DST): its 24 November runs 23rd 21:00 to 24th 21:00 UTC.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import insert

from router.routing import Manager
from router.stats import (
    Fairness,
    GroupFigures,
    HourFigures,
    Period,
    Spread,
    StatsReport,
    build_report,
    hours_of_day,
    manager_figures,
    state_rows,
)
from storage.engine import Database
from storage.schema import call_legs, calls, leads, manager_states
from storage.stats import SqlStats

MOSCOW = ZoneInfo("Europe/Moscow")
BERLIN = ZoneInfo("Europe/Berlin")
MANAGERS = (Manager("anna", "Anna", "101"), Manager("boris", "Boris", "102"), Manager("vera", "Vera", "103"))


def at(hhmmss: str, day: int = 24, month: int = 11) -> datetime:
    h, m, s = (int(part) for part in hhmmss.split(":"))
    return datetime(2026, month, day, h, m, s, tzinfo=UTC)


async def add_lead(conn: Any, lead_id: int, source: str, created: datetime, **kw: Any) -> None:
    row = {
        "id": lead_id,
        "phone": f"+7916000000{lead_id}",
        "name": "",
        "source": source,
        "payload": {},
        "status": "new",
        "attempts": 0,
        "created_at": created,
    } | kw
    await conn.execute(insert(leads).values(row))


async def add_call(
    conn: Any, call_id: int, lead_id: int, started: datetime, scenario: str = "default", **kw: Any
) -> None:
    row = {
        "id": call_id,
        "lead_id": lead_id,
        "attempt": 1,
        "scenario": scenario,
        "channel_id": f"lr-{call_id}",
        "phone": "+79160000000",
        "state": "ended",
        "started_at": started,
    } | kw
    await conn.execute(insert(calls).values(row))


async def _leg(conn: Any, call_id: int, leg_no: int, manager: str, started: datetime, result: str, **kw: Any) -> None:
    row = {"call_id": call_id, "leg_no": leg_no, "manager_id": manager, "started_at": started, "result": result} | kw
    await conn.execute(insert(call_legs).values(row))


async def company_day(db: Database) -> None:
    async with db.write() as conn:
        # Lead 1 (site, 10:00 MSK): dialled after 30 s, answered after 40 s; Boris did not pick up,
        # Anna did and talked 300 s from 07:01. She owns it; the CRM says won.
        await add_lead(conn, 1, "site", at("07:00:00"), status="assigned", owner_id="anna", outcome="won")
        await add_call(
            conn,
            1,
            1,
            at("07:00:30"),
            answered_at=at("07:00:40"),
            bridged_at=at("07:01:00"),
            ended_at=at("07:06:00"),
            manager_id="anna",
            talk_seconds=300.0,
            disposition="completed",
        )
        await _leg(conn, 1, 1, "boris", at("07:00:45"), "no_answer", ended_at=at("07:00:50"))
        await _leg(conn, 1, 2, "anna", at("07:00:50"), "answered", answered_at=at("07:01:00"))
        # Lead 2 (site): dialled after 120 s, busy; never reached, scheduled again.
        await add_lead(conn, 2, "site", at("07:10:00"), status="scheduled")
        await add_call(conn, 2, 2, at("07:12:00"), ended_at=at("07:12:05"), disposition="busy")
        # Lead 3 (ads, 23:00 MSK) in scenario vip: dialled after 2400 s, answered after 2410 s, Boris
        # bridged at 23:50 MSK after 3000 s and talked until 00:20: 600 s on the 24th, 1200 s on the 25th.
        await add_lead(conn, 3, "ads", at("20:00:00"), status="assigned", owner_id="boris", outcome="lost")
        await add_call(
            conn,
            3,
            3,
            at("20:40:00"),
            "vip",
            answered_at=at("20:40:10"),
            bridged_at=at("20:50:00"),
            ended_at=at("21:20:00"),
            manager_id="boris",
            talk_seconds=1800.0,
        )
        await _leg(conn, 3, 1, "boris", at("20:49:50"), "answered", answered_at=at("20:50:00"))
        # Lead 4 (ads): never dialled yet.
        await add_lead(conn, 4, "ads", at("08:00:00"))
        # On the 25th, Moscow time: a lead Vera missed (busy phone) and Anna still talking to.
        await add_lead(conn, 5, "site", at("06:00:00", 25), owner_id="anna")
        await add_call(
            conn,
            5,
            5,
            at("06:00:05", 25),
            answered_at=at("06:00:10", 25),
            bridged_at=at("06:00:30", 25),
            manager_id="anna",
        )
        await _leg(conn, 5, 1, "vera", at("06:00:12", 25), "busy")
        await _leg(conn, 5, 2, "anna", at("06:00:20", 25), "answered", answered_at=at("06:00:30", 25))
        if conn.dialect.name == "postgresql":  # ids given by hand: the daemon's next ones come after them
            for table in ("leads", "calls"):
                await conn.exec_driver_sql(f"SELECT setval('{table}_id_seq', (SELECT max(id) FROM {table}))")
        await conn.commit()


async def _report(db: Database, period: Period, manager_id: str | None = None) -> StatsReport:
    stats = SqlStats(db)
    figures = manager_figures(MANAGERS, *await stats.manager_rows(period, manager_id))
    return build_report(
        period, figures, await stats.journeys(period), hours_of_day(await stats.quarters(period), period.zone)
    )


async def test_a_day_per_manager_source_scenario_speed_fairness_and_hour(db: Database) -> None:
    await company_day(db)
    report = await _report(db, Period.of_days(date(2026, 11, 24), date(2026, 11, 24), MOSCOW))
    anna, boris, vera = report.managers
    assert (anna.offers, anna.answered, anna.missed, anna.calls) == (1, 1, 0, 1)
    assert (anna.talk_seconds, anna.average_talk_seconds, anna.longest_talk_seconds) == (300, 300, 300)
    assert (anna.first_call, anna.last_call) == (at("07:01:00"), at("07:01:00"))
    assert (anna.leads_owned, anna.won, anna.lost) == (1, 1, 0)
    # Boris: two rings (one missed), one call; 600 of its 1800 s fell on the 24th.
    assert (boris.offers, boris.answered, boris.missed, boris.calls) == (2, 1, 1, 1)
    assert (boris.talk_seconds, boris.average_talk_seconds, boris.longest_talk_seconds) == (600, 1800, 1800)
    assert (boris.leads_owned, boris.won, boris.lost) == (1, 0, 1)
    assert (vera.offers, vera.calls, vera.talk_seconds, vera.first_call) == (0, 0, 0, None)

    assert report.sources == [GroupFigures("ads", 2, 1, 1, 0), GroupFigures("site", 2, 1, 1, 1)]
    assert [(g.reached_pct, g.assigned_pct, g.won_pct) for g in report.sources] == [(50, 50, 0), (50, 50, 50)]
    assert report.scenarios == [
        GroupFigures("(not dialled)", 1, 0, 0, 0),
        GroupFigures("default", 2, 1, 1, 1),
        GroupFigures("vip", 1, 1, 1, 0),
    ]
    # Nearest rank over [30, 120, 2400], [40, 2410] and [60, 3000] seconds.
    assert report.speed_to_lead.first_dial == Spread(3, 120, 2400, 2400)
    assert report.speed_to_lead.client_answered == Spread(2, 40, 2410, 2410)
    assert report.speed_to_lead.manager_bridged == Spread(2, 60, 3000, 3000)
    assert (report.never_reached.leads, report.never_reached.lead_ids) == (2, [2, 4])
    assert report.never_reached.by_status == {"new": 1, "scheduled": 1}
    # Anna and Boris (both weight 50) own one lead each, Vera none: 50 % against 0 %.
    assert report.fairness == [Fairness(50, 3, 2, 50.0, 0.0, None)]
    # 10:00-10:59 MSK: two dials (07:00 and 07:12 UTC), one answered and talked; 23:00: lead 3's.
    assert report.hours[10] == HourFigures(10, 2, 1, 1, 300)
    assert report.hours[23] == HourFigures(23, 1, 1, 1, 1800)
    assert sum(h.calls for h in report.hours) == 3


async def test_a_call_across_midnight_gives_each_day_its_talk_and_one_day_the_call(db: Database) -> None:
    await company_day(db)
    stats = SqlStats(db)
    day25 = Period.of_days(date(2026, 11, 25), date(2026, 11, 25), MOSCOW)
    boris = manager_figures(MANAGERS, *await stats.manager_rows(day25))[1]
    assert (boris.calls, boris.talk_seconds, boris.longest_talk_seconds) == (0, 1200, 0)
    both = manager_figures(
        MANAGERS, *await stats.manager_rows(Period.of_days(date(2026, 11, 24), date(2026, 11, 25), MOSCOW))
    )
    assert (both[1].calls, both[1].talk_seconds) == (1, 1800)
    # Anna's call of the 25th is still up: counted, its talk not yet (it is stored at hangup).
    assert (both[0].calls, both[0].talk_seconds, both[0].offers) == (2, 300, 2)
    assert (both[2].offers, both[2].missed) == (1, 1)


async def test_one_manager_only(db: Database) -> None:
    await company_day(db)
    talk, offers, owned = await SqlStats(db).manager_rows(
        Period.of_days(date(2026, 11, 24), date(2026, 11, 24), MOSCOW), "boris"
    )
    assert [row.manager_id for row in [*talk, *offers, *owned]] == ["boris", "boris", "boris"]


async def test_an_empty_period_lists_every_manager_with_zeros(db: Database) -> None:
    await company_day(db)
    report = await _report(db, Period.of_days(date(2026, 12, 1), date(2026, 12, 31), MOSCOW))
    assert [(m.manager_id, m.calls, m.offers, m.talk_seconds) for m in report.managers] == [
        ("anna", 0, 0, 0),
        ("boris", 0, 0, 0),
        ("vera", 0, 0, 0),
    ]
    assert report.sources == report.scenarios == report.fairness == []
    assert report.speed_to_lead.first_dial == Spread(0, None, None, None)
    assert report.never_reached.leads == 0
    assert all(h.calls == 0 for h in report.hours)


async def test_the_day_clocks_go_back_has_25_hours_and_both_ends_count(db: Database) -> None:
    # Berlin left summer time at 03:00 CEST on 25 October 2026: that day ran 22:00 UTC on the
    # 24th to 23:00 UTC on the 25th.
    day = Period.of_days(date(2026, 10, 25), date(2026, 10, 25), BERLIN)
    assert (day.start, day.end) == (at("22:00:00", 24, 10), at("23:00:00", 25, 10))
    async with db.write() as conn:
        await add_lead(conn, 1, "site", at("21:59:00", 24, 10))
        for call_id, started in ((1, at("22:30:00", 24, 10)), (2, at("22:30:00", 25, 10))):
            await add_call(
                conn,
                call_id,
                1,
                started,
                answered_at=started,
                bridged_at=started,
                manager_id="anna",
                ended_at=started + timedelta(seconds=60),
                talk_seconds=60.0,
            )
        await conn.commit()
    report = await _report(db, day)
    assert (report.managers[0].calls, report.managers[0].talk_seconds) == (2, 120)
    # 00:30 CEST and 23:30 CET.
    assert (report.hours[0].calls, report.hours[23].calls) == (1, 1)
    assert report.sources == []  # the lead came in on the 24th


def test_named_periods_are_calendar_ones() -> None:
    thursday = date(2026, 11, 26)
    week = Period.named("week", thursday, MOSCOW)
    assert (week.first, week.last) == (date(2026, 11, 23), date(2026, 11, 29))
    month = Period.named("month", date(2026, 12, 31), MOSCOW)
    assert (month.first, month.last, month.start) == (date(2026, 12, 1), date(2026, 12, 31), at("21:00:00", 30))
    assert Period.named("today", thursday, MOSCOW).end == at("21:00:00", 26)


async def test_time_in_each_state_from_the_state_changes(db: Database) -> None:
    """Anna was paused before the day began, worked from 06:00 UTC, took one call; Boris went
    offline at 10:00; Vera's phone never changed (zeros). A change lasts until the next."""
    changes = [
        ("anna", "paused", at("20:00:00", 23)),  # before the day: his state at its start
        ("anna", "available", at("06:00:00")),
        ("anna", "ringing", at("07:00:00")),
        ("anna", "on_call", at("07:00:10")),
        ("anna", "available", at("07:05:10")),
        ("boris", "offline", at("10:00:00")),
        ("anna", "paused", at("21:30:00")),  # the next day: not this one's
    ]
    async with db.engine.begin() as conn:
        for manager_id, state, when in changes:
            row = {"manager_id": manager_id, "state": state, "previous_state": "available", "at": when}
            await conn.execute(insert(manager_states).values(row))
    day = Period.of_days(date(2026, 11, 24), date(2026, 11, 24), MOSCOW)
    stats = SqlStats(db)

    def seconds(rows: list[dict[str, object]]) -> dict[object, tuple[object, ...]]:
        keys = ("available_seconds", "ringing_seconds", "on_call_seconds", "paused_seconds", "offline_seconds")
        return {row["manager_id"]: (*(row[key] for key in keys), row["known_seconds"]) for row in rows}

    whole = state_rows(MANAGERS, await stats.state_seconds(day, at("12:00:00", 25), ["anna", "boris", "vera"]))
    assert seconds(whole) == {
        # 21:00 -> 06:00 paused (9 h); available 06:00 -> 07:00 and 07:05:10 -> 21:00.
        "anna": (3600 + 50090, 10, 300, 32400, 0, 86400),
        "boris": (0, 0, 0, 0, 11 * 3600, 11 * 3600),  # known from 10:00 on
        "vera": (0, 0, 0, 0, 0, 0),
    }
    # Asked at 12:00 UTC the same day: up to now, not to the day's end.
    so_far = state_rows(MANAGERS, await stats.state_seconds(day, at("12:00:00"), ["anna", "boris", "vera"]))
    assert seconds(so_far)["anna"] == (3600 + 17690, 10, 300, 32400, 0, 15 * 3600)
    assert seconds(so_far)["boris"] == (0, 0, 0, 0, 7200, 7200)
    assert [row["name"] for row in so_far] == ["Anna", "Boris", "Vera"]
    # A day that has not begun has no time in any state.
    assert await stats.state_seconds(day, at("20:00:00", 23), ["anna"]) == []
