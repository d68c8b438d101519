"""The API's cached ticker read against a bare FastAPI endpoint, with wrk on loopback.

``tickers_vs_bare_fastapi`` starts a real ``cryptodesk serve`` (embedded
defaults, the simulated exchange, a free port on 127.0.0.1, the event loop
``serve`` picks: uvloop when installed), waits until it
serves ``/api/v1/tickers?exchange=sim&symbol=BTC/USDT``, keeps the bytes of
one answer and loads that URL with ``wrk -t2 -c64 -d10s --latency``. It then
stops it, starts a bare FastAPI app under the same uvicorn options (uvloop,
httptools, one worker, no access log) returning those bytes from one route,
and loads it the same way. The value is the API's requests/s as a fraction
of the bare app's; both p99 latencies are in the notes. The API answers
this anonymous GET in its fast market-read layer (docs/http.md), with
everything the full stack adds: rate limit, ETag, security headers, metrics.

``hygiene_overhead`` loads the bare app with and without the HTTP hygiene
middlewares as configured by default (security headers, ETag, body limit;
CORS is off unless origins are configured), so their cost is measured apart
from everything else the API does.

The API's rate limiter runs, with its ``ip`` tier raised out of reach (wrk is
one client on one address). wrk and the servers share the machine's cores,
the same way for both sides.
Needs ``wrk`` on PATH (Debian package ``wrk``).

    python -m benchmarks.bench_api
    python -m benchmarks.bench_api bare --port 8001 --body FILE [--hygiene]  # the bare app
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
TICKER_PATH = "/api/v1/tickers?exchange=sim&symbol=BTC/USDT"
CONNECTIONS = 64
WRK_ARGS = ("-t2", f"-c{CONNECTIONS}", "-d10s", "--latency")
WARMUP_ARGS = ("-t2", f"-c{CONNECTIONS}", "-d2s")
# One answer of the API, for the hygiene case (which runs no ``serve``).
SAMPLE_BODY = (
    b'{"tickers":[{"exchange":"sim","symbol":"BTC/USDT","time":"2024-05-01T00:00:01.234Z",'
    b'"last":"67012.35","bid":"67012.3","ask":"67012.4","open_24h":"66500","high_24h":"67200",'
    b'"low_24h":"66100.5","volume_24h":"1234.5678","quote_volume_24h":"82345678.9",'
    b'"change_24h":"0.0077","stale":false,"age_seconds":0.012}]}'
)
UNLIMITED_IP = "ip=1000000000/s:1000000000"
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}

Result = dict[str, Any]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wrk(url: str, args: tuple[str, ...] = WRK_ARGS) -> dict[str, float]:
    """Requests/s and p99 (ms) of one wrk run; an error answer invalidates the run."""
    exe = shutil.which("wrk")
    if exe is None:
        raise RuntimeError("wrk is not installed (Debian package wrk)")
    out = subprocess.run([exe, *args, url], capture_output=True, text=True, timeout=120, check=True)
    return parse_wrk(out.stdout)


def parse_wrk(text: str) -> dict[str, float]:
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.MULTILINE)
    if rps is None:
        raise RuntimeError(f"no Requests/sec in wrk's output:\n{text}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if bad is not None:
        raise RuntimeError(f"{bad.group(1)} error answers under load:\n{text}")
    result = {"rps": float(rps.group(1))}
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    if p99 is not None:
        result["p99_ms"] = float(p99.group(1)) * _UNITS_MS[p99.group(2)]
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    result["socket_errors"] = float(sum(int(n) for n in errors.groups())) if errors else 0.0
    return result


def _wait_for(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> bytes:
    """The body of the first 200 from ``url`` that lists a ticker."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            r = httpx.get(url, timeout=1)
            if r.status_code == 200 and r.json()["tickers"]:
                return r.content
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} gave no 200 within {timeout} s:\n{log.read_text()}")


@contextmanager
def _process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTODESK_")}
    env.update(extra)
    return env


def _load(url: str) -> dict[str, float]:
    wrk(url, WARMUP_ARGS)
    return wrk(url)


