"""Daemon settings: one YAML file (see deploy/leadrouter.yaml), secrets overridable from the environment.

Each section of the file is a ``...Section`` model here; the settings each part of the daemon
takes (``AmiSettings`` of the AMI client, ``MqttSettings`` of the publisher...) are built from
them by the section's methods, so the composition root only hands them over.
"""

from __future__ import annotations

import fnmatch
import os
import ssl
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, Self

import phonenumbers
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, model_validator
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from ami_adapter.translate import TranslatorSettings
from api.scopes import TokenScope
from config.document import Document, Loc
from config.fields import (
    AmiText,
    Count,
    Digits,
    Duration,
    Host,
    Identifier,
    Line,
    ListenPort,
    Port,
    WholeSeconds,
    only,
    template,
)
from config.problems import ConfigError, Problem
from dialer.settings import DialerSettings
from router.breaker import BreakerSettings
from router.events import EVENT_TYPES
from router.phone import NumberType, PhonePolicy

# The settings of the adapters that import big libraries (panoramisk, FastAPI, uvicorn, aiomqtt,
# httpx) are imported by the methods that build them: ``leadrouter run`` reads this file first, and
# forks the copy that reads routing.yaml before those imports, so the two overlap.
if TYPE_CHECKING:
    from ami_adapter.client import AmiSettings
    from ami_adapter.pbx import AsteriskPbxSettings
    from api.auth import AuthLimits
    from api.server import ConnectionLimits
    from dialer.intake import RateLimit
    from events.publisher import MqttSettings
    from events.subscriber import CommandSettings
    from events.webhooks import Subscriber, WebhookSettings


@dataclass(frozen=True)
class _Secret:
    """Where a secret may come from besides the config file, first found wins: the environment
    variable itself; ``<variable>_FILE`` naming a file that holds it (Docker and vault agents
    write those); a systemd credential (``LoadCredential=<credential>:...``), which systemd puts
    under ``$CREDENTIALS_DIRECTORY``. So secrets can live outside a file that gets copied around."""

    loc: tuple[str, ...]
    variable: str
    credential: str


SECRETS = (
    _Secret(("ami", "secret"), "LEADROUTER_AMI_SECRET", "ami-secret"),
    _Secret(("mqtt", "password"), "LEADROUTER_MQTT_PASSWORD", "mqtt-password"),
    _Secret(("http", "token"), "LEADROUTER_API_TOKEN", "api-token"),
    _Secret(("recordings", "signing_key"), "LEADROUTER_RECORDING_KEY", "recording-key"),
    _Secret(("database", "url"), "LEADROUTER_DATABASE_URL", "database-url"),  # a PostgreSQL URL carries its password
)
# Tokens per scope, several separated by spaces or lines (a file may have # comments); they are
# added to the scope's tokens in the config, so one can be rotated in without editing it.
TOKEN_LISTS = {
    scope: _Secret(("http", "tokens", scope.value), f"LEADROUTER_{scope.value.upper()}_TOKENS", f"{scope.value}-tokens")
    for scope in TokenScope
}

MIN_TOKEN_LENGTH = 16

# An Originate unanswered this long after its own ring timeout is looked for in the PBX's listing.
DIAL_DEADLINE_MARGIN = 30.0


def _ami_secret(value: SecretStr) -> SecretStr:
    # Login carries the secret as an AMI header value: only a line break or other
    # control character could break the action. It never reaches a channel or dialplan.
    secret = value.get_secret_value()
    if not secret or not secret.isprintable() or secret != secret.strip():
        raise ValueError("must be non-empty, on one line, without leading or trailing spaces")
    return value


def _token(value: SecretStr) -> SecretStr:
    token = value.get_secret_value()
    if len(token) < MIN_TOKEN_LENGTH or not token.isprintable() or " " in token:
        raise ValueError(f"must be at least {MIN_TOKEN_LENGTH} characters without spaces")
    return value


def _channel(value: str) -> str:
    technology, slash, _ = value.partition("/")
    if not slash or not technology.isalnum():
        raise ValueError("must start with the channel technology, e.g. PJSIP/")
    return value


def _region(value: str) -> str:
    if value not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"{value!r} is not a region code phonenumbers knows; use two capital letters, e.g. RU")
    return value


def _database_url(value: str) -> str:
    try:
        make_url(value)
    except ArgumentError:
        raise ValueError("is not a database URL, e.g. sqlite+aiosqlite:////var/lib/leadrouter/leadrouter.db") from None
    return value


