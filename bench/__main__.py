"""``python -m bench``: every figure of issue 11 in one run, one process tree, free ports.

    python -m bench            # the table (what ``make bench`` prints)
    python -m bench --json     # one JSON object, numbers only
    python -m bench --quick    # a smaller version of each (under two minutes), the same keys

Each figure comes from the module that measures it (each also runs alone, with more detail):
bench.dial (POST → Originate beside the naive dialer, loop lag, intake), bench.routing_select,
bench.stats_month, bench.daemon_scale (startup, memory, reload stall), bench.ami_ingest.
The machine's noise moves the latencies: run it twice and quote medians and ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass

from bench import ami_ingest, daemon_scale, dial, routing_select, stats_month


@dataclass(frozen=True)
class Sizes:
    dial_seconds: float  # at 200 leads/s
    intake_rates: tuple[float, ...]
    intake_seconds: float
    select_managers: int
    select_rounds: int
    stats_calls: int
    managers: int  # startup, memory, reload
    bridged_calls: int
    reload_bytes: int
    ami_bytes: int
    ami_rounds: int


FULL = Sizes(10, (400, 700, 1000, 1400, 2000), 3, 10_000, 2_000, 1_000_000, 10_000, 1_000, 1 << 20, 8 << 20, 7)
QUICK = Sizes(4, (400, 1000), 1.5, 1_000, 300, 100_000, 2_000, 200, 200_000, 1 << 20, 3)
# make test's smoke run: every path taken, nothing measured that means anything.
SMOKE = Sizes(0.5, (100,), 0.5, 100, 20, 2_000, 50, 5, 20_000, 64 << 10, 1)

BARS = {
    "dial_p50_ms_200": "<= 3 ms, within 3x naive",
    "dial_p99_ms_200": "<= 20 ms",
    "intake_max_leads_per_s": ">= 1,000",
    "select_us_10000": "<= 50 us",
    "stats_month_1m_ms": "<= 300 ms",
    "rss_mb_10k_managers_1k_calls": "<= 150 MB",
    "startup_s_10k_managers": "<= 1 s",
    "reload_max_loop_stall_ms": "<= 20 ms",
    "reload_max_loop_cpu_ms": "<= 20 ms",
    "loop_lag_p99_ms_200": "<= 5 ms",
    "ami_ingest_ratio_vs_panoramisk": ">= 1x",
}


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def measure(sizes: Sizes) -> dict[str, float]:
    figures: dict[str, float] = {}
    _say("dial: POST -> Originate at 200 leads/s, daemon and naive dialer; intake steps")
    result = await dial.run(
        rate=200,
        seconds=sizes.dial_seconds,
        intake_rates=list(sizes.intake_rates),
        intake_seconds=sizes.intake_seconds,
    )
    figures |= dial.summary(result)
    _say(f"selection: {sizes.select_managers:,} managers, every strategy and pool")
    figures["select_us_10000"] = round(routing_select.worst_us(sizes.select_managers, sizes.select_rounds), 3)
    _say(f"stats: a month over {sizes.stats_calls:,} calls")
    figures["stats_month_1m_ms"] = round(await stats_month.month_ms(sizes.stats_calls), 3)
    _say(f"daemon: {sizes.managers:,} managers, {sizes.bridged_calls:,} bridged calls")
    startup, rss = await daemon_scale.startup_and_memory(sizes.managers, sizes.bridged_calls)
    figures["startup_s_10k_managers"] = round(startup.seconds, 3)
    figures["startup_cpu_s_10k_managers"] = round(startup.cpu, 3)
    figures["startup_copy_cpu_s_10k_managers"] = round(startup.copy_cpu, 3)
    figures["rss_mb_10k_managers_1k_calls"] = round(rss, 1)
    _say(f"reload: {sizes.managers:,} managers in {sizes.reload_bytes:,} bytes")
    stall = await daemon_scale.reload_stall(sizes.managers, sizes.reload_bytes)
    figures["reload_max_loop_stall_ms"] = round(stall.wall * 1000, 3)
    # Beside it, the longest gap of the same ticker with nothing to do over as long spans: on a
    # shared machine the scheduler alone stalls a loop for milliseconds to tens of them. The CPU
    # time the loop spent within its longest gap is what the reload itself holds it for.
    figures["idle_max_loop_stall_ms"] = round(stall.idle * 1000, 3)
    figures["reload_max_loop_cpu_ms"] = round(stall.cpu * 1000, 3)
    _say("AMI ingest beside panoramisk")
    figures |= ami_ingest.measure(sizes.ami_rounds, sizes.ami_bytes)
    return figures


def table(figures: dict[str, float]) -> str:
    lines = [f"{'figure':<38}{'value':>12}  bar"]
    for key, value in figures.items():
        lines.append(f"{key:<38}{value:>12,.3f}  {BARS.get(key, '')}")
    ours, naive = figures["dial_p50_ms_200"], figures["naive_dial_p50_ms_200"]
    lines.append(f"\ndial p50 at 200 leads/s: {ours / naive:.1f}x the naive dialer's (same run, same fake AMI)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object (numbers only)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a smaller version of each figure")
    size.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # make test: the paths, not the figures
    args = parser.parse_args()
    sizes = SMOKE if args.smoke else QUICK if args.quick else FULL
    figures = asyncio.run(measure(sizes))
    print(json.dumps(figures, indent=2) if args.json else table(figures))


if __name__ == "__main__":
    main()
