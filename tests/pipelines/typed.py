"""A pipeline run from Python with `machine.run`, whose effect and action return attrs values.

    python typed.py DB OUT POINT MARKER

Runs the machine on three books, journaled in DB; each effect and action appends a line to
OUT as it really runs. At POINT (see `machine.Checkpoint`; "never" for none) the process
writes MARKER and waits to be killed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import attrs

from runjournal import Context, Machine, Options, Transition, machine


@attrs.frozen
class Book:
    title: str
    pages: int


@attrs.frozen
class Shelved:
    title: str
    place: tuple[int, int]
    tags: tuple[str, ...]


@attrs.frozen
class Receipt:
    number: int
    lines: tuple[str, ...]


@attrs.frozen
class Library:
    books: tuple[Book, ...]
    shelved: tuple[Shelved, ...] = ()
    receipt: Receipt | None = None
    out: str = ""


library = Machine("library", state=Library, start="shelve")


def note(s: Library, line: str) -> None:
    with open(s.out, "a") as f:
        f.write(line + "\n")


@library.step(to=("shelve", "order"))
def shelve(ctx: Context, s: Library) -> Transition:
    book = s.books[len(s.shelved)]

    def place() -> Shelved:
        note(s, f"shelve {book.title}")
        return Shelved(book.title, (len(s.shelved), book.pages % 7), ("new", "paper"))

    shelved = ctx.effect("place", place)
    # The same types on a first run and on a resume: the step relies on them.
    assert type(shelved) is Shelved and type(shelved.place) is tuple, shelved
    s = attrs.evolve(s, shelved=(*s.shelved, shelved))
    return ctx.goto("shelve" if len(s.shelved) < len(s.books) else "order", s)


@library.step(to=())
def order(ctx: Context, s: Library) -> Transition:
    def send(key: str) -> Receipt:
        note(s, f"order {key}")
        return Receipt(7, tuple(b.title for b in s.shelved))

    receipt = ctx.act("order", "order-1", send, idempotent=True)
    assert type(receipt) is Receipt and type(receipt.lines) is tuple, receipt
    return ctx.finish(attrs.evolve(s, receipt=receipt))


BOOKS = [Book("Emma", 474), Book("Dune", 412), Book("Ulysses", 730)]


def main() -> None:
    db, out, point, marker = sys.argv[1:]

    def checkpoint(name: str) -> None:
        if name == point:
            Path(marker).write_text(name)
            time.sleep(3600)

    outcome = machine.run(
        library,
        {"books": BOOKS, "out": out},
        db=db,
        options=Options(checkpoint=checkpoint),
    )
    print(outcome.run.run_id, outcome.run.status)


if __name__ == "__main__":
    main()
