"""How every rayvisor driver starts or joins Ray: loopback, namespace, worker set-up."""

from __future__ import annotations

from typing import Any

from runtime.config import Settings

__all__ = ["init_ray", "prestart_workers"]


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
    URLs in every worker's environment."""
    import ray

    runtime_env = {
        "env_vars": {
            "RAYVISOR_DATABASE_URL": database_url,
            "RAYVISOR_NATS_URL": nats_url,
            "RAYVISOR_HOME": str(settings.home),
        },
        # loads what RAYVISOR_PRELOAD names (set for agent hosts only) as a worker starts
        "worker_process_setup_hook": "runtime.preload.preload",
    }
    options: dict[str, Any] = {
        "namespace": namespace or settings.namespace,
        "runtime_env": runtime_env,
        "log_to_driver": False,
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
    return ray.init(**options)


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
