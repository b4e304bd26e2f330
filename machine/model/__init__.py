"""The model boundary: `ctx.ask` through the anthropic SDK, with what it needs.

`ask` (journaled, retried, validated and priced model calls), `request` (the request of each
round, built from `capabilities`: what the API documents per model), `constrained` (a schema cut
down to what constrained decoding accepts), `output` (reading an answer, or why it does not
fit), `jsonschema` (the JSON Schema of an attrs class; its parts `schema_types`,
`schema_validators`, `schema_patterns` and `schema_docs`), `pricing` (the dated price table and
exact costs). The retry loop, which actions use too, is `machine.retry`; the fake in place of
the API, `machine.offline`.
"""

from runjournal.machine.model.ask import Models, ModelSession, anthropic_api

__all__ = ["ModelSession", "Models", "anthropic_api"]