def _topic_prefix(value: str) -> str:
    if not value or value.startswith("/") or value.endswith("/"):
        raise ValueError("must not be empty or start or end with /")
    if {"#", "+", "\0"} & set(value):
        raise ValueError("must not contain the MQTT wildcards # and +")
    return value


def _url_template(value: str) -> str:
    if value.count("{file}") != 1:
        raise ValueError("must contain {file} exactly once, e.g. https://pbx.example.com/recordings/{file}")
    if not value.startswith(("http://", "https://")) or not value.isprintable() or " " in value:
        raise ValueError("must be an http:// or https:// URL without spaces")
    return value


def _none_is_empty(value: object) -> object:
    # A section header whose keys are all commented out reads as null: it means "all defaults".
    return {} if value is None else value


class _Strict(BaseModel):
    # Unknown keys are typos to report, not to ignore. Defaults go through the same
    # validators, so "10" seconds is a float like any other.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


ClientChannel = Annotated[str, template("phone", "PJSIP/{phone}@trunk"), AfterValidator(_channel)]
ManagerChannel = Annotated[str, template("extension", "PJSIP/{extension}"), AfterValidator(_channel)]


_EXTENSION = template("extension", "PJSIP/{extension}")


def _device(value: str) -> str:
    # A custom device state (DEVICE_STATE(Custom:101), set by a presence key or a script) may stand
    # for a manager's phone too. Device names are only compared with the PBX's events, never sent.
    if value.startswith("Custom:"):
        _EXTENSION.func(value.removeprefix("Custom:"))  # type: ignore[call-arg]
        return value
    return _channel(_EXTENSION.func(value))  # type: ignore[call-arg]


ManagerDevice = Annotated[str, AfterValidator(_device)]


class AmiSection(_Strict):
    host: Host = "127.0.0.1"
    port: Port = 5038
    username: AmiText = "leadrouter"
    secret: Annotated[SecretStr, AfterValidator(_ami_secret)] = Field(
        description="set ami.secret, or LEADROUTER_AMI_SECRET in the environment"
    )
    ping_interval: Duration = 10
    ping_timeout: Duration = 5
    reconnect_delay: WholeSeconds = 2
    action_timeout: Duration = 10

    def client_settings(self) -> AmiSettings:
        from ami_adapter.client import AmiSettings

        return AmiSettings(
            host=self.host,
            port=self.port,
            username=self.username,
            secret=self.secret.get_secret_value(),
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            reconnect_delay=self.reconnect_delay,
            action_timeout=self.action_timeout,
        )


class PbxLinkSection(AmiSection):
    """One of several PBXes (`pbxes:`): its AMI link, and the channels where its trunk or phones
    differ from the `pbx:` section's."""

    secret: Annotated[SecretStr, AfterValidator(_ami_secret)] = Field(
        description="set it here, or LEADROUTER_AMI_SECRET_<NAME> (or LEADROUTER_AMI_SECRET) in the environment"
    )
    client_channel: ClientChannel | None = None
    manager_channel: ManagerChannel | None = None
    manager_device: ManagerDevice | None = None


