"""What the dialer is configured with, apart from the engine, so that reading the config
(``leadrouter check-config``) does not load the engine and everything it imports."""

from __future__ import annotations

from dataclasses import dataclass, field

from router.breaker import BreakerSettings


@dataclass(frozen=True)
class DialerSettings:
    channel_id_prefix: str
    max_channels: int
    dial_deadline: float  # seconds after which an unanswered Originate is looked for in the PBX's listing
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    # Seconds a PBX event stamp may lie behind our clock and still be taken as the event's time.
    stamp_window: float = 5.0
    # Inbound calls (the shipped dialplan's leadrouter-inbound): the company numbers we take, and
    # the region a caller's number is read in when the trunk gives it without a country code.
    inbound_numbers: frozenset[str] = frozenset()
    default_region: str = "RU"
    # Seconds between looks for calls whose daemon is gone (several daemons on one database).
    takeover_poll: float = 2.0
    # This dialer's PBX by its name in leadrouter.yaml (calls record it), and the daemon's other
    # PBXes, whose leads (routing.yaml's scenario `pbx:`) it leaves to their dialers.
    pbx: str | None = None
    other_pbxes: frozenset[str] = frozenset()
