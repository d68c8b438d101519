"""Drive ``cryptodesk`` as a user does: a real subprocess on a free port."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

# Consumer-group timings that let a restarted process rejoin in about a second
# (the production defaults wait for a dead member's 10 s session to expire).
FAST_KAFKA_GROUPS = {
    "CRYPTODESK_BUS_SESSION_TIMEOUT_MS": "1000",
    "CRYPTODESK_BUS_HEARTBEAT_INTERVAL_MS": "200",
    "CRYPTODESK_BUS_REBALANCE_TIMEOUT_MS": "1000",
}

T = TypeVar("T")

# These tests start processes; xdist keeps them on one worker.
pytestmark = pytest.mark.xdist_group("e2e")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTODESK_")}
    env.update(
        {
            "CRYPTODESK_DATA_DIR": str(data_dir),
            "CRYPTODESK_LOG_FORMAT": "json",
            "CRYPTODESK_HOST": "127.0.0.1",
        }
    )
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cryptodesk", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class Server:
    proc: subprocess.Popen[str]
    url: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def client(self) -> httpx.Client:
        # 30 s: on the embedded SQLite a write that meets the ingest loop's batches can
        # wait out busy_timeout (5 s) more than once on a loaded CI machine.
        return httpx.Client(base_url=self.url, timeout=30)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def logs(self) -> str:
        return self.log_path.read_text()

    def auth(self, role: str = "admin", tenant: str = "default") -> dict[str, str]:
        """Headers of a user of ``tenant`` with ``role``, made with the CLI on the
        server's database when missing, then logged in over HTTP."""
        email, password = f"{role}@{tenant}.e2e.test", "e2e-password-long-enough"
        made = run_cli("user", "create", "--tenant", tenant, "--email", email, "--role", role,
                       "--password", password, env=self.env)  # fmt: skip
        assert made.returncode == 0 or "exists already" in made.stderr, made.stderr
        with self.client() as client:
            return login(client, email, password)


def login(client: httpx.Client, email: str, password: str) -> dict[str, str]:
    """The Authorization header of a fresh access token of ``email``."""
    r = client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def start_process(log_path: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """``cryptodesk serve ARGS`` in the background, output to ``log_path``."""
    return subprocess.Popen(
        [sys.executable, "-m", "cryptodesk", "serve", *args],
        env=env,
        stdout=log_path.open("a"),
        stderr=subprocess.STDOUT,
        text=True,
    )


def start_server(data_dir: Path, log_path: Path, **settings: str) -> Server:
    port = free_port()
    env = base_env(data_dir, CRYPTODESK_PORT=str(port), **settings)
    proc = start_process(log_path, env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return Server(proc, url, log_path, env)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"serve did not become healthy:\n{log_path.read_text()}")


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[object]:
    started: list[Server] = []

    def factory(data_dir: Path | None = None, **settings: str) -> Server:
        server = start_server(data_dir or tmp_path / "data", tmp_path / "serve.log", **settings)
        started.append(server)
        return server

    yield factory
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


def wait_for(predicate, timeout: float = 60, interval: float = 0.2):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


class LoopThread:
    """An event loop in a thread of its own, for fake servers (aiohttp) that a
    synchronous test drives while ``serve`` runs as a real process."""

    fake: Any = None  # what the test hosts on the loop

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> LoopThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)
