"""Chaos: tasks over HTTP while real processes are SIGKILLed; then check none was lost or doubled.

One run, one local Ray on 127.0.0.1 (address "local": never a cluster someone else runs):
embedded PostgreSQL and NATS under a temporary home, the tree as a user runs it (tm:0, the
outbox relay, one pool of 4 `actors.builtin.echo:EchoAgent`), the Serve ingress on a free
port. Then `--duration` seconds of open-loop load at `--rate` tasks/s over HTTP: every
`POST /api/v1/tasks` carries its own `Idempotency-Key`, and a POST answered 429/5xx or
failing on the connection is retried with the same key (backoff 50 ms doubling to 1 s)
until it is accepted, or given up after `--give-up` seconds (counted as lost). The load
shares one client pool of `--connections` connections, as a real client would.

Meanwhile faults: the pid of a running target is read from `GET /api/v1/supervisors/tree`,
checked to be a Ray worker (`ray::` in its command line) and SIGKILLed: an agent every
`--agent-every` s, tm:0 every `--tm-every` s, the relay every `--relay-every` s, the pool
supervisor (`sup:pool:echo`) every `--pool-supervisor-every` s (0 disables a kind). A
kind's first kill is at half its period; kills of the non-agent kinds are kept at least
`MAJOR_GAP_S` apart, so each one's recovery is its own. After each kill three probes run
(bounded by `--recover-timeout`): small probe tasks POSTed every ~20 ms (up to 8 in
flight, each with a key of its own) until one is answered 201 (`took_ms`: the system
takes tasks again), `/readyz` polled until 200 (`readyz_ms`), and the tree polled until
the killed node runs again with another pid (`back_ms`). A kind's p50/max are over its
faults that no other non-agent fault overlapped (an agent's kill during tm:0's outage
would report tm:0's time); `overlapped` counts the others, `max_ms_all` includes them, and
`fault_log` lists every kill. Pids come from one shared poll of the tree (a snapshot at
most 1 s old) and a pid is killed only if its process is a Ray worker of this run (its
RAYVISOR_HOME is this run's).

Serve's own processes are faults too (off by default): an ingress replica every
`--ingress-every` s (of `--ingress-replicas`, 2 by default) and Serve's HTTP proxy every
`--proxy-every` s, found by their process titles; `back_ms` is until as many of them run
again. `--outages` stops nats-server (at 20% of `--duration`) and PostgreSQL (at 55%) for
`--outage-s` seconds each through the embedded services' `stop()`/`start()`; an outage's
`back_ms` is how long the store was down, its `took_ms` and `readyz_ms` run from its
restart. Each non-agent fault's `http` counts the answers (load and probes) but 200/201 from
the fault until it healed (`http_during` per kind): a store outage should show 503s (each
with `Retry-After`; `http_503_without_retry_after` counts those without) and never a 500
(`http_500` counts them over the whole run).

After the load: the keys still retrying settle, then (bounded by `--drain-timeout`) every
task in PostgreSQL ends and the outbox empties, and the checker reads the `tasks` table
and every `tasks.*.result` event of the JetStream stream. Each load key falls in exactly
one class: `completed_twice` (two task ids answered for it, an answered id that is not
its task, or more than one `completed` result event), `completed_once`, `failed`,
`cancelled`, `timed_out`, or `lost` (never accepted, accepted but not in PostgreSQL, or
not ended after the drain; `lost_detail` says which). `events_missing` counts completed
tasks without a completed result event, `events_duplicated` the tasks whose result
events repeat (`events_duplicated_by`: an event id seen twice, a task with more than one
result event). Probe tasks are checked too (`probes`).

Progress goes to stderr; the last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

if __name__ == "__main__" and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # bench/ itself: bench/http.py would shadow the standard library's http

NAMESPACE = "bench-chaos"
POOL = "echo"
AGENTS = 4
KINDS = ("agent", "tm", "relay", "pool_supervisor", "ingress", "proxy", "nats", "postgres")
TARGET_NAMES = {"tm": "tm:0", "relay": "relay", "pool_supervisor": f"sup:pool:{POOL}"}
SERVE_TITLES = {"ingress": "ray::ServeReplica:rayvisor:ingress", "proxy": "ray::ProxyActor"}
"""Serve's processes are not in the tree: found by their process title."""
OUTAGES = ("nats", "postgres")
OUTAGE_AT = {"nats": 0.2, "postgres": 0.55}
"""With `--outages`, when (a fraction of `--duration`) each store is stopped."""
MAJOR_GAP_S = 2.0
RETRY_SKIPPED_S = 1.0
"""A non-agent kill that found its target not running (restarting, escalated) is tried
again this soon, not a whole period later: each kind is killed at least once per run."""
RETRY_STATUSES = {429, 500, 502, 503, 504}
TERMINAL = {"completed", "failed", "cancelled", "timed_out"}
EXAMPLES = 5
PROBE_EVERY_S = 0.02
PROBES_IN_FLIGHT = 8
TREE_POLL_S = 0.25


# ---- records ---------------------------------------------------------------------------


@dataclass
class KeyState:
    """One idempotency key: every attempt's outcome and the task ids answered for it."""

    key: str
    parameters: dict[str, Any]
    first_s: float = 0.0
    attempts: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    ids: list[str] = field(default_factory=list)
    accepted_s: float | None = None
    gave_up: bool = False
    rejected: str | None = None


@dataclass
class Fault:
    """One SIGKILL and how long the system took to come back from it."""

    kind: str
    at_s: float
    target: str
    pid: int
    took_ms: float | None = None
    readyz_ms: float | None = None
    back_ms: float | None = None
    overlapped_by: list[str] = field(default_factory=list)
    http: dict[str, int] = field(default_factory=dict)
    """Answers but 200/201 (load and probes) from the fault until it healed (`fault_answers`)."""


