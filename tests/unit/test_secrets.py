"""Secrets stay out of reprs, log lines and errors; a config file others can read is reported."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import yaml
from structlog.testing import capture_logs

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
