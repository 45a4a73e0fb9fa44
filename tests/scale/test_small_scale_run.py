"""bench.scale's small run (issue 13): three daemon processes on one PostgreSQL, two simulated PBXes,
one daemon kill -9ed mid-run for good; the others take its calls and its leads' future over."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench.scale import ScalePlan, run_scale

pytestmark = pytest.mark.timeout(300)  # the run is bounded: posting, then at most `settle`


def test_three_daemons_two_pbxes_one_killed_dial_no_lead_twice_and_book_no_manager_twice(tmp_path: Path) -> None:
    plan = ScalePlan(daemons=3, pbxes=2, leads=60, kill_one=True, managers=6, settle=120.0, workdir=tmp_path)
    result = asyncio.run(run_scale(plan))
    assert (result["accepted"], result["dialled_twice"], result["managers_double_booked"]) == (60, 0, 0), result
    assert result["unsettled"] == 0 and result["settled"], result
    # The kill left calls behind, and a daemon on the same PBX took them over within seconds.
    assert result["calls_orphaned_by_the_kill"] > 0, result
    assert result["takeover_s"] is not None and result["takeover_s"] < 10, result
    # Both survivors dialled (the victim's calls that were live when it died now count as its heir's),
    # and every manager got some.
    assert len(result["calls_per_daemon_run"]) >= 2 and min(result["calls_per_daemon_run"]) > 0, result
    assert result["share_max_min_ratio"] is not None, result
