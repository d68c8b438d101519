"""CRYPTODESK_EXCHANGES=replay:PATH: serve plays a real candle file as a live feed and the
API serves the file's candles back, exactly."""

from __future__ import annotations

import pytest

from cryptodesk.adapters.files.candle_files import read_candles
from cryptodesk.domain.interval import Interval
from tests.e2e.conftest import base_env, run_cli, wait_for
from tests.shared_data import SHARED_DATA

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
DATA = SHARED_DATA
HOURLY = DATA / "cryptodatadownload_coinbase_btcusd_1h.csv"


def test_replay_feed_serves_the_files_candles(server_factory, tmp_path):
    expected = read_candles(
        HOURLY, exchange="replay", symbol="BTC/USD", interval=Interval.parse("1h")
    )
    server = server_factory(
        tmp_path / "data",
        CRYPTODESK_EXCHANGES=f"replay:{HOURLY}",
        CRYPTODESK_SYMBOLS="BTC/USD",
        CRYPTODESK_INTERVALS="1h",
        CRYPTODESK_REPLAY_SPEED="max",
    )
    with server.client() as client:

        def page() -> list[dict[str, object]] | None:
            r = client.get(
                "/api/v1/candles",
                params={"exchange": "replay", "symbol": "BTC/USD", "interval": "1h",
                        "start": "2017-07-01T00:00:00Z", "limit": 200},
            )  # fmt: skip
            body = r.json().get("candles", []) if r.status_code == 200 else []
            return body if len(body) == 200 else None

        served = wait_for(page, timeout=60)
        ready = client.get("/readyz").json()
        assert "feed:replay" in {c["name"] for c in ready["components"]}
    first = expected.candles[:200]
    assert [c["open_time"] for c in served] == [_iso(c.open_time) for c in first]
    for got, want in zip(served, first, strict=True):
        assert [float(got[k]) for k in ("open", "high", "low", "close", "volume")] == [
            want.open, want.high, want.low, want.close, want.volume,
        ]  # fmt: skip
    assert server.stop() == 0


def test_replay_of_a_bad_file_exits_2_with_the_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "timestamp,open,high,low,close,volume\n2024-01-01T00:00:00Z,1,2,0.5,1.5,10\nx,1,2,3\n"
    )
    env = base_env(tmp_path / "data", CRYPTODESK_EXCHANGES=f"replay:{bad}",
                   CRYPTODESK_SYMBOLS="BTC/USD", CRYPTODESK_PORT="0")  # fmt: skip
    result = run_cli("serve", env=env)
    assert result.returncode == 2, result.stderr
    # Migration logs of the new data dir may come first; the error is one line.
    [line] = [x for x in result.stderr.splitlines() if x.startswith("cryptodesk: error:")]
    assert result.stderr.strip().endswith(line)
    assert "CRYPTODESK_EXCHANGES: replay:" in line
    assert f"{bad}:3" in line


def test_replay_without_a_file_is_a_settings_error(tmp_path):
    env = base_env(tmp_path / "data", CRYPTODESK_EXCHANGES="replay")
    result = run_cli("config", "show", env=env)
    assert result.returncode == 2
    assert "CRYPTODESK_EXCHANGES: replay needs a file" in result.stderr


def _iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
