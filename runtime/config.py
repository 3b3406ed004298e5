"""Settings: `RAYVISOR_*` environment variables over an optional `rayvisor.yaml`.

Precedence, highest first: keyword arguments, environment, `rayvisor.yaml`, defaults.
Nested sections take `__` in variables (`RAYVISOR_SUPERVISION__MAX_RESTARTS=5`).
An invalid value, or an unknown key in the file, fails at start with a
`ConfigError` naming each field and the reason; nothing starts half-configured.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    NatsDsn,
    PostgresDsn,
    SecretStr,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from runtime import worker_env
from runtime.errors import ConfigError
from runtime.redact import MASK, is_secret_key, mask_url, redact_value
from runtime.tls import with_nats_ca

__all__ = [
    "CONFIG_FILE_ENV",
    "HeartbeatSettings",
    "HttpSettings",
    "ModelSettings",
    "RetentionSettings",
    "Settings",
    "SupervisionSettings",
    "ToolLimits",
    "ToolsSettings",
    "format_validation_error",
    "load_settings",
]

CONFIG_FILE_ENV = "RAYVISOR_CONFIG"
TOOL_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
ToolName = Annotated[str, StringConstraints(pattern=TOOL_NAME_PATTERN)]
DEFAULT_CONFIG_FILE = Path("rayvisor.yaml")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HeartbeatSettings(_Section):
    """How a supervisor decides a child is hung: `misses` failed pings in a row."""

    interval_s: float = Field(1.0, gt=0, le=300)
    timeout_s: float = Field(2.0, gt=0, le=600)
    misses: int = Field(3, ge=1, le=100)


class SupervisionSettings(_Section):
    """Defaults for every supervisor spec that does not set its own."""

    max_restarts: int = Field(10, ge=0)
    period_s: float = Field(60.0, gt=0)
    min_backoff_s: float = Field(0.0, ge=0)
    max_backoff_s: float = Field(10.0, ge=0)
    backoff_jitter: float = Field(0.2, ge=0, lt=1)
    backoff_reset_after_s: float = Field(30.0, gt=0)
    failure_threshold: int = Field(5, ge=1)
    reset_timeout_s: float = Field(10.0, gt=0)
    max_reset_timeout_s: float = Field(300.0, gt=0)
    heartbeat: HeartbeatSettings = HeartbeatSettings()

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.max_backoff_s < self.min_backoff_s:
            raise ValueError("max_backoff_s must be >= min_backoff_s")
        if self.max_reset_timeout_s < self.reset_timeout_s:
            raise ValueError("max_reset_timeout_s must be >= reset_timeout_s")
        return self


class HttpSettings(_Section):
    """The HTTP ingress (a Ray Serve deployment); see README "HTTP API" for why these."""

    replicas: int = Field(1, ge=1, le=64)
    max_ongoing_requests: int = Field(
        2000, ge=1, le=100_000, description="Per replica; SSE streams hold one each."
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, le=64 * 1_048_576)
    max_batch_tasks: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="Tasks one `POST /api/v1/tasks/batch` may carry; more: 422 naming the limit.",
    )
    key_cache_s: float = Field(2.0, ge=0, le=300, description="How long a checked key is trusted.")
    bad_key_burst: int = Field(
        20,
        ge=1,
        le=1_000_000,
        description="Unknown keys a client address may have looked up at once (cluster-wide); "
        "past it, 429 before any database lookup.",
    )
    bad_key_rate_per_s: float = Field(
        1.0, gt=0, le=1_000_000, description="... and per second, sustained."
    )
    health_check_period_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="Serve checks each replica this often: a dead one is "
        "seen (and replaced) within about this (Serve's default, 10 s, is that long an outage).",
    )
    health_check_timeout_s: float = Field(5.0, gt=0, le=300)
    proxy_health_check_period_s: float = Field(
        0.5,
        gt=0,
        le=60,
        description="Serve's controller checks its HTTP proxy this often and "
        "replaces it after 3 failures (Serve's default, 10 s, means ~25 s without HTTP); "
        "applies when Serve starts.",
    )
    keep_alive_s: float = Field(15.0, gt=0, le=300, description="SSE keep-alive comment period.")


class ToolLimits(_Section):
    """How one tool is guarded, per agent: a token bucket, a circuit breaker, a timeout."""

    rate_per_s: float = Field(10.0, gt=0, le=100_000)
    burst: int = Field(10, ge=1, le=100_000)
    max_wait_s: float = Field(10.0, ge=0, le=3600, description="Wait for a token at most this.")
    failure_threshold: int = Field(5, ge=1, le=10_000)
    reset_timeout_s: float = Field(30.0, gt=0, le=3600)
    timeout_s: float = Field(30.0, gt=0, le=3600)


class ReadFileSettings(ToolLimits):
    """`read_file` reads only inside `dirs` (none: the tool refuses every path)."""

    dirs: list[Path] = Field(default_factory=list)
    max_bytes: int = Field(1_048_576, ge=1, le=256 * 1_048_576)


class HttpRequestSettings(ToolLimits):
    """`http_request` calls only `hosts` (names or addresses, matched exactly)."""

    hosts: list[str] = Field(default_factory=list)
    max_bytes: int = Field(1_048_576, ge=1, le=256 * 1_048_576)


class CustomToolSettings(ToolLimits):
    """A user's tool: an async function whose typed parameters are the tool's parameters."""

    function: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    description: str = ""


class ToolsSettings(_Section):
    """The tools agents may call (`ctx.tool`): two built-in, and the user's own."""

    read_file: ReadFileSettings = ReadFileSettings()
    http_request: HttpRequestSettings = HttpRequestSettings()
    custom: dict[ToolName, CustomToolSettings] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _no_shadowing(self) -> Self:
        taken = sorted(set(self.custom) & {"read_file", "http_request"})
        if taken:
            raise ValueError(f"custom tools may not reuse a built-in name: {taken}")
        return self


