"""Reading the JSON data files of `machine.model` (the price table, the capabilities), shipped in
the package or given as a file of the same shape: their text, and the check of each object's
fields, with one-line errors that name the file and the place in it.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Set
from pathlib import Path
from typing import Any


def shipped(name: str, what: str, error: type[Exception]) -> tuple[str, str]:
    """The text of `machine/model/NAME` and how errors name it; `error` if it cannot be read."""
    origin = f"machine/{name}"
    try:
        text = importlib.resources.files(__package__).joinpath(name).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{origin}: cannot read the shipped {what}: {e}") from e
    return text, origin


def given(path: Path, what: str, error: type[Exception]) -> str:
    """The text of a file a user gave; `error` if it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{path}: cannot read the {what}: {e}") from e


def fields(
    row: Any,
    required: Set[str],
    where: str,
    error: type[Exception],
    optional: Set[str] = frozenset(),
) -> dict[str, Any]:
    """`row` as an object with every `required` field and no others but `optional` ones."""
    if not isinstance(row, dict):
        raise error(f"{where}: must be an object with {', '.join(sorted(required))}")
    missing = sorted(required - row.keys())
    if missing:
        raise error(f"{where}: missing field {', '.join(map(repr, missing))}")
    extra = sorted(row.keys() - required - optional)
    if extra:
        known = sorted(required | optional)
        raise error(f"{where}: unknown field {', '.join(map(repr, extra))}; fields are {known}")
    return row
