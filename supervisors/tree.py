"""The supervision tree: built from `rayvisor.yaml` (or Python), started as `sup:root`.

```
sup:root                 one_for_one, detached, restarted by Ray (max_restarts=-1)
  sup:core               one_for_one: the task manager shards, the Aggregator, the relay
  sup:agents             one_for_one: one pool supervisor per agent template
    sup:pool:<template>  simple_one_for_one: agent:<template>-1 .. N (+ standby spares)
  retention              purges old records every `retention.interval_s` (unless `days: 0`)
```

The root is detached and restarted by Ray when its process dies; it then starts its
tree again from the same spec, and each pool restores its members from PostgreSQL.
A dead supervisor's subtree dies with it (Ray owner fate-sharing) and is started again
by its restarted self.

The core (the task manager shards, the Aggregator, the relay) is what takes tasks, so it
is never parked: its children and the root's two children have no circuit breaker; past its
intensity `sup:core` escalates and the root starts it again. Its intensity is generous (at least
`_CORE_RESTARTS_PER_CHILD` per child per period) and its backoff short (at most
`_CORE_MAX_BACKOFF_S`), so repeated kills of its children are restarted within seconds
without escalating the root into a loop.
"""

from __future__ import annotations

from typing import Any, Literal, Self

import ray
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from runtime.config import Settings, format_validation_error
from runtime.errors import ConfigError
from runtime.models.records import AgentTemplate
from runtime.store import agents as agent_store
from supervisors.spec import (
    BackoffSpec,
    BreakerSpec,
    ChildSpec,
    HeartbeatSpec,
    OnIntensity,
    Restart,
    Strategy,
    SupervisorSpec,
)
from supervisors.supervisor import Supervisor, remote_class

__all__ = [
    "DEFAULT_TREE",
    "ROOT_NAME",
    "PoolSpec",
    "TreeSpec",
    "build_root_spec",
    "check_tree",
    "get_root",
    "pool_actor_name",
    "pool_supervisor_id",
    "resolve_pool_templates",
    "retention_child",
    "start_tree",
    "stop_tree",
    "template_pool",
    "tree_from_settings",
]

ROOT_NAME = "sup:root"
_CORE_RESTARTS_PER_CHILD = 20
_CORE_MAX_BACKOFF_S = 2.0
# a supervisor's start is its subtree's start (a pool's members start together, at most 8
# at a time): far longer than one worker's, and never worth killing as hung
_SUPERVISOR_START_TIMEOUT_S = 600.0


class PoolSpec(BaseModel):
    """One agent pool in rayvisor.yaml: a template and how many to run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    agent: str | None = Field(
        None, min_length=3, description="`module:Class` of the Agent subclass"
    )
    template: str | None = Field(
        None,
        pattern=r"^[a-z][a-z0-9_]{0,62}$",
        description="A template registered over the API (instead of `agent`); `up` reads it",
    )
    size: int = Field(1, ge=0, le=1000)
    num_cpus: float = Field(0.0, ge=0, le=1024, description="Ray CPUs each agent takes")
    placement: Literal["default", "spread"] = Field(
        "default",
        description="`spread`: agents round robin over the cluster's nodes (Ray's SPREAD), so"
        " losing a node loses only its share; `default`: Ray's default (a 0-CPU agent stays"
        " on its pool supervisor's node)",
    )
    standby: int = Field(0, ge=0, le=100)
    restart: Restart = Restart.PERMANENT
    params: dict[str, Any] = Field(default_factory=dict)
    max_restarts: int | None = Field(None, ge=0)
    period_s: float | None = Field(None, gt=0)
    on_intensity: OnIntensity | None = None
    backoff: BackoffSpec | None = None
    heartbeat: HeartbeatSpec | None = None
    breaker: BreakerSpec | None = None

    @model_validator(mode="after")
    def _agent_or_template(self) -> Self:
        if (self.agent is None) == (self.template is None):
            raise ValueError("give exactly one of agent (a class) or template (a registered one)")
        return self

    def with_template(self, template: AgentTemplate) -> PoolSpec:
        """This pool with its template's class, parameters (under the pool's own) and CPUs."""
        return self.model_copy(
            update={
                "agent": template.class_path,
                "template": None,
                "params": {**template.parameters, **self.params},
                "num_cpus": self.num_cpus or float(template.resources.get("num_cpus", 0.0)),
            }
        )


class TreeSpec(BaseModel):
    """The `tree:` section of rayvisor.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pools: list[PoolSpec] = Field(default_factory=list)
    relay: bool = True
    aggregator: bool = True

    @model_validator(mode="after")
    def _unique(self) -> Self:
        ids = [p.id for p in self.pools]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"pool ids must be unique: {duplicates}")
        return self


def _policies(settings: Settings) -> dict[str, Any]:
    s = settings.supervision
    return {
        "max_restarts": s.max_restarts,
        "period_s": s.period_s,
        "backoff": BackoffSpec(
            min_s=s.min_backoff_s,
            max_s=s.max_backoff_s,
            jitter=s.backoff_jitter,
            reset_after_s=s.backoff_reset_after_s,
        ),
        "heartbeat": HeartbeatSpec(**s.heartbeat.model_dump()),
        "breaker": BreakerSpec(
            failure_threshold=s.failure_threshold,
            reset_timeout_s=s.reset_timeout_s,
            max_reset_timeout_s=s.max_reset_timeout_s,
        ),
    }


