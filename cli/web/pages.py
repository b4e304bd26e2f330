"""What each page of `journal serve` shows, read from a journal: the runs list, a run's
timeline, the state at an event, the money. Plain data for the templates, no HTML.

Every read is one the CLI makes too (the runs table, a range of one run's events, the fold,
the cost reports), so a page costs what the command costs: in proportion to what it shows,
never to the size of the journal. Paging is by keys (a run's ordinal, an event's seq), never
by offset, so the millionth event is as fast to reach as the first.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any, Final

import attrs

from runjournal.cli.inspecting import forks, lineage, spent, status_of
from runjournal.journal import Run, Store, costs, state_at
from runjournal.journal import events as k
from runjournal.journal.costs import Spent
from runjournal.journal.events import Event, timestamp
from runjournal.journal.kinds import to_step
from runjournal.journal.rows import Action
from runjournal.journal.spending import NUSD, Budget
from runjournal.machine import waiting
from runjournal.machine.actions import IN_DOUBT

RUNS_PER_PAGE: Final = 50
EVENTS_PER_PAGE: Final = 200


# The runs list


@attrs.frozen
class Filters:
    """What the runs list is narrowed to; None is any."""

    status: str | None = None
    machine: str | None = None
    day: datetime.date | None = None
    """Runs started on this day (UTC)."""
    key: str | None = None
    """The run key a run was started with."""
    q: str | None = None
    """A run id or its prefix, a run key, or an item a decision judged."""
    before: int | None = None
    """The ordinal the page starts below: the next page of a list newest first."""

    def query(self, **changed: Any) -> dict[str, str]:
        """These filters (with `changed`) as a page's URL parameters."""
        values = attrs.asdict(self) | changed
        return {name: str(v) for name, v in values.items() if v not in (None, "")}


@attrs.frozen
class RunLine:
    """A run as the list shows it."""

    run: Run
    status: str
    spent: Spent
    duration_s: float | None


@attrs.frozen
class RunsPage:
    lines: list[RunLine]
    next_before: int | None
    """The ordinal the next page starts below, or None on the last page."""
    machines: list[str]


def runs_page(journal: Store, filters: Filters) -> RunsPage:
    """The runs `filters` leave, newest first, one page of them."""
    where, params = _where(filters)
    sql = (
        f"SELECT run_id FROM runs WHERE {' AND '.join(where)} "
        f"ORDER BY ordinal DESC LIMIT {RUNS_PER_PAGE + 1}"
    )
    ids = [str(row[0]) for row in journal.query(sql, params).rows]
    lines = []
    for run_id in ids[:RUNS_PER_PAGE]:
        run = journal.run(run_id)
        lines.append(RunLine(run, status_of(run, journal), spent(run), _duration(run)))
    if filters.status == "interrupted":
        lines = [line for line in lines if line.status == "interrupted"]
    elif filters.status == "running":
        lines = [line for line in lines if line.status == "running"]
    more = len(ids) > RUNS_PER_PAGE
    machines = [str(r[0]) for r in journal.query("SELECT DISTINCT machine FROM runs").rows]
    return RunsPage(lines, lines[-1].run.ordinal if more and lines else None, sorted(machines))


def _where(filters: Filters) -> tuple[list[str], list[Any]]:
    where: list[str] = ["1 = 1"]
    params: list[Any] = []
    if filters.status is not None:
        where.append("status = ?")
        params.append("running" if filters.status == "interrupted" else filters.status)
    if filters.machine is not None:
        where.append("machine = ?")
        params.append(filters.machine)
    if filters.day is not None:
        # Both engines compare a day's ISO text with started_at (text here, timestamptz there).
        where.append("started_at >= ? AND started_at < ?")
        params += [filters.day.isoformat(), (filters.day + datetime.timedelta(days=1)).isoformat()]
    if filters.key is not None:
        where.append("run_key = ?")
        params.append(filters.key)
    if filters.q is not None:
        where.append(
            "(run_id LIKE ? OR run_key = ? OR run_id IN (SELECT run_id FROM decisions "
            "WHERE CAST(item AS TEXT) = ?))"
        )
        prefix = filters.q.replace("\\", "").replace("%", "").replace("_", "")
        params += [prefix + "%", filters.q, filters.q]
    if filters.before is not None:
        where.append("ordinal < ?")
        params.append(filters.before)
    return where, params


def _duration(run: Run) -> float | None:
    end = run.ended_at or run.updated_at
    try:
        return (_when(end) - _when(run.started_at)).total_seconds()
    except ValueError:
        return None


