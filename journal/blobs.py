"""Payloads stored once by content hash, in the `blobs` table: named, written, read, checked.

A blob holds JSON text an event refers to by its hash (`sha256:` and the hex digest of its UTF-8
bytes): a run's input, a model request, a big member of an input or a state (journal/parts.py).
A blob of `STREAMED` characters or more is written to SQLite a piece at a time, as its UTF-8
bytes (a BLOB value; `CAST(data AS TEXT)` reads it in SQL): handed to SQLite whole, a 100 MB text
is copied twice more on its way in, 300 MB to store 100. Smaller ones are TEXT values. `size` is
the text's length in characters either way.
"""

from __future__ import annotations

import codecs
import hashlib
import sqlite3
from collections.abc import Callable, Iterable, Iterator

import attrs

STREAMED = 1 << 20
_PIECE = 1 << 20  # characters encoded, hashed or written at a time


Pieces = Callable[[], Iterable[str]]
"""A text a piece at a time, as often as asked: a big text need never be whole in memory."""


@attrs.frozen
class Payload:
    """A text to store as a blob, by pieces, with its name and lengths, measured once."""

    name: str
    size: int  # characters
    length: int  # bytes of UTF-8
    pieces: Pieces


def payload(pieces: Pieces) -> Payload:
    """The text `pieces` give, named and measured in one pass over it."""
    digest, size, length = hashlib.sha256(), 0, 0
    for piece in pieces():
        size += len(piece)
        for chunk in _utf8(piece):
            digest.update(chunk)
            length += len(chunk)
    return Payload("sha256:" + digest.hexdigest(), size, length, pieces)


def ref(text: str) -> str:
    """The name `text` is stored under: `sha256:` and the hex digest of its UTF-8 bytes."""
    return payload(lambda: (text,)).name


def put(conn: sqlite3.Connection, text: str | Payload) -> str:
    """Store `text` once under its content hash, in the transaction open on `conn`; return the
    hash."""
    held = text if isinstance(text, Payload) else payload(lambda: (text,))
    # Looked up first: a big text already stored is not handed to SQLite to be ignored.
    if conn.execute("SELECT 1 FROM blobs WHERE hash = ?", (held.name,)).fetchone() is not None:
        return held.name
    if held.size < STREAMED:
        whole = text if isinstance(text, str) else "".join(held.pieces())
        sql = "INSERT INTO blobs (hash, size, data) VALUES (?, ?, ?)"
        conn.execute(sql, (held.name, held.size, whole))
        return held.name
    sql = "INSERT INTO blobs (hash, size, data) VALUES (?, ?, zeroblob(?))"
    row = conn.execute(sql, (held.name, held.size, held.length)).lastrowid
    assert row is not None
    with conn.blobopen("blobs", "data", row) as blob:
        for piece in held.pieces():
            for chunk in _utf8(piece):
                blob.write(chunk)
    return held.name


def text(conn: sqlite3.Connection, name: str) -> str | None:
    """The text stored under `name`, None if there is none; UnicodeDecodeError if its bytes were
    damaged."""
    row = conn.execute("SELECT rowid, typeof(data) FROM blobs WHERE hash = ?", (name,)).fetchone()
    if row is None:
        return None
    if row[1] == "blob":
        with conn.blobopen("blobs", "data", row[0], readonly=True) as blob:
            return blob.read().decode()
    (data,) = conn.execute("SELECT data FROM blobs WHERE rowid = ?", (row[0],)).fetchone()
    return str(data)


def holds(name: str, size: int, data: str | bytes) -> bool:
    """Whether a blob's `size` and `data`, as stored, are what its name says."""
    if isinstance(data, str):
        return size == len(data) and ref(data) == name
    digest, decoder, length = hashlib.sha256(), codecs.getincrementaldecoder("utf-8")(), 0
    try:
        for start in range(0, len(data), _PIECE):
            piece = data[start : start + _PIECE]
            length += len(decoder.decode(piece))
            digest.update(piece)
        length += len(decoder.decode(b"", final=True))
    except UnicodeDecodeError:
        return False
    return size == length and "sha256:" + digest.hexdigest() == name


def _utf8(text: str) -> Iterator[bytes]:
    for start in range(0, len(text), _PIECE):
        yield text[start : start + _PIECE].encode()
