from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ami_adapter.translate import TranslatorSettings
from config.problems import ConfigError, Problem
from config.settings import DIAL_DEADLINE_MARGIN, PbxSection, load_settings

REPO = Path(__file__).parents[2]
SECRET_ENV = {"LEADROUTER_AMI_SECRET": "from-env"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "leadrouter.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def problems(tmp_path: Path, text: str, env: dict[str, str] = SECRET_ENV) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env)
    return [str(problem).removeprefix(f"{path}:") for problem in caught.value.problems]


def pbx_problem(tmp_path: Path, key: str, value: str) -> str:
    (found,) = problems(tmp_path, f"pbx:\n  {key}: {value}\n")
    return found


def test_shipped_deploy_settings_load_with_the_secret_from_the_environment() -> None:
    settings = load_settings(REPO / "deploy" / "leadrouter.yaml", SECRET_ENV)

    assert settings.ami.secret.get_secret_value() == "from-env"
    assert settings.routing_file == REPO / "deploy" / "routing.yaml"
    assert settings.pbx == PbxSection()


def test_shipped_deploy_settings_only_lack_the_secret() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(REPO / "deploy" / "leadrouter.yaml", {})
    assert [problem.path for problem in caught.value.problems] == ["ami.secret"]


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""), SECRET_ENV)

    assert (settings.ami.host, settings.ami.port, settings.ami.username) == ("127.0.0.1", 5038, "leadrouter")
    assert (settings.ami.ping_interval, settings.ami.reconnect_delay) == (10.0, 2)
    assert settings.pbx.client_channel == "PJSIP/{phone}@trunk"
    assert settings.pbx.apology_context == "leadrouter-sorry"
    assert settings.database.url == "sqlite+aiosqlite:////var/lib/leadrouter/leadrouter.db"
    assert (settings.mqtt.enabled, settings.mqtt.port, settings.mqtt.password) == (True, 1883, None)
    assert (settings.http.port, settings.http.token) == (8080, None)
    assert settings.phones.default_region == "RU"
    assert settings.recordings.file_template == "leadrouter/{channel_id}.wav"
    assert settings.routing_file == tmp_path / "routing.yaml"
    assert (settings.log.level, settings.log.format) == ("info", "json")


def test_section_with_every_key_commented_out_means_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "mqtt:\n  # enabled: true\n"), SECRET_ENV)
    assert settings.mqtt.enabled is True


def test_missing_secret_says_where_it_may_come_from(tmp_path: Path) -> None:
    assert problems(tmp_path, "ami:\n  port: 5038\n", env={}) == [
        "2:3: ami.secret: required key is missing: set ami.secret, or LEADROUTER_AMI_SECRET in the environment"
    ]


