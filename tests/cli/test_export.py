"""Tests for `journal export --otlp`, run as a real subprocess against a real OTLP/HTTP receiver
(an HTTP server in the test, decoding what it is posted with OpenTelemetry's protobuf types).

A run is exported as one trace of spans carrying the GenAI conventions' attributes; bad input
(an unknown run, a receiver that cannot be reached, an endpoint that is no URL) is one line on
stderr and a non-zero exit; and the journal is left byte for byte as it was.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, cli, journal_command, one_line_error
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from runjournal.journal import open_store, tracing


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP receiver on loopback: keeps each request posted to /v1/traces."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[ExportTraceServiceRequest] = []
        self.paths: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.paths.append(self.path)
        if self.path != "/v1/traces":
            self.send_error(404)
            return
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.server.received.append(request)
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the test reads what was received, not the server's log


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def triage(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A journal holding one triage run, executed against the fake model."""
    folder = tmp_path_factory.mktemp("export")
    db = folder / "journal.db"
    done = cli(
        "run",
        str(FIXTURES / "triage.py"),
        "--input",
        str(FIXTURES / "tickets.jsonl"),
        "--fake-model",
        "none",  # no faults: the chaos's backoffs are really slept here
        "--quiet",
        db=db,
        cwd=folder,
    )
    assert done.returncode == 0, done.stderr
    return db, done.stdout.split()[1]


def value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(item) for item in v.array_value.values]
    return getattr(v, kind) if kind else None


def attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: value(pair.value) for pair in pairs if isinstance(pair, KeyValue)}


def spans_of(request: ExportTraceServiceRequest) -> list[tuple[Span, dict[str, Any]]]:
    return [
        (span, resource)
        for resources in request.resource_spans
        for resource in [attributes(resources.resource.attributes)]
        for scoped in resources.scope_spans
        for span in scoped.spans
    ]


def export(*args: str, db: Path) -> subprocess.CompletedProcess[str]:
    # Without the OTEL_* variables of whoever runs the tests: the default resource is tested.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run(
        [*journal_command(), "export", *args, "--db", str(db)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_a_run_is_received_as_one_trace_of_genai_spans(
    receiver: Receiver, triage: tuple[Path, str]
) -> None:
    """The receiver gets every span of the run in one request, under the run's trace id, the
    model calls named and attributed as the GenAI conventions say, with the journal's figures."""
    db, run_id = triage
    before = db.read_bytes()
    result = export("--otlp", receiver.url, run_id[:6], db=db)
    assert result.returncode == 0, result.stderr
    (request,) = receiver.received[-1:]
    received = spans_of(request)
    trace = f"{tracing.trace_id(run_id):032x}"
    assert result.stdout == (
        f"exported {len(received)} spans of run {run_id} to {receiver.url}/v1/traces: "
        f"trace {trace}\n"
    )
    assert receiver.paths[-1] == "/v1/traces"
    assert {span.trace_id.hex() for span, _ in received} == {trace}
    assert {resource["service.name"] for _, resource in received} == {"runjournal"}
    with open_store(db, readonly=True) as j:
        run = j.run(run_id)
        first = next(j.events(run_id))
    names = [span.name for span, _ in received]
    assert names.count("run triage") == 1
    assert names.count("step score") == run.steps
    assert names.count("chat claude-haiku-5-5") == run.model_calls
    assert names.count("action page") == run.actions
    assert len(names) == 1 + run.steps + run.model_calls + run.actions
    chats = [attributes(span.attributes) for span, _ in received if span.name.startswith("chat ")]
    assert {(a["gen_ai.operation.name"], a["gen_ai.provider.name"]) for a in chats} == {
        ("chat", "anthropic")
    }
    assert sum(a["gen_ai.usage.output_tokens"] for a in chats) == run.output_tokens
    every_input = run.input_tokens + run.cache_read_tokens + run.cache_write_tokens
    assert sum(a["gen_ai.usage.input_tokens"] for a in chats) == every_input
    assert sum(a["gen_ai.usage.cache_read.input_tokens"] for a in chats) == run.cache_read_tokens
    assert all(a["gen_ai.response.finish_reasons"] for a in chats)
    assert sum(a["runjournal.cost_usd"] for a in chats) == pytest.approx(run.cost_usd)
    (root,) = [span for span, _ in received if span.name == "run triage"]
    assert root.start_time_unix_nano == tracing._ns(first.at)  # the run's time, not the export's
    assert attributes(root.attributes)["runjournal.run_id"] == run_id
    assert db.read_bytes() == before  # a read never writes


def test_an_unknown_run_is_one_line(receiver: Receiver, triage: tuple[Path, str]) -> None:
    db, _ = triage
    posted = len(receiver.paths)
    one_line_error(export("--otlp", receiver.url, "ffffff", db=db), 2, "no run 'ffffff'")
    assert len(receiver.paths) == posted


def test_a_receiver_that_refuses_connections_is_one_line(triage: tuple[Path, str]) -> None:
    """Nothing listens on the port: the spans are not delivered, said on one line, exit 1."""
    db, run_id = triage
    before = db.read_bytes()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the export
    url = f"http://127.0.0.1:{port}"
    result = export("--otlp", url, run_id, "--timeout", "0.5", db=db)
    one_line_error(result, 1, f"were not delivered to {url}/v1/traces: Connection refused")
    assert db.read_bytes() == before


@pytest.mark.parametrize("endpoint", ["not-a-url", "ftp://127.0.0.1:4318", "http://:4318"])
def test_an_endpoint_that_is_no_url_is_one_line(endpoint: str, triage: tuple[Path, str]) -> None:
    db, run_id = triage
    result = export("--otlp", endpoint, run_id, db=db)
    one_line_error(result, 2, "is not an OTLP/HTTP URL")


def test_a_receiver_that_refuses_the_spans_is_one_line(
    receiver: Receiver, triage: tuple[Path, str]
) -> None:
    """A receiver answering an error status: its status, on one line, exit 1."""
    db, run_id = triage
    result = export("--otlp", f"{receiver.url}/elsewhere", run_id, db=db)
    one_line_error(result, 1, "/elsewhere/v1/traces: HTTP 404 Not Found")
    assert receiver.paths[-1] == "/elsewhere/v1/traces"
