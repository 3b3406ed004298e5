"""Children added at run time: a `simple_one_for_one` pool's members (`start_child`,
`resize`) and a one_for_one supervisor's added children (`add_child`), each persisted in
PostgreSQL so a restarted supervisor starts them again; `terminate_child` for both.

A mixin of `Supervisor`: it changes which children there are, never how they are run.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from runtime.errors import Conflict
from runtime.models.enums import SupervisorEventKind as Kind
from runtime.store import supervision
from supervisors.child_state import Child
from supervisors.spec import ChildSpec, Strategy, SupervisorSpec

__all__ = ["DynamicChildren"]


class DynamicChildren:
    """Adding and removing children while the supervisor runs."""

    spec: SupervisorSpec
    children: list[Child]
    namespace: str
    _lock: asyncio.Lock
    _pool: Any

    if TYPE_CHECKING:  # the supervisor's own, used here

        def _new_child(self, spec: ChildSpec) -> Child: ...

        def _pool_spec(self, n: int) -> ChildSpec: ...

        async def _first_start(self, child: Child) -> None: ...

        async def _stop(self, child: Child, reason: str) -> None: ...

        def _emit(
            self, kind: Kind, child: Child | None, reason: str = "", detail: Any = None
        ) -> None: ...

    async def start_child(self) -> str:
        """Add one member to the pool; it is persisted, so it survives a restart of this."""
        if self.spec.strategy is not Strategy.SIMPLE_ONE_FOR_ONE:
            raise ValueError(f"{self.spec.id} is {self.spec.strategy}, not simple_one_for_one")
        async with self._lock:  # one id per member, even with calls in flight together
            taken = {c.spec.id for c in self.children}
            n = 1
            while self.spec.pool_child_id(n) in taken:
                n += 1
            child = await self._keep(self.spec.id, self._pool_spec(n))
        await self._first_start(child)
        return child.spec.id

    @property
    def _added_key(self) -> str:
        """Where children added at run time are kept: per namespace (pools' members are
        kept under the pool's id)."""
        return f"{self.namespace}/{self.spec.id}"

    async def add_child(self, spec: dict[str, Any]) -> str:
        """Add a child to a one_for_one supervisor (a pool made at run time); it is
        persisted, so a restart of this supervisor starts it again. Its id, once started."""
        if self.spec.strategy is Strategy.SIMPLE_ONE_FOR_ONE:
            raise ValueError(f"{self.spec.id} is a pool: use start_child")
        child_spec = ChildSpec.model_validate(spec)
        async with self._lock:
            if self._find(child_spec.id) is not None:
                raise Conflict(f"{self.spec.id} already has a child {child_spec.id!r}")
            child = await self._keep(self._added_key, child_spec)
        await self._first_start(child)
        return child_spec.id

    async def _keep(self, key: str, spec: ChildSpec) -> Child:
        """Persist a child added at run time (under `key`) and add it; the caller holds
        the lock and starts it."""
        await supervision.save_child(self._pool, key, spec.id, spec.model_dump(mode="json"))
        child = self._new_child(spec)
        self.children.append(child)
        return child

    async def terminate_child(self, child_id: str) -> bool:
        child = self._find(child_id)
        if child is None:
            return False
        async with child.lock:  # after a start or a decision in flight, never during one
            if child not in self.children:
                return False
            self.children.remove(child)  # first: no scheduled restart or probe revives it
            await self._stop(child, "terminated")
            pool_member = self.spec.strategy is Strategy.SIMPLE_ONE_FOR_ONE
            key = self.spec.id if pool_member else self._added_key
            await supervision.remove_child(self._pool, key, child_id)  # if it was kept
            self._emit(Kind.CHILD_EXITED, child, "terminated", {"abnormal": False})
            return True

    async def resize(self, size: int) -> list[str]:
        """Grow or shrink the pool to `size` members (newest removed first)."""
        if size < 0:
            raise ValueError("size must be >= 0")
        while len(self.children) < size:
            await self.start_child()
        while len(self.children) > size:
            await self.terminate_child(self.children[-1].spec.id)
        return [c.spec.id for c in self.children]

    def _find(self, child_id: str) -> Child | None:
        return next((c for c in self.children if c.spec.id == child_id), None)
