"""`journal serve`: the audit page over a journal, on 127.0.0.1 unless told otherwise.

The page itself is `cli/web/`; this module starts it: it checks the journal opens, binds the
address (so that `--port 0` can say the port it got), makes the token that acting needs and
prints it once, then serves until interrupted. Starlette, Jinja2 and uvicorn are the optional
extra `runjournal[web]`, imported only here, only when the command runs.
"""

from __future__ import annotations

import ipaddress
import secrets as tokens
import socket

import click

from runjournal.cli.shared import Db, InputError, db_option, db_path, secrets, who
from runjournal.journal.errors import BackendMissing
from runjournal.journal.stores import is_url, open_store


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="The address to listen on. Anything but a loopback address lets others on the network "
    "read the journal.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8421,
    show_default=True,
    help="The port; 0 takes a free one (printed).",
)
@click.option("--read-only", is_flag=True, help="Offer no acts: no kill, answer or resume.")
@click.option(
    "--as",
    "label",
    metavar="WHO",
    help="Who the token's acts are recorded as. Default: your user name @ this host.",
)
@db_option
def serve(host: str, port: int, read_only: bool, label: str | None, db: Db | None) -> None:
    """Serve a web page over the journal: runs, each run's timeline with its model calls,
    decisions and actions, the state at any event, money, and running runs followed live.

    Reading needs nothing. Killing a run, answering an action in doubt and resuming need the
    token printed at start (sign in at /login, or open the URL printed with it); each act is
    recorded as from the CLI, by --as and with the reason typed. The journal is opened
    read-only, as every reading command opens it.

    \b
    Example:
        journal serve --db journal.db --port 8421
        journal serve --db postgresql://audit@db.internal/journal --read-only
    """
    try:
        import uvicorn

        from runjournal.cli.web.app import Settings, application
    except ImportError as e:
        msg = f"journal serve needs pip install 'runjournal[web]' ({e.name} is missing)"
        raise BackendMissing(msg) from e
    where = db_path(db)
    # The journal must open before anything listens: a wrong --db is one line, not a page.
    open_store(where, readonly=True, secrets=tuple(secrets())).close()
    sock = _bind(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{bound}/"
    token = tokens.token_urlsafe(24)
    settings = Settings(
        db=where,
        token=token,
        label=who(label),
        read_only=read_only,
        secrets=tuple(secrets()),
        allowed_hosts=_hosts(host),
    )
    place = where if is_url(where) else click.format_filename(str(where))
    click.echo(f"serving {place} at {url}")
    if read_only:
        click.echo("read-only: the page offers no acts")
    else:
        click.echo(f"to act (kill, answer, resume) as {settings.label}: {url}login?token={token}")
    if not _loopback(host):
        click.echo(
            f"note: {host} is not a loopback address: others can read this journal", err=True
        )
    config = uvicorn.Config(
        application(settings),
        log_level="warning",
        access_log=False,  # a URL may hold the token
        timeout_graceful_shutdown=1,
        lifespan="on",
    )
    uvicorn.Server(config).run(sockets=[sock])


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {e.strerror}") from e
    sock.listen(128)
    return sock


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _hosts(host: str) -> tuple[str, ...]:
    """The Host headers the page answers: its own address, which keeps a page of another site
    from reaching it by a name that resolves here (DNS rebinding)."""
    names = {"127.0.0.1", "localhost", "[::1]", f"[{host}]" if ":" in host else host}
    if host in ("0.0.0.0", "::"):
        names.add("*")  # listening everywhere: any name the network gives this host
    return tuple(sorted(names))
