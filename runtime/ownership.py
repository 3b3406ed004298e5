"""One running system per home and per database: what `rayvisor up` holds for its life.

A second `up` on the same home or database would start a second local Ray with its own
`tm:0` over the same tasks (both shards rebuild every unfinished task from PostgreSQL),
and announce a URL whose port belongs to the first. So `up` claims, before it starts
anything:

- the home: an exclusive `flock` on `home/up.lock`, whose content describes the holder;
- the database: a session advisory lock (`pg_try_advisory_lock`) on a connection kept
  open for the process's life, plus the one row of `system_owner` describing the holder.
  The lock is the truth: the OS releases it with the process (PostgreSQL ends the session
  when the socket closes), so a row left by a killed owner blocks nobody and is
  overwritten by the next;
- the HTTP port: refused if something already listens on it.

A refusal (`AlreadyRunning`) names the running owner: host, pid, Ray address, dashboard,
HTTP URL and when it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import socket
import threading
from collections.abc import Coroutine
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

__all__ = ["AlreadyRunning", "Owner", "Ownership", "port_in_use"]

T = TypeVar("T")

LOCK_KEY = 0x7261797375700001
"""The advisory lock an owner holds (advisory locks are per database)."""
LOCK_FILE = "up.lock"


@dataclass
class Owner:
    """Who runs the system: what a refused `up` prints."""

    host: str
    pid: int
    home: str
    namespace: str
    http_url: str
    started_at: datetime
    ray_address: str | None = None
    dashboard_url: str | None = None

    @classmethod
    def me(cls, home: Path, namespace: str, http_url: str) -> Owner:
        return cls(socket.gethostname(), os.getpid(), str(home), namespace, http_url,
                   datetime.now(UTC))  # fmt: skip

    def describe(self) -> str:
        dashboard = self.dashboard_url or "none"
        started = self.started_at.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
        return (
            f"rayvisor up, pid {self.pid} on {self.host}, started {started}; "
            f"home {self.home}, namespace {self.namespace}; Ray "
            f"{self.ray_address or 'not started yet'}, dashboard {dashboard}; "
            f"HTTP API {self.http_url}"
        )

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "started_at": self.started_at.isoformat()})

    @classmethod
    def from_json(cls, text: str) -> Owner | None:
        try:
            data = json.loads(text)
            data["started_at"] = datetime.fromisoformat(data["started_at"])
            return cls(**data)
        except (ValueError, TypeError, KeyError):
            return None


class AlreadyRunning(RuntimeError):
    """Another system owns the home, the database or the port."""


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens on `host:port` (a port in TIME_WAIT is free: servers set
    SO_REUSEADDR, and so does this probe)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


class Ownership:
    """The claims of one `up`: `claim_home`, `claim_database`, `claim_port`, then
    `publish` as more becomes known; `release` (or the process's end) gives them up."""

    def __init__(self, home: Path, namespace: str, http_host: str, http_port: int) -> None:
        self.home = home
        self.http_host, self.http_port = http_host, http_port
        self.owner = Owner.me(home, namespace, f"http://{http_host}:{http_port}")
        self._file: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._conn: asyncpg.Connection | None = None

    # ---- home --------------------------------------------------------------------------

    def claim_home(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        path = self.home / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            held = Owner.from_json(path.read_text())
            who = held.describe() if held else "a process that has not described itself yet"
            raise AlreadyRunning(
                f"a rayvisor system already runs on home {self.home}: {who}. "
                "Stop it (Ctrl-C there, or `rayvisor down`) or use another home."
            ) from None
        self._file = fd
        self._write_file()

    def _write_file(self) -> None:
        if self._file is None:
            return
        data = (self.owner.to_json() + "\n").encode()
        os.ftruncate(self._file, 0)
        os.pwrite(self._file, data, 0)

    # ---- database ----------------------------------------------------------------------

    def claim_database(self, database_url: str) -> None:
        """Take the advisory lock on a connection of its own, kept by a thread's loop (so
        the session lives while the command sleeps or blocks), and write the row."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="rayvisor-ownership", daemon=True
        )
        self._thread.start()
        self._conn = self._run(asyncpg.connect(database_url))
        if not self._run(self._conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY)):
            row = self._run(self._conn.fetchrow("SELECT * FROM system_owner"))
            self._close_database()
            held = _owner_of(row)
            who = held.describe() if held else "a process that has not described itself yet"
            raise AlreadyRunning(
                f"a rayvisor system already runs on database {_without_password(database_url)}"
                f": {who}. Stop it first, or point this one at another database."
            )
        self._write_row()

    def _write_row(self) -> None:
        if self._conn is None:
            return
        o = self.owner
        values = (o.host, o.pid, o.home, o.namespace, o.http_url, o.ray_address,
                  o.dashboard_url, o.started_at)  # fmt: skip
        self._run(
            self._conn.execute(
                """INSERT INTO system_owner (singleton, host, pid, home, namespace, http_url,
                                             ray_address, dashboard_url, started_at)
                   VALUES (true, $1, $2, $3, $4, $5, $6, $7, $8)
                   ON CONFLICT (singleton) DO UPDATE SET
                       host = $1, pid = $2, home = $3, namespace = $4, http_url = $5,
                       ray_address = $6, dashboard_url = $7, started_at = $8,
                       updated_at = now()""",
                *values,
            )
        )

    def _run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    # ---- port --------------------------------------------------------------------------

    def claim_port(self) -> None:
        if port_in_use(self.http_host, self.http_port):
            raise AlreadyRunning(
                f"port {self.http_port} on {self.http_host} is taken by another process: "
                "stop it, or set http_port (RAYVISOR_HTTP_PORT) to a free port"
            )

    # ---- life --------------------------------------------------------------------------

    def publish(self, *, ray_address: str | None = None, dashboard_url: str | None = None) -> None:
        """Describe more of this owner (once Ray runs) in the lock file and the row."""
        if ray_address:
            self.owner.ray_address = ray_address
        if dashboard_url:
            self.owner.dashboard_url = dashboard_url
        self._write_file()
        with contextlib.suppress(Exception):  # the description is best effort, the lock not
            self._write_row()

    def release(self) -> None:
        """Give up every claim: the row (if still ours), the lock, the file's lock."""
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._run(
                    self._conn.execute(
                        "DELETE FROM system_owner WHERE host = $1 AND pid = $2",
                        self.owner.host,
                        self.owner.pid,
                    ),
                    timeout_s=5,
                )
        self._close_database()
        if self._file is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._file, 0)
                fcntl.flock(self._file, fcntl.LOCK_UN)
            os.close(self._file)
            self._file = None

    def _close_database(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._run(self._conn.close(), timeout_s=5)  # ends the session: and the lock
            self._conn = None
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._loop.close()
            self._loop = self._thread = None


def _owner_of(row: asyncpg.Record | None) -> Owner | None:
    if row is None:
        return None
    return Owner(
        host=row["host"], pid=row["pid"], home=row["home"], namespace=row["namespace"],
        http_url=row["http_url"], started_at=row["started_at"],
        ray_address=row["ray_address"], dashboard_url=row["dashboard_url"],
    )  # fmt: skip


def _without_password(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
