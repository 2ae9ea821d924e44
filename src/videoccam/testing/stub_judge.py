"""A local OpenAI-compatible chat endpoint that answers from a script, for testing judges.

    with StubJudge(lambda messages: "{'pred': 'yes', 'score': 4}") as stub:
        judge = Judge(stub.url, "stub-model")

The script gets the request's messages and returns the reply text, or an ``int`` HTTP status to
fail with (500, 429, ...). ``replies=[...]`` answers from a list instead, in order. ``requests``
records every request body received. Served by a stdlib ``ThreadingHTTPServer`` on 127.0.0.1 and
a free port, in a daemon thread.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Script = Callable[[list[dict[str, Any]]], "str | int"]


class StubJudge:
    """See the module docstring."""

    def __init__(self, script: Script | None = None, *, replies: Sequence[str | int] | None = None) -> None:
        if (script is None) == (replies is None):
            raise ValueError("give a script or a list of replies")
        queue = list(replies or [])
        self.script: Script = script if script is not None else (lambda messages: queue.pop(0))
        self.requests: list[dict[str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                stub.requests.append(body)
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                reply = stub.script(body.get("messages", []))
                if isinstance(reply, int):
                    return self._send(reply, {"error": {"message": f"stub failure {reply}", "type": "server_error"}})
                self._send(200, {
                    "id": f"stub-{len(stub.requests)}", "object": "chat.completion", "created": int(time.time()),
                    "model": body.get("model", "stub"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                })

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> StubJudge:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
