"""One line per event, in one shape, for our lines and the libraries' (uvicorn, aiomqtt, panoramisk)."""

from __future__ import annotations

import io
import logging

import structlog

from leadrouter.logs import configure_logging
from tests.conftest import JsonLog


def test_ours_and_the_libraries_lines_are_one_json_line_each_with_the_bound_ids(json_log: JsonLog) -> None:
    with structlog.contextvars.bound_contextvars(lead_id=7, call_id=3, channel_id="lr-0123abcd"):
        structlog.get_logger("dialer").warning("dialer.originate_refused", reason="Originate failed")
        logging.getLogger("mqtt").warning("There are %d pending publish calls.", 12)
        try:
            raise ValueError("boom\non two lines")
        except ValueError:
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    structlog.get_logger("events").info("mqtt.connected", host="127.0.0.1")
    logging.getLogger("panoramisk.manager").info("said nothing ops need")  # quietened to warnings

    ours, aiomqtt, uvicorn, unbound = json_log.lines()  # each line parses alone: one JSON object per line
    assert ours["event"] == "dialer.originate_refused" and ours["reason"] == "Originate failed"
    assert aiomqtt["event"] == "There are 12 pending publish calls." and aiomqtt["logger"] == "mqtt"
    assert uvicorn["logger"] == "uvicorn.error" and uvicorn["level"] == "error"
    assert "ValueError: boom\non two lines" in uvicorn["exception"]  # the traceback inside the one line
    for line in (ours, aiomqtt, uvicorn):
        assert (line["lead_id"], line["call_id"], line["channel_id"]) == (7, 3, "lr-0123abcd")
        assert {"timestamp", "level", "logger", "event"} <= line.keys()
    assert "lead_id" not in unbound and unbound["logger"] == "events"


def test_console_format_is_for_people() -> None:
    stream = io.StringIO()
    configure_logging("info", "console", stream=stream, cache=False)
    try:
        structlog.get_logger("daemon").info("daemon.ready", http_port=8080)
        logging.getLogger("uvicorn.error").info("Started server process [1]")
    finally:
        logging.getLogger().handlers = []
        logging.getLogger().setLevel(logging.WARNING)
        structlog.reset_defaults()
    ready, uvicorn = stream.getvalue().splitlines()
    assert "daemon.ready" in ready and "http_port=8080" in ready and not ready.startswith("{")
    assert "Started server process [1]" in uvicorn
