"""Writing a file so that a reader, or a crash, sees either the old content or the new, whole.

The data goes to a temporary file in the same folder, which is synced and then renamed over
the target (a rename within one file system is atomic), and the folder is synced so that the
rename itself survives a power loss.

What a crash leaves: the temporaries of target `NAME` are named `.NAME.runjournal-<16 hex
digits>.tmp`, and a writer holds an exclusive `flock` on its temporary from its creation until
after the rename. A writer killed in between leaves its temporary, but its lock dies with it; so
each write of `NAME` first removes every temporary of `NAME` whose lock it can take, and leaves
those whose lock is held: another writer (in this process or another) is at work on them. Only
a lock holder renames or removes a temporary, so a file that is still under its name once the
lock is taken is abandoned. A writer whose new temporary was taken and removed in the instant
before its own lock starts over with another. Nothing else in the folder is ever removed: not
another target's temporaries, nor other programs' files, nor anything but a regular file whose
name matches that exact pattern.

Looking for temporaries means listing the folder, which costs what the folder holds (12 ms for
40,000 files): a pipeline writing a file per item into one folder would slow down with every
file. So a process lists a folder only when it changed since this process last wrote into it,
as the folder's modification time tells. A temporary abandoned while this process writes into
the same folder, within the clock tick of one of its writes, may so be left for the next
process that writes there; nothing is ever removed that should not be.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

_MARK = "runjournal"


def atomic_write(
    path: str | os.PathLike[str],
    data: str | bytes,
    *,
    mode: int = 0o644,
    _before_rename: Callable[[Path], object] | None = None,
) -> None:
    """Replace the file at `path` with `data`, atomically and durably.

    `str` data is written as UTF-8. A crash at any moment leaves the old file or the new one,
    never a mix; a temporary file it leaves is removed by the next write of the same target.
    `_before_rename` is for tests: called with the temporary's path, whole and synced, just
    before the rename.
    """
    target = Path(path)
    folder = target.parent
    raw = data.encode() if isinstance(data, str) else data
    if _changed(folder):
        _remove_abandoned(folder, target.name)
    fd, temporary = _create_locked(folder, target.name)
    with os.fdopen(fd, "wb") as f:  # closing it lets go of the lock: only after the rename
        try:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), mode)
            if _before_rename is not None:
                _before_rename(temporary)
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
    _sync_folder(folder)
    _seen(folder)


# The folders this process wrote into, by (device, inode), and their modification time just
# after its last write there: a cache of what listing them found, private to this process.
_LOOKED: dict[tuple[int, int], int] = {}
_MOST_FOLDERS = 256


def _changed(folder: Path) -> bool:
    """Whether `folder` may hold temporaries this process has not looked for yet."""
    seen = os.stat(folder)
    return _LOOKED.get((seen.st_dev, seen.st_ino)) != seen.st_mtime_ns


def _seen(folder: Path) -> None:
    """Remember `folder` as it is after this process's write."""
    seen = os.stat(folder)
    if len(_LOOKED) >= _MOST_FOLDERS:
        _LOOKED.clear()
    _LOOKED[(seen.st_dev, seen.st_ino)] = seen.st_mtime_ns


def _create_locked(folder: Path, name: str) -> tuple[int, Path]:
    """A new temporary for target `name`, open for writing and locked."""
    while True:
        temporary = folder / f".{name}.{_MARK}-{secrets.token_hex(8)}.tmp"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink > 0:
            return fd, temporary
        # Another write of the target took the lock first, between our open and our flock, and
        # rightly removed a temporary that looked abandoned.
        os.close(fd)


def _remove_abandoned(folder: Path, name: str) -> None:
    """Remove the temporaries of target `name` that no writer holds."""
    pattern = re.compile(re.escape(f".{name}.{_MARK}-") + r"[0-9a-f]{16}\.tmp")
    with os.scandir(folder) as entries:
        ours = [
            Path(entry.path)
            for entry in entries
            if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False)
        ]
    for temporary in ours:
        # Best effort: a temporary already gone, or not ours to remove, never fails a write.
        with contextlib.suppress(OSError):
            _remove_if_abandoned(temporary)


def _remove_if_abandoned(temporary: Path) -> None:
    fd = os.open(temporary, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # its writer is alive and at work
        held, named = os.fstat(fd), os.stat(temporary, follow_symlinks=False)
        if stat.S_ISREG(held.st_mode) and (held.st_dev, held.st_ino) == (
            named.st_dev,
            named.st_ino,
        ):
            os.unlink(temporary)
    finally:
        os.close(fd)


def _sync_folder(folder: Path) -> None:
    # The rename is an entry in the folder: without this, a power loss can undo it.
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
