"""TLS and credentials on the client side: what a URL asks of a NATS or PostgreSQL connection.

PostgreSQL URLs carry libpq's parameters (`?sslmode=verify-full&sslrootcert=/ca.pem`),
which asyncpg reads itself. NATS URLs have no such convention: a `tls://` URL may name the
CA that signed the server's certificate in a `tls_ca` parameter (`tls://u:p@host:4222?
tls_ca=/ca.pem`, set from `Settings.nats_tls_ca`); it is taken off the URL here and made an
`ssl.SSLContext`, since nats-py knows only contexts. Without it the system's CAs are used.
Errors name the server and the CA file, never a password.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from runtime.errors import ServiceError

__all__ = [
    "NATS_CA_PARAM",
    "client_context",
    "is_refusal",
    "nats_servers_and_tls",
    "server_of",
    "tls_failure",
    "with_nats_ca",
]

NATS_CA_PARAM = "tls_ca"


def client_context(ca_file: str | Path | None) -> ssl.SSLContext:
    """A context that verifies the server's certificate and host name against `ca_file`
    (the system's CAs when None); a missing or unreadable file is a ServiceError."""
    try:
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ServiceError(f"TLS CA file {ca_file}: cannot load: {exc}") from exc


def server_of(url: str) -> str:
    """`host:port` of a URL: what an error may show of it."""
    parts = urlsplit(url.split(",")[0])
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def with_nats_ca(url: str, ca_file: Path | None) -> str:
    """`url` naming `ca_file` (`?tls_ca=`) when it is a `tls://` URL that names none yet."""
    if ca_file is None or not url.startswith("tls://") or f"{NATS_CA_PARAM}=" in url:
        return url
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query), (NATS_CA_PARAM, str(ca_file))]
    return urlunsplit(parts._replace(query=urlencode(query)))


def nats_servers_and_tls(url: str) -> tuple[list[str], ssl.SSLContext | None]:
    """The server URLs nats-py takes (comma-separated in `url`), without `tls_ca`, and the
    context for them: None unless a server is `tls://` or names a CA."""
    servers, ca_file, tls = [], None, False
    for server in (part.strip() for part in url.split(",") if part.strip()):
        if "://" not in server:  # `nats://a@h1:4222,b@h2:4222`: later ones inherit the scheme
            server = f"{urlsplit(url).scheme}://{server}"
        parts = urlsplit(server)
        query = parse_qsl(parts.query)
        ca_file = next((v for k, v in query if k == NATS_CA_PARAM), ca_file)
        rest = [(k, v) for k, v in query if k != NATS_CA_PARAM]
        servers.append(urlunsplit(parts._replace(query=urlencode(rest))))
        tls = tls or parts.scheme in ("tls", "wss")
    return servers, client_context(ca_file) if tls or ca_file else None


def _causes(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def tls_failure(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind `exc`, if that is what it is."""
    return next((e for e in _causes(exc) if isinstance(e, ssl.SSLCertVerificationError)), None)


def is_refusal(exc: BaseException) -> bool:
    """Whether `exc` is the server refusing the credentials (retrying cannot help)."""
    text = " ".join(str(e) for e in _causes(exc)).lower()  # not "Authentication Timeout"
    return "authorization violation" in text or "authorization failed" in text
