"""The model boundary: `ctx.ask` through the anthropic SDK, with what it needs.

`ask` (journaled, retried, validated and priced model calls), `request` (the request of each
round, built from `capabilities`: what the API documents per model), `constrained` (a schema cut
down to what constrained decoding accepts), `output` (reading an answer, or why it does not
fit), `jsonschema` (the JSON Schema of an attrs class), `pricing` (the dated price table and
exact costs) and `retry` (the one retry loop, which actions use too).
"""

from machine.model.ask import Models, ModelSession, anthropic_api, offline

__all__ = ["ModelSession", "Models", "anthropic_api", "offline"]
