"""The dialer's PBX port on Asterisk: Originate, Redirect and Hangup over AMI.

Nothing from a lead reaches an action except the digits of its E.164 number; every other
value comes from the validated config or from ids we generated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ami_adapter.client import AmiClient, AmiError, AmiNotConnected
from ami_adapter.protocol import AmiDisconnected
from ami_adapter.translate import EventTranslator
from dialer.ports import PbxError
from router.phone import dial_digits


@dataclass(frozen=True)
class AsteriskPbxSettings:
    client_channel: Callable[[str], str]  # digits -> channel, e.g. PJSIP/79161234567@trunk
    manager_channel: tuple[str, str]  # the manager template split around {extension}
    hold_context: str
    connect_context: str
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
        try:
            await self._client.send(action)
        except (AmiError, AmiNotConnected, AmiDisconnected) as exc:
            raise PbxError(str(exc)) from exc

    def _channel(self, channel_id: str) -> str:
        # Asterisk looks channels up by name; until we saw the name, the Uniqueid is our best try.
        return self._translator.channel_name(channel_id) or channel_id

    async def originate_client(
        self, *, channel_id: str, phone: str, lead_id: int, call_id: int, ring_timeout: float
    ) -> None:
        settings = self._settings
        action: dict[str, str | list[str]] = {
            "Action": "Originate",
            "Channel": settings.client_channel(dial_digits(phone)),
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
            ],
        }
        if settings.caller_id:
            action["CallerID"] = settings.caller_id
        await self._send(action)

    async def connect_to_manager(self, *, channel_id: str, extension: str) -> None:
        if not extension.isdigit():
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

    async def live_channels(self) -> set[str]:
        try:
            items = await self._client.send_list({"Action": "CoreShowChannels"})
        except (AmiError, AmiNotConnected, AmiDisconnected) as exc:
            raise PbxError(str(exc)) from exc
        return self._translator.ours_in_listing(items)
