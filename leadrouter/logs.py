"""structlog for the daemon: human-readable on a terminal, JSON lines for journald/log shippers."""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(level: str = "info", fmt: str = "console") -> None:
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries (panoramisk, uvicorn, alembic) log through the standard module.
    logging.basicConfig(level=max(logging.getLevelNamesMapping()[level.upper()], logging.INFO), stream=sys.stderr)
    logging.getLogger("panoramisk").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
