"""The `journal` command: its group, each command attached explicitly, and the console script
that turns every error into one line and an exit code (`cli/shared.py` lists them)."""

from __future__ import annotations

import os
import sys

import click

from runjournal.cli.actions import actions, resolve_command
from runjournal.cli.answering import answer_command
from runjournal.cli.budget import budget
from runjournal.cli.copying import copy_command
from runjournal.cli.costs import cost
from runjournal.cli.datasette import datasette_command
from runjournal.cli.export import export_command
from runjournal.cli.fake import fake_model
from runjournal.cli.fork import fork
from runjournal.cli.graph import graph
from runjournal.cli.inspecting import logs, runs, show
from runjournal.cli.kill import kill
from runjournal.cli.migrate import migrate
from runjournal.cli.output import printable
from runjournal.cli.replay import replay_command
from runjournal.cli.running import resume, run
from runjournal.cli.serve import serve
from runjournal.cli.shared import JournalGroup
from runjournal.cli.sql import sql
from runjournal.cli.verify import verify_command
from runjournal.cli.worker import submit, worker


@click.group(cls=JournalGroup)
@click.version_option(package_name="runjournal")
def cli() -> None:
    """A SQLite journal for LLM pipelines: every step and effect of a run is an event.

    \b
    Example:
        journal run fixtures/lines.py --input fixtures/lines.json
        journal runs
    """


cli.add_command(run)
cli.add_command(resume)
cli.add_command(runs)
cli.add_command(show)
cli.add_command(logs)
cli.add_command(replay_command)
cli.add_command(sql)
cli.add_command(datasette_command)
cli.add_command(cost)
cli.add_command(actions)
cli.add_command(resolve_command)
cli.add_command(answer_command)
cli.add_command(fake_model)
cli.add_command(verify_command)
cli.add_command(migrate)
cli.add_command(kill)
cli.add_command(budget)
cli.add_command(fork)
cli.add_command(graph)
cli.add_command(submit)
cli.add_command(copy_command)
cli.add_command(export_command)
cli.add_command(worker)
cli.add_command(serve)


def main() -> None:
    """The console script: every error is one line, with exit code 2 for usage errors."""
    try:
        code = cli.main(standalone_mode=False)
    except click.UsageError as e:
        hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
        click.echo(f"Error: {e.format_message()}{hint}", err=True)
        sys.exit(2)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except (click.Abort, KeyboardInterrupt):
        # click turns Ctrl-C into Abort. `run` and `resume` take Ctrl-C themselves while they
        # execute a run, and say which (cli.executing.stoppable): here none was executing.
        click.echo("interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (`journal logs | head`): nothing to say
        sys.exit(0)
    except Exception as e:
        # A bug of ours: still one line, saying so; JOURNAL_DEBUG=1 shows the traceback.
        if os.environ.get("JOURNAL_DEBUG"):
            raise
        said = printable(f"{type(e).__name__}: {e}")
        click.echo(
            f"Error: unexpected {said} (a bug in runjournal; JOURNAL_DEBUG=1 shows where)", err=True
        )
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
