"""A machine that does one irreversible action per key, for the action crash tests.

With `idempotent`, the outside system dedupes by key: `<store>/<key>` is written once, whatever
the number of calls. Without, every call is a real effect: a line in `<store>/sent.log`. Each
call is also counted in `<store>/calls.log`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import attrs

from runjournal import Context, Machine, Transition, atomic_write


@attrs.frozen
class Keys:
    keys: tuple[str, ...]
    store: str
    idempotent: bool = True
    pause: float = 0.0
    next: int = 0


acting = Machine("acting", state=Keys, start="act")


def _append(path: Path, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def notify(store: str, key: str, *, dedupe: bool, pause: float) -> dict[str, object]:
    folder = Path(store)
    _append(folder / "calls.log", key)
    time.sleep(pause)
    if dedupe:
        target = folder / key
        if not target.exists():
            atomic_write(target, key)
        return {"stored": key}
    _append(folder / "sent.log", key)
    return {"sent": key}


@acting.step
def act(ctx: Context, s: Keys) -> Transition:
    if s.next == len(s.keys):
        return ctx.finish(s)
    key = s.keys[s.next]
    ctx.act(
        "notify",
        key,
        lambda k: notify(s.store, k, dedupe=s.idempotent, pause=s.pause),
        idempotent=s.idempotent,
    )
    return ctx.goto("act", attrs.evolve(s, next=s.next + 1))
