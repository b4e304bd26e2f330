"""Catching a run that used far more tokens than its machine's usual: the `cost.anomaly` check.

When a run ends, its input tokens per step (all input: uncached, cache writes, cache reads) and
its output tokens per step are compared with the median of the last finished runs of the same
machine. More than `threshold` times the median is recorded as a `cost.anomaly` event, with the
figures, the baseline and the code versions involved: the day a prompt change triples the
tokens a step uses, the first run of the new code says so.
"""

from __future__ import annotations

import statistics
from typing import Any

from runjournal.journal import Run, Store

BASELINE_RUNS = 10
"""How many of the latest finished runs make the baseline."""
MIN_BASELINE = 3
"""Fewer finished runs than this make no baseline: no anomaly is reported."""
FINISHED = ("done", "failed", "killed")


def per_step(run: Run) -> dict[str, float]:
    """The run's input and output tokens per step."""
    steps = max(run.steps, 1)
    taken_in = run.input_tokens + run.cache_write_tokens + run.cache_read_tokens
    return {
        "input_tokens_per_step": taken_in / steps,
        "output_tokens_per_step": run.output_tokens / steps,
    }


def check(journal: Store, run_id: str, threshold: float | None) -> tuple[dict[str, Any], ...]:
    """The anomalies of the run, as `cost.anomaly` data: one per figure above the threshold."""
    if threshold is None:
        return ()
    run = journal.run(run_id)
    if run.model_calls == 0 or run.steps == 0:
        return ()
    baseline = [
        r
        for r in journal.runs(
            limit=BASELINE_RUNS, machine=run.machine, statuses=FINISHED, before=run.ordinal
        )
        if r.model_calls and r.steps
    ]
    if len(baseline) < MIN_BASELINE:
        return ()
    found = []
    figures = per_step(run)
    for metric, value in figures.items():
        usual = statistics.median(per_step(r)[metric] for r in baseline)
        if usual > 0 and value > threshold * usual:
            found.append(
                {
                    "metric": metric,
                    "value": round(value, 1),
                    "baseline": round(usual, 1),
                    "ratio": round(value / usual, 2),
                    "threshold": threshold,
                    "baseline_runs": len(baseline),
                    "code_hash": run.code_hash,
                    "baseline_code_hashes": sorted({r.code_hash for r in baseline}),
                }
            )
    return tuple(found)
