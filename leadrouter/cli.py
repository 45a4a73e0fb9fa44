"""``leadrouter``: run the daemon, the demo, the simulator; check config; read stats."""

from __future__ import annotations

import argparse
import asyncio
import os
import stat
import sys
from collections.abc import Sequence
from datetime import date, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog

from config.problems import ConfigError
from config.routing import RoutingSource, oversized
from config.settings import Settings, load_settings
from leadrouter.logs import LogFormat, configure_logging
from router.routing import RoutingPlan, Scenario, Strategy
from router.stats import ManagerStats, hms

DEFAULT_CONFIG = os.environ.get("LEADROUTER_CONFIG", "/etc/leadrouter/leadrouter.yaml")
POOL_SHOWN = 8  # manager ids listed per pool in check-config's summary


def _load(config: str) -> tuple[Settings, RoutingSource]:
    settings = load_settings(Path(config))
    # The files a reload would refuse are refused at start and by check-config too.
    too_big = oversized(settings.routing_file, settings.routing_max_bytes)
    if too_big is not None:
        raise ConfigError([too_big])
    return settings, RoutingSource.load(settings.routing_file)


async def _run(config: str, log_format: LogFormat | None) -> int:
    from leadrouter.daemon import SystemClock
    from leadrouter.service import serve
    from leadrouter.systemd import Notifier

    settings, routing = _load(config)
    configure_logging(settings.log.level, log_format or settings.log.format)
    # Files the daemon creates (the database, its WAL and journal) are its own, also outside
    # systemd (whose unit sets UMask=0077 as well): they hold every lead's phone and name.
    os.umask(0o077)
    for path in (Path(config), *settings.http.token_files.values()):
        warn_if_readable_by_others(path)
    try:
        return await serve(settings, routing, SystemClock(), Notifier())
    except Exception:
        # One line that says why, for journald; systemd restarts the daemon.
        structlog.get_logger("daemon").critical("daemon.failed", exc_info=True)
        return 1


def warn_if_readable_by_others(path: Path) -> bool:
    """Log ``config.readable_by_others`` when anyone on the machine may read ``path`` (it may hold secrets)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    if not mode & stat.S_IROTH:
        return False
    structlog.get_logger("daemon").warning(
        "config.readable_by_others",
        path=str(path),
        mode=oct(stat.S_IMODE(mode)),
        hint="chmod o-rwx; keep secrets in /etc/leadrouter/secrets.env (0600) or systemd credentials",
    )
    return True


async def _stats(config: str, day: date | None, zone: tzinfo | None) -> int:
    from leadrouter.daemon import supervisor_stats

    settings, routing = _load(config)
    async with supervisor_stats(settings, routing) as stats:
        report = await stats.of_day(day, zone)
    print(f"Calls with a manager on {report.day.isoformat()} ({report.zone})")
    print_manager_table(report.managers)
    return 0


def print_manager_table(managers: Sequence[ManagerStats]) -> None:
    """What a supervisor asks first: calls, talk time and the average call of each manager."""
    print(f"{'manager':<16} {'name':<24} {'calls':>6} {'talk time':>10} {'average':>8}")
    for manager in managers:
        talk, average = hms(manager.talk_seconds), hms(manager.average_talk_seconds)
        print(f"{manager.manager_id:<16} {manager.name:<24} {manager.calls:>6} {talk:>10} {average:>8}")


async def _upgrade(config: str) -> int:
    from leadrouter.daemon import upgrade_database

    await upgrade_database(load_settings(Path(config)))
    print("database is up to date")
    return 0


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown time zone {name!r}") from None


def _check(config: str) -> int:
    try:
        settings, routing = _load(config)
        settings.http.tokens_by_scope()  # token files are read at start: one missing or bad is named here first
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    plan = routing.plan
    print(f"{config}: ok")
    print(
        f"{settings.routing_file}: ok ({len(plan.managers)} managers, {len(plan.scenarios)} scenarios, "
        f"days and hours in {plan.timezone}); first match wins:"
    )
    for number, scenario in enumerate(plan.scenarios, start=1):
        print_scenario(number, scenario, plan)
    return 0


def print_scenario(number: int, scenario: Scenario, plan: RoutingPlan) -> None:
    """What ops check before a reload: what the scenario takes, who takes it, and how they are picked."""
    pool = [manager.id for manager in plan.pool(scenario)]
    shown = ", ".join(pool[:POOL_SHOWN]) + (f" and {len(pool) - POOL_SHOWN} more" if len(pool) > POOL_SHOWN else "")
    strategy = str(scenario.strategy)
    if scenario.strategy is Strategy.CLOSING_RATE:
        strategy += f" ({scenario.closing_rate.describe(len(pool))})"
    print(f"  {number}. {scenario.name}")
    print(f"       matches:  {scenario.match.describe()}")
    print(f"       pool:     {len(pool)} manager{'s' if len(pool) != 1 else ''} ({scenario.pool.describe()}): {shown}")
    print(f"       strategy: {strategy}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="leadrouter", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the daemon (what systemd starts)")
    run.add_argument("--config", default=DEFAULT_CONFIG)
    run.add_argument(
        "--log-format", choices=["console", "json"], default=None, help="overrides log.format: json for journald"
    )

    demo = commands.add_parser("demo", help="daemon + PBX simulator + SQLite + MQTT on a fast clock")
    demo.add_argument("--leads", type=int, default=100)
    demo.add_argument("--exit-when-done", action="store_true", help="exit 0 once every lead is settled")
    demo.add_argument("--scale", type=float, default=40.0, help="simulated seconds per real second")
    demo.add_argument("--rate", type=float, default=10.0, help="leads posted per real second")
    demo.add_argument("--workdir", type=Path, default=Path("var/demo"))
    demo.add_argument("--seed", type=int, default=7)

    stats = commands.add_parser("stats", help="per-manager calls and talk time for a day")
    stats.add_argument("--config", default=DEFAULT_CONFIG)
    stats.add_argument("--date", type=date.fromisoformat, default=None, help="YYYY-MM-DD, today by default")
    stats.add_argument("--tz", type=_zone, default=None, help="IANA time zone, the server's by default")

    check = commands.add_parser("check-config", help="validate leadrouter.yaml and routing.yaml")
    check.add_argument("--config", default=DEFAULT_CONFIG)

    db = commands.add_parser("db-upgrade", help="bring the database schema up to date")
    db.add_argument("--config", default=DEFAULT_CONFIG)

    sim = commands.add_parser("simulator", help="run the PBX simulator alone (a fake Asterisk on AMI)")
    sim.add_argument("--port", type=int, default=5038)
    sim.add_argument("--scale", type=float, default=1.0)

    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return asyncio.run(_run(args.config, args.log_format))
        if args.command == "demo":
            from leadrouter.demo import run_demo

            configure_logging("warning")
            return asyncio.run(
                run_demo(
                    leads=args.leads,
                    exit_when_done=args.exit_when_done,
                    scale=args.scale,
                    rate=args.rate,
                    workdir=args.workdir,
                    seed=args.seed,
                )
            )
        if args.command == "stats":
            return asyncio.run(_stats(args.config, args.date, args.tz))
        if args.command == "check-config":
            return _check(args.config)
        if args.command == "db-upgrade":
            return asyncio.run(_upgrade(args.config))
        if args.command == "simulator":
            from ami_adapter.asterisk import SHIPPED_DIALPLAN
            from pbxsim.__main__ import main as simulator_main

            return simulator_main(
                ["--port", str(args.port), "--scale", str(args.scale), "--dialplan", str(SHIPPED_DIALPLAN)]
            )
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
