"""``leadrouter``: run the daemon, the demo, the simulator; check config; read stats."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import stat
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from config.problems import ConfigError
from config.routing import RoutingSource, load_routing, oversized
from config.settings import Settings, load_settings
from router.routing import RoutingPlan, Scenario, Strategy
from router.stats import BY, PERIODS, ManagerStats, csv_text, hms, manager_rows, report_summary, rows_by

if TYPE_CHECKING:
    from leadrouter.logs import LogFormat

DEFAULT_CONFIG = os.environ.get("LEADROUTER_CONFIG", "/etc/leadrouter/leadrouter.yaml")
POOL_SHOWN = 8  # manager ids listed per pool in check-config's summary


def _load(config: str) -> tuple[Settings, RoutingSource]:
    settings = _load_settings(config)
    return settings, RoutingSource.load(settings.routing_file, settings.pbx_names)


def _load_settings(config: str) -> Settings:
    settings = _read_settings(config)
    settings.webhooks.webhook_settings()  # reads the subscribers' secret files: refused now, not at start
    return settings


def _read_settings(config: str) -> Settings:
    """leadrouter.yaml, without the webhook subscribers' secret files (``_load_settings`` reads them)."""
    settings = load_settings(Path(config))
    # The files a reload would refuse are refused at start and by check-config too.
    too_big = oversized(settings.routing_file, settings.routing_max_bytes)
    if too_big is not None:
        raise ConfigError([too_big])
    return settings


async def _run(config: str, log_format: LogFormat | None) -> int:
    settings = _read_settings(config)
    # routing.yaml is read while the daemon's libraries load: the copy that reads it is made before
    # they do (structlog and the logging set-up too, which the webhooks' module loads), and what
    # both need is loaded once, before it.
    loading = RoutingSource.load_beside(settings.routing_file, settings.pbx_names)
    settings.webhooks.webhook_settings()  # the subscribers' secret files: one missing stops the start here
    # What the start makes (modules, the app, the board, the plan) lives as long as the process,
    # and it leaves little garbage: the collector's hundreds of runs over it cost ~0.08 s of CPU at
    # 10,000 managers. It is off until Daemon._start freezes everything made and turns it back on
    # (the `leadrouter` command turned it off before loading this module: leadrouter/__main__.py).
    gc.disable()

    import structlog

    from leadrouter.daemon import SystemClock
    from leadrouter.logs import configure_logging
    from leadrouter.service import serve
    from leadrouter.systemd import Notifier

    routing = loading()
    configure_logging(settings.log.level, log_format or settings.log.format)
    # Files the daemon creates (the database, its WAL and journal) are its own, also outside
    # systemd (whose unit sets UMask=0077 as well): they hold every lead's phone and name.
    os.umask(0o077)
    for path in (Path(config), *settings.http.token_files.values()):
        warn_if_readable_by_others(path)
    try:
        return await serve(settings, routing, SystemClock(), Notifier(), Path(config))
    except Exception:
        # One line that says why, for journald; systemd restarts the daemon.
        structlog.get_logger("daemon").critical("daemon.failed", exc_info=True)
        return 1


def warn_if_readable_by_others(path: Path) -> bool:
    """Log ``config.readable_by_others`` when anyone on the machine may read ``path`` (it may hold secrets)."""
    import structlog

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


async def _stats(config: str, args: argparse.Namespace) -> int:
    from leadrouter.daemon import supervisor_stats

    settings, routing = _load(config)
    async with supervisor_stats(settings, routing) as stats:
        try:
            period = stats.period(
                first=args.first or args.date, last=args.last or args.date, named=args.period, zone=args.tz
            )
        except ValueError as exc:
            print(f"leadrouter stats: {exc}", file=sys.stderr)
            return 2
        report = await stats.report(period, args.manager) if args.format == "json" else None
        if args.by == "state":
            rows = await stats.states(period, args.manager)
        elif args.by == "manager" and report is None:
            # The per-manager figures alone: the one query that stays fast over a busy month.
            rows = manager_rows(await stats.managers(period, args.manager), period.zone)
        else:
            report = report or await stats.report(period, args.manager)
            rows = rows_by(report, args.by)
    if args.format == "json":
        assert report is not None
        print(json.dumps({**report_summary(report), "by": args.by, "rows": rows}, ensure_ascii=False, indent=2))
    elif args.format == "csv":
        print(csv_text(rows), end="")
    else:
        days = period.first.isoformat() + ("" if period.first == period.last else f" to {period.last.isoformat()}")
        print(f"By {args.by}, {days} ({period.zone})")
        print_table(rows)
    return 0


