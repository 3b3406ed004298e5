"""`QuestionRouter`: a discovery of type `question` becomes a task (seed MS-1's live
orchestrator), run on the Aggregator's loop.

A question names the capability that answers it (`data.capability`) and, optionally, the
task's `parameters`. The task's idempotency key is made from the discovery's id, so a
router that dies between submitting and recording the link submits again and gets the
same task: each question becomes exactly one task. The task carries `discovery_id` and
`question` in its parameters, and the discovery row its `routed_task_id`.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from actors.tasks import TaskClient
from runtime.errors import LogicalError
from runtime.models.records import Discovery
from runtime.store import discoveries

__all__ = ["QuestionRouter", "question_task"]

_log = logging.getLogger("rayvisor.questions")


def question_task(question: Discovery) -> dict[str, Any]:
    """The task a question becomes."""
    data = question.data
    return {
        "title": f"question: {question.content}"[:500],
        "required_capabilities": [str(data["capability"]).strip()],
        "parameters": {
            **dict(data.get("parameters") or {}),
            "question": question.content,
            "discovery_id": str(question.id),
        },
        "project_id": str(question.project_id) if question.project_id else None,
        "idempotency_key": f"discovery:{question.id}",
    }


class QuestionRouter:
    def __init__(self, pool: Any, tasks: TaskClient) -> None:
        self._pool = pool
        self._tasks = tasks

    async def route_all(self) -> int:
        """Route every question not routed yet; how many were."""
        routed = 0
        for question in await discoveries.unrouted_questions(self._pool):
            try:
                task = await self._tasks.submit(**question_task(question))
            except (ValueError, ValidationError, LogicalError) as exc:  # it can never run
                reason = f"not a valid task: {exc}"[:1000]
                _log.warning("question %s: %s", question.id, reason)
                await discoveries.mark_routed(self._pool, question.id, None, reason)
                continue
            await discoveries.mark_routed(self._pool, question.id, task["id"])
            routed += 1
        return routed
