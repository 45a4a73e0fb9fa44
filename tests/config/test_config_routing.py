from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from config.problems import ConfigError
from config.routing import RoutingSource, load_routing
from router.model import Lead
from router.routing import Strategy

REPO = Path(__file__).parents[2]
NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def lead(source: str) -> Lead:
    return Lead(phone="+79161234567", name="", source=source, external_id=None, payload={}, created_at=NOW)


VALID = """\
version: 1
managers:
  - id: anna
    name: Anna Petrova
    extension: "101"
  - id: boris
    name: Boris Ivanov
    extension: 102
scenarios:
  - name: ads
    sources: [yandex-direct, vk-ads]
    managers: [anna]
    hold_limit: 30s
    ring_timeout: 15
    max_attempts: 2
    retry_delays: [5m, 0.5h, 90]
  - name: default
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "routing.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_routing(path)
    return [str(problem).removeprefix(f"{path}:") for problem in caught.value.problems]


def test_shipped_routing_yaml_loads() -> None:
    plan = load_routing(REPO / "routing.yaml")
    assert plan.managers
    assert plan.scenarios[-1].match.takes_everything
    assert not any(scenario.match.takes_everything for scenario in plan.scenarios[:-1])


def test_valid_file_becomes_a_plan_with_durations_in_seconds(tmp_path: Path) -> None:
    plan = load_routing(write(tmp_path, VALID))

    assert [(manager.id, manager.extension) for manager in plan.managers] == [("anna", "101"), ("boris", "102")]
    ads, default = plan.scenarios
    assert [plan.scenario_for(lead(source), NOW).name for source in ("vk-ads", "yandex-direct", "site", "vk-*")] == [
        "ads",
        "ads",
        "default",
        "default",
    ]
    assert [manager.id for manager in plan.pool(ads)] == ["anna"]
    assert (ads.hold_limit, ads.ring_timeout, ads.max_attempts) == (30.0, 15.0, 2)
    assert ads.retry_delays == (300.0, 1800.0, 90.0)
    assert ads.strategy is default.strategy is Strategy.LONGEST_IDLE  # what version 1 always did
    assert [manager.id for manager in plan.pool(default)] == ["anna", "boris"]
    assert (default.hold_limit, default.ring_timeout, default.max_attempts) == (45.0, 20.0, 3)
    assert default.retry_delays == (300.0, 900.0, 3600.0)


def test_leading_zero_extension_stays_text(tmp_path: Path) -> None:
    plan = load_routing(write(tmp_path, VALID.replace('extension: "101"', "extension: 0101")))
    assert plan.managers[0].extension == "0101"


def test_value_out_of_range_points_at_the_value(tmp_path: Path) -> None:
    assert problems(tmp_path, VALID.replace("hold_limit: 30s", "hold_limit: 0")) == [
        "13:17: scenarios[0].hold_limit: must be greater than 0"
    ]


def test_wrong_type_points_at_the_value(tmp_path: Path) -> None:
    assert problems(tmp_path, VALID.replace("max_attempts: 2", "max_attempts: twice")) == [
        "15:19: scenarios[0].max_attempts: must be a valid integer"
    ]


def test_bad_duration_string_is_explained(tmp_path: Path) -> None:
    assert problems(tmp_path, VALID.replace("[5m, 0.5h, 90]", "[5m, 1:30]")) == [
        "16:24: scenarios[0].retry_delays[1]: '1:30' is not a duration: "
        "write seconds or a number with s, m or h, e.g. 45s, 5m, 1h"
    ]


def test_unknown_key_points_at_the_key_and_suggests_the_spelling(tmp_path: Path) -> None:
    assert problems(tmp_path, VALID.replace("ring_timeout: 15", "ring_timeuot: 15")) == [
        "14:5: scenarios[0].ring_timeuot: unknown key; did you mean 'ring_timeout'?"
    ]


def test_missing_required_key_points_at_the_enclosing_mapping(tmp_path: Path) -> None:
    assert problems(tmp_path, VALID.replace("    name: Boris Ivanov\n", "")) == [
        "6:5: managers[1].name: required key is missing"
    ]


def test_key_without_value_points_at_the_key(tmp_path: Path) -> None:
    assert problems(tmp_path, VALID.replace("name: Boris Ivanov", "name:")) == ["7:5: managers[1].name: has no value"]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    broken = (
        VALID.replace("version: 1", "version: 3")
        .replace('extension: "101"', "extension: 10a")
        .replace("ring_timeout: 15", "ring_timeout: -1")
        .replace("    managers: [anna]\n", "    managers: [anna, ghost]\n")
    )
    assert problems(tmp_path, broken) == [
        "1:10: version: must be 1 or 2",
        "5:16: managers[0].extension: may contain only digits (found 'a')",
        "14:19: scenarios[0].ring_timeout: must be greater than 0",
    ]


def test_duplicate_manager_id_and_extension_point_at_the_second(tmp_path: Path) -> None:
    text = VALID.replace("id: boris", "id: anna").replace("extension: 102", "extension: 101")
    assert problems(tmp_path, text) == [
        "6:9: managers[1].id: duplicate manager id 'anna': managers[0] already has it",
        "8:16: managers[1].extension: duplicate extension '101': managers[0] already has it",
    ]


def test_duplicate_scenario_name(tmp_path: Path) -> None:
    assert problems(tmp_path, VALID.replace("name: default", "name: ads")) == [
        "17:11: scenarios[1].name: duplicate scenario name 'ads': scenarios[0] already has it"
    ]


def test_unknown_manager_points_at_the_item(tmp_path: Path) -> None:
    assert problems(tmp_path, VALID.replace("managers: [anna]", "managers: [anna, ghost]")) == [
        "12:22: scenarios[0].managers[1]: no manager has the id 'ghost'; known ids: anna, boris"
    ]


def test_last_scenario_must_be_the_catch_all(tmp_path: Path) -> None:
    assert problems(tmp_path, VALID + "    sources: [site]\n") == [
        "18:14: scenarios[1].sources: the last scenario is the catch-all for every other source: "
        "remove `sources` here, or add a scenario without `sources` after it"
    ]


def test_catch_all_before_the_end_is_refused(tmp_path: Path) -> None:
    text = VALID.replace("    sources: [yandex-direct, vk-ads]\n", "") + "  - name: late\n    sources: [x]\n"
    found = problems(tmp_path, text)
    assert [problem.split(":", 3)[:3] for problem in found] == [
        ["10", "5", " scenarios[0]"],
        ["16", "5", " scenarios[1]"],
        ["18", "14", " scenarios[2].sources"],
    ]
    assert "has no `sources`, so it takes every lead" in found[0]
    assert "the last scenario is the catch-all" in found[2]


def test_source_listed_twice_is_refused(tmp_path: Path) -> None:
    assert problems(tmp_path, VALID.replace("[yandex-direct, vk-ads]", "[vk-ads, vk-ads]")) == [
        "11:23: scenarios[0].sources[1]: source 'vk-ads' is already listed in scenario 'ads', which wins"
    ]


def test_empty_lists_are_refused(tmp_path: Path) -> None:
    text = VALID.replace("managers: [anna]", "managers: []").replace("[5m, 0.5h, 90]", "[]")
    assert problems(tmp_path, text) == [
        "12:15: scenarios[0].managers: needs at least 1 item(s)",
        "16:19: scenarios[0].retry_delays: needs at least 1 item(s)",
    ]


def test_at_least_one_manager_and_one_scenario(tmp_path: Path) -> None:
    assert problems(tmp_path, "version: 1\nmanagers: []\nscenarios: []\n") == [
        "2:11: managers: needs at least 1 item(s)",
        "3:12: scenarios: needs at least 1 item(s)",
    ]


def test_yaml_syntax_error_has_the_parser_position(tmp_path: Path) -> None:
    assert problems(tmp_path, VALID.replace("    name: Anna Petrova", "   name: Anna Petrova")) == [
        "4:4: while parsing a block collection (line 3, column 3), "
        "expected <block end>, but found '<block mapping start>'"
    ]


def test_reload_swaps_the_plan_on_success(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    source = RoutingSource.load(path)
    path.write_text(VALID.replace("hold_limit: 30s", "hold_limit: 1m"))

    assert source.reload() == []
    assert source.plan.scenarios[0].hold_limit == 60.0


def test_reload_keeps_the_last_good_plan_and_reports(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    source = RoutingSource.load(path)
    before = source.plan
    path.write_text(VALID.replace("hold_limit: 30s", "hold_limit: -1"))

    reported = source.reload()

    assert [str(problem) for problem in reported] == [f"{path}:13:17: scenarios[0].hold_limit: must be greater than 0"]
    assert source.plan is before


def test_reload_survives_a_missing_file(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    source = RoutingSource.load(path)
    before = source.plan
    path.unlink()

    reported = source.reload()

    assert [problem.message for problem in reported] == ["cannot read the file: No such file or directory"]
    assert source.plan is before


def test_first_load_of_a_bad_file_raises(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        RoutingSource.load(tmp_path / "absent.yaml")
