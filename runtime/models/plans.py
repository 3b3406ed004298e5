"""What a fan-out asks for, and what a planner returns for a project.

A plan comes from an agent (rule-based, or a language model), so it is input like any
other: it is validated here before a task is made from it. `Plan.order()` is the check
that matters most: a plan whose steps depend on each other in a cycle, or on a step that
does not exist, is refused with the reason, and nothing of it runs.
"""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from runtime.models.common import Capability

__all__ = ["FAN_OUT_CAPABILITY", "FanOut", "Plan", "PlanStep"]

FAN_OUT_CAPABILITY = "fan_out"
"""The capability the Aggregator offers: a task with `fan_out` is leased to it."""

_STEP_NAME = r"^[a-z][a-z0-9_-]{0,62}$"


class FanOut(BaseModel):
    """Split a task into chunks that run in parallel, then reduce their results.

    The `chunking` task returns `{"chunks": [params, ...]}`; each chunk becomes a task of
    `capability` with `{**chunk_parameters, **chunk}`; the `reduce` task gets the chunks'
    results, in order, as `results`, and its result is the parent's.
    """

    model_config = ConfigDict(extra="forbid")

    chunking: Capability = "chunking"
    chunking_parameters: dict[str, Any] = Field(default_factory=dict)
    capability: Capability
    chunk_parameters: dict[str, Any] = Field(default_factory=dict)
    reduce: Capability = "reduce"
    reduce_parameters: dict[str, Any] = Field(default_factory=dict)
    max_chunks: int = Field(default=256, ge=1, le=10_000)

    def capabilities(self) -> set[str]:
        return {self.chunking, self.capability, self.reduce}


class PlanStep(BaseModel):
    """One task of a project: what it needs, and the steps whose results it waits for."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_STEP_NAME)
    title: str = Field(default="", max_length=500)
    """The task's title; the step's name when not given."""
    capability: Capability | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    after: list[str] = Field(default_factory=list, max_length=200)
    fan_out: FanOut | None = None
    priority: int = Field(default=5, ge=0, le=9)
    max_attempts: int = Field(default=3, ge=1, le=100)

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if (self.capability is None) == (self.fan_out is None):
            raise ValueError(f"step {self.name}: give exactly one of capability and fan_out")
        if not self.title:
            self.title = self.name
        return self

    def capabilities(self) -> set[str]:
        return self.fan_out.capabilities() if self.fan_out else {self.capability or ""}


class Plan(BaseModel):
    """Steps with dependencies (a DAG); `summary` names the step whose result is the
    project's summary (default: the last step in order); `agents` asks for extra agents
    (by template) for the project's life, released when it ends."""

    model_config = ConfigDict(extra="forbid")

    steps: list[PlanStep] = Field(min_length=1, max_length=200)
    summary: str | None = None
    agents: dict[str, int] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        names = [s.name for s in self.steps]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"step names must be unique: {twice}")
        for step in self.steps:
            unknown = [a for a in step.after if a not in names]
            if unknown:
                raise ValueError(f"step {step.name} comes after unknown steps {unknown}")
        if self.summary is not None and self.summary not in names:
            raise ValueError(f"summary names no step: {self.summary!r}")
        for template, count in self.agents.items():
            if not 0 <= count <= 32:
                raise ValueError(f"agents.{template}: between 0 and 32, got {count}")
        self.layers()  # a cycle is refused here
        return self

    def layers(self) -> list[list[PlanStep]]:
        """The steps in dependency order, as layers whose steps depend only on earlier
        layers; ValueError naming a cycle if there is one (Kahn's algorithm)."""
        by_name = {s.name: s for s in self.steps}
        left = {s.name: set(s.after) for s in self.steps}
        layers: list[list[PlanStep]] = []
        while left:
            ready = sorted(n for n, deps in left.items() if not deps)
            if not ready:
                raise ValueError(f"the plan is not a DAG: {_cycle(left)} (each waits for the next)")
            layers.append([by_name[n] for n in ready])
            for name in ready:
                del left[name]
            for deps in left.values():
                deps.difference_update(ready)
        return layers

    def summary_step(self) -> str:
        return self.summary or self.layers()[-1][-1].name

    def capabilities(self) -> set[str]:
        return {c for s in self.steps for c in s.capabilities()}


def _cycle(left: dict[str, set[str]]) -> str:
    """One cycle among the steps left, as `a -> b -> a`."""
    start = min(left)
    path, seen = [start], {start}
    node = start
    while True:
        node = min(d for d in left[node] if d in left)
        if node in seen:
            loop = path[path.index(node) :]
            return " -> ".join([*loop, node])
        path.append(node)
        seen.add(node)
