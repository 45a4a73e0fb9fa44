"""routing.yaml's lifecycle options (issue 8): retries per outcome, call windows, duplicates, SLA release."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

from router.call_window import DEFAULT_CLIENT_HOURS, BacklogOrder, ClientZone
from router.pacing import Pacing, PacingMode
from router.retries import RetryRule
from router.routing import DEFAULT_DUPLICATE_WINDOW
from router.sla import DEFAULT_RELEASE_AFTER, SlaPolicy
from tests.config.test_config_routing_v2 import load, problems

BASE = """\
version: 2
timezone: Europe/Moscow
managers:
  - {id: anna, name: Anna, extension: 101}
scenarios:
  - name: default
"""

FULL = (
    BASE
    + """\
    retries:
      busy: {max_attempts: 6, delays: [2m, 10m], final_state: always_busy}
      abandoned: {max_attempts: 4, delays: 30s}
      machine: {max_attempts: 2, delays: 4h, final_state: machine}
    call_window:
      timezone: Asia/Yekaterinburg
      hours: [mon-fri 09:00-20:00, sat 10:00-16:00]
      holidays: [2026-12-31, 2027-01-01]
      client_hours: 10:00-20:00
      client_zone: company
      backlog: oldest_first
    duplicate_window: 2h
    sla_release: {after: 48h, call_new_owner: true}
"""
)


def test_the_defaults_merge_duplicates_for_a_day_and_release_after_a_day_at_any_hour(tmp_path: Path) -> None:
    (scenario,) = load(tmp_path, BASE).scenarios
    assert scenario.retries == () and scenario.call_window is None
    assert scenario.duplicate_window == DEFAULT_DUPLICATE_WINDOW == 24 * 3600
    assert scenario.sla == SlaPolicy(DEFAULT_RELEASE_AFTER, call_new_owner=False)


def test_every_option_is_read(tmp_path: Path) -> None:
    (scenario,) = load(tmp_path, FULL).scenarios
    assert dict(scenario.retries) == {
        "busy": RetryRule(6, (120, 600), "always_busy"),
        "abandoned": RetryRule(4, (30,), "failed"),
        "machine": RetryRule(2, (4 * 3600,), "machine"),
    }
    window = scenario.call_window
    assert window is not None
    assert window.zone == ZoneInfo("Asia/Yekaterinburg")
    assert str(window.hours) == "mon-fri 09:00-20:00, sat 10:00-16:00"
    assert window.holidays == {date(2026, 12, 31), date(2027, 1, 1)}
    assert str(window.client_hours) == "10:00-20:00"
    assert window.client_zone is ClientZone.COMPANY and window.backlog is BacklogOrder.OLDEST_FIRST
    assert scenario.duplicate_window == 2 * 3600
    assert scenario.sla == SlaPolicy(48 * 3600, call_new_owner=True)


def test_an_empty_call_window_is_nine_to_nine_in_the_clients_zone_in_the_files_zone(tmp_path: Path) -> None:
    (scenario,) = load(tmp_path, BASE + "    call_window: {}\n").scenarios
    window = scenario.call_window
    assert window is not None and window.zone == ZoneInfo("Europe/Moscow") and window.hours is None
    assert window.client_hours == DEFAULT_CLIENT_HOURS and window.client_zone is ClientZone.NUMBER


def test_off_turns_duplicates_and_sla_release_off(tmp_path: Path) -> None:
    (scenario,) = load(tmp_path, BASE + "    duplicate_window: off\n    sla_release: {after: off}\n").scenarios
    assert scenario.duplicate_window == 0 and scenario.sla is None


def test_mistakes_point_at_them(tmp_path: Path) -> None:
    broken = (
        FULL.replace("busy: {", "bussy: {")
        .replace("2026-12-31", "2026-12-32")
        .replace("backlog: oldest_first", "backlog: oldest")
        .replace("duplicate_window: 2h", "duplicate_window: never")
    )
    found = problems(tmp_path, broken)
    assert found == [
        "8:7: scenarios[0].retries.bussy: unknown key; did you mean 'busy'?",
        "14:18: scenarios[0].call_window.holidays[0]: must be a valid date or datetime, "
        "day value is outside expected range",
        "17:16: scenarios[0].call_window.backlog: must be 'newest_first' or 'oldest_first'",
        "18:23: scenarios[0].duplicate_window: 'never' is not a duration: write seconds or a number with s, m or h, "
        "e.g. 45s, 5m, 1h",
    ]


def test_pacing_is_one_key_of_the_file_progressive_by_default(tmp_path: Path) -> None:
    assert load(tmp_path, BASE).pacing == Pacing()
    text = BASE.replace(
        "managers:",
        "pacing: {mode: predictive, abandon_cap: 2%, window: 10m, max_ratio: 2.5, min_sample: 30}\nmanagers:",
    )
    assert load(tmp_path, text).pacing == Pacing(PacingMode.PREDICTIVE, 0.02, 600, 2.5, 30)
    (found,) = problems(tmp_path, BASE.replace("managers:", "pacing: {mode: predictve}\nmanagers:"))
    assert found == "3:16: pacing.mode: must be 'progressive' or 'predictive'"
