"""Big values stored once: the big members of an input or a state kept as blobs, by content hash.

A run's first state usually holds its input (the tickets it works through), and each snapshot
holds the state again. Written whole, a 100 MB input would be stored as the input, again in
`run.started`'s first state and again in each snapshot. Instead, each top-level member of an
input or a state whose JSON text is at least `SMALLEST` characters is a part: a blob named by
the hash of its text. The event holds null in the member's place and names the blob in its
`input_parts` or `state_parts` field, `{member: blob hash}`. The same member written again (the
input's tickets in the first state, a member no step changed in a snapshot) is the same text, so
the same blob, stored once.

An input that is not a JSON object (JSON Lines, read as a list) is one blob whole, as before,
and a member of the first state that equals it is that blob again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from runjournal.journal import blobs
from runjournal.journal.events import dumps

SMALLEST = 64 * 1024
"""Characters of JSON from which a member is stored as a part: small members stay inline, where
`journal show` and SQL's `json_extract` read them."""

Load = Callable[[str], str]
"""The text of the blob a hash names."""

_ITEMS_AT_ONCE = 1000
"""Items of a big list encoded at a time: encoded whole, a list of 100 MB takes twice that
while json builds it."""


def split(
    value: Any, redact: Callable[[str], str], secrets: Sequence[str]
) -> tuple[Any, dict[str, str] | None, list[blobs.Payload], int]:
    """`value` with its big members taken out; the parts `{member: blob hash}` that hold them
    (None if none); the payloads to store, secrets redacted; and the characters of JSON that
    its members take in all. A value that is no JSON object has no members: it is given back
    as it is, with 0 characters.

    A member is encoded, redacted and hashed by pieces (`whole`), and encoded again as it is
    stored: a big one is never whole in memory as text.
    """
    if not isinstance(value, dict):
        return value, None, [], 0
    skeleton: dict[str, Any] = {}
    parts: dict[str, str] = {}
    payloads: list[blobs.Payload] = []
    size = 2 + 4 * len(value)  # braces, and each member's quotes, colon and comma, roughly
    for name, member in value.items():
        held = whole(member, redact, secrets)
        size += len(name) + held.size
        if held.size >= SMALLEST:
            skeleton[name] = None
            parts[name] = held.name
            payloads.append(held)
        else:
            skeleton[name] = member  # redacted with the event that holds it
    return skeleton, parts or None, payloads, size


def size(value: Any) -> int:
    """The characters of JSON `value` takes, counted by pieces: a big state is never whole in
    memory as text to be measured."""
    if isinstance(value, dict):
        # Braces, commas between members, and each member's quoted name and colon.
        sizes = (len(dumps(name)) + 1 + size(member) for name, member in value.items())
        return 1 + max(len(value), 1) + sum(sizes)
    return sum(map(len, _pieces(value, str, by_pieces=True)()))


def whole(value: Any, redact: Callable[[str], str], secrets: Sequence[str]) -> blobs.Payload:
    """The JSON text of `value`, redacted, as a payload: a big list a thousand items at a time
    unless a secret could span two pieces (one holds the comma between them)."""
    by_pieces = not any("," in secret for secret in secrets)
    return blobs.payload(_pieces(value, redact, by_pieces=by_pieces))


def _pieces(value: Any, redact: Callable[[str], str], *, by_pieces: bool) -> blobs.Pieces:
    if not (by_pieces and isinstance(value, list) and len(value) > _ITEMS_AT_ONCE):
        return lambda: (redact(dumps(value)),)

    def pieces() -> Iterator[str]:
        yield "["
        for start in range(0, len(value), _ITEMS_AT_ONCE):
            if start:
                yield ","
            yield redact(dumps(value[start : start + _ITEMS_AT_ONCE])[1:-1])
        yield "]"

    return pieces


def join(skeleton: Any, parts: Mapping[str, str] | None, load: Load) -> Any:
    """The whole value `split` took apart: each part read back in its member's place."""
    if not parts:
        return skeleton
    return {
        name: json.loads(load(parts[name])) if name in parts else member
        for name, member in skeleton.items()
    }
