"""Tools: what agents may call (`ctx.tool`), with their parameters and limits."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from runtime.models.enums import Scope
from serve.auth import require
from serve.deps import SystemDep

router = APIRouter(prefix="/api/v1/tools", tags=["tools"])


class ToolInfo(BaseModel):
    name: str
    description: str
    parameters: dict[str, Any]
    limits: dict[str, Any]


@router.get("", response_model=list[ToolInfo], dependencies=[require(Scope.READ)])
async def list_tools(system: SystemDep) -> list[dict[str, Any]]:
    """The registered tools by name: parameters as JSON Schema, rate limit, breaker, timeout
    (each agent has its own bucket and breaker per tool)."""
    return [tool.describe() for tool in system.tools()]
