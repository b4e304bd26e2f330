"""What the fake Messages API refuses for the model a request names, as the API documents it.

The rules come from the same `Capabilities` the client builds its requests from: a model the
API does not serve (unknown, or retired) is a 404; an assistant prefill where the model takes
none; a forced `tool_choice` where the model
refuses one, or while thinking is on; a `thinking` type the model does not accept, or one that
turns thinking off above the effort the model allows that at; an effort level it lacks; a
manual thinking budget out of range; `max_tokens` over the model's most; `temperature`,
`top_p` or `top_k` under an API version that removed them; JSON outputs or strict tools on a
model without constrained decoding, or with a schema beyond its subset; and a thinking block
passed back changed, or into another conversation. Each is the 400 the API gives: its error
type and, where the docs or public reports quote it, its message word for word.

Private to `machine.testing.fake`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runjournal.machine.model.capabilities import EFFORTS, Capabilities, ModelCapabilities
from runjournal.machine.model.constrained import problems
from runjournal.machine.testing._fake_values import canonical, digest

Refusal = tuple[int, str, str]
"""The status, error type and message of a refused request."""

FORCED_TOOL = 'tool_choice: type "tool" and "any" are not supported for this model.'
"""The 400 of a forced tool on a model that refuses one (the Fable 5.1 and Opus 5.5 pages)."""
FORCED_WHILE_THINKING = "Thinking may not be enabled when tool_choice forces tool use."


def model_of(
    body: Mapping[str, Any], capabilities: Capabilities, aliases: Mapping[str, str]
) -> ModelCapabilities | None:
    """The capabilities of the model the request names (aliases resolved), or None."""
    name = body.get("model")
    if not isinstance(name, str):
        return None
    return capabilities.models.get(aliases.get(name, name))


def check(
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    capabilities: Capabilities,
    aliases: Mapping[str, str],
) -> Refusal | None:
    """How the API refuses this (otherwise well-formed) request; None if it does not."""
    model = model_of(body, capabilities, aliases)
    if model is None or model.status == "retired":
        return 404, "not_found_error", f"model: {body.get('model')}"
    version = {k.lower(): v for k, v in headers.items()}.get("anthropic-version", "")
    api = capabilities.api_version
    if version >= api.version:
        for name in api.removed_parameters:
            if name in body:
                return 400, "invalid_request_error", f"{name}: Extra inputs are not permitted"
    checks = (_max_tokens, _prefill, _effort, _thinking, _tool_choice, _structured, _signatures)
    for check_one in checks:
        said = check_one(body, model, capabilities)
        if said is not None:
            return 400, "invalid_request_error", said
    return None


def thinking_on(body: Mapping[str, Any], model: ModelCapabilities) -> bool:
    """Whether the model thinks on this request: asked for, or its default."""
    thinking = body.get("thinking")
    if not isinstance(thinking, Mapping):
        return model.thinking.on_by_default
    return thinking.get("type") in ("adaptive", "enabled")


def _max_tokens(body: Mapping[str, Any], model: ModelCapabilities, _: Capabilities) -> str | None:
    wanted = body["max_tokens"]
    if wanted > model.max_output_tokens:
        return (
            f"max_tokens: {wanted} > {model.max_output_tokens}, which is the maximum allowed "
            f"number of output tokens for {model.model}"
        )
    return None


def _prefill(body: Mapping[str, Any], model: ModelCapabilities, _: Capabilities) -> str | None:
    messages = body["messages"]
    last = messages[-1] if messages else None
    if not model.prefill and isinstance(last, Mapping) and last.get("role") == "assistant":
        return (
            "This model does not support assistant message prefill. "
            "The conversation must end with a user message."
        )
    return None


def _effort(body: Mapping[str, Any], model: ModelCapabilities, _: Capabilities) -> str | None:
    output = body.get("output_config")
    effort = output.get("effort") if isinstance(output, Mapping) else None
    if effort is None:
        return None
    if effort not in EFFORTS:
        return f"output_config.effort: Input should be {', '.join(map(repr, EFFORTS))}"
    if not model.effort_levels:
        return "output_config.effort: effort is not supported for this model."
    if effort not in model.effort_levels:
        return f'output_config.effort: "{effort}" is not supported for this model.'
    return None


def _thinking(body: Mapping[str, Any], model: ModelCapabilities, _: Capabilities) -> str | None:
    thinking = body.get("thinking")
    if thinking is None:
        return None
    kind = thinking.get("type") if isinstance(thinking, Mapping) else None
    if kind not in ("adaptive", "enabled", "disabled", "between_tools"):
        return "thinking.type: Input tag does not match any of the expected tags"
    if kind not in model.thinking.types:
        if "adaptive" in model.thinking.types:
            return (
                f'"thinking.type.{kind}" is not supported for this model. Use '
                '"thinking.type.adaptive" and "output_config.effort" to control thinking behavior.'
            )
        return f'"thinking.type.{kind}" is not supported for this model.'
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or budget < 1024:
            return "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
        if budget >= body["max_tokens"]:
            return "`max_tokens` must be greater than `thinking.budget_tokens`."
    ceiling = model.thinking.off_max_effort
    output = body.get("output_config")
    effort = output.get("effort") if isinstance(output, Mapping) else None
    level = effort or model.effort_default
    off = kind in ("disabled", "between_tools")
    if off and ceiling and level in EFFORTS and EFFORTS.index(level) > EFFORTS.index(ceiling):
        return (
            f'"thinking.type.{kind}" is not supported with effort "{level}" for this model. '
            'Use "thinking.type.adaptive" at this effort.'
        )
    return None


def _tool_choice(body: Mapping[str, Any], model: ModelCapabilities, _: Capabilities) -> str | None:
    choice = body.get("tool_choice")
    forced = isinstance(choice, Mapping) and choice.get("type") in ("tool", "any")
    if not forced:
        return None
    if not model.forced_tool_choice:
        return FORCED_TOOL
    thinking = body.get("thinking")
    # The docs have said both "while thinking is on" and "with manual extended thinking": the
    # fake holds the client to the stricter, for any thinking the request turns on.
    if isinstance(thinking, Mapping) and thinking.get("type") in ("enabled", "adaptive"):
        return FORCED_WHILE_THINKING
    return None


def _structured(
    body: Mapping[str, Any], model: ModelCapabilities, capabilities: Capabilities
) -> str | None:
    rules = capabilities.constrained
    output = body.get("output_config")
    answer_format = output.get("format") if isinstance(output, Mapping) else None
    strict = [
        (i, t)
        for i, t in enumerate(body.get("tools") or ())
        if isinstance(t, Mapping) and t.get("strict")
    ]
    if (answer_format is not None or strict) and not model.structured_outputs:
        return "Structured outputs are not supported for this model."
    if answer_format is not None:
        if not isinstance(answer_format, Mapping) or answer_format.get("type") != "json_schema":
            return "output_config.format.type: Input should be 'json_schema'"
        said = problems(answer_format.get("schema"), rules, "output_config.format.schema")
        if said is not None:
            return said
    if len(strict) > rules.max_strict_tools:
        return f"Too many strict tools ({len(strict)}). The limit is {rules.max_strict_tools}."
    for i, tool in strict:
        said = problems(tool.get("input_schema"), rules, f"tools.{i}.custom.input_schema")
        if said is not None:
            return said
    return None


def _signatures(body: Mapping[str, Any], model: ModelCapabilities, _: Capabilities) -> str | None:
    messages = body["messages"]
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or message.get("role") != "assistant":
            continue
        content = message.get("content")
        for j, block in enumerate(content if isinstance(content, list) else ()):
            if not isinstance(block, Mapping) or block.get("type") != "thinking":
                continue
            signature = block.get("signature")
            if not isinstance(signature, str):
                return f"messages.{i}.content.{j}.thinking.signature: Field required"
            if signature.partition(":")[0] != model.model:
                continue  # the API drops a block another model wrote, without an error
            if signature != sign(model.model, messages[:i], block.get("thinking")):
                return (
                    f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block. The block "
                    "is bound to a different conversation. Remove the block, or set "
                    '`thinking.block_binding.prefix_mismatch_behavior` to "drop_block".'
                )
    return None


def sign(model: str, before: Any, thinking: Any) -> str:
    """A thinking block's signature: bound to the model, the conversation before the turn it
    ends up in, and its text, so that a block passed back changed, or elsewhere, is caught."""
    return f"{model}:{digest(canonical(before), canonical(thinking), 'thinking')[:32]}"