class RetentionSettings(_Section):
    """How long records are kept (runtime/store/retention.py): events, discoveries, messages,
    tool executions and finished tasks older than `days` are purged by the retention job
    every `interval_s`, `batch_size` rows per statement with `pause_s` between statements;
    unfinished work and what it references are never purged. `days: 0` (or null) keeps
    everything, and no retention job runs."""

    days: float | None = Field(
        30.0, ge=0, le=36_500, description="0 or null keeps records forever."
    )
    interval_s: float = Field(3600.0, gt=0, le=7 * 86_400)
    batch_size: int = Field(1000, ge=1, le=100_000)
    pause_s: float = Field(0.1, ge=0, le=60)


class ModelSettings(_Section):
    """One model of the catalog: an OpenAI-compatible endpoint and how calls to it are
    guarded (per agent: a token bucket, a circuit breaker, retries on 429 and 5xx)."""

    base_url: HttpUrl = Field(description="The API base, e.g. http://127.0.0.1:8080/v1")
    model: str = Field(min_length=1, max_length=200, description="The endpoint's model id")
    api_key_env: str | None = Field(
        None, pattern=r"^[A-Z_][A-Z0-9_]*$", description="The variable that holds the key"
    )
    rate_per_s: float = Field(5.0, gt=0, le=10_000)
    burst: int = Field(5, ge=1, le=10_000)
    max_wait_s: float = Field(30.0, ge=0, le=3600)
    timeout_s: float = Field(60.0, gt=0, le=3600)
    max_retries: int = Field(3, ge=0, le=20)
    failure_threshold: int = Field(5, ge=1, le=1000)
    reset_timeout_s: float = Field(30.0, gt=0, le=3600)

    def __repr_args__(self) -> Any:
        """A repr shows no credentials the base URL may carry."""
        for name, value in super().__repr_args__():
            yield name, mask_url(str(value)) if name == "base_url" else value


