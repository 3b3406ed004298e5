"""Server-sent events: filters select, and Last-Event-ID resumes without a gap."""

from __future__ import annotations

import json
import uuid

import pytest
from helpers import Listener

from runtime.client import Client

pytestmark = pytest.mark.integration


def _share(rv: Client, type_: str, confidence: float, content: str) -> dict:
    return rv.share_discovery({"type": type_, "content": content, "confidence": confidence})


def test_discovery_stream_filters_and_resumes_from_last_event_id(http_system) -> None:
    wanted, other = f"pattern_{uuid.uuid4().hex[:6]}", f"anomaly_{uuid.uuid4().hex[:6]}"
    with http_system.client("write") as rv:
        _share(rv, wanted, 0.9, "before: sure")
        _share(rv, wanted, 0.2, "before: unsure")
        _share(rv, other, 0.95, "before: other type")
        # from the stream's start, only the wanted type at >= 0.5
        with http_system.client("read") as reader:
            listener = Listener(
                reader,
                "/api/v1/discoveries/stream",
                types=[wanted, "nothing"],
                min_confidence=0.5,
                last_event_id="0",
            )
            (first,) = listener.take(1)
            assert first.event == "discovery"
            payload = json.loads(first.data)
            assert (payload["content"], payload["type"], payload["confidence"]) == (
                "before: sure",
                wanted,
                0.9,
            )
            assert payload["agent_id"].startswith("api-")
            _share(rv, other, 0.99, "live: other type")
            _share(rv, wanted, 0.5, "live: at the threshold")
            (live,) = listener.take(1)
            assert json.loads(live.data)["content"] == "live: at the threshold"
            assert int(live.id) > int(first.id)
            listener.nothing_more()
        # disconnected: two more are shared; a reconnect with Last-Event-ID gets both, once
        _share(rv, wanted, 0.8, "missed: one")
        _share(rv, wanted, 0.1, "missed: filtered out")
        _share(rv, wanted, 0.7, "missed: two")
        with http_system.client("read") as reader:
            resumed = Listener(
                reader,
                "/api/v1/discoveries/stream",
                types=[wanted],
                min_confidence=0.5,
                last_event_id=live.id,
            )
            contents = [json.loads(e.data)["content"] for e in resumed.take(2)]
            assert contents == ["missed: one", "missed: two"]
            resumed.nothing_more()


def test_events_stream_of_one_task_subject_with_replay(http_system) -> None:
    with http_system.client("write") as rv:
        task = rv.submit_task({"title": "watched", "required_capabilities": ["echo"]})
        rv.wait_task(task["id"], timeout_s=60)
        listener = Listener(
            rv, "/api/v1/events/stream", subject=f"tasks.{task['id']}.>", last_event_id="0"
        )
        events = listener.take(2)
    assert [e.event for e in events] == [
        f"tasks.{task['id']}.assignment",
        f"tasks.{task['id']}.result",
    ]
    result = json.loads(events[1].data)
    assert (result["task_id"], result["status"], result["attempt"]) == (task["id"], "completed", 1)
    assert all(e.id.isdigit() for e in events)


def test_live_only_subjects_arrive_without_an_id(http_system) -> None:
    with http_system.client("read") as rv:
        listener = Listener(rv, "/api/v1/events/stream", subject="agents.echo-1.heartbeat")
        (beat,) = listener.take(1, timeout_s=15)
    assert beat.event == "agents.echo-1.heartbeat"
    assert beat.id == ""
    assert json.loads(beat.data)["agent_id"] == "echo-1"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"subject": "tasks..x"}, "query.subject"),
        ({"subject": "bogus.>"}, "query.subject"),
        ({"last_event_id": "-1"}, "query.last_event_id"),
    ],
)
def test_bad_stream_parameters_are_422(http_system, params: dict, field: str) -> None:
    headers = {"Authorization": f"Bearer {http_system.keys['read']}"}
    with http_system.raw() as http:
        response = http.get("/api/v1/events/stream", params=params, headers=headers)
    assert response.status_code == 422
    assert field in {e["field"] for e in response.json()["errors"]}


def test_bad_last_event_id_header_is_422(http_system) -> None:
    headers = {"Authorization": f"Bearer {http_system.keys['read']}", "Last-Event-ID": "abc"}
    with http_system.raw() as http:
        response = http.get("/api/v1/discoveries/stream", headers=headers)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "header.Last-Event-ID"


def test_discovery_listing_filters(http_system) -> None:
    kind = f"finding_{uuid.uuid4().hex[:6]}"
    with http_system.client("write") as rv:
        for confidence in (0.3, 0.6, 0.9):
            _share(rv, kind, confidence, f"c={confidence}")
        page = rv.list_discoveries(types=[kind], min_confidence=0.6)
        assert [d["confidence"] for d in page["items"]] == [0.6, 0.9]
        first = rv.list_discoveries(types=[kind], limit=2)
        rest = rv.list_discoveries(types=[kind], limit=2, cursor=first["next_cursor"])
        assert len(first["items"]) == 2 and len(rest["items"]) == 1


def test_a_quiet_stream_sends_keep_alive_comments(http_system) -> None:
    headers = {"Authorization": f"Bearer {http_system.keys['read']}"}
    with (
        http_system.raw() as http,
        http.stream(
            "GET",
            "/api/v1/events/stream",
            params={"subject": "projects.nobody.completed"},
            headers=headers,
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        comment = next(line for line in response.iter_lines() if line)
    assert comment.startswith(":")


def test_streams_skip_bad_messages_and_deliver_the_next(http_system) -> None:
    """Junk on a discovery subject (not UTF-8, not JSON, JSON of the wrong shape or types)
    neither ends a stream nor reaches the discovery stream; the good one after it does."""
    import asyncio

    from runtime.bus import Bus

    kind = f"pattern_{uuid.uuid4().hex[:6]}"
    subject = f"discoveries.fuzzer.{kind}"
    junk = [b"\xff\xfe", b"not json", b"[1, 2]",
            json.dumps({"type": kind, "content": "x", "confidence": "high"}).encode()]  # fmt: skip

    async def publish_junk() -> None:
        bus = await Bus.connect(str(http_system.settings.nats_url), stream="unused")
        try:
            for n, payload in enumerate(junk):
                await bus.js.publish(subject, payload, stream=http_system.settings.stream_name,
                                     headers={"Nats-Msg-Id": f"junk-{kind}-{n}"})  # fmt: skip
        finally:
            await bus.close()

    asyncio.run(publish_junk())
    with http_system.client("write") as rv:
        _share(rv, kind, 0.9, "after the junk")
        discoveries = Listener(rv, "/api/v1/discoveries/stream", types=[kind],
                               min_confidence=0.5, last_event_id="0")  # fmt: skip
        events = Listener(rv, "/api/v1/events/stream", subject=f"discoveries.*.{kind}",
                          last_event_id="0")  # fmt: skip
        (good,) = discoveries.take(1)
        assert json.loads(good.data)["content"] == "after the junk"
        discoveries.nothing_more()
        # the events stream passes any JSON on (it knows no shapes), drops what is not
        got = [json.loads(e.data) for e in events.take(3)]
        assert got[0] == [1, 2] and got[2]["content"] == "after the junk"
        events.nothing_more()