class PbxSection(_Strict):
    client_channel: ClientChannel = "PJSIP/{phone}@trunk"
    manager_channel: ManagerChannel = "PJSIP/{extension}"
    manager_device: ManagerDevice = "PJSIP/{extension}"
    hold_context: AmiText = "leadrouter-hold"
    connect_context: AmiText = "leadrouter-connect"
    dial_client_context: AmiText = "leadrouter-dial-client"
    apology_context: AmiText | None = "leadrouter-sorry"
    caller_id: Digits | None = None
    channel_id_prefix: Annotated[
        str,
        Field(max_length=8),
        only(string.ascii_lowercase + string.digits, "lowercase letters and digits"),
    ] = "lr"
    originate_timeout: Duration = 30
    hold_max: WholeSeconds = 600
    # Company numbers whose calls the shipped dialplan's leadrouter-inbound hands to the daemon:
    # a known caller goes to his owner first, an unknown one becomes a lead `inbound:<number>`.
    inbound_numbers: list[Digits] = Field(default_factory=list)
    max_channels: Count = 100
    # The circuit breaker (router/breaker.py): this many PBX failures within breaker_window stop new
    # dials for breaker_pause, then one dial probes; boot_wait: how long to wait for FullyBooted.
    breaker_failures: Count = 5
    breaker_window: Duration = 10
    breaker_pause: Duration = 15
    boot_wait: Duration = 30
    # With timestampevents, call times are the PBX's stamps if they lie this close behind the
    # daemon's clock; further off, the clocks disagree (or a backlog is read) and ours stands in.
    stamp_window: Duration = 5

    def client_channel_for(self, digits: str) -> str:
        """The channel that dials a client; ``digits`` as router.phone.dial_digits gives them."""
        # The template is safe by validation; the number is checked here because it goes into Originate too.
        if not (digits.isascii() and digits.isdigit()):
            raise ValueError(f"refusing to dial {digits!r}: digits only")
        return self.client_channel.replace("{phone}", digits)

    @property
    def manager_channel_parts(self) -> tuple[str, str]:
        """manager_channel around {extension}: the dialplan's LEADROUTER_MANAGER_PREFIX and _SUFFIX."""
        prefix, suffix = self.manager_channel.split("{extension}")
        return prefix, suffix

    @property
    def client_channel_parts(self) -> tuple[str, str]:
        """client_channel around {phone}: the dialplan's LEADROUTER_CLIENT_PREFIX and _SUFFIX (manager first)."""
        prefix, suffix = self.client_channel.split("{phone}")
        return prefix, suffix

    @property
    def manager_device_parts(self) -> tuple[str, str]:
        """manager_device around {extension}, to tell a manager's phone in DeviceStateChange."""
        prefix, suffix = self.manager_device.split("{extension}")
        return prefix, suffix

    def asterisk_settings(self) -> AsteriskPbxSettings:
        from ami_adapter.pbx import AsteriskPbxSettings

        return AsteriskPbxSettings(
            client_channel=self.client_channel_for,
            client_channel_parts=self.client_channel_parts,
            manager_channel=self.manager_channel_parts,
            hold_context=self.hold_context,
            connect_context=self.connect_context,
            dial_client_context=self.dial_client_context,
            apology_context=self.apology_context,
            caller_id=self.caller_id,
            originate_timeout=self.originate_timeout,
            hold_max=self.hold_max,
        )

    def translator_settings(self) -> TranslatorSettings:
        return TranslatorSettings(channel_id_prefix=self.channel_id_prefix, manager_device=self.manager_device_parts)

    def dialer_settings(self) -> DialerSettings:
        return DialerSettings(
            channel_id_prefix=self.channel_id_prefix,
            max_channels=self.max_channels,
            dial_deadline=self.originate_timeout + DIAL_DEADLINE_MARGIN,
            stamp_window=self.stamp_window,
            inbound_numbers=frozenset(self.inbound_numbers),
            breaker=BreakerSettings(
                failures=self.breaker_failures,
                window=self.breaker_window,
                pause=self.breaker_pause,
                boot_wait=self.boot_wait,
            ),
        )


class DatabaseSection(_Strict):
    url: Annotated[str, AfterValidator(_database_url)] = "sqlite+aiosqlite:////var/lib/leadrouter/leadrouter.db"
    probe_interval: Duration = 5  # while writes fail (disk full, read-only), a test write this often
    # Events older than this leave the outbox once MQTT and every webhook subscriber had them
    # (events.outbox_retention); null keeps them for good.
    outbox_retention_days: Count | None = 90


class MqttSection(_Strict):
    enabled: bool = True
    host: Host = "127.0.0.1"
    port: Port = 1883
    username: Line | None = None
    password: SecretStr | None = None
    topic_prefix: Annotated[str, AfterValidator(_topic_prefix)] = "leadrouter"
    client_id: Annotated[str, only(string.ascii_letters + string.digits + "_-", "letters, digits and _ -")] = (
        "leadrouter"
    )
    # Hear our own events back through a persistent session (client id "<client_id>-receipts",
    # which needs read access to "<topic_prefix>/+/+" and "<topic_prefix>_fence/#"), so that a
    # crash never publishes an event twice. Off: at-least-once, consumers deduplicate by id.
    receipts: bool = True
    # TLS (port 8883 by convention): the broker's certificate is checked against tls_ca_file, or
    # the system's CAs when unset; tls_cert_file/tls_key_file present a client certificate.
    tls: bool = False
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # Commands in (events/subscriber.py): leads and outcomes on <topic_prefix>/commands/..., answered
    # under <topic_prefix>/replies/; a bigger command is refused unread.
    commands: bool = True
    max_command_bytes: Count = 65536

    def tls_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.tls_ca_file)
        if self.tls_cert_file is not None:
            context.load_cert_chain(self.tls_cert_file, self.tls_key_file)
        return context

    def publisher_settings(self) -> MqttSettings:
        from events.publisher import MqttSettings

        return MqttSettings(
            host=self.host,
            port=self.port,
            topic_prefix=self.topic_prefix,
            client_id=self.client_id,
            username=self.username,
            password=self.password.get_secret_value() if self.password else None,
            tls=self.tls_context(),
            receipts=self.receipts,
        )

    def command_settings(self) -> CommandSettings:
        from events.subscriber import CommandSettings

        return CommandSettings(mqtt=self.publisher_settings(), max_bytes=self.max_command_bytes)


