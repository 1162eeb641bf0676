"""A real, scriptable HTTP server that speaks the OpenAI chat-completions protocol, for tests.

It listens on 127.0.0.1 (a free port chosen by the OS) in a background thread (stdlib ``ThreadingHTTPServer``) and
answers ``POST /v1/chat/completions`` (and ``POST /chat/completions``) with proper ``chat.completion`` JSON, ``usage``
tokens included. The code under test talks to it through the real ``openai`` SDK over real HTTP: nothing is patched.

What it answers, for each request, is the first of:

1. the next scripted reply (``server.script(reply, ...)``, first in, first out);
2. the first matching rule (``server.when(match, reply, times=None)``; ``match`` is a substring of the request's text
   or a function ``request -> bool``; ``times`` bounds how often the rule fires);
3. the default responder (``server.responder = fn``: request JSON -> answer text or a reply object); ``"OK"`` if none.

A reply is answer text (``str``) or one of the reply objects below:

``Answer(text, prompt_tokens=None, completion_tokens=None)``  a normal completion (tokens default to word counts);
``Delay(seconds, then=None)``                 wait, then answer (the client should time out first);
``Status(code, body=None, headers=None)``     an HTTP error with an OpenAI-style error body;
``RateLimited(retry_after=0.5)``              HTTP 429 with a ``Retry-After`` header (seconds);
``ServerError(code=500)``, ``TooLarge()``     HTTP 5xx, HTTP 413;
``NotJSON(body, status=200, content_type)``   a body that is not JSON (an HTML error page by default).

``server.max_body_bytes``: requests whose body is larger get HTTP 413 (as a proxy in front of an LLM would).

Every request is recorded (``server.requests``: :class:`RecordedRequest` with path, headers, raw body, parsed JSON,
and helpers ``model``, ``messages``, ``authorization``, ``text``, ``image_urls``), including those answered with a
fault. ``server.reset()`` forgets the script, rules, responder and records.

The server is shared by the test process and any subprocess it starts (a Celery worker reaches it through the URL in
its environment); ``tests.fakes.fixtures`` keeps one per test session.
"""
from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Union

# ------------------------------------------------------------------------------------------------ replies


