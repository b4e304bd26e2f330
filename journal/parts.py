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
from collections.abc import Callable, Mapping
from typing import Any

from journal.events import dumps

SMALLEST = 64 * 1024
"""Characters of JSON from which a member is stored as a part: small members stay inline, where
`journal show` and SQL's `json_extract` read them."""

Keep = Callable[[str], str]
"""Stores a part's JSON text (or holds it to be stored with the event) and returns its blob hash."""

Load = Callable[[str], str]
"""The text of the blob a hash names."""


def split(value: Any, keep: Keep) -> tuple[Any, dict[str, str] | None, int]:
    """`value` with its big members taken out, the parts `{member: blob hash}` that hold them
    (None if none), and the characters of JSON that `value` takes in all."""
    if not isinstance(value, dict):
        return value, None, len(dumps(value))
    skeleton: dict[str, Any] = {}
    parts: dict[str, str] = {}
    size = 2 + 4 * len(value)  # braces, and each member's quotes, colon and comma, roughly
    for name, member in value.items():
        text = dumps(member)
        size += len(name) + len(text)
        if len(text) >= SMALLEST:
            skeleton[name] = None
            parts[name] = keep(text)
        else:
            skeleton[name] = member
    return skeleton, parts or None, size


def join(skeleton: Any, parts: Mapping[str, str] | None, load: Load) -> Any:
    """The whole value `split` took apart: each part read back in its member's place."""
    if not parts:
        return skeleton
    return {
        name: json.loads(load(parts[name])) if name in parts else member
        for name, member in skeleton.items()
    }