Token = Annotated[SecretStr, AfterValidator(_token)]


def _token_file(path: Path) -> list[str]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([Problem(str(path), 0, 0, "", f"cannot read tokens: {exc.strerror}")]) from None
    return _tokens_in(text, str(path))


def _tokens_in(text: str, origin: str) -> list[str]:
    """Tokens separated by spaces or lines, ``#`` lines skipped; a bad one raises ConfigError."""
    tokens = [token for line in text.splitlines() if not line.lstrip().startswith("#") for token in line.split()]
    for number, token in enumerate(tokens, 1):
        try:
            _token(SecretStr(token))  # the same rule as tokens written in the config
        except ValueError as exc:  # the message names the token's position, never the token
            raise ConfigError([Problem(origin, 0, 0, f"token {number}", str(exc))]) from None
    return tokens


class HttpSection(_Strict):
    host: Host = "127.0.0.1"
    port: ListenPort = 8080
    token: Token | None = None  # one token with every scope (admin); kept for existing configs
    # Several tokens per scope (intake, supervisor, admin) so one can be rotated in before the
    # old one goes; token_files: one token a line, e.g. systemd credentials under /run/credentials.
    # No token at all: the API is not started.
    tokens: dict[TokenScope, list[Token]] = Field(default_factory=dict)
    token_files: dict[TokenScope, Path] = Field(default_factory=dict)
    # Failed authentications one address may make within auth_window; then 429 until it has room.
    max_auth_failures: Count = 20
    auth_window: Duration = 60
    session_ttl: Duration = 43200  # seconds a dashboard login lasts: a working day
    # POST /leads one client address may make within per_address_window; None: unlimited. Off by
    # default: behind a proxy (or for a CRM backend) every lead comes from one address.
    max_leads_per_address: Count | None = None
    per_address_window: Duration = 60
    max_body_bytes: Count = 65536
    max_import_bytes: Count = 8 << 20  # POST /leads/import: about 100,000 rows of a CRM export
    # Against stalling (api/server.py): more connections are closed at accept; a request header
    # not complete this long after connecting (or after the last response) closes the connection.
    max_connections: Count = 4096
    header_timeout: Duration = 10
    keep_alive: WholeSeconds = 5
    max_header_bytes: Count = 16384

    def tokens_by_scope(self) -> dict[TokenScope, list[str]]:
        """Every token, by scope, from the config and the token files (read now; raises ConfigError)."""
        scopes: dict[TokenScope, list[str]] = {
            scope: [token.get_secret_value() for token in tokens] for scope, tokens in self.tokens.items()
        }
        if self.token is not None:
            scopes.setdefault(TokenScope.ADMIN, []).append(self.token.get_secret_value())
        for scope, path in self.token_files.items():
            scopes.setdefault(scope, []).extend(_token_file(path))
        return {scope: tokens for scope, tokens in scopes.items() if tokens}

    def leads_per_address(self) -> RateLimit | None:
        # Imported here: dialer.intake (and structlog with it) loads after `leadrouter run` forked the
        # copy that reads routing.yaml, which needs neither (leadrouter.cli._run).
        from dialer.intake import RateLimit

        if self.max_leads_per_address is None:
            return None
        return RateLimit(self.max_leads_per_address, timedelta(seconds=self.per_address_window))

    def auth_limits(self) -> AuthLimits:
        from api.auth import AuthLimits

        return AuthLimits(max_failures=self.max_auth_failures, window=self.auth_window)

    def connection_limits(self) -> ConnectionLimits:
        from api.server import ConnectionLimits

        return ConnectionLimits(
            max_connections=self.max_connections,
            header_timeout=self.header_timeout,
            keep_alive=self.keep_alive,
            max_header_bytes=self.max_header_bytes,
        )


