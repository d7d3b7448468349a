"""A stand-in OpenAI-compatible server on 127.0.0.1: a real HTTP server in a thread.

Tests queue replies (a chat completion with some content, an HTTP error, a slow reply) and read back
every request it received (path, headers, JSON body).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    content: str | None = None  # the assistant message of a 200 chat completion
    status: int = 200
    error: str = ""  # message of an error body (status != 200)
    delay: float = 0.0  # seconds to wait before answering (a timeout when longer than the client's)
    raw: bytes | None = None  # a body sent as is


def chat_completion(content: str | None, model: str = "stub-model") -> dict:
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict


class StubLLMServer:
    """``with StubLLMServer() as server: server.queue(Reply(...)); ... server.url``."""

    def __init__(self):
        self.replies: deque[Reply | Callable[[Received], Reply]] = deque()
        self.default: Reply | Callable[[Received], Reply] | None = None
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    body = {"_raw": raw.decode("utf-8", "replace")}
                received = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with server._lock:
                    server.requests.append(received)
                    reply = server.replies.popleft() if server.replies else server.default
                if callable(reply):
                    reply = reply(received)
                if reply is None:
                    reply = Reply(status=500, error="the stub has no reply queued")
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.raw is not None:
                    payload = reply.raw
                elif reply.status == 200:
                    payload = json.dumps(chat_completion(reply.content, body.get("model", "stub-model"))).encode()
                else:
                    payload = json.dumps({"error": {"message": reply.error or "error", "type": "stub_error"}}).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def queue(self, *replies) -> None:
        self.replies.extend(replies)

    def __enter__(self) -> StubLLMServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def answer(entries: list[tuple[str, float, str]]) -> str:
    """A model reply in the requested JSON shape."""
    return json.dumps({"objects": [{"tag": t, "score": s, "caption": c} for t, s, c in entries]})
