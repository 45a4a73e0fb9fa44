"""The parts a chaos run strikes: the PBX simulator, mosquitto and the daemon process, each restartable."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

import httpx

from ami_adapter.asterisk import SHIPPED_DIALPLAN
from bench.chaos.invariants import ClientLeg
from leadrouter.broker import free_port, private_mosquitto
from pbxsim import ChannelRecord, ScaledClock, Simulator, World

CLIENTS = "sim-clients"  # the contexts the simulator's World answers for
MANAGERS = "sim-managers"
READY_WITHIN = 30.0  # seconds a (re)started daemon has to answer HTTP
STALL = 3.0  # seconds of a hung PBX: longer than the daemon's ping interval + timeout (1 s + 1 s, harness.write_config)

Say = Callable[[str], None]


class Pbx:
    """The simulated Asterisk on one port, restartable; it keeps what every incarnation saw."""

    def __init__(self, clock: ScaledClock, world: World) -> None:
        self.clock = clock
        self.world = world
        self.port = 0  # the first start picks a free port, restarts reuse it
        self.sim: Simulator | None = None
        self._lock = asyncio.Lock()  # one fault at a time on the PBX
        self._history: list[ChannelRecord] = []
        self._originated: set[str] = set()

    async def start(self) -> None:
        # record=True: the Originates the PBX read are evidence (what reached it, not what we sent).
        sim = Simulator(
            clock=self.clock,
            dialplan=SHIPPED_DIALPLAN,
            world=self.world,
            port=self.port,
            timestamp_events=True,
            record=True,
        )
        await sim.start()
        self.port, self.sim = sim.port, sim

    async def stop(self) -> None:
        sim, self.sim = self.sim, None
        if sim is not None:
            await sim.close()
            self._history += sim.channel_history()
            self._originated |= _originate_ids(sim)

    async def restart(self, down: float) -> None:
        """A PBX restart: every call gone at once, the AMI port closed for ``down`` seconds."""
        async with self._lock:
            await self.stop()
            await asyncio.sleep(down)
            await self.start()

    async def cut(self, kind: str, say: Say) -> bool:
        """Drop the AMI sessions, or hang for STALL seconds; False (nothing done) when no client is logged in."""
        async with self._lock:
            if self.sim is None or not self.sim.logged_in():
                return False
            say("AMI sessions dropped" if kind == "drop" else f"PBX hangs for {STALL:g}s")
            if kind == "drop":
                await self.sim.drop_connections()
            else:
                self.sim.stall(True)
                await asyncio.sleep(STALL)
                self.sim.stall(False)
            return True

    def history(self) -> list[ChannelRecord]:
        return self._history + (self.sim.channel_history() if self.sim else [])

    def originated(self) -> set[str]:
        return self._originated | (_originate_ids(self.sim) if self.sim else set())

    def managers_up(self) -> set[str]:
        """Extensions of the managers' phones with a channel up right now."""
        live = self.sim.live_channels() if self.sim else []
        return {_dialled(channel.name) for channel in live if f"@{MANAGERS}-" in channel.name}


def _is_client_leg(channel: str) -> bool:
    """The ;1 half of a Local/<number>@sim-clients pair: the leg the daemon originated to a client."""
    return f"@{CLIENTS}-" in channel and channel.endswith(";1")


def _dialled(channel: str) -> str:
    """What a Local/<exten>@<context>-<seq>;<half> channel dialled: a client number or a manager extension."""
    return channel.removeprefix("Local/").partition("@")[0]


def _originate_ids(sim: Simulator) -> set[str]:
    ids = set()
    for message in sim.received:
        headers = {key.lower(): value.strip() for key, value in message}
        if headers.get("action", "").lower() == "originate" and headers.get("channelid"):
            ids.add(headers["channelid"])
    return ids


class Broker:
    """A private mosquitto on one port that keeps sessions and queued messages across its restarts."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.port = free_port()
        self._running: contextlib.AbstractContextManager[int] | None = None

    async def start(self) -> None:
        running = private_mosquitto(self.port, self.state_dir)
        # Starting and stopping mosquitto blocks; the simulator on this loop must not stall meanwhile.
        await asyncio.to_thread(running.__enter__)
        self._running = running

    async def stop(self) -> None:
        running, self._running = self._running, None
        if running is not None:
            await asyncio.to_thread(running.__exit__, None, None, None)


class DaemonProcess:
    """``leadrouter run --config FILE`` as systemd would start it; ``kill9`` is a real SIGKILL."""

    def __init__(self, config: Path, log: Path, http: httpx.AsyncClient) -> None:
        self.config = config
        self.log = log
        self.http = http
        self._proc: asyncio.subprocess.Process | None = None
        self._log_file: IO[bytes] | None = None

    async def start(self) -> None:
        self._log_file = self.log.open("ab")
        self._log_file.write(f"---- start at {time.strftime('%H:%M:%S')}\n".encode())
        self._log_file.flush()
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "leadrouter.cli", "run", "--config", str(self.config),
            stdout=self._log_file, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + READY_WITHIN
        while time.monotonic() < deadline:
            if self._proc.returncode is not None:
                raise RuntimeError(f"the daemon exited with {self._proc.returncode} while starting; see {self.log}")
            # Any answer will do: /health may well say "unhealthy" while the PBX or the broker is down.
            with contextlib.suppress(httpx.TransportError):
                await self.http.get("/health")
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"the daemon did not answer /health within {READY_WITHIN:g}s; see {self.log}")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def kill9(self) -> None:
        await self._end(signal.SIGKILL, 5.0)

    async def stop(self) -> None:
        """SIGTERM as systemd stops it; SIGKILL if it does not exit in time."""
        with contextlib.suppress(TimeoutError):
            await self._end(signal.SIGTERM, 15.0)
        await self.kill9()

    async def _end(self, sig: int, within: float) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(sig)
            await asyncio.wait_for(proc.wait(), within)
        if proc is not None and proc.returncode is not None and self._log_file is not None:
            self._log_file.close()
            self._proc = self._log_file = None


def client_legs(records: list[ChannelRecord], lead_of: Mapping[str, int]) -> list[ClientLeg]:
    """The client legs among a PBX's channels.

    Each lead has a number of its own, so the number the PBX dialled says whose leg it is,
    without trusting the lead id the daemon put in the channel's variables.
    """
    legs = []
    for record in records:
        if not _is_client_leg(record.name):
            continue
        legs.append(
            ClientLeg(
                channel_id=record.uniqueid,
                lead_id=lead_of.get(_dialled(record.name)),
                created=record.created,
                answered=record.answered,
                ended=record.ended,
                bridged=record.variables.get("DIALSTATUS") == "ANSWER",
                shut_down=record.shut_down,
            )
        )
    return legs