_SECTIONS = ("backoff", "heartbeat", "breaker")


def pool_supervisor_id(template: str) -> str:
    """The id of the pool supervisor that runs `template` (`pool-log-analysis`)."""
    return f"pool-{template}".replace("_", "-")


def pool_actor_name(template: str) -> str:
    """Its Ray actor name (`sup:pool:log_analysis`)."""
    return f"sup:pool:{template}"


def _pool_child(pool: PoolSpec, defaults: dict[str, Any], extras: dict[str, Any]) -> ChildSpec:
    if pool.agent is None:
        raise ConfigError(
            f"pool {pool.id} names template {pool.template!r}: read it first"
            " (resolve_pool_templates)",
            field="tree.pools",
        )
    """A pool supervisor; the pool's own policy keys override the defaults key by key.

    `extras` (the tools and the model catalog) travel in the spec, so every agent host on
    every node uses the driver's `rayvisor.yaml`, not whatever its worker's environment
    holds."""
    overrides: dict[str, Any] = {
        k: v
        for k, v in pool.model_dump(include={"max_restarts", "period_s", "on_intensity"}).items()
        if v is not None
    }
    for section in _SECTIONS:
        given = getattr(pool, section)
        if given is not None:
            merged = {**defaults[section].model_dump(), **given.model_dump(exclude_unset=True)}
            overrides[section] = merged
    supervisor = SupervisorSpec.model_validate(
        {
            **defaults,
            **overrides,
            "id": pool_supervisor_id(pool.id),
            "strategy": Strategy.SIMPLE_ONE_FOR_ONE,
            "template": {
                "id": pool.id.replace("_", "-"),
                "agent": pool.agent,
                "template": pool.id,
                "params": pool.params,
                "kwargs": extras,
                "num_cpus": pool.num_cpus,
                "placement": pool.placement,
                "restart": pool.restart,
            },
            "size": pool.size,
            "standby": pool.standby,
        }
    )
    return ChildSpec(
        id=supervisor.id,
        supervisor=supervisor,
        name=pool_actor_name(pool.id),
        start_timeout_s=_SUPERVISOR_START_TIMEOUT_S,
    )


def _core_policies(defaults: dict[str, Any], children: int) -> dict[str, Any]:
    """The defaults, with room for a core child killed every few seconds (e.g. 10 restarts
    a minute for a task manager killed every 10 s and a relay every 15 s) and a backoff
    that brings it back within seconds."""
    backoff: BackoffSpec = defaults["backoff"]
    max_s = min(backoff.max_s, _CORE_MAX_BACKOFF_S)
    return {
        **defaults,
        "max_restarts": max(defaults["max_restarts"], _CORE_RESTARTS_PER_CHILD * children),
        "backoff": backoff.model_copy(update={"min_s": min(backoff.min_s, max_s), "max_s": max_s}),
    }


def build_root_spec(tree: TreeSpec, settings: Settings) -> SupervisorSpec:
    """The whole tree as one spec: root -> core, agents -> one pool per template."""
    defaults = _policies(settings)
    extras = _host_extras(settings)
    core_children = [
        ChildSpec(
            id=f"tm-{shard}",
            actor="actors.task_manager:TaskManager",
            kwargs={"shard": shard, "shards": settings.task_shards},
            name=f"tm:{shard}",
            circuit_breaker=False,
        )
        for shard in range(settings.task_shards)
    ]
    if tree.aggregator:
        core_children.append(
            ChildSpec(
                id="agg-0",
                actor="actors.aggregator:Aggregator",
                name="agg:0",
                circuit_breaker=False,
            )
        )
    if tree.relay:
        core_children.append(
            ChildSpec(id="relay", actor="actors.relay:OutboxRelayActor", circuit_breaker=False)
        )
    core = SupervisorSpec(
        id="core", children=core_children, **_core_policies(defaults, len(core_children))
    )
    agents = SupervisorSpec(
        id="agents", children=[_pool_child(p, defaults, extras) for p in tree.pools], **defaults
    )
    children = [
        ChildSpec(
            id=name,
            supervisor=spec,
            circuit_breaker=False,
            start_timeout_s=_SUPERVISOR_START_TIMEOUT_S,
        )
        for name, spec in (("core", core), ("agents", agents))
    ]
    retention = retention_child(settings)
    if retention is not None:
        children.append(retention)
    return SupervisorSpec(id="root", children=children, **defaults)


def retention_child(settings: Settings) -> ChildSpec | None:
    """The retention job (`actors.retention`), none when records are kept forever. It keeps
    its breaker: a job that keeps failing is parked, never escalated into the root (which
    would restart the whole tree for housekeeping)."""
    retention = settings.retention
    if not retention.days:
        return None
    return ChildSpec(
        id="retention",
        actor="actors.retention:RetentionActor",
        kwargs=retention.model_dump(),
        shutdown_s=10.0,
    )


