"""The batch-system engine: one per cluster, it submits, queries and cancels many jobs.

A dialect (a :class:`~dask_jobqueue.dialect.Dialect` in ``dialects/<name>.py``) declares *what*
to run and how to read it: argv builders, an anchored job-id pattern, :class:`StatusStep` s run in order at every poll, pure
parsers, the stderr lines of a cancel command that only mean "already gone". This module
runs those declarations: commands with time limits (killed as a whole process group), several
submissions at a time in threads (so ``close()`` never waits for a hung ``qsub`` and whatever
it creates later is still cancelled), batched cancels chunked below the argument-length limit
and retried, a count of every command, and what it learned about the site (:attr:`facts`).

It keeps the set of job ids it created and has not seen end or cancelled: the exit finalizer
cancels exactly those, so a job can only be forgotten once the batch system confirmed it gone.
"""

from __future__ import annotations

import asyncio
import copy
import getpass
import itertools
import logging
import os
import random
import shlex
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._shell import CommandError, only_complaints_matching, run_command, run_command_sync
from .dialect import (
    TRANSIENT_SUBMIT_ERRORS,
    ArraySupport,
    LimitsProbe,
    StatusStep,
    adopt_one_array,
    all_ids,
    group_tasks,
    index_spans,
    missing_ids,
    natural_key,
    simple_parser,
    single_array_id,
)
from .tags import JobTag, new_cluster_id, safe_host
from .tracking import JobStatus

if TYPE_CHECKING:
    from .job import Job
    from .options import EngineSettings

logger = logging.getLogger(__name__)

