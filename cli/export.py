"""`journal export`: a run sent to an OpenTelemetry collector as one trace, over OTLP/HTTP.

The spans are `journal.tracing`'s. OpenTelemetry is imported only here, once the command runs,
so that no other command pays for it and a journal without the `otel` extra still works.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import click

from runjournal.cli.shared import Db, db_option, open_journal
from runjournal.journal.errors import BackendMissing

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

TRACES = "/v1/traces"
"""Where OTLP/HTTP takes spans, under the collector's base URL."""


def traces_url(endpoint: str) -> str | None:
    """The URL to post spans to, from a collector's base URL (`http://127.0.0.1:4318`) or its
    traces URL; None if `endpoint` is no http(s) URL with a host."""
    try:
        parts = urlsplit(endpoint)
        parts.port  # noqa: B018  # a port that is not a number raises here
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    path = parts.path.rstrip("/")
    return endpoint if path.endswith(TRACES) else parts._replace(path=path + TRACES).geturl()


class _Endpoint(click.ParamType):  # type: ignore[type-arg]
    name = "URL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        url = traces_url(str(value))
        if url is None:
            self.fail(
                f"{value!r} is not an OTLP/HTTP URL: give a collector's, such as "
                "http://127.0.0.1:4318",
                param,
                ctx,
            )
        return url


@click.command("export")
@click.argument("run_id", metavar="RUN")
@click.option(
    "--otlp",
    "url",
    type=_Endpoint(),
    required=True,
    help="The collector's OTLP/HTTP URL; spans are posted to its /v1/traces. Headers (an API "
    "key, say) come from $OTEL_EXPORTER_OTLP_HEADERS.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="How long to keep trying to deliver the spans.",
)
@click.option(
    "--include-content",
    is_flag=True,
    help="Add the prompts and answers (gen_ai.input.messages, gen_ai.output.messages), "
    "rejected answers and results, which are left out by default.",
)
@db_option
def export_command(
    run_id: str, url: str, timeout: float, include_content: bool, db: Db | None
) -> None:
    """Send RUN to an OpenTelemetry collector as one trace: a span for the run, each step, each
    model call (GenAI semantic conventions: tokens, cost, finish reason), effect and action,
    with the run's own times. The trace id comes from the run id: a second export sends the
    same trace again. Needs `pip install 'runjournal[otel]'`.

    \b
    Example:
        journal export --otlp http://127.0.0.1:4318 3fa2
    """
    journal = open_journal(db)
    run = journal.find_run(run_id)
    from runjournal.journal import tracing

    exporter, witness = _otlp(url, timeout)
    try:
        with _quiet() as logged:
            count = tracing.export(journal, run.run_id, exporter, include_content=include_content)
    except tracing.ExportFailed as e:
        why = witness.failure or (logged[-1] if logged else "the exporter gave no reason")
        raise click.ClickException(f"{e} to {url}: {why}") from e
    finally:
        exporter.shutdown()
    trace = f"{tracing.trace_id(run.run_id):032x}"
    click.echo(f"exported {count} spans of run {run.run_id} to {url}: trace {trace}")


class _Witness(Protocol):
    failure: str | None
    """What the last post to the collector came to when it failed: its error or status."""


def _otlp(url: str, timeout: float) -> tuple[SpanExporter, _Witness]:
    """An OTLP/HTTP exporter to `url`, and what it sees of its posts: the exporter itself
    only logs why it failed, and not always (a name that does not resolve)."""
    try:
        import requests
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as e:
        msg = "exporting spans needs the OTLP exporter: pip install 'runjournal[otel]'"
        raise BackendMissing(msg) from e

    class Witnessed(requests.Session):
        failure: str | None = None

        def request(self, *args: Any, **kwargs: Any) -> requests.Response:
            try:
                response = super().request(*args, **kwargs)
            except Exception as e:
                self.failure = _cause(e)
                raise
            if not response.ok:
                self.failure = f"HTTP {response.status_code} {response.reason}"
            return response

    session = Witnessed()
    return OTLPSpanExporter(endpoint=url, timeout=timeout, session=session), session


@contextmanager
def _quiet() -> Iterator[list[str]]:
    """What OpenTelemetry logs meanwhile, kept rather than printed: an error is one line."""
    said: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage().splitlines()[0])

    logger = logging.getLogger("opentelemetry")
    keep, propagate = Keep(logging.WARNING), logger.propagate
    logger.addHandler(keep)
    logger.propagate = False
    try:
        yield said
    finally:
        logger.removeHandler(keep)
        logger.propagate = propagate


def _cause(error: BaseException) -> str:
    """The innermost of the errors the HTTP libraries wrap one in another: an OSError's
    strerror says it plainest (`Connection refused`, `Name or service not known`)."""
    seen: list[BaseException] = []
    todo = [error]
    while todo:
        e = todo.pop()
        if any(e is s for s in seen):
            continue
        seen.append(e)
        if isinstance(e, OSError) and e.strerror:
            return str(e.strerror)
        wrapped = (e.__cause__, e.__context__, getattr(e, "reason", None), *e.args)
        todo.extend(x for x in wrapped if isinstance(x, BaseException))
    return str(error).splitlines()[0]
