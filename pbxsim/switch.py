"""The simulated Asterisk core: Local channel pairs, the dialplan interpreter, Dial, bridges, hangups, CDRs.

Everything runs on one asyncio loop, so the order of the events is the order of the code below.
Where real Asterisk interleaves its threads differently between runs, the order follows
tests/fixtures/ami/client_first.txt.

Each channel that runs dialplan has one task. An application that has to wait (Wait, Dial,
MusicOnHold...) blocks on the channel's ``waker`` future; hangups and redirects set a flag on the
channel and complete that future, and the dialplan loop acts on the flags.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import re
import uuid
import wave
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .channel import (
    BUSY,
    CAUSE_TEXT,
    CONGESTION,
    DOWN,
    NO_ANSWER,
    NORMAL_CLEARING,
    RING,
    RINGING,
    STATE_DESC,
    UNKNOWN,
    UP,
    USER_BUSY,
    Bridge,
    CdrSegment,
    Channel,
    Dialing,
)
from .clock import ScaledClock
from .dialplan import Dialplan, split_args, substitute, truthy
from .wire import CALL, CDR, DIALPLAN, USER, EventBus
from .world import Behaviour, World

log = logging.getLogger(__name__)

# SoftHangupRequest always carries 16 in the transcripts, whatever the hangup cause.
SOFT_HANGUP_CAUSE = "16"
# Answer() waits up to 0.5 s for the first voice frame; one arrives a frame (20 ms) after the
# other half of a Local pair starts music on hold or a prompt (shipped/connect.txt: the client's
# Answer returns 20 ms after its ;1 starts MusicOnHold, the manager's after 0.5 s of silence).
ANSWER_MEDIA_WAIT = 0.5
MEDIA_FRAME = 0.02
# How long a refusing simulated phone plays busy/congestion before hanging up (Busy(5) in the transcripts).
REFUSE_LINGER = 5.0
# Playback of the apology prompt: the recording Asterisk's leadrouter/all-busy lasts 1.5 s
# (shipped/apology.txt); the simulator has no sound files to measure. The others the recording
# Asterisk had (start-asterisk makes them with sox): beep, 0.3 s (shipped/amd_human.txt).
PLAYBACK_SECONDS = 1.5
SOUND_SECONDS = {"beep": 0.3, "leadrouter/all-busy": 1.5}
# AMD() with amd.conf's defaults (the recording Asterisk's): milliseconds.
AMD_GREETING = 1500  # voice longer than this: a machine's greeting (LONGGREETING)
AMD_AFTER_GREETING_SILENCE = 800  # this much silence after a short greeting: a person (HUMAN)
AMD_INITIAL_SILENCE = 2500  # silence before any voice: a machine (INITIALSILENCE)
AMD_TOTAL = 5000  # no verdict by then: NOTSURE (TOOLONG); with no frames at all after 5.0 s, "TOOLONG-4900"
AMD_NO_FRAME_WAIT = 100  # AMD waits twice maxWaitTimeForFrame (50 ms) for a frame, then counts the wait
MONITOR_DIR = "/var/spool/asterisk/monitor/"
DEFAULT_ORIGINATE_TIMEOUT = 30.0
# Dialplan steps run back to back without awaiting; yield now and then so a Goto loop cannot freeze the loop.
STEPS_BEFORE_YIELD = 64

DIAL_VARIABLES = (
    "DIALSTATUS",
    "DIALEDPEERNUMBER",
    "DIALEDPEERNAME",
    "ANSWEREDTIME",
    "ANSWEREDTIME_MS",
    "DIALEDTIME",
    "DIALEDTIME_MS",
    "RINGTIME",
    "RINGTIME_MS",
    "PROGRESSTIME",
    "PROGRESSTIME_MS",
)
# How cdr.conf's defaults turn a Dial status into a CDR disposition.
DISPOSITION = {
    "ANSWER": "ANSWERED",
    "BUSY": "BUSY",
    "NOANSWER": "NO ANSWER",
    "CANCEL": "NO ANSWER",
    "CONGESTION": "FAILED",
    "CHANUNAVAIL": "FAILED",
}
ORIGINATE_REASON = {"BUSY": 5, "CONGESTION": 8, "HANGUP": 1}


class Flow(enum.Enum):
    NEXT = enum.auto()  # continue at the next priority
    JUMPED = enum.auto()  # the application moved the channel itself
    HANGUP = enum.auto()


@dataclass(frozen=True)
class OriginateRequest:
    channel: str
    context: str
    exten: str
    priority: int
    timeout: float  # seconds
    caller_num: str
    caller_name: str
    variables: tuple[tuple[str, str], ...]
    channel_id: str
    other_channel_id: str
    action_id: str | None
    asynchronous: bool


@dataclass(frozen=True)
class ChannelInfo:
    """A live channel as tests see it."""

    name: str
    uniqueid: str
    linkedid: str
    state: str
    context: str
    exten: str
    priority: int
    application: str
    bridge_id: str
    caller_num: str = ""
    caller_name: str = ""  # what the phone on this channel shows


@dataclass
class ChannelRecord:
    """One channel's life on this PBX, kept after it is gone: what a test audits a run against."""

    name: str
    uniqueid: str
    # The channel's own variables (the same dict while it lives: what an Originate set, the
    # DIALSTATUS its last Dial left...), as they were when it ended.
    variables: dict[str, str]
    created: datetime
    answered: datetime | None = None
    ended: datetime | None = None  # None while it lives
    cause: int = 0  # its hangup cause
    # It never hung up: the PBX stopped under it (Simulator.close, a restart's first half).
    shut_down: bool = False


App = Callable[[Channel, str], Awaitable[Flow]]