async def _webhooks(config: str, args: argparse.Namespace) -> int:
    from leadrouter.daemon import webhook_admin
    from storage.engine import StorageUnavailable

    settings = load_settings(Path(config))
    try:
        async with webhook_admin(settings) as admin:
            if args.action == "retry":
                count = await admin.retry(args.subscriber, args.event)
                print(f"{count} dead events queued again; the daemon sends them within seconds, in order per lead")
                return 0
            subscribers = await admin.overview()
            dead = await admin.dead(args.subscriber, args.limit)
    except StorageUnavailable as exc:
        print(f"leadrouter webhooks: cannot read the database: {exc} (leadrouter db-upgrade?)", file=sys.stderr)
        return 1
    if args.json:
        listing = {"subscribers": subscribers, "dead": dead}
        print(json.dumps(listing, ensure_ascii=False, indent=2, default=lambda value: value.isoformat()))
        return 0
    print("Subscribers")
    _print_rows(
        [
            {
                "name": entry["name"],
                "url": entry["url"] or "(not in leadrouter.yaml)",
                "pending": entry["pending"],
                "dead": entry["dead"],
                "failing_since": entry["failing_since"],
            }
            for entry in subscribers
        ]
    )
    print(f"\nDead events (oldest first, {len(dead)} shown); send them again: leadrouter webhooks retry")
    _print_rows(
        [
            {
                "subscriber": entry["subscriber"],
                "event": entry["id"],
                "type": entry["type"],
                "lead": entry["lead_id"],
                "attempts": entry["attempts"],
                "dead_at": entry["dead_at"],
                "last_error": entry["last_error"],
            }
            for entry in dead
        ]
    )
    return 0


def _print_rows(rows: list[dict[str, object]]) -> None:
    if not rows:
        print("(none)")
        return
    print_table(
        [
            {
                key: value.isoformat(timespec="seconds") if isinstance(value, datetime) else value
                for key, value in row.items()
            }
            for row in rows
        ]
    )


def print_table(rows: Sequence[dict[str, object]]) -> None:
    """Aligned columns as a terminal reads them: durations as h:mm:ss, shares in %, nothing as '-'."""
    if not rows:
        print("(nothing in this period)")
        return

    def cell(key: str, value: object) -> str:
        if value is None:
            return "-"
        if key.endswith("_seconds") and isinstance(value, int | float):
            return hms(value)
        if key.endswith("_pct"):
            return f"{value}%"
        if key in ("first_call", "last_call") and isinstance(value, str):
            return value[:16].replace("T", " ")  # the minute, in the company's zone
        return str(value)

    keys = list(rows[0])
    headers = [key.removesuffix("_seconds").removesuffix("_pct").replace("_", " ") for key in keys]
    cells = [[cell(key, row[key]) for key in keys] for row in rows]
    widths = [max(len(headers[i]), *(len(line[i]) for line in cells)) for i in range(len(keys))]
    for line in [headers, *cells]:
        print(
            "  ".join(
                text.ljust(w) if i < 2 else text.rjust(w) for i, (text, w) in enumerate(zip(line, widths, strict=True))
            )
        )


def print_manager_table(managers: Sequence[ManagerStats]) -> None:
    """What a supervisor asks first: calls, talk time and the average call of each manager."""
    print(f"{'manager':<16} {'name':<24} {'calls':>6} {'talk time':>10} {'average':>8}")
    for manager in managers:
        talk, average = hms(manager.talk_seconds), hms(manager.average_talk_seconds)
        print(f"{manager.manager_id:<16} {manager.name:<24} {manager.calls:>6} {talk:>10} {average:>8}")


