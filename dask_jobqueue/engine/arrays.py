"""Job arrays: which jobs go as one array, the array's script, and the site's limits.

The limits come from the dialect's site probes (run before the first submission of several
jobs, again while one fails, at most :data:`LIMIT_PROBE_ROUNDS` rounds) and from refusals: an
array the site refuses as too large lowers the cap to half its size from then on.
"""

from __future__ import annotations

import copy
import logging
import shlex
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .._shell import CommandError
from ..dialect import ArraySupport
from .context import EngineContext, first_line

if TYPE_CHECKING:
    from ..job import Job

logger = logging.getLogger(__name__)

#: How many times in all the site probes are run while one of them keeps failing.
LIMIT_PROBE_ROUNDS = 3

#: Shell variable the array script sets to this task's worker name.
_NAME_VAR = "DASK_JOBQUEUE_WORKER_NAME"
_NAME_SENTINEL = "dask-jobqueue-array-task-name-7f3a9c"


class Refused(Exception):
    """An array submission the site refused as too large (``error``), to be split."""

    def __init__(self, error: CommandError):
        super().__init__(str(error))
        self.error = error


def too_large(exc: CommandError, support: ArraySupport) -> str | None:
    """The line of a failed array submission refusing it as too large, else ``None``."""
    if support.too_large is None:
        return None
    for line in (exc.stderr + "\n" + exc.stdout).splitlines():
        if support.too_large.search(line):
            return line.strip()
    return None


def _template_script(job: Job) -> str:
    """``job``'s script with its worker name replaced by a fixed placeholder: two jobs that
    differ only by name give the same text, and can be tasks of one array."""
    twin = copy.copy(job)
    twin.name = _NAME_SENTINEL
    return twin.job_script()


def array_script(job: Job, names: Sequence[str], support: ArraySupport) -> str:
    """The script of an array whose task ``support.first_index + k`` runs the workers of
    ``names[k]``: a POSIX ``case`` on the index variable sets the worker name, so every
    worker name stays unique and maps back to its task (its job record)."""
    script = _template_script(job)
    token = shlex.quote(_NAME_SENTINEL)
    if token not in script:
        raise ValueError("the job script does not contain the worker name: no array possible")
    if support.render is not None:
        script = support.render(script, token, names)
        return support.edit_script(script) if support.edit_script is not None else script
    lines = [f'case "${{{support.index_var}}}" in']
    for k, name in enumerate(names):
        lines.append(f"  {support.first_index + k}) {_NAME_VAR}={shlex.quote(str(name))} ;;")
    lines.append(
        f'  *) echo "dask-jobqueue: no worker name for array task ${{{support.index_var}}}" >&2;'
        " exit 1 ;;"
    )
    lines.append("esac")
    out = []
    placed = False
    for line in script.split("\n"):
        if not placed and token in line:
            out += lines
            placed = True
        out.append(line.replace(token, f'"${_NAME_VAR}"'))
    script = "\n".join(out)
    if support.edit_script is not None:
        script = support.edit_script(script)
    if support.script_range is not None:
        script = support.script_range(
            script, support.first_index, support.first_index + len(names) - 1
        )
    return script


class ArrayPlanner:
    """Plans submissions as arrays within the site's limits, and learns those limits.

    Parameters
    ----------
    context : EngineContext
        The engine's shared state (its facts receive the probes' answers).
    job_arrays : {"auto", "never"}
        Whether jobs submitted together go as arrays by default.
    max_array_size : int, optional
        Most tasks of one array; ``None``: ask the site.
    """

    def __init__(self, context: EngineContext, job_arrays: str, max_array_size: int | None):
        if job_arrays not in ("auto", "never"):
            raise ValueError(f"job_arrays must be 'auto' or 'never', got {job_arrays!r}")
        self.context = context
        self.job_arrays = job_arrays
        self.max_array_size = max_array_size
        self._probe_lock = threading.Lock()
        self._probes_answered: set[int] = set()
        self._probe_rounds = 0
        #: Array size the site refused at once, halved (``None``: none refused yet).
        self._refused_cap: int | None = None

    def size_limit(self) -> int | None:
        """Most tasks of one array here: the override, else what the site said; lower if
        the site refused a larger array."""
        facts = self.context.facts
        limits = [
            v
            for v in (
                self.max_array_size,
                None if self.max_array_size else facts.get("max_array_size"),
                facts.get("max_job_count"),
                self._refused_cap,
            )
            if v
        ]
        return min(limits) if limits else None

    @property
    def limits_known(self) -> bool:
        """Whether every site probe answered, or they were tried as often as allowed."""
        return (
            len(self._probes_answered) == len(self.context.dialect.site_probes)
            or self._probe_rounds >= LIMIT_PROBE_ROUNDS
        )

    def discover_limits(self) -> None:
        """Run the dialect's site probes (array limits, flavour) into the facts (blocking).
        A probe whose command failed is run again before the next array submission, up to
        ``LIMIT_PROBE_ROUNDS`` rounds in all; until it answers, arrays go unsplit (a refusal
        of one too large halves it, see :meth:`lower_cap`)."""
        ctx = self.context
        with self._probe_lock:
            if self.limits_known:
                return
            self._probe_rounds += 1
            for k, probe in enumerate(ctx.dialect.site_probes):
                if k in self._probes_answered:
                    continue
                try:
                    argv = probe.argv(ctx.template)
                    stdout = ctx.run_sync("limits", argv, ctx.status_timeout).stdout
                except CommandError as exc:
                    logger.info(
                        "Could not read the site's limits (attempt %d of %d): %s",
                        self._probe_rounds,
                        LIMIT_PROBE_ROUNDS,
                        first_line(exc),
                    )
                    continue
                self._probes_answered.add(k)  # unreadable output would not change by asking
                try:
                    ctx.facts.update(probe.parse(stdout))
                except ValueError as exc:
                    logger.info("Could not read the site's limits: %s", first_line(exc))
        logger.debug("Site facts: %s", ctx.facts)

    def plan(self, jobs: Sequence[Job], support: ArraySupport | None) -> list[list[Job]]:
        """Submissions for ``jobs``: lists of jobs that go as one array (or alone)."""
        if support is None:
            return [[job] for job in jobs]
        by_script: dict[str, list[Job]] = {}
        singles: list[list[Job]] = []
        for job in jobs:
            script = _template_script(job)
            if shlex.quote(_NAME_SENTINEL) in script:
                by_script.setdefault(script, []).append(job)
            else:  # a custom script without the worker name: tasks could not tell apart
                singles.append([job])
        size = self.size_limit() or len(jobs)
        plan: list[list[Job]] = singles
        for same in by_script.values():
            for start in range(0, len(same), size):
                chunk = same[start : start + size]
                if len(chunk) >= max(2, support.min_size) and (
                    support.names_ok is None or support.names_ok([job.name for job in chunk])
                ):
                    plan.append(chunk)
                else:
                    plan += [[job] for job in chunk]
        return plan

    def lower_cap(self, refused_size: int, support: ArraySupport, error: CommandError) -> None:
        """Cap arrays at half ``refused_size`` from now on, and say so."""
        with self.context.lock:
            cap = refused_size // 2
            self._refused_cap = min(cap, self._refused_cap or cap)
            cap = self.size_limit() or cap
        then = f"arrays of at most {cap} jobs" if cap > 1 else "one job per submission"
        logger.warning(
            "The batch system refused an array of %d jobs as too large (%s); submitting "
            "%s from now on (set max-array-size to the site's limit to avoid this)",
            refused_size,
            too_large(error, support),
            then,
        )
