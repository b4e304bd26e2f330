"""The fake Messages API's HTTP side: its answers (`Reply`, `Lines`, `Hangup`, errors in the
API's shape, refusals at the door) and the loopback server (`serve`) that puts a `FakeModel`
before other processes, `POST /v1/messages` and the Message Batches API's paths alike.

Private to `machine.testing.fake`, which exports its public names.
"""

from __future__ import annotations

import http
import json
import socket
import struct
import sys
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, Literal, Protocol
from urllib.parse import urlsplit

import attrs

from runjournal.machine.testing._fake_values import digest, tool_named


@attrs.frozen
class Reply:
    """An HTTP answer: status, headers and JSON body."""

    status: int
    headers: Mapping[str, str]
    body: Mapping[str, Any]


@attrs.frozen
class Lines:
    """An HTTP answer in JSON Lines (the results of a message batch): one JSON value a line."""

    status: int
    headers: Mapping[str, str]
    lines: tuple[Mapping[str, Any], ...]

    def content(self) -> bytes:
        lines = (json.dumps(line, ensure_ascii=False) + "\n" for line in self.lines)
        return "".join(lines).encode()


@attrs.frozen
class Hangup:
    """No answer: the connection is reset, or left hanging until the client times out."""

    kind: Literal["reset", "timeout"]
    request_id: str


BATCHES = "/v1/messages/batches"
"""The path of the Message Batches API, served by `machine.testing._fake_batches`."""


def is_batches(path: str) -> bool:
    """Whether `path` is one of the Message Batches API's."""
    return path == BATCHES or path.startswith(BATCHES + "/")


class Served(Protocol):
    """What the server asks of the model it puts before other processes (`fake.FakeModel`): a
    protocol, so that this module need not import the one that imports it."""

    @property
    def timeout_seconds(self) -> float: ...

    def _handle(
        self, raw: bytes, headers: Mapping[str, str], wait: Callable[[float], bool]
    ) -> tuple[attrs.AttrsInstance, Reply | Hangup]: ...

    def _batch_request(
        self, method: str, url: str, raw: bytes, headers: Mapping[str, str]
    ) -> tuple[attrs.AttrsInstance, Reply | Lines | Hangup]: ...


def error(status: int, kind: str, message: str, request_id: str, **headers: str) -> Reply:
    """An error answer, with the API's error body."""
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}
    return Reply(status, {"request-id": request_id, **headers}, body)


def not_found(method: str, path: str) -> Reply:
    """The answer to anything but `POST /v1/messages` and the Message Batches API."""
    request_id = "req_fake_" + digest(method, path, "not found")[:24]
    message = f"{method} {path}: the fake serves POST /v1/messages and {BATCHES} only"
    return error(404, "not_found_error", message, request_id)


def refuse(body: Any, headers: Mapping[str, str]) -> tuple[int, str, str] | None:
    """The status, error type and message of a request refused at the door; None if none."""
    refused = unauthenticated(headers)
    if refused is not None:
        return refused
    problem = invalid(body)
    return None if problem is None else (400, "invalid_request_error", problem)


def unauthenticated(headers: Mapping[str, str]) -> tuple[int, str, str] | None:
    """The 401 of a request without a key; None if it has one."""
    lowered = {k.lower(): v for k, v in headers.items()}
    bearer = lowered.get("authorization", "").removeprefix("Bearer ").strip()
    if not lowered.get("x-api-key", "").strip() and not bearer:
        return 401, "authentication_error", "x-api-key header is required"
    return None


