"""Writing a file so that a reader, or a crash, sees either the old content or the new, whole.

The data goes to a temporary file in the same folder, which is synced and then renamed over
the target (a rename within one file system is atomic), and the folder is synced so that the
rename itself survives a power loss.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def atomic_write(path: str | os.PathLike[str], data: str | bytes, *, mode: int = 0o644) -> None:
    """Replace the file at `path` with `data`, atomically and durably.

    `str` data is written as UTF-8. A crash at any moment leaves the old file or the new one,
    never a mix, and never a stray temporary file under the target's name.
    """
    target = Path(path)
    folder = target.parent
    raw = data.encode() if isinstance(data, str) else data
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _sync_folder(folder)


def _sync_folder(folder: Path) -> None:
    # The rename is an entry in the folder: without this, a power loss can undo it.
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
