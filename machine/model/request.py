"""The Messages API request for one round of an ask, built from the model's documented capabilities.

`plan` decides, from `Capabilities`, how the answer's shape is asked for (the mechanism:
JSON outputs, a strict or forced tool, a plain tool, or free text) and checks the request
against the model's documented rules, raising `RequestRefused` (naming the rule) for one the
API would refuse, before anything is sent or spent. `build` writes the request itself.

The mechanism is the model's `structured_answer` when the schema fits constrained decoding
(`machine.model.constrained`); otherwise a forced tool where the model accepts one and thinking
is off (the API refuses a forced tool while thinking is on, on some models at least, so a
forced tool is never sent then), and else a plain tool with `tool_choice` auto, which the model
may ignore to answer in text: that answer is then read, or rejected and asked again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeAlias

import attrs

from runjournal.machine.errors import RequestRefused
from runjournal.machine.model.capabilities import (
    EFFORTS,
    Capabilities,
    Effort,
    Mechanism,
    ModelCapabilities,
)
from runjournal.machine.model.constrained import fit

ThinkingOption: TypeAlias = Literal["adaptive", "disabled", "between_tools"] | int | None
"""What `ctx.ask(thinking=...)` takes: None leaves it to the model's default; "adaptive" lets
the model decide how much to think; "disabled" and "between_tools" turn it off where the model
allows; an int is a manual budget of thinking tokens (`{"type": "enabled", "budget_tokens": N}`)."""

MIN_THINKING_BUDGET = 1024
"""The smallest `budget_tokens` the API takes."""
_NOT_A_SETTING = 'thinking must be "adaptive", "disabled", "between_tools" or a budget, not {!r}'


@attrs.frozen
class Plan:
    """How one ask's requests are made: the mechanism and what it sends besides the prompt."""

    mechanism: Mechanism
    tool: dict[str, Any] | None
    """The tool the answer is asked through (with `strict` for strict_tool), or None."""
    schema: dict[str, Any] | None
    """The schema of `output_config.format`, for json_outputs."""
    thinking: dict[str, Any] | None
    """The request's `thinking`, or None to leave it out."""
    effort: Effort | None
    thinking_on: bool
    """Whether the model thinks on these requests (asked for, or its default)."""


def plan(
    capabilities: Capabilities,
    model: ModelCapabilities,
    *,
    tool: Mapping[str, Any] | None,
    thinking: ThinkingOption,
    effort: Effort | None,
    max_tokens: int,
    temperature: float | None = None,
) -> Plan:
    """The plan of an ask on `model` answering through `tool` (None: free text), or
    RequestRefused naming the documented rule the request would break."""
    name = model.model
    where = f"(machine/model/capabilities.json, checked {capabilities.checked})"
    if model.status == "retired":
        msg = f"{name} is retired: the API fails every request to it {where}; ask a current model"
        raise RequestRefused(msg)
    if temperature is not None:
        version = capabilities.api_version
        msg = (
            f"temperature was removed from the Messages API in version {version.version}, which "
            f"the anthropic SDK sends: every model refuses it ({version.source}); leave it out, "
            "and use effort= to trade depth for speed and cost"
        )
        raise RequestRefused(msg)
    if max_tokens > model.max_output_tokens:
        msg = (
            f"max_tokens {max_tokens:,} is over {name}'s limit of {model.max_output_tokens:,} "
            f"output tokens {where}"
        )
        raise RequestRefused(msg)
    if effort is not None and effort not in model.effort_levels:
        if not model.effort_levels:
            msg = f"{name} takes no effort level {where}; leave effort unset"
        else:
            levels = ", ".join(model.effort_levels)
            msg = f"{name} takes effort {levels}, not {effort!r} {where}"
        raise RequestRefused(msg)
    sent = _thinking(name, model, thinking, effort, max_tokens, where)
    thinking_on = _thinks(model, thinking)
    mechanism, chosen, schema = _mechanism(capabilities, model, tool, thinking_on)
    return Plan(mechanism, chosen, schema, sent, effort, thinking_on)