@dataclass
class Run:
    """What the load and the faults leave for the checker."""

    began: float = field(default_factory=time.monotonic)
    keys: list[KeyState] = field(default_factory=list)
    probes: list[KeyState] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    skipped: dict[str, Counter[str]] = field(default_factory=lambda: {k: Counter() for k in KINDS})
    rechecks: int = 0
    answers: list[tuple[float, str]] = field(default_factory=list)
    """(elapsed s, outcome) of every answer that was not 200/201."""
    errors_500: list[str] = field(default_factory=list)
    """The first bodies of 500 answers (what was not mapped to a status)."""

    def elapsed(self) -> float:
        return time.monotonic() - self.began


# ---- the checker -------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))], 1)


def _short(value: Any, limit: int = 300) -> Any:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


def _example(key: KeyState, row: dict[str, Any]) -> dict[str, Any]:
    return {
        "key": key.key,
        "task_id": str(row["id"]),
        "status": row["status"],
        "attempt": row["attempt"],
        "assigned_to": row.get("assigned_to"),
        "error": _short(row["error"]),
        "attempt_errors": _short(row["attempt_errors"], 600),
    }


def check(
    keys: Iterable[KeyState], rows: Iterable[dict[str, Any]], events: Iterable[dict[str, Any]]
) -> dict[str, Any]:
    """Classify every key by what PostgreSQL (`rows` of `tasks`) and the stream (`events`:
    task_id, event_id, status) hold for it; see the module docstring for the classes."""
    keys = list(keys)
    by_key = {r["idempotency_key"]: r for r in rows if r["idempotency_key"] is not None}
    events = list(events)
    by_event_id = Counter(e["event_id"] for e in events)
    by_task: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_task.setdefault(e["task_id"], []).append(e)
    completed_events = {
        task_id: sum(1 for e in evs if e["status"] == "completed")
        for task_id, evs in by_task.items()
    }

    counts: Counter[str] = Counter()
    lost_detail: Counter[str] = Counter()
    examples: dict[str, list[dict[str, Any]]] = {}
    twice_examples: list[dict[str, Any]] = []
    lost_examples: dict[str, list[dict[str, Any]]] = {}  # up to EXAMPLES per reason
    events_missing = wrong_result = status_mismatch = 0
    for key in keys:
        accepted = bool(key.ids)
        counts["submitted"] += accepted
        row = by_key.get(key.key)
        task_id = str(row["id"]) if row is not None else None
        answered = set(key.ids)
        reasons = []
        if len(answered) > 1:
            reasons.append(f"{len(answered)} task ids answered")
        if task_id is not None and answered and task_id not in answered:
            reasons.append("answered id is not the key's task")
        if task_id is not None and completed_events.get(task_id, 0) > 1:
            reasons.append(f"{completed_events[task_id]} completed result events")
        if reasons:
            counts["completed_twice"] += 1
            if len(twice_examples) < EXAMPLES:
                twice_examples.append({"key": key.key, "task_id": task_id, "why": reasons})
            continue
        if row is None:
            why = "gave_up" if key.gave_up else "rejected" if key.rejected else "not_in_db"
            counts["lost"] += 1
            lost_detail[why] += 1
            if len(lost_examples.setdefault(why, [])) < EXAMPLES:
                lost_examples[why].append(
                    {"key": key.key, "why": why, "attempts": key.attempts,
                     "outcomes": dict(key.outcomes), "rejected": key.rejected}
                )  # fmt: skip
            continue
        status = row["status"]
        task_events = by_task.get(task_id, [])
        if task_events and task_events[-1]["status"] != status:
            status_mismatch += 1
        if status == "completed":
            counts["completed_once"] += 1
            if not accepted:
                lost_detail["completed_but_never_accepted"] += 1
            if completed_events.get(task_id, 0) == 0:
                events_missing += 1
            if row["result"] != key.parameters:
                wrong_result += 1
        elif status in TERMINAL:
            counts[status] += 1
            found = examples.setdefault(status, [])
            if len(found) < EXAMPLES:
                found.append(_example(key, row))
        else:
            counts["lost"] += 1
            lost_detail[f"not_ended:{status}"] += 1
            if len(lost_examples.setdefault("not_ended", [])) < EXAMPLES:
                lost_examples["not_ended"].append(_example(key, row) | {"why": "not ended"})

    known = {str(r["id"]) for r in by_key.values()}
    dup_event_tasks = {e["task_id"] for e in events if by_event_id[e["event_id"]] > 1}
    multi_event_tasks = {t for t, evs in by_task.items() if len(evs) > 1}
    return {
        "attempted": len(keys),
        "submitted": counts["submitted"],
        "completed_once": counts["completed_once"],
        "completed_twice": counts["completed_twice"],
        "lost": counts["lost"],
        "failed": counts["failed"],
        "cancelled": counts["cancelled"],
        "timed_out": counts["timed_out"],
        "events_missing": events_missing,
        "events_duplicated": len(dup_event_tasks | multi_event_tasks),
        "events_duplicated_by": {
            "event_id": sum(1 for n in by_event_id.values() if n > 1),
            "task_id": len(multi_event_tasks),
        },
        "events_status_mismatch": status_mismatch,
        "events_unknown_task": sum(1 for t in by_task if t not in known),
        "wrong_result": wrong_result,
        "lost_detail": dict(lost_detail),
        "examples": {
            **{k: v for k, v in examples.items() if v},
            **({"completed_twice": twice_examples} if twice_examples else {}),
            **({"lost": lost_examples} if lost_examples else {}),
        },
    }