class Settings(BaseSettings):
    """Everything a rayvisor process needs to find its services and behave."""

    model_config = SettingsConfigDict(
        env_prefix="RAYVISOR_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    database_url: PostgresDsn | None = Field(
        None, description="PostgreSQL URL; unset starts embedded PostgreSQL under `home`."
    )
    nats_url: NatsDsn | None = Field(
        None, description="NATS URL; unset starts an embedded nats-server under `home`."
    )
    nats_tls_ca: Path | None = Field(
        None,
        description="CA file that signed a `tls://` NATS URL's server certificate (unless "
        "the URL names one in `tls_ca`); unset: the system's CAs. PostgreSQL takes libpq's "
        "`sslmode=verify-full&sslrootcert=...` in its URL.",
    )
    nats_monitor_url: HttpUrl | None = Field(
        None,
        description="nats-server's HTTP monitoring (`http://host:8222`), read for the NATS "
        "rates of /api/v1/metrics/system; the embedded server's is found by itself.",
    )
    ray_address: str | None = Field(
        None, description="Ray cluster address (`auto`, `ray://...`); unset starts local Ray."
    )
    namespace: str = Field("rayvisor", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    home: Path = Field(Path("~/.rayvisor"), description="Data of the embedded services.")
    http_host: str = Field("127.0.0.1", min_length=1)
    http_port: int = Field(8000, ge=1, le=65535)
    http: HttpSettings = HttpSettings()
    api_key: SecretStr | None = Field(
        None, description="The key the CLI sends; else `home`/api_key. Never printed."
    )
    batch_window_ms: float = Field(5.0, ge=0, le=10_000, description="Group-commit window.")
    task_shards: int = Field(1, ge=1, le=64, description="TaskManager shards (tm:0 ..).")
    stream_name: str = Field("RAYVISOR", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    stream_max_age_s: float = Field(7 * 24 * 3600.0, gt=0)
    stream_max_consumers: int = Field(
        10_000,
        ge=100,
        le=1_000_000,
        description="JetStream consumers the stream allows: one per SSE stream on a durable "
        "subject, plus the system's own (nats-server 2.15's default, 1,000, caps SSE clients).",
    )
    outbox_batch_size: int = Field(200, ge=1, le=10_000)
    outbox_poll_s: float = Field(0.5, gt=0, le=60)
    retention: RetentionSettings = RetentionSettings()
    supervision: SupervisionSettings = SupervisionSettings()
    tools: ToolsSettings = ToolsSettings()
    template_packages: list[str] = Field(
        default_factory=lambda: ["actors"],
        description="Packages whose Agent classes templates made over the API may name.",
    )
    models: dict[ToolName, ModelSettings] = Field(
        default_factory=dict, description="The model catalog (`ctx.model(name)`)."
    )
    memory_max_value_bytes: int = Field(
        65_536, ge=16, le=1_048_576, description="Largest value in shared memory, as JSON."
    )
    max_result_bytes: int = Field(
        1_048_576,
        ge=1024,
        le=256 * 1_048_576,
        description="Largest task result, as JSON: a larger one fails the task (logical).",
    )
    log_format: Literal["json", "text"] | None = Field(
        None, description="Log lines (`runtime.logs`); unset: text on a terminal, else JSON."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None = Field(
        None, description="rayvisor's loggers' level; unset: INFO in Ray workers, else WARNING."
    )
    tree: dict[str, Any] | None = Field(
        None, description="The supervision tree (pools of agents); validated by supervisors.tree."
    )

    @model_validator(mode="after")
    def _expand_home(self) -> Self:
        object.__setattr__(self, "home", self.home.expanduser())
        return self

    @property
    def database_dsn(self) -> str | None:
        return str(self.database_url) if self.database_url else None

    def __repr_args__(self) -> Any:
        """A repr (a log line, a traceback's locals) shows no URL's credentials."""
        for name, value in super().__repr_args__():
            if name in ("database_url", "nats_url") and value is not None:
                value = mask_url(str(value))
            yield name, redact_value(value) if name == "tree" else value

    def shown(self) -> dict[str, Any]:
        """The settings as JSON to show (`rayvisor config`): no password, token or key.
        Service URLs keep their user and host, not their credentials (`user:***@host`)."""
        data = self.model_dump(mode="json")
        for name in ("database_url", "nats_url", "nats_monitor_url"):
            if data.get(name):
                data[name] = mask_url(data[name])
        if data.get("api_key"):
            data["api_key"] = MASK
        if data.get("tree"):
            data["tree"] = redact_value(data["tree"])
        for model in data.get("models", {}).values():
            model["base_url"] = mask_url(model["base_url"])
        return data

    @property
    def http_url(self) -> str:
        return f"http://{self.http_host}:{self.http_port}"

    @property
    def nats_servers(self) -> str | None:
        """The NATS URL as `Bus.connect` takes it: naming `nats_tls_ca` when it is `tls://`."""
        return with_nats_ca(str(self.nats_url), self.nats_tls_ca) if self.nats_url else None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        file_values = _read_config_file(_config_file_path())
        return (
            init_settings,
            env_settings,
            InitSettingsSource(settings_cls, init_kwargs=file_values),
        )


def _config_file_path() -> Path | None:
    explicit = os.environ.get(CONFIG_FILE_ENV)
    if explicit:
        return Path(explicit)
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.exists() else None


def _read_config_file(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of settings")
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error on one line, where it is first: `line 4, column 14: expected ...`."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    began = getattr(exc, "context_mark", None)
    if context and began is not None and began is not mark:
        context += f" from line {began.line + 1}, column {began.column + 1}"
    return f"{where}{problem}" + (f" ({context})" if context else "")


def format_validation_error(
    exc: ValidationError, source: str = "configuration", prefix: str = ""
) -> str:
    """One line per invalid field: `prefix.field.path: reason (got value)`."""
    lines = [f"invalid {source}:"]
    for err in exc.errors():
        parts = [prefix] if prefix else []
        field = ".".join(parts + [str(part) for part in err["loc"]]) or "(top level)"
        reason = err["msg"]
        if err["type"] == "extra_forbidden":
            reason = "unknown key"
        got = err.get("input")
        shown = "" if isinstance(got, dict) or got is None else f" (got {_shown(field, got)})"
        lines.append(f"  {field}: {reason}{shown}")
    return "\n".join(lines)


def _shown(field: str, got: Any) -> str:
    """A rejected value as an error may show it: a secret field's value never (`***`), a
    URL without its credentials (a malformed URL with a password lands on stderr)."""
    if any(is_secret_key(part) for part in field.split(".")):
        return MASK
    if isinstance(got, str) and field.endswith("url"):
        return repr(mask_url(got))
    return repr(redact_value(got))


def load_settings(**overrides: Any) -> Settings:
    """Settings from overrides, the environment and `rayvisor.yaml`, or a ConfigError.
    In a Ray worker whose setup hook could not read the job's secret settings yet, they
    are read now (`runtime.worker_env`)."""
    if os.environ.get(worker_env.KEY_ENV) and not os.environ.get("RAYVISOR_DATABASE_URL"):
        worker_env.load()
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        source = str(_config_file_path() or "configuration")
        raise ConfigError(format_validation_error(exc, source)) from None
