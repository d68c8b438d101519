"""10,000 WebSocket clients held by one API process: ticker fan-out delay and peak RSS.

``10k_clients_fanout`` starts a real ``cryptodesk serve`` (embedded defaults, every
role, the simulated exchange at speed 1 with one symbol, a free port on 127.0.0.1) and
CLIENT_PROCESSES client processes (``python -m benchmarks.bench_ws client``), each
holding CLIENTS / CLIENT_PROCESSES connections through the ``websockets`` library on
loopback. One process cannot hold them all (``ulimit -n`` is a hard limit of 20,000
here), and every process raises its RLIMIT_NOFILE to the hard limit.

The clients first connect, all of them (a server fanning updates out to half of them
would make the other half wait for their handshakes); then each subscribes to
``ticker:sim:BTC/USDT``; once every one has its snapshot they record each ticker delta
for HOLD_SECONDS: when it arrived (the wall clock, which the server on the same machine
shares) and its ``time``, the event time of the trade that moved the ticker (at speed 1
the simulator stamps trades with the wall clock). The delay is arrival - time, over
every client and update:

- value: its p99 in ms; ``p50_ms`` its median. It is the whole path: the simulator's
  100 ms steps, ingest, the bus, compute writing the ticker to the cache, the feed's
  read (50 ms settle), the fan-out, and the client process getting to the frame;
- ``first_p50_ms``: the same for the first client to get each update (the path
  without the fan-out); ``fanout_p50_ms``/``fanout_p99_ms``: arrival - the first
  arrival of that update (the fan-out alone); ``reach_all_p50_ms``: per update, last
  arrival - first;
- ``peak_rss_mb``: the server's VmHWM (/proc/PID/status) at the end; its RSS before
  any client came (``idle_rss_mb``), with every client connected (``connected_rss_mb``)
  and subscribed (``held_rss_mb``); ``rss_per_client_kb`` = (held - idle) / clients;
- ``clients_connected``, ``updates`` (distinct updates measured), ``deltas``, and
  ``coalesced`` (deltas that stood for several updates of a client that was behind);
- ``server_cpu_pct`` and ``clients_cpu_pct`` (all client processes together) while
  recording, and ``loadavg_before``: the server and the clients share the machine's
  cores (with whatever else runs), so the delays include waiting for a core.

``10k_clients_rss`` is the peak RSS in MB (target <= 512) of the
same runs: it takes the results the fanout case measured earlier in this process (the
runner runs each case several times in a row) and measures a run of its own when there
is none left.

    python -m benchmarks.bench_ws
    python -m benchmarks.bench_ws client URL COUNT CHANNEL  # one client process
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from benchmarks.bench_api import _env, _free_port, _process, _wait_for

CLIENTS = 10_000
CLIENT_PROCESSES = 4
CHANNEL = "ticker:sim:BTC/USDT"
TICKER_PATH = "/api/v1/tickers?exchange=sim&symbol=BTC/USDT"
HOLD_SECONDS = 10.0
CONNECT_CONCURRENCY = 50  # handshakes in flight per client process (the backlog is 2048)
CONNECT_TIMEOUT = 240.0  # every client connected and holding its snapshot
RESULT_TIMEOUT = 60.0

Result = dict[str, Any]
_fanout_runs: list[Result] = []  # measured by the fanout case, not yet reported as RSS


def raise_nofile() -> int:
    """The soft RLIMIT_NOFILE raised to the hard one; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        soft = hard if hard != resource.RLIM_INFINITY else max(soft, 65_536)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def proc_status_mb(pid: int, field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of ``pid`` in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def fanout() -> Result:
    result = measure()
    _fanout_runs.append(result)
    return result


def rss() -> Result:
    run = _fanout_runs.pop(0) if _fanout_runs else measure()
    return {
        "value": run["peak_rss_mb"], "unit": "MB", "clients_connected": run["clients_connected"],
        "idle_rss_mb": run["idle_rss_mb"], "rss_per_client_kb": run["rss_per_client_kb"],
    }  # fmt: skip


def measure() -> Result:
    """One run: the server, the client processes, the figures (see the module docstring)."""
    limit = raise_nofile()  # the server and the clients inherit it
    if limit < CLIENTS + 1000:
        raise RuntimeError(f"RLIMIT_NOFILE is {limit}: the server's {CLIENTS} clients need more")
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-ws-") as name:
        tmp = Path(name)
        port = _free_port()
        env = _env(
            CRYPTODESK_DATA_DIR=str(tmp / "data"), CRYPTODESK_HOST="127.0.0.1",
            CRYPTODESK_PORT=str(port), CRYPTODESK_LOG_FORMAT="json",
            # 20,000 connection open/closed lines would be part of the measurement.
            CRYPTODESK_LOG_LEVEL="WARNING", CRYPTODESK_SYMBOLS="BTC/USDT",
            CRYPTODESK_SIM_SPEED="1",
        )  # fmt: skip
        serve = [sys.executable, "-m", "cryptodesk", "serve"]
        log = tmp / "serve.log"
        with _process(serve, env, log) as server:
            _wait_for(f"http://127.0.0.1:{port}{TICKER_PATH}", server, log)
            idle = proc_status_mb(server.pid, "VmRSS")
            url = f"ws://127.0.0.1:{port}/api/v1/ws"
            records, seen = asyncio.run(_drive(url, server.pid))
            seen.update(idle_rss_mb=idle, peak_rss_mb=proc_status_mb(server.pid, "VmHWM"))
            seen["loadavg_before"] = load
            if server.poll() is not None:
                raise RuntimeError(f"the server exited:\n{log.read_text()[-3000:]}")
    return _figures(records, seen)


async def _drive(url: str, server_pid: int) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Start the client processes; once all are connected let them subscribe, once all
    have their snapshot let them record; collect. Also the server's RSS and CPU time."""
    each = CLIENTS // CLIENT_PROCESSES
    args = ("-m", "benchmarks.bench_ws", "client", url, str(each), CHANNEL)
    pipe = asyncio.subprocess.PIPE
    procs = [
        await asyncio.create_subprocess_exec(sys.executable, *args, stdin=pipe, stdout=pipe)
        for _ in range(CLIENT_PROCESSES)
    ]
    server: dict[str, float] = {}
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            await _all_say(procs, "connected")
            server["connected_rss_mb"] = proc_status_mb(server_pid, "VmRSS")
            _tell(procs, "subscribe")
            await _all_say(procs, "ready")
        server["held_rss_mb"] = proc_status_mb(server_pid, "VmRSS")
        cpu = _proc_cpu(server_pid)
        _tell(procs, "go")
        await asyncio.sleep(HOLD_SECONDS)
        _tell(procs, "stop")
        server["server_cpu_pct"] = 100 * (_proc_cpu(server_pid) - cpu) / HOLD_SECONDS
        async with asyncio.timeout(RESULT_TIMEOUT):
            outputs = [await p.stdout.read() for p in procs if p.stdout is not None]
            for p in procs:
                await p.wait()
        return [json.loads(out) for out in outputs], server
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()


async def _all_say(procs: list[asyncio.subprocess.Process], word: str) -> None:
    for p in procs:
        assert p.stdout is not None
        line = (await p.stdout.readline()).decode().strip()
        if not line.startswith(f"{word} "):
            raise RuntimeError(f"a client process said {line!r}, not {word!r}")


def _tell(procs: list[asyncio.subprocess.Process], word: str) -> None:
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(f"{word}\n".encode())


def _proc_cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _figures(records: list[dict[str, Any]], server: dict[str, float]) -> Result:
    times: dict[int, float] = {}
    arrivals: list[tuple[int, float]] = []
    closed: Counter[str] = Counter()
    for r in records:
        times.update({int(seq): t for seq, t in r["times"].items()})
        arrivals.extend((seq, at) for seq, at in r["arrivals"])
        closed.update(r["closed"])
    connected = sum(r["connected"] for r in records)
    if not arrivals:
        raise RuntimeError(f"no ticker update reached any client (closed: {dict(closed)})")
    seqs = np.array([seq for seq, _ in arrivals], dtype=np.int64)
    at = np.array([a for _, a in arrivals])
    updates, which = np.unique(seqs, return_inverse=True)
    made = np.array([times[s] for s in updates.tolist()])  # each update's ticker time
    first = np.full(len(updates), np.inf)
    last = np.full(len(updates), -np.inf)
    np.minimum.at(first, which, at)
    np.maximum.at(last, which, at)
    delay = at - made[which]
    fan = at - first[which]
    first_delay = first - made
    reach = last - first
    out: Result = {
        "value": round(float(np.percentile(delay, 99)), 1),
        "unit": "ms",
        "p50_ms": round(float(np.percentile(delay, 50)), 1),
        "first_p50_ms": round(float(np.percentile(first_delay, 50)), 1),
        "fanout_p50_ms": round(float(np.percentile(fan, 50)), 1),
        "fanout_p99_ms": round(float(np.percentile(fan, 99)), 1),
        "reach_all_p50_ms": round(float(np.percentile(reach, 50)), 1),
        **{k: round(v, 1) for k, v in sorted(server.items())},
        "rss_per_client_kb": round(
            (server["held_rss_mb"] - server["idle_rss_mb"]) * 1024 / max(connected, 1), 1
        ),
        "clients_cpu_pct": round(100 * sum(r["cpu_seconds"] for r in records) / HOLD_SECONDS),
        "clients_connected": connected,
        "updates": len(updates),
        "deltas": len(arrivals),
        "coalesced": sum(r["coalesced"] for r in records),
    }
    if closed:
        out["closed"] = ",".join(f"{code}x{n}" for code, n in sorted(closed.items()))
    return out


def cases() -> dict[str, Callable[[], Result]]:
    return {"10k_clients_fanout": fanout, "10k_clients_rss": rss}


# ---- one client process ----------------------------------------------------------------


class _Deltas:
    """What one client process saw while recording."""

    def __init__(self) -> None:
        self.recording = False
        self.connected = 0
        self.failed = 0
        self.snapshots = 0
        self.closed: Counter[str] = Counter()
        self.times: dict[int, float] = {}  # seq -> the ticker's time, epoch ms
        self.arrivals: list[tuple[int, float]] = []  # (seq, arrival epoch ms)
        self.coalesced = 0
        self.cpu_seconds = 0.0

    async def until(self, done: Callable[[], bool], what: str) -> None:
        """Wait for ``done``, saying how far it got every 10 s."""
        said = time.monotonic()
        while not done():
            await asyncio.sleep(0.05)
            if time.monotonic() - said >= 10:
                said = time.monotonic()
                print(f"client {os.getpid()} {what}: {self.connected} connected, "
                      f"{self.failed} failed, {self.snapshots} snapshots",
                      file=sys.stderr, flush=True)  # fmt: skip

    def result(self) -> dict[str, Any]:
        return {
            "connected": self.connected, "failed": self.failed, "closed": self.closed,
            "times": self.times, "arrivals": self.arrivals, "coalesced": self.coalesced,
            "cpu_seconds": self.cpu_seconds,
        }  # fmt: skip


class _Frame(msgspec.Struct):
    type: str
    seq: int = 0
    skipped: int = 0
    data: Any = None


async def _connect(url: str, gate: asyncio.Semaphore, seen: _Deltas) -> Any:
    from websockets.asyncio.client import connect

    try:
        async with gate:
            ws = await connect(url, compression=None, ping_interval=None, open_timeout=120)
    except Exception:  # refused, timed out, closed during the handshake
        seen.failed += 1
        return None
    seen.connected += 1
    return ws


async def _read(ws: Any, seen: _Deltas) -> None:
    from websockets.exceptions import ConnectionClosed

    decode = msgspec.json.Decoder(_Frame).decode
    snapshot = False
    try:
        async for text in ws:
            now = time.time() * 1000.0
            frame = decode(text)
            if frame.type == "delta":
                if seen.recording:
                    if frame.seq not in seen.times:
                        seen.times[frame.seq] = _epoch_ms(frame.data["time"])
                    seen.arrivals.append((frame.seq, now))
                    seen.coalesced += frame.skipped > 0
            elif frame.type == "ping":  # answered, or the server closes the client (4002)
                await ws.send('{"type":"pong"}')
            elif frame.type == "snapshot" and not snapshot:
                snapshot = True
                seen.snapshots += 1
    except ConnectionClosed as exc:
        seen.closed[str(exc.rcvd.code if exc.rcvd is not None else 1006)] += 1


def _epoch_ms(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp() * 1000.0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _client(url: str, count: int, channel: str) -> None:
    """Connect, then on each line of stdin: ``subscribe``, ``go`` (record), ``stop``."""
    seen = _Deltas()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    opened = [asyncio.create_task(_connect(url, gate, seen)) for _ in range(count)]
    await seen.until(lambda: seen.connected + seen.failed == count, "connecting")
    sockets = [ws for task in opened if (ws := task.result()) is not None]
    readers = [asyncio.create_task(_read(ws, seen)) for ws in sockets]
    print(f"connected {seen.connected} {seen.failed}", flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # subscribe
    subscribe = json.dumps({"type": "subscribe", "channels": [channel]})
    for ws in sockets:
        with contextlib.suppress(Exception):  # a closed one is counted by its reader
            await ws.send(subscribe)
    closed = seen.closed
    await seen.until(lambda: seen.snapshots + closed.total() == len(sockets), "subscribing")
    print(f"ready {seen.snapshots}", flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # go
    seen.recording, cpu = True, _cpu()
    await asyncio.to_thread(sys.stdin.readline)  # stop
    seen.recording, seen.cpu_seconds = False, _cpu() - cpu
    sys.stdout.write(json.dumps(seen.result()))
    sys.stdout.flush()
    del readers
    os._exit(0)  # closing thousands of sockets one by one is not part of the run


def _client_main(argv: list[str]) -> None:
    url, count, channel = argv[0], int(argv[1]), argv[2]
    raise_nofile()
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(_client(url, count, channel))


if __name__ == "__main__":
    if sys.argv[1:2] == ["client"]:
        _client_main(sys.argv[2:])
    else:
        for case, fn in cases().items():
            print(case, fn())
