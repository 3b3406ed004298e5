"""Credentials and TLS files of the embedded servers (`runtime.services`).

Each server gets a generated password, kept under the rayvisor home in a file only its
owner may read (mode 0600) and put in the URL `ensure_services` returns; nothing local
connects without it. A home made by an earlier rayvisor (PostgreSQL with `trust`, NATS
with no authentication) is upgraded when it starts: `trust_to_scram` rewrites pg_hba.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ServerTls",
    "ensure_secret",
    "nats_config",
    "read_secret",
    "trust_to_scram",
    "write_private",
]

_TRUST = re.compile(r"^(\s*(?:local|host\w*)\s.*\s)trust(\s*(?:#.*)?)$", re.M)


@dataclass(frozen=True)
class ServerTls:
    """A server's certificate and key (PEM), and the CA that signed it: clients are given
    a URL that verifies the server against `ca_file` and its host name (127.0.0.1)."""

    cert_file: Path
    key_file: Path
    ca_file: Path

    def copy_to(self, directory: Path, owner: tuple[int, int] | None = None) -> tuple[Path, Path]:
        """Private copies of the certificate and key in `directory` (PostgreSQL refuses a key
        another user may read, and runs as its own user when rayvisor runs as root)."""
        directory.mkdir(mode=0o700, exist_ok=True)
        copies = (directory / "server.crt", directory / "server.key")
        for source, target in zip((self.cert_file, self.key_file), copies, strict=True):
            write_private(target, Path(source).read_text())
        for path in (directory, *copies):
            if owner is not None:
                os.chown(path, *owner)
        return copies


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, readable by its owner only (0600) from the first byte on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
        out.write(text)


def read_secret(path: Path) -> str | None:
    """The secret kept in `path`; None when there is none (a home from before secrets)."""
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def ensure_secret(path: Path, owner: tuple[int, int] | None = None) -> str:
    """The secret in `path`, generated (URL-safe, 256 bits) and written mode 0600 if there
    is none yet; a looser mode found on it is tightened."""
    existing = read_secret(path)
    if existing is None:
        existing = secrets.token_urlsafe(32)
        write_private(path, existing + "\n")
    else:
        path.chmod(0o600)
    if owner is not None:
        os.chown(path, *owner)
    return existing


def trust_to_scram(hba: str) -> str | None:
    """`pg_hba.conf` text with every `trust` method made `scram-sha-256`; None when no line
    trusts (the file is left as it is)."""
    upgraded, count = _TRUST.subn(r"\1scram-sha-256\2", hba)
    return upgraded if count else None


def nats_config(user: str, password: str, tls: tuple[Path, Path] | None) -> str:
    """nats-server's config file: the one user clients log in as, and TLS (cert, key) if
    given. Listen address, ports and JetStream stay on the command line."""
    lines = [
        "# written by rayvisor at each start (runtime/services.py); mode 0600",
        "authorization {",
        f"  user: {_quoted(user)}",
        f"  password: {_quoted(password)}",
        "}",
    ]
    if tls is not None:
        cert, key = tls
        lines += ["tls {", f"  cert_file: {_quoted(str(cert))}", f"  key_file: {_quoted(str(key))}"]
        lines += ["  timeout: 5", "}"]
    return "\n".join(lines) + "\n"


def _quoted(value: str) -> str:
    if '"' in value or "\\" in value or "\n" in value:
        raise ValueError("a nats-server config value may not hold a quote, \\ or a newline")
    return f'"{value}"'
