"""Plans and fan-out specs: what the Aggregator refuses before anything runs, and what the
rule-based planner makes of requirements."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from actors.builtin.planning import plan_project
from actors.projects import compile_results
from runtime.errors import LogicalError
from runtime.models.api import TaskCreate
from runtime.models.plans import FanOut, Plan


def step(name: str, after: list[str] | None = None, capability: str = "echo") -> dict:
    return {"name": name, "title": name, "capability": capability, "after": after or []}


def test_layers_put_each_step_after_what_it_needs() -> None:
    plan = Plan.model_validate(
        {"steps": [step("report", ["a", "b"]), step("b", ["a"]), step("a"), step("c")]}
    )
    assert [[s.name for s in layer] for layer in plan.layers()] == [["a", "c"], ["b"], ["report"]]
    assert plan.summary_step() == "report"


def test_a_cycle_is_refused_naming_it() -> None:
    with pytest.raises(
        ValidationError, match=r"not a DAG: a -> c -> b -> a \(each waits for the next\)"
    ):
        Plan.model_validate({"steps": [step("a", ["c"]), step("b", ["a"]), step("c", ["b"])]})


@pytest.mark.parametrize(
    ("steps", "reason"),
    [
        ([step("a", ["nope"])], "unknown steps \\['nope'\\]"),
        ([step("a"), step("a")], "unique: \\['a'\\]"),
        ([{"name": "a", "title": "a"}], "exactly one of capability and fan_out"),
        ([step("Bad Name")], "string_pattern_mismatch|should match pattern"),
        ([], "at least 1 item"),
    ],
)
def test_bad_plans_are_refused_with_the_reason(steps: list, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        Plan.model_validate({"steps": steps})


def test_a_fan_out_task_is_the_aggregators_and_names_its_chunk_capability() -> None:
    task = TaskCreate.model_validate({"title": "t", "fan_out": {"capability": "log_analysis"}})
    assert task.required_capabilities == ["fan_out"]
    assert task.fan_out is not None and task.fan_out.capabilities() == {
        "chunking", "log_analysis", "reduce"
    }  # fmt: skip
    with pytest.raises(ValidationError, match="required_capabilities"):
        TaskCreate.model_validate(
            {"title": "t", "required_capabilities": ["x"], "fan_out": {"capability": "y"}}
        )
    with pytest.raises(ValidationError, match=r"fan_out\.capability"):
        TaskCreate.model_validate({"title": "t", "fan_out": {}})
    with pytest.raises(ValidationError, match="max_chunks"):
        FanOut.model_validate({"capability": "x", "max_chunks": 0})


def test_a_log_investigation_is_planned_chunk_analyse_reduce_correlate_report() -> None:
    plan = Plan.model_validate(
        plan_project(
            ["Investigate the SSH incident in these logs"],
            {"paths": ["/logs/OpenSSH_2k.log", "/logs/auth.log"], "chunks": 8},
        )
    )
    names = [[s.name for s in layer] for layer in plan.layers()]
    assert names == [
        ["analyse-1-openssh-2k-log", "analyse-2-auth-log"],
        ["correlate"],
        ["report"],
    ]
    first = plan.steps[0].fan_out
    assert first is not None
    assert first.chunking_parameters == {"path": "/logs/OpenSSH_2k.log", "chunks": 8,
                                         "overlap_lines": 0}  # fmt: skip
    assert (first.chunking, first.capability, first.reduce) == (
        "chunking",
        "log_analysis",
        "reduce",
    )
    assert plan.summary_step() == "report"
    assert plan.capabilities() == {"chunking", "log_analysis", "reduce"}


@pytest.mark.parametrize(
    ("requirements", "inputs", "reason"),
    [
        (["make me a sandwich"], {}, "no rule plans requirement 'make me a sandwich'"),
        (["investigate the logs"], {}, "inputs.paths"),
        (["investigate the logs"], {"paths": ["/x"], "chunks": 0}, "inputs.chunks"),
        ([], {}, "nothing to plan"),
        (["analyse logs", step("a")], {}, "all as steps"),
    ],
)
def test_what_cannot_be_planned_is_refused_naming_it(
    requirements: list, inputs: dict, reason: str
) -> None:
    with pytest.raises(LogicalError, match=reason):
        plan_project(requirements, inputs)


def test_structured_requirements_are_the_plan_as_written() -> None:
    steps = [step("a"), step("b", ["a"])]
    assert plan_project(steps, {"summary": "a"}) == {"steps": steps, "summary": "a"}


def test_compiled_results_name_each_step_and_the_summary() -> None:
    plan = Plan.model_validate({"steps": [step("a"), step("b", ["a"])]})
    rows = {
        "a": {"id": "1", "status": "completed", "result": {"x": 1}, "error": None},
        "b": {"id": "2", "status": "completed", "result": "done", "error": None},
    }
    compiled = compile_results(plan, rows)
    assert compiled["summary"] == "done" and compiled["summary_step"] == "b"
    assert compiled["steps"]["a"] == {"task_id": "1", "status": "completed", "result": {"x": 1},
                                      "error": None}  # fmt: skip