class Switch:
    def __init__(
        self,
        *,
        clock: ScaledClock,
        dialplan: Dialplan,
        world: World,
        bus: EventBus,
        astdb: dict[str, str] | None = None,
        recordings: Path | None = None,
    ) -> None:
        self.clock = clock
        # MixMonitor's folder (Asterisk's /var/spool/asterisk/monitor): with one, each recording
        # is written there as a real WAV when it stops; without, only its events are sent.
        self.recordings = recordings
        self._recording: dict[str, tuple[str, float]] = {}  # channel name -> file, clock start
        self.dialplan = dialplan
        self.world = world
        self.bus = bus
        self.globals = dict(dialplan.globals)
        # AstDB ("/family/key" -> value): on disk in Asterisk, so the Simulator keeps it across restarts.
        self.astdb = astdb if astdb is not None else {}
        self.channels: dict[str, Channel] = {}
        self._by_uniqueid: dict[str, Channel] = {}
        self.history: list[ChannelRecord] = []  # every channel ever made, in order
        self._records: dict[str, ChannelRecord] = {}  # the live channels' entries in history, by name
        self._local_seq = 0
        self._channel_seq = 0
        self._in_use: dict[str, int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.stopping = False  # core stop/restart: calls are being hung up, none can be placed
        self._apps: dict[str, App] = {
            "noop": self._app_noop,
            "answer": self._app_answer,
            "wait": self._app_wait,
            "hangup": self._app_hangup,
            "busy": self._app_busy,
            "congestion": self._app_congestion,
            "ringing": self._app_ringing,
            "goto": self._app_goto,
            "gotoif": self._app_gotoif,
            "set": self._app_set,
            "mixmonitor": self._app_mixmonitor,
            "stopmixmonitor": self._app_stopmixmonitor,
            "dial": self._app_dial,
            "musiconhold": self._app_musiconhold,
            "playback": self._app_playback,
            "playtones": self._app_playtones,
            "amd": self._app_amd,
            "userevent": self._app_userevent,
            "simclient": self._app_simclient,
            "simmanager": self._app_simmanager,
            "dbdeltree": self._app_dbdeltree,
            "simcaller": self._app_simcaller,
        }

    # ---- what the AMI actions use ----

    def find(self, name_or_uniqueid: str) -> Channel | None:
        return self.channels.get(name_or_uniqueid) or self._by_uniqueid.get(name_or_uniqueid)

    def uniqueid_in_use(self, uniqueid: str) -> bool:
        return uniqueid in self._by_uniqueid

    def live(self) -> list[ChannelInfo]:
        return [
            ChannelInfo(
                name=chan.name,
                uniqueid=chan.uniqueid,
                linkedid=chan.linkedid,
                state=STATE_DESC.get(chan.state, "Unknown"),
                context=chan.context,
                exten=chan.exten,
                priority=chan.priority,
                application=chan.app,
                bridge_id=chan.bridge.uniqueid if chan.bridge else "",
                caller_num=chan.caller_num,
                caller_name=chan.caller_name,
            )
            for chan in self.channels.values()
        ]

    def originate(self, request: OriginateRequest) -> asyncio.Task[bool]:
        return self._spawn(self._originate(request))

    def can_redirect(self, chan: Channel) -> bool:
        """Only a channel running dialplan, or bridged, can be sent elsewhere (not one still ringing)."""
        return chan.dialplan_task is not None or chan.bridge is not None

    def redirect(self, chan: Channel, context: str, exten: str, priority: int) -> None:
        if chan.dialplan_task is not None:
            chan.pending_goto = (context, exten, priority)
            chan.interrupt()
            return
        # A dialed leg in a bridge leaves it to run dialplan; the caller's Dial sees the bridge end.
        self._bridge_leave(chan)
        chan.context, chan.exten, chan.priority = context, exten, priority
        self._start_dialplan(chan)

    def hangup(self, chan: Channel, cause: int) -> None:
        if cause > 0:
            chan.cause = cause
        self._soft_request(chan)
        self._kick(chan)

    def set_variable(self, chan: Channel | None, name: str, value: str) -> None:
        if chan is None:
            self.globals[name] = value
        else:
            self._setvar(chan, name, value)

    def get_variable(self, chan: Channel | None, name: str) -> str:
        return self.globals.get(name, "") if chan is None else self._resolve(chan, name)

    def duration(self, chan: Channel) -> int:
        return int(self.clock.monotonic() - chan.created_mono)

    def shut_down(self) -> None:
        """Hang up every channel as a stopping Asterisk does: cause 0, and Reason 0 for Originates."""
        self.stopping = True
        for chan in list(self.channels.values()):
            self.hangup(chan, 0)

    async def close(self) -> None:
        """Stop every call without further events (the AMI sessions are already gone)."""
        stopped = self.clock.now()
        for record in self._records.values():
            record.ended, record.shut_down = stopped, True
        self._records.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.channels.clear()
        self._by_uniqueid.clear()

    # ---- events ----

    def _publish(self, category: str, event: str, headers: list[tuple[str, str]]) -> None:
        if self.bus.wants(category):
            self.bus.publish(category, event, headers)

    def _chan_event(self, event: str, chan: Channel, *extra: tuple[str, str]) -> None:
        if self.bus.wants(CALL):
            self.bus.publish(CALL, event, [*chan.snapshot(), *extra])

    def _dial_event(self, event: str, caller: Channel | None, dest: Channel, last: tuple[str, str]) -> None:
        if self.bus.wants(CALL):
            headers = caller.snapshot() if caller is not None else []
            self.bus.publish(CALL, event, [*headers, *dest.prefixed("Dest"), last])

    def _setvar(self, chan: Channel, name: str, value: str) -> None:
        # Setting a variable again makes it the most recent one: Asterisk moves it to its list's head.
        chan.variables.pop(name, None)
        chan.variables[name] = value
        if self.bus.wants(DIALPLAN):
            self.bus.publish(DIALPLAN, "VarSet", [*chan.snapshot(), ("Variable", name), ("Value", value)])

    def _newexten(self, chan: Channel, app: str, data: str) -> None:
        chan.app = app
        chan.appdata = data
        if self.bus.wants(DIALPLAN):
            self.bus.publish(
                DIALPLAN,
                "Newexten",
                [*chan.snapshot(), ("Extension", chan.exten), ("Application", app), ("AppData", data)],
            )

    def _set_state(self, chan: Channel, state: int) -> None:
        chan.state = state
        self._chan_event("Newstate", chan)
        self._devstate_changed(chan)

    def _set_caller(self, chan: Channel, caller: tuple[str, str], connected: tuple[str, str]) -> None:
        self._announce_caller(chan, *self._assign_caller(chan, caller, connected))

    @staticmethod
    def _assign_caller(chan: Channel, caller: tuple[str, str], connected: tuple[str, str]) -> tuple[bool, bool]:
        changed = (caller != (chan.caller_num, chan.caller_name), connected != (chan.conn_num, chan.conn_name))
        chan.caller_num, chan.caller_name = caller
        chan.conn_num, chan.conn_name = connected
        return changed

    def _announce_caller(self, chan: Channel, caller_changed: bool, connected_changed: bool) -> None:
        if caller_changed:
            self._chan_event("NewCallerid", chan, ("CID-CallingPres", "0 (Presentation Allowed, Not Screened)"))
        if connected_changed:
            self._chan_event("NewConnectedLine", chan)

    def _devstate_changed(self, chan: Channel) -> None:
        # Asterisk computes device state on a task processor, after the change that triggered it;
        # each channel of a Local pair triggers its own computation, hence the duplicate events.
        asyncio.get_running_loop().call_soon(self._publish_devstate, chan.device)

    def _publish_devstate(self, device: str) -> None:
        if not self.bus.wants(CALL):
            return
        exten, _, context = device.removeprefix("Local/").partition("@")
        if device in self._in_use:
            state = "INUSE"
        elif self.dialplan.extension(context, exten) is not None:
            state = "NOT_INUSE"
        else:
            state = "INVALID"
        self.bus.publish(CALL, "DeviceStateChange", [("Device", device), ("State", state)])

    # ---- channels ----

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _uniqueid(self, assigned: str) -> str:
        # Like Asterisk: every channel takes a number from one counter, even one whose id was assigned.
        seq = self._channel_seq
        self._channel_seq += 1
        return assigned or f"{int(self.clock.now().timestamp())}.{seq}"

    def _new_local(
        self, exten: str, context: str, uid_one: str, uid_two: str, linkedid: str | None, dialed: bool
    ) -> tuple[Channel, Channel]:
        base = f"Local/{exten}@{context}-{self._local_seq:08x}"
        self._local_seq += 1
        now_mono = self.clock.monotonic()
        first = self._uniqueid(uid_one)
        second = self._uniqueid(uid_two or (f"{uid_one};2" if uid_one else ""))
        one, two = (
            Channel(
                name=base + suffix,
                uniqueid=uniqueid,
                linkedid=linkedid or first,
                context=context,
                exten=exten,
                state=state,
                device=f"Local/{exten}@{context}",
                created_mono=now_mono,
            )
            for suffix, uniqueid, state in ((";1", first, DOWN), (";2", second, RING))
        )
        one.partner, two.partner = two, one
        # A leg dialed by Dial() is party B of its caller's CDR and has none of its own.
        if not dialed:
            one.cdr = self._segment(one)
        two.cdr = self._segment(two)
        for chan in (one, two):
            self.channels[chan.name] = chan
            self._by_uniqueid[chan.uniqueid] = chan
            record = ChannelRecord(chan.name, chan.uniqueid, chan.variables, self.clock.now())
            self.history.append(record)
            self._records[chan.name] = record
            self._chan_event("Newchannel", chan)
        return one, two

    def _call_local(self, one: Channel, two: Channel, dialing: Dialing, dial_string: str) -> bool:
        """Start the ;2 half on its dialplan; False (both halves gone) when it has nowhere to go."""
        if self.dialplan.step(two.context, two.exten, 1) is None:
            self._hangup(two, notify_partner=False)
            self._hangup(one, notify_partner=False)
            return False
        # The ;2 half gets a copy of the ;1 half's variables, most recently set first: Asterisk
        # keeps them in a list it inserts at the head of (shipped/connect.txt).
        for name, value in reversed(one.variables.items()):
            self._setvar(two, name, value)
        self._set_caller(two, (one.conn_num, one.conn_name), (one.caller_num, one.caller_name))
        if self.bus.wants(CALL):
            self.bus.publish(
                CALL,
                "LocalBridge",
                [
                    *one.prefixed("LocalOne"),
                    *two.prefixed("LocalTwo"),
                    ("Context", two.context),
                    ("Exten", two.exten),
                    ("LocalOptimization", "Yes"),
                ],
            )
        one.dialing = dialing
        self._dial_event("DialBegin", dialing.dialer, one, ("DialString", dial_string))
        one.in_use = True
        self._in_use[one.device] = self._in_use.get(one.device, 0) + 1
        self._start_dialplan(two)
        return True

    def _start_dialplan(self, chan: Channel) -> None:
        chan.dialplan_task = self._spawn(self._run(chan))

    def _answer(self, chan: Channel) -> None:
        self._mark_answered(chan)
        self._set_state(chan, UP)
        peer = chan.partner
        if chan.name.endswith(";2") and peer is not None and not peer.gone and peer.state != UP:
            self._mark_answered(peer)
            self._set_state(peer, UP)
            if peer.dialing is not None:
                peer.dialing.settle("ANSWER")

    def _mark_answered(self, chan: Channel) -> None:
        chan.answered_mono = self.clock.monotonic()
        record = self._records.get(chan.name)  # None once close() has ended every record
        if record is not None and record.answered is None:
            record.answered = self.clock.now()
        if chan.cdr is not None and chan.cdr.answer is None:
            chan.cdr.answer = self.clock.now()
            chan.cdr.answer_mono = chan.answered_mono

    def _indicate_ringing(self, chan: Channel) -> None:
        peer = chan.partner
        if not chan.name.endswith(";2") or peer is None or peer.gone or peer.state in (UP, RINGING):
            return
        self._set_state(peer, RINGING)
        dialing = peer.dialing
        if dialing is not None and not dialing.rang:
            dialing.rang = True
            # The dialer learns of the ringing when its own thread reads the frame: a little later.
            asyncio.get_running_loop().call_soon(self._report_ringing, peer, dialing)

    def _report_ringing(self, leg: Channel, dialing: Dialing) -> None:
        if leg.dialing is not dialing or dialing.outcome.done():
            return
        caller = dialing.dialer
        if caller is not None:
            elapsed = self.clock.monotonic() - dialing.started
            self._setvar(caller, "RINGTIME", str(int(elapsed)))
            self._setvar(caller, "RINGTIME_MS", str(int(elapsed * 1000)))
        self._dial_event("DialState", caller, leg, ("DialStatus", "RINGING"))

    def _refuse(self, chan: Channel, cause: int, status: str) -> None:
        """Busy()/Congestion(): tell the dialer of the ;1 half, which gives up on the call."""
        if chan.state != UP:
            chan.cause = cause
            self._set_state(chan, BUSY)
        peer = chan.partner
        if chan.name.endswith(";2") and peer is not None and peer.dialing is not None:
            peer.dialing.settle(status)

    def _soft_request(self, chan: Channel) -> None:
        if chan.soft_requested or chan.gone:
            return
        chan.soft_requested = True
        self._chan_event("SoftHangupRequest", chan, ("Cause", SOFT_HANGUP_CAUSE))

    def _kick(self, chan: Channel) -> None:
        """Make a channel act on a hangup it has been asked for, the way its current owner would."""
        if chan.gone:
            return
        chan.hangup_pending = True
        if chan.dialplan_task is not None:
            chan.interrupt()
        elif chan.dialing is not None:
            chan.dialing.settle("HANGUP")
        else:
            self._hangup(chan)

    def _hangup(self, chan: Channel, *, notify_partner: bool = True) -> None:
        if chan.gone:
            return
        if chan.bridge is not None:
            self._bridge_leave(chan)
        chan.gone = True
        chan.hangup_pending = True
        partner = chan.partner if notify_partner and chan.partner is not None else None
        if partner is not None and partner.gone:
            partner = None
        if partner is not None:
            dialled = chan.variables.get("DIALSTATUS")
            if chan.name.endswith(";2") and dialled is not None:
                # core_local.c: a ;2 that ran Dial tells its ;1 how (shipped/inbound.txt).
                self._setvar(partner, "CHANLOCALSTATUS", dialled)
            self._chan_event("HangupRequest", partner, ("Cause", str(chan.cause)))
            if not partner.cause:
                partner.cause = chan.cause
        self._chan_event(
            "Hangup", chan, ("Cause", str(chan.cause)), ("Cause-txt", CAUSE_TEXT.get(chan.cause, "Unknown"))
        )
        self._recording_stopped(chan)  # MixMonitor closes its file when the channel goes
        del self.channels[chan.name]
        self._by_uniqueid.pop(chan.uniqueid, None)
        record = self._records.pop(chan.name, None)
        if record is not None:  # None once close() has ended every record
            record.ended, record.cause = self.clock.now(), chan.cause
        # The pair stops being in use as soon as either half is gone (its ;2 no longer runs the dialplan).
        for half in (chan, chan.partner):
            if half is not None and half.in_use:
                half.in_use = False
                self._in_use[half.device] -= 1
                if not self._in_use[half.device]:
                    del self._in_use[half.device]
        self._devstate_changed(chan)
        if chan.cdr is not None:
            self._post_cdr(chan, chan.cdr, "ANSWERED")
            chan.cdr = None
        if chan.dialing is not None:
            chan.dialing.settle("HANGUP")
        if partner is not None:
            self._kick(partner)

    # ---- bridges ----

    def _bridge_create(self) -> Bridge:
        bridge = Bridge(str(uuid.uuid4()))
        self._publish(CALL, "BridgeCreate", bridge.headers())
        return bridge

    def _bridge_enter(self, bridge: Bridge, chan: Channel) -> None:
        bridge.channels.append(chan)
        chan.bridge = bridge
        if self.bus.wants(CALL):
            self.bus.publish(CALL, "BridgeEnter", [*bridge.headers(), *chan.snapshot()])

    def _bridge_leave(self, chan: Channel) -> None:
        bridge = chan.bridge
        if bridge is None:
            return
        if len(bridge.channels) == 2:
            # The first one out ends the two-party call: both lose their BRIDGEPEER.
            other = bridge.channels[1] if bridge.channels[0] is chan else bridge.channels[0]
            self._setvar(chan, "BRIDGEPEER", "")
            self._setvar(other, "BRIDGEPEER", "")
        bridge.channels.remove(chan)
        chan.bridge = None
        if self.bus.wants(CALL):
            self.bus.publish(CALL, "BridgeLeave", [*bridge.headers(), *chan.snapshot()])
        if not bridge.channels:
            self._publish(CALL, "BridgeDestroy", bridge.headers())
        for remaining in bridge.channels:
            remaining.interrupt()

    # ---- CDRs ----

    def _segment(self, chan: Channel) -> CdrSegment:
        segment = CdrSegment(start=self.clock.now(), start_mono=self.clock.monotonic())
        if chan.state == UP:
            segment.answer, segment.answer_mono = segment.start, segment.start_mono
        return segment

    def _post_cdr(self, chan: Channel, segment: CdrSegment, disposition: str) -> None:
        # cdr.conf's default unanswered=no: a leg that was never answered leaves no record.
        if segment.answer is None or not self.bus.wants(CDR):
            return
        end = self.clock.now()
        end_mono = self.clock.monotonic()
        self.bus.publish(
            CDR,
            "Cdr",
            [
                ("AccountCode", chan.accountcode),
                ("Source", chan.caller_num),
                ("Destination", chan.exten),
                ("DestinationContext", chan.context),
                ("CallerID", f'"{chan.caller_name}" <{chan.caller_num}>'),
                ("Channel", chan.name),
                ("DestinationChannel", segment.dest_channel),
                ("LastApplication", segment.last_app),
                ("LastData", segment.last_data),
                ("StartTime", _cdr_time(segment.start)),
                ("AnswerTime", _cdr_time(segment.answer)),
                ("EndTime", _cdr_time(end)),
                ("Duration", str(int(end_mono - segment.start_mono))),
                ("BillableSeconds", str(int(end_mono - segment.answer_mono))),
                ("Disposition", disposition),
                ("AMAFlags", "DOCUMENTATION"),
                ("UniqueID", chan.uniqueid),
                ("UserField", chan.userfield),
            ],
        )

    # ---- Originate ----

    async def _originate(self, req: OriginateRequest) -> bool:
        tech, _, resource = req.channel.partition("/")
        # Only Local channels exist here; anything else fails as an unknown technology does.
        if tech.lower() != "local" or "@" not in resource:
            return self._originate_failed(req, 0, req.channel_id)
        exten, _, context = resource.partition("@")
        one, two = self._new_local(exten, context, req.channel_id, req.other_channel_id, None, dialed=False)
        self._newexten(one, "AppDial2", "(Outgoing Line)")
        # Asterisk sets an Originate's variables last header first (shipped/connect.txt).
        for name, value in reversed(req.variables):
            self._setvar(one, name, value)
        if req.caller_num or req.caller_name:
            caller = (req.caller_num, req.caller_name)
            self._set_caller(one, caller, (one.conn_num, one.conn_name))
            self._set_caller(one, caller, caller)
        loop = asyncio.get_running_loop()
        dialing = Dialing(
            loop.create_future(), None, self.clock.monotonic(), on_answer=lambda: self._originate_answered(req, one)
        )
        if not self._call_local(one, two, dialing, resource):
            return self._originate_failed(req, 0, one.uniqueid)
        timed_out = await self._race(req.timeout, dialing.outcome)
        if timed_out:
            one.dialing = None
            one.cause = NO_ANSWER
            self._hangup(one)
            return self._originate_failed(req, 3, one.uniqueid)
        outcome = dialing.outcome.result()
        if outcome == "ANSWER":
            return True  # reported and sent on its way by _originate_answered, at the answer
        one.dialing = None
        if outcome != "HANGUP":
            self._dial_event("DialEnd", None, one, ("DialStatus", outcome))
        self._hangup(one)
        # A stopping Asterisk ends Originates before any frame came back: Reason 0 (no frame).
        return self._originate_failed(req, 0 if self.stopping else ORIGINATE_REASON[outcome], one.uniqueid)

    def _originate_answered(self, req: OriginateRequest, one: Channel) -> None:
        """In the loop turn of the answer, as Asterisk reports it (timestamps.txt: 0.5 ms after
        the channel's Newstate Up), not when the Originate's coroutine next runs."""
        one.dialing = None
        self._dial_event("DialEnd", None, one, ("DialStatus", "ANSWER"))
        if req.asynchronous:
            self._originate_response(req, "Success", one.name, 4, one.uniqueid, one)
        one.context, one.exten, one.priority = req.context, req.exten, req.priority
        self._start_dialplan(one)

    def _originate_failed(self, req: OriginateRequest, reason: int, uniqueid: str) -> bool:
        if req.asynchronous:
            self._originate_response(req, "Failure", req.channel, reason, uniqueid, None)
        return False

    def _originate_response(
        self, req: OriginateRequest, response: str, channel: str, reason: int, uniqueid: str, chan: Channel | None
    ) -> None:
        if not self.bus.wants(CALL):
            return
        num = chan.caller_num if chan is not None else req.caller_num
        name = chan.caller_name if chan is not None else req.caller_name
        headers = [("ActionID", req.action_id)] if req.action_id is not None else []
        headers += [
            ("Response", response),
            ("Channel", channel),
            ("Context", req.context),
            ("Exten", req.exten),
            ("Reason", str(reason)),
            ("Uniqueid", uniqueid),
            ("CallerIDNum", num or UNKNOWN),
            ("CallerIDName", name or UNKNOWN),
        ]
        self.bus.publish(CALL, "OriginateResponse", headers)

    # ---- the dialplan loop ----

    async def _race(self, seconds: float | None, *futures: asyncio.Future[Any]) -> bool:
        """Wait for the first of `futures` or for `seconds`; True when the time ran out first."""
        timer = asyncio.ensure_future(self.clock.sleep(seconds)) if seconds is not None else None
        waits: list[asyncio.Future[Any]] = [*futures, timer] if timer is not None else list(futures)
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if timer is not None:
                timer.cancel()
        return not any(future.done() for future in futures)

    async def _block(self, chan: Channel, seconds: float | None, also: asyncio.Future[Any] | None = None) -> bool:
        """Block an application; True when the time ran out, False when interrupted or `also` completed."""
        if chan.hangup_pending or chan.pending_goto is not None:
            return False
        waker: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        chan.waker = waker
        try:
            if also is None:
                return await self._race(seconds, waker)
            return await self._race(seconds, waker, also)
        finally:
            chan.waker = None

    async def _run(self, chan: Channel) -> None:
        steps = 0
        try:
            while not chan.hangup_pending:
                if chan.pending_goto is not None:
                    chan.context, chan.exten, chan.priority = chan.pending_goto
                    chan.pending_goto = None
                step = self.dialplan.step(chan.context, chan.exten, chan.priority)
                if step is None:
                    # Off the end of the extension (or sent nowhere): Asterisk's autofallthrough hangs up.
                    chan.cause = chan.cause or NORMAL_CLEARING
                    break
                data = substitute(step.args, lambda name: self._resolve(chan, name))
                self._newexten(chan, step.app, data)
                if chan.cdr is not None:
                    chan.cdr.last_app, chan.cdr.last_data = step.app, data
                app = self._apps.get(step.app.lower())
                if app is None:
                    log.warning("%s: no application %r, hanging up", chan.name, step.app)
                    break
                flow = await app(chan, data)
                # An application cut short by a hangup leaves the channel where it was.
                if flow is Flow.HANGUP or chan.hangup_pending:
                    break
                if flow is Flow.NEXT:
                    chan.priority += 1
                steps += 1
                if steps % STEPS_BEFORE_YIELD == 0:
                    await asyncio.sleep(0)
        except Exception:
            log.exception("%s: simulator failure, hanging up", chan.name)
        chan.dialplan_task = None
        self._soft_request(chan)
        try:
            await self._run_hangup_handlers(chan)
        except Exception:
            log.exception("%s: simulator failure in a hangup handler", chan.name)
        self._hangup(chan)

    async def _run_hangup_handlers(self, chan: Channel) -> None:
        """A hung-up channel runs its hangup handlers (last pushed first), each as a Gosub, before
        its Hangup; that Hangup shows the channel where it was when it hung up
        (shipped/call_end_record.txt)."""
        where = chan.context, chan.exten, chan.priority
        while chan.hangup_handlers:
            handler = chan.hangup_handlers.pop()
            self._publish(DIALPLAN, "HangupHandlerRun", [*chan.snapshot(), ("Handler", handler)])
            self._setvar(chan, "LOCAL(ARGC)", "0")
            if self._jump(chan, handler) is not Flow.JUMPED:
                continue
            for _ in range(STEPS_BEFORE_YIELD):
                step = self.dialplan.step(chan.context, chan.exten, chan.priority)
                if step is None:
                    break
                data = substitute(step.args, lambda name: self._resolve(chan, name))
                self._newexten(chan, step.app, data)
                if step.app.lower() == "return":
                    self._setvar(chan, "ARGC", "")
                    self._setvar(chan, "GOSUB_RETVAL", "")
                    break
                app = self._apps.get(step.app.lower())
                if app is None:
                    log.warning("%s: no application %r in a hangup handler", chan.name, step.app)
                    break
                flow = await app(chan, data)
                if flow is Flow.HANGUP:
                    break
                if flow is Flow.NEXT:
                    chan.priority += 1
        chan.context, chan.exten, chan.priority = where

    def _resolve(self, chan: Channel, name: str) -> str:
        match name:
            case "EXTEN":
                return chan.exten
            case "CONTEXT":
                return chan.context
            case "PRIORITY":
                return str(chan.priority)
            case "UNIQUEID":
                return chan.uniqueid
            case "LINKEDID":
                return chan.linkedid
            case "CHANNEL":
                return chan.name
            case "HANGUPCAUSE":
                return str(chan.cause)
            case "CDR(userfield)":
                return chan.userfield
            case "CALLERID(num)":
                return chan.caller_num
            case "CALLERID(name)":
                return chan.caller_name
            case "EPOCH":
                return str(int(self.clock.now().timestamp()))
            case _ if name.startswith("STRFTIME(") and name.endswith(")"):
                return _strftime(name[len("STRFTIME(") : -1], self.clock.now())
            case _ if name.startswith("DB_EXISTS(") and name.endswith(")"):
                value = self.astdb.get("/" + name[len("DB_EXISTS(") : -1])
                if value is None:
                    return "0"
                self._setvar(chan, "DB_RESULT", value)  # func_db sets it only for a key that exists
                return "1"
            case _ if name.startswith("DB_KEYS(") and name.endswith(")"):
                # func_db: the next component of every key under the prefix, once each, sorted.
                prefix = "/" + name[len("DB_KEYS(") : -1].strip("/") + "/"
                below = {key[len(prefix) :].partition("/")[0] for key in self.astdb if key.startswith(prefix)}
                return ",".join(sorted(below))
            case _ if name.startswith("SHIFT(") and name.endswith(")"):
                # func_strings: the first item of a comma-separated variable, which loses it.
                variable = name[len("SHIFT(") : -1].strip()
                value = self._resolve(chan, variable)
                if not value:
                    return ""  # an empty list is left as it is (no VarSet)
                first, _, rest = value.partition(",")
                self._setvar(chan, variable, rest)
                return first
            case _ if name.startswith("FILTER(") and name.endswith(")"):
                allowed, _, text = name[len("FILTER(") : -1].partition(",")
                return "".join(char for char in text if char in _character_class(allowed))
        value = chan.variables.get(name)
        return value if value is not None else self.globals.get(name, "")

    def _jump(self, chan: Channel, target: str) -> Flow:
        parts = [part.strip() for part in target.split(",")]
        context, exten = chan.context, chan.exten
        if len(parts) == 3:
            context, exten = parts[0], parts[1]
        elif len(parts) == 2:
            exten = parts[0]
        priority = self.dialplan.priority(context, exten, parts[-1])
        if priority is None:
            log.warning("%s: cannot go to %r", chan.name, target)
            return Flow.HANGUP
        chan.context, chan.exten, chan.priority = context, exten, priority
        return Flow.JUMPED

    # ---- applications ----

    async def _app_noop(self, chan: Channel, data: str) -> Flow:
        return Flow.NEXT

    async def _app_answer(self, chan: Channel, data: str) -> Flow:
        if chan.state != UP:
            self._answer(chan)
            heard: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            chan.media_waiter = heard
            if self._fed(chan):
                self._media_arrives(chan)
            try:
                await self._block(chan, ANSWER_MEDIA_WAIT, heard)
            finally:
                chan.media_waiter = None
        return Flow.NEXT

    @staticmethod
    def _fed(chan: Channel) -> bool:
        """Whether frames reach ``chan`` as it answers: its Local partner plays or sends silence, or
        the partner is a leg being dialled by a caller whose partner does, which app_dial passes on
        (a client saying nothing in PlayTones(0) feeds the manager's Answer(), shipped/amd_human.txt)."""
        partner = chan.partner
        if partner is None:
            return False
        if partner.playing or partner.silent:
            return True
        caller = partner.dialing.dialer if partner.dialing is not None else None
        source = caller.partner if caller is not None else None
        return source is not None and not source.gone and (source.playing or source.silent)

    def _sending_media(self, chan: Channel, on: bool) -> None:
        """Music on hold or a prompt plays on `chan`: its Local partner hears it."""
        chan.playing = on
        if on and chan.partner is not None and not chan.partner.gone:
            self._media_arrives(chan.partner)

    def _media_arrives(self, listener: Channel) -> None:
        waiter = listener.media_waiter
        if waiter is not None and not waiter.done():
            self.clock.call_later(MEDIA_FRAME, lambda: _settle(waiter))

    async def _app_wait(self, chan: Channel, data: str) -> Flow:
        await self._block(chan, _seconds(data) or 0.0)
        return Flow.NEXT

    async def _app_hangup(self, chan: Channel, data: str) -> Flow:
        if data.strip().isdigit():
            chan.cause = int(data)
        elif not chan.cause:
            chan.cause = NORMAL_CLEARING
        return Flow.HANGUP

    async def _app_busy(self, chan: Channel, data: str) -> Flow:
        self._refuse(chan, USER_BUSY, "BUSY")
        await self._block(chan, _seconds(data))
        return Flow.HANGUP

    async def _app_congestion(self, chan: Channel, data: str) -> Flow:
        self._refuse(chan, CONGESTION, "CONGESTION")
        await self._block(chan, _seconds(data))
        return Flow.HANGUP

    async def _app_ringing(self, chan: Channel, data: str) -> Flow:
        self._indicate_ringing(chan)
        return Flow.NEXT

    async def _app_goto(self, chan: Channel, data: str) -> Flow:
        return self._jump(chan, data)

    async def _app_gotoif(self, chan: Channel, data: str) -> Flow:
        condition, question, branches = data.partition("?")
        if not question:
            log.warning("%s: GotoIf(%s) without '?', ignored", chan.name, data)
            return Flow.NEXT
        if_true, _, if_false = branches.partition(":")
        branch = if_true if truthy(condition.strip()) else if_false
        return self._jump(chan, branch) if branch.strip() else Flow.NEXT

    async def _app_set(self, chan: Channel, data: str) -> Flow:
        name, equals, value = data.partition("=")
        name = name.strip()
        if not equals:
            log.warning("%s: Set(%s) without '=', ignored", chan.name, data)
        elif name.upper() == "CDR(USERFIELD)":
            chan.userfield = value
        elif name.upper() == "CHANNEL(HANGUP_HANDLER_WIPE)":
            # Pops the handlers pushed so far, then pushes this one (shipped/manager_noanswer.txt).
            while chan.hangup_handlers:
                self._publish(DIALPLAN, "HangupHandlerPop", [*chan.snapshot(), ("Handler", chan.hangup_handlers.pop())])
            if value:
                chan.hangup_handlers.append(value)
                self._publish(DIALPLAN, "HangupHandlerPush", [*chan.snapshot(), ("Handler", value)])
        elif name.startswith("DB(") and name.endswith(")"):
            self.astdb["/" + name[len("DB(") : -1]] = value
        elif name.upper() in ("CALLERID(NAME)", "CALLERID(NUM)"):
            caller = (chan.caller_num, value) if name.upper() == "CALLERID(NAME)" else (value, chan.caller_name)
            self._announce_caller(chan, *self._assign_caller(chan, caller, (chan.conn_num, chan.conn_name)))
        elif "(" in name:
            log.warning("%s: Set(%s): the simulator has no such function", chan.name, name)
        else:
            self._setvar(chan, name, value)
        return Flow.NEXT

    async def _app_dbdeltree(self, chan: Channel, data: str) -> Flow:
        tree = "/" + data.strip()
        for key in [key for key in self.astdb if key == tree or key.startswith(tree + "/")]:
            del self.astdb[key]
        return Flow.NEXT

    async def _app_mixmonitor(self, chan: Channel, data: str) -> Flow:
        filename = split_args(data)[0]
        self._setvar(chan, "MIXMONITOR_FILENAME", filename if filename.startswith("/") else MONITOR_DIR + filename)
        chan.mixmonitor = True
        self._recording[chan.name] = (filename, self.clock.monotonic())
        self._chan_event("MixMonitorStart", chan)
        return Flow.NEXT

    async def _app_stopmixmonitor(self, chan: Channel, data: str) -> Flow:
        if chan.mixmonitor:
            chan.mixmonitor = False
            self._chan_event("MixMonitorStop", chan)
        self._recording_stopped(chan)
        return Flow.NEXT

    def _recording_stopped(self, chan: Channel) -> None:
        started = self._recording.pop(chan.name, None)
        if started is None or self.recordings is None:
            return
        filename, since = started
        if filename.startswith("/") or ".." in filename.split("/"):
            return  # only what lands inside the folder, as MixMonitor's relative names do
        # A long call's file is a megabyte: written off the loop, which the daemon may share in tests.
        loop = asyncio.get_running_loop()
        loop.run_in_executor(None, write_tone_wav, self.recordings / filename, self.clock.monotonic() - since)

    async def _app_musiconhold(self, chan: Channel, data: str) -> Flow:
        args = split_args(data)
        moh_class = args[0].strip() or "default"
        duration = _seconds(args[1]) if len(args) > 1 else None
        self._chan_event("MusicOnHoldStart", chan, ("Class", moh_class))
        self._sending_media(chan, True)
        await self._block(chan, duration or None)
        self._sending_media(chan, False)
        if not chan.gone:
            self._chan_event("MusicOnHoldStop", chan)
        return Flow.NEXT

    async def _app_playback(self, chan: Channel, data: str) -> Flow:
        args = split_args(data)
        options = args[1:]
        if chan.state != UP and "noanswer" not in options:
            self._answer(chan)
        chan.silent = False  # a prompt stops the tones a Playtones left playing
        self._sending_media(chan, True)
        finished = await self._block(chan, SOUND_SECONDS.get(args[0].strip(), PLAYBACK_SECONDS))
        self._sending_media(chan, False)
        if finished:
            self._setvar(chan, "PLAYBACKSTATUS", "SUCCESS")
        return Flow.NEXT

    async def _app_playtones(self, chan: Channel, data: str) -> Flow:
        # Tones go on while the dialplan moves on; "0" is silence: frames AMD counts as silence.
        if data.strip() == "0":
            chan.silent = True
        else:
            self._sending_media(chan, True)
        return Flow.NEXT

    async def _app_amd(self, chan: Channel, data: str) -> Flow:
        """AMD() with amd.conf's defaults, on what the Local partner sends, frame by frame (20 ms):
        voice (a prompt, music), silent frames (Playtones(0)) or nothing at all (shipped/amd_*.txt)."""
        status, cause = await self._detect(chan)
        self._setvar(chan, "AMDSTATUS", status)
        self._setvar(chan, "AMDCAUSE", cause)
        return Flow.NEXT

    async def _detect(self, chan: Channel) -> tuple[str, str]:
        # Looked at frame by frame, timed by the clock (a busy loop must not stretch the analysis);
        # durations are counted in whole frames, as AMD counts them.
        frame = int(MEDIA_FRAME * 1000)
        started = last = self.clock.monotonic()
        voice = silence = 0.0
        while True:
            partner = chan.partner
            playing = partner is not None and not partner.gone and partner.playing
            silent = partner is not None and not partner.gone and partner.silent and not playing
            if not await self._block(chan, MEDIA_FRAME) or chan.pending_goto is not None:
                return "HANGUP", ""
            now = self.clock.monotonic()
            step, last = (now - last) * 1000, now
            total = (now - started) * 1000
            if playing:
                voice, silence = voice + step, 0.0
                if voice >= AMD_GREETING:
                    return "MACHINE", f"LONGGREETING-{_frames(voice, frame)}-{AMD_GREETING}"
            elif silent:
                silence += step
                if voice and silence >= AMD_AFTER_GREETING_SILENCE:
                    return "HUMAN", f"HUMAN-{_frames(silence, frame)}-{AMD_AFTER_GREETING_SILENCE}"
                if not voice and silence >= AMD_INITIAL_SILENCE:
                    return "MACHINE", f"INITIALSILENCE-{_frames(silence, frame)}-{AMD_INITIAL_SILENCE}"
            if total >= AMD_TOTAL:
                # With no frames at all AMD counts its waits for one, and says so a wait short.
                counted = total if playing or silent else total - AMD_NO_FRAME_WAIT
                return "NOTSURE", f"TOOLONG-{_frames(counted, AMD_NO_FRAME_WAIT)}"

    async def _app_userevent(self, chan: Channel, data: str) -> Flow:
        name, _, rest = data.partition(",")
        headers = [tuple(part.split(": ", 1)) for part in rest.split(",") if ": " in part] if rest else []
        self._publish(USER, "UserEvent", [*chan.snapshot(), ("UserEvent", name), *headers])  # type: ignore[list-item]
        return Flow.NEXT

    async def _app_simclient(self, chan: Channel, data: str) -> Flow:
        return await self._play(chan, self.world.client(chan.exten))

    async def _app_simcaller(self, chan: Channel, data: str) -> Flow:
        """An inbound caller, once the PBX answered him: talks the World's ``talk`` seconds, hangs up."""
        if not await self._block(chan, self.world.client(chan.exten).talk):
            return Flow.NEXT
        chan.cause = chan.cause or NORMAL_CLEARING
        return Flow.HANGUP

    async def _app_simmanager(self, chan: Channel, data: str) -> Flow:
        return await self._play(chan, self.world.manager(chan.exten))

    async def _play(self, chan: Channel, behaviour: Behaviour) -> Flow:
        """A simulated phone, shaped like the transcripts' sim-clients/sim-managers dialplan."""
        if behaviour.busy or behaviour.unavailable:
            if behaviour.busy:
                self._refuse(chan, USER_BUSY, "BUSY")
            else:
                self._refuse(chan, CONGESTION, "CONGESTION")
            await self._block(chan, REFUSE_LINGER)
            return Flow.HANGUP
        if behaviour.answer_after is None:
            self._indicate_ringing(chan)
            await self._block(chan, None)
            return Flow.NEXT
        if not await self._block(chan, behaviour.answer_after):
            return Flow.NEXT
        self._answer(chan)
        talk = behaviour.talk
        if behaviour.greeting is not None:
            # It speaks first, then listens in silence: what AMD() tells a person from a machine by.
            self._sending_media(chan, True)
            spoke = await self._block(chan, behaviour.greeting)
            self._sending_media(chan, False)
            chan.silent = True
            if not spoke:
                return Flow.NEXT
            talk = None if talk is None else max(talk - behaviour.greeting, 0.0)
        if not await self._block(chan, talk):
            return Flow.NEXT
        chan.cause = chan.cause or NORMAL_CLEARING
        return Flow.HANGUP

    # ---- Dial ----

    async def _app_dial(self, chan: Channel, data: str) -> Flow:
        args = split_args(data)
        target = args[0].strip()
        timeout = _seconds(args[1]) if len(args) > 1 else None
        for name in DIAL_VARIABLES:
            self._setvar(chan, name, "")
        tech, _, resource = target.partition("/")
        if tech.lower() != "local" or "@" not in resource:
            log.warning("%s: Dial(%s): only Local/<exten>@<context> can be dialed here", chan.name, target)
            self._setvar(chan, "DIALSTATUS", "CHANUNAVAIL")
            return Flow.NEXT
        exten, _, context = resource.partition("@")
        one, two = self._new_local(exten, context, "", "", chan.linkedid, dialed=True)
        # app_dial gives the outgoing leg its caller's exten (in its own context): a Dial from
        # exten s shows s on the dialled leg (shipped/manager_first.txt).
        one.exten = chan.exten
        self._setvar(one, "DIALEDPEERNUMBER", resource)
        # Dial gives the new leg its ids before it shows up in the dialplan, and announces them after:
        # as caller the dialled number with the name of the caller's connected line (client_first.txt:
        # an Originate's CallerID; shipped/connect_caller_name.txt: none), as connected line the
        # caller's ids, so the phone on the ;2 half shows the caller's name.
        changed = self._assign_caller(one, (exten, chan.conn_name), (chan.caller_num, chan.caller_name))
        self._newexten(one, "AppDial", "(Outgoing Line)")
        self._announce_caller(one, *changed)
        loop = asyncio.get_running_loop()
        started = self.clock.monotonic()
        dialing = Dialing(loop.create_future(), chan, started)
        if not self._call_local(one, two, dialing, resource):
            self._setvar(chan, "DIALSTATUS", "CHANUNAVAIL")
            return Flow.NEXT
        if chan.cdr is not None:
            chan.cdr.dest_channel = one.name
        timed_out = await self._block(chan, timeout or None, dialing.outcome)
        one.dialing = None
        if dialing.outcome.done():
            outcome = dialing.outcome.result()
        else:
            outcome = "NOANSWER" if timed_out else "CANCEL"
        if outcome == "ANSWER":
            options = args[2] if len(args) > 2 else ""
            announcement = _ANNOUNCE.search(options)
            return await self._bridge_call(chan, one, resource, started, announcement and announcement.group(1))
        if outcome == "HANGUP":
            outcome = _status_for_cause(one.cause)
        if chan.hangup_pending and not one.cause:
            # The caller hung up while the leg rang: app_dial hangs it up with the caller's cause
            # (shipped/hangup_while_manager_rings.txt); a leg that timed out keeps 0 (manager_noanswer.txt).
            one.cause = chan.cause or NORMAL_CLEARING
        continuing = outcome != "CANCEL" or chan.pending_goto is not None
        if chan.cdr is not None:
            self._post_cdr(chan, chan.cdr, DISPOSITION[outcome])
            chan.cdr = self._segment(chan) if continuing else None
        self._dial_event("DialEnd", chan, one, ("DialStatus", outcome))
        self._hangup(one)
        self._setvar(chan, "DIALSTATUS", outcome)
        return Flow.NEXT

    async def _bridge_call(
        self, chan: Channel, peer: Channel, dialed: str, started: float, announcement: str | None = None
    ) -> Flow:
        self._setvar(chan, "DIALSTATUS", "ANSWER")
        self._setvar(chan, "DIALEDPEERNAME", peer.name)
        self._setvar(chan, "DIALEDPEERNUMBER", dialed)
        if announcement:
            # Dial's A(): the prompt plays to the answered leg alone; the bridge follows it
            # (shipped/connect_caller_name.txt: DialEnd and BridgeEnter 0.3 s, a beep, after the answer).
            self._sending_media(peer, True)
            await self._block(chan, SOUND_SECONDS.get(announcement.strip(), PLAYBACK_SECONDS))
            self._sending_media(peer, False)
        peer.exten = ""
        self._dial_event("DialEnd", chan, peer, ("DialStatus", "ANSWER"))
        if not peer.hangup_pending:
            bridge = self._bridge_create()
            self._newexten(peer, "AppDial", "(Outgoing Line)")
            self._bridge_enter(bridge, peer)
            self._bridge_enter(bridge, chan)
            self._setvar(peer, "BRIDGEPEER", chan.name)
            self._setvar(chan, "BRIDGEPEER", peer.name)
            while (
                chan.bridge is bridge
                and len(bridge.channels) == 2
                and not chan.hangup_pending
                and chan.pending_goto is None
            ):
                await self._block(chan, None)
            if chan.bridge is bridge:
                self._bridge_leave(chan)
        now = self.clock.monotonic()
        answered = now - (chan.answered_mono if chan.answered_mono is not None else started)
        dialed_for = now - chan.created_mono
        self._setvar(chan, "ANSWEREDTIME", str(int(answered)))
        self._setvar(chan, "ANSWEREDTIME_MS", str(int(answered * 1000)))
        self._setvar(chan, "DIALEDTIME", str(int(dialed_for)))
        self._setvar(chan, "DIALEDTIME_MS", str(int(dialed_for * 1000)))
        self._setvar(chan, "DIALSTATUS", "ANSWER")
        # Without Dial's g option, the end of the bridged call hangs up the caller too.
        ends_call = chan.pending_goto is None
        if ends_call:
            chan.cause = chan.cause or peer.cause or NORMAL_CLEARING
            self._soft_request(chan)
        if not peer.gone:
            peer.cause = peer.cause or chan.cause or NORMAL_CLEARING
            self._hangup(peer)
        return Flow.HANGUP if ends_call else Flow.NEXT


def _status_for_cause(cause: int) -> str:
    """app_dial's reading of why a dialed leg hung up before answering."""
    if cause == USER_BUSY:
        return "BUSY"
    if cause == CONGESTION:
        return "CONGESTION"
    if cause in (0, NORMAL_CLEARING, NO_ANSWER):
        return "NOANSWER"
    return "CHANUNAVAIL"


_ANNOUNCE = re.compile(r"A\(([^):]*)")  # Dial's A(x[:y]): x is played to the called party


def _frames(milliseconds: float, frame: int) -> int:
    """Milliseconds counted in whole frames."""
    return int(milliseconds // frame) * frame


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _strftime(args: str, now: datetime) -> str:
    """STRFTIME(epoch,zone,format): empty epoch is now; ``%s`` and ``%[n]q`` (fractions of a
    second, truncated) as Asterisk's ast_strftime has them. The simulator keeps UTC only."""
    epoch, _, rest = args.partition(",")
    zone, _, text = rest.partition(",")
    if zone.strip() not in ("", "UTC"):
        log.warning("STRFTIME: the simulator knows no zone but UTC, not %r", zone)
    try:
        moment = datetime.fromtimestamp(float(epoch), UTC) if epoch.strip() else now
    except ValueError:
        moment = now

    def special(match: re.Match[str]) -> str:
        if match.group(0) == "%s":
            return str(int(moment.timestamp()))
        digits = int(match.group(1) or 3)
        return f"{moment.microsecond:06d}"[:digits]

    return moment.strftime(re.sub(r"%(\d?)q|%s", special, text or "%c"))


def _seconds(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _cdr_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


# A quiet 440 Hz tone, 8 kHz 8-bit mono (8 kB a second): something for a player to play.
_RATE = 8000
_TONE_SECOND = bytes(128 + round(24 * math.sin(2 * math.pi * 440 * i / _RATE)) for i in range(_RATE))


def write_tone_wav(path: Path, seconds: float) -> None:
    """A real WAV of ``seconds``, as long as the recording it stands for."""
    frames = max(0, round(seconds * _RATE))
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(1)
        out.setframerate(_RATE)
        whole, part = divmod(frames, _RATE)
        out.writeframes(_TONE_SECOND * whole + _TONE_SECOND[:part])


def _character_class(spec: str) -> set[str]:
    """FILTER()'s allowed characters: single ones and ranges such as ``0-9``."""
    allowed: set[str] = set()
    index = 0
    while index < len(spec):
        if index + 2 < len(spec) and spec[index + 1] == "-":
            allowed.update(chr(code) for code in range(ord(spec[index]), ord(spec[index + 2]) + 1))
            index += 3
        else:
            allowed.add(spec[index])
            index += 1
    return allowed