def invalid(body: Any) -> str | None:
    """What is wrong with a request body, the way the API words it; None if nothing."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    for field in ("model", "max_tokens", "messages"):
        if field not in body:
            return f"{field}: Field required"
    if not isinstance(body["messages"], list) or not isinstance(body["max_tokens"], int):
        return "messages must be a list and max_tokens an integer"
    if body["max_tokens"] < 1:
        return "max_tokens: must be at least 1"
    if body.get("stream"):
        return "stream: the fake Messages API answers non-streaming requests only"
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "tool":
        name = choice.get("name")
        return None if tool_named(body, name) else f"tool_choice: no tool {name!r} in tools"
    return None


class _Httpd(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], model: Served, log: IO[str] | None) -> None:
        super().__init__(address, _Handler)
        self.model = model
        self.log = log
        self.log_lock = threading.Lock()
        self.stopping = threading.Event()
        self._aborted: set[socket.socket] = set()

    def abort(self, connection: socket.socket) -> None:
        """Close `connection` with a TCP reset instead of an orderly FIN."""
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._aborted.add(connection)

    def shutdown_request(self, request: Any) -> None:
        if request in self._aborted:
            self._aborted.discard(request)
            self.close_request(request)  # no shutdown(SHUT_WR): that would send a FIN first
            return
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # the client went away (a run killed mid-request): nothing went wrong here
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Httpd

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        raw = self.rfile.read(length) if length > 0 else b""
        if is_batches(path):
            self._batches(raw)
            return
        if path != "/v1/messages":
            self._send(not_found("POST", path))
            return
        model = self.server.model
        # The latency is spent waiting on `stopping`, so that closing the server ends it at once.
        seen, reply = model._handle(raw, dict(self.headers.items()), self.server.stopping.wait)
        self._answer(seen, reply)

    def _batches(self, raw: bytes) -> None:
        host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
        url = f"http://{host}{self.path}"  # results_url points back at this server
        headers = dict(self.headers.items())
        self._answer(*self.server.model._batch_request(self.command, url, raw, headers))

    def _answer(self, seen: attrs.AttrsInstance, reply: Reply | Lines | Hangup) -> None:
        model = self.server.model
        status = reply.status if isinstance(reply, Reply | Lines) else None
        log = self.server.log
        if log is not None:
            line = {**attrs.asdict(seen), "status": status}
            with self.server.log_lock:  # flushed before answering: a killed client can't lose it
                if not log.closed:  # closed by `FakeServer.close` while this request waited
                    log.write(json.dumps(line) + "\n")
                    log.flush()
        self.close_connection = True
        if isinstance(reply, Reply | Lines):
            self._send(reply)
        elif reply.kind == "reset":
            self.server.abort(self.connection)
        else:
            self.server.stopping.wait(model.timeout_seconds)  # then close without answering

    def _other(self) -> None:
        path = urlsplit(self.path).path
        if is_batches(path) and self.command in ("GET", "DELETE"):
            self._batches(b"")
            return
        self._send(not_found(self.command, path))

    do_GET = do_PUT = do_PATCH = do_DELETE = do_HEAD = _other

    def _send(self, reply: Reply | Lines) -> None:
        if isinstance(reply, Lines):
            data, kind = reply.content(), "application/x-jsonl"
        else:
            data, kind = json.dumps(reply.body, ensure_ascii=False).encode(), "application/json"
        try:
            reason = http.HTTPStatus(reply.status).phrase
        except ValueError:
            reason = "Overloaded" if reply.status == 529 else ""
        try:
            self.send_response(reply.status, reason)
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except ConnectionError:
            pass  # the client went away (or was killed): nothing left to tell it

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the JSON log is the record, and stderr noise helps no test."""


class FakeServer:
    """The fake on a loopback HTTP server, in a daemon thread; a context manager."""

    def __init__(self, model: Served, *, host: str, port: int, log: Path | None) -> None:
        self._log = log.open("a", encoding="utf-8") if log is not None else None
        self._httpd = _Httpd((host, port), model, self._log)
        self.url = f"http://{host}:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
            name=f"fake-anthropic {self.url}",
        )  # fmt: skip
        self._thread.start()
        self._closed = False

    def close(self) -> None:
        """Stop serving; requests still waiting (out their latency, or on a `timeout` fault)
        end at once, unanswered. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._httpd.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
        if self._log is not None:
            with self._httpd.log_lock:
                self._log.close()

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(
    model: Served, *, host: str = "127.0.0.1", port: int = 0, log: Path | None = None
) -> FakeServer:
    """Serve `model` at http://HOST:PORT (port 0: any free one), appending to `log` if given."""
    return FakeServer(model, host=host, port=port, log=log)
