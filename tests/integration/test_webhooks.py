"""Webhooks and MQTT from one outbox: the real daemon, the PBX simulator, a real mosquitto and the
example CRM's webhook receiver (examples/crm_subscriber.py) on a local port."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from examples.crm_subscriber import LeadCards, WebhookReceiver
from leadrouter.broker import free_port
from leadrouter.cli import main as cli_main
from leadrouter.service import reload_webhooks_from
from pbxsim import Behaviour, World
from pbxsim.tests.amitools import wait_until
from storage.schema import outbox
from tests.integration.rig import Rig, running, scrape_metrics

SECRET = "webhook-secret-0123456789"
MANAGERS = [("m101", "101"), ("m102", "102")]
ROUTING = {
    "version": 1,
    "managers": [{"id": manager_id, "name": manager_id, "extension": extension} for manager_id, extension in MANAGERS],
    "scenarios": [{"name": "default", "hold_limit": "60s", "ring_timeout": "8s", "max_attempts": 2}],
}


def _phone(index: int) -> str:
    return f"+7916{6000000 + index:07d}"


def _world(leads: int) -> World:
    return World(
        clients={_phone(index)[1:]: Behaviour(answer_after=1, talk=5) for index in range(leads)},
        managers={extension: Behaviour(answer_after=1) for _, extension in MANAGERS},
    )


def _webhooks(port: int, **settings: Any) -> dict[str, dict[str, Any]]:
    subscriber = {"name": "crm", "url": f"http://127.0.0.1:{port}/leadrouter", "secret": SECRET}
    return {"webhooks": {"subscribers": [subscriber], **settings}}


@contextlib.contextmanager
def receiving(port: int, cards: LeadCards) -> Iterator[WebhookReceiver]:
    """The example's receiver listening on ``port`` for the block: outside it the port refuses."""
    receiver = WebhookReceiver(cards, SECRET.encode(), port=port)
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.shutdown()
        receiver.server_close()
        thread.join()


async def _outbox(rig: Rig) -> list[dict[str, Any]]:
    """Every event the daemon committed, in commit order."""
    async with rig.daemon.database.read() as conn:
        rows = (await conn.execute(outbox.select().order_by(outbox.c.seq))).mappings().all()
    return [json.loads(row["payload"]) for row in rows]


async def _post_leads(rig: Rig, count: int) -> list[int]:
    ids = []
    for index in range(count):
        response = await rig.post(phone=_phone(index), name=f"Клиент {index}", source="site")
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return ids


async def _settled(rig: Rig, count: int) -> None:
    async def done() -> bool:
        counts = await rig.daemon.queries.lead_status_counts()
        return counts.get("assigned", 0) == count and rig.daemon.dialer.live_calls == 0

    await wait_until(done, 60, "every lead assigned and its call ended")


def _per_lead(events: list[dict[str, Any]]) -> dict[int, list[str]]:
    order: dict[int, list[str]] = {}
    for event in events:
        order.setdefault(event["lead_id"], []).append(event["id"])
    return order


class _Recorder(BaseHTTPRequestHandler):
    """Keeps every request as it came: the test checks the signature itself, not with the example."""

    server: _RecordingServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if json.loads(body)["lead_id"] in self.server.failing_leads:
            self.send_response(500)
        else:
            self.server.requests.append((dict(self.headers), body))
            self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _RecordingServer(HTTPServer):
    def __init__(self, port: int) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []  # taken (200), in arrival order
        self.failing_leads: set[int] = set()  # these leads' events get 500
        super().__init__(("127.0.0.1", port), _Recorder)


@contextlib.asynccontextmanager
async def recording(port: int) -> AsyncIterator[_RecordingServer]:
    server = _RecordingServer(port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        await asyncio.to_thread(server.shutdown)
        server.server_close()


@pytest.mark.timeout(90)
async def test_assigned_owner_and_recording_arrive_on_both_channels_signed(tmp_path: Path, mosquitto_port: int) -> None:
    port = free_port()
    cards = LeadCards()
    with receiving(port, cards) as receiver:
        async with running(
            tmp_path, world=_world(3), routing=ROUTING, mqtt_port=mosquitto_port, sections=_webhooks(port)
        ) as rig:
            ids = await _post_leads(rig, 3)
            await _settled(rig, 3)
            committed = await _outbox(rig)
            await wait_until(lambda: len(cards.events) == len(committed), 20, "every event by webhook")
            await wait_until(lambda: {e["id"] for e in rig.mqtt} >= {e["id"] for e in committed}, 20, "MQTT")

    assert receiver.refused == []  # every signature held
    by_webhook = {event["id"]: event for event in cards.events}
    by_mqtt = {event["id"]: event for event in rig.mqtt}
    # The same bodies on both channels, every committed event on each, each lead's in commit order.
    assert by_webhook == by_mqtt == {event["id"]: event for event in committed}
    assert _per_lead(cards.events) == _per_lead(committed)
    for lead_id in ids:
        (assigned,) = [e for e in cards.events if e["lead_id"] == lead_id and e["type"] == "lead.assigned"]
        (ended,) = [e for e in cards.events if e["lead_id"] == lead_id and e["type"] == "call.ended"]
        assert assigned["owner_id"] in {"m101", "m102"}
        assert ended["manager_id"] == assigned["owner_id"]
        assert ended["recording_url"].startswith("https://pbx.example.com/recordings/leadrouter/")
        assert cards.cards[lead_id]["owner"] == assigned["owner_id"]
        assert by_mqtt[assigned["id"]] == assigned and by_mqtt[ended["id"]] == ended


@pytest.mark.timeout(90)
async def test_signature_is_hmac_sha256_over_timestamp_and_raw_body(tmp_path: Path) -> None:
    port = free_port()
    async with (
        recording(port) as server,
        running(tmp_path, world=_world(1), routing=ROUTING, sections=_webhooks(port)) as rig,
    ):
        await _post_leads(rig, 1)
        await _settled(rig, 1)
        committed = await _outbox(rig)
        await wait_until(lambda: len(server.requests) == len(committed), 20, "every event by webhook")
    # Each lead's events in commit order; those about no lead (manager.state) keep theirs apart,
    # so the requests interleave as the per-lead queues ran.
    assert _per_lead([json.loads(body) for _, body in server.requests]) == _per_lead(committed)
    by_id = {event["id"]: event for event in committed}
    for headers, body in server.requests:
        event = by_id[json.loads(body)["id"]]
        timestamp = headers["X-Leadrouter-Timestamp"]
        expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
        assert headers["X-Leadrouter-Signature"] == f"sha256={expected}"
        assert json.loads(body) == event
        assert headers["X-Leadrouter-Event"] == event["type"]
        assert headers["X-Leadrouter-Event-Id"] == event["id"]
        assert headers["X-Leadrouter-Attempt"] == "1"
        assert headers["Content-Type"] == "application/json"


@pytest.mark.timeout(120)
async def test_a_receiver_down_for_a_while_gets_every_event_in_order_per_lead(
    tmp_path: Path, mosquitto_port: int
) -> None:
    port = free_port()  # nothing listens there yet: every attempt is refused
    cards = LeadCards()
    # Clock seconds at scale 50: the first retry after 20-40 ms real, backing off up to 80-160 ms.
    fast_retries = _webhooks(port, retry_first="1s", retry_max="8s")
    async with running(
        tmp_path, world=_world(6), routing=ROUTING, mqtt_port=mosquitto_port, sections=fast_retries
    ) as rig:
        await _post_leads(rig, 6)
        await _settled(rig, 6)
        sender = rig.daemon.webhooks.senders["crm"]
        # Every lead's first event has failed more than once while the receiver was down.
        await wait_until(lambda: sender.failures >= 12, 20, "failed attempts")
        assert sender.delivered == 0
        committed = await _outbox(rig)
        with receiving(port, cards) as receiver:
            await wait_until(lambda: len(cards.events) == len(committed), 30, "every event once the receiver is up")
        assert receiver.refused == []
        # Meanwhile MQTT had them all at once: the webhook outage never held the other channel.
        assert {event["id"] for event in rig.mqtt} >= {event["id"] for event in committed}
    assert {event["id"] for event in cards.events} == {event["id"] for event in committed}  # no loss
    assert _per_lead(cards.events) == _per_lead(committed)  # in commit order per lead


@pytest.mark.timeout(90)
async def test_a_failing_event_holds_back_its_lead_only(tmp_path: Path) -> None:
    port = free_port()
    async with (
        recording(port) as server,
        running(tmp_path, world=_world(3), routing=ROUTING, sections=_webhooks(port, retry_first="1s")) as rig,
    ):
        # The receiver chokes on the first lead (say a field its CRM cannot map) until it is fixed;
        # a fresh database numbers the leads from 1.
        server.failing_leads.add(1)
        ids = await _post_leads(rig, 3)
        assert ids[0] == 1
        await _settled(rig, 3)
        committed = await _outbox(rig)
        others = {event["id"] for event in committed if event["lead_id"] != 1}

        def taken() -> list[dict[str, Any]]:
            return [json.loads(body) for _, body in server.requests]

        await wait_until(lambda: {event["id"] for event in taken()} == others, 20, "the other leads' events")
        sender = rig.daemon.webhooks.senders["crm"]
        await wait_until(lambda: sender.failures >= 3, 20, "the first lead's event retried")
        assert all(event["lead_id"] != 1 for event in taken())  # its later events waited behind it
        server.failing_leads.clear()
        await wait_until(lambda: len(server.requests) == len(committed), 20, "the first lead's events")
    assert _per_lead(taken()) == _per_lead(committed)


async def _admin_get(rig: Rig) -> dict[str, Any]:
    response = await rig.http.get("/webhooks")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.timeout(120)
async def test_dead_events_are_listed_and_sent_again_in_order_on_retry(tmp_path: Path, capsys: Any) -> None:
    port = free_port()
    cards = LeadCards()
    dying = _webhooks(port, retry_first="1s", retry_max="2s", dead_after="5s")
    async with running(tmp_path, world=_world(2), routing=ROUTING, sections=dying) as rig:
        await _post_leads(rig, 2)
        await _settled(rig, 2)
        committed = await _outbox(rig)

        async def all_dead() -> bool:
            return (await _admin_get(rig))["subscribers"][0]["dead"] == len(committed)

        await wait_until(all_dead, 30, "every event dead")
        listing = await _admin_get(rig)
        assert listing["subscribers"][0] | {"failing_since": None} == {
            "name": "crm",
            "url": f"http://127.0.0.1:{port}/leadrouter",
            "events": None,
            "configured": True,
            "cursor": listing["subscribers"][0]["cursor"],
            "pending": 0,
            "dead": len(committed),
            "failing_since": None,
        }
        dead = listing["dead"]
        assert [entry["id"] for entry in dead] == [event["id"] for event in committed]
        # A lead's first event died of the receiver; the ones after it are held back behind it.
        assert {entry["last_error"].split(":")[0] for entry in dead} >= {"ConnectError", "held back"}

        metrics = await scrape_metrics(rig)
        assert metrics[("leadrouter_webhook_events", (("state", "dead"), ("subscriber", "crm")))] == len(committed)
        assert metrics[("leadrouter_webhook_events", (("state", "pending"), ("subscriber", "crm")))] == 0
        assert metrics[("leadrouter_webhook_failures_total", (("subscriber", "crm"),))] >= 2  # each lead's first event
        assert metrics[("leadrouter_webhook_delivered_total", (("subscriber", "crm"),))] == 0

        # The CLI reads the same state from the database.
        config = str(tmp_path / "leadrouter.yaml")
        assert await asyncio.to_thread(cli_main, ["webhooks", "list", "--config", config, "--json"]) == 0
        out = capsys.readouterr().out  # the daemon's log lines go to stdout too, before the JSON
        printed = json.loads(out[out.index("{\n") :])
        assert [entry["id"] for entry in printed["dead"]] == [event["id"] for event in committed]

        # Only admins see or retry delivery.
        async with httpx.AsyncClient(base_url=str(rig.http.base_url)) as anonymous:
            assert (await anonymous.get("/webhooks")).status_code == 401

        with receiving(port, cards):
            # By the API, one event: its whole lead comes back, from its first dead event, in order.
            first_lead = [event for event in committed if event["lead_id"] == committed[0]["lead_id"]]
            response = await rig.http.post("/webhooks/retry", json={"event_ids": [first_lead[-1]["id"]]})
            assert response.status_code == 200 and response.json() == {"requeued": len(first_lead)}
            await wait_until(lambda: len(cards.events) == len(first_lead), 30, "the first lead's events")
            assert cards.events == first_lead
            # By the CLI, the rest.
            assert await asyncio.to_thread(cli_main, ["webhooks", "retry", "--config", config]) == 0
            await wait_until(lambda: len(cards.events) == len(committed), 30, "every dead event sent again")
            assert (await _admin_get(rig))["subscribers"][0]["dead"] == 0
    assert _per_lead(cards.events) == _per_lead(committed)


@pytest.mark.timeout(90)
async def test_sighup_adds_a_subscriber_from_the_outbox_end_with_its_filter(tmp_path: Path) -> None:
    first, second = free_port(), free_port()
    config_file = tmp_path / "leadrouter.yaml"
    async with (
        recording(first) as old,
        recording(second) as new,
        running(tmp_path, world=_world(2), routing=ROUTING, sections=_webhooks(first)) as rig,
    ):
        await rig.post(phone=_phone(0), name="before", source="site")
        await _settled(rig, 1)
        config = yaml.safe_load(config_file.read_text())
        added = {"name": "owners", "url": f"http://127.0.0.1:{second}/x", "secret": SECRET, "events": ["lead.*"]}

        # A broken file is refused whole: the running subscribers stay.
        config["webhooks"]["subscribers"].append({**added, "events": ["lead.nothing"]})
        config_file.write_text(yaml.safe_dump(config))
        assert not await reload_webhooks_from(rig.daemon, config_file)
        assert list(rig.daemon.webhooks.senders) == ["crm"]

        config["webhooks"]["subscribers"][-1] = {**added, "events": ["lead.assigned"]}
        config_file.write_text(yaml.safe_dump(config))
        assert await reload_webhooks_from(rig.daemon, config_file)

        async def enrolled() -> bool:
            return any(
                entry["name"] == "owners" and entry["cursor"] for entry in (await _admin_get(rig))["subscribers"]
            )

        await wait_until(enrolled, 10, "the new subscriber's place in the outbox")
        await rig.post(phone=_phone(1), name="after", source="site")
        await _settled(rig, 2)
        await wait_until(lambda: len(new.requests) == 1, 20, "the new subscriber's one lead.assigned")
        committed = await _outbox(rig)
        await wait_until(lambda: len(old.requests) == len(committed), 20, "the old subscriber's every event")
    (only,) = [json.loads(body) for _, body in new.requests]
    # Only what it asked for, and only from after the reload: lead 0 was assigned before it.
    assert only["type"] == "lead.assigned" and only in committed
    assert only["lead_id"] == max(event["lead_id"] for event in committed)
