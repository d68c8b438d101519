"""configure_logging: JSON lines for structlog and stdlib loggers alike."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime

import pytest
import structlog

from cryptodesk.observability.logging import configure_logging


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)
    structlog.reset_defaults()


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_structlog_events_are_json_lines_with_the_standard_fields():
    out = io.StringIO()
    configure_logging("json", "INFO", stream=out)
    structlog.get_logger("cryptodesk.test").info("candle finalized", symbol="BTC/USDT", n=3)
    (record,) = lines(out)
    assert record["event"] == "candle finalized"
    assert record["level"] == "info"
    assert record["logger"] == "cryptodesk.test"
    assert (record["symbol"], record["n"]) == ("BTC/USDT", 3)
    stamp = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
    assert stamp.utcoffset() is not None
    assert stamp.utcoffset().total_seconds() == 0


def test_stdlib_loggers_share_the_format():
    out = io.StringIO()
    uvicorn = logging.getLogger("uvicorn.error")
    uvicorn.addHandler(logging.StreamHandler(io.StringIO()))  # as if uvicorn set itself up
    configure_logging("json", "INFO", stream=out)
    uvicorn.warning("port %d is busy", 8000)
    logging.getLogger("alembic.runtime.migration").info("Running upgrade")
    first, second = lines(out)
    assert first["event"] == "port 8000 is busy"
    assert (first["level"], first["logger"]) == ("warning", "uvicorn.error")
    assert "timestamp" in first
    assert (second["logger"], second["event"]) == ("alembic.runtime.migration", "Running upgrade")
    assert uvicorn.handlers == []


def test_level_filters_and_exceptions_are_rendered():
    out = io.StringIO()
    configure_logging("json", "warning", stream=out)
    log = structlog.get_logger("cryptodesk.test")
    log.info("dropped")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    (record,) = lines(out)
    assert record["event"] == "failed"
    assert record["level"] == "error"
    assert "ValueError: boom" in record["exception"]


def test_auto_picks_console_on_a_tty_and_json_otherwise():
    tty, pipe = Tty(), io.StringIO()
    configure_logging("auto", "INFO", stream=tty)
    structlog.get_logger("x").info("hello console")
    configure_logging("auto", "INFO", stream=pipe)
    structlog.get_logger("x").info("hello json")
    assert "hello console" in tty.getvalue()
    with pytest.raises(json.JSONDecodeError):
        json.loads(tty.getvalue().splitlines()[0])
    assert lines(pipe)[0]["event"] == "hello json"


def test_reconfiguring_replaces_the_handler():
    first, second = io.StringIO(), io.StringIO()
    configure_logging("json", "INFO", stream=first)
    configure_logging("json", "INFO", stream=second)
    structlog.get_logger("x").info("once")
    assert first.getvalue() == ""
    assert len(lines(second)) == 1


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="level"):
        configure_logging("json", "LOUD")
    with pytest.raises(ValueError, match="format"):
        configure_logging("xml", "INFO")  # type: ignore[arg-type]


def test_the_default_handler_follows_sys_stderr(monkeypatch):
    configure_logging("json", "INFO")
    first = io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    logging.getLogger("alembic").info("to the first")
    first.close()  # a test runner's capture ends; logging must not write to it
    second = io.StringIO()
    monkeypatch.setattr("sys.stderr", second)
    logging.getLogger("alembic").info("to the second")
    assert "to the second" in second.getvalue()
    assert "Logging error" not in second.getvalue()


def test_console_tracebacks_never_show_local_variables():
    out = Tty()
    configure_logging("console", "INFO", stream=out)

    def seal(secret: str) -> None:
        raise ValueError("cannot encrypt")

    secret = "-".join(["sk", "live", "do", "not", "print"])  # not in the source shown
    try:
        seal(secret)
    except ValueError:
        structlog.get_logger("x").exception("sealing failed")
    text = out.getvalue()
    assert "cannot encrypt" in text
    assert secret not in text
