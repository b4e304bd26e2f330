"""Tools for testing pipelines offline: the fake Anthropic Messages API.

Imported only by what uses it (a test, `--fake-model`, `journal fake-model`): `import runjournal`
does not load it.
"""

from runjournal.machine.testing.fake import (
    CHAOS,
    FAULTS,
    GROUPS,
    PROMPT_CACHES,
    BatchFaults,
    FakeModel,
    FakeServer,
    Faults,
    PromptCache,
    parse_batch_spec,
    parse_spec,
    serve,
)

__all__ = [
    "CHAOS",
    "FAULTS",
    "GROUPS",
    "PROMPT_CACHES",
    "BatchFaults",
    "FakeModel",
    "FakeServer",
    "Faults",
    "PromptCache",
    "parse_batch_spec",
    "parse_spec",
    "serve",
]