DEFAULT_TREE: dict[str, Any] = {
    "pools": [
        {"id": "planning", "agent": "actors.builtin.planning:PlanningAgent", "size": 1},
        {"id": "chunking", "agent": "actors.builtin.chunking:ChunkingAgent", "size": 1},
        {
            "id": "log_analysis",
            "agent": "actors.builtin.log_analysis:LogAnalysisAgent",
            "size": 2,
        },
        {"id": "reduce", "agent": "actors.builtin.reduce:ReduceAgent", "size": 1},
        {"id": "echo", "agent": "actors.builtin.echo:EchoAgent", "size": 1},
        {"id": "tool", "agent": "actors.builtin.tool_caller:ToolCallerAgent", "size": 1},
    ]
}
"""The tree without a `tree:` section: one pool of each built-in agent, so a project (or
`rayvisor analyze`) runs out of the box."""


def check_tree(settings: Settings) -> TreeSpec:
    """The `tree:` section, validated, each pool's agent class imported (templates not read
    yet); a ConfigError naming the field (`tree.pools.0.agent`) otherwise."""
    try:
        tree = TreeSpec.model_validate(
            settings.tree if settings.tree is not None else _default_tree(settings)
        )
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "tree", prefix="tree")) from None
    from actors.host import import_agent_class  # the class the pool's agent hosts import

    for n, pool in enumerate(tree.pools):
        if pool.agent is not None:
            try:
                import_agent_class(pool.agent)
            except ConfigError as exc:
                raise ConfigError(exc.message, field=f"tree.pools.{n}.agent") from None
    return tree


LLM_POOL = {"id": "llm", "agent": "actors.builtin.llm:LlmAgent", "size": 1}
"""Part of the default tree when the model catalog names a model (and only then)."""


def _default_tree(settings: Settings) -> dict[str, Any]:
    if not settings.models:
        return DEFAULT_TREE
    return {**DEFAULT_TREE, "pools": [*DEFAULT_TREE["pools"], LLM_POOL]}


def tree_from_settings(settings: Settings) -> SupervisorSpec:
    """The tree of rayvisor.yaml's `tree:` section (`DEFAULT_TREE`, with the `llm` agent
    when a model is configured, when there is none); a ConfigError names any bad field."""
    try:
        tree = TreeSpec.model_validate(
            settings.tree if settings.tree is not None else _default_tree(settings)
        )
        return build_root_spec(tree, settings)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "tree", prefix="tree")) from None


def template_pool(template: AgentTemplate, settings: Settings, size: int = 1) -> ChildSpec:
    """A pool of `size` agents of a registered template, to add under `sup:agents` at run
    time (`POST /api/v1/agents` for a template no pool runs)."""
    pool = PoolSpec(id=template.name, template=template.name, size=size).with_template(template)
    return _pool_child(pool, _policies(settings), _host_extras(settings))


def _host_extras(settings: Settings) -> dict[str, Any]:
    """What every agent host gets from the driver's settings: tools and models."""
    return {
        "tools": settings.tools.model_dump(mode="json"),
        "models": {name: m.model_dump(mode="json") for name, m in settings.models.items()},
    }


async def resolve_pool_templates(settings: Settings, conn: Any) -> Settings:
    """Settings whose pools that name a registered template get its class and parameters;
    a ConfigError names a template that is not registered."""
    tree = check_tree(settings)
    pools = []
    for pool in tree.pools:
        if pool.template is None:
            pools.append(pool)
            continue
        template = await agent_store.get_template_by_name(conn, pool.template)
        if template is None:
            raise ConfigError(
                f"pool {pool.id}: no template named {pool.template!r} is registered",
                field="tree.pools",
            )
        pools.append(pool.with_template(template))
    resolved = tree.model_copy(update={"pools": pools}).model_dump(mode="json")
    return settings.model_copy(update={"tree": resolved})


def get_root(namespace: str) -> Any | None:
    try:
        return ray.get_actor(ROOT_NAME, namespace=namespace)
    except ValueError:
        return None


def start_tree(spec: SupervisorSpec, namespace: str, timeout_s: float = 300) -> Any:
    """Start `sup:root` (detached, restarted by Ray) or reuse the running one."""
    root = get_root(namespace)
    if root is None:
        root = (
            remote_class(Supervisor)
            .options(
                name=ROOT_NAME,
                namespace=namespace,
                lifetime="detached",
                max_restarts=-1,
                num_cpus=0,
                get_if_exists=True,
            )
            .remote(spec.model_dump(mode="json"), namespace, autostart=True)
        )
    ray.get(root.wait_started.remote(), timeout=timeout_s)
    return root


def stop_tree(namespace: str, timeout_s: float = 120) -> bool:
    """Stop the whole tree gracefully (children in reverse order), then the root."""
    root = get_root(namespace)
    if root is None:
        return False
    try:
        ray.get(root.rv_stop.remote(), timeout=timeout_s)
    finally:
        ray.kill(root, no_restart=True)
    return True
