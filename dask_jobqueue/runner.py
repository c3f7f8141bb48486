"""Run a whole Dask cluster inside one existing allocation, one process per rank.

Launch the same script N times (``srun -n N python script.py``); each process finds its rank
and becomes the scheduler (rank 0), the client that runs the user's code (rank 1) or a worker
(every other rank). They find each other through a scheduler file on a shared filesystem::

    from dask.distributed import Client
    from dask_jobqueue.slurm import SLURMRunner

    with SLURMRunner(scheduler_file="/shared/scheduler-{job_id}.json") as runner:
        with Client(runner) as client:
            client.wait_for_workers(runner.n_workers)
            ...

On the scheduler and worker ranks, entering the ``with`` block runs the server until the
client's block ends and then exits the process, so the code inside the block runs on the
client rank only. Leaving the client's block shuts the scheduler down, which closes every
worker. No signal handler is installed.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from distributed.core import Status, rpc
from distributed.utils import import_term

__all__ = [
    "Role",
    "BaseRunner",
    "WorldTooSmallException",
    "SLURMRunner",
    "AsyncCommWorld",
    "AsyncRunner",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Role(enum.Enum):
    """What one process of a runner does."""

    scheduler = "scheduler"
    worker = "worker"
    client = "client"


class WorldTooSmallException(RuntimeError):
    """There are not enough processes for a scheduler, a client and at least one worker."""


def _run(coroutine_function: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from synchronous code, also under a running loop."""
    try:
        asyncio.get_running_loop()
        loop_running = True
    except RuntimeError:
        loop_running = False
    if not loop_running:
        return asyncio.run(coroutine_function())  # type: ignore[arg-type]
    result: list[Any] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coroutine_function()))  # type: ignore[arg-type]
        except BaseException as exc:  # handed to the calling thread
            error.append(exc)

    thread = threading.Thread(target=target, name="dask-jobqueue-runner")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


