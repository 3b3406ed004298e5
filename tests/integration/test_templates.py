"""A pool of rayvisor.yaml that names a registered template gets the template's class,
parameters (under its own) and CPUs from PostgreSQL; an unknown template is refused."""

from __future__ import annotations

import uuid

import pytest

from runtime.config import load_settings
from runtime.errors import ConfigError
from runtime.models.records import AgentTemplate
from runtime.store import agents as agent_store
from supervisors.tree import resolve_pool_templates, tree_from_settings

pytestmark = pytest.mark.integration


async def test_a_pool_naming_a_template_is_built_from_it(pool) -> None:
    name = f"triage_{uuid.uuid4().hex[:6]}"
    await agent_store.create_template(
        pool,
        AgentTemplate(
            name=name,
            class_path="actors.builtin.echo:EchoAgent",
            parameters={"capabilities": ["triage"], "greeting": "hi"},
            resources={"num_cpus": 0.5},
            source="api",
        ),
    )
    settings = load_settings(
        tree={"pools": [{"id": "triage", "template": name, "size": 2,
                         "params": {"greeting": "hello"}}]}
    )  # fmt: skip
    resolved = await resolve_pool_templates(settings, pool)
    agents = tree_from_settings(resolved).children[1].supervisor
    assert agents is not None
    member = agents.children[0].supervisor.template
    assert member.agent == "actors.builtin.echo:EchoAgent" and member.num_cpus == 0.5
    assert member.params == {"capabilities": ["triage"], "greeting": "hello"}
    assert agents.children[0].supervisor.size == 2

    missing = load_settings(tree={"pools": [{"id": "x", "template": "no_such_template"}]})
    with pytest.raises(ConfigError, match="no template named 'no_such_template'"):
        await resolve_pool_templates(missing, pool)
