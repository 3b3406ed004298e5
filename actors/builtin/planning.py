"""`PlanningAgent` (capability `planning`): a project's requirements in, a task graph out.

Rule-based and offline (seed Berrys' planner, without the model):

- Structured requirements (objects with `name`, `title`, `capability` or `fan_out`,
  `parameters`, `after`) are taken as the plan's steps, as written.
- A log investigation (a requirement that speaks of logs, an incident or an attack, and
  `inputs.paths` naming log files) becomes: per file, chunk it and analyse the chunks in
  parallel, then reduce them (one fan-out step per file); then `correlate` across files;
  then `report`, the project's summary.
- Anything else is refused with the requirement named: a planner that guesses makes
  tasks nobody asked for.

The plan is checked again by the Aggregator (a DAG, capabilities some template offers),
because a plan may come from a model one day, and a model's output is input.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from actors.agent import Agent, AgentContext
from runtime.errors import LogicalError
from runtime.models.plans import Plan

__all__ = ["PlanningAgent", "plan_project"]

_INVESTIGATION = re.compile(r"\b(logs?|incident|attack|intrusion|brute.?force|investigat)", re.I)
DEFAULT_CHUNKS = 8


class _Inputs(BaseModel):
    model_config = ConfigDict(extra="allow")

    paths: list[str] = Field(default_factory=list, max_length=100)
    chunks: int = Field(default=DEFAULT_CHUNKS, ge=1, le=1_000)
    overlap_lines: int = Field(default=0, ge=0, le=1_000)
    format: str | None = None
    top_n: int = Field(default=10, ge=1, le=1_000)
    extra_agents: int = Field(default=0, ge=0, le=32)
    """Extra `log_analysis` agents spawned for the project's life."""
    pace_s: float = Field(default=0.0, ge=0.0, le=60.0)
    """Each chunk's analysis takes at least this long (a demo, so it can be watched)."""


def plan_project(requirements: list[Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """The plan for these requirements (a `Plan` as JSON); LogicalError naming what
    cannot be planned."""
    if not requirements:
        raise LogicalError("requirements: nothing to plan")
    structured = [r for r in requirements if isinstance(r, dict)]
    if structured and len(structured) == len(requirements):
        return {"steps": structured, **_plan_options(inputs)}  # checked by the Aggregator
    sentences = [r for r in requirements if isinstance(r, str)]
    if structured:
        raise LogicalError("requirements: give all as steps (objects) or all as sentences")
    if any(_INVESTIGATION.search(s) for s in sentences):
        return _investigation(inputs)
    raise LogicalError(
        f"no rule plans requirement {sentences[0]!r}: give steps (objects with name,"
        " title, capability, after) or a log investigation with inputs.paths"
    )


def _plan_options(inputs: dict[str, Any]) -> dict[str, Any]:
    return {k: inputs[k] for k in ("summary", "agents") if k in inputs}


def _investigation(raw_inputs: dict[str, Any]) -> dict[str, Any]:
    try:
        inputs = _Inputs.model_validate(raw_inputs)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise LogicalError(f"inputs.{where}: {first['msg']}") from None
    if not inputs.paths:
        raise LogicalError("inputs.paths: a log investigation needs the log files to read")
    steps: list[dict[str, Any]] = []
    names: list[str] = []
    for index, path in enumerate(inputs.paths):
        name = f"analyse-{index + 1}-{_slug(Path(path).name)}"
        names.append(name)
        source = Path(path).name
        chunk_parameters: dict[str, Any] = {"share": False, "source": source}
        if inputs.format:
            chunk_parameters["format"] = inputs.format
        if inputs.pace_s:
            chunk_parameters["pace_s"] = inputs.pace_s
        steps.append(
            {
                "name": name,
                "title": f"Analyse {source} in {inputs.chunks} chunks",
                "fan_out": {
                    "chunking": "chunking",
                    "chunking_parameters": {
                        "path": path,
                        "chunks": inputs.chunks,
                        "overlap_lines": inputs.overlap_lines,
                    },
                    "capability": "log_analysis",
                    "chunk_parameters": chunk_parameters,
                    "reduce": "reduce",
                    "reduce_parameters": {
                        "mode": "merge",
                        "share": True,
                        "top_n": inputs.top_n,
                        "source": source,
                    },
                },
            }
        )
    steps.append(
        {
            "name": "correlate",
            "title": "Correlate findings across sources",
            "capability": "log_analysis",
            "parameters": {"mode": "correlate", "top_n": inputs.top_n},
            "after": names,
        }
    )
    steps.append(
        {
            "name": "report",
            "title": "Write the incident report",
            "capability": "reduce",
            "parameters": {"mode": "report", "top_n": inputs.top_n, "share": False},
            "after": [*names, "correlate"],
        }
    )
    plan: dict[str, Any] = {"steps": steps, "summary": "report"}
    if inputs.extra_agents:
        plan["agents"] = {"log_analysis": inputs.extra_agents}
    return _validated(plan)


def _validated(plan: dict[str, Any]) -> dict[str, Any]:
    try:
        return Plan.model_validate(plan).model_dump(mode="json", exclude_none=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise LogicalError(f"plan: {where}: {first['msg']}") from None


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:40] or "input"


class PlanningAgent(Agent):
    """Turns a project's requirements into a plan (rule-based; see the module doc)."""

    capabilities = frozenset({"planning"})
    prefetch = 4

    async def handle(self, task: dict[str, Any], ctx: AgentContext) -> dict[str, Any]:
        params = task.get("parameters") or {}
        requirements = params.get("requirements")
        inputs = params.get("inputs") or {}
        if not isinstance(requirements, list):
            raise LogicalError("requirements: must be a list")
        if not isinstance(inputs, dict):
            raise LogicalError("inputs: must be an object")
        return plan_project(requirements, inputs)
