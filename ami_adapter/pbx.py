"""The dialer's PBX port on Asterisk: Originate, Redirect and Hangup over AMI.

Nothing from a lead reaches an action except the digits of its E.164 number; every other
value comes from the validated config or from ids we generated.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from ami_adapter.client import AmiClient, AmiError, AmiNotConnected, PreparedAction
from ami_adapter.protocol import AmiDisconnected
from ami_adapter.translate import EventTranslator
from dialer.ports import PbxError, PbxNoAnswer, PbxNotSent, PreparedDial
from router.pbx_events import CallEndRecord, PbxSnapshot
from router.phone import dial_digits

log = structlog.get_logger("ami")

# Where the shipped dialplan's hangup handler notes how each answered client leg ended: AstDB
# family leadrouter-call-end/<UTC day of the hangup>, key the leg's Uniqueid. The dialplan drops
# every older day at the first hangup of each day: only today's and the two days' before remain.
CALL_END_FAMILY = "leadrouter-call-end"
CALL_END_DAYS = 3


@dataclass(frozen=True)
class AsteriskPbxSettings:
    client_channel: Callable[[str], str]  # digits -> channel, e.g. PJSIP/79161234567@trunk
    client_channel_parts: tuple[str, str]  # the client template split around {phone}, for the dialplan
    manager_channel: tuple[str, str]  # the manager template split around {extension}
    hold_context: str
    connect_context: str
    dial_client_context: str  # manager first: where the answered manager's leg dials the client
    apology_context: str | None
    caller_id: str | None
    originate_timeout: float  # seconds the client's phone rings
    hold_max: float  # the dialplan's own cap on waiting


class AsteriskPbx:
    def __init__(self, client: AmiClient, translator: EventTranslator, settings: AsteriskPbxSettings) -> None:
        self._client = client
        self._translator = translator
        self._settings = settings

    @property
    def connected(self) -> bool:
        return self._client.connected

    async def _send(self, action: dict[str, str | list[str]]) -> None:
        await self._send_now(action)

    def _send_now(self, action: dict[str, str | list[str]]) -> Awaitable[None]:
        """The action on the wire before this returns; its answer (or PbxError) when awaited."""
        return self._sender(action)()

    def _sender(self, action: dict[str, str | list[str]]) -> _Prepared:
        """The action checked and rendered now; calling the result is ``_send_now`` of it."""
        try:
            with _as_pbx_errors():
                prepared = self._client.prepare(action)
        except PbxError as exc:
            return _Prepared(self._client, None, exc)
        return _Prepared(self._client, prepared, None)

    def _channel(self, channel_id: str) -> str:
        # Asterisk looks channels up by name; until we saw the name, the Uniqueid is our best try.
        return self._translator.channel_name(channel_id) or channel_id

    def prepare_client(
        self,
        *,
        channel_id: str,
        phone: str,
        lead_id: int,
        call_id: int,
        ring_timeout: float,
        caller_name: str = "",
        amd: bool = False,
        whisper: str = "",
    ) -> PreparedDial:
        settings = self._settings
        try:
            channel = settings.client_channel(dial_digits(phone))
        except ValueError as exc:  # the number is checked at intake: the port's promise is "raises nothing now"
            return _Prepared(self._client, None, PbxNotSent(f"Originate not sent: {exc}"))
        action: dict[str, str | list[str]] = {
            "Action": "Originate",
            "Channel": channel,
            "Context": settings.hold_context,
            "Exten": "s",
            "Priority": "1",
            "Async": "true",
            "Timeout": str(int(settings.originate_timeout * 1000)),
            "ChannelId": channel_id,
            "Variable": [
                f"LEADROUTER_LEAD={lead_id}",
                f"LEADROUTER_CALL={call_id}",
                f"LEADROUTER_MANAGER_PREFIX={settings.manager_channel[0]}",
                f"LEADROUTER_MANAGER_SUFFIX={settings.manager_channel[1]}",
                f"LEADROUTER_RING_TIMEOUT={max(int(ring_timeout), 1)}",
                f"LEADROUTER_HOLD_MAX={max(int(settings.hold_max), 1)}",
                # router.caller_name made it safe: no comma (Asterisk splits Variable on them), CR/LF or $.
                f"LEADROUTER_CALLER_NAME={caller_name}",
                f"LEADROUTER_WHISPER={whisper}",  # a sound file (the config allows letters, digits and / _ - .)
                f"LEADROUTER_AMD={1 if amd else 0}",
            ],
        }
        if settings.caller_id:
            action["CallerID"] = settings.caller_id
        return self._sender(action)

    async def originate_manager(
        self,
        *,
        channel_id: str,
        extension: str,
        phone: str,
        lead_id: int,
        call_id: int,
        ring_timeout: float,
        client_ring_timeout: float | None,
        caller_name: str = "",
        whisper: str = "",
    ) -> None:
        if not extension.isdigit():
            raise PbxError(f"extension {extension!r} is not digits")
        settings = self._settings
        digits = dial_digits(phone)
        settings.client_channel(digits)  # refuses anything but digits, as for a client-first dial
        prefix, suffix = settings.manager_channel
        client_ring = client_ring_timeout or settings.originate_timeout
        await self._send(
            {
                "Action": "Originate",
                "Channel": f"{prefix}{extension}{suffix}",
                "Context": settings.dial_client_context,
                "Exten": "s",
                "Priority": "1",
                "Async": "true",
                "Timeout": str(int(ring_timeout * 1000)),
                "ChannelId": channel_id,
                # The manager's phone shows whom he is about to talk to (caller_name has no quotes or <>).
                "CallerID": f'"{caller_name}" <{digits}>' if caller_name else digits,
                "Variable": [
                    f"LEADROUTER_LEAD={lead_id}",
                    f"LEADROUTER_CALL={call_id}",
                    f"LEADROUTER_CLIENT={digits}",
                    f"LEADROUTER_CLIENT_PREFIX={settings.client_channel_parts[0]}",
                    f"LEADROUTER_CLIENT_SUFFIX={settings.client_channel_parts[1]}",
                    f"LEADROUTER_CLIENT_RING_TIMEOUT={max(int(client_ring), 1)}",
                    f"LEADROUTER_WHISPER={whisper}",
                ],
            }
        )

    async def take_inbound(
        self, *, channel_id: str, lead_id: int, call_id: int, ring_timeout: float, caller_name: str, whisper: str
    ) -> None:
        settings = self._settings
        channel = self._channel(channel_id)
        variables = {
            "LEADROUTER_LEAD": str(lead_id),
            "LEADROUTER_CALL": str(call_id),
            "LEADROUTER_MANAGER_PREFIX": settings.manager_channel[0],
            "LEADROUTER_MANAGER_SUFFIX": settings.manager_channel[1],
            "LEADROUTER_RING_TIMEOUT": str(max(int(ring_timeout), 1)),
            "LEADROUTER_HOLD_MAX": str(max(int(settings.hold_max), 1)),
            "LEADROUTER_CALLER_NAME": caller_name,
            "LEADROUTER_WHISPER": whisper,
        }
        # One session runs its actions in order: all are set before the Redirect that follows.
        await asyncio.gather(
            *(
                self._send({"Action": "Setvar", "Channel": channel, "Variable": name, "Value": value})
                for name, value in variables.items()
            )
        )

    async def connect_to_manager(self, *, channel_id: str, extension: str) -> None:
        if not (extension.isascii() and extension.isdigit()):  # "１０１".isdigit() is True too
            raise PbxError(f"extension {extension!r} is not digits")
        await self._send(
            {
                "Action": "Redirect",
                "Channel": self._channel(channel_id),
                "Context": self._settings.connect_context,
                "Exten": extension,
                "Priority": "1",
            }
        )

    async def apologize(self, channel_id: str) -> None:
        if self._settings.apology_context is None:
            await self.hang_up(channel_id)
            return
        await self._send(
            {
                "Action": "Redirect",
                "Channel": self._channel(channel_id),
                "Context": self._settings.apology_context,
                "Exten": "s",
                "Priority": "1",
            }
        )

    async def hang_up(self, channel_id: str) -> None:
        await self._send({"Action": "Hangup", "Channel": self._channel(channel_id)})

    async def call_end(self, channel_id: str, *, since: datetime, until: datetime) -> CallEndRecord | None:
        """The PBX's note of how the client leg ended, if it ended between ``since`` and ``until``
        and the PBX kept one. DBGet needs write=reporting (or system), which the AMI user has."""
        first = max(since.astimezone(UTC).date(), until.astimezone(UTC).date() - timedelta(days=CALL_END_DAYS - 1))
        day = until.astimezone(UTC).date()
        while day >= first:  # the newest day first: the call ended there unless it began before midnight
            action = {"Action": "DBGet", "Family": f"{CALL_END_FAMILY}/{day:%Y%m%d}", "Key": channel_id}
            with _as_pbx_errors():
                try:
                    items = await self._client.send_list(action)
                except AmiError as exc:
                    if "not found" not in str(exc):  # "Database entry not found": try the day before
                        raise
                    items = []
            for item in items:
                if item.get("Event") == "DBGetResponse" and "Val" in item:
                    return self._translator.call_end_record(channel_id, item["Val"])
            day -= timedelta(days=1)
        return None

    async def snapshot(self) -> PbxSnapshot:
        with _as_pbx_errors():
            channels = await self._client.send_list({"Action": "CoreShowChannels"})
            try:
                devices = await self._client.send_list({"Action": "DeviceStateList"})
            except AmiError as exc:
                # Asterisk before 13 has no DeviceStateList: the channels listed still show who is busy.
                log.warning("ami.device_states_unavailable", error=str(exc))
                devices = []
        settings = self._settings
        return self._translator.snapshot(
            channels,
            devices,
            hold_context=settings.hold_context,
            connect_context=settings.connect_context,
            apology_context=settings.apology_context,
        )


async def _answered(answer: Awaitable[object]) -> None:
    with _as_pbx_errors():
        await answer


@dataclass(frozen=True)
class _Prepared:
    """An action built ahead (the dialer's PreparedDial): ``error`` when it cannot be sent."""

    client: AmiClient
    action: PreparedAction | None
    error: PbxError | None

    def __call__(self) -> Awaitable[None]:
        if self.action is None:
            assert self.error is not None
            return _raise(self.error)
        try:
            with _as_pbx_errors():
                answer = self.client.send_prepared(self.action)
        except PbxError as exc:
            return _raise(exc)
        return _answered(answer)

    def write_off_loop(self) -> bool:
        return self.action is not None and self.client.write_off_loop(self.action)


async def _raise(error: PbxError) -> None:
    raise error


@contextlib.contextmanager
def _as_pbx_errors() -> Iterator[None]:
    """The AMI client's failures as the dialer's port names them: refused, not sent, or no answer."""
    try:
        yield
    except AmiNotConnected as exc:
        raise PbxNotSent(str(exc)) from exc
    except AmiDisconnected as exc:
        raise PbxNoAnswer(str(exc)) from exc
    except AmiError as exc:
        raise PbxError(str(exc)) from exc
