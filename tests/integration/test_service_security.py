"""The embedded servers demand their generated passwords (kept mode 0600), a home an earlier
rayvisor made (PostgreSQL `trust`, NATS open) is upgraded in place, and TLS is used, and
the server's certificate verified, when the URLs ask for it."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import stat
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import nats
import psutil
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from helpers import free_port, with_database

from runtime.bus import Bus
from runtime.config import load_settings
from runtime.errors import ServiceError
from runtime.services import EmbeddedNats, EmbeddedPostgres, ServerTls
from runtime.store.pool import create_pool

pytestmark = pytest.mark.integration

EMBEDDED = not (os.environ.get("RAYVISOR_DATABASE_URL") or os.environ.get("RAYVISOR_NATS_URL"))


# --- a test CA -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    server: ServerTls
    wrong_ca: Path
    """A CA that signed nothing the servers present."""


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(directory: Path, name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def make_pki(directory: Path) -> Pki:
    """A CA, a certificate it signed for 127.0.0.1 and localhost, and an unrelated CA."""
    ca_key, ca_cert = _ca(directory, "test-ca")
    _ca(directory, "wrong-ca")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ServerTls(
        directory / "server.crt", directory / "server.key", directory / "test-ca.pem"
    )
    return Pki(server, directory / "wrong-ca.pem")


def system_postgres_bin() -> Path:
    """PostgreSQL built with SSL, from the distribution: the wheel's is built without."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    assert found, "TLS to PostgreSQL is tested on Debian's postgresql (apt-get install postgresql)"
    return found[-1].parent


# --- helpers -------------------------------------------------------------------------------


def without_password(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.hostname}:{parts.port}"))


def with_query(url: str, query: str) -> str:
    return urlunsplit(urlsplit(url)._replace(query=query))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def listening_addresses(pid: int) -> set[str]:
    conns = psutil.Process(pid).net_connections(kind="inet")
    return {c.laddr.ip for c in conns if c.status == psutil.CONN_LISTEN}


async def assert_refused_without_password(database_url: str, nats_url: str) -> None:
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(without_password(database_url), timeout=10)
    with pytest.raises(ServiceError, match="refused the credentials"):
        await asyncio.wait_for(Bus.connect(without_password(nats_url), timeout_s=2), 20)


# --- the session's servers: a fresh home ---------------------------------------------------


@pytest.mark.skipif(not EMBEDDED, reason="the session uses external servers")
async def test_fresh_home_demands_private_passwords(services) -> None:
    postgres, nats_server = services.postgres, services.nats
    for path in (postgres.password_file, nats_server.password_file, nats_server.config_file):
        assert mode(path) == 0o600, path
    assert postgres.password_file.read_text().strip() in services.database_url
    assert nats_server.password_file.read_text().strip() in services.nats_url

    await assert_refused_without_password(services.database_url, services.nats_url)
    conn = await asyncpg.connect(services.database_url)  # the URL's password is the key
    assert await conn.fetchval("SELECT current_user") == "postgres"
    await conn.close()
    # nothing listens beyond loopback: not the database, not NATS, not its monitoring
    for server in (postgres, nats_server):
        pid = server.status().pid
        assert pid is not None and listening_addresses(pid) == {"127.0.0.1"}, server.name


# --- a home from before passwords, upgraded, then restarted with TLS ----------------------


@dataclass
class Upgraded:
    database_url: str
    nats_url: str
    """Restarted with TLS after the upgrade."""
    postgres: EmbeddedPostgres
    nats: EmbeddedNats


