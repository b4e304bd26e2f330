"""What a rerun says: a model request as a person reads it, the diff of two prompts, a decision
or a state that changed, a recorded call, in words."""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from typing import Any

from runjournal.journal import Event, Store, delta
from runjournal.machine.journaled import OPERATIONS

ABSENT = object()
"""A value a decision's inputs or a state did not have."""


def render_request(request: Mapping[str, Any]) -> list[str]:
    """A model request as a person reads it: its settings (thinking, effort, tool_choice), the
    system prompt, each message's text, then each tool's description and schema, and the schema
    of its JSON outputs."""
    lines = [f"{f}: {request[f]}" for f in ("model", "max_tokens") if f in request]
    output = request.get("output_config") or {}
    settings = {
        "thinking": request.get("thinking"),
        "effort": output.get("effort"),
        "tool_choice": request.get("tool_choice"),
    }
    lines += [f"{f}: {json.dumps(v, sort_keys=True)}" for f, v in settings.items() if v is not None]
    if request.get("system") is not None:
        lines += ["[system]", *_text(request["system"])]
    for message in request.get("messages", []):
        lines += [f"[{message.get('role')}]", *_text(message.get("content"))]
    for tool in request.get("tools", []):
        lines += [f"[tool {tool.get('name')}]", *str(tool.get("description", "")).splitlines()]
        schema = json.dumps(tool.get("input_schema"), indent=2, sort_keys=True, ensure_ascii=False)
        lines += schema.splitlines()
    answer_format = output.get("format")
    if answer_format is not None:
        lines.append("[answer format: JSON outputs]")
        lines += json.dumps(answer_format.get("schema"), indent=2, sort_keys=True).splitlines()
    return lines


def _text(content: Any) -> list[str]:
    if isinstance(content, str):
        return content.splitlines() or [""]
    lines: list[str] = []
    for block in content if isinstance(content, list) else []:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            lines += _text(block.get("text", ""))
        elif kind == "tool_use":
            lines.append(
                f"(calls {block.get('name')}) {json.dumps(block.get('input'), sort_keys=True)}"
            )
        elif kind == "tool_result":
            lines += ["(tool result)", *_text(block.get("content"))]
        else:
            lines.append(json.dumps(block, sort_keys=True, ensure_ascii=False))
    return lines


def prompt_diff(journal: Store, was: Event | None, request: dict[str, Any]) -> str:
    """A unified diff of the recorded request (from its blob) against the one built now."""
    now = json.loads(journal.redact(json.dumps(request, ensure_ascii=False)))
    old: Any = None
    if was is not None:
        try:
            old = json.loads(journal.blob(was.data["request"]))
        except LookupError:
            old = None
    before = render_request(old) if old is not None else []
    after = render_request(now)
    if before == after:  # a difference the rendering leaves out (tool_choice, cache_control)
        before = json.dumps(old, indent=2, sort_keys=True, ensure_ascii=False).splitlines()
        after = json.dumps(now, indent=2, sort_keys=True, ensure_ascii=False).splitlines()
    source = f"recorded request (seq {was.seq})" if was is not None else "(no request recorded)"
    return "\n".join(difflib.unified_diff(before, after, source, "request now", lineterm=""))


def decision_change(was: Mapping[str, Any], now: Mapping[str, Any]) -> str:
    if not delta.same(was.get("item"), now["item"]):
        return (
            f"the run decided about {show(was.get('item'))} here ({was.get('outcome')!r}), "
            f"the code now about {show(now['item'])} ({now['outcome']!r})"
        )
    item = show(now["item"])
    old, new = was.get("inputs") or {}, now["inputs"] or {}
    changed = [
        n for n in {**old, **new} if n not in old or n not in new or not delta.same(old[n], new[n])
    ]
    inputs = ", ".join(
        f"{n} {show(old.get(n, ABSENT))} then, {show(new.get(n, ABSENT))} now" for n in changed
    )
    if was.get("outcome") == now["outcome"] and was.get("reason") == now["reason"]:
        return f"the decision about {item} ({now['outcome']!r}) differs in its inputs: {inputs}"
    said = (
        f"the decision about {item} differs: the run decided "
        f"{_outcome(was.get('outcome'), was.get('reason'))}, the code now decides "
        f"{_outcome(now['outcome'], now['reason'])}"
    )
    return f"{said}; inputs: {inputs}" if inputs else said


def _outcome(outcome: Any, reason: Any) -> str:
    return f"{outcome!r} ({reason})" if reason else repr(outcome)


def describe(event: Event) -> str:
    """A recorded call in words: `act page 'T-1004'`, `ask Urgency`, `decision about 'T-1'`."""
    operation = OPERATIONS.get(event.kind, event.kind)
    data = event.data
    if operation == "decision":
        return f"decision about {show(data.get('item'))} ({data.get('outcome')})"
    if operation == "act":
        return f"act {data.get('name')} {data.get('key')!r}"
    return f"{operation} {data.get('name')}"


def went(to: str | None) -> str:
    return f"went to {to!r}" if to is not None else "finished"


def goes(to: str | None) -> str:
    return f"goes to {to!r}" if to is not None else "finishes"


def state_changes(before: Any, ops: list[dict[str, Any]]) -> str:
    """The first changed paths of a state, each with its value then and now."""
    said = []
    for op in ops[:3]:
        path = op["path"] or "/"
        old = show(_at(before, op["path"])) if op["op"] != "add" else "absent"
        new = show(op["value"]) if "value" in op else "absent"
        said.append(f"{path} {old} then, {new} now")
    more = f" (and {len(ops) - 3} more)" if len(ops) > 3 else ""
    return "; ".join(said) + more


def _at(doc: Any, path: str) -> Any:
    """The value at a JSON Pointer."""
    for token in path.split("/")[1:] if path else []:
        token = token.replace("~1", "/").replace("~0", "~")
        doc = doc[int(token)] if isinstance(doc, list) else doc[token]
    return doc


def show(value: Any, limit: int = 80) -> str:
    if value is ABSENT:
        return "absent"
    text = repr(value) if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def cut(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
