"""A small OpenAI-compatible chat endpoint on loopback, for the model tests: it answers
`POST /v1/chat/completions` with "echo: <last message>", or with the statuses it is told
to give first (429 with Retry-After, 500, 400)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from helpers import free_port


class FakeOpenAI:
    def __init__(self) -> None:
        self.statuses: list[int] = []  # given first, one per request; then 200
        self.always: int | None = None  # every request gets this status
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                status = server.always or (server.statuses.pop(0) if server.statuses else 200)
                if status == 200:
                    last = body["messages"][-1]["content"]
                    payload: dict[str, Any] = {
                        "id": f"chatcmpl-{len(server.requests)}",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": f"echo: {last}"},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {
                            "prompt_tokens": len(str(body["messages"]).split()),
                            "completion_tokens": 2,
                            "total_tokens": len(str(body["messages"]).split()) + 2,
                        },
                    }
                else:
                    payload = {"error": {"message": f"told to answer {status}", "type": "test"}}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 429:
                    self.send_header("Retry-After", "0.1")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.base_url = f"http://127.0.0.1:{self._server.server_port}/v1"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