async def _what_if(config: str, routing_file: Path, since: timedelta) -> int:
    from router.whatif import PastLead, replay
    from storage.engine import Database
    from storage.queries import SqlQueries

    settings = load_settings(Path(config))
    try:
        plan = load_routing(routing_file, settings.pbx_names)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    start = datetime.now(UTC) - since
    async with Database(settings.database.url) as database:
        history = await SqlQueries(database).leads_since(start)
    result = replay([PastLead(lead, calls) for lead, calls in history], plan)
    print(
        f"what-if: {len(result.leads)} leads since {start:%Y-%m-%d %H:%M} UTC, "
        f"routed by {routing_file} instead of {settings.routing_file}"
    )
    print(f"\n{'scenario':<24} {'now':>6} {'new':>6}")
    for name, (now, new) in result.per_scenario().items():
        print(f"{name:<24} {now:>6} {new:>6}")
    print(f"\n{'manager':<24} {'now':>6} {'new':>6}   (leads whose client talked to him)")
    for name, (now, new) in result.per_manager().items():
        print(f"{name:<24} {now:>6} {new:>6}")
    changed = result.changed_hands()
    print(f"\nleads that change hands: {len(changed)}")
    for lead in changed:
        to = lead.owner_new or "nobody free"
        print(f"  lead {lead.lead_id:<8} {lead.phone:<16} {lead.scenario_new}: {lead.owner_now} -> {to}")
    return 0


def _period(text: str) -> timedelta:
    units = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.isdigit() or int(number) == 0:
        raise argparse.ArgumentTypeError(f"{text!r}: write a number and m, h, d or w, e.g. 7d")
    return timedelta(seconds=int(number) * units[unit])


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


def _win_rate(text: str) -> tuple[str, float]:
    manager_id, _, rate = text.partition("=")
    try:
        value = float(rate)
    except ValueError:
        value = -1.0
    if not manager_id or not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: write MANAGER=RATE with RATE from 0 to 1, e.g. anna=0.4")
    return manager_id, value


def _check(config: str) -> int:
    try:
        settings, routing = _load(config)
        settings.http.tokens_by_scope()  # token files are read at start: one missing or bad is named here first
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    plan = routing.plan
    print(f"{config}: ok")
    for subscriber in settings.webhooks.webhook_settings().subscribers:
        events = ", ".join(sorted(subscriber.events)) if subscriber.events is not None else "every event"
        print(f"  webhook {subscriber.name}: {subscriber.url} ({events})")
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
    if len(plan.pbxes) > 1:
        dialled = scenario.pbx or f"any of {', '.join(plan.pbxes)}, with its own managers of the pool"
        print(f"       dialled on: {dialled}")
    if scenario.owner_first is not None:
        first = scenario.owner_first
        keeps = "whoever talks becomes the owner" if first.owner_changes else "the phone keeps its owner"
        print(f"       owner first: a repeat lead's owner alone for {first.wait:g}s after the answer; {keeps}")
    if scenario.allowed_regions is not None or scenario.allowed_types is not None:
        regions = ", ".join(sorted(scenario.allowed_regions)) if scenario.allowed_regions is not None else "as phones:"
        kinds = ", ".join(sorted(scenario.allowed_types)) if scenario.allowed_types is not None else "as phones:"
        print(f"       numbers:  from {regions}; of type {kinds} (in place of the daemon's phones: settings)")
    for level, step in enumerate(scenario.overflow, start=1):
        size = len(plan.pool(scenario, level))
        managers = f"{size} manager{'s' if size != 1 else ''}"
        print(f"       overflow: after {step.after:g}s also {managers} ({step.pool.describe()})")
    for line in scenario.describe_lifecycle():
        print(f"       {line}")


MANAGER_FIELDS = ("name", "extension", "groups", "skills", "weight", "max_open_leads", "shift", "pbx")


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _capacity(text: str) -> int | None:
    if text == "none":
        return None
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: a number of leads, or none")
    return int(text)


