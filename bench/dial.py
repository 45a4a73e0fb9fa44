"""POST → Originate on the wire: the daemon beside the naive dialer, against the same fake AMI, in one run.

The process tree: this process (the load generator), ``bench.fake_pbx`` (pbxsim, stamping
each Originate as it arrives), the daemon (``leadrouter run`` on SQLite, MQTT off) and
``bench.naive_dialer``, all on free ports of 127.0.0.1. Leads are posted at a fixed rate over
keep-alive connections; each lead has its own number, which the Originate's Channel carries,
so the time from writing the POST to the PBX reading the Originate is measured per lead with
one clock (CLOCK_MONOTONIC) across processes. The two dialers take turns in 1 s blocks, so a
noisy machine's slow minutes fall on both. Clients reject every call at once: only the
dialling is measured, never a manager's availability.

Also measured here: the daemon's event-loop lag while it takes 200 leads/s (its own
``leadrouter_event_loop_lag_seconds`` histogram, samples of the run only) and the highest
intake rate it sustains with bounded latency (every offered lead answered 201 within the
step, the answers' p99 under ``INTAKE_P99_BOUND``).
"""

from __future__ import annotations

import asyncio
import compileall
import contextlib
import gc
import json
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from leadrouter.demo import simulator_settings

TOKEN = "bench-token-0123456789"
# The 200 leads/s run alternates ours and the naive peer's in blocks this long: short enough that
# each one's connections, idle while the other's block runs, stay under REUSE_IDLE_UNDER.
BLOCK_SECONDS = 1.0
INTAKE_P99_BOUND = 0.25  # seconds: a 201 slower than this at p99 is no longer "bounded latency"
LAG_METRIC = "leadrouter_event_loop_lag_seconds"
DIAL_MANAGERS = 1_000
REPO = Path(__file__).resolve().parents[1]
# The daemon's packages (pyproject.toml's, less the simulator).
DAEMON_PACKAGES = ("ami_adapter", "api", "config", "dialer", "events", "leadrouter", "recordings", "router", "storage")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User and system CPU time the process used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_ticks() -> tuple[int, int]:
    """The machine's CPU time so far in clock ticks (/proc/stat): (all of it, the share the hypervisor
    stole for other guests). On a shared VM stolen time stretches latencies, ours and the naive peer's
    alike, without any code changing: the runs' steal says how far to trust their milliseconds."""
    ticks = [int(field) for field in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(ticks[:8]), ticks[7]  # user nice system idle iowait irq softirq steal (guests are in user)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class Child:
    """A child process of the benchmark, spoken to over its stdin and stdout lines."""

    def __init__(self, process: asyncio.subprocess.Process, stop_signal: int = signal.SIGTERM) -> None:
        self.process = process
        self.stop_signal = stop_signal

    @classmethod
    async def start(cls, *args: str, cwd: Path | None = None, stop_signal: int = signal.SIGTERM) -> Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=cwd,
        )
        return cls(process, stop_signal)

    async def line(self) -> str:
        assert self.process.stdout is not None
        return (await asyncio.wait_for(self.process.stdout.readline(), 60)).decode().strip()

    async def ask(self, command: str) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()
        return await self.line()

    async def stop(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(self.stop_signal)
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


@contextlib.asynccontextmanager
async def fake_pbx(clients: str = "busy") -> AsyncIterator[tuple[Child, int]]:
    child = await Child.start("-m", "bench.fake_pbx", "--clients", clients)
    try:
        yield child, int(await child.line())
    finally:
        await child.stop()


def routing_yaml(managers: int) -> str:
    listed = [{"id": f"m{n}", "name": f"Manager {n}", "extension": str(10_000 + n)} for n in range(managers)]
    # Calls end at once (busy clients); a retry an hour later never falls within a run.
    scenario = {"name": "default", "max_attempts": 3, "retry_delays": ["1h"], "ring_timeout": "20s"}
    return yaml.safe_dump({"version": 1, "managers": listed, "scenarios": [scenario]}, sort_keys=False)


def write_daemon_config(folder: Path, ami_port: int, managers: int) -> int:
    """leadrouter.yaml and routing.yaml for a daemon in ``folder``; returns its HTTP port."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "routing.yaml").write_text(routing_yaml(managers))
    port = free_port()
    settings = simulator_settings(ami_port=ami_port, database=folder / "leadrouter.db", mqtt_port=None, token=TOKEN)
    settings |= {"routing_file": "routing.yaml", "log": {"level": "error"}}
    settings["http"] |= {"port": port}
    settings["phones"] = {"max_leads_per_number": 1000}
    settings["pbx"] |= {"max_channels": 2000}
    (folder / "leadrouter.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    return port


def compile_daemon() -> None:
    """The daemon's bytecode, as an installed daemon has it (pip compiles what it installs; the
    libraries' is there already). Where PYTHONDONTWRITEBYTECODE is set, as on the machine these
    figures come from, each start would otherwise compile ~90 of our modules again: ~0.1 s of the
    start's CPU that no deployment spends. Files compiled already are skipped."""
    for package in DAEMON_PACKAGES:
        compileall.compile_dir(REPO / package, quiet=1)


@contextlib.asynccontextmanager
async def daemon(folder: Path, ami_port: int, *, managers: int = 50) -> AsyncIterator[tuple[Child, int, float]]:
    """``leadrouter run`` on its own SQLite file: (process, HTTP port, seconds from exec to a healthy /health)."""
    compile_daemon()
    port = write_daemon_config(folder, ami_port, managers)
    started = time.perf_counter()
    command = ["-m", "leadrouter", "run", "--config", "leadrouter.yaml"]
    if profile := os.environ.get("BENCH_PROFILE"):  # py-spy's collapsed stacks of the daemon, into this file
        spy = str(Path(sys.executable).parent / "py-spy")
        command = [
            spy,
            "record",
            "--nonblocking",
            *(["--idle"] if os.environ.get("BENCH_PROFILE_IDLE") else []),
            "--format",
            "raw",
            "--rate",
            os.environ.get("BENCH_PROFILE_RATE", "250"),
            "-o",
            profile,
            "--",
            sys.executable,
            *command,
        ]
        # SIGINT: py-spy writes its profile and passes the signal on to the daemon.
        child = Child(
            await asyncio.create_subprocess_exec(*command, stdin=asyncio.subprocess.PIPE, cwd=folder), signal.SIGINT
        )
    else:
        # Killed: a drain would wait for the benchmark's live calls, and nothing of the stop is measured.
        child = await Child.start(*command, cwd=folder, stop_signal=signal.SIGKILL)
    try:
        for _ in range(6000):
            if child.process.returncode is not None:
                raise RuntimeError(f"the daemon exited ({child.process.returncode})")
            with contextlib.suppress(OSError):
                status, _ = await http_get(port, "/health")
                if status == 200:
                    break
            await asyncio.sleep(0.01)
        else:
            raise RuntimeError("the daemon did not become healthy within 60 s")
        yield child, port, time.perf_counter() - started
    finally:
        await child.stop()


@contextlib.asynccontextmanager
async def naive(folder: Path, ami_port: int) -> AsyncIterator[int]:
    child = await Child.start("-m", "bench.naive_dialer", str(ami_port), str(folder / "naive.db"))
    try:
        yield int(await child.line())
    finally:
        await child.stop()


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        data = await reader.read()
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@dataclass
class Posted:
    """What the load generator saw of one run: per number, when its POST left and how long its answer took."""

    sent: dict[str, float] = field(default_factory=dict)
    answered: dict[str, float] = field(default_factory=dict)
    refused: int = 0
    elapsed: float = 0.0

    def add(self, other: Posted) -> None:
        """Another block's, of other numbers, into this one."""
        self.sent |= other.sent
        self.answered |= other.answered
        self.refused += other.refused
        self.elapsed += other.elapsed


# The daemon closes a keep-alive connection idle for http.keep_alive (5 s): one idle for longer
# than this is not reused, or a request written as the server closes it would get no answer.
REUSE_IDLE_UNDER = 2.0


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.idle_since = time.perf_counter()

    async def answer(self) -> int:
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await self.reader.readexactly(length)
        return status


async def post_leads(port: int, numbers: list[str], rate: float, keep: list[_Connection] | None = None) -> Posted:
    """POST every number at ``rate`` a second, each when its time comes, on idle keep-alive connections:
    those of ``keep``, left open there for the next call (the caller closes them), else its own."""
    # The instrument, not the measured: a full collection of the generator's heap (40-45 ms here)
    # would hold a POST between its stamp and its write, whichever dialer it was for.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return await _post_leads(port, numbers, rate, keep)
    finally:
        if collecting:
            gc.enable()


async def _post_leads(port: int, numbers: list[str], rate: float, keep: list[_Connection] | None) -> Posted:
    posted = Posted()
    idle: list[_Connection] = [] if keep is None else keep
    pending: set[asyncio.Task[None]] = set()

    async def one(number: str, connection: _Connection, request: bytes) -> None:
        posted.sent[number] = time.perf_counter()
        connection.writer.write(request)
        status = await connection.answer()
        if status == 201:
            posted.answered[number] = time.perf_counter() - posted.sent[number]
        else:
            posted.refused += 1
        connection.idle_since = time.perf_counter()
        idle.append(connection)

    started = time.perf_counter()
    for index, number in enumerate(numbers):
        due = started + index / rate
        if (wait := due - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        body = json.dumps({"phone": f"+{number}", "source": "bench"}).encode()
        request = (
            b"POST /leads HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer %s\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (TOKEN.encode(), len(body), body)
        )
        while idle and time.perf_counter() - idle[-1].idle_since > REUSE_IDLE_UNDER:
            idle.pop().writer.close()
        connection = idle.pop() if idle else _Connection(*await asyncio.open_connection("127.0.0.1", port))
        task = asyncio.create_task(one(number, connection, request))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending, timeout=60)
    posted.elapsed = time.perf_counter() - started
    if keep is None:
        for connection in idle:
            connection.writer.close()
    return posted


async def originate_stamps(pbx: Child, expected: set[str], limit: float = 30.0) -> dict[str, float]:
    """The PBX's arrival stamps of ``expected`` numbers; waits until all arrived or ``limit`` passes."""
    stamps: dict[str, float] = {}
    deadline = time.perf_counter() + limit
    while not expected <= stamps.keys() and time.perf_counter() < deadline:
        stamps |= json.loads(await pbx.ask("stamps"))
        await asyncio.sleep(0.05)
    return stamps


def dial_latencies(posted: Posted, stamps: dict[str, float]) -> list[float]:
    return [stamps[number] - sent for number, sent in posted.sent.items() if number in stamps]


def numbers(prefix: int, count: int) -> list[str]:
    """Distinct Moscow mobile numbers: 7916 then seven digits, ``prefix`` apart per run."""
    return [f"7916{prefix:03d}{n:04d}" for n in range(count)]


def lag_buckets(exposition: str) -> dict[float, float]:
    buckets = {}
    for line in exposition.splitlines():
        if line.startswith(f"{LAG_METRIC}_bucket"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float(bound)] = float(line.rsplit(" ", 1)[1])
    return buckets


def lag_p99(before: dict[float, float], after: dict[float, float]) -> float:
    """The p99 of the lag samples taken between two scrapes: the upper bound of its bucket, in seconds."""
    counts = sorted((bound, after[bound] - before.get(bound, 0.0)) for bound in after)
    total = counts[-1][1]
    if total <= 0:
        return 0.0
    return next(bound for bound, cumulative in counts if cumulative >= 0.99 * total)


@dataclass
class DialFigures:
    ours: list[float]
    answers: list[float]  # POST to its 201, ours
    naive: list[float]
    lag_p99_s: float
    cpu_per_lead_s: float  # the daemon's CPU time over the 200 leads/s run, per lead
    steal_share: float  # of the machine's CPU time over both 200 leads/s runs, what the hypervisor stole
    intake_max: float
    startup_s: float


async def _intake_max(port: int, rates: list[float], seconds: float, first: int, lost: Callable[[], None]) -> float:
    best = 0.0
    for step, rate in enumerate(rates):
        count = int(rate * seconds)
        posted = await post_leads(port, numbers(first + step, count), rate)
        answered = list(posted.answered.values())
        bounded = len(answered) == count and percentile(answered, 0.99) <= INTAKE_P99_BOUND
        bounded = bounded and posted.elapsed <= seconds * 1.1 + INTAKE_P99_BOUND
        if not bounded:
            break
        best = rate
    lost()
    return best


async def run(*, rate: float, seconds: float, intake_rates: list[float], intake_seconds: float) -> DialFigures:
    count = int(rate * seconds)
    with tempfile.TemporaryDirectory(prefix="lr-bench-dial-") as tmp:
        folder = Path(tmp)
        async with fake_pbx() as (pbx, ami_port), naive(folder, ami_port) as naive_port:
            # Enough managers that every lead has a free one: what is measured is the daemon's
            # own delay, not a wait for a manager (a lead dials only when one is free).
            async with daemon(folder / "daemon", ami_port, managers=DIAL_MANAGERS) as (process, port, startup):
                # Warm both (connections, caches) with a few leads, then alternate: ours, naive.
                await post_leads(port, numbers(900, 20), 50)
                await post_leads(naive_port, numbers(901, 20), 50)
                await originate_stamps(pbx, set(), 0)
                ours_posted, naive_posted = Posted(), Posted()
                ours_stamps: dict[str, float] = {}
                naive_stamps: dict[str, float] = {}
                lag_samples: dict[float, float] = {}  # the daemon's lag histogram over its own blocks
                cpu = 0.0
                ticks_before = cpu_ticks()
                # Alternating blocks, ours then the naive peer's: the machine's slower and faster
                # minutes (the naive p50 alone moved 0.31-0.60 ms between runs on one VM) fall on both.
                blocks = max(1, round(seconds / BLOCK_SECONDS))
                ours_idle: list[_Connection] = []  # kept from block to block, as one run keeps them
                naive_idle: list[_Connection] = []
                for block in range(blocks):
                    _, text = await http_get(port, "/metrics")
                    before = lag_buckets(text.decode())
                    cpu_before = cpu_seconds(process.process.pid)
                    posted = await post_leads(port, numbers(100 + block, count // blocks), rate, ours_idle)
                    ours_stamps |= await originate_stamps(pbx, set(posted.sent))
                    cpu += cpu_seconds(process.process.pid) - cpu_before
                    _, text = await http_get(port, "/metrics")
                    for bound, samples in lag_buckets(text.decode()).items():
                        lag_samples[bound] = lag_samples.get(bound, 0.0) + samples - before.get(bound, 0.0)
                    ours_posted.add(posted)
                    posted = await post_leads(naive_port, numbers(200 + block, count // blocks), rate, naive_idle)
                    naive_stamps |= await originate_stamps(pbx, set(posted.sent))
                    naive_posted.add(posted)
                for connection in (*ours_idle, *naive_idle):
                    connection.writer.close()
                cpu /= len(ours_posted.sent)
                lag = lag_p99({}, lag_samples)
                (total, stolen), (total_before, stolen_before) = cpu_ticks(), ticks_before
                steal = (stolen - stolen_before) / max(total - total_before, 1)
                intake = await _intake_max(port, intake_rates, intake_seconds, 300, lambda: None)
        ours, theirs = dial_latencies(ours_posted, ours_stamps), dial_latencies(naive_posted, naive_stamps)
        sent = len(ours_posted.sent)
        if len(ours) != sent or len(theirs) != len(naive_posted.sent):
            raise RuntimeError(
                f"Originates missing: ours {sent - len(ours)}, naive {len(naive_posted.sent) - len(theirs)} of {sent}"
            )
    return DialFigures(ours, list(ours_posted.answered.values()), theirs, lag, cpu, steal, intake, startup)


def summary(figures: DialFigures) -> dict[str, float]:
    ms = 1000.0
    return {
        "dial_p50_ms_200": round(statistics.median(figures.ours) * ms, 3),
        "dial_p99_ms_200": round(percentile(figures.ours, 0.99) * ms, 3),
        "post_p50_ms_200": round(statistics.median(figures.answers) * ms, 3),
        "naive_dial_p50_ms_200": round(statistics.median(figures.naive) * ms, 3),
        "naive_dial_p99_ms_200": round(percentile(figures.naive, 0.99) * ms, 3),
        "loop_lag_p99_ms_200": round(figures.lag_p99_s * ms, 3),
        "daemon_cpu_ms_per_lead_200": round(figures.cpu_per_lead_s * ms, 3),
        "steal_pct_200": round(figures.steal_share * 100, 1),
        "intake_max_leads_per_s": figures.intake_max,
    }


if __name__ == "__main__":
    result = asyncio.run(run(rate=200, seconds=5, intake_rates=[400, 800, 1200], intake_seconds=2))
    print(json.dumps(summary(result), indent=2))
    os._exit(0)
