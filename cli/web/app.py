"""The ASGI application behind `journal serve`: routes, the token that guards acting, the
live feed of a run's events, and the headers that keep the page to itself.

Reading is open to whoever reaches the address (127.0.0.1 unless told otherwise), on the
journal opened read-only, as every reading command opens it. Acting (kill, answer an action in
doubt, resume) needs the token `journal serve` printed, held in a cookie once given: each act
is recorded as from the CLI, naming the token's label and the reason typed. `--read-only`
offers no acts at all.

The endpoints are coroutines that read the journal on the event loop's own thread: a store's
connection stays on the thread that opened it, and each page is a few milliseconds of reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hmac
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import attrs
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runjournal.cli.inspecting import STATUSES, status_of
from runjournal.cli.web import pages, render
from runjournal.journal import (
    AmbiguousRunId,
    JournalError,
    RunNotFound,
    Store,
)
from runjournal.journal.stores import open_store
from runjournal.machine import waiting
from runjournal.machine.actions import resolve
from runjournal.machine.errors import AnswerRefused, MachineError
from runjournal.machine.stopping import KILLABLE, kill

STATIC = Path(__file__).parent / "static"
COOKIE: Final = "runjournal_token"

# Only our own script and style, no inline code, no frames, forms posting here alone: a
# journal's text that slipped past escaping still could not run or send anything anywhere.
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

SAID: Final = {
    "kill-requested": "kill requested: the run's process stops it within a second",
    "killed": "killed: no process was executing the run",
    "resolved": "answer recorded: resume the run to go on",
    "answered": "answer recorded: resume the run to go on",
    "resuming": "resume started in a new process",
    "signed-in": "signed in: acting is recorded as by {label}",
}


@attrs.frozen
class Settings:
    """What `journal serve` was told."""

    db: Path | str
    token: str
    label: str
    """Who the token's acts are recorded as."""
    read_only: bool = False
    secrets: tuple[str, ...] = ()
    poll: float = 0.2
    """Seconds between two looks for a live run's new events."""
    allowed_hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "[::1]")


