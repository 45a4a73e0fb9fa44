"""``leadrouter check-config``: a summary per scenario for a good routing, every problem and exit 1 for a bad one."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from leadrouter.cli import main

REPO = Path(__file__).parents[2]


def _config(tmp_path: Path, routing: Path) -> str:
    path = tmp_path / "leadrouter.yaml"
    path.write_text(yaml.safe_dump({"ami": {"secret": "unused"}, "routing_file": str(routing)}))
    return str(path)


def test_a_good_routing_is_summarised_scenario_by_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--config", _config(tmp_path, REPO / "routing.yaml")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].endswith(
        "routing.yaml: ok (4 managers, 4 scenarios, days and hours in Europe/Moscow); first match wins:"
    )
    assert lines[6:10] == [
        "       owner first: a repeat lead's owner alone for 15s after the answer; the phone keeps its owner",
        "       numbers:  from DE, GB, US; of type fixed_line, fixed_line_or_mobile, mobile "
        "(in place of the daemon's phones: settings)",
        "       overflow: after 20s also 2 managers (groups junior)",
        "       overflow: after 35s also 4 managers (every manager)",
    ]
    assert lines[2:6] == [
        "  1. english-b2b",
        "       matches:  source landing-en or ads-en-*; payload.utm_campaign spring-* or partners; "
        "payload.tags b2b; country DE or GB or US; at mon-fri 09:00-18:00",
        "       pool:     3 managers (managers vera; groups senior; skills english): anna, boris, vera",
        "       strategy: closing_rate (prior 1 won / 1 lost, last 50 decided leads each, "
        "floor 50% of a fair share over the last 200 offers)",
    ]
    assert lines[-11:] == [
        "  4. default",
        "       matches:  every lead the scenarios above did not take",
        "       pool:     4 managers (every manager): anna, boris, vera, gleb",
        "       strategy: longest_idle",
        "       retries:  busy: up to 6 attempts, after 2m, 5m, 15m; then failed",
        "       retries:  no_answer: up to 4 attempts, after 30m, 2h, 4h; then failed",
        "       retries:  unreachable: up to 2 attempts, after 1h; then wrong_number",
        "       retries:  abandoned: up to 4 attempts, after 1m; then failed",
        "       retries:  no_manager: up to 5 attempts, after 2m, 5m; then failed",
        "       duplicates: merged within 24h",
        "       SLA release: an owned lead with no outcome 24h after assignment",
    ]


def test_a_big_pool_is_counted_and_its_first_members_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    routing = tmp_path / "routing.yaml"
    managers = [{"id": f"m{number}", "name": f"M {number}", "extension": str(100 + number)} for number in range(12)]
    routing.write_text(yaml.safe_dump({"version": 1, "managers": managers, "scenarios": [{"name": "default"}]}))
    assert main(["check-config", "--config", _config(tmp_path, routing)]) == 0
    out = capsys.readouterr().out
    assert "pool:     12 managers (every manager): m0, m1, m2, m3, m4, m5, m6, m7 and 4 more" in out
    assert "days and hours in UTC" in out


def test_a_bad_routing_lists_every_problem_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    routing = tmp_path / "routing.yaml"
    text = (REPO / "routing.yaml").read_text()
    routing.write_text(text.replace("strategy: weighted", "strategy: wieghted").replace("weight: 60", "weight: 0"))
    assert main(["check-config", "--config", _config(tmp_path, routing)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    problems = captured.err.splitlines()
    assert len(problems) == 2
    assert (
        problems[0].startswith(f"{routing}:")
        and ": managers[1].weight: must be greater than or equal to 1" in problems[0]
    )
    assert ": scenarios[2].strategy: must be 'longest_idle', 'round_robin'," in problems[1]


def test_what_a_reload_would_refuse_is_refused_here_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    routing = tmp_path / "routing.yaml"
    routing.write_text((REPO / "routing.yaml").read_text() + "#" * (1 << 20))  # valid YAML, over the 1 MB cap
    assert main(["check-config", "--config", _config(tmp_path, routing)]) == 1
    assert "over the cap of 1048576 (routing_max_bytes)" in capsys.readouterr().err

    config = tmp_path / "with-tokens.yaml"
    tokens = {"token_files": {"supervisor": str(tmp_path / "missing-tokens")}}
    config.write_text(
        yaml.safe_dump({"ami": {"secret": "unused"}, "routing_file": str(REPO / "routing.yaml"), "http": tokens})
    )
    assert main(["check-config", "--config", str(config)]) == 1
    assert "missing-tokens: cannot read tokens" in capsys.readouterr().err


def test_the_command_loads_with_the_collector_off_and_other_commands_run_with_it_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The installed `leadrouter` is leadrouter.__main__:main; only `run` keeps the collector off
    # past the parsing (until the daemon has started: tests/integration cover `run`).
    import gc

    from leadrouter.__main__ import main as command

    config = _config(tmp_path, REPO / "routing.yaml")
    monkeypatch.setattr("sys.argv", ["leadrouter", "check-config", "--config", config])
    try:
        assert command() == 0
        assert gc.isenabled()
    finally:
        gc.enable()
    assert "routing.yaml: ok" in capsys.readouterr().out
