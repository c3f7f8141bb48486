"""The batch-system engine: one per cluster, it submits, queries and cancels many jobs.

A dialect (a :class:`~dask_jobqueue.dialect.Dialect` in ``dialects/<name>.py``) declares *what*
to run and how to read it: argv builders, an anchored job-id pattern, the status steps of a
poll, pure parsers, the complaints of a cancel command that only mean "already gone". The
engine runs those declarations, one module per operation around one shared context:

* ``context.py`` — what the parts share: the command runner (every command runs with a time
  limit, killed as a whole process group), the command budget, the dialect, the counters of
  commands, what was learned about the site (:attr:`BatchSystem.facts`) and the live ids;
* ``submit.py`` — several submissions at a time in threads (so ``close()`` never waits for a
  hung ``qsub`` and whatever it creates later is still cancelled), retries with adoption by
  tag, submissions whose output could not be read;
* ``arrays.py`` — which jobs go as one array, its script, the site's limits;
* ``query.py`` — the status steps of a poll, and the listing of tagged jobs;
* ``cancel.py`` — cancels chunked below the argument-length limit, retried, then settled id
  by id;
* ``system.py`` — :class:`BatchSystem`, the facade a cluster uses.

The engine keeps the set of job ids it created and has not seen end or cancelled: the exit
finalizer cancels exactly those, so a job is only forgotten once the batch system confirmed
it gone.
"""

from __future__ import annotations

from ..dialect import (
    TRANSIENT_SUBMIT_ERRORS,
    ArraySupport,
    LimitsProbe,
    StatusStep,
    adopt_one_array,
    all_ids,
    group_tasks,
    index_spans,
    missing_ids,
    simple_parser,
    single_array_id,
)
from .arrays import LIMIT_PROBE_ROUNDS, array_script
from .context import CommandBudget, DuplicateJobIdError
from .query import PollAnswer
from .system import BatchSystem

__all__ = [
    # the engine
    "BatchSystem",
    "CommandBudget",
    "DuplicateJobIdError",
    "LIMIT_PROBE_ROUNDS",
    "PollAnswer",
    "array_script",
    # the dialect vocabulary, defined in dialect.py (imported from here by older code)
    "ArraySupport",
    "LimitsProbe",
    "StatusStep",
    "TRANSIENT_SUBMIT_ERRORS",
    "adopt_one_array",
    "all_ids",
    "group_tasks",
    "index_spans",
    "missing_ids",
    "simple_parser",
    "single_array_id",
]
