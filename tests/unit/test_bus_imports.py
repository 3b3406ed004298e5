"""`import_nats`: an agent host's nats-py comes without aiohttp (only its WebSocket
transport needs it), unless a `ws://` server asks for it. Each case in a fresh interpreter:
what is imported is process-wide."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
from runtime.bus import import_nats
import_nats({servers!r})
from nats.aio.client import Client
Client()
print("aiohttp" in sys.modules)
"""


@pytest.mark.parametrize(
    ("servers", "aiohttp_loaded"),
    [("nats://127.0.0.1:4222", False), ("tls://a:4222,nats://b:4222", False),
     ("ws://127.0.0.1:8080", True)],
)  # fmt: skip
def test_nats_loads_aiohttp_only_for_websocket_servers(servers: str, aiohttp_loaded: bool) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(servers=servers)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.strip().splitlines()[-1] == str(aiohttp_loaded)


def test_a_later_import_of_aiohttp_still_works() -> None:
    probe = PROBE.format(servers="nats://127.0.0.1:4222") + "import aiohttp\nprint('ok')\n"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.split() == ["False", "ok"]
