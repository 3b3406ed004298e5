"""NATS as its server counts it: nats-server's HTTP monitoring endpoint (`/varz`), and rates
over the last interval.

The server counts the messages and bytes it has received from clients (`in_*`) and sent to
them (`out_*`, once per delivery) since it started. A rate is the difference between two
samples over the seconds between them. `NatsMonitor.figures()` takes a sample when the
last one is at least `min_interval_s` old, so the rates are over the interval between the
latest two samples (callers asking more often get the same figures again, and the server
is asked at most once per interval). A server that restarted in between (a new server id,
or counters that went back) gives no rates until its next sample.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx

__all__ = ["NatsMonitor", "NatsRates", "NatsSample", "rates_between"]


@dataclass(frozen=True)
class NatsSample:
    """One reading of `/varz`; `at` is this process's monotonic clock when it came."""

    at: float
    server_id: str
    in_msgs: int
    out_msgs: int
    in_bytes: int
    out_bytes: int
    connections: int

    @classmethod
    def from_varz(cls, varz: dict[str, object], at: float) -> NatsSample:
        def count(key: str) -> int:
            return int(varz.get(key) or 0)  # type: ignore[call-overload]

        return cls(
            at=at,
            server_id=str(varz.get("server_id", "")),
            in_msgs=count("in_msgs"),
            out_msgs=count("out_msgs"),
            in_bytes=count("in_bytes"),
            out_bytes=count("out_bytes"),
            connections=count("connections"),
        )


@dataclass(frozen=True)
class NatsRates:
    """Per-second rates over `interval_s`, between two samples."""

    interval_s: float
    in_msgs_per_s: float
    out_msgs_per_s: float
    in_bytes_per_s: float
    out_bytes_per_s: float


def rates_between(earlier: NatsSample, later: NatsSample) -> NatsRates | None:
    """The rates from `earlier` to `later`; None when they are not of one server's life (it
    restarted: another id, or a counter went back) or no time passed."""
    seconds = later.at - earlier.at
    counters = ("in_msgs", "out_msgs", "in_bytes", "out_bytes")
    deltas = [getattr(later, name) - getattr(earlier, name) for name in counters]
    if seconds <= 0 or earlier.server_id != later.server_id or min(deltas) < 0:
        return None
    return NatsRates(round(seconds, 3), *(round(delta / seconds, 3) for delta in deltas))


class NatsMonitor:
    """Samples one nats-server's `/varz` and keeps the latest two samples."""

    def __init__(self, url: str, *, min_interval_s: float = 1.0, timeout_s: float = 2.0) -> None:
        self.url = url.rstrip("/")
        self.min_interval_s = min_interval_s
        self._http = httpx.AsyncClient(timeout=timeout_s)
        self._lock = asyncio.Lock()
        self._latest: NatsSample | None = None
        self._rates: NatsRates | None = None

    async def _sample(self) -> NatsSample:
        response = await self._http.get(f"{self.url}/varz")
        response.raise_for_status()
        return NatsSample.from_varz(response.json(), time.monotonic())

    async def figures(self) -> tuple[NatsSample, NatsRates | None]:
        """The latest sample (taken now if the last is `min_interval_s` old) and the rates
        over the interval that ends at it (None until there are two samples of one server).
        Raises `httpx.HTTPError` when the server does not answer."""
        async with self._lock:
            latest = self._latest
            if latest is None or time.monotonic() - latest.at >= self.min_interval_s:
                sample = await self._sample()
                self._rates = rates_between(latest, sample) if latest else None
                self._latest = latest = sample
            return latest, self._rates

    async def close(self) -> None:
        await self._http.aclose()
