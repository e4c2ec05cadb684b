"""A real local HTTP server speaking the OpenAI chat-completions protocol, scriptable per test.

    with FakeOpenAI(api_key="test") as server:        # listens on 127.0.0.1:<free port>
        server.script(reply_json({...}), reply_error(429, "slow down", retry_after="7"))
        ... point LLM_BASE_URL at server.base_url ...
        server.requests                                # every request received, parsed

Each request takes the next scripted reply; when the script is empty the `responder` (a function of
the request) answers, and without one the server answers 500 so a test never passes by accident.
A wrong `Authorization: Bearer` key gets the real 401 body. Delays wait on an event that `close()`
sets, so a test never leaves a thread sleeping.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self


@dataclass
class Reply:
    """One scripted answer: a completion (`content`) or an error (`status` >= 400 with `message`)."""

    content: str | None = None
    status: int = 200
    message: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay_seconds: float = 0.0
    prompt_tokens: int | None = None  # None: a quarter of the request's characters
    completion_tokens: int | None = None  # None: a quarter of the content's characters
    finish_reason: str = "stop"  # "length" as a server says when the output limit cut the answer
    raw_body: str | None = None  # sent as is with `content_type` instead of a completion (a web page...)
    content_type: str = "application/json"


def reply_json(answer: Any, **kwargs: Any) -> Reply:
    """A completion whose content is `answer` as JSON (non-ASCII kept as is, as real servers do)."""
    return Reply(content=json.dumps(answer, ensure_ascii=False), **kwargs)


def reply_text(content: str, **kwargs: Any) -> Reply:
    return Reply(content=content, **kwargs)


def reply_error(status: int, message: str, *, retry_after: str | None = None, **kwargs: Any) -> Reply:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return Reply(status=status, message=message, headers=headers, **kwargs)


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    received_at: float = field(default_factory=time.monotonic)  # seconds, monotonic clock

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages", []))

    @property
    def system(self) -> str:
        return str(self.messages[0]["content"])

    @property
    def user(self) -> str:
        """The first user message: the rendered data (a repair request appends more turns)."""
        return next(str(m["content"]) for m in self.messages if m["role"] == "user")

    @property
    def last(self) -> str:
        return str(self.messages[-1]["content"])

    @property
    def text(self) -> str:
        return "\n".join(str(m["content"]) for m in self.messages)

    def json_lines(self) -> list[dict[str, Any]]:
        """Every line of the data prompt that is a JSON object (topics, messages, items, sources)."""
        lines = []
        for line in self.user.splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines

    def message_ids(self) -> list[int]:
        return [line["id"] for line in self.json_lines() if isinstance(line.get("id"), int)]

    def topic_ids(self) -> list[str]:
        return [
            line["id"] for line in self.json_lines() if isinstance(line.get("id"), str) and "title" in line
        ]


Responder = Callable[[RecordedRequest], Reply]


class FakeOpenAI:
    """The server; use as a context manager (or call `close()`)."""

    def __init__(self, api_key: str = "test", model: str = "fake-model") -> None:
        self.api_key = api_key
        self.model = model
        self.requests: list[RecordedRequest] = []
        self.responder: Responder | None = None
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # --- used by the handler thread -----------------------------------------------------------

    def _next_reply(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
            if self._script:
                return self._script.popleft()
        if self.responder is not None:
            return self.responder(request)
        return reply_error(500, "the test scripted no reply for this request")

    def _sleep(self, seconds: float) -> None:
        self._closing.wait(seconds)


def _handler_for(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return None

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            request = RecordedRequest(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, _error_body(f"unknown path {self.path}", "invalid_request_error"))
                return
            if request.headers.get("authorization") != f"Bearer {fake.api_key}":
                with fake._lock:
                    fake.requests.append(request)
                self._send(401, _error_body("Incorrect API key provided.", "invalid_request_error"))
                return
            reply = fake._next_reply(request)
            if reply.delay_seconds:
                fake._sleep(reply.delay_seconds)
            if reply.status >= 400:
                self._send(reply.status, _error_body(reply.message, "server_error"), reply.headers)
                return
            if reply.raw_body is not None:
                self._send(200, reply.raw_body, reply.headers, reply.content_type)
                return
            self._send(200, _completion(fake.model, request, reply), reply.headers)

        def _send(
            self,
            status: int,
            payload: dict[str, Any] | str,
            headers: dict[str, str] | None = None,
            content_type: str = "application/json",
        ) -> None:
            text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
            data = text.encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the client gave up (its timeout): nothing left to answer
                return

    return Handler


def _error_body(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _completion(model: str, request: RecordedRequest, reply: Reply) -> dict[str, Any]:
    content = reply.content or ""
    prompt = reply.prompt_tokens if reply.prompt_tokens is not None else len(request.text) // 4
    completion = reply.completion_tokens if reply.completion_tokens is not None else len(content) // 4
    return {
        "id": f"chatcmpl-{len(request.text)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.body.get("model", model),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": reply.finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }
