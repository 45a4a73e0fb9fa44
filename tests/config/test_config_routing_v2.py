"""routing.yaml version 2: match rules, groups and skills, capacity, shifts, strategies; where each mistake is."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from config.problems import ConfigError
from config.routing import RoutingSource, load_routing
from router.model import Lead
from router.routing import ClosingRate, RoutingPlan, Strategy

# A Monday, 10:00 in Moscow.
MONDAY = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)

VALID = """\
version: 2
timezone: Europe/Moscow
managers:
  - id: anna
    name: Anna
    extension: 101
    groups: [senior, moscow]
    skills: english
    weight: 80
    max_open_leads: 40
    shift: [mon-fri 09:00-18:00, sat 10:00-14:00]
  - id: boris
    name: Boris
    extension: 102
    groups: senior
  - id: vera
    name: Vera
    extension: 103
scenarios:
  - name: vip
    match:
      sources: [yandex-direct, "vk-*"]
      tags: vip
      payload: {utm_campaign: "spring-*", budget: [100, 200]}
      countries: [ru, kz]
      when: mon-fri 09:00-20:00
    pool: {groups: senior, skills: english}
    strategy: closing_rate
    closing_rate: {prior_won: 2, prior_lost: 8, history: 40, fairness_floor: 30%, fairness_window: 300}
    hold_limit: 1m
  - name: moscow
    match:
      regions: Moscow
    pool: {managers: [vera], groups: [moscow]}
    strategy: round_robin
  - name: default
    strategy: weighted
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "routing.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def load(tmp_path: Path, text: str = VALID) -> RoutingPlan:
    return load_routing(write(tmp_path, text))


