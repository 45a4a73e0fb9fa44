"""The chaos harness's small run (issue 6): ~300 leads through the real daemon process under every kind of fault.

One run serves both tests: whether the harness did what it was asked, and whether the daemon
kept every promise through it.
The run waits (bounded) for the leads to finish: an Originate whose fate a kill left unknown
is resolved by its dial deadline (originate timeout + 30 s), so the bound is above that; a
daemon that keeps its promises finishes well within it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest

from bench.chaos import INVARIANTS, ChaosPlan, Report, run_chaos

# Seed 10 strikes while leads are live: an early kill -9, then a PBX restart and a hang after the last kill.
pytestmark = pytest.mark.timeout(400)  # the run itself is bounded: posting, faults, then at most `settle`

PLAN = ChaosPlan(leads=300, kills=3, ami_drops=2, pbx_restarts=1, broker_outage=3.0, seed=10, settle=90.0)
# The same with an AMI fault that comes due while the daemon is away striking right after its next
# login, in the resync that follows it (seed 10's drop falls in its PBX restart): this variant
# found a takeover lost to a link cut between the takeover's commit and its listing.
AT_LOGIN = dataclasses.replace(PLAN, ami_look_every=0.02)


@pytest.fixture(scope="module", params=[PLAN, AT_LOGIN], ids=["faults_a_while_after_logins", "faults_at_logins"])
def report(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Report:
    plan: ChaosPlan = request.param
    return asyncio.run(run_chaos(dataclasses.replace(plan, workdir=tmp_path_factory.mktemp("chaos"))))


def test_the_small_run_does_every_fault_it_was_asked_for(report: Report) -> None:
    done = (report.kills_done, report.ami_drops_done, report.pbx_restarts_done, report.broker_outage_done)
    assert done == (3, 2, 1, 3.0)
    # Each witness saw the run (how much they saw is the daemon's part, judged by the invariants).
    seen = report.witnessed
    assert seen["leads_posted"] == 300
    assert seen["client_legs_on_pbx"] > 0 and seen["originates_read_by_pbx"] > 0
    assert seen["outbox_rows"] > 0 and seen["messages_received"] > 0


def test_the_small_run_breaks_no_invariant(report: Report) -> None:
    broken = {name: report.findings[name].value for name in INVARIANTS if report.findings[name].value}
    evidence = {name: report.findings[name].evidence for name in broken}
    # Receipts mark what the broker took before a kill -9, so the restarted publisher sends only
    # what never reached it: no copy follows a kill. A restarted broker does re-send to the
    # subscriber the QoS 1 messages it had not acknowledged before the stop (MQTT's own
    # redelivery, not a second publish of ours); those are the only copies allowed.
    copies = evidence.get("duplicates_delivered", {}).get("copies_after", {})
    if set(copies) <= {"broker_back"}:
        broken.pop("duplicates_delivered", None)
    assert broken == {}, f"{evidence}\n{_daemon_errors(report)}"


def _daemon_errors(report: Report, most: int = 40) -> str:
    """The daemon's own error lines: its log lives in a temporary folder a CI run does not keep."""
    lines = (report.plan.workdir / "daemon.log").read_text(errors="replace").splitlines()
    errors = [line for line in lines if line.startswith("----") or _level(line) in ("error", "critical")]
    return "the daemon's starts and errors:\n" + "\n".join(errors[-most:])


def _level(line: str) -> str | None:
    try:
        return str(json.loads(line).get("level"))
    except (ValueError, AttributeError):
        return None
