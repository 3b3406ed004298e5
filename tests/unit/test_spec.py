"""Child and supervisor specs, restart strategies and the yaml tree: pure, no Ray started."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from runtime.config import Settings, load_settings
from runtime.errors import ConfigError
from supervisors.spec import (
    BackoffSpec,
    BreakerSpec,
    ChildKind,
    ChildSpec,
    HeartbeatSpec,
    Restart,
    Strategy,
    SupervisorSpec,
)
from supervisors.strategies import restart_targets
from supervisors.supervisor import _import
from supervisors.tree import PoolSpec, TreeSpec, build_root_spec, tree_from_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No RAYVISOR_* variable or rayvisor.yaml of the machine leaks into the settings."""
    for name in list(os.environ):
        if name.startswith("RAYVISOR_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def worker(child_id: str, **extra: Any) -> ChildSpec:
    return ChildSpec(id=child_id, actor="tests.fake:Worker", **extra)


def errors_of(info: pytest.ExceptionInfo[ValidationError]) -> list[tuple[tuple[Any, ...], str]]:
    return [(tuple(e["loc"]), e["type"]) for e in info.value.errors()]


# ChildSpec


@pytest.mark.parametrize(
    ("fields", "got"),
    [
        ({}, "none"),
        ({"actor": "m:A", "agent": "m:B"}, "['actor', 'agent']"),
        ({"actor": "m:A", "supervisor": {"id": "s"}}, "['actor', 'supervisor']"),
        (
            {"actor": "m:A", "agent": "m:B", "supervisor": {"id": "s"}},
            "['actor', 'agent', 'supervisor']",
        ),
    ],
)
def test_child_needs_exactly_one_thing_to_start(fields: dict[str, Any], got: str) -> None:
    with pytest.raises(ValidationError) as info:
        ChildSpec.model_validate({"id": "c", **fields})
    [error] = info.value.errors()
    assert error["msg"] == (
        f"Value error, give exactly one of actor, agent, supervisor (got {got})"
    )


@pytest.mark.parametrize("field", ["actor", "agent"])
def test_child_with_one_thing_to_start_is_accepted(field: str) -> None:
    child = ChildSpec.model_validate({"id": "c", field: "m:C"})
    assert getattr(child, field) == "m:C"
    assert child.kind is ChildKind.WORKER
    assert child.restart is Restart.PERMANENT
    assert child.shutdown_s == 5.0


def test_child_unknown_field_is_refused_by_name() -> None:
    with pytest.raises(ValidationError) as info:
        ChildSpec.model_validate({"id": "c", "actor": "m:C", "restrat": "temporary"})
    assert errors_of(info) == [(("restrat",), "extra_forbidden")]


def test_supervisor_unknown_field_is_refused_by_name() -> None:
    with pytest.raises(ValidationError) as info:
        SupervisorSpec.model_validate({"id": "s", "stratgy": "one_for_all"})
    assert errors_of(info) == [(("stratgy",), "extra_forbidden")]


def test_restart_values() -> None:
    assert [r.value for r in Restart] == ["permanent", "transient", "temporary"]
    for value in ("permanent", "transient", "temporary"):
        assert worker("c", restart=value).restart is Restart(value)
    with pytest.raises(ValidationError) as info:
        worker("c", restart="sometimes")
    assert errors_of(info) == [(("restart",), "enum")]


def test_strategy_values() -> None:
    assert [s.value for s in Strategy] == [
        "one_for_one",
        "one_for_all",
        "rest_for_one",
        "simple_one_for_one",
    ]


def test_child_id_pattern() -> None:
    with pytest.raises(ValidationError) as info:
        worker("has space")
    assert errors_of(info) == [(("id",), "string_pattern_mismatch")]


def test_actor_name_per_kind() -> None:
    assert ChildSpec(id="w1", actor="m:A").actor_name == "w1"
    assert ChildSpec(id="a1", agent="m:Agent").actor_name == "agent:a1"
    assert ChildSpec(id="s1", supervisor=SupervisorSpec(id="s1")).actor_name == "sup:s1"
    assert ChildSpec(id="a1", agent="m:Agent", name="custom.name").actor_name == "custom.name"
    sup = ChildSpec(id="s1", supervisor=SupervisorSpec(id="s1"), name="sup:pool:x")
    assert sup.actor_name == "sup:pool:x"


def test_kind_and_nested_supervisor_takes_the_child_id() -> None:
    child = ChildSpec(id="outer", supervisor=SupervisorSpec(id="inner"))
    assert child.kind is ChildKind.SUPERVISOR
    assert child.supervisor is not None
    assert child.supervisor.id == "outer"


def test_with_id_copies_everything_but_id_and_name() -> None:
    template = ChildSpec(
        id="searcher",
        agent="agents.search:Searcher",
        template="searcher",
        params={"depth": 2},
        restart=Restart.TRANSIENT,
        shutdown_s=1.5,
        name="fixed-name",
        num_cpus=0.5,
    )
    member = template.with_id("searcher-3")
    assert member.id == "searcher-3"
    assert member.name is None
    assert member.actor_name == "agent:searcher-3"
    assert member.agent == "agents.search:Searcher"
    assert member.template == "searcher"
    assert member.params == {"depth": 2}
    assert member.restart is Restart.TRANSIENT
    assert member.shutdown_s == 1.5
    assert member.num_cpus == 0.5
    # The template is untouched (specs are frozen).
    assert template.id == "searcher"
    assert template.name == "fixed-name"


def test_with_id_validates_the_new_id() -> None:
    with pytest.raises(ValidationError):
        worker("w").with_id("bad id!")


def test_specs_are_frozen() -> None:
    child = worker("w")
    with pytest.raises(ValidationError):
        child.id = "other"  # type: ignore[misc]


# SupervisorSpec


def test_supervisor_defaults() -> None:
    spec = SupervisorSpec(id="s")
    assert spec.strategy is Strategy.ONE_FOR_ONE
    assert spec.children == []
    assert spec.max_restarts == 10
    assert spec.period_s == 60.0
    assert spec.heartbeat == HeartbeatSpec(interval_s=1.0, timeout_s=2.0, misses=3)
    assert spec.backoff == BackoffSpec(min_s=0.0, max_s=10.0, jitter=0.2, reset_after_s=30.0)
    assert spec.breaker == BreakerSpec(
        failure_threshold=5, reset_timeout_s=10.0, max_reset_timeout_s=300.0
    )


def test_duplicate_child_ids_are_refused() -> None:
    with pytest.raises(ValidationError) as info:
        SupervisorSpec(id="s", children=[worker("a"), worker("b"), worker("a"), worker("b")])
    [error] = info.value.errors()
    assert error["msg"] == "Value error, child ids must be unique: ['a', 'b']"


def test_simple_one_for_one_needs_a_template() -> None:
    with pytest.raises(ValidationError) as info:
        SupervisorSpec(id="pool", strategy=Strategy.SIMPLE_ONE_FOR_ONE)
    [error] = info.value.errors()
    assert error["msg"] == "Value error, simple_one_for_one needs a template"


def test_simple_one_for_one_takes_no_children() -> None:
    with pytest.raises(ValidationError) as info:
        SupervisorSpec(
            id="pool",
            strategy=Strategy.SIMPLE_ONE_FOR_ONE,
            template=worker("w"),
            children=[worker("x")],
        )
    [error] = info.value.errors()
    assert error["msg"] == "Value error, simple_one_for_one takes a template, not children"


def test_simple_one_for_one_pool() -> None:
    spec = SupervisorSpec(
        id="pool", strategy="simple_one_for_one", template=worker("w"), size=3, standby=2
    )
    assert spec.size == 3
    assert spec.standby == 2
    assert [spec.pool_child_id(n) for n in (1, 2, 3)] == ["w-1", "w-2", "w-3"]


@pytest.mark.parametrize("strategy", ["one_for_one", "one_for_all", "rest_for_one"])
@pytest.mark.parametrize(
    "fields", [{"template": {"id": "w", "actor": "m:A"}}, {"size": 1}, {"standby": 1}]
)
def test_pool_fields_are_for_simple_one_for_one_only(strategy: str, fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as info:
        SupervisorSpec.model_validate({"id": "s", "strategy": strategy, **fields})
    [error] = info.value.errors()
    assert error["msg"] == "Value error, template, size and standby are for simple_one_for_one only"


def test_backoff_max_below_min_is_refused() -> None:
    with pytest.raises(ValidationError) as info:
        BackoffSpec(min_s=5.0, max_s=1.0)
    [error] = info.value.errors()
    assert error["msg"] == "Value error, max_s must be >= min_s"
    assert BackoffSpec(min_s=2.0, max_s=2.0).max_s == 2.0


def test_breaker_max_below_reset_is_refused() -> None:
    with pytest.raises(ValidationError) as info:
        BreakerSpec(reset_timeout_s=20.0, max_reset_timeout_s=10.0)
    [error] = info.value.errors()
    assert error["msg"] == "Value error, max_reset_timeout_s must be >= reset_timeout_s"
    assert BreakerSpec(reset_timeout_s=7.0, max_reset_timeout_s=7.0).max_reset_timeout_s == 7.0


def test_heartbeat_needs_at_least_one_miss() -> None:
    with pytest.raises(ValidationError) as info:
        HeartbeatSpec(misses=0)
    assert errors_of(info) == [(("misses",), "greater_than_equal")]
    assert HeartbeatSpec(misses=1).misses == 1


def test_nested_policy_error_names_the_path() -> None:
    with pytest.raises(ValidationError) as info:
        SupervisorSpec.model_validate({"id": "s", "heartbeat": {"misses": 0}})
    assert errors_of(info) == [(("heartbeat", "misses"), "greater_than_equal")]


# Strategies


CHILDREN = ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    ("strategy", "failed", "expected"),
    [
        (Strategy.ONE_FOR_ONE, "a", ["a"]),
        (Strategy.ONE_FOR_ONE, "c", ["c"]),
        (Strategy.ONE_FOR_ONE, "d", ["d"]),
        (Strategy.ONE_FOR_ALL, "a", ["a", "b", "c", "d"]),
        (Strategy.ONE_FOR_ALL, "c", ["a", "b", "c", "d"]),
        (Strategy.ONE_FOR_ALL, "d", ["a", "b", "c", "d"]),
        (Strategy.REST_FOR_ONE, "a", ["a", "b", "c", "d"]),
        (Strategy.REST_FOR_ONE, "c", ["c", "d"]),
        (Strategy.REST_FOR_ONE, "d", ["d"]),
        (Strategy.SIMPLE_ONE_FOR_ONE, "a", ["a"]),
        (Strategy.SIMPLE_ONE_FOR_ONE, "c", ["c"]),
        (Strategy.SIMPLE_ONE_FOR_ONE, "d", ["d"]),
    ],
)
def test_restart_targets(strategy: Strategy, failed: str, expected: list[str]) -> None:
    assert restart_targets(strategy, CHILDREN, failed) == expected


def test_restart_targets_on_specs_returns_a_new_list() -> None:
    children = [worker("a"), worker("b"), worker("c"), worker("d")]
    targets = restart_targets(Strategy.REST_FOR_ONE, children, children[2])
    assert [c.id for c in targets] == ["c", "d"]
    targets.clear()
    assert len(children) == 4
    everyone = restart_targets(Strategy.ONE_FOR_ALL, children, children[0])
    assert everyone == children
    assert everyone is not children


# The yaml tree


def only_child(spec: SupervisorSpec, child_id: str) -> ChildSpec:
    [child] = [c for c in spec.children if c.id == child_id]
    return child


def test_pool_list_builds_root_core_agents() -> None:
    tree = TreeSpec.model_validate(
        {
            "pools": [
                {
                    "id": "web_search",
                    "agent": "agents.search:Searcher",
                    "size": 3,
                    "standby": 1,
                    "params": {"depth": 2},
                },
                {"id": "writer", "agent": "agents.write:Writer"},
            ]
        }
    )
    root = build_root_spec(tree, load_settings())
    assert root.id == "root"
    assert root.strategy is Strategy.ONE_FOR_ONE
    assert [c.id for c in root.children] == ["core", "agents", "retention"]
    assert [c.actor_name for c in root.children] == ["sup:core", "sup:agents", "retention"]

    core = only_child(root, "core").supervisor
    assert core is not None
    assert [(c.id, c.actor, c.actor_name) for c in core.children] == [
        ("tm-0", "actors.task_manager:TaskManager", "tm:0"),
        ("agg-0", "actors.aggregator:Aggregator", "agg:0"),
        ("relay", "actors.relay:OutboxRelayActor", "relay"),
    ]

    agents = only_child(root, "agents").supervisor
    assert agents is not None
    assert agents.strategy is Strategy.ONE_FOR_ONE
    assert [c.id for c in agents.children] == ["pool-web-search", "pool-writer"]
    assert [c.actor_name for c in agents.children] == ["sup:pool:web_search", "sup:pool:writer"]

    search = agents.children[0].supervisor
    assert search is not None
    assert search.strategy is Strategy.SIMPLE_ONE_FOR_ONE
    assert search.children == []
    assert search.size == 3
    assert search.standby == 1
    template = search.template
    assert template is not None
    assert template.id == "web-search"
    assert template.agent == "agents.search:Searcher"
    assert template.template == "web_search"
    assert template.params == {"depth": 2}
    assert template.restart is Restart.PERMANENT
    assert search.pool_child_id(2) == "web-search-2"
    assert template.with_id(search.pool_child_id(2)).actor_name == "agent:web-search-2"

    writer = agents.children[1].supervisor
    assert writer is not None
    assert (writer.size, writer.standby) == (1, 0)
    assert writer.template is not None
    assert writer.template.params == {}


def test_tree_without_relay_and_aggregator_has_only_the_task_managers_in_core() -> None:
    root = build_root_spec(TreeSpec(relay=False, aggregator=False), load_settings(task_shards=2))
    core = only_child(root, "core").supervisor
    agents = only_child(root, "agents").supervisor
    assert core is not None
    assert [(c.id, c.kwargs) for c in core.children] == [
        ("tm-0", {"shard": 0, "shards": 2}),
        ("tm-1", {"shard": 1, "shards": 2}),
    ]
    assert agents is not None and agents.children == []


def all_supervisors(spec: SupervisorSpec) -> list[SupervisorSpec]:
    found = [spec]
    for child in spec.children:
        if child.supervisor is not None:
            found.extend(all_supervisors(child.supervisor))
    return found


def test_settings_defaults_flow_into_every_supervisor() -> None:
    settings = load_settings(
        supervision={
            "max_restarts": 4,
            "period_s": 12.0,
            "min_backoff_s": 0.25,
            "max_backoff_s": 3.0,
            "backoff_jitter": 0.1,
            "backoff_reset_after_s": 45.0,
            "failure_threshold": 7,
            "reset_timeout_s": 2.0,
            "max_reset_timeout_s": 20.0,
            "heartbeat": {"interval_s": 0.5, "timeout_s": 1.5, "misses": 4},
        },
        tree={"pools": [{"id": "a", "agent": "m:A"}, {"id": "b", "agent": "m:B"}]},
    )
    supervisors = all_supervisors(tree_from_settings(settings))
    assert [s.id for s in supervisors] == ["root", "core", "agents", "pool-a", "pool-b"]
    for spec in supervisors:
        core = spec.id == "core"  # room for repeated kills, a short backoff: see below
        assert spec.max_restarts == (60 if core else 4), spec.id
        assert spec.period_s == 12.0, spec.id
        assert spec.backoff == BackoffSpec(
            min_s=0.25, max_s=2.0 if core else 3.0, jitter=0.1, reset_after_s=45.0
        ), spec.id
        assert spec.heartbeat == HeartbeatSpec(interval_s=0.5, timeout_s=1.5, misses=4), spec.id
        assert spec.breaker == BreakerSpec(
            failure_threshold=7, reset_timeout_s=2.0, max_reset_timeout_s=20.0
        ), spec.id


def test_heartbeat_interval_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYVISOR_SUPERVISION__HEARTBEAT__INTERVAL_S", "0.25")
    settings = load_settings(tree={"pools": [{"id": "a", "agent": "m:A"}]})
    supervisors = all_supervisors(tree_from_settings(settings))
    assert [(s.id, s.heartbeat.interval_s) for s in supervisors] == [
        ("root", 0.25),
        ("core", 0.25),
        ("agents", 0.25),
        ("pool-a", 0.25),
    ]


def test_pool_overrides_win_over_settings() -> None:
    settings = load_settings(
        supervision={"max_restarts": 4, "heartbeat": {"interval_s": 0.5}},
        tree={
            "pools": [
                {
                    "id": "tuned",
                    "agent": "m:A",
                    "restart": "transient",
                    "max_restarts": 1,
                    "period_s": 5.0,
                    "on_intensity": "circuit_break",
                    "backoff": {"min_s": 1.0, "max_s": 2.0},
                    "heartbeat": {"interval_s": 3.0, "timeout_s": 4.0, "misses": 6},
                    "breaker": {"failure_threshold": 2},
                },
                {"id": "plain", "agent": "m:B"},
            ]
        },
    )
    agents = only_child(tree_from_settings(settings), "agents").supervisor
    assert agents is not None
    tuned, plain = (c.supervisor for c in agents.children)
    assert tuned is not None and plain is not None

    assert tuned.max_restarts == 1
    assert tuned.period_s == 5.0
    assert tuned.on_intensity.value == "circuit_break"
    assert (tuned.backoff.min_s, tuned.backoff.max_s) == (1.0, 2.0)
    assert tuned.heartbeat == HeartbeatSpec(interval_s=3.0, timeout_s=4.0, misses=6)
    assert tuned.breaker.failure_threshold == 2
    assert tuned.template is not None
    assert tuned.template.restart is Restart.TRANSIENT

    # The other pool and the supervisors above keep the settings' values.
    assert plain.max_restarts == 4
    assert plain.on_intensity.value == "escalate"
    assert plain.heartbeat.interval_s == 0.5
    assert agents.max_restarts == 4
    assert agents.heartbeat.interval_s == 0.5


def test_duplicate_pool_ids_are_refused() -> None:
    pools = [{"id": "a", "agent": "m:A"}, {"id": "a", "agent": "m:B"}]
    with pytest.raises(ValidationError) as info:
        TreeSpec.model_validate({"pools": pools})
    [error] = info.value.errors()
    assert error["msg"] == "Value error, pool ids must be unique: ['a']"

    with pytest.raises(ConfigError) as config_info:
        tree_from_settings(load_settings(tree={"pools": pools}))
    assert "tree: Value error, pool ids must be unique: ['a']" in str(config_info.value)


def test_pool_id_pattern() -> None:
    with pytest.raises(ValidationError) as info:
        PoolSpec(id="Web-Search", agent="m:A")
    assert errors_of(info) == [(("id",), "string_pattern_mismatch")]


def test_no_tree_section_is_the_built_in_agents_and_an_empty_one_is_none() -> None:
    root = tree_from_settings(load_settings())
    assert [c.id for c in root.children] == ["core", "agents", "retention"]
    agents = only_child(root, "agents").supervisor
    assert agents is not None
    assert [c.id for c in agents.children] == [
        "pool-planning", "pool-chunking", "pool-log-analysis", "pool-reduce", "pool-echo",
        "pool-tool",
    ]  # fmt: skip
    for pool in agents.children:  # every class path of the default tree imports
        assert pool.supervisor is not None and pool.supervisor.template is not None
        agent_class = _import(pool.supervisor.template.agent or "")
        assert agent_class.capabilities, pool.id
    empty = only_child(tree_from_settings(load_settings(tree={})), "agents").supervisor
    assert empty is not None and empty.children == []


def test_negative_pool_size_names_the_field() -> None:
    settings = load_settings(tree={"pools": [{"id": "a", "agent": "m:A", "size": -1}]})
    with pytest.raises(ConfigError) as info:
        tree_from_settings(settings)
    assert str(info.value) == (
        "invalid tree:\n  tree.pools.0.size: Input should be greater than or equal to 0 (got -1)"
    )


def test_unknown_tree_key_names_the_field() -> None:
    settings = load_settings(tree={"pools": [], "relais": False})
    with pytest.raises(ConfigError) as info:
        tree_from_settings(settings)
    assert str(info.value) == "invalid tree:\n  tree.relais: unknown key (got False)"


def test_unknown_pool_key_names_the_field() -> None:
    settings = load_settings(
        tree={"pools": [{"id": "a", "agent": "m:A"}, {"id": "b", "agent": "m:B", "sise": 2}]}
    )
    with pytest.raises(ConfigError) as info:
        tree_from_settings(settings)
    assert str(info.value) == "invalid tree:\n  tree.pools.1.sise: unknown key (got 2)"


def test_pool_override_merges_with_the_settings_defaults_key_by_key() -> None:
    settings = load_settings(supervision={"heartbeat": {"interval_s": 0.5}})
    tree = TreeSpec.model_validate(
        {"pools": [{"id": "p", "agent": "m:A", "heartbeat": {"misses": 5}}]}
    )
    root = build_root_spec(tree, settings)
    pool = root.children[1].supervisor.children[0].supervisor
    assert pool.heartbeat.misses == 5
    assert pool.heartbeat.interval_s == 0.5


def test_start_timeout_and_circuit_breaker_defaults_and_validation() -> None:
    child = worker("c")
    assert child.start_timeout_s == 60.0
    assert child.circuit_breaker is True
    assert worker("c", start_timeout_s=0.5, circuit_breaker=False).start_timeout_s == 0.5
    for bad in (0, -1):
        with pytest.raises(ValidationError) as info:
            worker("c", start_timeout_s=bad)
        assert errors_of(info) == [(("start_timeout_s",), "greater_than")]
    member = worker("m", start_timeout_s=3, circuit_breaker=False).with_id("m-2")
    assert (member.start_timeout_s, member.circuit_breaker) == (3, False)


def test_core_is_never_parked_behind_a_circuit() -> None:
    """The task managers, the Aggregator and the relay (and the root's two children) have
    no breaker;
    agents keep theirs."""
    settings = load_settings(task_shards=2, tree={"pools": [{"id": "a", "agent": "m:A"}]})
    root = tree_from_settings(settings)
    core = only_child(root, "core").supervisor
    assert core is not None
    assert [(c.id, c.circuit_breaker) for c in core.children] == [
        ("tm-0", False),
        ("tm-1", False),
        ("agg-0", False),
        ("relay", False),
    ]
    # the retention job keeps its breaker: parked if it keeps failing, never escalated
    assert [c.circuit_breaker for c in root.children] == [False, False, True]
    # a supervisor's start is its subtree's: never killed as a hung start after 60 s
    assert [c.start_timeout_s for c in root.children[:2]] == [600.0, 600.0]
    agents = only_child(root, "agents").supervisor
    assert agents is not None
    pool = agents.children[0].supervisor
    assert pool is not None and pool.template is not None
    assert pool.template.circuit_breaker is True
    assert agents.children[0].start_timeout_s == 600.0


def test_core_intensity_outlasts_a_chaos_run() -> None:
    """tm:0 killed every 10 s and the relay every 15 s is 10 restarts a minute: core
    escalates only far beyond that, and comes back within seconds (backoff <= 2 s)."""
    settings = load_settings()
    core = only_child(build_root_spec(TreeSpec(), settings), "core").supervisor
    assert core is not None
    per_period = 10 * core.period_s / 60
    assert core.max_restarts >= 3 * per_period
    assert core.on_intensity.value == "escalate"
    assert core.backoff.max_s <= 2.0


def test_the_tools_configuration_travels_to_every_agent_of_every_pool() -> None:
    tools = {"read_file": {"dirs": ["/srv/logs"]}, "http_request": {"hosts": ["api.example"]}}
    root = tree_from_settings(
        load_settings(tools=tools, tree={"pools": [{"id": "a", "agent": "m:A"}]})
    )
    agents = only_child(root, "agents").supervisor
    assert agents is not None
    template = agents.children[0].supervisor.template
    assert template.kwargs["tools"]["read_file"]["dirs"] == ["/srv/logs"]
    assert template.kwargs["tools"]["http_request"]["hosts"] == ["api.example"]


def test_the_llm_agent_is_in_the_default_tree_only_with_a_model() -> None:
    def pools(settings: Settings) -> list[str]:
        agents = only_child(tree_from_settings(settings), "agents").supervisor
        assert agents is not None
        return [c.id for c in agents.children]

    assert "pool-llm" not in pools(load_settings())
    with_model = load_settings(
        models={"local": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}}
    )
    assert pools(with_model)[-1] == "pool-llm"
    template = only_child(tree_from_settings(with_model), "agents").supervisor.children[-1]
    assert template.supervisor.template.kwargs["models"]["local"]["model"] == "m"


def test_a_pool_names_an_agent_class_or_a_template_never_both_nor_neither() -> None:
    with pytest.raises(ValidationError, match="give exactly one of agent"):
        PoolSpec(id="p", agent="m:A", template="t")
    with pytest.raises(ValidationError, match="give exactly one of agent"):
        PoolSpec(id="p")
    unresolved = load_settings(tree={"pools": [{"id": "p", "template": "triage"}]})
    with pytest.raises(ConfigError, match="names template 'triage': read it first"):
        tree_from_settings(unresolved)
