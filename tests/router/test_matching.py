"""Match rules and the plan's choice of scenario: every rule a scenario has must hold, first match wins."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from router.matching import LeadFacts, Match, Patterns
from router.schedule import Schedule, Window
from tests.router.plans import T0, lead, plan, scenario

MOSCOW = ZoneInfo("Europe/Moscow")
MONDAY_OFFICE = Schedule((Window(frozenset({0}), 9 * 60, 18 * 60),))


def facts(phone: str = "+79161234567", source: str = "site", **payload: object) -> LeadFacts:
    return LeadFacts(source, payload, phone)


def holds(match: Match, subject: LeadFacts, now: datetime = T0) -> bool:
    return match.matches(subject, now)


def test_exact_values_and_globs_compare_case_sensitively() -> None:
    patterns = Patterns.of(["yandex-direct", "vk-*", "promo-20??", "[ab]-test"])
    assert [patterns.matches(text) for text in ("yandex-direct", "vk-ads", "vk-", "promo-2026", "b-test")] == [True] * 5
    assert [patterns.matches(text) for text in ("Yandex-Direct", "xvk-ads", "promo-202", "c-test")] == [False] * 4


def test_literal_patterns_keep_glob_characters_as_text() -> None:
    literal = Patterns.of(["vk-*"], globs=False)  # how version 1 files compare sources
    assert literal.matches("vk-*") and not literal.matches("vk-ads")


def test_source_rule() -> None:
    ads = Match(sources=Patterns.of(["vk-*"]))
    assert holds(ads, facts(source="vk-ads")) and not holds(ads, facts(source="site"))


def test_payload_fields_compare_as_json_text_and_lists_item_by_item() -> None:
    spring = Match(payload=(("utm_campaign", Patterns.of(["spring-*"])),))
    assert holds(spring, facts(utm_campaign="spring-sale"))
    assert not holds(spring, facts(utm_campaign="autumn"))
    assert not holds(spring, facts())  # no such field
    assert not holds(spring, facts(utm_campaign={"name": "spring-sale"}))  # an object is not text
    numbers = Match(payload=(("budget", Patterns.of(["100", "2*"])), ("b2b", Patterns.of(["true"]))))
    assert holds(numbers, facts(budget=100, b2b=True)) and holds(numbers, facts(budget=2.5, b2b=True))
    assert not holds(numbers, facts(budget=100, b2b=False))
    assert not holds(numbers, facts(budget=None, b2b=True))


def test_tags_are_the_payload_tags_list_any_of_which_may_match() -> None:
    vip = Match(payload=(("tags", Patterns.of(["vip", "hot-*"])),))
    assert holds(vip, facts(tags=["new", "hot-lead"])) and holds(vip, facts(tags="vip"))
    assert not holds(vip, facts(tags=["new"])) and not holds(vip, facts(tags=[]))


def test_country_and_region_come_from_the_phone_number() -> None:
    russia, moscow = Match(countries=frozenset({"RU"})), Match(regions=Patterns.of(["Moscow"]))
    assert holds(russia, facts("+74951234567")) and holds(russia, facts("+79161234567"))
    assert not holds(russia, facts("+77012345678"))  # Kazakhstan shares +7
    assert holds(moscow, facts("+74951234567"))
    assert not holds(moscow, facts("+78123123456"))  # St Petersburg
    assert not holds(moscow, facts("+79161234567"))  # a mobile number names only its country


def test_the_phone_is_looked_up_only_when_a_rule_needs_it() -> None:
    subject = facts(source="site")
    assert not holds(Match(sources=Patterns.of(["ads"]), countries=frozenset({"RU"})), subject)
    assert "country" not in vars(subject)
    assert not holds(Match(countries=frozenset({"RU"})), facts("not a number"))


def test_time_windows_are_read_in_the_plans_zone() -> None:
    office = Match(when=MONDAY_OFFICE)
    assert holds(office, facts(), datetime(2026, 11, 23, 9, 0, tzinfo=MOSCOW))
    assert not holds(office, facts(), datetime(2026, 11, 23, 8, 59, tzinfo=MOSCOW))
    monday_morning_utc = datetime(2026, 11, 23, 6, 30, tzinfo=ZoneInfo("UTC"))  # 09:30 in Moscow
    later = plan(scenarios=(scenario("office", match=office), scenario("default")), timezone=MOSCOW)
    assert later.scenario_for(lead(), monday_morning_utc).name == "office"
    assert later.scenario_for(lead(), datetime(2026, 11, 23, 5, 30, tzinfo=ZoneInfo("UTC"))).name == "default"


def test_every_rule_of_a_scenario_must_hold() -> None:
    both = Match(sources=Patterns.of(["ads"]), countries=frozenset({"KZ"}))
    assert holds(both, facts("+77012345678", source="ads"))
    assert not holds(both, facts("+79161234567", source="ads"))
    assert not holds(both, facts("+77012345678", source="site"))


def test_first_matching_scenario_wins_and_the_last_takes_the_rest() -> None:
    kz = scenario("kz", match=Match(countries=frozenset({"KZ"})))
    ads = scenario("ads", match=Match(sources=Patterns.of(["ads"])))
    routing = plan(scenarios=(kz, ads, scenario("default")))
    assert routing.scenario_for(lead("+77012345678", source="ads"), T0) is kz
    assert routing.scenario_for(lead("+79161234567", source="ads"), T0) is ads
    assert routing.scenario_for(lead("+79161234567", source="site"), T0).name == "default"


def test_rules_read_back_for_ops() -> None:
    rules = Match(
        sources=Patterns.of(["ads", "vk-*"]),
        payload=(("tags", Patterns.of(["vip"])),),
        countries=frozenset({"RU", "KZ"}),
        when=MONDAY_OFFICE,
    )
    assert rules.describe() == "source ads or vk-*; payload.tags vip; country KZ or RU; at mon 09:00-18:00"
    assert Match().describe() == "every lead the scenarios above did not take"
