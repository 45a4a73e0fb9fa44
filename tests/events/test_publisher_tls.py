"""The publisher over TLS with a username and password, against a real mosquitto with a TLS
listener and a password file; the CA and certificates are made for the test with openssl."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest
import yaml

from config.settings import load_settings
from events.publisher import OutboxPublisher
from leadrouter.broker import private_mosquitto
from pbxsim.tests.amitools import wait_until
from storage.engine import Database, StorageUnavailable
from storage.queries import SqlQueries
from tests.events.test_publisher import NOW, _commit_leads

USER, PASSWORD = "leadrouter", "mqtt-password-0123456789"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _authority(folder: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name}",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=folder)  # fmt: skip


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A mosquitto whose TLS listener has a certificate for 127.0.0.1 from a throwaway CA; (port, CA)."""
    if shutil.which("openssl") is None or shutil.which("mosquitto_passwd") is None:
        pytest.fail("openssl and mosquitto_passwd are needed (Debian: openssl, mosquitto)")
    _authority(tmp_path, "test-ca")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
             "-keyout", "broker.key", "-out", "broker.csr", cwd=tmp_path)  # fmt: skip
    (tmp_path / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "broker.csr", "-CA", "test-ca.crt", "-CAkey", "test-ca.key", "-CAcreateserial",
             "-days", "1", "-extfile", "san.cnf", "-out", "broker.crt", cwd=tmp_path)  # fmt: skip
    passwords = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), USER, PASSWORD], check=True, capture_output=True)
    listener = (
        f"cafile {tmp_path / 'test-ca.crt'}\ncertfile {tmp_path / 'broker.crt'}\nkeyfile {tmp_path / 'broker.key'}\n"
    )
    with private_mosquitto(listener=listener, password_file=passwords) as port:
        yield port, tmp_path / "test-ca.crt"


def _publisher(db: Database, tmp_path: Path, port: int, **mqtt: object) -> OutboxPublisher:
    """Built from leadrouter.yaml's mqtt section, as the daemon builds it."""
    config = tmp_path / "leadrouter.yaml"
    section = {"host": "127.0.0.1", "port": port, "tls": True, "username": USER, "password": PASSWORD} | mqtt
    config.write_text(yaml.safe_dump({"ami": {"secret": "s3cret"}, "mqtt": section}))
    settings = load_settings(config, env={}).mqtt.publisher_settings()
    return OutboxPublisher(SqlQueries(db), settings, now=lambda: NOW, feed_outages=(StorageUnavailable,))


async def test_events_reach_a_tls_broker_that_checks_the_password(
    db: Database, tmp_path: Path, tls_broker: tuple[int, Path]
) -> None:
    port, ca = tls_broker
    publisher = _publisher(db, tmp_path, port, tls_ca_file=str(ca))
    context = ssl.create_default_context(cafile=ca)
    async with (
        aiomqtt.Client("127.0.0.1", port, username=USER, password=PASSWORD, tls_context=context) as crm,
        asyncio.TaskGroup() as group,
    ):
        await crm.subscribe("leadrouter/#", qos=1)
        publishing = group.create_task(publisher.run())
        await _commit_leads(db, publisher, 0, 5)
        received = []
        async with asyncio.timeout(10):
            async for message in crm.messages:
                received.append(json.loads(bytes(message.payload)))  # type: ignore[arg-type]
                if len(received) == 5:
                    break
        await wait_until(lambda: publisher.published >= 5, 5, "5 acknowledgements over TLS")
        publishing.cancel()
    assert [event["lead_id"] for event in received] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("wrong", ["ca", "password", "plain"])
async def test_a_broker_that_cannot_be_trusted_or_refuses_us_gets_nothing(
    db: Database, tmp_path: Path, tls_broker: tuple[int, Path], wrong: str
) -> None:
    port, ca = tls_broker
    if wrong == "ca":  # a certificate from another authority: the broker is not the one we know
        _authority(tmp_path, "other-ca")
        publisher = _publisher(db, tmp_path, port, tls_ca_file=str(tmp_path / "other-ca.crt"))
    elif wrong == "password":
        publisher = _publisher(db, tmp_path, port, tls_ca_file=str(ca), password="not-the-password-0123")
    else:  # TLS off: the TLS listener takes no plain MQTT
        publisher = _publisher(db, tmp_path, port, tls=False)
    async with asyncio.TaskGroup() as group:
        publishing = group.create_task(publisher.run())
        await _commit_leads(db, publisher, 0, 2)
        # Plain MQTT to a TLS listener is only given up when the connect times out (10 s).
        await wait_until(lambda: publisher.broker_failures >= 1, 20, "a refused connection")
        publishing.cancel()
    assert publisher.published == 0
    assert len(await SqlQueries(db).pending_outbox(10)) == 2  # kept for when the settings are right
