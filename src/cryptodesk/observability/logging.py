"""Structured logs: one JSON object per line in production, colours on a terminal.

structlog and the standard library (uvicorn, alembic, SQLAlchemy) share one
handler and one renderer, so a log shipper sees a single format with the
same keys: ``timestamp`` (ISO 8601 UTC), ``level``, ``event``, ``logger``.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog
from structlog.typing import Processor

LogFormat = Literal["auto", "json", "console"]
# Libraries that install their own handlers; they are re-routed through ours.
_FOREIGN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "alembic", "sqlalchemy")


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler configure_logging owns, so a second call replaces it.

    Without a stream of its own it writes to whatever ``sys.stderr`` is when a
    record is emitted, so code that swaps stderr (a test runner capturing a CLI
    call) never leaves it writing to a closed file.
    """

    def __init__(self, stream: TextIO | None) -> None:
        super().__init__(stream if stream is not None else sys.stderr)
        self._follow_stderr = stream is None

    def emit(self, record: logging.LogRecord) -> None:
        if self._follow_stderr:
            self.stream = sys.stderr
        super().emit(record)


def configure_logging(
    format: LogFormat = "auto", level: str = "INFO", *, stream: TextIO | None = None
) -> None:
    """Route structlog and stdlib logging to ``stream`` (stderr by default).

    ``auto`` picks the console renderer when the stream is a terminal and JSON
    otherwise, so piping ``serve`` into a file or a collector needs no flag.
    Calling again reconfigures; handlers of earlier calls are removed.
    """
    out = stream if stream is not None else sys.stderr
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    if format not in ("auto", "json", "console"):
        raise ValueError(f"unknown log format {format!r}; use auto, json or console")
    console = format == "console" or (format == "auto" and _is_tty(out))

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor
    if console:
        # Tracebacks without local variables: a frame's locals can hold
        # credentials being encrypted or sent, and logs must never show them.
        renderer = structlog.dev.ConsoleRenderer(
            colors=_is_tty(out),
            exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False),
        )
        tail: list[Processor] = [renderer]
    else:
        renderer = structlog.processors.JSONRenderer()
        tail = [structlog.processors.format_exc_info, renderer]

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Loggers are module-level proxies; caching would pin them to the first config.
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
    )
    handler = _Handler(stream)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in _FOREIGN_LOGGERS:
        foreign = logging.getLogger(name)
        foreign.handlers.clear()
        foreign.propagate = True
    # SQLAlchemy echoes every statement at INFO; that is a debugging aid, not a log.
    logging.getLogger("sqlalchemy").setLevel(max(numeric, logging.WARNING))


def _is_tty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False