Region = Annotated[str, AfterValidator(_region)]


class PhonesSection(_Strict):
    default_region: Region = "RU"
    # Numbers outside these are refused with 422 (toll fraud, callback floods): empty means
    # default_region only; types as phonenumbers names them (premium_rate, voip, ...).
    allowed_regions: list[Region] = Field(default_factory=list)
    allowed_types: list[NumberType] = Field(default_factory=lambda: [NumberType.FIXED_LINE, NumberType.MOBILE])

    # New leads one number may get within per_number_window; more are 429 (callback floods).
    max_leads_per_number: Count = 5
    per_number_window: Duration = 3600

    def per_number(self) -> RateLimit:
        from dialer.intake import RateLimit

        return RateLimit(self.max_leads_per_number, timedelta(seconds=self.per_number_window))

    def policy(self) -> PhonePolicy:
        return PhonePolicy(self.default_region, frozenset(self.allowed_regions), frozenset(self.allowed_types))


def _signing_key(value: SecretStr) -> SecretStr:
    if len(value.get_secret_value()) < 32:
        raise ValueError("must be at least 32 characters, e.g. from `openssl rand -hex 32`")
    return value


class RecordingsSection(_Strict):
    file_template: Annotated[str, template("channel_id", "leadrouter/{channel_id}.wav")] = "leadrouter/{channel_id}.wav"
    url_template: Annotated[str, AfterValidator(_url_template)] | None = None
    # The PBX's recording folder (Asterisk: /var/spool/asterisk/monitor) when the daemon runs on the
    # PBX host: the dashboard's player then gets the files from the daemon, by signed links.
    directory: Path | None = None
    link_ttl: Duration = 3600  # seconds a signed link to a recording stays valid
    # The key signing those links; unset: derived from every API token, so rotating a token voids them.
    signing_key: Annotated[SecretStr, AfterValidator(_signing_key)] | None = None
    # Where the files are kept when not in `directory` (an S3 bucket, the PBX's web server): the
    # signed link, once checked, answers 302 to this with {file} filled in.
    redirect_template: Annotated[str, AfterValidator(_url_template)] | None = None
    # Recordings of calls that ended more than this many days ago are deleted (from `directory`)
    # by a daily job, and their calls marked; None: kept forever.
    retention_days: Count | None = None

    @model_validator(mode="after")
    def _one_place(self) -> Self:
        if self.directory is not None and self.redirect_template is not None:
            raise ValueError("set `directory` (the daemon serves the files) or `redirect_template`, not both")
        if self.retention_days is not None and self.directory is None:
            raise ValueError("`retention_days` deletes files from `directory`: set it too")
        return self


class ShutdownSection(_Strict):
    grace_period: Duration = 60  # after SIGTERM, live calls get this long to end before the daemon exits
    outbox_flush: Duration = 10  # then events still in the outbox get this long to reach the broker


def _webhook_url(value: str) -> str:
    if not value.startswith(("http://", "https://")) or not value.isprintable() or " " in value:
        raise ValueError("must be an http:// or https:// URL without spaces")
    return value


def _event_pattern(value: str) -> str:
    known = [event.type for event in EVENT_TYPES]
    if not fnmatch.filter(known, value):
        raise ValueError(f"matches no event; the events are {', '.join(known)} (patterns like lead.* work)")
    return value


def _webhook_secret(value: SecretStr) -> SecretStr:
    if len(value.get_secret_value()) < MIN_TOKEN_LENGTH:
        raise ValueError(f"must be at least {MIN_TOKEN_LENGTH} characters")
    return value


