"""The pieces of the embedded servers' authentication and of TLS on the client side that
need no server: secrets files, the pg_hba upgrade, what a NATS URL asks for."""

from __future__ import annotations

import ssl
import stat
from pathlib import Path

import pytest

from runtime.config import load_settings
from runtime.errors import ServiceError
from runtime.service_auth import ensure_secret, nats_config, trust_to_scram
from runtime.tls import nats_servers_and_tls

EARLIER_HBA = """\
# CAUTION: Configuring the system for local "trust" authentication
# TYPE  DATABASE        USER            ADDRESS                 METHOD
local   all             all                                     trust
host    all             all             127.0.0.1/32            trust
host    all             all             ::1/128                 trust  # loopback
hostssl replication     all             127.0.0.1/32            md5
"""


def test_a_secret_is_generated_once_private_and_tightened(tmp_path: Path) -> None:
    path = tmp_path / "password"
    first = ensure_secret(path)
    assert len(first) >= 40 and stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)  # loosened by hand: the next start tightens it, keeping the secret
    assert ensure_secret(path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_secret(tmp_path / "other") != first


def test_trust_becomes_scram_and_nothing_else_changes() -> None:
    upgraded = trust_to_scram(EARLIER_HBA)
    assert upgraded is not None
    rules = [line for line in upgraded.splitlines() if not line.startswith("#")]
    assert [line.split()[4 if line.startswith("host") else 3] for line in rules] == [
        "scram-sha-256", "scram-sha-256", "scram-sha-256", "md5",
    ]  # fmt: skip
    assert upgraded.splitlines()[0] == EARLIER_HBA.splitlines()[0]  # comments kept
    assert "# loopback" in upgraded
    assert trust_to_scram(upgraded) is None  # nothing left to upgrade


def test_nats_config_names_the_user_and_tls() -> None:
    text = nats_config("rayvisor", "s3cret", (Path("/c/server.crt"), Path("/c/server.key")))
    assert 'user: "rayvisor"' in text and 'password: "s3cret"' in text
    assert 'cert_file: "/c/server.crt"' in text and 'key_file: "/c/server.key"' in text
    assert "tls {" not in nats_config("rayvisor", "s3cret", None)
    with pytest.raises(ValueError, match="quote"):
        nats_config("rayvisor", 'a"b', None)


def test_a_nats_url_asks_for_tls_and_its_ca(tmp_path: Path) -> None:
    servers, tls = nats_servers_and_tls("nats://u:p@127.0.0.1:4222")
    assert servers == ["nats://u:p@127.0.0.1:4222"] and tls is None

    servers, tls = nats_servers_and_tls("tls://u:p@h1:4222,u:p@h2:4222")
    assert servers == ["tls://u:p@h1:4222", "tls://u:p@h2:4222"]
    assert isinstance(tls, ssl.SSLContext) and tls.verify_mode == ssl.CERT_REQUIRED

    with pytest.raises(ServiceError, match=r"missing\.pem"):
        nats_servers_and_tls(f"tls://h:4222?tls_ca={tmp_path}/missing.pem")


def test_nats_tls_ca_setting_reaches_the_url(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    settings = load_settings(nats_url="tls://u:p@127.0.0.1:4222", nats_tls_ca=ca)
    assert settings.nats_servers == f"tls://u:p@127.0.0.1:4222?tls_ca={str(ca).replace('/', '%2F')}"
    plain = load_settings(nats_url="nats://u:p@127.0.0.1:4222", nats_tls_ca=ca)
    assert plain.nats_servers == "nats://u:p@127.0.0.1:4222"  # no TLS asked: no CA