def problems(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_routing(path)
    return [str(problem).removeprefix(f"{path}:") for problem in caught.value.problems]


def lead(phone: str = "+79161234567", source: str = "vk-ads", **payload: object) -> Lead:
    return Lead(phone=phone, name="", source=source, external_id=None, payload=payload, created_at=MONDAY)


def test_managers_get_groups_skills_weight_capacity_and_shift(tmp_path: Path) -> None:
    anna, boris, vera = load(tmp_path).managers
    assert (anna.groups, anna.skills, anna.weight, anna.max_open_leads) == ({"senior", "moscow"}, {"english"}, 80, 40)
    assert str(anna.shift) == "mon-fri 09:00-18:00, sat 10:00-14:00"
    assert (boris.groups, boris.skills, boris.weight, boris.max_open_leads, boris.shift) == (
        {"senior"},
        frozenset(),
        50,
        None,
        None,
    )
    assert vera.extension == "103"


def test_scenarios_get_rules_pools_and_strategies(tmp_path: Path) -> None:
    plan = load(tmp_path)
    vip, moscow, default = plan.scenarios
    assert plan.timezone == ZoneInfo("Europe/Moscow")
    assert [manager.id for manager in plan.pool(vip)] == ["anna"]
    assert [manager.id for manager in plan.pool(moscow)] == ["anna", "vera"]
    assert [manager.id for manager in plan.pool(default)] == ["anna", "boris", "vera"]
    assert (vip.strategy, moscow.strategy, default.strategy) == (
        Strategy.CLOSING_RATE,
        Strategy.ROUND_ROBIN,
        Strategy.WEIGHTED,
    )
    assert vip.closing_rate == ClosingRate(2, 8, 40, 0.3, 300)
    assert default.closing_rate == ClosingRate()
    assert (vip.hold_limit, default.hold_limit) == (60.0, 45.0)


def test_every_rule_written_is_applied(tmp_path: Path) -> None:
    plan = load(tmp_path)
    vip = {"tags": ["vip"], "utm_campaign": "spring-sale", "budget": 200}

    def scenario_of(subject: Lead, now: datetime = MONDAY) -> str:
        return plan.scenario_for(subject, now).name

    assert scenario_of(lead(**vip)) == "vip"
    assert scenario_of(lead("+77012345678", **vip)) == "vip"  # Kazakhstan is listed too
    assert scenario_of(lead(source="site", **vip)) == "default"
    assert scenario_of(lead(**{**vip, "tags": ["new"]})) == "default"
    assert scenario_of(lead(**{**vip, "budget": 300})) == "default"
    assert scenario_of(lead("+14155552671", **vip)) == "default"
    assert scenario_of(lead(**vip), datetime(2026, 11, 23, 17, 0, tzinfo=UTC)) == "default"  # 20:00 in Moscow
    assert scenario_of(lead("+74951234567", source="site")) == "moscow"


def test_single_values_read_as_lists_of_one(tmp_path: Path) -> None:
    plan = load(tmp_path)
    assert plan.managers[1].groups == {"senior"}
    assert plan.scenario_for(lead("+74951234567", source="x"), MONDAY).name == "moscow"


def test_mistakes_in_values_point_at_them(tmp_path: Path) -> None:
    broken = (
        VALID.replace("timezone: Europe/Moscow", "timezone: Europe/Moskow")
        .replace("weight: 80", "weight: 101")
        .replace("mon-fri 09:00-18:00,", "mon-fry 09:00-18:00,")
        .replace("countries: [ru, kz]", "countries: [ru, xx]")
        .replace("fairness_floor: 30%", "fairness_floor: 130%")
        .replace("strategy: round_robin", "strategy: round-robin")
    )
    found = problems(tmp_path, broken)
    assert found[:5] == [
        "2:11: timezone: 'Europe/Moskow' is not a time zone: write an IANA name such as Europe/Moscow or UTC",
        "9:13: managers[0].weight: must be less than or equal to 100",
        "11:13: managers[0].shift[0]: 'mon-fry' is not a day or a range of days: "
        "use mon, tue, wed, thu, fri, sat, sun, e.g. mon-fri",
        "25:23: scenarios[0].match.countries[1]: 'xx' is not a country code: write ISO 3166 codes such as RU, KZ, US",
        "29:78: scenarios[0].closing_rate.fairness_floor: '130%' is not a share: "
        "write a percentage from 0% to 100% or a fraction such as 0.5",
    ]
    assert found[5].startswith("35:15: scenarios[1].strategy: must be 'longest_idle', 'round_robin', ")


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ("09:00-09:00", "'09:00-09:00' starts and ends at the same time; for the whole day leave the hours out"),
        ("mon 25:00-26:00", "25:00 is not a time of day (00:00 to 23:59, or 24:00 for an end)"),
        ("mon fri", "'mon fri' is not a time window: write days, hours or both, e.g. 'mon-fri 09:00-18:00', "),
    ],
)
def test_time_windows_are_explained(tmp_path: Path, window: str, message: str) -> None:
    (found,) = problems(tmp_path, VALID.replace("when: mon-fri 09:00-20:00", f"when: {window}"))
    assert found.startswith(f"26:13: scenarios[0].match.when[0]: {message}")


def test_windows_may_end_at_midnight_or_run_past_it(tmp_path: Path) -> None:
    plan = load(tmp_path, VALID.replace("when: mon-fri 09:00-20:00", "when: [sun-mon 22:00-02:00, sat 18:00-24:00]"))
    assert str(plan.scenarios[0].match.when) == "sun-mon 22:00-02:00, sat 18:00-24:00"


def test_pools_name_only_what_exists_and_take_somebody(tmp_path: Path) -> None:
    text = VALID.replace("pool: {groups: senior, skills: english}", "pool: {groups: [seniour], skills: french}")
    text = text.replace("pool: {managers: [vera], groups: [moscow]}", "pool: {managers: [vera, ghost]}")
    assert problems(tmp_path, text) == [
        "27:11: scenarios[0].pool: takes nobody: no manager is in groups seniour; skills french",
        "27:21: scenarios[0].pool.groups[0]: no manager has group 'seniour'; known groups: moscow, senior",
        "27:39: scenarios[0].pool.skills[0]: no manager has skill 'french'; known skills: english",
        "34:29: scenarios[1].pool.managers[1]: no manager has the id 'ghost'; known ids: anna, boris, vera",
    ]