def _bare(tmp: Path, body: bytes, *, hygiene: bool) -> dict[str, float]:
    body_file = tmp / "body.json"
    body_file.write_bytes(body)
    port = _free_port()
    args = [sys.executable, "-m", "benchmarks.bench_api", "bare", "--port", str(port)]
    args += ["--body", str(body_file), *(["--hygiene"] if hygiene else [])]
    url = f"http://127.0.0.1:{port}{TICKER_PATH}"
    with _process(args, _env(), tmp / "bare.log") as proc:
        if _wait_for(url, proc, tmp / "bare.log") != body:
            raise AssertionError("the bare app does not return the bytes it was given")
        return _load(url)


def tickers_vs_bare_fastapi() -> Result:
    with tempfile.TemporaryDirectory(prefix="bench-api-") as name:
        tmp = Path(name)
        port = _free_port()
        env = _env(
            CRYPTODESK_DATA_DIR=str(tmp / "data"),
            CRYPTODESK_HOST="127.0.0.1",
            CRYPTODESK_PORT=str(port),
            CRYPTODESK_LOG_FORMAT="json",
            # One client on loopback is the whole load: its address's bucket
            # must not turn the run into a measure of 429s.
            CRYPTODESK_RATE_LIMIT_TIERS=UNLIMITED_IP,
        )
        url = f"http://127.0.0.1:{port}{TICKER_PATH}"
        serve = [sys.executable, "-m", "cryptodesk", "serve"]
        with _process(serve, env, tmp / "serve.log") as proc:
            body = _wait_for(url, proc, tmp / "serve.log")
            api = _load(url)
        bare = _bare(tmp, body, hygiene=False)
    return _ratio(api, bare, body, ("api", "bare"))


def hygiene_overhead() -> Result:
    with tempfile.TemporaryDirectory(prefix="bench-api-") as name:
        tmp = Path(name)
        with_hygiene = _bare(tmp, SAMPLE_BODY, hygiene=True)
        bare = _bare(tmp, SAMPLE_BODY, hygiene=False)
    return _ratio(with_hygiene, bare, SAMPLE_BODY, ("hygiene", "bare"))


def _ratio(
    measured: dict[str, float], bare: dict[str, float], body: bytes, names: tuple[str, str]
) -> Result:
    out: Result = {"value": measured["rps"] / bare["rps"], "unit": "x of bare FastAPI"}
    for name, run in zip(names, (measured, bare), strict=True):
        out[f"{name}_rps"] = round(run["rps"], 1)
        out[f"{name}_p99_ms"] = round(run.get("p99_ms", float("nan")), 2)
        if run["socket_errors"]:
            out[f"{name}_socket_errors"] = run["socket_errors"]
    out["body_bytes"] = len(body)
    out["connections"] = CONNECTIONS
    return out


def cases() -> dict[str, Callable[[], Result]]:
    return {
        "tickers_vs_bare_fastapi": tickers_vs_bare_fastapi,
        "hygiene_overhead": hygiene_overhead,
    }


# ---- the bare app, run in a process of its own -------------------------------------------


def bare_app(body: bytes, *, hygiene: bool) -> Any:
    """One route returning ``body``; with ``hygiene``, behind the API's middlewares."""
    from fastapi import FastAPI, Response

    from cryptodesk.api.http_hygiene import (
        BodyLimitMiddleware,
        ETagMiddleware,
        SecurityHeadersMiddleware,
    )

    app = FastAPI()

    @app.get("/api/v1/tickers")
    async def tickers() -> Response:
        return Response(body, media_type="application/json")

    if hygiene:  # the order create_app uses, outermost last
        app.add_middleware(BodyLimitMiddleware, max_bytes=1_048_576)
        app.add_middleware(ETagMiddleware)
        app.add_middleware(SecurityHeadersMiddleware)
    return app


def _serve_bare(argv: list[str]) -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body", type=Path, required=True)
    parser.add_argument("--hygiene", action="store_true")
    args = parser.parse_args(argv)
    app = bare_app(args.body.read_bytes(), hygiene=args.hygiene)
    uvicorn.run(
        app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools",
        workers=1, log_config=None, access_log=False, lifespan="off",
    )  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1:2] == ["bare"]:
        _serve_bare(sys.argv[2:])
    else:
        for case, fn in cases().items():
            print(case, fn())