class WebhookSubscriberSection(_Strict):
    # The subscriber's identity in the database: renaming one starts it afresh at the outbox's end.
    name: Annotated[str, Field(max_length=64), only(string.ascii_lowercase + string.digits + "_.-", "a-z 0-9 _ . -")]
    url: Annotated[str, AfterValidator(_webhook_url)]
    # The HMAC key, shared with the receiver; or secret_file (e.g. a systemd credential), one line.
    secret: Annotated[SecretStr, AfterValidator(_webhook_secret)] | None = None
    secret_file: Path | None = None
    # Event types or patterns (lead.*); none: every event, including those added in later versions.
    events: list[Annotated[str, AfterValidator(_event_pattern)]] | None = None

    @model_validator(mode="after")
    def _one_secret(self) -> Self:
        if (self.secret is None) == (self.secret_file is None):
            raise ValueError("set exactly one of secret and secret_file")
        return self

    def subscriber(self) -> Subscriber:
        """Reads secret_file now; raises ConfigError."""
        from events.webhooks import Subscriber

        if self.secret is not None:
            secret = self.secret.get_secret_value()
        else:
            assert self.secret_file is not None
            try:
                secret = self.secret_file.read_text().strip()
            except OSError as exc:
                raise ConfigError([Problem(str(self.secret_file), 0, 0, "", f"cannot read: {exc.strerror}")]) from None
            try:
                _webhook_secret(SecretStr(secret))
            except ValueError as exc:
                raise ConfigError([Problem(str(self.secret_file), 0, 0, "", str(exc))]) from None
        events = None
        if self.events is not None:
            known = [event.type for event in EVENT_TYPES]
            events = frozenset(name for pattern in self.events for name in fnmatch.filter(known, pattern))
        return Subscriber(name=self.name, url=self.url, secret=secret.encode(), events=events)


class WebhooksSection(_Strict):
    subscribers: list[WebhookSubscriberSection] = Field(default_factory=list)
    timeout: Duration = 10  # per request
    retry_first: Duration = 5  # the first retry; each failure doubles it (with jitter) up to retry_max
    retry_max: Duration = 900
    dead_after: Duration = 86400  # an event still failing this long after its first failure is dead
    parallel: Count = 8  # leads sent to at once, per subscriber

    @model_validator(mode="after")
    def _names_once(self) -> Self:
        names = [subscriber.name for subscriber in self.subscribers]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"subscriber names used twice: {', '.join(twice)}")
        return self

    def webhook_settings(self) -> WebhookSettings:
        """The subscribers with their secrets (secret_file is read now; raises ConfigError)."""
        from events.webhooks import WebhookSettings

        return WebhookSettings(
            subscribers=tuple(subscriber.subscriber() for subscriber in self.subscribers),
            timeout=self.timeout,
            retry_first=self.retry_first,
            retry_max=self.retry_max,
            dead_after=self.dead_after,
            parallel=self.parallel,
        )


class LogSection(_Strict):
    level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    format: Literal["console", "json"] = "json"  # a service logs for journald; --log-format console for people


_NullIsDefaults = BeforeValidator(_none_is_empty)


DEFAULT_PBX = "default"  # the name of the one PBX of an `ami:` section (health, metrics, calls.pbx)


class Settings(_Strict):
    # One PBX (`ami:`) or several by name (`pbxes:`), not both; the first of `pbxes:` is the one
    # a manager without `pbx:` in routing.yaml is on.
    ami: AmiSection | None = None
    pbxes: Annotated[dict[Identifier, PbxLinkSection], Field(min_length=1)] | None = None
    pbx: Annotated[PbxSection, _NullIsDefaults] = Field(default_factory=PbxSection)
    database: Annotated[DatabaseSection, _NullIsDefaults] = Field(default_factory=DatabaseSection)
    mqtt: Annotated[MqttSection, _NullIsDefaults] = Field(default_factory=MqttSection)
    http: Annotated[HttpSection, _NullIsDefaults] = Field(default_factory=HttpSection)
    phones: Annotated[PhonesSection, _NullIsDefaults] = Field(default_factory=PhonesSection)
    recordings: Annotated[RecordingsSection, _NullIsDefaults] = Field(default_factory=RecordingsSection)
    webhooks: Annotated[WebhooksSection, _NullIsDefaults] = Field(default_factory=WebhooksSection)
    routing_file: Path = Path("routing.yaml")
    # A reload (SIGHUP) refuses a bigger file unread, and gives up a check that takes longer.
    routing_max_bytes: Count = 1 << 20
    routing_reload_timeout: Duration = 10
    log: Annotated[LogSection, _NullIsDefaults] = Field(default_factory=LogSection)
    shutdown: Annotated[ShutdownSection, _NullIsDefaults] = Field(default_factory=ShutdownSection)

    @model_validator(mode="before")
    @classmethod
    def _one_pbx_by_default(cls, data: object) -> object:
        # Neither section: the one PBX's, so a missing secret is reported as ami.secret.
        if isinstance(data, dict) and data.get("pbxes") is None and data.get("ami") is None:
            return {**data, "ami": {}}
        return data

    @property
    def pbx_names(self) -> tuple[str, ...]:
        """The names routing.yaml's `pbx:` may give, first the default; () with one `ami:` PBX."""
        return tuple(self.pbxes or ())

    def links(self) -> list[tuple[str, AmiSection, PbxSection]]:
        """Each PBX: its name, its AMI link and its channels (the `pbx:` section with its own in place)."""
        if self.pbxes is None:
            assert self.ami is not None  # _one_pbx_by_default and _one_form see to it
            return [(DEFAULT_PBX, self.ami, self.pbx)]
        links: list[tuple[str, AmiSection, PbxSection]] = []
        for name, link in self.pbxes.items():
            own = {key: getattr(link, key) for key in ("client_channel", "manager_channel", "manager_device")}
            channels = self.pbx.model_copy(update={key: value for key, value in own.items() if value is not None})
            links.append((name, link, channels))
        return links