def test_a_pool_of_managers_without_the_skill_takes_nobody(tmp_path: Path) -> None:
    text = VALID.replace("pool: {managers: [vera], groups: [moscow]}", "pool: {managers: [vera], skills: english}")
    assert problems(tmp_path, text) == [
        "34:11: scenarios[1].pool: takes nobody: no manager is in managers vera; skills english"
    ]


def test_the_last_scenario_alone_is_the_catch_all(tmp_path: Path) -> None:
    assert problems(tmp_path, VALID + "    match: {sources: site}\n") == [
        "38:12: scenarios[2].match: the last scenario is the catch-all for every other lead: remove `match` here, "
        "or add a scenario without `match` after it"
    ]
    early = VALID.replace("    match:\n      regions: Moscow\n", "    match: {}\n")
    assert problems(tmp_path, early) == [
        "31:5: scenarios[1]: has no `match` rules, so it takes every lead and the scenarios after it are never used; "
        "only the last scenario may leave `match` out"
    ]


def test_a_scenario_shadowed_by_an_identical_one_is_refused(tmp_path: Path) -> None:
    text = VALID.replace(
        "      regions: Moscow\n", "      regions: Moscow\n  - name: again\n    match: {regions: Moscow}\n"
    )
    assert problems(tmp_path, text) == [
        "35:12: scenarios[2].match: matches exactly what scenario 'moscow' matches, which wins: it is never used"
    ]


def test_closing_rate_options_need_the_strategy(tmp_path: Path) -> None:
    text = VALID.replace("strategy: closing_rate\n", "strategy: random\n")
    assert problems(tmp_path, text) == [
        "29:19: scenarios[0].closing_rate: is read only by `strategy: closing_rate`; this scenario has random"
    ]


def test_tags_and_payload_tags_are_one_rule(tmp_path: Path) -> None:
    text = VALID.replace('payload: {utm_campaign: "spring-*"', 'payload: {tags: hot, utm_campaign: "spring-*"')
    assert problems(tmp_path, text) == [
        "23:13: scenarios[0].match.tags: `tags` is short for `payload.tags`: write one of the two"
    ]


def test_unknown_keys_are_refused_with_a_suggestion(tmp_path: Path) -> None:
    text = VALID.replace("strategy: weighted", "strategy: weighted\n    dial_first: manager").replace(
        "max_open_leads: 40", "max_open_lead: 40"
    )
    assert problems(tmp_path, text) == [
        "10:5: managers[0].max_open_lead: unknown key; did you mean 'max_open_leads'?",
        "38:5: scenarios[2].dial_first: unknown key; did you mean 'dial_order'?",
    ]


def test_version_2_needs_a_time_zone(tmp_path: Path) -> None:
    assert problems(tmp_path, VALID.replace("timezone: Europe/Moscow\n", "")) == [
        "1:1: timezone: required key is missing"
    ]


def test_a_share_is_a_percentage_or_a_fraction(tmp_path: Path) -> None:
    plan = load(tmp_path, VALID.replace("fairness_floor: 30%", "fairness_floor: 0.25"))
    assert plan.scenarios[0].closing_rate.fairness_floor == 0.25
    (found,) = problems(tmp_path, VALID.replace("fairness_floor: 30%", "fairness_floor: half"))
    assert found.endswith("'half' is not a share: write a percentage from 0% to 100% or a fraction such as 0.5")


