"""Logging for the daemon: one line per event, JSON for journald and log shippers, console for people.

Our lines (structlog) and the libraries' lines (uvicorn, aiomqtt, panoramisk, alembic log
through the standard ``logging`` module) go through one handler and one renderer, so every
line has the same keys: ``timestamp``, ``level``, ``logger``, ``event``, the context bound
with ``structlog.contextvars`` (``lead_id``, ``call_id``, ``channel_id``) and, for an error,
``exception`` with the traceback inside the same JSON line.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog

LogFormat = Literal["console", "json"]

# Added to our lines and to the libraries' alike.
_SHARED: list[structlog.typing.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]

_QUIET_LIBRARIES = ("panoramisk", "alembic")  # their info lines say nothing ops need


def configure_logging(
    level: str = "info", fmt: LogFormat = "console", *, stream: TextIO | None = None, cache: bool = True
) -> None:
    """Route structlog and the standard ``logging`` module to ``stream`` (stderr) in one format.

    ``cache`` keeps each logger's configuration after its first use (faster); tests that
    reconfigure logging turn it off.
    """
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_SHARED,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=cache,
    )
    renderer: list[structlog.typing.Processor] = (
        # The traceback goes into the line as a string, so an error stays one JSON line.
        [structlog.processors.format_exc_info, structlog.processors.JSONRenderer(ensure_ascii=False)]
        if fmt == "json"
        else [structlog.dev.ConsoleRenderer(colors=(stream or sys.stderr).isatty())]
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=_SHARED,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.getLevelNamesMapping()[level.upper()])
    for name in _QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(root.level, logging.WARNING))
