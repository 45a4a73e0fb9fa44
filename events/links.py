"""What every outward link of ours shares: reconnects that back off, one log line per outage
(not per failure), and MQTT messages acknowledged only when we say so."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:  # the webhooks use the rest of this module, and need no MQTT library
    import aiomqtt

log = structlog.get_logger("events")


def acknowledge_when_told(client: aiomqtt.Client) -> aiomqtt.Client:
    """The client, with paho's acknowledgement on arrival turned off; set before connecting (a
    session's queued messages may arrive with the CONNACK). aiomqtt has no switch for it."""
    client._client.manual_ack_set(True)
    return client


def acknowledge(client: aiomqtt.Client, message: aiomqtt.Message) -> None:
    """Acknowledge ``message`` on ``client``, the connection it came by."""
    client._client.ack(message.mid, message.qos)


def connected(client: aiomqtt.Client) -> bool:
    return client._client.is_connected()


class Backoff:
    def __init__(self, first: float, most: float) -> None:
        self._first = first
        self._most = most
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self._most)
        return delay

    def reset(self) -> None:
        self._next = self._first


class Outage:
    """One line when something goes, a reminder now and then while it stays gone, one when it is back."""

    def __init__(self, what: str, reminder_interval: float) -> None:
        self._what = what
        self._reminder_interval = reminder_interval
        self.failures = 0  # since the outage began
        self._started: float | None = None
        self._reminded = 0.0

    @property
    def ongoing(self) -> bool:
        return self._started is not None

    def failed(self, error: str, **context: object) -> None:
        now = time.monotonic()
        self.failures += 1
        if self._started is None:
            self._started = self._reminded = now
            log.warning(f"{self._what}.unavailable", error=error, **context)
        elif now - self._reminded >= self._reminder_interval:
            self._reminded = now
            down_for = round(now - self._started, 1)
            log.warning(
                f"{self._what}.still_unavailable", error=error, down_for=down_for, failures=self.failures, **context
            )

    def ended(self, **context: object) -> None:
        if self._started is not None:
            down_for = round(time.monotonic() - self._started, 1)
            log.info(f"{self._what}.back", down_for=down_for, failures=self.failures, **context)
        self._started = None
        self.failures = 0
