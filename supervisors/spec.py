"""Child and supervisor specs: data, validated once where a tree or a child is made.

As in OTP's `check_childspec`, every default sits here and an invalid spec is refused
with the field and the reason, before anything starts.

- `restart`: `permanent` children are always restarted, `transient` ones only after an
  abnormal exit (a crash, a hang, a fatal error), `temporary` ones never.
- `shutdown_s`: how long a graceful stop may take before the child is killed.
- `start_timeout_s`: how long its start (process start and `on_start`) may take; past it
  the half-started actor is killed and the start counts as a failure (restarted with
  backoff), without holding up siblings.
- `placement`: where Ray puts the child's actor: `default` (Ray's hybrid policy) or
  `spread` (Ray's SPREAD: round robin over the live nodes, so one node's loss takes only
  its share). A restart places the child again by the same rule, on a surviving node.
- `circuit_breaker`: False for a child that must never be parked behind an open circuit
  (the task managers, the relay): past the intensity its supervisor escalates (or, under
  `circuit_break`, keeps restarting it on its capped backoff).
- Strategies: `one_for_one` restarts the failed child; `one_for_all` all children;
  `rest_for_one` the failed child and those started after it; `simple_one_for_one` is a
  dynamic pool of children made from one `template`, resizable at run time.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "BackoffSpec",
    "BreakerSpec",
    "ChildKind",
    "ChildSpec",
    "HeartbeatSpec",
    "OnIntensity",
    "Restart",
    "Strategy",
    "SupervisorSpec",
]

ChildId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,100}$")]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Restart(StrEnum):
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


class Strategy(StrEnum):
    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"
    SIMPLE_ONE_FOR_ONE = "simple_one_for_one"


class OnIntensity(StrEnum):
    ESCALATE = "escalate"  # OTP: stop the children, fail, let the parent decide
    CIRCUIT_BREAK = "circuit_break"  # contain it: open the failing child's circuit


class ChildKind(StrEnum):
    WORKER = "worker"
    SUPERVISOR = "supervisor"


class BackoffSpec(_Spec):
    """Restarts of one child wait min_s * 2^n (capped, jittered); n resets after a healthy run."""

    min_s: float = Field(0.0, ge=0)
    max_s: float = Field(10.0, ge=0)
    jitter: float = Field(0.2, ge=0, lt=1)
    reset_after_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.max_s < self.min_s:
            raise ValueError("max_s must be >= min_s")
        return self


class HeartbeatSpec(_Spec):
    """A child is hung after `misses` pings in a row fail, time out or see a stalled loop."""

    interval_s: float = Field(1.0, gt=0, le=300)
    timeout_s: float = Field(2.0, gt=0, le=600)
    misses: int = Field(3, ge=1, le=100)


class BreakerSpec(_Spec):
    """After `failure_threshold` failures in a row a child's circuit opens (no restart, no work)."""

    failure_threshold: int = Field(5, ge=1)
    reset_timeout_s: float = Field(10.0, gt=0)
    max_reset_timeout_s: float = Field(300.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.max_reset_timeout_s < self.reset_timeout_s:
            raise ValueError("max_reset_timeout_s must be >= reset_timeout_s")
        return self


class ChildSpec(_Spec):
    """One child: what to start (exactly one of actor, agent, supervisor) and how to treat it."""

    id: ChildId
    actor: str | None = Field(None, description="`module:Class` of a Supervised actor")
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    agent: str | None = Field(None, description="`module:Class` of an Agent, run in an AgentHost")
    template: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    supervisor: SupervisorSpec | None = None
    restart: Restart = Restart.PERMANENT
    shutdown_s: float = Field(5.0, ge=0, le=3600)
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_:.-]{1,200}$")
    num_cpus: float = Field(0.0, ge=0)
    start_timeout_s: float = Field(60.0, gt=0, le=3600)
    circuit_breaker: bool = True
    placement: Literal["default", "spread"] = "default"

    @model_validator(mode="after")
    def _one_thing_to_start(self) -> Self:
        given = [f for f in ("actor", "agent", "supervisor") if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of actor, agent, supervisor (got {given or 'none'})"
            )
        if self.supervisor is not None and self.supervisor.id != self.id:
            object.__setattr__(
                self, "supervisor", self.supervisor.model_copy(update={"id": self.id})
            )
        return self

    @property
    def kind(self) -> ChildKind:
        return ChildKind.SUPERVISOR if self.supervisor is not None else ChildKind.WORKER

    @property
    def actor_name(self) -> str:
        """The Ray actor name, so the dashboard's actor list reads as the tree."""
        if self.name:
            return self.name
        if self.supervisor is not None:
            return f"sup:{self.id}"
        if self.agent is not None:
            return f"agent:{self.id}"
        return self.id

    def with_id(self, child_id: str) -> ChildSpec:
        """A copy for one member of a pool."""
        return ChildSpec.model_validate({**self.model_dump(exclude={"name"}), "id": child_id})


class SupervisorSpec(_Spec):
    """A supervisor: its strategy, its children (or a pool template) and its policies."""

    id: ChildId
    strategy: Strategy = Strategy.ONE_FOR_ONE
    children: list[ChildSpec] = Field(default_factory=list)
    template: ChildSpec | None = Field(None, description="simple_one_for_one: the pool's child")
    size: int = Field(0, ge=0, le=10_000, description="simple_one_for_one: children at start")
    standby: int = Field(0, ge=0, le=100, description="pre-started spare actors")
    warm_workers: int = Field(
        1, ge=0, le=16, description="idle Ray worker processes kept so a restart skips start-up"
    )
    max_restarts: int = Field(10, ge=0)
    period_s: float = Field(60.0, gt=0)
    on_intensity: OnIntensity = OnIntensity.ESCALATE
    backoff: BackoffSpec = BackoffSpec()
    heartbeat: HeartbeatSpec = HeartbeatSpec()
    breaker: BreakerSpec = BreakerSpec()

    @model_validator(mode="after")
    def _shape(self) -> Self:
        ids = [c.id for c in self.children]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"child ids must be unique: {duplicates}")
        if self.strategy is Strategy.SIMPLE_ONE_FOR_ONE:
            if self.template is None:
                raise ValueError("simple_one_for_one needs a template")
            if self.children:
                raise ValueError("simple_one_for_one takes a template, not children")
        elif self.template is not None or self.size or self.standby:
            raise ValueError("template, size and standby are for simple_one_for_one only")
        return self

    def pool_child_id(self, n: int) -> str:
        assert self.template is not None
        return f"{self.template.id}-{n}"


ChildSpec.model_rebuild()
