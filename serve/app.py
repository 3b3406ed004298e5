"""The HTTP ingress: a FastAPI app under `@serve.ingress` in one Serve deployment.

`deploy(settings)` starts Serve on `http_host:http_port` and runs the app as `rayvisor`
with `http.replicas` replicas, each allowed `http.max_ongoing_requests` at once: Serve's
default of 5 would let five SSE streams block every other request. Replicas and the proxy
are health-checked far more often than Serve's default, so a killed one is replaced in
seconds (`deploy`). Each replica connects
to PostgreSQL and NATS once, in its constructor.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI
from ray import serve

from runtime import telemetry, worker_env
from runtime.config import Settings
from serve import mcp_server, problems
from serve.http_metrics import HttpMetrics
from serve.limits import InputLimits
from serve.routes import (
    agents,
    discoveries,
    events,
    health,
    keys,
    metrics,
    projects,
    supervisors,
    tasks,
    templates,
    tools,
    ui,
)
from serve.system import System

__all__ = ["APP_NAME", "Ingress", "build_app", "deploy", "undeploy"]

APP_NAME = "rayvisor"
_SECRET_FIELDS = {"database_url", "nats_url", "api_key"}


def build_app(settings: Settings, system: System | None = None) -> FastAPI:
    """The FastAPI app; its routes find the replica's connections in `app.state.system`."""
    app = FastAPI(
        title="rayvisor",
        version="1.0",
        description="Tasks, agents, supervision trees, discoveries and events of a rayvisor "
        "system. Every route but `/healthz` and `/readyz` needs `Authorization: Bearer "
        "<key>`; errors are `application/problem+json`.",
    )
    problems.install(app)
    problems.document(app)
    for module in (
        tasks,
        projects,
        agents,
        templates,
        supervisors,
        discoveries,
        events,
        metrics,
        keys,
        tools,
        health,
        ui,
    ):
        app.include_router(module.router)
    mcp_server.install(app)  # /mcp, its session manager in the app's lifespan
    app.add_middleware(InputLimits, limit=settings.http.max_body_bytes)
    app.add_middleware(HttpMetrics, namespace=settings.namespace)  # outermost: counts 413s
    if telemetry.enabled():  # a server span per request, parent of the task's spans
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(
            app, excluded_urls="healthz,readyz", exclude_spans=["receive", "send"]
        )
    app.state.system = system
    return app


@serve.deployment(name="ingress")
@serve.ingress()
class Ingress:
    """One replica: connects once, then serves `build_app`'s routes."""

    async def __init__(self, settings: dict[str, Any], secrets_key: str) -> None:
        # the URLs (and any OpenTelemetry auth header) come from the GCS, not the args or
        # runtime env the dashboard shows (`runtime.worker_env`)
        os.environ.update(worker_env.fetch(secrets_key))
        telemetry.setup("ingress", actor=serve.get_replica_context().replica_id.to_full_id_str())
        self.settings = Settings.model_validate(
            settings
            | {
                "database_url": os.environ.get("RAYVISOR_DATABASE_URL") or None,
                "nats_url": os.environ.get("RAYVISOR_NATS_URL") or None,
            }
        )
        self.system = await System.connect(self.settings)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_app(self.settings, self.system)

    async def __del__(self) -> None:
        await self.system.close()


def deploy(settings: Settings, *, blocking: bool = False) -> str:
    """Run the ingress (replacing a running one); returns its base URL.

    Serve sees a dead replica or proxy only at its next health check, and replaces a proxy
    only after 3 failed ones: its defaults (every 10 s) leave the API down ~10 s after a
    replica dies and ~25 s after the proxy does. The replica's period is a deployment
    option; the proxy's is the controller's environment, so it applies only when this
    call starts Serve (a running controller keeps its own)."""
    env_vars, secrets = worker_env.split(telemetry.configured_env())
    secrets_key = f"ingress:{settings.namespace}"
    worker_env.publish(
        secrets_key,
        secrets
        | {
            "RAYVISOR_DATABASE_URL": settings.database_dsn or "",
            "RAYVISOR_NATS_URL": settings.nats_servers or "",
        },
    )
    proxy_check = str(settings.http.proxy_health_check_period_s)
    serve.start(
        http_options={"host": settings.http_host, "port": settings.http_port},
        controller_options={
            "runtime_env": {
                "env_vars": {
                    "RAY_SERVE_PROXY_HEALTH_CHECK_PERIOD_S": proxy_check,
                    # a new proxy slower to start than this is killed and started again,
                    # each time with a longer bound (5 s by default: often, on 2 busy cores)
                    "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "30",
                }
            }
        },
    )
    app = Ingress.options(
        num_replicas=settings.http.replicas,
        max_ongoing_requests=settings.http.max_ongoing_requests,
        health_check_period_s=settings.http.health_check_period_s,
        health_check_timeout_s=settings.http.health_check_timeout_s,
        ray_actor_options={
            "num_cpus": 0,
            "runtime_env": {"env_vars": env_vars},
        },
    ).bind(settings.model_dump(mode="json", exclude=_SECRET_FIELDS), secrets_key)
    serve.run(app, name=APP_NAME, route_prefix="/", blocking=blocking)
    return settings.http_url


def undeploy() -> None:
    serve.delete(APP_NAME)