__all__ = [
    # the engine
    "BatchSystem",
    "CommandBudget",
    "DuplicateJobIdError",
    "array_script",
    # the dialect vocabulary, defined in dialect.py (imported from here by older code)
    "ArraySupport",
    "LimitsProbe",
    "PollAnswer",
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

#: Bytes of job ids per cancel command (the kernel's limit is far higher; some wrappers aren't).
_CANCEL_ARGV_BUDGET = 64 * 1024
_CANCEL_MAX_IDS = 1000
#: Status output longer than this (characters) is parsed in a thread (about 2,000 lines).
_PARSE_IN_THREAD = 64 * 1024
#: Cancels of more ids than this are split into commands in a thread.
_CHUNK_IN_THREAD = 2000
#: Looks for the jobs of a submission whose output could not be read (listings may lag).
_UNREADABLE_LOOKS = 3
#: How many times in all the site probes are run while one of them keeps failing.
LIMIT_PROBE_ROUNDS = 3


@dataclass(frozen=True)
class PollAnswer:
    """What one poll of the status steps learned.

    ``statuses``: the ids some step reported; ``denied``: ids no step reported and which a
    step's command explicitly did not know (it failed for them, see
    ``StatusStep.usable_failure``). Other missing ids were merely not listed.
    """

    statuses: dict[str, JobStatus]
    denied: frozenset[str] = frozenset()


class _Refused(Exception):
    """An array submission the site refused as too large (``error``), to be split."""

    def __init__(self, error: CommandError):
        super().__init__(str(error))
        self.error = error


def _too_large(exc: CommandError, support: ArraySupport) -> str | None:
    """The line of a failed array submission refusing it as too large, else ``None``."""
    if support.too_large is None:
        return None
    for line in (exc.stderr + "\n" + exc.stdout).splitlines():
        if support.too_large.search(line):
            return line.strip()
    return None


#: Shell variable the array script sets to this task's worker name.
_NAME_VAR = "DASK_JOBQUEUE_WORKER_NAME"
_NAME_SENTINEL = "dask-jobqueue-array-task-name-7f3a9c"


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


class CommandBudget:
    """A token bucket for batch-system commands: ``burst`` at once, then ``per_minute``.

    Sites that rate-limit their controller (Slurm's ``rl_*`` settings, say) reject calls
    beyond such a bucket; here a command that would exceed it waits its turn instead. Waits
    are reserved in call order, from threads (:meth:`take_sync`) and the event loop
    (:meth:`take`) alike.
    """

    def __init__(
        self, per_minute: float, burst: int = 10, clock: Callable[[], float] = time.monotonic
    ):
        if not per_minute > 0:
            raise ValueError(f"command_rate_limit={per_minute!r} must be a positive number")
        if burst < 1:
            raise ValueError(f"command_burst={burst!r} must be a positive integer")
        self.rate = per_minute / 60.0
        self.burst = burst
        self.clock = clock
        self._tokens = float(burst)
        self._stamp = clock()
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take one command's token; the seconds to wait before running it."""
        with self._lock:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= 1
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def take_sync(self) -> None:
        """Wait (blocking) until a command may run."""
        wait = self.reserve()
        if wait > 0:
            time.sleep(wait)

    async def take(self) -> None:
        """Wait (on the event loop) until a command may run."""
        wait = self.reserve()
        if wait > 0:
            await asyncio.sleep(wait)


class DuplicateJobIdError(RuntimeError):
    """The submit command reported a job id this cluster already tracks: the output was
    misread (a banner line?) or the batch system reuses ids; nothing is tracked twice."""


class BatchSystem:
    """Submit, query and cancel the jobs of one cluster through one dialect.

    Parameters
    ----------
    template : Job
        A job of the cluster (its options give the commands' extra arguments); its class is
        the dialect.
    submit_timeout, status_timeout, cancel_timeout : float
        Seconds before a command of that kind is killed (with its process group).
    submit_concurrency : int
        Submit commands running at the same time.
    cancel_attempts : int
        Tries of a failing cancel command before its ids are reported left behind.
    job_arrays : {"auto", "never"}
        ``auto``: jobs submitted together (and identical but for their names) go as job
        arrays where the dialect has them; ``never``: one submit command per job.
    max_array_size : int, optional
        Most tasks of one array; ``None``: ask the site (``facts["max_array_size"]``).
    submit_rate_limit : float, optional
        Most submit commands per second (an array submission is one command).
    submit_attempts : int
        Tries of a submission failing with a transient error (dialects with tagging only:
        before each retry, jobs carrying the submission's tag are adopted instead).
    submit_retry_delay : float
        Pause before the first retry, doubled for each further one, jittered by +-50%.
    each_concurrency : int
        Most commands of a per-job status step (``qacct -j ID``) running at the same time;
        beyond that many, a step with a batch command runs that one instead.
    command_rate_limit : float, optional
        Most commands per minute, every kind together (a :class:`CommandBudget`); commands
        beyond it wait. ``None``: no limit.
    command_burst : int
        Commands that may run back to back before ``command_rate_limit`` applies.
    """

    def __init__(
        self,
        template: Job,
        submit_timeout: float = 120.0,
        status_timeout: float = 30.0,
        cancel_timeout: float | None = None,
        submit_concurrency: int = 8,
        cancel_attempts: int = 3,
        job_arrays: str = "auto",
        max_array_size: int | None = None,
        submit_rate_limit: float | None = None,
        submit_attempts: int = 4,
        submit_retry_delay: float = 1.0,
        each_concurrency: int = 4,
        command_rate_limit: float | None = None,
        command_burst: int = 10,
    ):
        self.template = template
        self.dialect = type(template)
        self.submit_timeout = submit_timeout
        self.status_timeout = status_timeout
        self.cancel_timeout = cancel_timeout if cancel_timeout is not None else status_timeout
        self.submit_concurrency = submit_concurrency
        self.cancel_attempts = cancel_attempts
        if job_arrays not in ("auto", "never"):
            raise ValueError(f"job_arrays must be 'auto' or 'never', got {job_arrays!r}")
        self.job_arrays = job_arrays
        self.max_array_size = max_array_size
        self.submit_rate_limit = submit_rate_limit
        self.submit_attempts = max(1, submit_attempts)
        self.submit_retry_delay = submit_retry_delay
        self.each_concurrency = max(1, each_concurrency)
        #: Shared by every command of this engine (``None``: no limit).
        self.budget = (
            CommandBudget(command_rate_limit, command_burst) if command_rate_limit else None
        )
        self._next_submit = 0.0
        self._probe_lock = threading.Lock()
        self._probes_answered: set[int] = set()
        self._probe_rounds = 0
        #: Array size the site refused at once, halved (``None``: none refused yet).
        self._refused_cap: int | None = None
        #: What the engine learned about this site (e.g. ``{"pbs_flavour": "torque"}``).
        self.facts: dict[str, Any] = {}
        #: Commands run so far, by kind: ``submit``, ``status``, ``cancel``.
        self.commands: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._live: set[str] = set()
        self._submitted_at: dict[str, float] = {}  # live id -> wall-clock submission time
        #: Tags of submissions whose output named no id and whose jobs were not found.
        self._unsettled: set[JobTag] = set()
        self._closing = False
        self._executor: ThreadPoolExecutor | None = None
        self._asked: dict[tuple[str, str], float] = {}  # (each-step, id) -> when last asked
        #: The clock of ``pace`` (replaceable in tests).
        self.clock: Callable[[], float] = time.monotonic
        #: Id of this engine's cluster in the tags of its jobs (8 hex digits).
        self.cluster_id = new_cluster_id()
        self._serials = itertools.count()
        self._host = safe_host(socket.gethostname())
        #: Called from any thread after the set of live ids changed, with the ids added and
        #: the ids removed (each call carries only the change: keep it O(change)).
        self.on_live_change: Callable[[Sequence[str], Sequence[str]], None] | None = None

    @classmethod
    def from_settings(cls, template: Job, settings: EngineSettings) -> BatchSystem:
        """The engine of a cluster whose ``jobqueue.<name>`` settings are ``settings``."""
        return cls(
            template,
            submit_timeout=settings.submit_timeout,
            status_timeout=settings.status_timeout,
            submit_concurrency=settings.submit_concurrency,
            job_arrays=settings.job_arrays,
            max_array_size=settings.max_array_size,
            submit_rate_limit=settings.submit_rate_limit,
            submit_attempts=settings.submit_attempts,
            command_rate_limit=settings.command_rate_limit,
            command_burst=settings.command_burst,
        )

    # ------------------------------------------------------------------ bookkeeping

    @property
    def live_ids(self) -> set[str]:
        """Ids this engine created and has not seen end or cancelled (a copy)."""
        with self._lock:
            return set(self._live)

    def release(self, job_ids: Iterable[str]) -> None:
        """These jobs ended by themselves: nothing left to cancel for them."""
        with self._lock:
            removed = [i for i in dict.fromkeys(job_ids) if i in self._live]
            self._live.difference_update(removed)
            for job_id in removed:
                self._submitted_at.pop(job_id, None)
        if removed:
            self._live_changed(removed=removed)

    def adopt(self, job_ids: Iterable[str]) -> None:
        """Take over jobs another process submitted (a cluster attached by name): they are
        live jobs of this engine from now on, cancelled at close like its own."""
        with self._lock:
            added = [i for i in dict.fromkeys(job_ids) if i not in self._live]
            self._live.update(added)
            now = time.time()
            for job_id in added:
                self._submitted_at.setdefault(job_id, now)
        if added:
            self._live_changed(added=added)

    def _spend_sync(self) -> None:
        """Wait (blocking) for the command budget, if there is one."""
        if self.budget is not None:
            self.budget.take_sync()

    async def spend(self) -> None:
        """Wait (on the event loop) for the command budget, if there is one: every command
        this engine runs, or runs for it (the walltime lookup), spends one token."""
        if self.budget is not None:
            await self.budget.take()

    def _live_changed(self, added: Sequence[str] = (), removed: Sequence[str] = ()) -> None:
        if self.on_live_change is not None:
            self.on_live_change(added, removed)

    def new_tag(self) -> JobTag:
        """The tag of the next submission: this cluster, a fresh serial, this process."""
        with self._lock:
            serial = next(self._serials)
        return JobTag(self.cluster_id, serial, os.getpid(), self._host)

    # ------------------------------------------------------------------ submit

    async def submit(self, job: Job) -> str:
        """Submit ``job`` and return its id (also set as ``job.job_id``).

        The command runs in a worker thread: if the caller stops waiting (``close()``), the
        submission still completes within ``submit_timeout`` and a job it created is cancelled.
        """
        result = (await self.submit_many([job], arrays=False))[0]
        if isinstance(result, BaseException):
            raise result
        return result

    async def submit_many(
        self, jobs: Sequence[Job], arrays: bool | None = None
    ) -> list[str | BaseException]:
        """Submit ``jobs`` in as few commands as the dialect and the site's limits allow; the
        id of each job (also set as ``job.job_id``) or the error of its submission, in order.

        Jobs whose scripts differ only by their worker names are grouped into job arrays
        (``arrays`` None: as ``job_arrays`` says), split to ``max_array_size``; every task
        is still one job with its own id. Each command runs in a worker thread, as in
        :meth:`submit`.
        """
        if self._closing:
            raise RuntimeError("the cluster is closing: no more submissions")
        if type(self).submit is not BatchSystem.submit:
            # an engine with its own submit (the local processes): one job at a time
            outcomes = await asyncio.gather(
                *(self.submit(job) for job in jobs), return_exceptions=True
            )
            return list(outcomes)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.submit_concurrency, thread_name_prefix="dask-jobqueue-submit"
            )
        loop = asyncio.get_running_loop()
        use_arrays = (self.job_arrays == "auto") if arrays is None else arrays
        use_arrays = use_arrays and len(jobs) > 1
        if use_arrays and not self._limits_known:
            await loop.run_in_executor(self._executor, self._discover_limits)
        support = self.template.array_support_for(self.facts) if use_arrays else None
        # renders every job's script: in a thread, not to stall the loop at 10,000s of jobs
        groups = await loop.run_in_executor(self._executor, self._plan, jobs, support)
        futures = [
            loop.run_in_executor(self._executor, self._submit_planned, group, support)
            for group in groups
        ]
        group_outcomes = await asyncio.gather(*futures, return_exceptions=True)
        results: dict[int, str | BaseException] = {}
        for group, outcome in zip(groups, group_outcomes, strict=True):
            for k, job in enumerate(group):
                if isinstance(outcome, BaseException):
                    results[id(job)] = outcome
                else:
                    job.job_id = outcome[k]
                    results[id(job)] = outcome[k]
        return [results[id(job)] for job in jobs]

    def array_size_limit(self) -> int | None:
        """Most tasks of one array here: the override, else what the site said; lower if
        the site refused a larger array."""
        limits = [
            v
            for v in (
                self.max_array_size,
                None if self.max_array_size else self.facts.get("max_array_size"),
                self.facts.get("max_job_count"),
                self._refused_cap,
            )
            if v
        ]
        return min(limits) if limits else None

    @property
    def _limits_known(self) -> bool:
        """Whether every site probe answered, or they were tried as often as allowed."""
        return (
            len(self._probes_answered) == len(self.dialect.site_probes)
            or self._probe_rounds >= LIMIT_PROBE_ROUNDS
        )

    def _discover_limits(self) -> None:
        """Run the dialect's site probes (array limits, flavour) into :attr:`facts`. A probe
        whose command failed is run again before the next array submission, up to
        ``LIMIT_PROBE_ROUNDS`` rounds in all; until it answers, arrays go unsplit (a refusal
        of one too large halves it, see :meth:`_submit_smaller`)."""
        with self._probe_lock:
            if self._limits_known:
                return
            self._probe_rounds += 1
            for k, probe in enumerate(self.dialect.site_probes):
                if k in self._probes_answered:
                    continue
                with self._lock:
                    self.commands["limits"] += 1
                self._spend_sync()
                try:
                    stdout = run_command_sync(
                        probe.argv(self.template), timeout=self.status_timeout
                    ).stdout
                except CommandError as exc:
                    logger.info(
                        "Could not read the site's limits (attempt %d of %d): %s",
                        self._probe_rounds,
                        LIMIT_PROBE_ROUNDS,
                        _first_line(exc),
                    )
                    continue
                self._probes_answered.add(k)  # unreadable output would not change by asking
                try:
                    self.facts.update(probe.parse(stdout))
                except ValueError as exc:
                    logger.info("Could not read the site's limits: %s", _first_line(exc))
        logger.debug("Site facts: %s", self.facts)

    def _plan(self, jobs: Sequence[Job], support: ArraySupport | None) -> list[list[Job]]:
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
        size = self.array_size_limit() or len(jobs)
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

    def _submit_planned(self, group: list[Job], support: ArraySupport | None) -> list[str]:
        """Submit one group of the plan (blocking); the ids. An array the site refuses as
        too large is submitted again in smaller ones (:meth:`_submit_smaller`)."""
        try:
            return self._submit_group_blocking(group, support)
        except _Refused as refused:
            assert support is not None
            return self._submit_smaller(group, support, refused.error)

    def _submit_group_blocking(self, group: list[Job], support: ArraySupport | None) -> list[str]:
        """Submit ``group`` as one array (or one job); the ids. Raises :class:`_Refused`
        for an array the site refuses as too large."""
        first = group[0]
        first.prepare_log_directory()
        # the array support when the group goes as one array (the plan makes groups of
        # several jobs only with one), else None
        array = support if len(group) > 1 else None
        assert array is not None or len(group) == 1
        if array:
            script = array_script(first, [job.name for job in group], array)
            indices = [array.first_index + k for k in range(len(group))]
        else:
            script = first.job_script()
            indices = []
        tagging = self.dialect.tagging
        tag = self.new_tag()
        for job in group:
            job.tag = tag
        with tempfile.TemporaryDirectory(prefix="dask-jobqueue-") as tmp:
            path = os.path.join(tmp, "job.sh")
            with open(path, "w", encoding="utf-8") as f:
                f.write(script)
            argv = first.array_submit_argv(path, script) if array else first.submit_argv(path)
            head = len(shlex.split(first.submit_command or "")) or 1
            extra = list(tagging.submit_args(tag.text())) if tagging is not None else []
            if array:
                extra += array.submit_args(indices[0], indices[-1])
            argv = [*argv[:head], *extra, *argv[head:]]

            def parse(stdout: str) -> list[str]:
                if array:
                    return array.task_ids(stdout, indices)
                return [first.job_id_from_submit_output(stdout)]

            try:
                ids = self._run_submit(
                    argv, first.submit_stdin(script), parse, tag if tagging else None, indices
                )
            except CommandError as exc:
                if array and _too_large(exc, array) is not None:
                    raise _Refused(exc) from exc
                raise
        with self._lock:
            taken = [i for i in ids if i in self._live]
            if taken or len(set(ids)) != len(ids):
                raise DuplicateJobIdError(
                    f"`{' '.join(argv[:-1] + ['<script>'])}` reported job id(s) "
                    f"{', '.join(taken or ids)}, which this cluster already tracks"
                )
            self._live.update(ids)
            self._submitted_at.update(dict.fromkeys(ids, time.time()))
            closing = self._closing
        self._live_changed(added=ids)
        logger.debug("Submitted job(s) %s for %s", " ".join(ids), [j.name for j in group])
        if closing:
            logger.info("Cancelling job(s) %s: submitted while the cluster closed", ids)
            self.cancel_sync(ids)
        return ids

    def _submit_smaller(
        self, group: list[Job], support: ArraySupport, refused: CommandError
    ) -> list[str]:
        """Submit the jobs of an array the site ``refused`` as too large again, in arrays of
        at most half the refused size (a cap kept from then on); the ids in the order of
        ``group``. Every refusal halves the cap and single jobs are never refused as arrays,
        so at most log2(len(group)) more refusals come. A closing cluster gets the refusal
        for the jobs not submitted yet."""
        self._lower_array_cap(len(group), support, refused)
        ids: list[str] = []
        rest = list(group)
        while rest:
            if self._closing:
                raise refused  # what was submitted is live: the close cancels it
            size = self.array_size_limit() or len(rest)  # a parallel refusal may lower it
            part = rest[:size]
            try:
                for piece in self._plan(part, support):  # one array, or single jobs
                    ids += self._submit_group_blocking(piece, support)
            except _Refused as again:
                self._lower_array_cap(len(part), support, again.error)
                continue
            rest = rest[size:]
        return ids

    def _lower_array_cap(
        self, refused_size: int, support: ArraySupport, error: CommandError
    ) -> None:
        """Cap arrays at half ``refused_size`` from now on, and say so."""
        with self._lock:
            cap = refused_size // 2
            self._refused_cap = min(cap, self._refused_cap or cap)
            cap = self.array_size_limit() or cap
        then = f"arrays of at most {cap} jobs" if cap > 1 else "one job per submission"
        logger.warning(
            "The batch system refused an array of %d jobs as too large (%s); submitting "
            "%s from now on (set max-array-size to the site's limit to avoid this)",
            refused_size,
            _too_large(error, support),
            then,
        )

    def _pace(self) -> None:
        """Wait for the next submit slot under ``submit_rate_limit``."""
        if not self.submit_rate_limit:
            return
        with self._lock:
            now = time.monotonic()
            at = max(now, self._next_submit)
            self._next_submit = at + 1.0 / self.submit_rate_limit
        if at > now:
            time.sleep(at - now)

    def _transient(self, exc: CommandError) -> bool:
        if exc.returncode is None:
            return bool(exc.reason and exc.reason.startswith("timed out"))
        pattern = self.dialect.transient_submit_errors or TRANSIENT_SUBMIT_ERRORS
        return bool(pattern.search(exc.stderr) or pattern.search(exc.stdout))

    def _run_submit(
        self,
        argv: list[str],
        stdin: str | None,
        parse: Callable[[str], list[str]],
        tag: JobTag | None,
        indices: Sequence[int],
    ) -> list[str]:
        """Run a submit command; transient failures are retried, adopting tagged jobs."""
        for attempt in range(self.submit_attempts):
            self._pace()
            with self._lock:
                self.commands["submit"] += 1
            self._spend_sync()
            try:
                stdout = run_command_sync(argv, stdin=stdin, timeout=self.submit_timeout).stdout
            except CommandError as exc:
                accepted = self._accepted_despite(exc, parse)
                if accepted is not None:
                    return accepted
                if (
                    tag is None
                    or not self._transient(exc)
                    or attempt + 1 >= self.submit_attempts
                    or self._closing
                ):
                    raise
                delay = self.submit_retry_delay * 2**attempt * random.uniform(0.5, 1.5)
                logger.warning(
                    "Submit failed with a transient error, checking for its jobs and retrying "
                    "in %.1fs: %s",
                    delay,
                    _first_line(exc),
                )
                time.sleep(delay)
                listed = self._find_tagged(tag)
                if listed:
                    try:
                        adopted = self._adopt(listed, indices)
                    except ValueError as error:
                        raise CommandError(
                            argv,
                            exc.returncode,
                            exc.stdout,
                            exc.stderr,
                            reason=f"failed, yet job(s) {' '.join(listed)} carry its tag "
                            f"{tag.text()}: {error}",
                        ) from exc
                    logger.warning(
                        "The failed submission was accepted: adopting job(s) %s (tag %s)",
                        " ".join(adopted),
                        tag.text(),
                    )
                    return adopted
            else:
                try:
                    return parse(stdout)
                except ValueError as error:
                    return self._settle_unreadable(argv, stdout, error, tag, indices)
        raise AssertionError("unreachable")  # pragma: no cover

    def _settle_unreadable(
        self,
        argv: list[str],
        stdout: str,
        error: ValueError,
        tag: JobTag | None,
        indices: Sequence[int],
    ) -> list[str]:
        """The ids of a submission that succeeded with output that names no id, or several
        (blocking): the jobs carrying its tag are adopted if they are what was submitted,
        else cancelled, and the submission fails. A tag no job carries yet is kept: what
        appears with it is cancelled by :meth:`cancel_unsettled_sync` at close."""
        reason = f"succeeded but printed output that could not be read ({_first_line(error)})"
        if tag is None:
            raise CommandError(argv, 0, stdout, reason=reason) from error
        listed: list[str] = []
        for look in range(_UNREADABLE_LOOKS):
            if look:
                time.sleep(self.submit_retry_delay)
            try:
                listed = self._find_tagged(tag)
            except CommandError as failed:
                self._remember_unsettled(tag)
                raise CommandError(
                    argv,
                    0,
                    stdout,
                    reason=f"{reason}; its jobs could not be looked up by tag {tag.text()} "
                    f"({_first_line(failed)}): any is cancelled when the cluster closes",
                ) from error
            if listed:
                break
        if not listed:
            self._remember_unsettled(tag)
            raise CommandError(
                argv,
                0,
                stdout,
                reason=f"{reason}; no job carries its tag {tag.text()} (yet): any that "
                "appears is cancelled when the cluster closes",
            ) from error
        try:
            adopted = self._adopt(listed, indices)
        except ValueError as mismatch:
            left = self._cancel_now(listed)
            if left:
                self._remember_unsettled(tag)
            raise CommandError(
                argv,
                0,
                stdout,
                reason=f"{reason}; job(s) {' '.join(listed)} carry its tag {tag.text()} but "
                f"are not what it submitted ({mismatch}): cancelled",
            ) from error
        logger.warning(
            "The submit command %s; adopting job(s) %s, which carry its tag %s",
            reason,
            " ".join(adopted),
            tag.text(),
        )
        return adopted

    def _remember_unsettled(self, tag: JobTag) -> None:
        with self._lock:
            self._unsettled.add(tag)

    def _cancel_now(self, job_ids: Sequence[str]) -> list[str]:
        """Cancel jobs this engine does not track (blocking); the ids it could not cancel."""
        with self._lock:
            added = [i for i in dict.fromkeys(job_ids) if i not in self._live]
            self._live.update(added)  # held until the cancel is confirmed (exit finalizer)
        if added:
            self._live_changed(added=added)
        self.cancel_sync(job_ids)
        return sorted(set(job_ids) & self.live_ids)

    def cancel_unsettled_sync(self) -> None:
        """Cancel the jobs carrying the tag of a submission whose output could not be read
        and whose jobs were not found then (blocking; for close and interpreter exit). A tag
        is forgotten once its jobs are cancelled or the listing shows none."""
        with self._lock:
            unsettled = set(self._unsettled)
        if not unsettled:
            return
        try:
            texts = self._tag_listing()
        except CommandError as exc:
            logger.warning(
                "Could not look for the jobs of %d submission(s) whose output could not be "
                "read: %s",
                len(unsettled),
                _first_line(exc),
            )
            return
        found = [i for i, text in texts.items() if JobTag.parse(text) in unsettled]
        if found:
            logger.warning(
                "Cancelling job(s) %s: created by submissions whose output could not be read",
                " ".join(found),
            )
        if not self._cancel_now(found):
            with self._lock:
                self._unsettled -= unsettled

    async def cancel_unsettled(self) -> None:
        """:meth:`cancel_unsettled_sync` in a thread."""
        if self._unsettled:
            await asyncio.get_running_loop().run_in_executor(None, self.cancel_unsettled_sync)

    def _find_tagged(self, tag: JobTag) -> list[str]:
        """Ids this user's jobs carrying ``tag`` are listed under (blocking)."""
        try:
            texts = self._tag_listing()
        except CommandError as error:
            # Not knowing means a retry could duplicate: give up on this submission.
            raise CommandError(
                error.argv,
                error.returncode,
                error.stdout,
                error.stderr,
                reason="failed while looking for the jobs of a failed submission "
                f"(tag {tag.text()}); not retrying to avoid duplicates",
            ) from error
        return [i for i, text in texts.items() if JobTag.parse(text) == tag]

    def _tag_listing(self) -> dict[str, str]:
        """Tag texts of this user's tagged jobs, by id (blocking). The dialect's listing
        commands are tried in order until one answers with output it can read; else the
        last failure is raised as a :class:`CommandError`."""
        spec = self.dialect.tagging
        assert spec is not None
        user = getpass.getuser()
        error: CommandError | None = None
        for argv in spec.list_argvs(user):
            with self._lock:
                self.commands["status"] += 1
            self._spend_sync()
            try:
                stdout = run_command_sync(list(argv), timeout=self.status_timeout).stdout
                return spec.parse(stdout, user)
            except CommandError as exc:
                error = exc
            except ValueError as exc:
                error = CommandError(
                    list(argv), 0, reason=f"printed output that could not be read ({exc})"
                )
        assert error is not None, "a TagSpec lists at least one command"
        raise error

    def _adopt(self, listed: list[str], indices: Sequence[int]) -> list[str]:
        """The ids of a submission from the ids its tag is listed under."""
        if not indices:
            if len(listed) != 1:
                raise ValueError(f"{len(listed)} jobs for one submission")
            return listed
        support = self.template.array_support_for(self.facts)
        if support is None or support.adopt is None:
            raise ValueError("this batch system's array tasks cannot be told apart")
        return support.adopt(listed, indices)

    def _accepted_despite(
        self, exc: CommandError, parse: Callable[[str], list[str]]
    ) -> list[str] | None:
        """The ids printed by a submit command that failed or hung *after* printing them
        (the batch system accepted the jobs), so they are tracked rather than left behind;
        ``None`` if it printed none. Only for anchored id patterns, which cannot mistake a
        message for an id."""
        if self.template.job_id_regexp.startswith("^") and exc.stdout.strip():
            try:
                ids = parse(exc.stdout)
            except ValueError:
                return None
            logger.warning(
                "The submit command reported an error after the batch system accepted job(s) "
                "%s; tracking them: %s",
                " ".join(ids),
                _first_line(exc),
            )
            return ids
        return None

    # ------------------------------------------------------------------ status

    @property
    def can_query(self) -> bool:
        """Whether this batch system can be asked about its jobs at all."""
        return bool(self.dialect.status_steps)

    async def query(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """Run the dialect's status steps for ``job_ids``; raise ``CommandError`` if a required
        step failed. Ids missing from the result were not listed by any step."""
        return dict((await self.poll(job_ids)).statuses)

    async def poll(self, job_ids: Sequence[str]) -> PollAnswer:
        """As :meth:`query`, also telling which missing ids the batch system said it does not
        know (a step's usable failure, such as Slurm's ``Invalid job id``), as opposed to ids
        a listing merely left out."""
        job_ids = list(job_ids)
        wanted = set(job_ids)
        known: dict[str, JobStatus] = {}
        denied: set[str] = set()
        fell_back = False
        for step in self.dialect.status_steps:
            if step.when is not None and not step.when(self.facts, fell_back):
                fell_back = False
                continue
            fell_back = False
            selected = [i for i in step.select(job_ids, known) if i in wanted]
            if not selected:
                continue
            found: Mapping[str, JobStatus]
            try:
                if step.each:
                    found = await self._run_each(step, selected, known)
                else:
                    found = await self._run_step(step, selected, known, denied=denied)
            except (CommandError, ValueError) as exc:
                if step.fallback is not None and step.fallback(exc, self.facts):
                    logger.info("%s: %s; learned %s", step.name, _first_line(exc), self.facts)
                    fell_back = True
                    continue
                if not step.required:
                    logger.debug("Optional status step %s failed: %s", step.name, exc)
                    continue
                if isinstance(exc, ValueError):
                    raise CommandError(
                        [step.name], 0, reason=f"printed output that could not be read ({exc})"
                    ) from exc
                raise
            asked = set(selected)
            known.update({i: s for i, s in found.items() if i in asked})
        return PollAnswer(known, frozenset(denied - known.keys()))

    async def _run_step(
        self,
        step: StatusStep,
        ids: Sequence[str],
        known: Mapping[str, JobStatus],
        argv: list[str] | None = None,
        denied: set[str] | None = None,
    ) -> Mapping[str, JobStatus]:
        """Run ``step`` for ``ids`` (its own command line unless ``argv``) and parse it."""
        if argv is None:
            argv = step.argv(self.template, ids, self.facts)
        if argv is None:
            return {}
        self.commands["status"] += 1
        await self.spend()
        try:
            stdout = (await run_command(argv, timeout=self.status_timeout)).stdout
        except CommandError as exc:
            if step.usable_failure is None or not step.usable_failure(exc):
                raise
            found = await self._parse(step, exc.stdout, ids, known)
            if denied is not None:
                # the command failed because it does not know some ids: those it left out
                denied.update(i for i in ids if i not in found)
            return found
        return await self._parse(step, stdout, ids, known)

    @staticmethod
    async def _parse(
        step: StatusStep, stdout: str, ids: Sequence[str], known: Mapping[str, JobStatus]
    ) -> Mapping[str, JobStatus]:
        if len(stdout) > _PARSE_IN_THREAD:
            # tens of thousands of lines: parsed in a thread, the loop keeps running
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, step.parse, stdout, ids, dict(known))
        return step.parse(stdout, ids, known)

    async def _run_each(
        self, step: StatusStep, ids: Sequence[str], known: Mapping[str, JobStatus]
    ) -> dict[str, JobStatus]:
        """A per-job step: the ids due (``pace``) in one batch command where the step has
        one and more than ``each_concurrency`` commands would run, else one command per
        group, at most ``each_concurrency`` at a time."""
        now = self.clock()
        asked = set(ids)
        for key in [k for k in self._asked if k[0] == step.name and k[1] not in asked]:
            del self._asked[key]  # forget ids no longer asked about
        due = []
        for job_id in ids:
            last = self._asked.get((step.name, job_id))
            if last is None or now - last >= step.pace:
                self._asked[(step.name, job_id)] = now
                due.append(job_id)
        if not due:
            return {}
        groups = step.group(due) if step.group is not None else [[i] for i in due]
        if step.batch_argv is not None and len(groups) > self.each_concurrency:
            with self._lock:
                times = [self._submitted_at.get(i) for i in due]
            known_times = [t for t in times if t is not None]
            since = min(known_times) if len(known_times) == len(times) else None
            argv = step.batch_argv(self.template, due, {**self.facts, "submitted_since": since})
            if argv is not None:
                try:
                    return dict(await self._run_step(step, due, known, argv))
                except (CommandError, ValueError) as exc:
                    logger.debug("%s for %d jobs failed: %s", step.name, len(due), exc)
                    return {}
        limit = asyncio.Semaphore(self.each_concurrency)

        async def one(group: list[str]) -> Mapping[str, JobStatus]:
            async with limit:
                try:
                    return await self._run_step(step, group, known)
                except (CommandError, ValueError) as exc:
                    logger.debug("%s for %s failed: %s", step.name, " ".join(group), exc)
                    return {}

        found: dict[str, JobStatus] = {}
        for result in await asyncio.gather(*(one(g) for g in groups)):
            found.update(result)
        return found

    # ------------------------------------------------------------------ tags

    async def list_tagged(self) -> dict[str, JobTag]:
        """This user's jobs carrying a dask_jobqueue tag (any cluster, any owner), by id.

        The dialect's listing commands are tried in order until one answers with output it
        can read; if none does, the last failure is raised as a :class:`CommandError`.
        """
        if self.dialect.tagging is None:
            return {}
        texts = await asyncio.get_running_loop().run_in_executor(None, self._tag_listing)
        tags = {job_id: JobTag.parse(text) for job_id, text in texts.items()}
        return {job_id: tag for job_id, tag in tags.items() if tag is not None}

    # ------------------------------------------------------------------ cancel

    def _chunks(self, job_ids: Sequence[str]) -> list[list[str]]:
        """The ids of each cancel command: at most ``cancel_max_ids`` arguments, where the
        tasks of one array joined into a range (``65[3-5].server``) are one argument, and
        below the argument-length budget."""
        limit = min(_CANCEL_MAX_IDS, self.dialect.cancel_max_ids)
        support = self.template.array_support_for(self.facts)
        if support is not None and len(job_ids) > limit:
            job_ids = sorted(job_ids, key=natural_key)  # tasks of one array side by side

        def joins(previous: str, job_id: str) -> bool:
            # tasks sorted by index: a task that joins the previous one's range adds no argument
            return support is not None and len(support.cancel_args([previous, job_id])) == 1

        chunks: list[list[str]] = [[]]
        size = arguments = 0
        for job_id in job_ids:
            adds = 0 if chunks[-1] and joins(chunks[-1][-1], job_id) else 1
            if chunks[-1] and (
                size + len(job_id) + 1 > _CANCEL_ARGV_BUDGET or arguments + adds > limit
            ):
                chunks.append([])
                size = arguments = 0
                adds = 1
            chunks[-1].append(job_id)
            size += len(job_id) + 1
            arguments += adds
        return [c for c in chunks if c]

    def cancel_arguments(self, job_ids: Sequence[str]) -> list[list[str]]:
        """The arguments of each cancel command for ``job_ids``: chunked as :meth:`cancel`
        does, tasks of one array joined into ranges where the batch system takes them."""
        return [self._cancel_args(chunk) for chunk in self._chunks(list(job_ids))]

    def cancel_plan(self, job_ids: Sequence[str]) -> list[tuple[list[str], list[str]]]:
        """Each cancel command for ``job_ids`` as (its arguments, the ids they cancel), as
        :meth:`cancel_arguments` chunks them."""
        return [(self._cancel_args(chunk), chunk) for chunk in self._chunks(list(job_ids))]

    def _cancel_args(self, chunk: Sequence[str]) -> list[str]:
        support = self.template.array_support_for(self.facts)
        return support.cancel_args(chunk) if support is not None else list(chunk)

    def _cancel_argv(self, chunk: Sequence[str]) -> list[str]:
        """One cancel command for ``chunk``; tasks of one array as ranges where possible."""
        return self.template.cancel_argv(self._cancel_args(chunk))

    def _cancel_failed(self, exc: CommandError) -> bool:
        """True unless every complaint of the cancel command only says a job is gone."""
        return not only_complaints_matching(exc, self.dialect.cancel_gone_pattern)

    async def cancel(self, job_ids: Iterable[str], attempts: int | None = None) -> list[str]:
        """Cancel ``job_ids`` with as few commands as the argument limit allows.

        A failing command is retried (``attempts`` in all, pausing 0.5 s, 1 s, ...); returns
        the ids that could not be cancelled, which stay in :attr:`live_ids` for the exit
        finalizer. Errors that only say a job is already gone are success.
        """
        ids = list(dict.fromkeys(job_ids))
        attempts = self.cancel_attempts if attempts is None else attempts
        left: list[str] = []
        if len(ids) > _CHUNK_IN_THREAD:  # sorting 10,000s of ids: not on the loop
            chunks = await asyncio.get_running_loop().run_in_executor(None, self._chunks, ids)
        else:
            chunks = self._chunks(ids)
        for chunk in chunks:
            for attempt in range(attempts):
                self.commands["cancel"] += 1
                await self.spend()
                try:
                    await run_command(self._cancel_argv(chunk), timeout=self.cancel_timeout)
                except CommandError as exc:
                    if self._cancel_failed(exc):
                        if attempt + 1 < attempts:
                            logger.info("Cancel command failed, retrying: %s", _first_line(exc))
                            await asyncio.sleep(0.5 * 2**attempt)
                            continue
                        logger.warning(
                            "Could not cancel job(s) %s after %d attempt(s); they may still be "
                            "queued or running (another try at interpreter exit): %s",
                            " ".join(chunk),
                            attempts,
                            exc,
                        )
                        left += chunk
                        break
                self.release(chunk)
                break
        return left

    def cancel_sync(self, job_ids: Iterable[str] | None = None) -> None:
        """Blocking cancel, for interpreter exit and threads: ``job_ids`` or every live id
        (then also the jobs of submissions whose output could not be read)."""
        if job_ids is None:
            self.cancel_unsettled_sync()
        ids = sorted(self.live_ids if job_ids is None else set(job_ids))
        for chunk in self._chunks(ids):
            with self._lock:
                self.commands["cancel"] += 1
            self._spend_sync()
            try:
                run_command_sync(self._cancel_argv(chunk), timeout=self.cancel_timeout)
            except CommandError as exc:
                if self._cancel_failed(exc):
                    logger.warning("Could not cancel job(s) %s: %s", " ".join(chunk), exc)
                    continue
            self.release(chunk)

    # ------------------------------------------------------------------ close

    def close(self) -> None:
        """No more submissions; submissions still running cancel what they create."""
        with self._lock:
            self._closing = True
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