def test_environment_wins_over_the_file_for_secrets(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        ami: {secret: file-secret}
        mqtt: {password: file-password}
        http: {token: file-token-0123456789}
        """,
    )
    env = {
        "LEADROUTER_AMI_SECRET": "env-secret",
        "LEADROUTER_MQTT_PASSWORD": "env-password",
        "LEADROUTER_API_TOKEN": "env-token-0123456789",
        "LEADROUTER_DATABASE_URL": "postgresql+asyncpg://leadrouter:env-pw@db.example.com/leadrouter",
    }

    from_file = load_settings(path, {"LEADROUTER_AMI_SECRET": ""})
    from_env = load_settings(path, env)

    assert from_file.ami.secret.get_secret_value() == "file-secret"
    assert from_env.ami.secret.get_secret_value() == "env-secret"
    assert from_env.mqtt.password is not None and from_env.mqtt.password.get_secret_value() == "env-password"
    assert from_env.http.token is not None and from_env.http.token.get_secret_value() == "env-token-0123456789"
    assert from_env.database.url == "postgresql+asyncpg://leadrouter:env-pw@db.example.com/leadrouter"


def test_bad_value_from_the_environment_names_the_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, {"LEADROUTER_AMI_SECRET": "bad\r\nAction: Originate"})
    assert caught.value.problems == [
        Problem(
            "$LEADROUTER_AMI_SECRET",
            0,
            0,
            "ami.secret",
            "must be non-empty, on one line, without leading or trailing spaces",
        )
    ]


def test_durations(tmp_path: Path) -> None:
    settings = load_settings(
        write(tmp_path, "ami:\n  ping_interval: 1.5m\n  ping_timeout: 2\n  action_timeout: 1h\n"), SECRET_ENV
    )
    assert (settings.ami.ping_interval, settings.ami.ping_timeout, settings.ami.action_timeout) == (
        90.0,
        2.0,
        3600.0,
    )


def test_whole_seconds_refuse_fractions(tmp_path: Path) -> None:
    assert problems(tmp_path, "ami:\n  reconnect_delay: 0.5s\n") == [
        "2:20: ami.reconnect_delay: must be a valid integer"
    ]


@pytest.mark.parametrize(
    ("value", "found"),
    [
        ('"leadrouter-hold\\r\\nAction: Hangup"', r"'\n' '\r' ' ' ':'"),
        ('"a,b"', "','"),
        ('"a&b"', "'&'"),
        ('"a;b"', "';'"),
        ('"${EXTEN}"', "'$' '{' '}'"),
    ],
)
def test_unsafe_characters_in_contexts_are_refused(tmp_path: Path, value: str, found: str) -> None:
    assert pbx_problem(tmp_path, "hold_context", value) == (
        f"2:17: pbx.hold_context: may contain only letters, digits and / @ . _ - (found {found})"
    )


@pytest.mark.parametrize(
    ("value", "found"),
    [
        ('"PJSIP/{phone}@trunk\\nAction: Hangup"', r"'\n' ' ' ':'"),
        ('"PJSIP/{phone}@trunk,t"', "','"),
        ('"PJSIP/{phone}&PJSIP/666"', "'&'"),
        ('"PJSIP/${phone}@trunk"', "'$'"),
        ('"PJSIP/{phone}@{trunk}"', "'{' '}'"),
    ],
)
def test_unsafe_characters_in_templates_are_refused(tmp_path: Path, value: str, found: str) -> None:
    assert pbx_problem(tmp_path, "client_channel", value) == (
        f"2:19: pbx.client_channel: may contain only letters, digits and / @ . _ - besides {{phone}} (found {found})"
    )


@pytest.mark.parametrize("value", ["PJSIP/trunk", '"PJSIP/{phone}{phone}"', '"PJSIP/{extension}"'])
def test_template_needs_its_placeholder_exactly_once(tmp_path: Path, value: str) -> None:
    assert pbx_problem(tmp_path, "client_channel", value) == (
        "2:19: pbx.client_channel: must contain {phone} exactly once, e.g. PJSIP/{phone}@trunk"
    )


def test_manager_templates_need_the_extension_placeholder(tmp_path: Path) -> None:
    assert problems(tmp_path, 'pbx:\n  manager_channel: "SIP/{phone}"\n  manager_device: "{extension}"\n') == [
        "2:20: pbx.manager_channel: must contain {extension} exactly once, e.g. PJSIP/{extension}",
        "3:19: pbx.manager_device: must start with the channel technology, e.g. PJSIP/",
    ]


def test_other_pbx_values(tmp_path: Path) -> None:
    text = 'pbx:\n  caller_id: "+74951234567"\n  channel_id_prefix: leadrouter\n  apology_context: null\n'
    assert problems(tmp_path, text) == [
        "2:14: pbx.caller_id: may contain only digits (found '+')",
        "3:22: pbx.channel_id_prefix: must be at most 8 characters",
    ]


def test_template_helpers() -> None:
    pbx = PbxSection(
        client_channel="Local/{phone}@out",
        manager_channel="PJSIP/{extension}@office",
        manager_device="SIP/{extension}",
    )

    assert pbx.client_channel_for("79161234567") == "Local/79161234567@out"
    assert pbx.manager_channel_parts == ("PJSIP/", "@office")
    assert pbx.translator_settings() == TranslatorSettings(channel_id_prefix="lr", manager_device=("SIP/", ""))
    with pytest.raises(ValueError, match="digits only"):
        pbx.client_channel_for("7916&PJSIP/666")


def test_other_sections(tmp_path: Path) -> None:
    text = """\
    mqtt:
      topic_prefix: leads/#
    http:
      token: short
    phones:
      default_region: XX
    recordings:
      url_template: https://pbx.example.com/recordings/
    log:
      format: text
    database:
      url: not a url
    """
    assert problems(tmp_path, text) == [
        "2:17: mqtt.topic_prefix: must not contain the MQTT wildcards # and +",
        "4:10: http.token: must be at least 16 characters without spaces",
        "6:19: phones.default_region: 'XX' is not a region code phonenumbers knows; use two capital letters, e.g. RU",
        "8:17: recordings.url_template: must contain {file} exactly once, "
        "e.g. https://pbx.example.com/recordings/{file}",
        "10:11: log.format: must be 'console' or 'json'",
        "12:8: database.url: is not a database URL, e.g. sqlite+aiosqlite:////var/lib/leadrouter/leadrouter.db",
    ]


def test_unknown_section_and_key(tmp_path: Path) -> None:
    assert problems(tmp_path, "amy:\n  host: x\nmqtt:\n  hots: x\n") == [
        "1:1: amy: unknown key; did you mean 'ami'?",
        "4:3: mqtt.hots: unknown key; did you mean 'host'?",
    ]


def test_absolute_routing_file_is_kept(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "routing_file: /etc/leadrouter/routing.yaml\n"), SECRET_ENV)
    assert settings.routing_file == Path("/etc/leadrouter/routing.yaml")


def test_http_port_0_takes_any_free_port_and_ami_port_0_is_refused(tmp_path: Path) -> None:
    # What the demo and the tests write: MQTT off, the API on whatever port is free.
    settings = load_settings(write(tmp_path, "mqtt: {enabled: false}\nhttp: {port: 0}\n"), SECRET_ENV)
    assert settings.mqtt.enabled is False
    assert settings.http.port == 0

    assert problems(tmp_path, "ami:\n  port: 0\n") == ["2:9: ami.port: must be greater than or equal to 1"]


def test_sections_build_the_settings_each_part_takes(tmp_path: Path) -> None:
    text = """\
    ami: {port: 5039, secret: s3cret}
    pbx: {client_channel: "Local/{phone}@out", manager_channel: "PJSIP/{extension}@office", originate_timeout: 25s}
    mqtt: {username: crm, password: p4ss}
    """
    settings = load_settings(write(tmp_path, text), {})

    ami = settings.ami.client_settings()
    assert (ami.port, ami.secret, ami.ping_interval) == (5039, "s3cret", 10.0)
    asterisk = settings.pbx.asterisk_settings()
    assert asterisk.client_channel("79161234567") == "Local/79161234567@out"
    assert (asterisk.manager_channel, asterisk.originate_timeout) == (("PJSIP/", "@office"), 25.0)
    assert settings.pbx.dialer_settings().dial_deadline == 25.0 + DIAL_DEADLINE_MARGIN
    mqtt = settings.mqtt.publisher_settings()
    assert (mqtt.username, mqtt.password, mqtt.topic_prefix) == ("crm", "p4ss", "leadrouter")


def test_reading_the_settings_imports_none_of_the_daemons_big_libraries(tmp_path: Path) -> None:
    # `leadrouter run` forks the copy that reads routing.yaml once leadrouter.yaml is read: these
    # libraries are imported after the fork, while the copy works, and only where they are used.
    path = write(tmp_path, "ami:\n  secret: s3cret\nwebhooks:\n  subscribers: []\n")
    check = f"""
import sys
from pathlib import Path
from config.settings import load_settings
load_settings(Path({str(path)!r})).webhooks.webhook_settings()
print(sorted({{"fastapi", "uvicorn", "aiomqtt", "httpx", "panoramisk", "alembic"}} & set(sys.modules)))
"""
    found = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"