class BaseRunner:
    """Turn the processes of one parallel launch into a scheduler, a client and workers.

    Subclasses say how a process learns its role and how the scheduler's address is shared
    (:meth:`get_role`, :meth:`set_scheduler_address`, :meth:`get_scheduler_address`); the
    other hooks are optional.

    Parameters
    ----------
    scheduler : bool
        Start a scheduler on one of the processes (``False`` when one runs elsewhere).
    scheduler_options : dict, optional
        Keyword arguments for :class:`distributed.Scheduler`.
    worker_class : str or type, optional
        Worker class or its import path (default ``"distributed.Worker"``), e.g.
        ``"distributed.Nanny"`` or ``"dask_cuda.CUDAWorker"``.
    worker_options : dict, optional
        Keyword arguments for the worker class.
    client : bool
        One process runs the user's code as the client; requires ``scheduler=True``.
    asynchronous : bool
        Use with ``async with`` instead of ``with``.
    loop : optional
        Accepted for compatibility; the runner uses the running event loop.
    """

    def __init__(
        self,
        scheduler: bool = True,
        scheduler_options: Mapping[str, Any] | None = None,
        worker_class: str | type | None = None,
        worker_options: Mapping[str, Any] | None = None,
        client: bool = True,
        asynchronous: bool = False,
        loop: Any = None,
    ):
        if client and not scheduler:
            raise ValueError(
                "client=True needs scheduler=True: the client rank connects to the scheduler "
                "this runner starts"
            )
        if scheduler_options is not None and not isinstance(scheduler_options, Mapping):
            raise ValueError(f"scheduler_options must be a dict, got {scheduler_options!r}")
        if worker_options is not None and not isinstance(worker_options, Mapping):
            raise ValueError(f"worker_options must be a dict, got {worker_options!r}")
        if worker_class is not None and not isinstance(worker_class, (str, type)):
            raise ValueError(
                f"worker_class must be a class or an import path string, got {worker_class!r}"
            )
        self.scheduler = scheduler
        self.scheduler_options = dict(scheduler_options or {})
        self.worker_class = worker_class or "distributed.Worker"
        self.worker_options = dict(worker_options or {})
        self.client = client
        self.asynchronous = asynchronous
        self.loop = loop if asynchronous else None
        self.role: Role | None = None
        self.scheduler_address: str | None = None
        self.status = Status.created
        self.security = None

    # ------------------------------------------------------------------ hooks

    async def get_role(self) -> Role:
        """This process' role."""
        raise NotImplementedError

    async def set_scheduler_address(self, scheduler: Any) -> None:
        """Publish the address of the scheduler started on this process."""
        raise NotImplementedError

    async def get_scheduler_address(self) -> str:
        """Wait for and return the scheduler's address."""
        raise NotImplementedError

    async def get_worker_name(self) -> str | int | None:
        """The name of the worker started on this process (default: none)."""
        return None

    async def before_scheduler_start(self) -> None:
        """Called on the scheduler rank before the scheduler starts."""

    async def before_worker_start(self) -> None:
        """Called on a worker rank before the worker starts."""

    async def before_client_start(self) -> None:
        """Called on the client rank before its ``with`` block runs."""

    async def on_scheduler_start(self, scheduler: Any) -> None:
        """Called on the scheduler rank once the scheduler is running."""

    async def on_worker_start(self, worker: Any) -> None:
        """Called on a worker rank once the worker is running."""

    # ------------------------------------------------------------------ lifecycle

    async def _run_scheduler(self) -> None:
        from distributed import Scheduler

        await self.before_scheduler_start()
        async with Scheduler(**self.scheduler_options) as scheduler:
            await self.set_scheduler_address(scheduler)
            await self.on_scheduler_start(scheduler)
            await scheduler.finished()

    async def _run_worker(self) -> None:
        worker_class = self.worker_class
        if isinstance(worker_class, str):
            worker_class = import_term(worker_class)
        await self.before_worker_start()
        options = dict(self.worker_options)
        name = await self.get_worker_name()
        if name is not None:
            options.setdefault("name", name)
        if "scheduler_file" not in options:
            options.setdefault("scheduler_ip", await self.get_scheduler_address())
        async with worker_class(**options) as worker:
            await self.on_worker_start(worker)
            await worker.finished()

    async def _start(self) -> BaseRunner:
        self.role = await self.get_role()
        if self.role == Role.scheduler:
            await self._run_scheduler()
        elif self.role == Role.worker:
            await self._run_worker()
        else:
            await self.before_client_start()
            self.scheduler_address = await self.get_scheduler_address()
            self.status = Status.running
        return self

    def _exit_server_process(self) -> None:
        # The scheduler or worker has finished: the client's block is over. The code of the
        # ``with`` block belongs to the client, so this process must not run it.
        sys.exit(0)

    async def _shutdown(self) -> None:
        if self.role == Role.client and self.scheduler_address and self.status == Status.running:
            self.status = Status.closing
            async with rpc(self.scheduler_address) as scheduler:
                try:
                    # Workers closed one by one first, so none sees its scheduler vanish.
                    await scheduler.retire_workers(close_workers=True, stimulus_id="runner-exit")
                    await scheduler.terminate()
                except OSError:
                    pass  # the scheduler is already gone
            self.status = Status.closed

    def __enter__(self) -> BaseRunner:
        if self.asynchronous:
            raise RuntimeError("asynchronous=True: use `async with`, not `with`")
        _run(self._start)
        if self.role != Role.client:
            self._exit_server_process()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        _run(self._shutdown)

    async def __aenter__(self) -> BaseRunner:
        await self._start()
        if self.role != Role.client:
            self._exit_server_process()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._shutdown()

    def __await__(self):
        # Client(runner) awaits its "cluster" once; by then the runner has started.
        async def _self() -> BaseRunner:
            return self

        return _self().__await__()

    def close(self) -> None:
        """Shut the scheduler (and so every worker) down; called when the block exits."""
        _run(self._shutdown)

    def __repr__(self) -> str:
        role = self.role.value if self.role else "unstarted"
        return f"<{type(self).__name__}: {role}, scheduler {self.scheduler_address}>"


