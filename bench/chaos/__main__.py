"""python -m bench.chaos --leads N --kills K --ami-drops D --pbx-restarts R --broker-outage SECONDS [--json]

Exit status: 0 when every invariant is 0, 1 when one is not, 2 when the harness could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path

from bench.chaos.harness import ChaosPlan, Report, run_chaos
from bench.chaos.invariants import INVARIANTS

LABELS = {
    "leads_lost": "leads lost (2xx, then missing or never finished)",
    "overlapping_attempts": "leads with overlapping attempts (PBX)",
    "attempts_burnt_by_pbx": "attempts burnt by PBX/link failures",
    "calls_open": "calls left open (DB or PBX)",
    "managers_stuck": "managers left busy (daemon vs PBX)",
    "events_missing": "MQTT events missing (outbox vs subscriber)",
    "order_violations": "per-lead order violations",
    "duplicates_delivered": "duplicates delivered",
}


def render(report: Report) -> str:
    plan = report.plan
    lines = [
        f"chaos run: {plan.leads} leads, {report.kills_done}/{plan.kills} kill -9, "
        f"{report.ami_drops_done}/{plan.ami_drops} AMI drops/stalls, {report.pbx_restarts_done}/{plan.pbx_restarts} "
        f"PBX restarts, broker down {report.broker_outage_done:g}s; seed {plan.seed}; {report.seconds:.1f}s"
        + ("" if report.settled else f"; NOT settled within {plan.settle:g}s: calls still in progress count as open"),
        "witnessed: " + ", ".join(f"{name.replace('_', ' ')} {count}" for name, count in report.witnessed.items()),
        "",
    ]
    for name in INVARIANTS:
        finding = report.findings[name]
        lines.append(f"  {LABELS[name]:<48} {finding.value:>6}")
        if finding.value:
            lines.append(f"      {json.dumps(finding.evidence, default=str)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument("--leads", type=int, required=True)
    parser.add_argument("--kills", type=int, default=0, help="kill -9 of the daemon, each followed by a restart")
    parser.add_argument("--ami-drops", type=int, default=0, help="AMI sessions dropped or the PBX hung, alternately")
    parser.add_argument("--pbx-restarts", type=int, default=0, help="simulator restarts: every call gone")
    parser.add_argument("--broker-outage", type=float, default=0.0, metavar="SECONDS", help="mosquitto stopped")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--managers", type=int, default=ChaosPlan.managers)
    parser.add_argument("--rate", type=float, default=ChaosPlan.rate, help="leads posted per second")
    parser.add_argument(
        "--settle", type=float, default=ChaosPlan.settle, help="seconds for every lead to finish after the faults"
    )
    parser.add_argument(
        "--ami-look-every",
        type=float,
        default=ChaosPlan.ami_look_every,
        metavar="SECONDS",
        help="an AMI fault strikes at the first such look that finds the daemon logged in (0.02: in its resync)",
    )
    parser.add_argument("--workdir", type=Path, default=ChaosPlan.workdir, help="config, database and daemon log")
    args = parser.parse_args(argv)
    plan = ChaosPlan(
        leads=args.leads,
        kills=args.kills,
        ami_drops=args.ami_drops,
        pbx_restarts=args.pbx_restarts,
        broker_outage=args.broker_outage,
        ami_look_every=args.ami_look_every,
        seed=args.seed,
        managers=args.managers,
        rate=args.rate,
        settle=args.settle,
        workdir=args.workdir,
    )
    started = time.monotonic()

    def say(line: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {line}", file=sys.stderr, flush=True)

    # The simulator writes on to the AMI session of a daemon killed mid-write, and asyncio
    # warns once per write; the harness reports what matters itself.
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    try:
        report = asyncio.run(run_chaos(plan, say))
    except (RuntimeError, OSError) as exc:
        print(f"chaos: the harness could not run: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.as_json(), default=str) if args.json else render(report))
    return 1 if any(report.findings[name].value for name in INVARIANTS) else 0


if __name__ == "__main__":
    sys.exit(main())
