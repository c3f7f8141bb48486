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
import getpass
import itertools
import logging
import os
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

logger = logging.getLogger(__name__)

__all__ = ["BatchSystem", "StatusStep", "DuplicateJobIdError", "all_ids", "missing_ids"]

Selector = Callable[[Sequence[str], Mapping[str, JobStatus]], Sequence[str]]
ArgvBuilder = Callable[["Job", Sequence[str], dict], "list[str] | None"]
Parser = Callable[[str, Sequence[str], Mapping[str, JobStatus]], Mapping[str, JobStatus]]

#: Bytes of job ids per cancel command (the kernel's limit is far higher; some wrappers aren't).
_CANCEL_ARGV_BUDGET = 64 * 1024
_CANCEL_MAX_IDS = 1000


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
    """

    def __init__(
        self,
        template: Job,
        submit_timeout: float = 120.0,
        status_timeout: float = 30.0,
        cancel_timeout: float | None = None,
        submit_concurrency: int = 8,
        cancel_attempts: int = 3,
    ):
        self.template = template
        self.dialect = type(template)
        self.submit_timeout = submit_timeout
        self.status_timeout = status_timeout
        self.cancel_timeout = cancel_timeout if cancel_timeout is not None else status_timeout
        self.submit_concurrency = submit_concurrency
        self.cancel_attempts = cancel_attempts
        #: What the engine learned about this site (e.g. ``{"pbs_flavour": "torque"}``).
        self.facts: dict[str, Any] = {}
        #: Commands run so far, by kind: ``submit``, ``status``, ``cancel``.
        self.commands: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._live: set[str] = set()
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
        if self._closing:
            raise RuntimeError("the cluster is closing: no more submissions")
        script = job.job_script()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.submit_concurrency, thread_name_prefix="dask-jobqueue-submit"
            )
        loop = asyncio.get_running_loop()
        job_id = await loop.run_in_executor(self._executor, self._submit_blocking, job, script)
        job.job_id = job_id
        return job_id

    def _submit_blocking(self, job: Job, script: str) -> str:
        job.prepare_log_directory()
        with tempfile.TemporaryDirectory(prefix="dask-jobqueue-") as tmp:
            path = os.path.join(tmp, "job.sh")
            with open(path, "w", encoding="utf-8") as f:
                f.write(script)
            job.tag = self.new_tag()
            argv = self.tagged_submit_argv(job, path, job.tag)
            with self._lock:
                self.commands["submit"] += 1
            try:
                stdout = run_command_sync(
                    argv, stdin=job.submit_stdin(script), timeout=self.submit_timeout
                ).stdout
            except CommandError as exc:
                stdout = self._accepted_despite(exc, job)
        job_id = job.job_id_from_submit_output(stdout)
        with self._lock:
            if job_id in self._live:
                raise DuplicateJobIdError(
                    f"`{' '.join(argv[:-1] + ['<script>'])}` reported job id {job_id}, which "
                    f"this cluster already tracks; its output was:\n{stdout.strip()}"
                )
            self._live.add(job_id)
            closing = self._closing
        self._live_changed()
        logger.debug("Submitted job %s for %s", job_id, job.name)
        if closing:
            logger.info("Cancelling job %s: it was submitted while the cluster closed", job_id)
            self.cancel_sync([job_id])
        return job_id

    def _accepted_despite(self, exc: CommandError, job: Job) -> str:
        """The output of a submit command that failed or hung *after* printing its job's id
        line (the batch system accepted the job): that output, so the job is tracked rather
        than left behind. Otherwise the error is raised. Only for anchored id patterns, which
        cannot mistake a message for an id."""
        if job.job_id_regexp.startswith("^") and exc.stdout.strip():
            try:
                job_id = job.job_id_from_submit_output(exc.stdout)
            except ValueError:
                raise exc from None
            logger.warning(
                "The submit command reported an error after the batch system accepted job %s; "
                "tracking that job: %s",
                job_id,
                _first_line(exc),
            )
            return exc.stdout
        raise exc

    # ------------------------------------------------------------------ status

    @property
    def can_query(self) -> bool:
        """Whether this batch system can be asked about its jobs at all."""
        return bool(self.dialect.status_steps)

    async def query(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """Run the dialect's status steps for ``job_ids``; raise ``CommandError`` if a required
        step failed. Ids missing from the result were not listed by any step."""
        job_ids = list(job_ids)
        wanted = set(job_ids)
        known: dict[str, JobStatus] = {}
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
                    found = await self._run_step(step, selected, known)
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
        return known

    async def _run_step(
        self, step: StatusStep, ids: Sequence[str], known: Mapping[str, JobStatus]
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
            stdout = exc.stdout
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

        The dialect's listing commands are tried in order until one succeeds; if all fail,
        the last :class:`CommandError` is raised. Output that cannot be read is a
        ``CommandError`` too.
        """
        spec = self.dialect.tagging
        if spec is None:
            return {}
        error: CommandError | None = None
        user = getpass.getuser()
        for argv in spec.list_argvs(user):
            self.commands["status"] += 1
            try:
                stdout = (await run_command(list(argv), timeout=self.status_timeout)).stdout
            except CommandError as exc:
                error = exc
                continue
            try:
                texts = spec.parse(stdout, user)
            except ValueError as exc:
                raise CommandError(
                    list(argv), 0, reason=f"printed output that could not be read ({exc})"
                ) from exc
            tags = {job_id: JobTag.parse(text) for job_id, text in texts.items()}
            return {job_id: tag for job_id, tag in tags.items() if tag is not None}
        assert error is not None, "a TagSpec lists at least one command"
        raise error

    # ------------------------------------------------------------------ cancel

    def _chunks(self, job_ids: Sequence[str]) -> list[list[str]]:
        chunks: list[list[str]] = [[]]
        size = 0
        for job_id in job_ids:
            if chunks[-1] and (
                size + len(job_id) + 1 > _CANCEL_ARGV_BUDGET or len(chunks[-1]) >= _CANCEL_MAX_IDS
            ):
                chunks.append([])
                size = 0
            chunks[-1].append(job_id)
            size += len(job_id) + 1
        return [c for c in chunks if c]

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
                    await run_command(
                        self.template.cancel_argv(chunk), timeout=self.cancel_timeout
                    )
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
        """Blocking cancel, for interpreter exit and threads: ``job_ids`` or every live id."""
        ids = sorted(self.live_ids if job_ids is None else set(job_ids))
        for chunk in self._chunks(ids):
            with self._lock:
                self.commands["cancel"] += 1
            try:
                run_command_sync(self.template.cancel_argv(chunk), timeout=self.cancel_timeout)
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
