"""Secrets are never shown: `rayvisor config`, configuration errors, reprs, task errors and
log lines mask a URL's password (`user:***@host`) and keys; `runtime_env` gets none."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runtime import logs, worker_env
from runtime.config import load_settings
from runtime.errors import ConfigError, TransientError
from runtime.redact import mask_url, redact, redact_value

DB_PASSWORD = "Db-pa55-SECRET"
NATS_PASSWORD = "Nats-pa55-SECRET"
API_KEY = "rv_AbCd1234_api-key-SECRET"
MODEL_KEY = "sk-model-key-SECRET"
DB_URL = f"postgresql://postgres:{DB_PASSWORD}@127.0.0.1:5432/rayvisor"
NATS_URL = f"nats://rayvisor:{NATS_PASSWORD}@127.0.0.1:4222"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("RAYVISOR_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def _secrets_in(text: str) -> list[str]:
    return [s for s in (DB_PASSWORD, NATS_PASSWORD, API_KEY, MODEL_KEY) if s in text]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (DB_URL, "postgresql://postgres:***@127.0.0.1:5432/rayvisor"),
        (NATS_URL, "nats://rayvisor:***@127.0.0.1:4222"),
        ("nats://s3cr3t-token@127.0.0.1:4222", "nats://***@127.0.0.1:4222"),
        ("postgresql://u:p@ss:w0rd@db:5432/x", "postgresql://u:***@db:5432/x"),  # not encoded
        ("postgres://u:has space@db/x", "postgres://u:***@db/x"),  # malformed
        ("postgresql://postgres@127.0.0.1/x", "postgresql://postgres@127.0.0.1/x"),  # no password
        ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1"),
    ],
)
def test_mask_url_keeps_user_and_host_not_the_credential(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_redact_masks_every_url_in_a_message_and_secret_keys_in_values() -> None:
    message = f"cannot connect to {DB_URL} nor to {NATS_URL}: refused"
    assert redact(message) == (
        "cannot connect to postgresql://postgres:***@127.0.0.1:5432/rayvisor"
        " nor to nats://rayvisor:***@127.0.0.1:4222: refused"
    )
    value = {"api_key": MODEL_KEY, "api_key_env": "OPENAI_API_KEY", "n": [DB_URL, 3]}
    assert redact_value(value) == {
        "api_key": "***",
        "api_key_env": "OPENAI_API_KEY",  # names a variable: not a secret
        "n": ["postgresql://postgres:***@127.0.0.1:5432/rayvisor", 3],
    }


def _config_with_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "rayvisor.yaml").write_text(
        "models:\n"
        "  gpt:\n"
        f"    base_url: http://user:{MODEL_KEY}@127.0.0.1:8080/v1\n"
        "    model: gpt-test\n"
        "tree:\n"
        "  pools:\n"
        "    - id: llm\n"
        "      agent: actors.builtin.echo:EchoAgent\n"
        f"      params: {{api_key: {MODEL_KEY}, endpoint: 'http://u:{MODEL_KEY}@h/'}}\n"
    )
    monkeypatch.setenv("RAYVISOR_DATABASE_URL", DB_URL)
    monkeypatch.setenv("RAYVISOR_NATS_URL", NATS_URL)
    monkeypatch.setenv("RAYVISOR_API_KEY", API_KEY)


def test_config_command_masks_every_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from serve.cli import app

    _config_with_secrets(tmp_path, monkeypatch)
    result = CliRunner().invoke(app, ["config"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert _secrets_in(result.output) == []
    shown = json.loads(result.stdout)
    assert shown["database_url"] == "postgresql://postgres:***@127.0.0.1:5432/rayvisor"
    assert shown["nats_url"] == "nats://rayvisor:***@127.0.0.1:4222"
    assert shown["api_key"] == "***"
    assert shown["tree"]["pools"][0]["params"]["api_key"] == "***"
    assert shown["models"]["gpt"]["base_url"] == "http://user:***@127.0.0.1:8080/v1"
    # the settings themselves keep the values that are used
    settings = load_settings()
    assert settings.database_dsn == DB_URL
    assert settings.api_key is not None and settings.api_key.get_secret_value() == API_KEY
    assert _secrets_in(repr(settings)) == []


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RAYVISOR_DATABASE_URL", f"postgresql://postgres:{DB_PASSWORD}@127.0.0.1:notaport/db"),
        ("RAYVISOR_DATABASE_URL", f"postgres://postgres:{DB_PASSWORD} x@127.0.0.1:x/db"),
        ("RAYVISOR_DATABASE_URL", f"mysql://postgres:{DB_PASSWORD}@127.0.0.1/db"),
        ("RAYVISOR_NATS_URL", f"nats://rayvisor:{NATS_PASSWORD}@127.0.0.1:99999999"),
    ],
)
def test_a_configuration_error_names_the_field_not_the_password(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from serve.cli import app

    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    field = variable.removeprefix("RAYVISOR_").lower()
    assert f"{field}:" in str(info.value)
    assert ":***@127.0.0.1" in str(info.value)  # the value is shown, masked
    assert _secrets_in(str(info.value)) == []
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 2
    assert field in result.output and _secrets_in(result.output) == []


def test_task_errors_and_log_lines_carry_no_url_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    error = TransientError(f"connect to {DB_URL} failed", {"url": NATS_URL, "token": "t0k"})
    assert _secrets_in(json.dumps(error.to_dict())) == []
    assert error.to_dict()["detail"]["token"] == "***"
    record = logging.LogRecord("rayvisor.test", logging.ERROR, __file__, 1, "%s", (DB_URL,), None)
    for formatter in (logs.JsonFormatter(), logs.TextFormatter()):
        line = formatter.format(record)
        assert "postgres:***@127.0.0.1" in line and _secrets_in(line) == []


def test_runtime_env_variables_split_the_secret_ones_out() -> None:
    plain, secret = worker_env.split(
        {
            "RAYVISOR_DATABASE_URL": DB_URL,
            "RAYVISOR_NATS_URL": "nats://127.0.0.1:4222",  # a service URL, always kept out
            "RAYVISOR_HOME": "/home/u/.rayvisor",
            "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer abc",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
            "RAYVISOR_LOG_LEVEL": "INFO",
        }
    )
    assert plain == {
        "RAYVISOR_HOME": "/home/u/.rayvisor",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
        "RAYVISOR_LOG_LEVEL": "INFO",
    }
    assert set(secret) == {
        "RAYVISOR_DATABASE_URL",
        "RAYVISOR_NATS_URL",
        "OTEL_EXPORTER_OTLP_HEADERS",
    }
