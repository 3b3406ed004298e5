"""How every rayvisor driver starts or joins Ray: loopback, namespace, worker set-up, and a
quiet console (Ray's own messages stay in Ray's log files)."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from runtime import telemetry, worker_env
from runtime.config import Settings

__all__ = ["auth_token_source", "init_ray", "prestart_workers", "quiet_driver"]

_log = logging.getLogger("rayvisor.ray")


class _WarningsAndAbove(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


class _NotTheTokenNotice(logging.Filter):
    """Drops Ray's notice that token authentication is on (it is, as rayvisor wants)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this")


_TOKEN_LOGGER = "ray._private.authentication.authentication_token_setup"


def quiet_driver() -> None:
    """Keep Ray's chatter off this driver's console; idempotent.

    1. The raylet's messages. A driver runs Ray's `listen_error_messages` thread whatever
       `log_to_driver` says: it prints each error the raylet publishes ("A worker died or
       was killed while executing a task ...", "N PYTHON worker processes have been
       started ...") to stdout as `(raylet) ...`. Under supervision a dead worker is the
       normal course of things, and the supervisor reports it itself. The thread prints
       through `ray._private.worker.print_to_stdstream`, looked up at each call: this wraps
       it so that messages from the raylet go to the `rayvisor.ray` logger at DEBUG instead
       (`init_ray` writes it to `rayvisor-driver-<pid>.log` in the session's `logs/`, beside
       Ray's own record of the deaths in `gcs_server.out`); anything else (worker output,
       when a driver asks for it with `log_to_driver=True`) is printed as before. A Ray
       without the hook is left as it is.
    2. Serve's driver-side INFO lines ("Started Serve in namespace ...", "Application ...
       is ready at ..."): the `ray.serve` logger of a driver only writes to stderr, so
       below WARNING it is filtered out (the Serve controller and replicas keep their log
       files).
    3. Ray's notice at `ray.init` that token authentication is enabled for the cluster.
    """
    for name, kind in (("ray.serve", _WarningsAndAbove), (_TOKEN_LOGGER, _NotTheTokenNotice)):
        logger = logging.getLogger(name)
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())

    from ray._private import worker as ray_worker

    original = getattr(ray_worker, "print_to_stdstream", None)
    if original is None or getattr(original, "rayvisor_quiet", False):
        return

    def print_to_stdstream(data: dict[str, Any], ignore_prefix: bool) -> None:
        if data.get("pid") == "raylet":
            for line in data.get("lines", []):
                _log.debug("(raylet) %s", line)
            return
        original(data, ignore_prefix)

    print_to_stdstream.rayvisor_quiet = True  # type: ignore[attr-defined]
    ray_worker.print_to_stdstream = print_to_stdstream


