"""Running a machine from Python in one call: `machine.run` and `machine.resume`.

They do what `journal run` and `journal resume` do, for a machine already imported: open the
journal (creating it if there is none), record where the machine's code lives and its hash, and
execute the run to its end. SIGTERM and Ctrl-C stop the run at its next safe point, as they do
`journal run`; then, the run's lease let go, Ctrl-C raises KeyboardInterrupt and SIGTERM
SystemExit(143), as they would have without runjournal.

Both, and the command line, go through the same three steps below them, for code that holds a
journal open: `prepare` (the input, by the rules of `machine.inputs`, and the first state),
`start` and `go_on`. `machine.runner` has the parts those are made of.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import attrs

from runjournal.journal import Durability, Store, open_store
from runjournal.machine import convert, inputs, loader, runner
from runjournal.machine.definition import Machine
from runjournal.machine.execution import Options, Outcome
from runjournal.machine.loader import Target
from runjournal.machine.model import anthropic_api
from runjournal.machine.runner import Prepared
from runjournal.machine.signals import StopRequest, exit_code, stop_on_signals

S = TypeVar("S")


def run(
    machine: Machine[S],
    input: Any,
    *,
    db: str | Path = "journal.db",
    key: str | None = None,
    options: Options | None = None,
    durability: Durability = "normal",
) -> Outcome[S]:
    """Start a run of `machine` on `input` and execute it to its end; the journal is `db`, a
    SQLite file or a PostgreSQL URL (`postgresql://...`).

    `input` is a file `journal run --input` would read (a `Path`: a JSON document, or JSON Lines
    as a list), what it would read from one (JSON values), or Python values of the machine's
    input type; read and checked by the same rules as `journal run`'s (`machine.inputs`).
    `key` is the run key: a second call with the same key starts nothing new, it resumes the
    run the first one left unfinished or reports it done. Everything about the input and the
    machine is checked before the journal is opened.

    >>> outcome = machine.run(triage, tickets, db="journal.db")
    >>> outcome.run.status, outcome.state
    """
    target = loader.locate(machine)
    prepared = prepare(machine, input)
    given = _with_models(machine, options)
    with _signals(given) as used, open_store(db, create=True, durability=durability) as j:
        outcome = start(j, target, prepared, key=key, options=used)
    return _told(cast(Outcome[S], outcome), options)


def resume(
    machine: Machine[S],
    run_id: str,
    *,
    db: str | Path = "journal.db",
    options: Options | None = None,
    durability: Durability = "normal",
) -> Outcome[S]:
    """Resume the run `run_id` (or a unique prefix of it) of `machine` and execute it to its
    end: model calls, effects and actions the journal holds are not done again."""
    target = loader.locate(machine)
    with _signals(options) as used, open_store(db, durability=durability) as journal:
        found = journal.find_run(run_id)
        outcome = go_on(journal, found.run_id, target, options=used)
    return _told(cast(Outcome[S], outcome), options)


def prepare(machine: Machine[Any], input: Any) -> Prepared:
    """The machine checked and its first state made from `input`, before anything is written.

    `input` is a file (a `Path`: a JSON document, or JSON Lines as a list; `-` is standard
    input), JSON values, or Python values of the machine's input type, read and checked by the
    rules of `machine.inputs`: the same for `run` and `journal run --input`.
    """
    if isinstance(input, Path):
        values = inputs.read(input)
    else:
        values = convert.to_json(machine.converter, input)
        inputs.check(values)
    return runner.prepare(machine, values)


def start(
    journal: Store,
    target: Target,
    prepared: Prepared,
    *,
    key: str | None = None,
    options: Options | None = None,
) -> Outcome[Any]:
    """Start a run of the prepared machine, whose code is `target`, and execute it to its end;
    with a run `key` already used, resume or report that run instead. How `run` and
    `journal run` start every run."""
    return runner.start(
        journal,
        prepared,
        target=target.location,
        code_hash=target.code_hash,
        run_key=key,
        options=options,
    )


def go_on(
    journal: Store, run_id: str, target: Target, *, options: Options | None = None
) -> Outcome[Any]:
    """Resume the run `run_id` under the machine in `target` and execute it to its end. How
    `resume` and `journal resume` resume every run."""
    return runner.resume(
        journal,
        run_id,
        target.machine,
        target=target.location,
        code_hash=target.code_hash,
        options=options,
    )


def _with_models(machine: Machine[Any], options: Options | None) -> Options:
    """`options` with the models the run will use (the Anthropic API unless they name
    others), refused now if the machine asks a model and none can answer (no API key): before
    the journal is opened, as `journal run` does."""
    given = options or Options()
    models = given.models or anthropic_api()
    runner.check_models(machine, models)
    return attrs.evolve(given, models=models)


@contextlib.contextmanager
def _signals(options: Options | None) -> Iterator[Options]:
    """`options`, with SIGTERM and Ctrl-C stopping the run, unless they bring a stop request
    of their own (whose owner handles the signals)."""
    options = options or Options()
    if options.stop is not None:
        yield options
        return
    stop = StopRequest()
    with stop_on_signals(stop):
        yield attrs.evolve(options, stop=stop)


def _told(outcome: Outcome[S], given: Options | None) -> Outcome[S]:
    """The outcome; or, for a run a signal stopped, what that signal would have done (unless
    the caller took the signals, with a stop request of their own)."""
    stopped = outcome.interrupted
    if stopped is None or (given is not None and given.stop is not None):
        return outcome
    if stopped.signal == "SIGINT":
        raise KeyboardInterrupt(str(stopped))
    raise SystemExit(exit_code(stopped.signal))
