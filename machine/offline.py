"""`offline()`: the fake Messages API in this process, in place of the real one.

The fake (`machine.testing.fake`) is imported only when `offline()` is called: `import runjournal`
does not load it.
"""

from __future__ import annotations

from runjournal.machine.model.ask import Models, env_secrets
from runjournal.machine.model.capabilities import Capabilities
from runjournal.machine.model.pricing import PriceTable


def offline(
    spec: str = "none",
    *,
    prices: PriceTable | None = None,
    capabilities: Capabilities | None = None,
) -> Models:
    """The fake Messages API of `machine.testing.fake`, in this process, with the faults of `spec`.

    The fake needs no key, but a key in the environment is still kept out of the journal: a
    pipeline may read it, and a leak offline is a leak.
    """
    from runjournal.machine.testing.fake import FakeModel, parse_spec

    capabilities = capabilities or Capabilities.load()
    fake = FakeModel(faults=parse_spec(spec), retry_after=0.2, capabilities=capabilities)
    return Models(fake.client, prices or PriceTable.load(), env_secrets(), capabilities)