@dataclass(frozen=True)
class Answer:
    """A normal completion whose message content is `text`."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str = "stop"


@dataclass(frozen=True)
class Delay:
    """Wait `seconds` before answering (with `then`, or the default responder); a client with a shorter timeout
    gives up first and the late answer goes nowhere."""

    seconds: float
    then: "Reply | None" = None


@dataclass(frozen=True)
class Status:
    """An HTTP error status with an OpenAI-style JSON error body (or `body` as given: dict -> JSON, str -> text)."""

    code: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def RateLimited(retry_after: float = 0.5) -> Status:  # noqa: N802 - reads as a reply type
    """HTTP 429 with ``Retry-After: <seconds>``."""
    return Status(429, {"error": {"message": "Rate limit reached, slow down.", "type": "rate_limit_error",
                                  "code": "rate_limit_exceeded"}},
                  {"Retry-After": f"{retry_after:g}"})


def ServerError(code: int = 500) -> Status:  # noqa: N802
    return Status(code, {"error": {"message": "The server had an error while processing your request.",
                                   "type": "server_error"}})


def TooLarge() -> Status:  # noqa: N802
    return Status(413, {"error": {"message": "Request entity too large.", "type": "invalid_request_error"}})


@dataclass(frozen=True)
class NotJSON:
    """A body that is not JSON (by default an HTML page, as a proxy in front of a model server sends)."""

    body: str = "<html><body><h1>502 Bad Gateway</h1></body></html>"
    status: int = 200
    content_type: str = "text/html; charset=utf-8"


Reply = Union[str, Answer, Delay, Status, NotJSON]


# ----------------------------------------------------------------------------------------------- requests


@dataclass
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    received_at: float

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((value for key, value in self.headers.items() if key.lower() == wanted), None)

    @property
    def authorization(self) -> str | None:
        return self.header("Authorization")

    @property
    def model(self) -> str | None:
        return self.json.get("model") if isinstance(self.json, dict) else None

    @property
    def messages(self) -> list[dict]:
        return list(self.json.get("messages") or []) if isinstance(self.json, dict) else []

    def _parts(self):
        for message in self.messages:
            content = message.get("content")
            if isinstance(content, str):
                yield {"type": "text", "text": content}
            elif isinstance(content, list):
                yield from (part for part in content if isinstance(part, dict))

    @property
    def text(self) -> str:
        """All text of all messages, joined with newlines."""
        return "\n".join(part.get("text", "") for part in self._parts() if part.get("type") == "text")

    @property
    def image_urls(self) -> list[str]:
        """The URLs (often data: URLs) of every image part, in order."""
        urls = []
        for part in self._parts():
            if part.get("type") == "image_url":
                image = part.get("image_url")
                urls.append(image.get("url") if isinstance(image, dict) else image)
        return urls


@dataclass
class _Rule:
    match: Callable[[RecordedRequest], bool]
    reply: Reply | Callable[[RecordedRequest], Reply]
    times: int | None


# ------------------------------------------------------------------------------------------------- server


class ChatServer:
    """The server (see the module docstring). ``with ChatServer() as server:`` or ``start()`` / ``close()``."""

    paths = ("/v1/chat/completions", "/chat/completions")

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._ids = itertools.count(1)
        self._script: list[Reply] = []
        self._rules: list[_Rule] = []
        self.responder: Callable[[dict], Reply] | None = None
        self.max_body_bytes: int | None = None
        self.requests: list[RecordedRequest] = []
        self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ----- lifecycle

    @property
    def host(self) -> str:
        return self._httpd.server_address[0]

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """The base URL to give an OpenAI client (``.../v1``)."""
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> "ChatServer":
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-chat-server", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(5)
        self._httpd.server_close()

    def __enter__(self) -> "ChatServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ----- scripting

    def reset(self) -> None:
        """Forget scripted replies, rules, the responder, the body limit and the recorded requests."""
        with self._lock:
            self._script.clear()
            self._rules.clear()
            self.responder = None
            self.max_body_bytes = None
            self.requests.clear()

    def script(self, *replies: Reply) -> "ChatServer":
        """Queue replies; each answers exactly one request, in order, before rules and the responder."""
        with self._lock:
            self._script.extend(replies)
        return self

    def when(self, match: str | Callable[[RecordedRequest], bool], reply: Reply | Callable[[RecordedRequest], Reply],
             *, times: int | None = None) -> "ChatServer":
        """Answer requests that `match` (a substring of the request's text, or a predicate) with `reply` (or
        ``reply(request)``), at most `times` times (None: always)."""
        predicate = (lambda request: match in request.text) if isinstance(match, str) else match
        with self._lock:
            self._rules.append(_Rule(predicate, reply, times))
        return self

    @property
    def pending(self) -> int:
        """Scripted replies not yet used."""
        with self._lock:
            return len(self._script)

    def chat_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == "POST" and r.path in self.paths]

    # ----- answering

    def _choose(self, request: RecordedRequest) -> Reply:
        with self._lock:
            if self.max_body_bytes is not None and len(request.body) > self.max_body_bytes:
                return TooLarge()
            if self._script:
                return self._script.pop(0)
            for rule in self._rules:
                if rule.times is not None and rule.times <= 0:
                    continue
                if rule.match(request):
                    if rule.times is not None:
                        rule.times -= 1
                    return rule.reply(request) if callable(rule.reply) else rule.reply
            responder = self.responder
        return responder(request.json) if responder is not None else "OK"

    def completion(self, request: RecordedRequest, answer: Answer) -> dict:
        words_in = len(request.text.split())
        return {
            "id": f"chatcmpl-fake-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.model or "unknown",
            "system_fingerprint": "fake-chat-server",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": answer.text, "refusal": None},
                "logprobs": None,
                "finish_reason": answer.finish_reason,
            }],
            "usage": {
                "prompt_tokens": answer.prompt_tokens if answer.prompt_tokens is not None else words_in,
                "completion_tokens": (answer.completion_tokens if answer.completion_tokens is not None
                                      else len(answer.text.split())),
                "total_tokens": ((answer.prompt_tokens if answer.prompt_tokens is not None else words_in)
                                 + (answer.completion_tokens if answer.completion_tokens is not None
                                    else len(answer.text.split()))),
            },
        }

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "FakeChatServer/1.0"

            def log_message(self, format, *args):  # noqa: A002 - stdlib signature; keep test output quiet
                pass

            def _read_body(self) -> bytes:
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().strip().split(b";")[0] or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(body)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
                    self.close_connection = True  # the client gave up (timed out) before the answer

            def _send_json(self, status: int, payload: Any, headers: dict | None = None) -> None:
                self._send(status, json.dumps(payload).encode(), "application/json", headers)

            def do_GET(self):  # noqa: N802
                self._read_body()
                if self.path.rstrip("/") in ("/v1/models", "/models"):
                    self._send_json(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})
                else:
                    self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

            def do_POST(self):  # noqa: N802
                raw = self._read_body()
                try:
                    parsed = json.loads(raw) if raw else None
                except ValueError:
                    parsed = None
                request = RecordedRequest("POST", self.path.split("?")[0], dict(self.headers.items()), raw, parsed,
                                          time.monotonic())
                with server._lock:
                    server.requests.append(request)
                if request.path not in server.paths:
                    self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                    return
                if not isinstance(parsed, dict) or not isinstance(parsed.get("messages"), list):
                    self._send_json(400, {"error": {"message": "body must be JSON with a messages list",
                                                    "type": "invalid_request_error"}})
                    return
                self._answer(request, server._choose(request))

            def _answer(self, request: RecordedRequest, reply: Reply) -> None:
                if isinstance(reply, Delay):
                    if server._closing.wait(reply.seconds):
                        return
                    then = reply.then
                    if then is None:
                        responder = server.responder
                        then = responder(request.json) if responder is not None else "OK"
                    self._answer(request, then)
                elif isinstance(reply, str):
                    self._send_json(200, server.completion(request, Answer(reply)))
                elif isinstance(reply, Answer):
                    self._send_json(200, server.completion(request, reply))
                elif isinstance(reply, Status):
                    body = reply.body
                    if body is None:
                        body = {"error": {"message": f"HTTP {reply.code}", "type": "error"}}
                    if isinstance(body, (dict, list)):
                        self._send_json(reply.code, body, reply.headers)
                    else:
                        self._send(reply.code, str(body).encode(), "text/plain; charset=utf-8", reply.headers)
                elif isinstance(reply, NotJSON):
                    self._send(reply.status, reply.body.encode(), reply.content_type)
                else:
                    raise TypeError(f"unknown reply {reply!r}")

        return Handler
