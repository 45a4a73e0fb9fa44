"""A CRM's side of leadrouter: a lead card per lead, kept up to date from the daemon's events.

Two ways in, one card logic (``LeadCards.apply``):

    # over MQTT (aiomqtt); a persistent session, so the broker keeps events while we are away
    python examples/crm_subscriber.py mqtt --host 127.0.0.1 --port 1883 --cards cards.json

    # as a webhook receiver (standard library only); leadrouter.yaml: webhooks.subscribers[].url
    LEADROUTER_WEBHOOK_SECRET=... python examples/crm_subscriber.py webhook --port 8099 --cards cards.json

Each event has an ``id``: delivery is at least once, so a repeat is recognised and ignored.
The event shapes are in events/schema/ (served by the daemon at /schema/asyncapi.json).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPLAY_WINDOW = 300  # seconds: a signature older (or newer) than this is refused


class LeadCards:
    """The CRM's lead cards: who the lead is, its status and owner, its calls with recordings, its outcome."""

    def __init__(self, save_to: Path | None = None) -> None:
        self.cards: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []  # every event applied, in arrival order
        self._seen: set[str] = set()
        self._save_to = save_to
        self._lock = threading.Lock()  # the webhook receiver applies from its request threads

    def apply(self, event: dict[str, Any]) -> bool:
        """Update the lead's card; False for an event seen before."""
        with self._lock:
            if event["id"] in self._seen:
                return False
            self._seen.add(event["id"])
            self.events.append(event)
            if not event["lead_id"]:
                return True  # about no lead (manager.state: 0, manager.changed: null): no card to keep
            card = self.cards.setdefault(event["lead_id"], {"lead_id": event["lead_id"], "calls": {}})
            kind = event["type"]
            if kind == "lead.created":
                card.update(
                    {key: event[key] for key in ("phone", "name", "source", "external_id", "payload", "created_at")}
                )
                card["status"] = "new"
            elif kind == "call.dialing":
                card["status"] = "dialing"
                card["calls"][str(event["call_id"])] = {"attempt": event["attempt"], "started_at": event["started_at"]}
            elif kind == "call.answered":
                card["calls"].setdefault(str(event["call_id"]), {})["answered_at"] = event["answered_at"]
            elif kind == "lead.assigned":
                card["status"] = "assigned"
                card["owner"] = event["owner_id"]
            elif kind == "call.ended":
                call = card["calls"].setdefault(str(event["call_id"]), {})
                for key in ("disposition", "manager_id", "talk_seconds", "recording_url", "ended_at"):
                    call[key] = event[key]
            elif kind == "lead.scheduled":
                card["status"] = "scheduled"
                card["next_attempt_at"] = event["next_attempt_at"]
            elif kind == "lead.failed":
                card["status"] = "failed"
            elif kind == "lead.outcome":
                card["outcome"] = event["outcome"]
            # Unknown types come from a newer daemon: the card simply does not show them yet.
            if self._save_to is not None:
                temporary = self._save_to.with_suffix(".tmp")
                temporary.write_text(json.dumps(self.cards, ensure_ascii=False, indent=1))
                temporary.replace(self._save_to)
            return True


# --- over MQTT -------------------------------------------------------------------------------


async def follow_mqtt(cards: LeadCards, host: str, port: int, prefix: str, identifier: str) -> None:
    import aiomqtt  # only this mode needs it

    while True:  # aiomqtt does not reconnect by itself
        try:
            # clean_session=False: the broker queues our QoS 1 events while we are away.
            async with aiomqtt.Client(host, port, identifier=identifier, clean_session=False) as client:
                # The event topics only (<prefix>/<entity>/<event>): not the CRM's own commands and replies.
                await client.subscribe(f"{prefix}/+/+", qos=1)
                print(f"subscribed to {prefix}/+/+ on {host}:{port}", file=sys.stderr)
                async for message in client.messages:
                    event = json.loads(bytes(message.payload))
                    if cards.apply(event):
                        print(f"{message.topic}: lead {event['lead_id']}", file=sys.stderr)
        except aiomqtt.MqttError as exc:
            print(f"broker unavailable ({exc}); retrying", file=sys.stderr)
            await asyncio.sleep(2)


# --- as a webhook receiver -------------------------------------------------------------------


def verify(secret: bytes, headers: Any, body: bytes, now: float, window: float = REPLAY_WINDOW) -> str | None:
    """Why the request is not leadrouter's, or None when its signature holds.

    The signature is HMAC-SHA256 with the shared secret over ``<X-Leadrouter-Timestamp>.<raw body>``,
    sent as ``X-Leadrouter-Signature: sha256=<hex>``. Check it on the raw bytes, before parsing.
    """
    timestamp = headers.get("X-Leadrouter-Timestamp", "")
    if not timestamp.isdigit():
        return "no timestamp"
    if abs(now - int(timestamp)) > window:
        return "timestamp outside the replay window"
    expected = "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, headers.get("X-Leadrouter-Signature", "")):
        return "bad signature"
    return None


class WebhookReceiver(ThreadingHTTPServer):
    """POSTed events with a valid signature go into ``cards``; anything else gets 401."""

    daemon_threads = True

    def __init__(self, cards: LeadCards, secret: bytes, host: str = "127.0.0.1", port: int = 8099) -> None:
        self.cards = cards
        self.secret = secret
        self.refused: list[str] = []  # why requests were refused
        super().__init__((host, port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: WebhookReceiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        refused = verify(self.server.secret, self.headers, body, time.time())
        if refused is not None:
            self.server.refused.append(refused)
            self.send_response(401)
        else:
            self.server.cards.apply(json.loads(body))
            self.send_response(204)  # 2xx: delivered; anything else is retried later
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per event would drown the useful ones


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["mqtt", "webhook"])
    parser.add_argument("--host", default="127.0.0.1", help="the broker (mqtt), or the address to listen on (webhook)")
    parser.add_argument("--port", type=int, help="1883 (mqtt) or 8099 (webhook) by default")
    parser.add_argument("--prefix", default="leadrouter", help="leadrouter.yaml's mqtt.topic_prefix")
    parser.add_argument("--identifier", default="crm-example", help="MQTT client id: the broker's session for us")
    parser.add_argument("--cards", type=Path, help="keep the cards in this JSON file")
    args = parser.parse_args()
    cards = LeadCards(args.cards)
    if args.mode == "mqtt":
        try:
            asyncio.run(follow_mqtt(cards, args.host, args.port or 1883, args.prefix, args.identifier))
        except KeyboardInterrupt:
            pass
        return 0
    secret = os.environ.get("LEADROUTER_WEBHOOK_SECRET", "")
    if not secret:
        parser.error("set LEADROUTER_WEBHOOK_SECRET to the subscriber's secret in leadrouter.yaml")
    with WebhookReceiver(cards, secret.encode(), args.host, args.port or 8099) as server:
        print(f"listening on {args.host}:{server.server_address[1]}", file=sys.stderr)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