def _keep_raylet_messages() -> None:
    """Write the `rayvisor.ray` logger (the raylet's messages `quiet_driver` keeps off the
    console) to `rayvisor-driver-<pid>.log` in this Ray session's `logs/`, and nowhere else.
    The file is made at the first message."""
    from ray._private import worker as ray_worker

    try:
        logs = Path(ray_worker.global_worker.node.get_logs_dir_path())
    except Exception:  # no node: nothing to write beside
        return
    for old in [h for h in _log.handlers if getattr(h, "rayvisor_session", False)]:
        _log.removeHandler(old)
        with contextlib.suppress(Exception):
            old.close()
    handler = logging.FileHandler(logs / f"rayvisor-driver-{os.getpid()}.log", delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    handler.rayvisor_session = True  # type: ignore[attr-defined]
    _log.addHandler(handler)
    _log.setLevel(logging.DEBUG)
    _log.propagate = False


def init_ray(
    settings: Settings,
    database_url: str,
    nats_url: str,
    *,
    namespace: str | None = None,
    num_cpus: int | None = None,
    dashboard: bool = False,
    **extra: Any,
) -> Any:
    """Start a local Ray on 127.0.0.1 (or join `settings.ray_address`) with the services'
    URLs in every worker's environment.

    The URLs carry passwords, and Ray shows a job's runtime env (its variables too) on its
    dashboard and through `ray.util.state`: so they, and any other secret variable (an
    OpenTelemetry auth header), go through the GCS instead (`runtime.worker_env`), and
    the runtime env holds only where to find them.

    The driver prints none of Ray's chatter: no worker output (`log_to_driver=False`), no
    raylet messages (`quiet_driver`); both stay in Ray's log files (the session's `logs/`,
    `/tmp/ray/session_latest/logs` on the head). Of Ray's and Serve's driver-side loggers
    only warnings and errors are shown (not "Started a local Ray instance"). `extra`
    overrides `log_to_driver` and `logging_level`.
    """
    import ray

    quiet_driver()

    namespace = namespace or settings.namespace
    env_vars, secrets = worker_env.split(
        {
            "RAYVISOR_DATABASE_URL": database_url,
            "RAYVISOR_NATS_URL": nats_url,
            "RAYVISOR_HOME": str(settings.home),
            **telemetry.configured_env(),  # workers export their spans where this one does
            **_log_env(settings),  # workers log as the settings say
        }
    )
    secrets_key = f"env:{namespace}"
    runtime_env = {
        "env_vars": {**env_vars, worker_env.KEY_ENV: secrets_key},
        # reads the secrets, sets up logs and loads what RAYVISOR_PRELOAD names (set for
        # agent hosts only) as a worker starts
        "worker_process_setup_hook": "runtime.preload.preload",
    }
    options: dict[str, Any] = {
        "namespace": namespace,
        "runtime_env": runtime_env,
        "log_to_driver": False,
        "logging_level": logging.WARNING,
        **extra,
    }
    if settings.ray_address:
        options["address"] = settings.ray_address
    else:
        options |= {
            "_node_ip_address": "127.0.0.1",
            "num_cpus": num_cpus,
            "include_dashboard": dashboard,
            "dashboard_host": "127.0.0.1",
        }
    context = ray.init(**options)
    worker_env.publish(secrets_key, secrets)  # before any actor of the job starts
    _keep_raylet_messages()
    return context


def _log_env(settings: Settings) -> dict[str, str]:
    """`log_format` and `log_level` for the workers' `runtime.logs`, when they are set."""
    from runtime.logs import LOG_FORMAT_ENV, LOG_LEVEL_ENV

    chosen = {LOG_FORMAT_ENV: settings.log_format, LOG_LEVEL_ENV: settings.log_level}
    return {name: value for name, value in chosen.items() if value}


def auth_token_source() -> str | None:
    """Where the token this driver gives Ray is (`$RAY_AUTH_TOKEN`, or a file), for people
    to sign in to the dashboard with; None when the cluster does not ask for one.

    Ray (2.52+; on by default for a local cluster since 2.60) checks every request to the
    dashboard, its HTTP API included, against one token: the `RAY_AUTH_TOKEN` variable, else
    the file `RAY_AUTH_TOKEN_PATH` names, else `~/.ray/auth_token` (made by the `ray.init`
    that started the cluster). The dashboard's page asks a browser for it once and keeps it
    in a cookie (`ray-authentication-token`, 30 days); `ray get-auth-token` prints it.
    Call after `ray.init`.
    """
    try:
        from ray._private.authentication.authentication_utils import is_token_auth_enabled

        if not is_token_auth_enabled():
            return None
    except ImportError:  # a Ray without token authentication
        return None
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "$RAY_AUTH_TOKEN"
    named = os.environ.get("RAY_AUTH_TOKEN_PATH")
    return str(Path(named).expanduser() if named else Path.home() / ".ray" / "auth_token")


_raylet_stubs: dict[str, Any] = {}


def prestart_workers(count: int = 1, keep_alive_s: int = 120, runtime_env: str = "") -> None:
    """Have this node's raylet start `count` idle worker processes for this job and
    `runtime_env` (serialized, as an actor reports it; default: this worker's), kept alive
    `keep_alive_s` seconds.

    Why: a new Ray worker process costs 0.5-0.7 s before any actor code runs. Ray's raylet
    gives an actor creation an idle worker of the same job and runtime env that has never
    run a task, so a restart that finds one skips the process start. Ray only prestarts
    such workers on request (`PrestartWorkers`, the raylet RPC behind `CoreWorker::
    PrestartWorkers`, which Python does not expose), so a supervisor asks for them. They are
    generic processes, bound to no child: unlike a standby spare they run no rayvisor code.
    Raises on an RPC failure; call from a worker or driver of the job.
    """
    import ray
    from ray._private.grpc_utils import init_grpc_channel
    from ray.core.generated import common_pb2, node_manager_pb2, node_manager_pb2_grpc
    from ray.core.generated import runtime_environment_pb2 as runtime_env_pb2

    context = ray.get_runtime_context()
    node_id = context.get_node_id()
    stub = _raylet_stubs.get(node_id)
    if stub is None:
        node = next(n for n in ray.nodes() if n["NodeID"] == node_id)
        channel = init_grpc_channel(f"{node['NodeManagerAddress']}:{node['NodeManagerPort']}")
        stub = _raylet_stubs[node_id] = node_manager_pb2_grpc.NodeManagerServiceStub(channel)
    request = node_manager_pb2.PrestartWorkersRequest(
        language=common_pb2.PYTHON,
        job_id=bytes.fromhex(context.get_job_id()),
        runtime_env_info=runtime_env_pb2.RuntimeEnvInfo(
            serialized_runtime_env=runtime_env or context.get_runtime_env_string()
        ),
        keep_alive_duration_secs=keep_alive_s,
        num_workers=count,
    )
    stub.PrestartWorkers(request, timeout=10)
