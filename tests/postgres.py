"""A throwaway PostgreSQL server for the tests: finding the server's programs, a cluster in
temporary folders that listens on a Unix socket only (no TCP port), and its databases.

The fixtures `postgres_cluster` and `pg_url` (tests/conftest.py) start and stop it. initdb refuses
to run as root, so as root the server's programs run as the user `nobody`, who owns the folders.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
import urllib.parse
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

# Where Debian's packages put each major version's programs (postgresql-15: .../15/bin).
DEBIAN_BINDIRS = "/usr/lib/postgresql/*/bin"
NOT_INSTALLED = (
    "PostgreSQL is not installed (no initdb in `pg_config --bindir` or {debian}): "
    ".ci/run installs postgresql-15 from Debian's packages"
)
# The server's own default. It is passed to the server and written in every URL, so that a PGPORT
# in the environment moves neither (the socket's name ends with the port).
PORT = 5432
# A Unix socket's path is at most 107 bytes on Linux; the server adds "/.s.PGSQL.5432".
SOCKET_PATH_MAX = 107
UNPRIVILEGED = "nobody"
LOG_LINES = 20


class ClusterError(Exception):
    """The cluster could not be made or started; the message ends with the server's log."""


def find_bindir() -> Path | str:
    """The folder with initdb and pg_ctl: `pg_config --bindir` if it has them, else the newest
    of Debian's versions. A string says why there is none."""
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if found.returncode == 0 and _has_programs(Path(found.stdout.strip())):
            return Path(found.stdout.strip())
    debian = [path for path in Path("/").glob(DEBIAN_BINDIRS.lstrip("/")) if _has_programs(path)]
    if debian:
        return max(debian, key=lambda path: _version(path.parent.name))
    return NOT_INSTALLED.format(debian=DEBIAN_BINDIRS)


def _has_programs(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in ("initdb", "pg_ctl"))


def _version(name: str) -> tuple[int, ...]:
    """'15' -> (15,), '9.6' -> (9, 6); a name that is no version sorts first."""
    return (
        tuple(int(part) for part in name.split(".")) if re.fullmatch(r"\d+(\.\d+)*", name) else ()
    )


def socket_url(socket_dir: Path, dbname: str, user: str = "postgres") -> str:
    """A libpq URL for a server on the Unix socket in `socket_dir`: an empty host before the
    path, and the folder as the `host` parameter, percent-encoded (libpq decodes it)."""
    quote = urllib.parse.quote
    return (
        f"postgresql://{quote(user, safe='')}@/{quote(dbname, safe='')}"
        f"?host={quote(str(socket_dir), safe='')}&port={PORT}"
    )


