"""The last line of defence: no action with CR, LF or NUL in a header reaches the AMI socket,
and a manager's extension or a client's number in a channel string is ASCII digits only."""

from __future__ import annotations

import asyncio

import pytest

from ami_adapter.pbx import AsteriskPbx, AsteriskPbxSettings
from ami_adapter.protocol import AmiProtocol, AmiUnsafeAction
from config.settings import PbxSection
from dialer.ports import PbxError


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    "action",
    [
        {"Action": "Originate", "Channel": "Local/79161234567@sim-clients\r\nAction: Command"},
        {"Action": "Originate", "Channel": "Local/1@x", "Variable": ["A=1", "B=2\nAction: Hangup"]},
        {"Action": "Redirect", "Channel": "PJSIP/101\0", "Exten": "101"},
        {"Action": "Login", "Username": "leadrouter", "Secret": "s3cret\r\n"},
        {"Action": "Hangup", "Chan\rnel": "PJSIP/101"},
    ],
)
async def test_an_action_with_a_line_break_or_nul_is_refused_before_the_socket(action: dict[str, object]) -> None:
    transport = _Transport()
    proto = AmiProtocol()
    proto.connection_made(transport)
    with pytest.raises(AmiUnsafeAction) as refused:
        proto.send(action)
    assert transport.written == b"" and not proto.responses
    assert "s3cret" not in str(refused.value)


async def test_a_clean_action_is_written() -> None:
    transport = _Transport()
    proto = AmiProtocol()
    proto.connection_made(transport)
    proto.send({"Action": "Hangup", "Channel": "PJSIP/101-00000001"})
    assert transport.written.startswith(b"Action: Hangup\r\n")
    assert b"\r\nChannel: PJSIP/101-00000001\r\n\r\n" in transport.written


@pytest.mark.parametrize("digits", ["７９１６１２３４５６７", "٧٩١٦١٢٣٤٥٦٧", "7916&1", "+79161234567", ""])
def test_a_client_channel_takes_ascii_digits_only(digits: str) -> None:
    with pytest.raises(ValueError, match="digits only"):
        PbxSection().client_channel_for(digits)


@pytest.mark.parametrize("extension", ["１０１", "١٠١", "101&", "101@evil"])
async def test_a_manager_extension_must_be_ascii_digits(extension: str) -> None:
    settings = PbxSection().asterisk_settings()
    assert isinstance(settings, AsteriskPbxSettings)
    pbx = AsteriskPbx(client=None, translator=None, settings=settings)  # type: ignore[arg-type]
    with pytest.raises(PbxError, match="not digits"):
        await pbx.connect_to_manager(channel_id="lr-1", extension=extension)
