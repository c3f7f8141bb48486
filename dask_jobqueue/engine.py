"""The batch-system engine: one per cluster, it submits, queries and cancels many jobs.

A dialect (``slurm.py``, ``pbs.py``, ...) declares *what* to run and how to read it: argv
builders, an anchored job-id pattern, :class:`StatusStep` s run in order at every poll, pure
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
import re
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

from ._shell import CommandError, run_command, run_command_sync
from .tags import JobTag, new_cluster_id, safe_host
from .tracking import JobStatus

if TYPE_CHECKING:
    from .job import Job
    from .options import EngineSettings

logger = logging.getLogger(__name__)

__all__ = [
    "ArraySupport",
    "BatchSystem",
    "DuplicateJobIdError",
    "LimitsProbe",
    "PollAnswer",
    "StatusStep",
    "adopt_one_array",
    "all_ids",
    "array_script",
    "missing_ids",
]

Selector = Callable[[Sequence[str], Mapping[str, JobStatus]], Sequence[str]]
ArgvBuilder = Callable[["Job", Sequence[str], dict], "list[str] | None"]
Parser = Callable[[str, Sequence[str], Mapping[str, JobStatus]], Mapping[str, JobStatus]]

#: Bytes of job ids per cancel command (the kernel's limit is far higher; some wrappers aren't).
_CANCEL_ARGV_BUDGET = 64 * 1024
_CANCEL_MAX_IDS = 1000
#: Looks for the jobs of a submission whose output could not be read (listings may lag).
_UNREADABLE_LOOKS = 3
#: How many times in all the site probes are run while one of them keeps failing.
LIMIT_PROBE_ROUNDS = 3


def all_ids(ids: Sequence[str], known: Mapping[str, JobStatus]) -> Sequence[str]:
    """Every id of the poll."""
    return ids


def missing_ids(ids: Sequence[str], known: Mapping[str, JobStatus]) -> Sequence[str]:
    """The ids no earlier step reported (finished jobs that left the queue, typically)."""
    return [i for i in ids if i not in known]


@dataclass(frozen=True)
class StatusStep:
    """One status command of a poll, as a dialect declares it.

    Parameters
    ----------
    name : str
        For logs and errors, e.g. ``"squeue"``.
    argv : callable
        ``argv(job, ids, facts)``: the command line for these ids, or ``None`` to skip the
        step. ``job`` is the cluster's template job (its options), ``facts`` what the engine
        learned about the site.
    parse : callable
        ``parse(stdout, ids, known)``: statuses of (some of) ``ids`` from the command's output.
        ``known`` holds what earlier steps of this poll reported. Raises ``ValueError`` on
        output it cannot read.
    select : callable
        ``select(ids, known)``: which ids of the poll this step asks about.
    each : bool
        One command per id (``qacct -j ID``), run concurrently.
    pace : float
        With ``each``: seconds between two commands for the same id (a job whose record is
        not written yet is not asked again at every poll).
    required : bool
        If this step fails, the poll fails (states unchanged). An optional step's failure
        only leaves its ids unreported.
    usable_failure : callable, optional
        ``usable_failure(error)``: the command failed but its stdout is still the answer
        (e.g. some ids were unknown, the others are listed).
    fallback : callable, optional
        ``fallback(error, facts)``: return True if the failure taught something (recorded in
        ``facts``) and the following steps answer instead; the poll then goes on.
    when : callable, optional
        ``when(facts, fell_back)``: run this step only if it returns True; ``fell_back`` tells
        whether the previous step fell back.
    """

    name: str
    argv: ArgvBuilder
    parse: Parser
    select: Selector = all_ids
    each: bool = False
    pace: float = 0.0
    required: bool = True
    usable_failure: Callable[[CommandError], bool] | None = None
    fallback: Callable[[Exception, dict], bool] | None = None
    when: Callable[[dict, bool], bool] | None = None


@dataclass(frozen=True)
class PollAnswer:
    """What one poll of the status steps learned.

    ``statuses``: the ids some step reported; ``denied``: ids no step reported and which a
    step's command explicitly did not know (it failed for them, see
    ``StatusStep.usable_failure``). Other missing ids were merely not listed.
    """

    statuses: dict[str, JobStatus]
    denied: frozenset[str] = frozenset()


@dataclass(frozen=True)
class LimitsProbe:
    """A command that tells the site's limits, run once before the first array submission.

    ``argv(job)`` is the command; ``parse(stdout)`` returns facts such as
    ``{"max_array_size": 1001, "max_job_count": 10000}`` (only what the output states).
    """

    argv: Callable[[Job], list[str]]
    parse: Callable[[str], dict[str, int]]


@dataclass(frozen=True)
class ArraySupport:
    """How a dialect submits many identical jobs as one job array, as data.

    Parameters
    ----------
    index_var : str
        Environment variable holding the task index inside the job script
        (``SLURM_ARRAY_TASK_ID``); the script picks its worker name with it. With
        ``render``, the dialect's own index (HTCondor: the ``$(Process)`` macro).
    submit_args : callable
        ``submit_args(first, last)``: extra arguments of the submit command for the indices
        ``first..last`` (inclusive), e.g. ``["--array=0-9"]``.
    task_ids : callable
        ``task_ids(stdout, indices)``: the id of every task (in the order of ``indices``) from
        the submit command's output, e.g. ``["12_0", "12_1"]``. Raises ``ValueError``.
    first_index : int
        Index of the first task of every array (Grid Engine counts from 1).
    min_size : int
        Fewest tasks of an array (OpenPBS refuses ``-J 1-1``); smaller groups are single jobs.
    cancel_args : callable
        ``cancel_args(ids)``: the arguments of one cancel command for these ids, with tasks of
        one array joined into ranges where the scheduler takes them (``12_[3-5]``).
    adopt : callable, optional
        ``adopt(listed, indices)``: the task ids of an array whose submit command failed,
        from the ids its tag is listed under (``12_[0-4]`` for pending Slurm tasks...);
        raises ``ValueError`` if they do not make the whole array.
    edit_script : callable, optional
        ``edit_script(script)``: the array's script adapted to arrays, e.g. output file
        patterns naming the task (``%A_%a``) so a dead task's output is found by its id.
    render : callable, optional
        ``render(template, placeholder, names)``: the whole array script, for dialects whose
        script is not a shell script (HTCondor's submit description): ``template`` is the
        job's script with its worker name replaced by ``placeholder``. Replaces the shell
        ``case`` on ``index_var`` that :func:`array_script` writes otherwise.
    names_ok : callable, optional
        ``names_ok(names)``: whether jobs with these worker names can be tasks of one array
        (HTCondor lists them in the submit description, comma-separated); if not, they are
        submitted one by one.
    script_range : callable, optional
        ``script_range(script, first, last)``: the array's script declaring the indices
        ``first..last`` itself, for batch systems that read them from a directive rather
        than from an argument (LSF's ``#BSUB -J "name[1-4]"``); applied after
        ``edit_script``.
    too_large : re.Pattern, optional
        The submit command's refusal of an array with more tasks than the site allows
        (Slurm: ``Invalid job array specification``). The engine then submits the jobs of
        that array again as arrays of half its size, and keeps that cap.
    """

    index_var: str
    submit_args: Callable[[int, int], list[str]]
    task_ids: Callable[[str, Sequence[int]], list[str]]
    first_index: int = 0
    min_size: int = 2
    cancel_args: Callable[[Sequence[str]], list[str]] = list
    edit_script: Callable[[str], str] | None = None
    adopt: Callable[[Sequence[str], Sequence[int]], list[str]] | None = None
    render: Callable[[str, str, Sequence[str]], str] | None = None
    names_ok: Callable[[Sequence[str]], bool] | None = None
    script_range: Callable[[str, int, int], str] | None = None
    too_large: re.Pattern[str] | None = None


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


def single_array_id(pattern: str, stdout: str, tool: str) -> str:
    """The one job id an array submission printed, read with the dialect's own anchored
    ``job_id_regexp``; ``ValueError`` if there is not exactly one."""
    found = list(dict.fromkeys(m.group("job_id") for m in re.finditer(pattern, stdout, re.M)))
    if len(found) != 1:
        raise ValueError(f"Could not read one array job id from {tool}'s output:\n{stdout}")
    return found[0]


def group_tasks(
    job_ids: Sequence[str], split: Callable[[str], tuple[str, int] | None]
) -> list[tuple[str, list[int] | None]]:
    """``job_ids`` in order, the tasks of each array gathered where the array first appears:
    ``(array, [indices])`` for tasks (``split(id)`` -> ``(array, index)``), ``(id, None)``
    for other ids (``split(id)`` -> ``None``). For cancel commands taking task ranges."""
    groups: list[tuple[str, list[int] | None]] = []
    tasks: dict[str, list[int]] = {}
    for job_id in job_ids:
        task = split(job_id)
        if task is None:
            groups.append((job_id, None))
        elif task[0] in tasks:
            tasks[task[0]].append(task[1])
        else:
            tasks[task[0]] = [task[1]]
            groups.append((task[0], tasks[task[0]]))
    return groups


def index_spans(indices: Iterable[int]) -> list[str]:
    """Runs of consecutive array indices: ``[3, 4, 5, 7]`` -> ``["3-5", "7"]`` (for cancel
    commands that take task ranges)."""
    spans: list[str] = []
    ordered = sorted(set(indices))
    if not ordered:
        return spans
    start = prev = ordered[0]
    for i in [*ordered[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        spans.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return spans


def adopt_one_array(
    listed: Sequence[str], indices: Sequence[int], task_id: Callable[[str, int], str]
) -> list[str]:
    """Task ids of the one array whose tasks (or collapsed pending tasks) are ``listed``."""
    bases = {re.match(r"\d+", i).group() for i in listed if re.match(r"\d+", i)}
    if len(bases) != 1:
        raise ValueError(f"expected the tasks of one array, found {', '.join(listed)}")
    base = bases.pop()
    return [task_id(base, i) for i in indices]


def _natural_key(job_id: str) -> list[str | int]:
    """``12[10]`` after ``12[9]``: digit runs compare as numbers."""
    return [int(part) if k % 2 else part for k, part in enumerate(re.split(r"(\d+)", job_id))]


#: Submit errors worth another try, unless a dialect declares its own: a loaded or restarting
#: controller, not a bad option.
TRANSIENT_SUBMIT_ERRORS = re.compile(
    r"Socket timed out|Resource temporarily unavailable|try again later|"
    r"temporarily unable|Connection refused|Connection reset|Unable to contact slurm controller",
    re.IGNORECASE,
)


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


def simple_parser(parse: Callable[[str], Mapping[str, JobStatus]]) -> Parser:
    """Adapt a ``parse(stdout) -> {id: status}`` function to the step signature, keeping
    only the ids of the step."""

    def parser(stdout: str, ids: Sequence[str], known: Mapping[str, JobStatus]):
        statuses = parse(stdout)
        return {i: statuses[i] for i in ids if i in statuses}

    parser.__name__ = getattr(parse, "__name__", "parser")
    parser.__doc__ = parse.__doc__
    return parser


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
        #: Called (without arguments, from any thread) after the set of live ids changed.
        self.on_live_change: Callable[[], None] | None = None

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
            self._live.difference_update(job_ids)
        self._live_changed()

    def _live_changed(self) -> None:
        if self.on_live_change is not None:
            self.on_live_change()

    def new_tag(self) -> JobTag:
        """The tag of the next submission: this cluster, a fresh serial, this process."""
        with self._lock:
            serial = next(self._serials)
        return JobTag(self.cluster_id, serial, os.getpid(), self._host)

    def tagged_submit_argv(self, job: Job, script_path: str, tag: JobTag) -> list[str]:
        """The job's submit command with the dialect's tag arguments right after the
        command's own words (so ``submit_command_extra`` can still override them)."""
        argv = job.submit_argv(script_path)
        spec = self.dialect.tagging
        if spec is None or not job.submit_command:
            return argv
        head = len(shlex.split(job.submit_command))
        return [*argv[:head], *spec.submit_args(tag.text()), *argv[head:]]

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
        groups = self._plan(jobs, support)
        futures = [
            loop.run_in_executor(self._executor, self._submit_planned, group, support)
            for group in groups
        ]
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        results: dict[int, str | BaseException] = {}
        for group, outcome in zip(groups, outcomes, strict=True):
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
                try:
                    stdout = run_command_sync(
                        probe.argv(self.template), timeout=self.status_timeout
                    ).stdout
                except CommandError as exc:
                    logger.info("Could not read the site's limits (attempt %d of %d): %s",
                                self._probe_rounds, LIMIT_PROBE_ROUNDS, _first_line(exc))
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
        array = len(group) > 1
        assert support is not None or not array
        if array:
            script = array_script(first, [job.name for job in group], support)
            indices = [support.first_index + k for k in range(len(group))]
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
                extra += support.submit_args(indices[0], indices[-1])
            argv = [*argv[:head], *extra, *argv[head:]]

            def parse(stdout: str) -> list[str]:
                if array:
                    return support.task_ids(stdout, indices)
                return [first.job_id_from_submit_output(stdout)]

            try:
                ids = self._run_submit(
                    argv, first.submit_stdin(script), parse, tag if tagging else None, indices
                )
            except CommandError as exc:
                if array and _too_large(exc, support) is not None:
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
            closing = self._closing
        self._live_changed()
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
            refused_size, _too_large(error, support), then,
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
                            argv, exc.returncode, exc.stdout, exc.stderr,
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
                    argv, 0, stdout,
                    reason=f"{reason}; its jobs could not be looked up by tag {tag.text()} "
                    f"({_first_line(failed)}): any is cancelled when the cluster closes",
                ) from error
            if listed:
                break
        if not listed:
            self._remember_unsettled(tag)
            raise CommandError(
                argv, 0, stdout,
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
                argv, 0, stdout,
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
            self._live.update(job_ids)  # held until the cancel is confirmed (exit finalizer)
        self._live_changed()
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
                "read: %s", len(unsettled), _first_line(exc),
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
                error.argv, error.returncode, error.stdout, error.stderr,
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
            try:
                if step.each:
                    found = await self._run_each(step, selected, known)
                else:
                    found = await self._run_step(step, selected, known, denied)
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
            known.update({i: s for i, s in found.items() if i in selected})
        return PollAnswer(known, frozenset(denied - known.keys()))

    async def _run_step(
        self,
        step: StatusStep,
        ids: Sequence[str],
        known: Mapping[str, JobStatus],
        denied: set[str] | None = None,
    ) -> Mapping[str, JobStatus]:
        argv = step.argv(self.template, ids, self.facts)
        if argv is None:
            return {}
        self.commands["status"] += 1
        try:
            stdout = (await run_command(argv, timeout=self.status_timeout)).stdout
        except CommandError as exc:
            if step.usable_failure is None or not step.usable_failure(exc):
                raise
            found = step.parse(exc.stdout, ids, known)
            if denied is not None:
                # the command failed because it does not know some ids: those it left out
                denied.update(i for i in ids if i not in found)
            return found
        return step.parse(stdout, ids, known)

    async def _run_each(
        self, step: StatusStep, ids: Sequence[str], known: Mapping[str, JobStatus]
    ) -> dict[str, JobStatus]:
        async def one(job_id: str) -> Mapping[str, JobStatus]:
            try:
                return await self._run_step(step, [job_id], known)
            except (CommandError, ValueError) as exc:
                logger.debug("%s for %s failed: %s", step.name, job_id, exc)
                return {}

        now = self.clock()
        due = []
        for job_id in ids:
            last = self._asked.get((step.name, job_id))
            if last is None or now - last >= step.pace:
                self._asked[(step.name, job_id)] = now
                due.append(job_id)
        # forget ids no longer asked about
        for key in [k for k in self._asked if k[0] == step.name and k[1] not in ids]:
            del self._asked[key]
        found: dict[str, JobStatus] = {}
        for result in await asyncio.gather(*(one(i) for i in due)):
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
            job_ids = sorted(job_ids, key=_natural_key)  # tasks of one array side by side

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

    def _cancel_args(self, chunk: Sequence[str]) -> list[str]:
        support = self.template.array_support_for(self.facts)
        return support.cancel_args(chunk) if support is not None else list(chunk)

    def _cancel_argv(self, chunk: Sequence[str]) -> list[str]:
        """One cancel command for ``chunk``; tasks of one array as ranges where possible."""
        return self.template.cancel_argv(self._cancel_args(chunk))

    def _cancel_failed(self, exc: CommandError) -> bool:
        """True unless every complaint of the cancel command only says a job is gone."""
        pattern = self.dialect.cancel_gone_pattern
        if exc.returncode is None or pattern is None:
            return True
        if exc.stderr.strip():
            complaints = [line for line in exc.stderr.splitlines() if line.strip()]
        else:  # some tools (oardel) report on stdout, between progress lines
            complaints = [line for line in exc.stdout.splitlines() if _looks_like_error(line)]
        return not complaints or not all(pattern.search(line) for line in complaints)

    async def cancel(self, job_ids: Iterable[str], attempts: int | None = None) -> list[str]:
        """Cancel ``job_ids`` with as few commands as the argument limit allows.

        A failing command is retried (``attempts`` in all, pausing 0.5 s, 1 s, ...); returns
        the ids that could not be cancelled, which stay in :attr:`live_ids` for the exit
        finalizer. Errors that only say a job is already gone are success.
        """
        ids = list(dict.fromkeys(job_ids))
        attempts = self.cancel_attempts if attempts is None else attempts
        left: list[str] = []
        for chunk in self._chunks(ids):
            for attempt in range(attempts):
                self.commands["cancel"] += 1
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


_ERROR_WORDS = ("error", "invalid", "unknown", "not ", "cannot", "fail", "denied", "no such")


def _looks_like_error(line: str) -> bool:
    lower = line.lower()
    return any(word in lower for word in _ERROR_WORDS)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
