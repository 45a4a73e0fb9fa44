"""examples/crm_subscriber.py as a CRM developer runs it: over MQTT from a real mosquitto, and
as a webhook receiver, both keeping the same lead cards from the same run of the daemon."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from events.webhooks import signature
from examples.crm_subscriber import REPLAY_WINDOW, verify
from leadrouter.broker import free_port
from pbxsim import Behaviour, World
from pbxsim.tests.amitools import wait_until
from tests.integration.rig import running

EXAMPLE = Path(__file__).parents[2] / "examples" / "crm_subscriber.py"
SECRET = "example-secret-0123456789"
ROUTING = {
    "version": 1,
    "managers": [{"id": "anna", "name": "Anna", "extension": "101"}],
    "scenarios": [{"name": "default", "hold_limit": "60s", "ring_timeout": "8s", "max_attempts": 1}],
}
PHONES = ["+79162220001", "+79162220002"]


@contextlib.asynccontextmanager
async def example(*args: str, ready: str, env: dict[str, str] | None = None) -> AsyncIterator[None]:
    """The example as a process of its own, until it says it is ``ready`` (on stderr) and for the block."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLE), *args, stderr=asyncio.subprocess.PIPE, env={**os.environ, **(env or {})}
    )
    assert process.stderr is not None
    drain: asyncio.Task[bytes] | None = None
    try:
        while ready not in (line := (await asyncio.wait_for(process.stderr.readline(), 10)).decode()):
            assert line, "the example exited before it was ready"
        # Keep reading its stderr, or a chatty example would block on a full pipe.
        drain = asyncio.create_task(process.stderr.read())
        yield
    finally:
        process.terminate()
        await process.wait()
        if drain is not None:
            await drain


def _cards(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return {}


@pytest.mark.timeout(90)
async def test_the_example_keeps_the_same_lead_cards_from_mqtt_and_from_webhooks(
    tmp_path: Path, mosquitto_port: int
) -> None:
    by_mqtt, by_webhook = tmp_path / "mqtt-cards.json", tmp_path / "webhook-cards.json"
    port = free_port()
    mqtt_args = ["mqtt", "--port", str(mosquitto_port), "--cards", str(by_mqtt), "--identifier", uuid.uuid4().hex]
    webhook_args = ["webhook", "--port", str(port), "--cards", str(by_webhook)]
    subscriber = {"name": "example", "url": f"http://127.0.0.1:{port}/", "secret": SECRET}
    world = World(
        clients={phone[1:]: Behaviour(answer_after=1, talk=5) for phone in PHONES},
        managers={"101": Behaviour(answer_after=1)},
    )
    async with (
        example(*mqtt_args, ready="subscribed"),
        example(*webhook_args, ready="listening", env={"LEADROUTER_WEBHOOK_SECRET": SECRET}),
        running(
            tmp_path,
            world=world,
            routing=ROUTING,
            mqtt_port=mosquitto_port,
            sections={"webhooks": {"subscribers": [subscriber]}},
        ) as rig,
    ):
        ids = []
        for phone in PHONES:
            ids.append((await rig.post(phone=phone, name="Иван", source="site")).json()["id"])

        def complete(path: Path) -> bool:
            cards = _cards(path)
            return all(
                cards.get(str(lead_id), {}).get("owner") == "anna"
                and any(call.get("recording_url") for call in cards[str(lead_id)]["calls"].values())
                for lead_id in ids
            )

        await wait_until(lambda: complete(by_mqtt), 30, "the MQTT example's cards")
        await wait_until(lambda: complete(by_webhook), 30, "the webhook example's cards")
        response = await rig.http.patch(f"/leads/{ids[0]}", json={"outcome": "won", "author": "crm"})
        assert response.status_code == 200
        await wait_until(lambda: _cards(by_mqtt)[str(ids[0])].get("outcome") == "won", 20, "the outcome by MQTT")
        await wait_until(lambda: _cards(by_webhook) == _cards(by_mqtt), 20, "the same cards on both channels")
    card = _cards(by_mqtt)[str(ids[0])]
    assert card["phone"] == PHONES[0] and card["name"] == "Иван" and card["status"] == "assigned"
    (call,) = card["calls"].values()
    assert call["disposition"] == "completed" and call["manager_id"] == "anna"
    assert call["recording_url"].startswith("https://pbx.example.com/recordings/")


def test_the_examples_check_refuses_a_forged_stale_or_unsigned_request() -> None:
    body = b'{"id":"e1","type":"lead.created"}'
    now = int(time.time())
    secret = SECRET.encode()

    def headers(timestamp: int, signed: str) -> dict[str, str]:
        return {"X-Leadrouter-Timestamp": str(timestamp), "X-Leadrouter-Signature": signed}

    assert verify(secret, headers(now, signature(secret, now, body)), body, now) is None
    assert verify(secret, headers(now, signature(b"another-secret-000000", now, body)), body, now) == "bad signature"
    assert verify(secret, headers(now, signature(secret, now, body)), body + b" ", now) == "bad signature"
    stale = now - REPLAY_WINDOW - 1
    assert verify(secret, headers(stale, signature(secret, stale, body)), body, now) == (
        "timestamp outside the replay window"
    )
    assert verify(secret, {}, body, now) == "no timestamp"


def test_the_readmes_signed_example_verifies() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    request = readme[readme.index("POST /hooks/leadrouter HTTP/1.1") :]
    head, _, rest = request.partition("\n\n")
    body = rest.split("\n", 1)[0].encode()
    headers = dict(line.split(": ", 1) for line in head.splitlines()[1:])
    secret = b"whsec-amber-0123456789abcdef"
    assert f"`{secret.decode()}`" in readme
    timestamp = int(headers["X-Leadrouter-Timestamp"])
    assert headers["X-Leadrouter-Signature"] == signature(secret, timestamp, body)
    assert verify(secret, headers, body, now=timestamp + 1) is None
    assert json.loads(body)["id"] == headers["X-Leadrouter-Event-Id"]
