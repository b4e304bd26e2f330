"""The docstrings that describe a class and its fields in its JSON Schema, read from the source:
the class's own, and the string statement under each field (bases included).
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import threading

import attrs


def docstrings(cls: type) -> tuple[str | None, dict[str, str]]:
    """The class's own docstring and its fields' attribute docstrings, bases included.

    Read from the source, so only what a person wrote counts; without source (a class made by
    exec or make_class) the class falls back to `__doc__` and its fields have none.
    """
    doc = cls.__dict__.get("__doc__")
    doc = inspect.cleandoc(doc) if isinstance(doc, str) else None
    fields: dict[str, str] = {}
    for klass in reversed(cls.__mro__):  # nearer classes override their bases
        node = _class_node(klass) if attrs.has(klass) else None
        if node is None:
            continue
        if klass is cls:
            doc = ast.get_docstring(node)
        for before, after in zip(node.body, node.body[1:], strict=False):
            name, text = _assigned_name(before), _string_statement(after)
            if name and text is not None:
                fields[name] = inspect.cleandoc(text)
    return doc, fields


# CPython 3.11 can fail ("AST constructor recursion depth mismatch") when two threads parse
# at once, as the items of a parallel step do when each asks for its schema.
_PARSING = threading.Lock()


def _class_node(klass: type) -> ast.ClassDef | None:
    try:
        with _PARSING:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
    except (OSError, TypeError, SyntaxError):
        return None  # no source: described without docstrings, never an error
    node = tree.body[0] if tree.body else None
    return node if isinstance(node, ast.ClassDef) else None


def _assigned_name(statement: ast.stmt) -> str | None:
    if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
        return statement.target.id
    if (
        isinstance(statement, ast.Assign)
        and len(statement.targets) == 1
        and isinstance(statement.targets[0], ast.Name)
    ):
        return statement.targets[0].id
    return None


def _string_statement(statement: ast.stmt) -> str | None:
    if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
        value = statement.value.value
        return value if isinstance(value, str) else None
    return None