def _when(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


# One run


@attrs.frozen
class Call:
    """One ask's round: its attempts, the failures among them, the answer and its rejection."""

    call: str
    name: str
    round: int
    model: str
    requested: list[Event]
    failures: list[Event]
    answered: Event | None
    rejected: Event | None

    @property
    def attempts(self) -> int:
        return max(len(self.requested), len(self.failures) + (self.answered is not None))

    @property
    def outcome(self) -> str:
        if self.rejected is not None:
            return "rejected"
        if self.answered is not None:
            return "answered"
        if self.failures and not self.failures[-1].data.get("retryable"):
            return "failed"
        return "in flight"


@attrs.frozen
class Row:
    """A line of the timeline: one event, or one model call's events together."""

    seq: int
    kind: str
    step: str | None
    at: str
    event: Event | None = None
    call: Call | None = None


@attrs.frozen
class Visit:
    """The events of one visit to a step, ending with its transition (or the run's end)."""

    step: str | None
    rows: list[Row]
    transition: Event | None


_CALL_KINDS: Final = (k.MODEL_REQUESTED, k.MODEL_FAILED, k.MODEL_ANSWERED, k.OUTPUT_REJECTED)


def rows_of(events: Iterable[Event]) -> list[Row]:
    """The timeline's lines: a model call's request, failures, answer and rejection as one."""
    rows: list[Row] = []
    calls: dict[tuple[str | None, str, str, int], Call] = {}
    for e in events:
        if e.kind not in _CALL_KINDS:
            rows.append(Row(e.seq, e.kind, e.step, e.at, event=e))
            continue
        d = e.data
        ident = (e.step, str(d.get("call")), str(d.get("name")), int(d.get("round", 0)))
        call = calls.get(ident)
        if call is None or (e.kind == k.MODEL_REQUESTED and call.answered is not None):
            model = str(d.get("model", ""))
            call = Call(ident[1], ident[2], ident[3], model, [], [], None, None)
            calls[ident] = call
            rows.append(Row(e.seq, "model.call", e.step, e.at, call=call))
        if e.kind == k.MODEL_REQUESTED:
            call.requested.append(e)
        elif e.kind == k.MODEL_FAILED:
            call.failures.append(e)
        elif e.kind == k.MODEL_ANSWERED:
            calls[ident] = attrs.evolve(call, answered=e)
            _replace(rows, call, calls[ident])
        else:
            calls[ident] = attrs.evolve(call, rejected=e)
            _replace(rows, call, calls[ident])
    return rows


def _replace(rows: list[Row], old: Call, new: Call) -> None:
    for i in range(len(rows) - 1, -1, -1):
        if rows[i].call is old:
            rows[i] = attrs.evolve(rows[i], call=new)
            return


def visits(events: Iterable[Event]) -> list[Visit]:
    """The events grouped by the visit to a step they belong to."""
    out: list[Visit] = []
    pending: list[Event] = []
    for e in events:
        pending.append(e)
        if e.kind == k.TRANSITION:
            out.append(Visit(e.step, rows_of(pending[:-1]), e))
            pending = []
    if pending:
        out.append(Visit(pending[0].step, rows_of(pending), None))
    return out


@attrs.frozen
class RunPage:
    run: Run
    status: str
    spent: Spent
    visits: list[Visit]
    after: int
    """The page shows the events with seq above this ..."""
    upto: int
    """... up to this one."""
    actions: list[Action]
    in_doubt: list[Action]
    waits: list[Event]
    """What the run waits for (`ctx.wait_for`), unanswered."""
    lineage: list[tuple[str, int | None]]
    forks: list[tuple[str, int]]
    limits: dict[str, Any]
    kill: Any


def run_page(journal: Store, run_id: str, after: int | None = None) -> RunPage:
    """A run and one page of its timeline, from the event after `after` (the first page by
    default); RunNotFound."""
    run = journal.find_run(run_id)
    status = status_of(run, journal)
    start = max(0, min(after or 0, max(run.last_seq - 1, 0)))
    upto = start + EVENTS_PER_PAGE
    events = list(journal.events(run.run_id, after=start, upto=upto))
    actions = journal.actions(run.run_id)
    doubtful = [a for a in actions if a.status in IN_DOUBT] if status != "running" else []
    return RunPage(
        run=run,
        status=status,
        spent=spent(run),
        visits=visits(events),
        after=start,
        upto=min(upto, run.last_seq),
        actions=actions,
        in_doubt=doubtful,
        waits=waiting.waits(journal, run.run_id) if status != "running" else [],
        lineage=lineage(journal, run),
        forks=forks(journal, run),
        limits=json.loads(run.limits) if run.limits else {},
        kill=journal.kill_request(run.run_id),
    )


def new_events(journal: Store, run_id: str, after: int) -> list[Event]:
    """The run's events after seq `after`, at most a page of them: what the live page adds."""
    return list(journal.events(run_id, after=after, upto=after + EVENTS_PER_PAGE))


def request_text(journal: Store, ref: str) -> str:
    """A request as sent, from its blob, indented; or a word on why it cannot be shown."""
    try:
        text = journal.blob(ref)
    except LookupError:
        return f"(the request's blob {ref} is missing)"
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


# The state at an event


@attrs.frozen
class StatePage:
    run: Run
    seq: int
    """The event the state is after."""
    step: str | None
    state: Any
    transitions: int
    changed: list[dict[str, Any]]
    """The ops of the transition that made this state (empty at the start)."""
    earlier: int | None
    """The seq of the transition before, or the run's start; None at the start."""
    later: int | None
    """The seq of the next transition, if any."""


def state_page(journal: Store, run_id: str, seq: int | None) -> StatePage:
    """The run's state after its event `seq` (its last event by default), what the transition
    that made it changed, and where the ones before and after it are."""
    run = journal.find_run(run_id)
    at = state_at(journal, run.run_id, seq)
    changed: list[dict[str, Any]] = []
    if at.seq > 1:
        made = next(iter(journal.events(run.run_id, after=at.seq - 1, upto=at.seq)), None)
        if made is not None and made.kind == k.TRANSITION:
            changed = list(made.data.get("delta", []))
    earlier = _transition_before(journal, run.run_id, at.seq)
    later = _transition_after(journal, run.run_id, at.seq)
    return StatePage(run, at.seq, at.step, at.state, at.transitions, changed, earlier, later)


def _transition_before(journal: Store, run_id: str, seq: int) -> int | None:
    if seq <= 1:
        return None
    found = journal.query(
        "SELECT max(seq) FROM events WHERE run_id = ? AND seq < ? AND kind = ?",
        (run_id, seq, k.TRANSITION),
    ).rows
    (before,) = next(found)
    return int(before) if before is not None else 1


def _transition_after(journal: Store, run_id: str, seq: int) -> int | None:
    for after_seq, _, _, _ in journal.transitions(run_id, after=seq):
        return after_seq
    return None


def changed_paths(ops: Sequence[dict[str, Any]]) -> set[str]:
    """The JSON Pointers a delta's ops wrote (for `move`, the source too)."""
    paths = set()
    for op in ops:
        paths.add(str(op.get("path", "")))
        if op.get("op") in ("move",) and "from" in op:
            paths.add(str(op["from"]))
    return paths


def step_after(event: Event) -> str | None:
    """The step a transition goes to."""
    return to_step(event.data)


# Money


@attrs.frozen
class BudgetLine:
    budget: Budget
    per_day: Decimal | None
    per_run: Decimal | None
    spent_today: Decimal
    left_today: Decimal | None


@attrs.frozen
class MoneyPage:
    days: costs.Report
    machines: costs.Report
    versions: costs.Report
    models: costs.Report
    budgets: list[BudgetLine]
    anomalies: list[dict[str, Any]]
    today: str


def money_page(journal: Store, *, days: int = 30) -> MoneyPage:
    """Cost per day (the last `days`), per machine, version and model; budgets and what is
    left of them today; the anomalies recorded."""
    now = journal.clock()
    today = timestamp(now)[:10]
    since = datetime.date.fromisoformat(today) - datetime.timedelta(days=days - 1)
    budgets = []
    for b in journal.budgets():
        left = None
        if b.per_day_nusd is not None:
            left = _usd(max(b.per_day_nusd - b.spent_today_nusd, 0))
        per_day = None if b.per_day_nusd is None else _usd(b.per_day_nusd)
        per_run = None if b.per_run_nusd is None else _usd(b.per_run_nusd)
        budgets.append(BudgetLine(b, per_day, per_run, _usd(b.spent_today_nusd), left))
    found = journal.query(
        # Through the runs flagged: the view alone would read every event for its kind.
        "SELECT run_id, seq, at, metric, value, baseline, ratio, code_hash FROM anomalies "
        "WHERE run_id IN (SELECT run_id FROM runs WHERE anomaly > 0) ORDER BY at DESC LIMIT 50"
    )
    anomalies = [dict(zip(found.columns, row, strict=True)) for row in found.rows]
    return MoneyPage(
        days=costs.report(journal, "day", since=since),
        machines=costs.report(journal, "machine"),
        versions=costs.report(journal, "version"),
        models=costs.report(journal, "model"),
        budgets=budgets,
        anomalies=anomalies,
        today=today,
    )


def _usd(nusd: int) -> Decimal:
    return Decimal(nusd) / NUSD
