"""Parallel items inside one step: `ctx.map`.

Each item runs `fn(item_ctx, item)` in a thread of the step's pool, with a context of its own
whose calls are placed under the item's key (`T-17/#0`, `T-17/score`): its events are journaled
as they complete, in any order, through the run's one writer, and a resume answers an item's
calls from the journal by those places, so only the unfinished items do anything again. The
model requests of all the items share the run's pace (`machine.pacing`): a window that halves
on a 429 or 529, and the API's limits per minute.

When an item fails, no new item starts; the ones running finish (what they journal is kept)
and the step fails with the first failure, in item order, a kill first of all.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from runjournal.machine.errors import DefinitionError, Interrupted, Killed, NeedsAttention
from runjournal.machine.journaled import Calls

I = TypeVar("I")  # noqa: E741
R = TypeVar("R")


def map_items(
    calls: Calls,
    fn: Callable[[Calls, I], R],
    items: Iterable[I],
    *,
    key: Callable[[I], str],
    concurrency: int,
) -> list[R]:
    """See `Context.map`."""
    if concurrency < 1:
        msg = f"step {calls.step!r}: ctx.map needs concurrency >= 1, not {concurrency}"
        raise DefinitionError(msg)
    work = list(items)
    keys = [key(item) for item in work]
    _check_keys(calls, keys)
    item_calls = [calls.item(k) for k in keys]
    if not calls.journaling.parallel or concurrency == 1 or len(work) <= 1:
        # A rerun compares calls one at a time; and one thread needs no pool.
        try:
            return [fn(c, item) for c, item in zip(item_calls, work, strict=True)]
        finally:
            _gather(calls, item_calls)
    results: list[Any] = [None] * len(work)
    failures: dict[int, BaseException] = {}
    with concurrent.futures.ThreadPoolExecutor(
        max_workers=min(concurrency, len(work)), thread_name_prefix=f"{calls.step}-item"
    ) as pool:
        pending = {
            pool.submit(fn, c, item): i
            for i, (c, item) in enumerate(zip(item_calls, work, strict=True))
        }
        for future in concurrent.futures.as_completed(pending):
            if future.cancelled():
                continue
            i = pending[future]
            error = future.exception()
            if error is None:
                results[i] = future.result()
                continue
            failures[i] = error
            for other in pending:
                other.cancel()  # not started: left for the resume
    _gather(calls, item_calls)
    if failures:
        raise _first(failures)
    return results


def _check_keys(calls: Calls, keys: list[str]) -> None:
    seen: set[str] = set()
    for k in keys:
        if not isinstance(k, str) or not k or "/" in k:
            msg = (
                f"step {calls.step!r}: ctx.map's key gave {k!r}; an item key is a non-empty "
                "string without '/', e.g. key=lambda t: t.id"
            )
            raise DefinitionError(msg)
        if k in seen:
            msg = f"step {calls.step!r}: ctx.map's key gives {k!r} to two items; keys name items"
            raise DefinitionError(msg)
        seen.add(k)


def _gather(calls: Calls, item_calls: list[Calls]) -> None:
    """What the items' calls learnt (a code change, an action to resolve) is the step's."""
    for c in item_calls:
        if calls.mismatch is None and c.mismatch is not None:
            calls.mismatch = c.mismatch
        if calls.stopped is None and c.stopped is not None:
            calls.stopped = c.stopped


def _first(failures: dict[int, BaseException]) -> BaseException:
    ordered = [failures[i] for i in sorted(failures)]
    for kind in (Interrupted, Killed, NeedsAttention):
        for error in ordered:
            if isinstance(error, kind):
                return error
    return ordered[0]
