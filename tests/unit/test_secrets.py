"""Secrets stay out of reprs, log lines and errors; a config file others can read is reported."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
import yaml
from structlog.testing import capture_logs

from api.scopes import TokenScope
from config.problems import ConfigError
from config.settings import Settings, load_settings
from leadrouter.cli import warn_if_readable_by_others

SECRET, PASSWORD, TOKEN = "ami-secret-xyzzy", "mqtt-password-plugh", "api-token-0123456789-frotz"


def _load(folder: Path, document: dict[str, Any]) -> Settings:
    """As the daemon reads them: a leadrouter.yaml through load_settings."""
    path = folder / "leadrouter.yaml"
    path.write_text(yaml.safe_dump(document))
    return load_settings(path, env={})


def _settings(folder: Path) -> Settings:
    return _load(
        folder,
        {
            "ami": {"secret": SECRET},
            "mqtt": {"username": "lr", "password": PASSWORD, "tls": True},
            "http": {"token": TOKEN, "tokens": {"supervisor": [TOKEN + "-2"]}},
        },
    )


def test_no_secret_shows_in_any_repr_of_the_settings(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    shown = " ".join(
        repr(part)
        for part in (settings, settings.ami.client_settings(), settings.mqtt.publisher_settings(), settings.http)
    )
    for secret in (SECRET, PASSWORD, TOKEN):
        assert secret not in shown
    assert settings.ami.client_settings().secret == SECRET  # still there for the login itself


def test_mqtt_tls_checks_the_brokers_certificate(tmp_path: Path) -> None:
    context = _settings(tmp_path).mqtt.publisher_settings().tls
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert _load(tmp_path, {"ami": {"secret": SECRET}}).mqtt.publisher_settings().tls is None


def test_a_config_file_others_can_read_is_reported_without_its_content(tmp_path: Path) -> None:
    config = tmp_path / "leadrouter.yaml"
    config.write_text(f"ami: {{secret: {SECRET}}}\n")
    config.chmod(0o644)
    with capture_logs() as logs:
        assert warn_if_readable_by_others(config)
        config.chmod(0o640)
        assert not warn_if_readable_by_others(config)
    assert [line["event"] for line in logs] == ["config.readable_by_others"]
    assert logs[0]["mode"] == "0o644" and SECRET not in repr(logs)


def test_every_secret_comes_from_the_environment_a_file_or_a_systemd_credential(tmp_path: Path) -> None:
    config = tmp_path / "leadrouter.yaml"
    config.write_text(yaml.safe_dump({"mqtt": {"username": "lr"}, "http": {"tokens": {"supervisor": [TOKEN]}}}))
    credentials = tmp_path / "credentials"  # as systemd's LoadCredential= lays them out
    credentials.mkdir()
    (credentials / "mqtt-password").write_text(PASSWORD + "\n")
    (credentials / "recording-key").write_text("k" * 40 + "\n")
    (credentials / "supervisor-tokens").write_text(f"# rotated in on Monday\n{TOKEN}-new\n")
    secret_file = tmp_path / "ami-secret"
    secret_file.write_text(SECRET + "\n")
    env = {
        "LEADROUTER_AMI_SECRET_FILE": str(secret_file),
        "LEADROUTER_INTAKE_TOKENS": "intake-token-0123456789a intake-token-0123456789b",
        "LEADROUTER_API_TOKEN": TOKEN + "-admin",
        "CREDENTIALS_DIRECTORY": str(credentials),
    }
    settings = load_settings(config, env)
    assert settings.ami.secret.get_secret_value() == SECRET
    assert settings.mqtt.publisher_settings().password == PASSWORD
    assert settings.recordings.signing_key is not None
    assert settings.recordings.signing_key.get_secret_value() == "k" * 40
    assert settings.http.tokens_by_scope() == {
        TokenScope.SUPERVISOR: [TOKEN, TOKEN + "-new"],  # added to the config's, for rotation
        TokenScope.INTAKE: ["intake-token-0123456789a", "intake-token-0123456789b"],
        TokenScope.ADMIN: [TOKEN + "-admin"],
    }
    # The variable itself wins over its file, which wins over the credential.
    env["LEADROUTER_MQTT_PASSWORD_FILE"] = str(secret_file)
    assert load_settings(config, env).mqtt.publisher_settings().password == SECRET
    env["LEADROUTER_MQTT_PASSWORD"] = "from-the-variable"
    assert load_settings(config, env).mqtt.publisher_settings().password == "from-the-variable"


def test_a_bad_secret_from_the_environment_names_its_origin_never_its_value(tmp_path: Path) -> None:
    config = tmp_path / "leadrouter.yaml"
    config.write_text(yaml.safe_dump({"ami": {"secret": SECRET}}))
    for env, origin, path in (
        ({"LEADROUTER_SUPERVISOR_TOKENS": f"{TOKEN} short"}, "$LEADROUTER_SUPERVISOR_TOKENS", "token 2"),
        ({"LEADROUTER_RECORDING_KEY": "short-key"}, "$LEADROUTER_RECORDING_KEY", "recordings.signing_key"),
        ({"LEADROUTER_AMI_SECRET_FILE": str(tmp_path / "missing")}, str(tmp_path / "missing"), "ami.secret"),
    ):
        with pytest.raises(ConfigError) as caught:
            load_settings(config, env)
        (problem,) = caught.value.problems
        assert (problem.file, problem.path) == (origin, path)
        assert "short" not in problem.message and TOKEN not in str(problem)
