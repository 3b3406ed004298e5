"""Ray actors that do the work, and the `Agent` class users subclass.

`from actors import Agent, AgentContext` imports no Ray actor class; `AgentHost` (which
imports Ray) is loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actors.agent import Agent, AgentContext

if TYPE_CHECKING:
    from actors.host import AgentHost

__all__ = ["Agent", "AgentContext", "AgentHost"]


def __getattr__(name: str) -> Any:
    if name == "AgentHost":
        from actors.host import AgentHost

        return AgentHost
    raise AttributeError(f"module 'actors' has no attribute {name!r}")