def check_probes(probes: list[KeyState], rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Probe tasks: each accepted one must be in PostgreSQL; every one there must complete
    (a probe whose answer never came may still have made its task)."""
    by_key = {r["idempotency_key"]: r for r in rows if r["idempotency_key"] is not None}
    found = [by_key[p.key] for p in probes if p.key in by_key]
    statuses = Counter(r["status"] for r in found)
    return {
        "attempted": len(probes),
        "accepted": sum(1 for p in probes if p.ids),
        "accepted_not_in_db": sum(1 for p in probes if p.ids and p.key not in by_key),
        "in_db": dict(statuses),
        "not_completed_examples": [
            {
                "task_id": str(r["id"]),
                "status": r["status"],
                "attempt": r["attempt"],
                "error": _short(r["error"]),
            }
            for r in found
            if r["status"] != "completed"
        ][:EXAMPLES],
    }


def mark_overlaps(faults: list[Fault], bound_s: float) -> None:
    """Name, for each fault, the other faults of a non-agent kind whose recovery windows
    (kill to first probe task taken, or the bound) meet its own: an agent's kill is taken
    for slow when tm:0's happened during it, so its time is not its own."""
    windows = [(f.at_s, f.at_s + (f.took_ms if f.took_ms is not None else bound_s * 1000) / 1000)
               for f in faults]  # fmt: skip
    for i, fault in enumerate(faults):
        fault.overlapped_by = [
            f"{other.kind}@{other.at_s}"
            for j, other in enumerate(faults)
            if j != i
            and other.kind != "agent"
            and windows[j][0] <= windows[i][1]
            and windows[i][0] <= windows[j][1]
        ]


def fault_summary(run: Run, schedule: dict[str, float], bound_s: float) -> dict[str, Any]:
    """Per kind: kills, and p50/max until a probe task was taken, readyz answered and the
    node ran again, over the faults no other non-agent fault overlapped (`overlapped`
    counts the others; `max_ms_all` is over all). `unrecovered`: no probe taken within
    the bound, overlapped or not."""
    mark_overlaps(run.faults, bound_s)
    summary: dict[str, Any] = {}
    for kind in KINDS:
        faults = [f for f in run.faults if f.kind == kind]
        clean = [f for f in faults if not f.overlapped_by]
        took = [f.took_ms for f in clean if f.took_ms is not None]
        took_all = [f.took_ms for f in faults if f.took_ms is not None]
        ready = [f.readyz_ms for f in clean if f.readyz_ms is not None]
        back = [f.back_ms for f in clean if f.back_ms is not None]
        summary[kind] = {
            "every_s": schedule[kind],
            "count": len(faults),
            "overlapped": len(faults) - len(clean),
            "p50_ms": _percentile(took, 0.5),
            "max_ms": round(max(took), 1) if took else None,
            "max_ms_all": round(max(took_all), 1) if took_all else None,
            "unrecovered": len(faults) - len(took_all),
            "readyz_p50_ms": _percentile(ready, 0.5),
            "readyz_max_ms": round(max(ready), 1) if ready else None,
            "back_p50_ms": _percentile(back, 0.5),
            "back_max_ms": round(max(back), 1) if back else None,
            "not_back": sum(1 for f in faults if f.back_ms is None),
            "skipped": dict(run.skipped[kind]),
        }
        if kind != "agent":  # answers while it was down (and healing)
            during: Counter[str] = Counter()
            for fault in faults:
                during.update(fault.http)
            summary[kind]["http_during"] = dict(during)
    return summary


def fault_answers(run: Run, bound_s: float) -> None:
    """Each non-agent fault's `http`: the non-2xx answers (load and probes) from the kill (or the
    store's stop) until a probe was taken and /readyz was green again (or the bound)."""
    for fault in run.faults:
        if fault.kind == "agent":
            continue
        down = (fault.back_ms or 0) if fault.kind in OUTAGES else 0
        after = max(fault.took_ms or bound_s * 1000, fault.readyz_ms or bound_s * 1000)
        healed = fault.at_s + (down + after) / 1000
        fault.http = dict(Counter(o for t, o in run.answers if fault.at_s <= t <= healed))


# ---- load --------------------------------------------------------------------------------


class RawHttp:
    """A lean HTTP/1.1 keep-alive client for the load (POSTs with a JSON body): httpx costs
    this process most of a core at a few dozen requests/s, CPU the system under test
    then lacks on 2 cores. Connections are reused; the caller bounds how many at once."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.headers = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(
        self, path: str, body: Any, headers: dict[str, str], timeout_s: float
    ) -> tuple[int, bytes, bool]:
        """Status, body, and whether a `Retry-After` header came with them."""
        return await asyncio.wait_for(self._post(path, body, headers), timeout_s)

    async def _post(self, path: str, body: Any, headers: dict[str, str]) -> tuple[int, bytes, bool]:
        data = json.dumps(body).encode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self.headers}{extra}"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        reader, writer = (
            self._idle.pop() if self._idle else await asyncio.open_connection(self.host, self.port)
        )
        try:
            writer.write(head.encode() + data)
            status_line = await reader.readline()
            if not status_line:
                raise ConnectionError("connection closed")
            status = int(status_line.split()[1])
            length, close, retry_after = 0, False, False
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "connection" and value.strip().lower() == "close":
                    close = True
                elif name == "retry-after":
                    retry_after = True
                elif name == "transfer-encoding":
                    raise ConnectionError(f"unexpected transfer-encoding {value.strip()}")
            payload = await reader.readexactly(length) if length else b""
        except BaseException:
            writer.close()
            raise
        if close:
            writer.close()
        else:
            self._idle.append((reader, writer))
        return status, payload, retry_after

    async def aclose(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


async def post_task(client: RawHttp, key: KeyState, run: Run, timeout_s: float) -> int | None:
    """One attempt; records its outcome, returns the status (None: no answer)."""
    key.attempts += 1
    body = {"title": "chaos", "required_capabilities": ["echo"], "parameters": key.parameters}
    try:
        status, payload, retry_after = await client.post(
            "/api/v1/tasks", body, {"Idempotency-Key": key.key}, timeout_s
        )
    except (OSError, TimeoutError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
        key.outcomes[type(exc).__name__] += 1
        run.answers.append((run.elapsed(), type(exc).__name__))
        return None
    outcome = str(status) if status != 503 or retry_after else "503 without Retry-After"
    key.outcomes[outcome] += 1
    if status not in (200, 201):
        run.answers.append((run.elapsed(), outcome))
    if status == 500 and len(run.errors_500) < EXAMPLES:
        run.errors_500.append(f"{run.elapsed():.1f}s {payload[:400].decode(errors='replace')}")
    if status in (200, 201):
        key.ids.append(json.loads(payload)["id"])
        if key.accepted_s is None:
            key.accepted_s = run.elapsed()
    elif status not in RETRY_STATUSES:
        key.rejected = f"{status} {payload[:200].decode(errors='replace')}"
    return status


async def submit(
    client: RawHttp,
    slots: asyncio.Semaphore,
    key: KeyState,
    run: Run,
    give_up_s: float,
    recheck: bool,
) -> None:
    """POST until accepted, retrying 429/5xx and connection errors with the same key; each
    attempt waits for one of the client's `slots` (its connections) first, as a client
    with a connection pool would (here, not in httpx's pool, whose waiters cost O(n) per
    released connection: thousands of them starve this process)."""
    began = time.monotonic()
    delay = 0.05
    while True:
        async with slots:
            left = give_up_s - (time.monotonic() - began)
            if left <= 0:
                key.gave_up = True
                return
            status = await post_task(client, key, run, max(1.0, min(30.0, left)))
        if key.ids or key.rejected:
            break
        if time.monotonic() - began + delay > give_up_s:
            key.gave_up = True
            return
        await asyncio.sleep(delay * random.uniform(0.5, 1.5))
        delay = min(delay * 2, 1.0)
    if recheck and status is not None and key.ids:
        # the same key once more, as a client that missed the answer would: same task, 200
        run.rechecks += 1
        async with slots:
            await post_task(client, key, run, 30.0)


async def load(
    client: RawHttp, run: Run, args: argparse.Namespace, pending: set[asyncio.Task[None]]
) -> None:
    """Open loop: key i is first POSTed at i / rate seconds, whatever came of the others."""
    prefix = uuid.uuid4().hex[:8]
    slots = asyncio.Semaphore(args.connections)
    index = 0
    while True:
        due = index / args.rate
        now = run.elapsed()
        if due >= args.duration:
            return
        if due > now:
            await asyncio.sleep(due - now)
        key = KeyState(f"chaos-{prefix}-{index}", {"i": index}, run.elapsed())
        run.keys.append(key)
        recheck = args.recheck_every > 0 and index % args.recheck_every == 0
        task = asyncio.create_task(submit(client, slots, key, run, args.give_up, recheck))
        pending.add(task)
        task.add_done_callback(pending.discard)
        index += 1


# ---- faults --------------------------------------------------------------------------------


def flatten(node: dict[str, Any], parent: str | None = None) -> list[dict[str, Any]]:
    """Every node of a tree snapshot, each with its parent's actor name."""
    nodes = [{**node, "parent": parent}]
    for child in node.get("children", []):
        nodes.extend(flatten(child, node.get("actor_name")))
    return nodes


async def tree_nodes(client: Any) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/supervisors/tree", timeout=10)
    response.raise_for_status()
    return flatten(response.json())


class TreeWatcher:
    """One `GET /api/v1/supervisors/tree` at a time, every `TREE_POLL_S`, shared by the
    kills (which pid) and the trackers (back with another pid?)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.nodes: list[dict[str, Any]] = []
        self.asked_at = float("-inf")
        self.errors: Counter[str] = Counter()
        self._changed = asyncio.Event()

    async def run(self) -> None:
        while True:
            asked = time.monotonic()
            try:
                self.nodes = await tree_nodes(self.client)
                self.asked_at = asked
                self._changed.set()
                self._changed = asyncio.Event()
            except Exception as exc:
                self.errors[type(exc).__name__] += 1
            await asyncio.sleep(TREE_POLL_S)

    async def since(self, asked_after: float, timeout_s: float) -> list[dict[str, Any]]:
        """A snapshot asked for after `asked_after` (TimeoutError if none comes in time)."""
        deadline = time.monotonic() + timeout_s
        while self.asked_at < asked_after:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return self.nodes


def pick_target(
    kind: str, nodes: list[dict[str, Any]], killed: set[int] | None = None
) -> dict[str, Any] | str:
    """The node to kill (running, with a pid not killed already), or why there is none."""
    killed = killed or set()
    if kind == "agent":
        agents = [
            n
            for n in nodes
            if str(n.get("actor_name", "")).startswith("agent:")
            and n.get("parent") == TARGET_NAMES["pool_supervisor"]
        ]
        running = [
            n
            for n in agents
            if n.get("state") == "running" and n.get("pid") and n["pid"] not in killed
        ]
        if not running:
            states = Counter(str(n.get("state")) for n in agents)
            return "no running agent (" + ", ".join(f"{s}={c}" for s, c in states.items()) + ")"
        return random.choice(running)
    found = [n for n in nodes if n.get("actor_name") == TARGET_NAMES[kind]]
    if not found:
        return "not in tree"
    if found[0].get("state") != "running" or not found[0].get("pid"):
        return f"state {found[0].get('state')}"
    if found[0]["pid"] in killed:
        return "killed already, not restarted yet"
    return found[0]


def serve_pids(kind: str, home: str) -> list[int]:
    """This run's processes of a Serve kind (ingress replicas, the HTTP proxy), found by
    their process title: Serve's actors are not in the tree."""
    import psutil

    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            title = " ".join(process.info["cmdline"] or [])
            if (
                title.startswith(SERVE_TITLES[kind])
                and process.environ().get("RAYVISOR_HOME") == home
            ):
                found.append(process.pid)
    return found


def serve_whole(kind: str, replicas: int) -> bool:
    """Whether Serve reports the kind whole: `replicas` ingress replicas RUNNING, or every
    proxy HEALTHY (a process may run long before Serve routes to it)."""
    from ray import serve

    status = serve.status()
    if kind == "proxy":
        states = [getattr(p, "value", p) for p in status.proxies.values()]
        return bool(states) and all(state == "HEALTHY" for state in states)
    app = status.applications.get("rayvisor")
    deployment = app.deployments.get("ingress") if app is not None else None
    if deployment is None:
        return False
    states = {getattr(k, "value", k): n for k, n in deployment.replica_states.items()}
    return states.get("RUNNING", 0) >= replicas


def sigkill(pid: int, home: str) -> str | None:
    """SIGKILL a Ray worker process of this run (its RAYVISOR_HOME is `home`: a pid from a
    stale snapshot, reused since by someone else's process, is left alone); returns why
    not, when it is not one."""
    import psutil

    try:
        process = psutil.Process(pid)
        title = " ".join([process.name(), *process.cmdline()])
    except psutil.Error as exc:
        return f"no such process: {type(exc).__name__}"
    if pid == os.getpid() or "ray::" not in title:
        return "not a ray worker"
    try:
        if process.environ().get("RAYVISOR_HOME") != home:
            return "not this run's worker"
    except psutil.Error as exc:
        return f"environment unreadable: {type(exc).__name__}"
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return "gone before the kill"
    return None


async def until(condition: Callable[[], Awaitable[bool]], bound_s: float, every_s: float) -> bool:
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if await condition():
                return True
        await asyncio.sleep(every_s)
    return False


async def probe_taken(client: RawHttp, run: Run, since: float, bound_s: float) -> float | None:
    """Milliseconds from `since` until a probe task POSTed after it is answered 201."""
    taken: list[float] = []
    flying: set[asyncio.Task[None]] = set()

    async def one() -> None:
        key = KeyState(f"probe-{uuid.uuid4().hex}", {"probe": True})
        run.probes.append(key)
        status = await post_task(client, key, run, max(1.0, since + bound_s - time.monotonic()))
        if status == 201 and not taken:
            taken.append((time.monotonic() - since) * 1000)

    deadline = since + bound_s
    while not taken and time.monotonic() < deadline:
        if len(flying) < PROBES_IN_FLIGHT:
            task = asyncio.create_task(one())
            flying.add(task)
            task.add_done_callback(flying.discard)
        await asyncio.sleep(PROBE_EVERY_S)
    if flying:  # each is bounded by its timeout; their outcomes are checked too
        await asyncio.wait(flying, timeout=bound_s)
    return round(taken[0], 1) if taken else None


async def track(
    fault: Fault,
    since: float,
    clients: dict[str, Any],
    watcher: TreeWatcher,
    run: Run,
    bound: float,
    home: str = "",
    expected: int = 1,
) -> None:
    """The three recoveries of one fault, concurrently (for a Serve kind, `expected` of
    its processes run again, none of them the killed one, and Serve reports it whole)."""

    async def ready() -> bool:
        return (await clients["meta"].get("/readyz", timeout=5)).status_code == 200

    async def back() -> bool:
        if fault.kind in OUTAGES:  # the outage sets its own: how long the store was down
            return True
        if fault.kind in SERVE_TITLES:  # as many of its kind run as before, without it
            pids = await asyncio.to_thread(serve_pids, fault.kind, home)
            if fault.pid in pids or len(pids) < expected:
                return False
            return await asyncio.to_thread(serve_whole, fault.kind, expected)
        nodes = await watcher.since(since, bound)
        return any(
            n.get("actor_name") == fault.target
            and n.get("state") == "running"
            and n.get("pid") not in (None, fault.pid)
            for n in nodes
        )

    async def timed(condition: Callable[[], Awaitable[bool]], every_s: float) -> float | None:
        if await until(condition, bound, every_s):
            return round((time.monotonic() - since) * 1000, 1)
        return None

    fault.took_ms, fault.readyz_ms, fault.back_ms = await asyncio.gather(
        probe_taken(clients["probe"], run, since, bound),
        timed(ready, 0.1),
        timed(back, TREE_POLL_S),
    )


async def inject(
    clients: dict[str, Any],
    watcher: TreeWatcher,
    run: Run,
    schedule: dict[str, float],
    args: argparse.Namespace,
    trackers: set[asyncio.Task[None]],
) -> None:
    """Kill each kind on its period (first at half of it) until the load ends; each kind on
    a loop of its own, so a slow tree lookup for one delays no other."""
    majors = asyncio.Lock()
    last_major = [-MAJOR_GAP_S]
    killed: set[int] = set()

    async def fire(kind: str) -> bool:
        """Kill one target of `kind`; False (and why, in `run.skipped`) if none was."""
        try:  # a snapshot at most 3 s old; the pids killed since are left out
            nodes = await watcher.since(time.monotonic() - 3.0, args.lookup_timeout)
        except TimeoutError:
            run.skipped[kind]["no fresh tree"] += 1
            return False
        expected = 1
        if kind in SERVE_TITLES:
            if not await asyncio.to_thread(serve_whole, kind, args.ingress_replicas):
                run.skipped[kind]["not whole yet"] += 1  # one fault at a time
                return False
            pids = await asyncio.to_thread(serve_pids, kind, args.home)
            expected = len(pids)
            alive = [pid for pid in pids if pid not in killed]
            target = (
                {"actor_name": SERVE_TITLES[kind], "pid": random.choice(alive)}
                if alive
                else "no such process"
            )
        else:
            target = pick_target(kind, nodes, killed)
        if isinstance(target, str):
            run.skipped[kind][target] += 1
            return False
        if run.elapsed() >= args.duration:
            run.skipped[kind]["load over"] += 1
            return False
        since = time.monotonic()
        why = sigkill(int(target["pid"]), args.home)
        if why is not None:
            run.skipped[kind][why] += 1
            return False
        killed.add(int(target["pid"]))
        if kind != "agent":
            last_major[0] = run.elapsed()
        fault = Fault(kind, round(run.elapsed(), 2), target["actor_name"], int(target["pid"]))
        run.faults.append(fault)
        task = asyncio.create_task(
            track(fault, since, clients, watcher, run, args.recover_timeout, args.home, expected)
        )
        trackers.add(task)
        task.add_done_callback(trackers.discard)
        return True

    async def kind_loop(kind: str, period: float) -> None:
        due = period / 2
        while True:
            if due > run.elapsed():
                await asyncio.sleep(due - run.elapsed())
            if run.elapsed() >= args.duration:
                return
            if kind == "agent":
                await fire(kind)
            else:
                async with majors:  # the previous major fault's recovery stays its own
                    wait = last_major[0] + MAJOR_GAP_S - run.elapsed()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    fired = await fire(kind)
                if not fired:  # not running right now (restarting, escalated): soon again
                    due = run.elapsed() + RETRY_SKIPPED_S
                    continue
            due += period
            while due <= run.elapsed():  # a slot missed while looking up: not made up for
                run.skipped[kind]["late"] += 1
                due += period

    async def outage(kind: str, at_s: float) -> None:
        """Stop the store at `at_s`, start it again `--outage-s` later; the recovery is
        timed from the start (`back_ms`: how long it was down)."""
        await asyncio.sleep(max(0.0, at_s - run.elapsed()))
        server = args.servers[kind]
        async with majors:  # no other major fault while the store is down or healing
            wait = last_major[0] + MAJOR_GAP_S - run.elapsed()
            if wait > 0:
                await asyncio.sleep(wait)
            fault = Fault(kind, round(run.elapsed(), 2), server.name, 0)
            run.faults.append(fault)
            stopped = time.monotonic()
            await asyncio.to_thread(server.stop)
            await asyncio.sleep(args.outage_s)  # the outage itself
            url = await asyncio.to_thread(server.start)
            if url != args.urls[kind]:
                run.skipped[kind][f"came back on another url {url}"] += 1
            since = time.monotonic()
            await track(fault, since, clients, watcher, run, args.recover_timeout)
            fault.back_ms = round((since - stopped) * 1000, 1)
            last_major[0] = run.elapsed()

    await asyncio.gather(
        *(kind_loop(kind, period) for kind, period in schedule.items()
          if period > 0 and kind not in OUTAGES),
        *(outage(kind, at_s) for kind, at_s in schedule.items() if at_s > 0 and kind in OUTAGES),
    )  # fmt: skip


# ---- progress ----------------------------------------------------------------------------


def progress_line(run: Run, inflight: int) -> str:
    outcomes: Counter[str] = Counter()
    for key in run.keys:
        outcomes.update(key.outcomes)
    accepted = sum(1 for k in run.keys if k.ids)
    errors = sum(n for o, n in outcomes.items() if o not in ("200", "201"))
    kills = Counter(f.kind for f in run.faults)
    last = run.faults[-1] if run.faults else None
    tail = (
        f" | last {last.kind}@{last.at_s:.1f}s took {last.took_ms or '...'} ms"
        if last is not None
        else ""
    )
    return (
        f"{run.elapsed():6.1f}s keys {len(run.keys)} accepted {accepted} in flight {inflight}"
        f" retried-answers {errors} (503: {outcomes['503']})"
        f" gave up {sum(k.gave_up for k in run.keys)}"
        f" | kills {dict(kills)}{tail}"
    )


async def show_progress(console: Any, run: Run, pending: set[asyncio.Task[None]]) -> None:
    """A live line on a terminal, a line every 5 s otherwise (stderr only)."""
    if console.is_terminal:
        from rich.live import Live

        with Live(console=console, refresh_per_second=2, transient=False) as live:
            while True:
                live.update(progress_line(run, len(pending)))
                await asyncio.sleep(0.5)
    while True:
        await asyncio.sleep(5)
        console.log(progress_line(run, len(pending)))


# ---- after the load ----------------------------------------------------------------------


async def drain(database_url: str, timeout_s: float) -> tuple[float, int, int]:
    """Wait (bounded) for every task to end and the outbox to empty; returns the seconds
    waited, the tasks not ended and the outbox rows not sent."""
    import asyncpg

    began = time.monotonic()
    conn = await asyncpg.connect(database_url)
    try:
        while True:
            active = await conn.fetchval(
                "SELECT count(*) FROM tasks WHERE status <> ALL($1::text[])", sorted(TERMINAL)
            )
            unsent = await conn.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            if (active == 0 and unsent == 0) or time.monotonic() - began > timeout_s:
                return round(time.monotonic() - began, 1), int(active), int(unsent)
            await asyncio.sleep(0.25)
    finally:
        await conn.close()


async def read_tasks(database_url: str) -> list[dict[str, Any]]:
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT id, idempotency_key, status, attempt, assigned_to, result, error,"
            " attempt_errors FROM tasks"
        )
    finally:
        await conn.close()
    decoded = []
    for row in rows:
        item = dict(row)
        for column in ("result", "error", "attempt_errors"):
            if isinstance(item[column], str):
                item[column] = json.loads(item[column])
        decoded.append(item)
    return decoded


