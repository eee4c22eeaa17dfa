"""Log set-up: JSON lines when not on a terminal, a readable console renderer on one."""

from __future__ import annotations

import logging
import sys

import structlog


def _stderr_logger(*_args: object) -> structlog.PrintLogger:
    # Whatever sys.stderr is when a line is logged, not when logging was configured: a command
    # run in-process (by a test, or by the console) must not keep writing to a closed stream.
    return structlog.PrintLogger(file=sys.stderr)


def configure_logging(level: str = "info", *, json: bool | None = None) -> None:
    """Configure structlog for the process (called once by the CLI, never at import)."""
    as_json = not sys.stderr.isatty() if json is None else json
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if as_json
        else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
