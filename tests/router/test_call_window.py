"""Call windows: the company's hours and holidays, and the client's local time by his number."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from router.call_window import BacklogOrder, CallWindow, client_zones
from router.schedule import Schedule, Window
from tests.router.plans import scenario

MOSCOW = ZoneInfo("Europe/Moscow")
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
ALL_WEEK = frozenset(range(7))
WEEKDAYS = frozenset(range(5))


def window(**fields: object) -> CallWindow:
    return CallWindow(**{"zone": MOSCOW, **fields})  # type: ignore[arg-type]


def msk(*args: int) -> datetime:
    return datetime(*args, tzinfo=MOSCOW)


def test_the_default_client_hours_are_nine_to_nine_in_his_zone() -> None:
    default = window()
    assert default.allows(msk(2026, 11, 24, 9, 0), [MOSCOW])
    assert not default.allows(msk(2026, 11, 24, 8, 59), [MOSCOW])
    assert default.allows(msk(2026, 11, 24, 20, 59), [MOSCOW])
    assert not default.allows(msk(2026, 11, 24, 21, 0), [MOSCOW])


def test_a_lead_at_2340_is_due_at_the_next_morning_opening() -> None:
    assert window().next_allowed(msk(2026, 11, 24, 23, 40), [MOSCOW]) == msk(2026, 11, 25, 9, 0)


def test_a_moment_inside_the_window_is_itself_and_an_odd_second_waits_for_the_next_whole_minute() -> None:
    inside = msk(2026, 11, 24, 12, 0, 30)
    assert window().next_allowed(inside, [MOSCOW]) == inside
    assert window().next_allowed(msk(2026, 11, 24, 8, 59, 30), [MOSCOW]) == msk(2026, 11, 24, 9, 0)


def test_company_hours_across_midnight_count_after_midnight_for_the_day_before() -> None:
    night = window(
        hours=Schedule((Window(frozenset({4}), 22 * 60, 2 * 60),)),  # fri 22:00-02:00
        client_hours=Schedule((Window(ALL_WEEK, 0, 24 * 60),)),
    )
    assert night.allows(msk(2026, 11, 28, 1, 59), [MOSCOW])  # Saturday 01:59: Friday's shift
    assert not night.allows(msk(2026, 11, 28, 2, 0), [MOSCOW])
    assert not night.allows(msk(2026, 11, 27, 21, 59), [MOSCOW])
    # Saturday 03:00: the next Friday at 22:00.
    assert night.next_allowed(msk(2026, 11, 28, 3, 0), [MOSCOW]) == msk(2026, 12, 4, 22, 0)


def test_client_hours_across_midnight() -> None:
    late = window(client_hours=Schedule((Window(ALL_WEEK, 20 * 60, 1 * 60),)))  # 20:00-01:00
    assert late.allows(msk(2026, 11, 25, 0, 30), [MOSCOW])
    assert late.next_allowed(msk(2026, 11, 25, 1, 0), [MOSCOW]) == msk(2026, 11, 25, 20, 0)


def test_the_opening_after_a_spring_forward_is_09_00_local_an_hour_earlier_in_utc() -> None:
    # Berlin moves from +01:00 to +02:00 at 02:00 on Sunday 29 March 2026.
    company = CallWindow(zone=BERLIN)
    evening = datetime(2026, 3, 28, 21, 30, tzinfo=BERLIN)
    opening = company.next_allowed(evening, [BERLIN])
    assert opening is not None
    assert opening.astimezone(BERLIN).hour == 9
    assert opening.astimezone(UTC) == datetime(2026, 3, 29, 7, 0, tzinfo=UTC)  # the day before: 08:00 UTC


def test_the_opening_after_a_fall_back_is_09_00_local_an_hour_later_in_utc() -> None:
    company = CallWindow(zone=BERLIN)
    opening = company.next_allowed(datetime(2026, 10, 24, 22, 0, tzinfo=BERLIN), [BERLIN])
    assert opening is not None and opening.astimezone(UTC) == datetime(2026, 10, 25, 8, 0, tzinfo=UTC)


def test_a_window_that_contains_the_skipped_hour_opens_at_the_first_real_minute() -> None:
    night = CallWindow(zone=BERLIN, client_hours=Schedule((Window(ALL_WEEK, 2 * 60 + 30, 4 * 60),)))  # 02:30-04:00
    opening = night.next_allowed(datetime(2026, 3, 29, 1, 0, tzinfo=BERLIN), [BERLIN])
    assert opening is not None
    # 02:30 does not exist that night: the window is open from 03:00 (the same instant as 02:00+01:00).
    assert opening.astimezone(UTC) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    assert night.allows(opening, [BERLIN])


def test_holidays_skip_whole_company_days() -> None:
    with_holidays = window(
        hours=Schedule((Window(WEEKDAYS, 9 * 60, 18 * 60),)), holidays=frozenset({date(2026, 12, 31), date(2027, 1, 1)})
    )
    assert not with_holidays.allows(msk(2026, 12, 31, 12, 0), [MOSCOW])
    # Wed 30 Dec after hours: Thursday and Friday are holidays, the weekend is off: Monday 4 Jan.
    assert with_holidays.next_allowed(msk(2026, 12, 30, 19, 0), [MOSCOW]) == msk(2027, 1, 4, 9, 0)


def test_a_client_in_another_zone_is_called_in_his_own_hours() -> None:
    # 17:00 in Moscow is 09:00 in New York: a New York client is called from then, not at 09:00 Moscow.
    company = window(hours=Schedule((Window(ALL_WEEK, 9 * 60, 20 * 60),)))
    assert not company.allows(msk(2026, 11, 24, 10, 0), [NEW_YORK])
    assert company.next_allowed(msk(2026, 11, 24, 10, 0), [NEW_YORK]) == msk(2026, 11, 24, 17, 0)
    # ...and only until the company closes at 20:00 Moscow (12:00 New York).
    assert not company.allows(msk(2026, 11, 24, 20, 0), [NEW_YORK])


def test_a_number_in_several_zones_is_called_only_when_every_one_of_them_allows() -> None:
    zones = [MOSCOW, ZoneInfo("Asia/Vladivostok")]  # +03:00 and +10:00
    # 09:00 Moscow is 16:00 Vladivostok; 21:00 Vladivostok is 14:00 Moscow: open 09:00-14:00 Moscow.
    assert window().next_allowed(msk(2026, 11, 24, 7, 0), zones) == msk(2026, 11, 24, 9, 0)
    assert not window().allows(msk(2026, 11, 24, 14, 0), zones)
    assert window().next_allowed(msk(2026, 11, 24, 14, 0), zones) == msk(2026, 11, 25, 9, 0)


def test_the_phone_says_its_zones() -> None:
    assert client_zones("+12125551234") == (NEW_YORK,)
    assert MOSCOW in client_zones("+79161234567")
    assert client_zones("+79161234567") != ()


def test_a_window_that_never_opens_says_so() -> None:
    never = window(hours=Schedule((Window(frozenset({0}), 9 * 60, 10 * 60),)), holidays=frozenset())
    closed = CallWindow(zone=MOSCOW, hours=never.hours, client_hours=Schedule((Window(frozenset({1}), 0, 60),)))
    assert closed.next_allowed(msk(2026, 11, 24, 12, 0), [MOSCOW]) is None


def test_the_backlog_is_newest_first_by_default_or_oldest_first() -> None:
    early, late = msk(2026, 11, 24, 1, 0), msk(2026, 11, 24, 2, 0)
    newest = scenario(call_window=window())
    assert newest.backlog_rank(late) < newest.backlog_rank(early)
    oldest = scenario(call_window=window(backlog=BacklogOrder.OLDEST_FIRST))
    assert oldest.backlog_rank(early) < oldest.backlog_rank(late)