class Cluster:
    """A PostgreSQL cluster of its own in a temporary folder: `start()`, `url(dbname)`,
    `create_database(name)`, `drop_database(name)`, `stop()`. Its superuser is `postgres`, and a
    connection on its socket is trusted with no password."""

    def __init__(self, bindir: Path, *, fsync: bool = False) -> None:
        self.bindir = bindir
        self.fsync = fsync
        """Whether the server syncs its commits to disk (bench/postgres_bench.py): tests need
        not."""
        self.root: Path | None = None
        # The words before each command: as root, initdb and the server run as `nobody`.
        self._as: list[str] = []

    @property
    def data_dir(self) -> Path:
        return self._folder("data")

    @property
    def socket_dir(self) -> Path:
        return self._folder("socket")

    @property
    def log_file(self) -> Path:
        return self._folder("server.log")

    def _folder(self, name: str) -> Path:
        if self.root is None:
            raise RuntimeError("the cluster has not been started")
        return self.root / name

    def start(self) -> None:
        """initdb into a new temporary folder and start the server; ClusterError if either fails
        (the folder is removed)."""
        if self.root is not None:
            raise RuntimeError("the cluster is already started")
        self._as = _unprivileged_prefix() if os.geteuid() == 0 else []
        self.root = Path(tempfile.mkdtemp(prefix="runjournal-pg-"))
        try:
            self._prepare_folders()
            data = str(self.data_dir)
            trusted = ("--auth=trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C")
            self._run("initdb", "-D", data, *trusted, "--no-instructions")
            # No TCP (listen_addresses empty), the socket in our folder, and no fsync (-F): a
            # test's data need not survive a crash of the machine.
            options = (
                f"-k {shlex.quote(str(self.socket_dir))} -p {PORT} -c listen_addresses=''"
                f"{'' if self.fsync else ' -F'} -c max_connections=200 -c shared_buffers=32MB"
            )
            waiting = ("-w", "-t", "60")
            self._run(
                "pg_ctl", "-D", data, "-l", str(self.log_file), *waiting, "start", "-o", options
            )
        except BaseException:
            with contextlib.suppress(ClusterError):
                self.stop()  # a server that started too slowly for pg_ctl's -t may be running
            raise

    def _prepare_folders(self) -> None:
        socket_path = f"{self.socket_dir}/.s.PGSQL.{PORT}"
        if len(socket_path.encode()) > SOCKET_PATH_MAX:
            raise ClusterError(
                f"the socket's path {socket_path} is longer than {SOCKET_PATH_MAX} bytes: "
                "set TMPDIR to a shorter folder"
            )
        for folder in (self.data_dir, self.socket_dir):
            folder.mkdir(mode=0o700)
        if self._as:
            assert self.root is not None
            user = pwd.getpwnam(UNPRIVILEGED)
            for path in (self.root, self.data_dir, self.socket_dir):
                os.chown(path, user.pw_uid, user.pw_gid)
            blocked = [
                parent for parent in self.root.parents if not _can_traverse(parent, user.pw_uid)
            ]
            if blocked:
                raise ClusterError(
                    f"the user {UNPRIVILEGED} who runs the server cannot reach {self.root} "
                    f"(through {blocked[0]}): set TMPDIR to a folder it can reach"
                )

    def _run(self, program: str, *args: str) -> None:
        assert self.root is not None
        command = [*self._as, str(self.bindir / program), *args]
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                cwd=self.root,  # `nobody` may not be allowed into the caller's folder
                env=_environment(),
                timeout=120,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ClusterError(f"{program} failed: {e}{self._log_tail()}") from e
        if done.returncode != 0:
            output = (done.stdout + done.stderr).strip()
            raise ClusterError(
                f"{program} exited with {done.returncode}: {output}{self._log_tail()}"
            )

    def _log_tail(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()
        except (OSError, RuntimeError):
            return ""
        return "\nthe server's log ends with:\n" + "\n".join(lines[-LOG_LINES:])

    def url(self, dbname: str) -> str:
        return socket_url(self.socket_dir, dbname)

    def create_database(self, name: str | None = None) -> str:
        """A new, empty database (named `name`, or a new name of its own); its URL."""
        name = name or f"db_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop the database, closing any connection a test left open to it."""
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def stop(self) -> None:
        """Stop the server at once (nothing in it is kept) and remove its folders; it may be
        called again, or on a cluster that failed to start."""
        if self.root is None:
            return
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None


def _unprivileged_prefix() -> list[str]:
    """The words that run a command as `nobody`: runuser, or setpriv where runuser is missing."""
    try:
        pwd.getpwnam(UNPRIVILEGED)
    except KeyError:
        raise ClusterError(
            f"initdb refuses to run as root, and there is no user {UNPRIVILEGED} to run it as"
        ) from None
    if shutil.which("runuser"):
        return ["runuser", "-u", UNPRIVILEGED, "--"]
    if shutil.which("setpriv"):
        user = pwd.getpwnam(UNPRIVILEGED)
        return [
            "setpriv",
            f"--reuid={user.pw_uid}",
            f"--regid={user.pw_gid}",
            "--clear-groups",
            "--",
        ]
    raise ClusterError(
        f"initdb refuses to run as root, and neither runuser nor setpriv is here to run it as "
        f"{UNPRIVILEGED}"
    )


def _can_traverse(folder: Path, uid: int) -> bool:
    """Whether the user `uid`, in no group of note, may pass through `folder`."""
    mode = folder.stat()
    return bool(mode.st_mode & stat.S_IXOTH) or (
        mode.st_uid == uid and bool(mode.st_mode & stat.S_IXUSR)
    )


def _environment() -> dict[str, str]:
    """The caller's environment without libpq's and the server's variables (PGDATA, PGPORT...),
    which would otherwise override the command line's choices."""
    return {name: value for name, value in os.environ.items() if not name.startswith("PG")}