def _managers(args: argparse.Namespace) -> int:
    from api.scopes import TokenScope
    from leadrouter.api_client import ApiFailed, ApiTarget

    try:
        target = ApiTarget.from_settings(load_settings(Path(args.config)), args.url, args.token, (TokenScope.ADMIN,))
        if args.managers_command == "list":
            print_table([_manager_row(manager) for manager in target.call("GET", "/managers")["managers"]])
            return 0
        if args.managers_command == "remove":
            target.call("DELETE", f"/managers/{quote(args.id, safe='')}")
            print(f"{args.id}: removed")
            return 0
        fields = {key: getattr(args, key) for key in MANAGER_FIELDS if hasattr(args, key)}
        if args.managers_command == "add":
            answer = target.call("POST", "/managers", json_body={"id": args.id, **fields})
        else:
            answer = target.call("PATCH", f"/managers/{quote(args.id, safe='')}", json_body=fields)
    except ApiFailed as exc:
        print(f"leadrouter managers {args.managers_command}: {exc}", file=sys.stderr)
        return 1
    print(f"{args.id}: {answer['change']}")
    print_table([_manager_row(answer["manager"])])
    return 0


def _manager_row(manager: dict[str, object]) -> dict[str, object]:
    return {key: ",".join(value) if isinstance(value, list) else value for key, value in manager.items()}


def _import_leads(args: argparse.Namespace) -> int:
    from api.scopes import TokenScope
    from leadrouter.api_client import ApiFailed, ApiTarget
    from leadrouter.lead_import import ImportFailed, import_file, print_report, progress_bar, write_errors

    query = {
        "phone_column": args.phone,
        "name_column": args.name,
        "source_column": args.source_column,
        "external_id_column": args.external_id,
        "source": args.source,
        "delimiter": args.delimiter,
        "dry_run": "true" if args.dry_run else "false",
    }
    try:
        scopes = (TokenScope.INTAKE, TokenScope.ADMIN)
        target = ApiTarget.from_settings(load_settings(Path(args.config)), args.url, args.token, scopes)
        report = import_file(
            args.file, target, query, chunk_rows=max(args.chunk_rows, 1), progress=progress_bar(sys.stderr)
        )
    except (ImportFailed, ApiFailed) as exc:
        print(f"leadrouter leads import: {exc}", file=sys.stderr)
        return 2
    print_report(report)
    if args.errors is not None:
        write_errors(report, args.errors)
    return 1 if report.errors else 0


def _day(text: str) -> date:
    """A day for --date/--from/--to: YYYY-MM-DD within the range any period may cover."""
    from router.stats import FIRST_DAY, LAST_DAY

    day = date.fromisoformat(text)
    if not FIRST_DAY <= day <= LAST_DAY:
        raise argparse.ArgumentTypeError(f"{text}: outside {FIRST_DAY}..{LAST_DAY}")
    return day