async def read_results(nats_url: str, stream: str) -> list[dict[str, Any]]:
    """Every `tasks.*.result` message kept in the stream: task_id, event_id, status."""
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    from runtime.bus import Bus

    bus = await Bus.connect(nats_url, name="bench-chaos", stream=stream)
    try:
        info = await bus.js.stream_info(stream, subjects_filter="tasks.*.result")
        expected = sum((info.state.subjects or {}).values())
        sub = await bus.js.pull_subscribe(
            "tasks.*.result",
            stream=stream,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=60.0,
            ),
        )
        events: list[dict[str, Any]] = []
        idle = 0
        while len(events) < expected and idle < 3:
            try:
                batch = await sub.fetch(500, timeout=2)
            except NatsTimeout:
                idle += 1
                continue
            for msg in batch:
                payload = json.loads(msg.data)
                events.append(
                    {
                        "task_id": str(payload["task_id"]),
                        "event_id": (msg.headers or {}).get("Nats-Msg-Id")
                        or str(payload.get("event_id")),
                        "status": payload["status"],
                        "attempt": payload.get("attempt"),
                        "seq": msg.metadata.sequence.stream,
                    }
                )
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        events.sort(key=lambda e: e["seq"])
        return events
    finally:
        await bus.close()


# ---- the run -------------------------------------------------------------------------------


