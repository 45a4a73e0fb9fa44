"""``python -m bench`` at a toy size: every figure's path runs and the JSON has every key issue 11 names.

No timing is asserted (the machine is shared): only that each figure is there and a number, so
the benchmark cannot rot unnoticed between the runs quoted in the README.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KEYS = {
    "dial_p50_ms_200",
    "dial_p99_ms_200",
    "naive_dial_p50_ms_200",
    "naive_dial_p99_ms_200",
    "intake_max_leads_per_s",
    "select_us_10000",
    "stats_month_1m_ms",
    "rss_mb_10k_managers_1k_calls",
    "startup_s_10k_managers",
    "reload_max_loop_stall_ms",
    "loop_lag_p99_ms_200",
    "ami_ingest_ratio_vs_panoramisk",
    "ami_parse_alone_ratio_vs_panoramisk",
    "steal_pct_200",
}


@pytest.mark.timeout(300)
def test_the_bench_prints_every_figure_as_a_number() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--json"], cwd=REPO, capture_output=True, text=True, timeout=280
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout)
    assert KEYS <= figures.keys()
    for key, value in figures.items():
        assert isinstance(value, int | float) and not isinstance(value, bool), key
        assert math.isfinite(value) and value >= 0, (key, value)
    # The run really ran: both dialers' Originates reached the fake PBX, the daemon held bridged calls.
    assert figures["dial_p50_ms_200"] > 0 and figures["naive_dial_p50_ms_200"] > 0
    assert figures["rss_mb_10k_managers_1k_calls"] > 0 and figures["startup_s_10k_managers"] > 0
    assert figures["steal_pct_200"] <= 100


@pytest.mark.timeout(120)
def test_the_live_board_bench_times_every_flip() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.live_latency", "--flips", "3", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout)
    assert figures["flips"] == 3 and 0 < figures["board_p50_ms"] <= figures["board_max_ms"]
