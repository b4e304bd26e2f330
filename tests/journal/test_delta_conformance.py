"""`journal.delta.apply` against the public JSON Patch conformance suite (RFC 6902).

The cases are in tests/data/json_patch_tests.json, trimmed from json-patch/json-patch-tests:
`tests.json` and `spec_tests.json` (RFC 6902 Appendix A). Cases the suite marks disabled are
skipped, as the suite asks.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from conftest import ROOT

from runjournal.journal import BadPatch
from runjournal.journal.delta import apply

DATA = json.loads((ROOT / "tests" / "data" / "json_patch_tests.json").read_text())


def cases(name: str) -> list[Any]:
    return [
        pytest.param(
            case,
            id=f"{name}[{i}] {case.get('comment', '')}".strip(),
            marks=[pytest.mark.skip(reason="disabled in the suite")]
            if case.get("disabled")
            else [],
        )
        for i, case in enumerate(DATA[name])
    ]


def exact(value: Any) -> str:
    """JSON text that tells true from 1 and 1 from 1.0, whatever the order of keys."""

    def tagged(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: tagged(x) for k, x in v.items()}
        if isinstance(v, list):
            return [tagged(x) for x in v]
        return [type(v).__name__, v]

    return json.dumps(tagged(value), sort_keys=True)


@pytest.mark.parametrize("case", cases("tests") + cases("spec_tests"))
def test_conformance(case: dict[str, Any]) -> None:
    doc = copy.deepcopy(case["doc"])
    if "error" in case:
        with pytest.raises(BadPatch, match=r"operation \d+"):
            apply(doc, case["patch"])
        return
    result = apply(doc, case["patch"])
    assert "expected" in case, "every enabled case that is no error says what it expects"
    assert exact(result) == exact(case["expected"])