def _one_form(data: object) -> Iterator[tuple[Loc, str]]:
    if isinstance(data, dict) and data.get("pbxes") is not None and "ami" in data:
        yield ("pbxes",), "write the one PBX under `ami:` or several under `pbxes:`, not both"


def _pbx_secrets(data: object) -> list[_Secret]:
    """Each named PBX's AMI secret: LEADROUTER_AMI_SECRET_<NAME> (`.` and `-` as `_`), _FILE, or
    the credential ami-secret-<name>."""
    pbxes = data.get("pbxes") if isinstance(data, dict) else None
    if not isinstance(pbxes, dict):
        return []
    return [
        _Secret(("pbxes", name, "secret"), f"LEADROUTER_AMI_SECRET_{_env_name(name)}", f"ami-secret-{name}")
        for name in pbxes
        if isinstance(name, str)
    ]


def _env_name(name: str) -> str:
    return name.upper().replace(".", "_").replace("-", "_")


def load_settings(path: Path, env: Mapping[str, str] = os.environ) -> Settings:
    """Read the settings file; raise ConfigError listing every problem.

    Secrets found in the environment (SECRETS) replace the file's values; tokens found there
    (TOKEN_LISTS) are added to the file's. A relative routing_file is resolved against the
    settings file's directory.
    """
    document = Document.read(path)
    named = _pbx_secrets(document.data)
    for secret in SECRETS:
        if named and secret.loc == ("ami", "secret"):
            continue  # several PBXes: each one's secret is found below
        if (found := _from_environment(secret, env)) is not None:
            document.override(secret.loc, found[0], origin=found[1])
    shared = SECRETS[0]  # LEADROUTER_AMI_SECRET: every named PBX's that has none of its own
    for secret in named:
        found = _from_environment(secret, env)
        if found is None and not _given(document.data, secret.loc):
            found = _from_environment(shared, env)
        if found is not None:
            document.override(secret.loc, found[0], origin=found[1])
    settings = document.validate(Settings, _one_form)
    tokens = dict(settings.http.tokens)
    for scope, secret in TOKEN_LISTS.items():
        if (found := _from_environment(secret, env)) is not None:
            tokens[scope] = [*tokens.get(scope, []), *map(SecretStr, _tokens_in(*found))]
    return settings.model_copy(
        update={
            "routing_file": path.parent / settings.routing_file,
            "http": settings.http.model_copy(update={"tokens": tokens}),
        }
    )


def _given(data: object, loc: tuple[str, ...]) -> bool:
    for key in loc:
        if not isinstance(data, dict) or data.get(key) is None:
            return False
        data = data[key]
    return True


def _from_environment(secret: _Secret, env: Mapping[str, str]) -> tuple[str, str] | None:
    """The secret's text and where it came from, or None when the environment does not give it."""
    if env.get(secret.variable):
        return env[secret.variable], f"${secret.variable}"
    if env.get(f"{secret.variable}_FILE"):
        path = Path(env[f"{secret.variable}_FILE"])
    elif env.get("CREDENTIALS_DIRECTORY") and (Path(env["CREDENTIALS_DIRECTORY"]) / secret.credential).exists():
        path = Path(env["CREDENTIALS_DIRECTORY"]) / secret.credential
    else:
        return None
    try:
        # One trailing line break is the editor's (or echo's), not the secret's.
        return path.read_text().removesuffix("\n").removesuffix("\r"), str(path)
    except OSError as exc:
        raise ConfigError([Problem(str(path), 0, 0, ".".join(secret.loc), f"cannot read: {exc.strerror}")]) from None
