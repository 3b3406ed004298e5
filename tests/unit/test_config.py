"""Settings: environment over rayvisor.yaml over defaults; bad values name the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from runtime.config import load_settings
from runtime.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("RAYVISOR_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def write_yaml(tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "rayvisor.yaml"
    path.write_text(text)
    monkeypatch.setenv("RAYVISOR_CONFIG", str(path))
    return path


def test_defaults() -> None:
    settings = load_settings()
    assert settings.database_url is None
    assert settings.home == Path("~/.rayvisor").expanduser()
    assert settings.http_host == "127.0.0.1"
    assert settings.http_port == 8000
    assert settings.supervision.heartbeat.misses == 3


def test_environment_overrides_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_yaml(tmp_path, "http_port: 9000\nbatch_window_ms: 20\n", monkeypatch)
    monkeypatch.setenv("RAYVISOR_HTTP_PORT", "9100")
    monkeypatch.setenv("RAYVISOR_SUPERVISION__HEARTBEAT__INTERVAL_S", "0.5")
    settings = load_settings()
    assert settings.http_port == 9100
    assert settings.batch_window_ms == 20
    assert settings.supervision.heartbeat.interval_s == 0.5


def test_rayvisor_yaml_in_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / "rayvisor.yaml").write_text("database_url: postgresql://u@db.example:5432/x\n")
    settings = load_settings()
    assert settings.database_dsn == "postgresql://u@db.example:5432/x"


def test_malformed_database_url_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYVISOR_DATABASE_URL", "not a url")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "database_url" in str(info.value)


def test_wrong_scheme_for_nats_url_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYVISOR_NATS_URL", "http://127.0.0.1:4222")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "nats_url" in str(info.value)


def test_negative_interval_names_the_nested_field(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write_yaml(tmp_path, "supervision:\n  heartbeat:\n    interval_s: -1\n", monkeypatch)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "supervision.heartbeat.interval_s" in message
    assert "greater than 0" in message


def test_unknown_key_in_yaml_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_yaml(tmp_path, "http_prot: 8000\n", monkeypatch)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "http_prot: unknown key" in str(info.value)


def test_yaml_that_is_not_a_mapping(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_yaml(tmp_path, "- a\n- b\n", monkeypatch)
    with pytest.raises(ConfigError, match="mapping"):
        load_settings()


def test_inverted_backoff_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYVISOR_SUPERVISION__MIN_BACKOFF_S", "5")
    monkeypatch.setenv("RAYVISOR_SUPERVISION__MAX_BACKOFF_S", "1")
    with pytest.raises(ConfigError, match="max_backoff_s"):
        load_settings()


def test_cli_stops_with_the_field_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_yaml(tmp_path, "http_port: -3\n", monkeypatch)
    result = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "services", "status"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "http_port" in result.stderr


def test_cluster_yaml_installs_rayvisor_on_every_node() -> None:
    from pathlib import Path

    import yaml

    cluster = yaml.safe_load((Path(__file__).parents[2] / "cluster.yaml").read_text())
    assert cluster["provider"]["type"] == "local"
    assert any("pip install" in c and "rayvisor" in c for c in cluster["setup_commands"])
    assert any("ray start --head" in c for c in cluster["head_start_ray_commands"])
    assert any("ray start --address" in c for c in cluster["worker_start_ray_commands"])
