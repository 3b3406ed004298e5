"""Tools the tests register as `custom` tools (importable as `tool_functions:...`)."""

from __future__ import annotations

calls: list[str] = []


async def flaky(fail: bool = False, note: str = "") -> dict[str, str]:
    """Fails when told to: a tool whose backend is down."""
    calls.append(note)
    if fail:
        raise ConnectionError("backend down")
    return {"note": note}


async def not_json() -> object:
    return object()


def not_async(x: int) -> int:
    return x