async def make_admin_key(database_url: str) -> str:
    from runtime.models.enums import Scope
    from runtime.store import api_keys
    from runtime.store.pool import create_pool

    pool = await create_pool(database_url, max_size=2)
    try:
        _, key = await api_keys.create(
            pool, "bench-chaos", [Scope.ADMIN], rate_per_s=1e9, burst=1_000_000_000
        )
        return key
    finally:
        await pool.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def wait_system(clients: dict[str, Any], timeout_s: float) -> None:
    """Until /readyz answers 200 and every target (tm:0, relay, pool, agents) runs."""

    async def ready() -> bool:
        if (await clients["meta"].get("/readyz", timeout=5)).status_code != 200:
            return False
        nodes = await tree_nodes(clients["meta"])
        agents = [n for n in nodes if n.get("parent") == TARGET_NAMES["pool_supervisor"]]
        others = all(not isinstance(pick_target(k, nodes), str) for k in TARGET_NAMES)
        return others and sum(n.get("state") == "running" for n in agents) >= AGENTS

    if not await until(ready, timeout_s, 0.2):
        raise TimeoutError(f"the system was not ready within {timeout_s}s")


async def chaos(
    url: str, api_key: str, database_url: str, nats_url: str, stream: str, args: argparse.Namespace
) -> dict[str, Any]:
    import httpx
    from rich.console import Console

    console = Console(stderr=True)
    schedule = {
        "agent": args.agent_every,
        "tm": args.tm_every,
        "relay": args.relay_every,
        "pool_supervisor": args.pool_supervisor_every,
        "ingress": args.ingress_every,
        "proxy": args.proxy_every,
        **{kind: OUTAGE_AT[kind] * args.duration if args.outages else 0.0 for kind in OUTAGES},
    }
    auth = {"Authorization": f"Bearer {api_key}"}
    load_client = RawHttp(url, auth)
    clients = {
        "probe": RawHttp(url, auth),
        "meta": httpx.AsyncClient(base_url=url, headers=auth, timeout=10),
    }
    try:
        await wait_system(clients, 120)
        watcher = TreeWatcher(clients["meta"])
        watching = asyncio.create_task(watcher.run())
        baseline = Run()
        baseline_ms = [
            await probe_taken(clients["probe"], baseline, time.monotonic(), 10) for _ in range(5)
        ]
        console.log(f"ready; probe baseline {baseline_ms} ms; load starts")

        run = Run()
        pending: set[asyncio.Task[None]] = set()
        trackers: set[asyncio.Task[None]] = set()
        progress = asyncio.create_task(show_progress(console, run, pending))
        try:
            await asyncio.gather(
                load(load_client, run, args, pending),
                inject(clients, watcher, run, schedule, args, trackers),
            )
            load_s = max(k.first_s for k in run.keys) if run.keys else 0.0
            console.log(f"load done after {load_s:.1f}s; {len(pending)} keys still retrying")
            if pending:
                await asyncio.wait(pending, timeout=args.give_up + 40)
            if trackers:
                await asyncio.wait(trackers, timeout=args.recover_timeout + 40)
        finally:
            for task in (progress, watching):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        settled_s = run.elapsed()
        console.log(f"keys settled at {settled_s:.1f}s; draining")
        drain_s, stuck, unsent = await drain(database_url, args.drain_timeout)
        console.log(f"drained in {drain_s}s: {stuck} tasks not ended, {unsent} events unsent")
        rows = await read_tasks(database_url)
        events = await read_results(nats_url, stream)
        console.log(f"read {len(rows)} tasks and {len(events)} result events")
    finally:
        await load_client.aclose()
        for client in clients.values():
            await client.aclose()

    outcomes: Counter[str] = Counter()
    for key in run.keys:
        outcomes.update(key.outcomes)
    figures = check(run.keys, rows, events)
    probe_outcomes: Counter[str] = Counter()
    for key in baseline.probes + run.probes:
        probe_outcomes.update(key.outcomes)
    fault_answers(run, args.recover_timeout)
    figures |= {
        "http_500": outcomes["500"] + probe_outcomes["500"],
        "http_500_examples": run.errors_500,
        "http_503_without_retry_after": outcomes["503 without Retry-After"]
        + probe_outcomes["503 without Retry-After"],
        "faults": fault_summary(run, schedule, args.recover_timeout),
        "probes": check_probes(baseline.probes + run.probes, rows),
        "probe_baseline_ms": [b for b in baseline_ms if b is not None],
        "http": dict(outcomes.most_common()),
        "gave_up": sum(k.gave_up for k in run.keys),
        "tree_errors": dict(watcher.errors),
        "rechecks": run.rechecks,
        "tasks_in_db": dict(Counter(r["status"] for r in rows)),
        "result_events": len(events),
        "load_s": round(load_s, 1),
        "settled_s": round(settled_s, 1),
        "drain_s": drain_s,
        "not_ended_after_drain": stuck,
        "outbox_unsent_after_drain": unsent,
        "fault_log": [asdict(f) for f in run.faults],
    }
    return figures


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--rate", type=float, default=200.0, help="new tasks per second")
    parser.add_argument("--agent-every", type=float, default=1.0, help="s between agent kills")
    parser.add_argument("--tm-every", type=float, default=10.0, help="s between tm:0 kills")
    parser.add_argument("--relay-every", type=float, default=15.0, help="s between relay kills")
    parser.add_argument(
        "--pool-supervisor-every", type=float, default=20.0, help="s between pool kills"
    )
    parser.add_argument(
        "--ingress-every", type=float, default=0.0, help="s between ingress replica kills"
    )
    parser.add_argument(
        "--proxy-every", type=float, default=0.0, help="s between Serve HTTP proxy kills"
    )
    parser.add_argument(
        "--ingress-replicas", type=int, default=2, help="replicas of the HTTP ingress"
    )
    parser.add_argument(
        "--outages",
        action="store_true",
        help="stop nats-server (at 20%% of --duration) and PostgreSQL (at 55%%) for --outage-s",
    )
    parser.add_argument("--outage-s", type=float, default=10.0, help="how long each is down")
    parser.add_argument("--give-up", type=float, default=60.0, help="s a key keeps retrying")
    parser.add_argument("--recover-timeout", type=float, default=60.0, help="bound per fault")
    parser.add_argument("--drain-timeout", type=float, default=120.0, help="bound after load")
    parser.add_argument(
        "--lookup-timeout", type=float, default=5.0, help="s to find a target's pid"
    )
    parser.add_argument("--connections", type=int, default=64, help="load client's pool")
    parser.add_argument(
        "--recheck-every", type=int, default=10, help="POST every Nth key again once (0: none)"
    )
    parser.add_argument("--seed", type=int, default=None, help="which agents get killed")
    args = parser.parse_args()
    periods = (args.agent_every, args.tm_every, args.relay_every, args.pool_supervisor_every,
               args.ingress_every, args.proxy_every, args.outage_s)  # fmt: skip
    if args.duration <= 0 or args.rate <= 0 or min(periods) < 0 or args.ingress_replicas < 1:
        parser.error("--duration and --rate must be > 0, the periods >= 0")
    if min(args.give_up, args.recover_timeout, args.drain_timeout) <= 0 or args.connections < 1:
        parser.error("--give-up, --recover-timeout, --drain-timeout and --connections > 0")
    return args


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # so that `finally` stops Serve, Ray and the services


