"""``BatchSystem``: the engine of one cluster, a facade over its four operations."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .._shell import CommandResult, CommandRunner
from ..tags import JobTag
from ..tracking import JobStatus
from .arrays import ArrayPlanner
from .cancel import Canceller
from .context import CommandBudget, EngineContext
from .query import PollAnswer, StatusQuery, list_tagged
from .submit import Submitter

if TYPE_CHECKING:
    from ..job import Job
    from ..options import EngineSettings

T = TypeVar("T")


class _Setting(Generic[T]):
    """An attribute of the engine kept by one of its parts (``part.name``)."""

    def __init__(self, part: str, name: str):
        self.part = part
        self.name = name

    def __get__(self, engine: Any, owner: type | None = None) -> T:
        if engine is None:
            return self  # type: ignore[return-value]
        return getattr(getattr(engine, self.part), self.name)

    def __set__(self, engine: Any, value: T) -> None:
        setattr(getattr(engine, self.part), self.name, value)


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
        Tries of a failing cancel command; then its ids are tried in smaller commands,
        down to one id, and those that still fail are reported left behind.
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
    runner : CommandRunner, optional
        Runs every command and every pause between tries (default: real processes).
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
        runner: CommandRunner | None = None,
    ):
        budget = CommandBudget(command_rate_limit, command_burst) if command_rate_limit else None
        self._context = EngineContext(template, runner or CommandRunner(), budget, status_timeout)
        self._arrays = ArrayPlanner(self._context, job_arrays, max_array_size)
        self._query = StatusQuery(self._context, each_concurrency)
        self._canceller = Canceller(
            self._context,
            cancel_timeout if cancel_timeout is not None else status_timeout,
            cancel_attempts,
        )
        self._submitter = Submitter(
            self._context,
            self._arrays,
            self._canceller,
            submit_timeout,
            submit_concurrency,
            submit_rate_limit,
            submit_attempts,
            submit_retry_delay,
        )

    # what the parts keep, readable and settable here as before the split
    template: _Setting[Job] = _Setting("_context", "template")
    dialect: _Setting[type[Job]] = _Setting("_context", "dialect")
    runner: _Setting[CommandRunner] = _Setting("_context", "runner")
    #: Shared by every command of this engine (``None``: no limit).
    budget: _Setting[CommandBudget | None] = _Setting("_context", "budget")
    #: What the engine learned about this site (e.g. ``{"pbs_flavour": "torque"}``).
    facts: _Setting[dict[str, Any]] = _Setting("_context", "facts")
    #: Commands run so far, by kind: ``submit``, ``status``, ``cancel``, ``limits``.
    commands: _Setting[Counter[str]] = _Setting("_context", "commands")
    #: Id of this engine's cluster in the tags of its jobs (8 hex digits).
    cluster_id: _Setting[str] = _Setting("_context", "cluster_id")
    #: Called from any thread after the set of live ids changed, with the ids added and the
    #: ids removed (each call carries only the change: keep it O(change)).
    on_live_change: _Setting[Callable[[Sequence[str], Sequence[str]], None] | None] = _Setting(
        "_context", "on_live_change"
    )
    status_timeout: _Setting[float] = _Setting("_context", "status_timeout")
    submit_timeout: _Setting[float] = _Setting("_submitter", "timeout")
    submit_concurrency: _Setting[int] = _Setting("_submitter", "concurrency")
    submit_rate_limit: _Setting[float | None] = _Setting("_submitter", "rate_limit")
    submit_attempts: _Setting[int] = _Setting("_submitter", "attempts")
    submit_retry_delay: _Setting[float] = _Setting("_submitter", "retry_delay")
    cancel_timeout: _Setting[float] = _Setting("_canceller", "timeout")
    cancel_attempts: _Setting[int] = _Setting("_canceller", "attempts")
    job_arrays: _Setting[str] = _Setting("_arrays", "job_arrays")
    max_array_size: _Setting[int | None] = _Setting("_arrays", "max_array_size")
    each_concurrency: _Setting[int] = _Setting("_query", "each_concurrency")
    #: The clock of a per-job status step's ``pace`` (replaceable in tests).
    clock: _Setting[Callable[[], float]] = _Setting("_query", "clock")
    # for engine subclasses (the local processes), as before the split
    _lock: _Setting[threading.Lock] = _Setting("_context", "lock")
    _live: _Setting[set[str]] = _Setting("_context", "live")
    _closing: _Setting[bool] = _Setting("_context", "closing")

    @classmethod
    def from_settings(
        cls, template: Job, settings: EngineSettings, runner: CommandRunner | None = None
    ) -> BatchSystem:
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
            runner=runner,
        )

    # ------------------------------------------------------------------ bookkeeping

    @property
    def live_ids(self) -> set[str]:
        """Ids this engine created and has not seen end or cancelled (a copy)."""
        return self._context.live_ids

    def release(self, job_ids: Iterable[str]) -> None:
        """These jobs ended by themselves: nothing left to cancel for them."""
        self._context.release(job_ids)

    def adopt(self, job_ids: Iterable[str]) -> None:
        """Take over jobs another process submitted (a cluster attached by name): they are
        live jobs of this engine from now on, cancelled at close like its own."""
        self._context.hold(job_ids)

    async def spend(self) -> None:
        """Wait (on the event loop) for the command budget, if there is one: every command
        this engine runs, or runs for it (the walltime lookup), spends one token."""
        await self._context.spend()

    async def run(self, kind: str, argv: Sequence[str], timeout: float | None) -> CommandResult:
        """Run a command for this engine (the walltime lookup, say): counted in
        :attr:`commands` under ``kind``, paid from the budget, through :attr:`runner`."""
        return await self._context.run(kind, argv, timeout)

    def new_tag(self) -> JobTag:
        """The tag of the next submission: this cluster, a fresh serial, this process."""
        return self._context.new_tag()

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
        if self._context.closing:
            raise RuntimeError("the cluster is closing: no more submissions")
        if type(self).submit is not BatchSystem.submit:
            # an engine with its own submit (the local processes): one job at a time
            outcomes = await asyncio.gather(
                *(self.submit(job) for job in jobs), return_exceptions=True
            )
            return list(outcomes)
        return await self._submitter.submit_many(jobs, arrays)

    def array_size_limit(self) -> int | None:
        """Most tasks of one array here: the override, else what the site said; lower if
        the site refused a larger array."""
        return self._arrays.size_limit()

    def cancel_unsettled_sync(self) -> None:
        """Cancel the jobs carrying the tag of a submission whose output could not be read
        and whose jobs were not found then (blocking; for close and interpreter exit). A tag
        is forgotten once its jobs are cancelled or the listing shows none."""
        self._submitter.cancel_unsettled_sync()

    async def cancel_unsettled(self) -> None:
        """:meth:`cancel_unsettled_sync` in a thread."""
        if self._submitter.has_unsettled:
            await asyncio.get_running_loop().run_in_executor(None, self.cancel_unsettled_sync)

    # ------------------------------------------------------------------ status

    @property
    def can_query(self) -> bool:
        """Whether this batch system can be asked about its jobs at all."""
        return bool(self._context.dialect.status_steps)

    async def query(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """Run the dialect's status steps for ``job_ids``; raise ``CommandError`` if a required
        step failed. Ids missing from the result were not listed by any step."""
        return dict((await self.poll(job_ids)).statuses)

    async def poll(self, job_ids: Sequence[str]) -> PollAnswer:
        """As :meth:`query`, also telling which missing ids the batch system said it does not
        know (a step's usable failure, such as Slurm's ``Invalid job id``), as opposed to ids
        a listing merely left out."""
        return await self._query.poll(job_ids)

    async def list_tagged(self) -> dict[str, JobTag]:
        """This user's jobs carrying a dask_jobqueue tag (any cluster, any owner), by id.

        The dialect's listing commands are tried in order until one answers with output it
        can read; if none does, the last failure is raised as a :class:`CommandError`.
        """
        return await list_tagged(self._context)

    # ------------------------------------------------------------------ cancel

    def cancel_arguments(self, job_ids: Sequence[str]) -> list[list[str]]:
        """The arguments of each cancel command for ``job_ids``: chunked as :meth:`cancel`
        does, tasks of one array joined into ranges where the batch system takes them."""
        return [arguments for arguments, _ in self._canceller.plan(job_ids)]

    def cancel_plan(self, job_ids: Sequence[str]) -> list[tuple[list[str], list[str]]]:
        """Each cancel command for ``job_ids`` as (its arguments, the ids they cancel), as
        :meth:`cancel_arguments` chunks them."""
        return self._canceller.plan(job_ids)

    async def cancel(self, job_ids: Iterable[str], attempts: int | None = None) -> list[str]:
        """Cancel ``job_ids`` with as few commands as the argument limit allows.

        A failing command is retried (``attempts`` in all, pausing 0.5 s, 1 s, ...), then
        its ids are tried in halves, down to single ids (a bounded number of commands), so
        an id the batch system refuses leaves only itself behind. Returns the ids that could
        not be cancelled, which stay in :attr:`live_ids` for the exit finalizer. Errors that
        only say a job is already gone are success.
        """
        return await self._canceller.cancel(job_ids, attempts)

    def cancel_sync(self, job_ids: Iterable[str] | None = None) -> None:
        """Blocking cancel, for interpreter exit and threads: ``job_ids`` or every live id
        (then also the jobs of submissions whose output could not be read)."""
        if job_ids is None:
            self.cancel_unsettled_sync()
        self._canceller.cancel_sync(self.live_ids if job_ids is None else job_ids)

    # ------------------------------------------------------------------ close

    def close(self) -> None:
        """No more submissions; submissions still running cancel what they create."""
        self._submitter.close()
