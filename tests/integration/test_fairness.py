"""Fairness through ``demo --routing --report-json``, shorter than ``bench/routing_fairness.py``
(600 leads a run): every manager free at each pick, so only the strategy decides who gets a lead,
and the demo's seed fixes the strategies' draws."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.routing_fairness import shares, trial

SCALE = 50.0


@pytest.mark.timeout(240)
async def test_strategies_share_leads_as_their_rules_say(tmp_path: Path) -> None:
    turns = await trial(tmp_path, "round_robin", [50] * 6, leads=36, scale=SCALE)
    assert turns["leads"] == {"assigned": 36}
    assert sorted(figures["leads_owned"] for figures in turns["managers"].values()) == [6] * 6
    assert all(figures["calls"] == 6 and figures["talk_seconds"] > 0 for figures in turns["managers"].values())
    assert turns["scenarios"] == {"default": {"leads_matched": 36}}

    weighted = shares(await trial(tmp_path, "weighted", [10, 20, 30], leads=60, scale=SCALE))
    assert weighted["m1"] < weighted["m2"] < weighted["m3"]
    assert all(abs(weighted[f"m{n}"] - n / 6) <= 0.1 for n in (1, 2, 3)), weighted

    report: dict[str, Any] = await trial(
        tmp_path, "closing_rate", [50, 50], leads=40, scale=SCALE, wins={"m1": 0.1, "m2": 0.4}
    )
    closing = shares(report)
    assert closing["m2"] > closing["m1"] >= 0.2, closing  # the floor: half of a fair half, less a little noise
