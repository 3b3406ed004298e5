"""Agent templates: what agents are made from (a class, its parameters and capabilities,
a model, resources); register, list, read. `POST /api/v1/agents` spawns from one."""

from __future__ import annotations

import importlib
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path

from actors.agent import Agent
from runtime.models.api import TemplateCreate
from runtime.models.common import TYPE_NAME_PATTERN
from runtime.models.enums import Scope
from runtime.models.records import AgentTemplate
from runtime.store import agents as agent_store
from serve.auth import require
from serve.deps import SystemDep, bad_input

router = APIRouter(prefix="/api/v1/templates", tags=["templates"])

NamePath = Annotated[str, Path(pattern=TYPE_NAME_PATTERN)]


def agent_class(class_path: str, packages: list[str]) -> type[Agent]:
    """The Agent subclass at `module:Class` in one of `packages` (importing a module runs
    it: only those the configuration names); a 422 naming `body.class_path` otherwise."""
    module_name, _, name = class_path.partition(":")
    if module_name.split(".")[0] not in packages:
        allowed = ", ".join(packages) or "none"
        raise bad_input(
            "body.class_path",
            f"{module_name!r} is not in a package templates may use ({allowed};"
            " template_packages in rayvisor.yaml)",
        )
    try:
        found = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise bad_input("body.class_path", f"cannot import {class_path!r}: {exc}") from None
    if not (isinstance(found, type) and issubclass(found, Agent)):
        raise bad_input("body.class_path", f"{class_path!r} is not an Agent subclass")
    return found


@router.post("", status_code=201, response_model=AgentTemplate, dependencies=[require(Scope.ADMIN)])
async def create_template(body: TemplateCreate, system: SystemDep) -> AgentTemplate:
    """Register a template (409 if the name is taken). Without `capabilities`, the class's
    own; with a `model`, one the model catalog names."""
    cls = agent_class(body.class_path, system.settings.template_packages)
    if body.model is not None and body.model not in system.settings.models:
        known = ", ".join(sorted(system.settings.models)) or "none configured"
        raise bad_input("body.model", f"no model {body.model!r} in the catalog ({known})")
    record = AgentTemplate(
        name=body.name,
        class_path=body.class_path,
        capabilities=body.capabilities or sorted(cls.capabilities),
        parameters=body.parameters,
        description=body.description or (cls.__doc__ or "").strip().split("\n")[0][:500],
        model=body.model,
        resources=body.resources.model_dump(),
        source="api",
    )
    created = await agent_store.create_template(system.pool, record)
    if created is None:
        raise HTTPException(409, f"a template named {body.name!r} exists")
    return created


@router.get("", response_model=list[AgentTemplate], dependencies=[require(Scope.READ)])
async def list_templates(system: SystemDep) -> list[AgentTemplate]:
    return await agent_store.list_templates(system.pool)


@router.get("/{name}", response_model=AgentTemplate, dependencies=[require(Scope.READ)])
async def get_template(name: NamePath, system: SystemDep) -> AgentTemplate:
    template = await agent_store.get_template_by_name(system.pool, name)
    if template is None:
        raise HTTPException(404, f"no template {name}")
    return template
