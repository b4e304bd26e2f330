"""What every store has that no backend writes itself: the secrets it keeps out, and `with`.

A backend (the SQLite `Journal`; PostgreSQL next) subclasses `StoreBase` and writes the roles of
`journal.protocol.Backend` in its own SQL. The rest of `journal.protocol.Store` is here, written
once: `keep_out`, `redact` and `secrets` (the `Redacting` role), and `__enter__`/`__exit__` over
the backend's `close`. Nothing here touches storage.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Sequence
from typing import Self

REDACTED = "[redacted]"
"""What a secret is replaced with wherever it would have been written."""
MIN_SECRET = 8
"""Shorter strings are not redacted: replacing them would garble the journal, and no API key
is that short."""


class StoreBase(abc.ABC):
    """The members of a store that are the same on every backend."""

    def __init__(self, *, secrets: Sequence[str] = ()) -> None:
        self.secrets: tuple[str, ...] = ()
        """Strings this journal never holds: replaced by `[redacted]` in all it writes."""
        self.keep_out(*secrets)

    def keep_out(self, *secrets: str) -> None:
        """Never write these strings (e.g. API keys): from now on each becomes `[redacted]`.

        Strings shorter than MIN_SECRET characters are ignored.
        """
        found = [s for s in secrets if len(s) >= MIN_SECRET and s not in self.secrets]
        # The JSON-escaped form too: a secret holding a quote is escaped in event data.
        escaped = [json.dumps(s, ensure_ascii=False)[1:-1] for s in found]
        self.secrets += tuple(dict.fromkeys([*found, *escaped]))

    def redact(self, text: str) -> str:
        """`text` with every secret replaced; the same object when it holds none."""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    @abc.abstractmethod
    def close(self) -> None:
        """Let the backend's connection go; the store is not used after."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