def main() -> None:
    began = time.monotonic()
    args = parse_args()
    random.seed(args.seed)
    signal.signal(signal.SIGTERM, _terminate)

    import ray
    from ray import serve

    from runtime.config import load_settings
    from runtime.raycluster import init_ray
    from runtime.services import EmbeddedNats, EmbeddedPostgres, ensure_services, stop_services
    from runtime.store.migrations import migrate
    from serve.app import deploy
    from supervisors.tree import start_tree, stop_tree, tree_from_settings

    scratch = Path(tempfile.mkdtemp(prefix="rayvisor-bench-chaos-"))
    embedded = load_settings(home=scratch / "home")
    figures: dict[str, Any] = {}
    try:
        urls = ensure_services(embedded)
        pools = [{"id": POOL, "agent": "actors.builtin.echo:EchoAgent", "size": AGENTS}]
        settings = load_settings(
            home=scratch / "home",
            database_url=urls.database_url,
            nats_url=urls.nats_url,
            namespace=NAMESPACE,
            http_port=free_port(),
            tree={"pools": pools},
            http={"replicas": args.ingress_replicas},
        )
        args.home = str(settings.home)
        args.servers = {
            "nats": EmbeddedNats(settings.home),
            "postgres": EmbeddedPostgres(settings.home),
        }
        args.urls = {"nats": urls.nats_url, "postgres": urls.database_url}
        asyncio.run(migrate(urls.database_url))
        init_ray(
            settings,
            urls.database_url,
            urls.nats_url,
            namespace=NAMESPACE,
            num_cpus=2,
            address="local",
        )
        signal.signal(signal.SIGTERM, _terminate)  # Ray's core worker installed its own
        try:
            start_tree(tree_from_settings(settings), NAMESPACE, 120)
            url = deploy(settings)
            key = asyncio.run(make_admin_key(urls.database_url))
            figures = asyncio.run(
                chaos(url, key, urls.database_url, urls.nats_url, settings.stream_name, args)
            )
        finally:
            for step in (serve.shutdown, lambda: stop_tree(NAMESPACE, timeout_s=60)):
                try:
                    step()
                except Exception as exc:
                    print(f"cleanup: {exc!r}", file=sys.stderr)
            ray.shutdown()
    finally:
        stop_services(embedded)
        shutil.rmtree(scratch, ignore_errors=True)
    result = {
        "duration_s": args.duration,
        "rate": args.rate,
        **figures,
        "wall_s": round(time.monotonic() - began, 1),
    }
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
