"""Rerunning a run (`journal replay --rerun`): the machine's code as it is now, executed again
against the run's journal, offline, and compared with what the run did.

`rerun` executes a recorded run from its start: each model call is answered with the answer the
run got, each effect and action with its recorded outcome. Nothing reaches a model or the
outside world (no effect or action function runs, no request is sent) and nothing is written:
the journal is only read. Visit by visit (the events between one transition and the next) what
the code does is compared with what the run did, and the first difference is the result, a
`Divergence` in words: another request (with a diff of the prompt), answer check, decision,
action key or transition, a call the run never made or no longer makes, another ending. A run
the code follows to its end, or to where its record ends, is `Reproduced`.

`drive` executes the visits; `visit` is the journaling a rerun gives a step's calls (`Replay`,
where a run executing has `journaled.Live`), which stops the step where a call would run, send
or differ; `words` says what differs.
"""

from runjournal.machine.rerun.drive import Debug, Reproduced, post_mortem, rerun
from runjournal.machine.rerun.visit import Diverged, Divergence

__all__ = ["Debug", "Diverged", "Divergence", "Reproduced", "post_mortem", "rerun"]
