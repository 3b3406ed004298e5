"""A shard's count of its tasks by status (what its metrics and `statistics` report),
kept by the tasks themselves as they move: plain objects, no Ray."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from actors.live_task import LiveTask
from runtime.models.records import Task
from runtime.state_machines import InvalidTransition, TaskStatus

S = TaskStatus


def _record(status: TaskStatus = S.QUEUED) -> Task:
    now = datetime.now(UTC)
    return Task.model_construct(
        id=uuid4(), status=status, title="t", required_capabilities=["echo"], parameters={},
        dependencies=[], attempt_errors=[], created_at=now, updated_at=now,
    )  # fmt: skip


def test_the_count_follows_each_task_from_held_to_forgotten() -> None:
    counts: Counter[TaskStatus] = Counter()
    one = LiveTask(_record(), 0, by_status=counts)
    two = LiveTask(_record(S.PENDING), 1, by_status=counts)
    assert +counts == {S.QUEUED: 1, S.PENDING: 1}
    one.move(S.ASSIGNED)
    one.move(S.RUNNING)
    two.move(S.QUEUED)
    assert +counts == {S.RUNNING: 1, S.QUEUED: 1}
    one.move(S.COMPLETED)
    one.leave()
    one.leave()  # forgetting twice counts once
    assert +counts == {S.QUEUED: 1}
    assert counts["queued"] == 1  # read by status name, as metrics.shard_load does


def test_a_refused_move_leaves_the_count_as_it_was() -> None:
    counts: Counter[TaskStatus] = Counter()
    task = LiveTask(_record(), 0, by_status=counts)
    with pytest.raises(InvalidTransition):
        task.move(S.COMPLETED)  # queued -> completed skips the lease
    assert +counts == {S.QUEUED: 1}
