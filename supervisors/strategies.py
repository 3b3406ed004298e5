"""Which children a restart touches: one small function per strategy, no Ray here.

Children are given in start order. The result is in start order too: the caller stops
the running ones in reverse order, then starts them all in order, as OTP does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from supervisors.spec import Strategy

__all__ = ["restart_targets"]

C = TypeVar("C")


def _one_for_one(children: Sequence[C], failed: C) -> list[C]:
    return [failed]


def _one_for_all(children: Sequence[C], failed: C) -> list[C]:
    return list(children)


def _rest_for_one(children: Sequence[C], failed: C) -> list[C]:
    return list(children[children.index(failed) :])


_STRATEGIES: dict[Strategy, Callable[[Sequence[C], C], list[C]]] = {
    Strategy.ONE_FOR_ONE: _one_for_one,
    Strategy.ONE_FOR_ALL: _one_for_all,
    Strategy.REST_FOR_ONE: _rest_for_one,
    Strategy.SIMPLE_ONE_FOR_ONE: _one_for_one,
}


def restart_targets(strategy: Strategy, children: Sequence[C], failed: C) -> list[C]:
    """The children to restart, in start order, when `failed` failed."""
    return _STRATEGIES[strategy](children, failed)