async def start_earlier_home(home: Path) -> None:
    """What rayvisor before passwords left running: PostgreSQL initialised with `trust`,
    nats-server with no config; each holding data."""
    postgres = EmbeddedPostgres(home)
    postgres._prepare()
    postgres.password_file.unlink()
    postgres._pg(
        "initdb", "-D", str(postgres.data_dir), "-U", "postgres", "--auth=trust",
        "--encoding=UTF8", "--no-instructions",
    )  # fmt: skip
    port = free_port()
    (postgres.root / "port").write_text(str(port))
    postgres._pg(
        "pg_ctl", "-D", str(postgres.data_dir), "-l", str(postgres.log_file),
        "-o", f"-h 127.0.0.1 -p {port} -c unix_socket_directories=''", "-w", "-t", "60", "start",
    )  # fmt: skip
    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres")
    await conn.execute("CREATE TABLE kept (note text); INSERT INTO kept VALUES ('from before')")
    await conn.close()

    server = EmbeddedNats(home)
    server.store_dir.mkdir(parents=True)
    port = free_port()
    server.port_file.write_text(str(port))
    proc = subprocess.Popen(
        [str(server.binary()), "-a", "127.0.0.1", "-p", str(port), "-js",
         "-sd", str(server.store_dir), "-P", str(server.pid_file)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    server.pid_file.write_text(str(proc.pid))
    nc = await nats.connect(f"nats://127.0.0.1:{port}", allow_reconnect=False)
    await nc.jetstream().add_stream(name="KEPT", subjects=["kept.>"])
    await nc.jetstream().publish("kept.one", b"from before")
    await nc.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
async def upgraded(tmp_path_factory: pytest.TempPathFactory, pki: Pki):
    home = tmp_path_factory.mktemp("earlier-home")
    postgres, server = EmbeddedPostgres(home), EmbeddedNats(home, pki.server)
    try:
        await start_earlier_home(home)
        database_url = await asyncio.to_thread(postgres.start)  # upgrades the running server
        await asyncio.to_thread(EmbeddedNats(home).start)  # restarts it with a password
        nats_url = await asyncio.to_thread(server.start)  # and again, with TLS
        yield Upgraded(database_url, nats_url, postgres, server)
    finally:
        server.stop()
        postgres.stop()


@pytest.fixture(scope="module")
def tls_database_url(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[str]:
    """A second PostgreSQL, serving TLS with the test CA's certificate."""
    home = tmp_path_factory.mktemp("tls-home")
    postgres = EmbeddedPostgres(home, pki.server, bin_dir=system_postgres_bin())
    try:
        yield postgres.start()
    finally:
        postgres.stop()


async def test_earlier_home_keeps_its_data_and_now_demands_passwords(upgraded: Upgraded) -> None:
    hba = (upgraded.postgres.data_dir / "pg_hba.conf").read_text()
    rules = [line for line in hba.splitlines() if line.strip() and not line.startswith("#")]
    assert rules and all(line.split()[-1] == "scram-sha-256" for line in rules), rules
    for path in (upgraded.postgres.password_file, upgraded.nats.password_file):
        assert mode(path) == 0o600, path
    password = upgraded.postgres.password_file.read_text().strip()
    assert f"postgres:{password}@" in upgraded.database_url

    await assert_refused_without_password(upgraded.database_url, upgraded.nats_url)
    conn = await asyncpg.connect(with_database(upgraded.database_url, "postgres"))
    assert await conn.fetchval("SELECT note FROM kept") == "from before"
    await conn.close()
    bus = await Bus.connect(upgraded.nats_url)
    try:
        assert (await bus.js.get_msg("KEPT", 1)).data == b"from before"
    finally:
        await bus.close()


async def test_tls_when_the_urls_ask_for_it(
    upgraded: Upgraded, tls_database_url: str, pki: Pki
) -> None:
    assert "sslmode=verify-full" in tls_database_url
    assert upgraded.nats_url.startswith("tls://")
    pool = await create_pool(tls_database_url, max_size=1)
    try:
        ssl = await pool.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert ssl is True
    finally:
        await pool.close()

    # the CA from settings (`nats_tls_ca`) rather than the URL, as a deployment sets it
    settings = load_settings(
        nats_url=with_query(upgraded.nats_url, ""), nats_tls_ca=pki.server.ca_file
    )
    bus = await Bus.connect(settings.nats_servers, name="tls-check")
    try:
        subject = f"tls.{uuid.uuid4().hex}"
        sub = await bus.nc.subscribe(subject)
        await bus.nc.publish(subject, b"over tls")
        assert (await sub.next_msg(timeout=10)).data == b"over tls"
        monitor = upgraded.nats.monitor_url()
        assert monitor is not None and urlsplit(monitor).hostname == "127.0.0.1"
        connz = httpx.get(f"{monitor}/connz", timeout=10).json()
        mine = [c for c in connz["connections"] if c.get("name") == "tls-check"]
        assert mine and mine[0]["tls_version"].startswith("1.")
    finally:
        await bus.close()
    pid = upgraded.nats.status().pid
    assert pid is not None and listening_addresses(pid) == {"127.0.0.1"}


async def test_a_wrong_ca_is_refused_with_a_clear_error(
    upgraded: Upgraded, tls_database_url: str, pki: Pki
) -> None:
    wrong = str(pki.wrong_ca)
    database_url = with_query(tls_database_url, f"sslmode=verify-full&sslrootcert={wrong}")
    with pytest.raises(ServiceError, match="TLS certificate not trusted") as refused:
        await create_pool(database_url, max_size=1)
    assert wrong in str(refused.value) and "127.0.0.1" in str(refused.value)

    nats_url = with_query(upgraded.nats_url, f"tls_ca={wrong}")
    with pytest.raises(ServiceError, match="TLS certificate not trusted") as refused:
        await asyncio.wait_for(Bus.connect(nats_url, timeout_s=2), 20)  # not retried forever
    assert "127.0.0.1" in str(refused.value)
    password = upgraded.nats.password_file.read_text().strip()
    assert password not in str(refused.value)
