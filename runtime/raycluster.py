"""How every rayvisor driver starts or joins Ray: loopback, namespace, worker set-up."""

from __future__ import annotations

from typing import Any

from runtime.config import Settings

__all__ = ["init_ray"]


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