def _pause_or_resume(args: argparse.Namespace) -> int:
    """Pause or resume a manager in the RUNNING daemon, through its API with a supervisor token."""
    from api.scopes import TokenScope
    from leadrouter.api_client import ApiFailed, ApiTarget

    action = "pause" if args.command == "pause" else "resume"
    try:
        scopes = (TokenScope.SUPERVISOR, TokenScope.ADMIN)
        target = ApiTarget.from_settings(load_settings(Path(args.config)), args.url, args.token, scopes)
        body = {"reason": args.reason} if action == "pause" else {}
        answer = target.call("POST", f"/managers/{quote(args.manager, safe='')}/{action}", json_body=body)
    except ApiFailed as exc:
        print(f"leadrouter {action}: {exc}", file=sys.stderr)
        return 1
    print(f"{answer['id']}\t{answer['state']}" + (f"\t{answer['reason']}" if answer.get("reason") else ""))
    return 0


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
    demo.add_argument("--routing", type=Path, help="try this routing.yaml: its managers become the simulator's")
    demo.add_argument("--report-json", type=Path, help="write leads, managers and scenarios as JSON here at the end")
    demo.add_argument(
        "--quick-clients",
        action="store_true",
        help="with --routing: every client answers at once and talks a few seconds (fairness runs)",
    )
    demo.add_argument(
        "--win-rate",
        action="append",
        default=[],
        type=_win_rate,
        metavar="MANAGER=RATE",
        help="with --routing: the demo CRM reports this manager's leads won at this rate (0..1), else lost",
    )

    stats = commands.add_parser("stats", help="supervisors' figures for a day, week, month or any days")
    stats.add_argument("--config", default=DEFAULT_CONFIG)
    stats.add_argument("--date", type=_day, default=None, help="YYYY-MM-DD: one day")
    stats.add_argument("--from", dest="first", type=_day, default=None, help="YYYY-MM-DD, first day")
    stats.add_argument("--to", dest="last", type=_day, default=None, help="YYYY-MM-DD, last day")
    stats.add_argument("--period", choices=PERIODS, default=None, help="the calendar day, week or month; today")
    stats.add_argument("--tz", type=_zone, default=None, help="IANA time zone; routing.yaml's, else the server's")
    stats.add_argument("--manager", default=None, help="one manager's id")
    stats.add_argument("--by", choices=[*BY, "state"], default="manager", help="state: seconds in each manager state")
    stats.add_argument("--format", choices=["table", "csv", "json"], default="table")

    check = commands.add_parser("check-config", help="validate leadrouter.yaml and routing.yaml")
    check.add_argument("--config", default=DEFAULT_CONFIG)

    what_if = commands.add_parser(
        "what-if", help="replay the stored leads of a period through another routing.yaml: who would have got them"
    )
    what_if.add_argument("--config", default=DEFAULT_CONFIG)
    what_if.add_argument("--routing", type=Path, required=True, help="the routing file to try")
    what_if.add_argument("--since", type=_period, default=timedelta(days=7), help="how far back, e.g. 7d, 12h")

    pause = commands.add_parser("pause", help="take a manager out of rotation in the running daemon")
    pause.add_argument("--reason", required=True, help="lunch, training, meeting...")
    resume = commands.add_parser("resume", help="put a paused manager back in rotation")
    for sub in (pause, resume):
        sub.add_argument("manager", help="the manager's id in routing.yaml")
        sub.add_argument("--config", default=DEFAULT_CONFIG)
        sub.add_argument("--url", default=None, help="the daemon's API; by default http.host:http.port")
        sub.add_argument(
            "--token",
            default=os.environ.get("LEADROUTER_API_TOKEN"),
            help="supervisor or admin; by default the config's",
        )
    db = commands.add_parser("db-upgrade", help="bring the database schema up to date")
    db.add_argument("--config", default=DEFAULT_CONFIG)

    leads = commands.add_parser("leads", help="leads in bulk")
    leads_commands = leads.add_subparsers(dest="leads_command", required=True)
    lead_import = leads_commands.add_parser(
        "import",
        help="import a CSV file (UTF-8, header line) into the running daemon; other columns go to the payload",
    )
    lead_import.add_argument("file", type=Path)
    lead_import.add_argument("--config", default=DEFAULT_CONFIG)
    lead_import.add_argument("--url", default=None, help="the daemon's API; by default http.host:http.port")
    lead_import.add_argument(
        "--token", default=os.environ.get("LEADROUTER_API_TOKEN"), help="intake or admin; by default the config's"
    )
    lead_import.add_argument("--phone", default="phone", metavar="COLUMN", help="the column with the phone")
    lead_import.add_argument("--name", default="name", metavar="COLUMN")
    lead_import.add_argument("--source-column", default="source", metavar="COLUMN")
    lead_import.add_argument("--external-id", default="external_id", metavar="COLUMN", help="repeats are duplicates")
    lead_import.add_argument("--source", default="", help="the source of rows without one")
    lead_import.add_argument("--delimiter", choices=["comma", "semicolon", "tab"], default="comma")
    lead_import.add_argument("--dry-run", action="store_true", help="check every row as for real, store nothing")
    lead_import.add_argument("--errors", type=Path, default=None, help="also write the bad rows to this CSV file")
    lead_import.add_argument("--chunk-rows", type=int, default=1000, help="rows per request to the daemon")

    managers = commands.add_parser(
        "managers", help="list, add, change or remove managers in the running daemon (routing.yaml is rewritten)"
    )
    managers_commands = managers.add_subparsers(dest="managers_command", required=True)
    for name, help_text in [
        ("list", "the managers in force"),
        ("add", "add a manager (--name and --extension needed)"),
        ("set", "change a manager's fields; the others stay"),
        ("remove", "remove a manager (refused while a scenario's pool names him)"),
    ]:
        sub = managers_commands.add_parser(name, help=help_text)
        sub.add_argument("--config", default=DEFAULT_CONFIG)
        sub.add_argument("--url", default=None, help="the daemon's API; by default http.host:http.port")
        sub.add_argument(
            "--token", default=os.environ.get("LEADROUTER_API_TOKEN"), help="admin; by default the config's"
        )
        if name == "list":
            continue
        sub.add_argument("id")
        if name == "remove":
            continue
        # Left out: the field stays as it is (absent from args, not None: None removes a limit).
        unset = argparse.SUPPRESS
        sub.add_argument("--name", default=unset)
        sub.add_argument("--extension", default=unset)
        sub.add_argument("--groups", type=_names, default=unset, help="comma-separated; '' for none")
        sub.add_argument("--skills", type=_names, default=unset, help="comma-separated; '' for none")
        sub.add_argument("--weight", type=int, default=unset, help="1..100")
        sub.add_argument(
            "--capacity", dest="max_open_leads", type=_capacity, default=unset, help="max_open_leads; 'none': no limit"
        )
        sub.add_argument(
            "--shift", type=_names, default=unset, help="comma-separated windows, e.g. 'mon-fri 09:00-18:00'"
        )
        sub.add_argument("--pbx", default=unset, help="his phone's PBX, a name under leadrouter.yaml's pbxes:")
    webhooks = commands.add_parser("webhooks", help="webhook delivery: subscribers, dead events, retry")
    webhooks.add_argument("action", choices=["list", "retry"])
    webhooks.add_argument("--config", default=DEFAULT_CONFIG)
    webhooks.add_argument("--subscriber", default=None, help="only this subscriber's events")
    webhooks.add_argument(
        "--event",
        action="append",
        default=[],
        metavar="ID",
        help="retry: only this event's lead (all its dead events, in order)",
    )
    webhooks.add_argument("--limit", type=int, default=100, help="list: dead events shown at most")
    webhooks.add_argument("--json", action="store_true", help="list: as JSON")

    sim = commands.add_parser("simulator", help="run the PBX simulator alone (a fake Asterisk on AMI)")
    sim.add_argument("--port", type=int, default=5038)
    sim.add_argument("--scale", type=float, default=1.0)

    args = parser.parse_args(argv)
    if args.command != "run":
        gc.enable()  # off while the command loaded (leadrouter/__main__.py); only `run` keeps it off longer
    try:
        if args.command == "run":
            return asyncio.run(_run(args.config, args.log_format))
        if args.command == "demo":
            from leadrouter.demo import RoutingTrial, run_demo
            from leadrouter.logs import configure_logging

            configure_logging("warning")
            if args.routing is None and (args.quick_clients or args.win_rate):
                parser.error("--quick-clients and --win-rate need --routing")
            trial = None
            if args.routing is not None:
                trial = RoutingTrial(args.routing, quick_clients=args.quick_clients, win_rates=dict(args.win_rate))
            return asyncio.run(
                run_demo(
                    leads=args.leads,
                    exit_when_done=args.exit_when_done,
                    scale=args.scale,
                    rate=args.rate,
                    workdir=args.workdir,
                    seed=args.seed,
                    trial=trial,
                    report_json=args.report_json,
                )
            )
        if args.command == "stats":
            return asyncio.run(_stats(args.config, args))
        if args.command == "check-config":
            return _check(args.config)
        if args.command == "what-if":
            return asyncio.run(_what_if(args.config, args.routing, args.since))
        if args.command == "webhooks":
            return asyncio.run(_webhooks(args.config, args))
        if args.command in ("pause", "resume"):
            return _pause_or_resume(args)
        if args.command == "db-upgrade":
            return asyncio.run(_upgrade(args.config))
        if args.command == "managers":
            return _managers(args)
        if args.command == "leads":
            return _import_leads(args)
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