class Refused(Exception):
    """An act the page will not do: no token, read-only, or a form that makes no sense."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.status = status


def application(settings: Settings) -> Starlette:
    """The page over the journal `settings.db`."""
    env = render.environment()
    state: dict[str, Store] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Opened here, on the loop's thread, where every endpoint reads it.
        state["journal"] = open_store(settings.db, readonly=True, secrets=settings.secrets)
        try:
            yield
        finally:
            state.pop("journal").close()

    def journal() -> Store:
        return state["journal"]

    env.globals["request_text"] = lambda ref: pages.request_text(journal(), ref)

    def signed_in(request: Request) -> bool:
        given = request.cookies.get(COOKIE, "")
        return hmac.compare_digest(given.encode(), settings.token.encode())

    def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        said = SAID.get(request.query_params.get("said", ""), "")
        body = env.get_template(name).render(
            request=request,
            acting=not settings.read_only,
            signed_in=signed_in(request),
            label=settings.label,
            said=said.format(label=settings.label),
            **context,
        )
        return HTMLResponse(body, status_code=status)

    def guarded(
        endpoint: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            try:
                return await endpoint(request)
            except Refused as e:
                return page(request, "error.html", e.status, message=str(e))
            except (RunNotFound, AmbiguousRunId) as e:
                return page(request, "error.html", 404, message=str(e))
            except (JournalError, MachineError) as e:
                return page(request, "error.html", 409, message=str(e))
            except ValueError as e:
                return page(request, "error.html", 400, message=f"bad request: {e}")

        return wrapped

    async def runs(request: Request) -> Response:
        filters = _filters(request)
        found = pages.runs_page(journal(), filters)
        return page(request, "runs.html", filters=filters, page=found, statuses=STATUSES)

    async def run(request: Request) -> Response:
        after = _int(request.query_params.get("after"), "after")
        shown = pages.run_page(journal(), request.path_params["run_id"], after)
        problems = None
        if request.query_params.get("verify"):
            found = journal().verify(shown.run.run_id)
            problems = [p.what if p.seq is None else f"seq {p.seq}: {p.what}" for p in found]
        return page(
            request,
            "run.html",
            page=shown,
            problems=problems,
            killable=shown.run.status in KILLABLE,
            live=shown.upto >= shown.run.last_seq and shown.status in ("running", "submitted"),
        )

    async def state_view(request: Request) -> Response:
        seq = _int(request.query_params.get("seq"), "seq")
        shown = pages.state_page(journal(), request.path_params["run_id"], seq)
        changed = pages.changed_paths(shown.changed)
        return page(request, "state.html", page=shown, changed=changed)

    async def money(request: Request) -> Response:
        return page(request, "money.html", page=pages.money_page(journal()))

    async def live(request: Request) -> Response:
        run = journal().find_run(request.path_params["run_id"])
        after = _int(
            request.headers.get("last-event-id") or request.query_params.get("after"), "after"
        )
        return StreamingResponse(
            _follow(request, run.run_id, after or 0),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def _follow(request: Request, run_id: str, after: int) -> AsyncIterator[str]:
        rows = env.get_template("rows.html")
        last_status = None
        while not await request.is_disconnected():
            found = pages.new_events(journal(), run_id, after)
            if found:
                after = found[-1].seq
                html = rows.render(visits=pages.visits(found), run_id=run_id)
                yield _sse("events", html, after)
            run = journal().run(run_id)
            status = status_of(run, journal())
            if status != last_status:
                last_status = status
                yield _sse("status", status, after)
            if not found and run.status not in ("running", "submitted"):
                yield _sse("end", status, after)
                return
            if not found:
                await asyncio.sleep(settings.poll)

    # Acting

    async def login(request: Request) -> Response:
        if request.method == "GET" and "token" not in request.query_params:
            return page(request, "login.html")
        given = request.query_params.get("token", "")
        if request.method == "POST":
            given = str((await request.form()).get("token", ""))
        if not hmac.compare_digest(given.encode(), settings.token.encode()):
            return page(request, "login.html", 403, wrong=True)
        response = RedirectResponse("/?said=signed-in", status_code=303)
        response.set_cookie(COOKIE, settings.token, httponly=True, samesite="strict")
        return response

    async def logout(request: Request) -> Response:
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    async def acted(request: Request) -> dict[str, str]:
        """The form of an act, once the token and the request's origin are checked."""
        if settings.read_only:
            raise Refused("this page is read-only (journal serve --read-only): it offers no acts")
        if not signed_in(request):
            raise Refused("acting needs the token journal serve printed: sign in at /login")
        origin = request.headers.get("origin")
        if origin is not None and origin.split("://", 1)[-1] != request.headers.get("host"):
            raise Refused("this form was sent from another site")
        form = await request.form()
        return {name: str(value).strip() for name, value in form.items()}

    def writing() -> Store:
        return open_store(settings.db, readonly=False, secrets=settings.secrets)

    async def kill_view(request: Request) -> Response:
        form = await acted(request)
        reason = _required(form, "reason")
        run = journal().find_run(request.path_params["run_id"])
        with writing() as store:
            done = kill(store, run.run_id, by=settings.label, reason=reason)
        said = "killed" if done == "killed" else "kill-requested"
        return RedirectResponse(f"/runs/{run.run_id}?said={said}", status_code=303)

    async def resolve_view(request: Request) -> Response:
        form = await acted(request)
        run = journal().find_run(request.path_params["run_id"])
        outcome = form.get("outcome")
        if outcome not in ("done", "not_done"):
            raise Refused("say whether the action happened (done) or not (not done)", 400)
        result: Any = None
        if form.get("result"):
            if outcome != "done":
                raise Refused("a result goes with done", 400)
            try:
                result = json.loads(form["result"])
            except ValueError as e:
                raise Refused(f"the result is not JSON: {e}", 400) from e
        with writing() as store:
            resolve(
                store,
                run.run_id,
                _required(form, "key"),
                done=outcome == "done",
                result=result,
                name=form.get("name") or None,
                by=settings.label,
                reason=_required(form, "reason"),
            )
        return RedirectResponse(f"/runs/{run.run_id}?said=resolved", status_code=303)

    async def answer_view(request: Request) -> Response:
        form = await acted(request)
        run = journal().find_run(request.path_params["run_id"])
        try:
            value = json.loads(form.get("value", ""))
        except ValueError as e:
            raise Refused(f"the answer is not JSON: {e}", 400) from e
        reason = _required(form, "reason")
        with writing() as store:
            try:
                waiting.answer(
                    store, run.run_id, _required(form, "name"), value, by=settings.label,
                    reason=reason,
                )  # fmt: skip
            except AnswerRefused as e:
                raise Refused(str(e), 400) from e
        return RedirectResponse(f"/runs/{run.run_id}?said=answered", status_code=303)

    async def resume_view(request: Request) -> Response:
        await acted(request)
        run = journal().find_run(request.path_params["run_id"])
        _start_resume(settings.db, run.run_id)
        return RedirectResponse(f"/runs/{run.run_id}?said=resuming", status_code=303)

    routes = [
        Route("/", guarded(runs)),
        Route("/money", guarded(money)),
        Route("/login", guarded(login), methods=["GET", "POST"]),
        Route("/logout", guarded(logout), methods=["POST"]),
        Route("/runs/{run_id}", guarded(run)),
        Route("/runs/{run_id}/state", guarded(state_view)),
        Route("/runs/{run_id}/live", guarded(live)),
        Route("/runs/{run_id}/kill", guarded(kill_view), methods=["POST"]),
        Route("/runs/{run_id}/resolve", guarded(resolve_view), methods=["POST"]),
        Route("/runs/{run_id}/resume", guarded(resume_view), methods=["POST"]),
        Route("/runs/{run_id}/answer", guarded(answer_view), methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [
        Middleware(TrustedHostMiddleware, allowed_hosts=list(settings.allowed_hosts)),
        Middleware(Headers),
    ]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)


class Headers:
    """Adds the security headers to every answer, and `Server-Timing`: the time the server
    took to start answering, which `bench/web_bench.py` reads."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                took = (time.perf_counter() - started) * 1000
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                    (b"x-frame-options", b"DENY"),
                    (b"server-timing", f"app;dur={took:.1f}".encode()),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, sending)


def _sse(event: str, data: str, seq: int) -> str:
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"event: {event}\nid: {seq}\n{lines}\n"


def _filters(request: Request) -> pages.Filters:
    q = request.query_params

    def given(name: str) -> str | None:
        value = q.get(name, "").strip()
        return value or None

    status = given("status")
    if status is not None and status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}")
    day = given("day")
    return pages.Filters(
        status=status,
        machine=given("machine"),
        day=_day(day),
        key=given("key"),
        q=given("q"),
        before=_int(given("before"), "before"),
    )


def _day(value: str | None) -> datetime.date | None:
    if value is None:
        return None
    try:
        return datetime.date.fromisoformat(value)
    except ValueError:
        raise ValueError("day must be a date, such as 2026-12-06") from None


def _int(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit() or len(value) > 18:
        raise ValueError(f"{name} must be a whole number")
    return int(value)


def _required(form: dict[str, str], name: str) -> str:
    value = form.get(name, "")
    if not value:
        raise Refused(f"say the {name}: it is recorded with the act", 400)
    return value


def _start_resume(db: Path | str, run_id: str) -> None:
    """`journal resume RUN` in a process of its own, as a person would start it: it records
    `run.resumed` with its host and pid, and goes on from the journal. Its output goes to a
    file in the temporary folder, named on the run's page."""
    log = Path(tempfile.gettempdir()) / f"runjournal-resume-{run_id}.log"
    with open(log, "ab") as out:
        subprocess.Popen(
            [sys.executable, "-m", "runjournal.cli", "resume", run_id, "--db", str(db)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=os.environ.copy(),
        )