class SLURMRunner(BaseRunner):
    """A Dask cluster from the tasks of one ``srun -n N`` launch.

    Rank 0 (``SLURM_PROCID``) runs the scheduler, rank 1 the client (the code inside the
    ``with`` block), ranks 2 to N-1 a worker each, named by their rank. The scheduler writes
    its address to ``scheduler_file``, which every task must be able to read.

    Parameters
    ----------
    scheduler_file : str
        Path of the scheduler file on a filesystem shared by all tasks; ``{job_id}`` is
        replaced by ``SLURM_JOB_ID``. Default ``"scheduler-{job_id}.json"`` (the current
        directory).
    environ : mapping, optional
        Where to read the ``SLURM_*`` variables (default ``os.environ``).
    **kwargs
        Passed to :class:`BaseRunner`: ``scheduler_options``, ``worker_class``,
        ``worker_options``, ``scheduler``, ``client``, ``asynchronous``.

    Raises
    ------
    RuntimeError
        When ``SLURM_PROCID``, ``SLURM_NTASKS`` or ``SLURM_JOB_ID`` is not set (not run by
        ``srun``).
    WorldTooSmallException
        When there are fewer tasks than a scheduler, a client and one worker need.
    """

    def __init__(
        self,
        *args: Any,
        scheduler_file: str = "scheduler-{job_id}.json",
        environ: Mapping[str, str] | None = None,
        **kwargs: Any,
    ):
        environ = os.environ if environ is None else environ
        try:
            self.proc_id = int(environ["SLURM_PROCID"])
            self.world_size = int(environ["SLURM_NTASKS"])
            self.job_id = environ["SLURM_JOB_ID"]
        except KeyError as missing:
            raise RuntimeError(
                f"SLURMRunner must run inside a Slurm job step (srun): {missing.args[0]} is "
                "not set. Launch the script with `srun -n N python script.py` (N >= 3)."
            ) from None
        except ValueError:
            raise RuntimeError(
                "SLURMRunner: SLURM_PROCID and SLURM_NTASKS must be integers, got "
                f"{environ.get('SLURM_PROCID')!r} and {environ.get('SLURM_NTASKS')!r}"
            ) from None
        super().__init__(*args, **kwargs)
        if not isinstance(scheduler_file, str) or not scheduler_file:
            raise ValueError(f"scheduler_file must be a path string, got {scheduler_file!r}")
        self.scheduler_file = scheduler_file.format(job_id=self.job_id)
        needed = int(self.scheduler) + int(self.client) + 1
        if self.world_size < needed:
            roles = ["a scheduler"] * self.scheduler + ["a client"] * self.client
            raise WorldTooSmallException(
                f"SLURMRunner needs at least {needed} tasks ({', '.join([*roles, 'one worker'])})"
                f" but this job step has {self.world_size}: launch with `srun -n {needed}` or "
                "more."
            )
        self.n_workers = self.world_size - int(self.scheduler) - int(self.client)
        self.scheduler_options.setdefault("scheduler_file", self.scheduler_file)
        self.worker_options.setdefault("scheduler_file", self.scheduler_file)

    async def get_role(self) -> Role:
        rank = self.proc_id
        if self.scheduler:
            if rank == 0:
                return Role.scheduler
            rank -= 1
        if self.client and rank == 0:
            return Role.client
        return Role.worker

    async def set_scheduler_address(self, scheduler: Any) -> None:
        # The scheduler writes scheduler_file itself (and removes it when it closes).
        return None

    async def get_scheduler_address(self) -> str:
        started = time.monotonic()
        next_warning = started + 60
        while True:
            try:
                with open(self.scheduler_file, encoding="utf-8") as f:
                    return json.load(f)["address"]
            except (OSError, ValueError, KeyError):
                pass  # not written yet, or half written
            if time.monotonic() > next_warning:
                next_warning += 60
                logger.warning(
                    "Rank %d still waiting for the scheduler file %s after %.0fs: is rank 0 "
                    "running, and is this path on a filesystem every task shares?",
                    self.proc_id,
                    os.path.abspath(self.scheduler_file),
                    time.monotonic() - started,
                )
            await asyncio.sleep(0.2)

    async def get_worker_name(self) -> int:
        return self.proc_id