def _thinking(
    name: str,
    model: ModelCapabilities,
    thinking: ThinkingOption,
    effort: Effort | None,
    max_tokens: int,
    where: str,
) -> dict[str, Any] | None:
    """The request's `thinking` for the option given, checked against the model's rules."""
    if thinking is None:
        return None
    accepted = model.thinking.types
    if isinstance(thinking, bool) or not isinstance(thinking, int | str):
        raise RequestRefused(_NOT_A_SETTING.format(thinking))
    if isinstance(thinking, int):
        if "enabled" not in accepted:
            msg = (
                f"{name} does not take a thinking budget (thinking={thinking}): it accepts "
                f'thinking {_listed(accepted)} {where}; use thinking="adaptive" and effort= '
                "to control how much it thinks"
            )
            raise RequestRefused(msg)
        if not MIN_THINKING_BUDGET <= thinking < max_tokens:
            msg = (
                f"a thinking budget must be at least {MIN_THINKING_BUDGET:,} tokens and below "
                f"max_tokens ({max_tokens:,}), not {thinking:,}"
            )
            raise RequestRefused(msg)
        return {"type": "enabled", "budget_tokens": thinking}
    if thinking not in ("adaptive", "disabled", "between_tools"):
        raise RequestRefused(_NOT_A_SETTING.format(thinking))
    if thinking not in accepted:
        instead = ""
        if thinking == "disabled" and "between_tools" in accepted:
            instead = '; thinking="between_tools" is its lowest setting'
        elif thinking in ("disabled", "between_tools") and "disabled" in accepted:
            instead = '; thinking="disabled" turns it off'
        elif thinking in ("disabled", "between_tools"):
            instead = "; its thinking cannot be turned off: lower effort= instead"
        msg = f"{name} does not accept thinking {thinking!r}: it accepts {_listed(accepted)}"
        raise RequestRefused(f"{msg} {where}{instead}")
    ceiling = model.thinking.off_max_effort
    level = effort or model.effort_default
    off = thinking in ("disabled", "between_tools")
    if off and ceiling and level and EFFORTS.index(level) > EFFORTS.index(ceiling):
        msg = (
            f"{name} accepts thinking {thinking!r} only at effort {ceiling} or lower, not "
            f'{level} {where}; lower effort=, or use thinking="adaptive"'
        )
        raise RequestRefused(msg)
    return {"type": thinking}


def _thinks(model: ModelCapabilities, thinking: ThinkingOption) -> bool:
    if thinking is None:
        return model.thinking.on_by_default
    return thinking not in ("disabled", "between_tools")


def _mechanism(
    capabilities: Capabilities,
    model: ModelCapabilities,
    tool: Mapping[str, Any] | None,
    thinking_on: bool,
) -> tuple[Mechanism, dict[str, Any] | None, dict[str, Any] | None]:
    if tool is None:
        return "text", None, None
    fitted = (
        fit(tool["input_schema"], capabilities.constrained) if model.structured_outputs else None
    )
    constrained = fitted.schema if fitted is not None else None
    forced_ok = model.forced_tool_choice and not thinking_on
    order: list[Mechanism] = [model.structured_answer, "json_outputs", "strict_tool", "forced_tool"]
    for mechanism in order:
        if mechanism == "json_outputs" and constrained is not None:
            return mechanism, None, constrained
        if mechanism == "strict_tool" and constrained is not None:
            return mechanism, {**tool, "input_schema": constrained, "strict": True}, None
        if mechanism == "forced_tool" and forced_ok:
            return mechanism, dict(tool), None
    return "auto_tool", dict(tool), None


def build(
    model: str,
    plan: Plan,
    *,
    system: str | None,
    messages: list[dict[str, Any]],
    max_tokens: int,
    cache_system: bool,
) -> dict[str, Any]:
    """The request body of one round, as `client.messages.create(**request)` takes it."""
    request: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": messages}
    if system is not None:
        block: dict[str, Any] = {"type": "text", "text": system}
        if cache_system:
            block["cache_control"] = {"type": "ephemeral"}
        request["system"] = [block]
    output: dict[str, Any] = {}
    if plan.mechanism == "json_outputs":
        output["format"] = {"type": "json_schema", "schema": plan.schema}
    elif plan.tool is not None:
        request["tools"] = [plan.tool]
        if plan.mechanism == "forced_tool":
            choice = {"type": "tool", "name": plan.tool["name"], "disable_parallel_tool_use": True}
        else:
            choice = {"type": "auto", "disable_parallel_tool_use": True}
        request["tool_choice"] = choice
    if plan.effort is not None:
        output["effort"] = plan.effort
    if output:
        request["output_config"] = output
    if plan.thinking is not None:
        request["thinking"] = plan.thinking
    return request


def _listed(types: tuple[str, ...]) -> str:
    return " or ".join(repr(t) for t in types)