def test_a_broken_version_2_reload_keeps_the_plan_in_force(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    source = RoutingSource.load(path)
    before = source.plan
    path.write_text(VALID.replace("strategy: weighted", "strategy: fastest"))
    assert [problem.path for problem in source.reload()] == ["scenarios[2].strategy"]
    assert source.plan is before
    path.write_text(VALID.replace("strategy: weighted", "strategy: fewest_calls"))
    assert source.reload() == []
    assert source.plan.scenarios[2].strategy is Strategy.FEWEST_CALLS


OWNER_AND_OVERFLOW = VALID.replace(
    "    hold_limit: 1m\n",
    "    hold_limit: 1m\n"
    "    owner_first: {owner_wait: 10s, owner_changes: false}\n"
    "    overflow:\n"
    "      - {after: 20s, pool: {groups: moscow}}\n"
    "      - {after: 40s, pool: {}}\n",
)


def test_owner_first_and_overflow_steps_are_read(tmp_path: Path) -> None:
    vip, moscow, _ = load(tmp_path, OWNER_AND_OVERFLOW).scenarios
    assert vip.owner_first is not None and (vip.owner_first.wait, vip.owner_first.owner_changes) == (10, False)
    assert [(step.after, step.pool.describe()) for step in vip.overflow] == [
        (20, "groups moscow"),
        (40, "every manager"),
    ]
    assert (moscow.owner_first, moscow.overflow) == (None, ())
    plain = load(tmp_path, VALID.replace("    hold_limit: 1m\n", "    hold_limit: 1m\n    owner_first: {}\n"))
    assert plain.scenarios[0].owner_first is not None
    assert (plain.scenarios[0].owner_first.wait, plain.scenarios[0].owner_first.owner_changes) == (15, True)


def test_overflow_steps_open_later_each_and_within_the_hold_limit(tmp_path: Path) -> None:
    text = OWNER_AND_OVERFLOW.replace("after: 40s", "after: 15s").replace("after: 20s", "after: 90s")
    text = text.replace("pool: {groups: moscow}", "pool: {groups: moskow}")
    assert problems(tmp_path, text) == [
        "33:17: scenarios[0].overflow[0].after: 90s is not within the hold limit (60s): "
        "no client waits that long, so this pool is never reached",
        "33:28: scenarios[0].overflow[0].pool: takes nobody: no manager is in groups moskow",
        "33:37: scenarios[0].overflow[0].pool.groups[0]: no manager has group 'moskow'; known groups: moscow, senior",
        "34:17: scenarios[0].overflow[1].after: must be later than the step before it (90s)",
    ]


def test_dial_order_with_its_options(tmp_path: Path) -> None:
    text = VALID.replace(
        "strategy: weighted",
        "strategy: weighted\n    dial_order: manager_first\n    client_ring_timeout: 25s\n    managers_to_try: 2",
    )
    default = load(tmp_path, text).scenarios[-1]
    assert (default.dial_order, default.client_ring_timeout, default.managers_to_try) == ("manager_first", 25, 2)
    assert load(tmp_path).scenarios[-1].dial_order == "client_first"


def test_manager_first_has_no_overflow_and_client_first_no_client_ring_timeout(tmp_path: Path) -> None:
    text = OWNER_AND_OVERFLOW.replace("    hold_limit: 1m\n", "    hold_limit: 1m\n    dial_order: manager_first\n")
    text = text.replace("strategy: weighted", "strategy: weighted\n    client_ring_timeout: 25s")
    assert problems(tmp_path, text) == [
        "34:7: scenarios[0].overflow: waits for nobody under `dial_order: manager_first`: "
        "no client is on hold to overflow",
        "43:26: scenarios[2].client_ring_timeout: is read only by `dial_order: manager_first`; "
        "client_first rings for pbx.originate_timeout",
    ]


PER_SCENARIO_PHONES = """\
version: 2
timezone: Europe/Moscow
managers:
  - {id: anna, name: Anna, extension: 101}
scenarios:
  - name: english
    match: {sources: landing-en, countries: [GB, US, DE], when: mon-fri 09:00-18:00}
    phones: {allowed_regions: [gb, US, DE], allowed_types: [mobile, fixed_line_or_mobile]}
  - name: default
"""


def test_a_scenario_allows_its_own_countries_and_types_at_any_hour(tmp_path: Path) -> None:
    from router.phone import NumberType, PhonePolicy

    plan = load(tmp_path, PER_SCENARIO_PHONES)
    english = plan.scenario("english")
    assert english.allowed_regions == {"GB", "US", "DE"}
    assert english.allowed_types == {NumberType.MOBILE, NumberType.FIXED_LINE_OR_MOBILE}
    default = PhonePolicy("RU")
    # A Sunday-night lead is judged by the scenario that will call it on Monday.
    policy, scenario = plan.phone_policy(lead("+447400123456", source="landing-en"), default)
    assert scenario == "english" and policy.refusal("+447400123456") is None
    assert policy.refusal("+442071234567") is not None  # a London landline: fixed_line, not listed
    policy, scenario = plan.phone_policy(lead("+447400123456", source="site"), default)
    assert (policy, scenario) == (default, None)  # the catch-all has no lists: the daemon's settings


def test_per_scenario_phone_lists_are_checked_where_they_are_written(tmp_path: Path) -> None:
    text = PER_SCENARIO_PHONES.replace("allowed_regions: [gb, US, DE]", "allowed_regions: [GB, XX]")
    text = text.replace("fixed_line_or_mobile]", "premium]")
    assert problems(tmp_path, text) == [
        "8:36: scenarios[0].phones.allowed_regions[1]: 'XX' is not a country code: "
        "write ISO 3166 codes such as RU, KZ, US",
        "8:65: scenarios[0].phones.allowed_types[1]: must be 'fixed_line', 'mobile', 'fixed_line_or_mobile', "
        "'toll_free', 'premium_rate', 'shared_cost', 'voip', 'personal_number', 'pager', 'uan', 'voicemail' "
        "or 'unknown'",
    ]
    narrow = PER_SCENARIO_PHONES.replace("allowed_regions: [gb, US, DE]", "allowed_regions: GB")
    assert problems(tmp_path, narrow) == [
        "7:50: scenarios[0].match.countries[1]: matches US leads, but phones.allowed_regions refuses every one; "
        "add US there",
        "7:54: scenarios[0].match.countries[2]: matches DE leads, but phones.allowed_regions refuses every one; "
        "add DE there",
    ]


MANAGER_SIDE = """\
version: 2
timezone: Europe/Moscow
managers:
  - {id: anna, name: Anna, extension: "101"}
scenarios:
  - name: calls
    match: {sources: site}
    wrap_up: 30s
    auto_pause_after: 3
    caller_name: "{name} · {source}"
    whisper: leadrouter/new-lead
    amd: true
  - name: default
"""


def test_the_managers_side_of_a_call_is_read_per_scenario(tmp_path: Path) -> None:
    calls, default = load(tmp_path, MANAGER_SIDE).scenarios
    assert (calls.wrap_up, calls.auto_pause_after, calls.caller_name, calls.whisper, calls.amd) == (
        30.0,
        3,
        "{name} · {source}",
        "leadrouter/new-lead",
        True,
    )
    assert (default.wrap_up, default.auto_pause_after, default.caller_name, default.whisper, default.amd) == (
        0.0,
        None,
        None,
        None,
        False,
    )


def test_bad_manager_side_options_are_refused_with_their_place(tmp_path: Path) -> None:
    text = (
        MANAGER_SIDE.replace('"{name} · {source}"', '"{name} {payload}"')
        .replace("leadrouter/new-lead", "new lead;rm")
        .replace("auto_pause_after: 3", "auto_pause_after: 0")
    )
    assert problems(tmp_path, text) == [
        "9:23: scenarios[0].auto_pause_after: must be greater than or equal to 1",
        "10:18: scenarios[0].caller_name: names 'payload'; a template may name name, source, phone",
        "11:14: scenarios[0].whisper: may contain only letters, digits and / @ . _ - (found ' ' ';')",
    ]
    text = MANAGER_SIDE.replace("amd: true", "amd: true\n    dial_order: manager_first")
    assert problems(tmp_path, text) == [
        "12:10: scenarios[0].amd: runs on a client_first answer only: under manager_first the manager is "
        "already on the line",
    ]