class AsyncCommWorld:
    """The "processes" of a runner launch played by coroutines of one event loop.

    What ``srun`` and a shared scheduler file give :class:`SLURMRunner`, in memory: each
    :class:`AsyncRunner` sharing this world claims a rank and a role (the scheduler first,
    then the client, then workers, in the order they start), and the scheduler's address is
    handed from the scheduler to the others. For tests of runners and for running a whole
    runner cluster in one process; create it inside the event loop that runs the runners.

    Attributes
    ----------
    roles : dict
        ``{"scheduler": runner or None, "client": runner or None}``: who took each role.
    role_lock : asyncio.Lock
        Held while a runner claims its role.
    scheduler_address : str or None
        The scheduler's address, once it is running.
    scheduler_address_event : asyncio.Event
        Set when ``scheduler_address`` is.
    ranks : int
        Ranks handed out so far.
    """

    def __init__(self) -> None:
        self.roles: dict[str, BaseRunner | None] = {"scheduler": None, "client": None}
        self.role_lock = asyncio.Lock()
        self.scheduler_address: str | None = None
        self.scheduler_address_event = asyncio.Event()
        self.ranks = 0

    async def claim(self, runner: BaseRunner) -> tuple[int, Role]:
        """The next rank, and the first role still free that ``runner`` may take."""
        async with self.role_lock:
            rank, self.ranks = self.ranks, self.ranks + 1
            if runner.scheduler and self.roles["scheduler"] is None:
                self.roles["scheduler"] = runner
                return rank, Role.scheduler
            if runner.client and self.roles["client"] is None:
                self.roles["client"] = runner
                return rank, Role.client
            return rank, Role.worker

    def publish_scheduler_address(self, address: str) -> None:
        """Called by the scheduler's runner once the scheduler listens."""
        self.scheduler_address = address
        self.scheduler_address_event.set()

    async def wait_for_scheduler_address(self) -> str:
        """The scheduler's address, once it is published."""
        await self.scheduler_address_event.wait()
        assert self.scheduler_address is not None  # set before the event
        return self.scheduler_address


class AsyncRunner(BaseRunner):
    """A runner whose ranks are coroutines sharing an :class:`AsyncCommWorld`.

    Start several with ``async with`` in one event loop (``asyncio.gather``); as with
    :class:`SLURMRunner`, the scheduler and worker "ranks" run their server until the
    client's block ends and then raise ``SystemExit(0)`` (a process would end there), so
    each coroutine catches ``SystemExit``; the client runs the block. Workers are named
    after their rank.

    Parameters
    ----------
    commworld : AsyncCommWorld
        The world shared by the runners of one cluster.
    **kwargs
        Passed to :class:`BaseRunner` (``asynchronous`` is always ``True``). The scheduler
        and its dashboard listen on free ports unless ``scheduler_options`` say otherwise.
    """

    def __init__(self, commworld: AsyncCommWorld, *args: Any, **kwargs: Any):
        if not isinstance(commworld, AsyncCommWorld):
            raise ValueError(f"commworld must be an AsyncCommWorld, got {commworld!r}")
        if kwargs.get("asynchronous") is False:
            raise ValueError("AsyncRunner runs in an event loop: use `async with`")
        kwargs["asynchronous"] = True
        super().__init__(*args, **kwargs)
        self.commworld = commworld
        self.rank: int | None = None
        self.scheduler_options.setdefault("port", 0)
        self.scheduler_options.setdefault("dashboard_address", ":0")

    async def get_role(self) -> Role:
        self.rank, role = await self.commworld.claim(self)
        return role

    async def set_scheduler_address(self, scheduler: Any) -> None:
        self.commworld.publish_scheduler_address(scheduler.address)

    async def get_scheduler_address(self) -> str:
        return await self.commworld.wait_for_scheduler_address()

    async def get_worker_name(self) -> int | None:
        return self.rank
