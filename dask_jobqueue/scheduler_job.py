"""The Dask scheduler of a ``scheduler_in_job=True`` cluster, run outside the client process.

Started as ``python -m dask_jobqueue.scheduler_job --record DIR --cluster-id ID ...`` inside a
batch job of its own (or, with the local backend, a detached local process). It starts a
``distributed.Scheduler``, writes its address to ``DIR/scheduler.json`` (mode 0600) and holds
the cluster's :class:`Lease`: the process owning the cluster renews it every few seconds
through the scheduler (``djq_lease``) and keeps its job table there (``djq_jobs``), so that
another process can attach and adopt the jobs. When nobody renewed the lease for
``keep_alive`` seconds, the scheduler closes (its workers close with it, queued worker jobs
find no scheduler and exit) and this process ends: no job is cancelled from here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Lease", "SCHEDULER_FILE", "HEARTBEAT_INTERVAL", "HEARTBEAT_TIMEOUT", "main"]

logger = logging.getLogger("dask_jobqueue.scheduler_job")

#: File of the record directory where the scheduler writes its address.
SCHEDULER_FILE = "scheduler.json"
#: Seconds between two renewals of the lease by its owner.
HEARTBEAT_INTERVAL = 2.0
#: Seconds without renewal after which the owner is taken for gone (another process may
#: take the lease over).
HEARTBEAT_TIMEOUT = 15.0


@dataclass
class Lease:
    """Who owns a detached cluster (scales it) and until when the cluster lives.

    Parameters
    ----------
    cluster_id : str
        The cluster id in its jobs' tags; attaching checks it, so a stale record never
        reaches another cluster's scheduler.
    keep_alive : float
        Seconds the cluster outlives its owner's last renewal.
    start_grace : float
        Seconds the first owner has to take the lease after the scheduler started.
    clock : callable
        Monotonic time, replaceable in tests.
    """

    cluster_id: str
    keep_alive: float
    start_grace: float = 600.0
    clock: Callable[[], float] = time.monotonic
    #: The owner: ``{"token", "pid", "host"}``, or None before the first one.
    owner: dict[str, Any] | None = None
    #: Batch job id -> job (worker) name of the cluster's worker jobs.
    jobs: dict[str, str] = field(default_factory=dict)
    #: Batch job id of the scheduler's own job (``""``: not known).
    scheduler_job_id: str = ""
    #: When the scheduler's job reaches its walltime (seconds since the epoch; None: no limit
    #: known). The scheduler and every worker end then.
    ends_at: float | None = None
    _renewed: float | None = None
    _started: float = 0.0

    def __post_init__(self) -> None:
        self._started = self.clock()

    def owner_alive(self) -> bool:
        """Whether an owner holds the lease and renewed within :data:`HEARTBEAT_TIMEOUT`
        seconds."""
        return (
            self.owner is not None
            and self.owner.get("token") is not None
            and self._renewed is not None
            and self.clock() - self._renewed <= HEARTBEAT_TIMEOUT
        )

    def acquire(self, token: str, owner: dict[str, Any], force: bool = False) -> bool:
        """Take or renew the lease for ``token``; False if another live owner holds it
        (``force``: the caller knows that owner is dead, e.g. its process is gone)."""
        if self.owner is not None and self.owner.get("token") != token:
            if self.owner_alive() and not force:
                return False
        self.owner = {**owner, "token": token}
        self._renewed = self.clock()
        return True

    def renew(self, token: str) -> bool:
        """Renew for the current owner ``token``; False if it is not the owner any more."""
        if self.owner is None or self.owner.get("token") != token:
            return False
        self._renewed = self.clock()
        return True

    def release(self, token: str) -> None:
        """The owner ``token`` lets go: anyone may take the lease now (the cluster stays
        until ``keep_alive`` runs out from the last renewal)."""
        if self.owner is not None and self.owner.get("token") == token:
            self.owner = {**self.owner, "token": None, "released": True}

    def expired(self) -> bool:
        """Whether the cluster should end: nobody renewed for ``keep_alive`` seconds (or no
        owner came within ``start_grace`` of the start)."""
        now = self.clock()
        if self._renewed is None:
            return now - self._started > self.start_grace
        return now - self._renewed > self.keep_alive

    def update_jobs(self, token: str, add: dict[str, str], remove: Sequence[str]) -> bool:
        """The owner ``token`` submitted ``add`` (id -> name) and saw ``remove`` end."""
        if self.owner is None or self.owner.get("token") != token:
            return False
        self.jobs.update({str(k): str(v) for k, v in add.items()})
        for job_id in remove:
            self.jobs.pop(str(job_id), None)
        return True

    def state(self) -> dict[str, Any]:
        """What an attaching process learns (the owner's token left out)."""
        owner = None
        if self.owner is not None:
            owner = {k: v for k, v in self.owner.items() if k != "token"}
        return {
            "cluster_id": self.cluster_id,
            "keep_alive": self.keep_alive,
            "owner": owner,
            "owner_alive": self.owner_alive(),
            "jobs": dict(self.jobs),
            "scheduler_job_id": self.scheduler_job_id,
            "ends_at": self.ends_at,
        }


def install_handlers(scheduler: Any, lease: Lease) -> None:
    """Give ``scheduler`` the handlers through which owners hold ``lease``."""

    def djq_lease(token: str, owner: dict | None = None, force: bool = False) -> dict:
        ok = lease.acquire(str(token), dict(owner or {}), bool(force))
        return {"ok": ok, **lease.state()}

    def djq_renew(token: str) -> dict:
        return {"ok": lease.renew(str(token))}

    def djq_release(token: str) -> dict:
        lease.release(str(token))
        return {"ok": True}

    def djq_jobs(token: str, add: dict | None = None, remove: list | None = None) -> dict:
        return {"ok": lease.update_jobs(str(token), dict(add or {}), list(remove or []))}

    def djq_state() -> dict:
        return {**lease.state(), "workers": len(scheduler.workers)}

    scheduler.handlers.update(
        {
            "djq_lease": djq_lease,
            "djq_renew": djq_renew,
            "djq_release": djq_release,
            "djq_jobs": djq_jobs,
            "djq_state": djq_state,
        }
    )


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dask_jobqueue.scheduler_job")
    parser.add_argument("--record", required=True, help="the cluster's record directory")
    parser.add_argument("--cluster-id", required=True)
    parser.add_argument("--keep-alive", type=float, required=True, help="seconds")
    parser.add_argument("--start-grace", type=float, default=600.0, help="seconds")
    parser.add_argument(
        "--walltime", type=float, default=None, help="seconds this job may run (for ends_at)"
    )
    parser.add_argument("--protocol", default=None)
    parser.add_argument("--host", default=None)
    parser.add_argument("--interface", default=None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--dashboard-address", default=":0")
    parser.add_argument("--tls-ca-file", default=None)
    parser.add_argument("--tls-cert", default=None)
    parser.add_argument("--tls-key", default=None)
    return parser


async def _run(args: argparse.Namespace) -> int:
    from distributed import Scheduler
    from distributed.security import Security

    security = None
    if args.tls_ca_file:
        security = Security(
            require_encryption=True,
            tls_ca_file=args.tls_ca_file,
            tls_scheduler_cert=args.tls_cert,
            tls_scheduler_key=args.tls_key,
        )
    lease = Lease(args.cluster_id, args.keep_alive, start_grace=args.start_grace)
    lease.scheduler_job_id = _own_job_id()
    if args.walltime:
        lease.ends_at = time.time() + args.walltime
    options: dict[str, Any] = {"port": args.port, "dashboard_address": args.dashboard_address}
    for key in ("protocol", "host", "interface"):
        if getattr(args, key):
            options[key] = getattr(args, key)
    if security is not None:
        options["security"] = security
    scheduler = Scheduler(**options)
    install_handlers(scheduler, lease)
    await scheduler
    dashboard = None
    with contextlib.suppress(KeyError, AttributeError):
        port = scheduler.http_server.port
        host = args.host or socket.gethostname()
        dashboard = f"http://{host}:{port}/status"
    record = Path(args.record)
    _write_private(
        record / SCHEDULER_FILE,
        json.dumps(
            {
                "address": scheduler.address,
                "dashboard": dashboard,
                "cluster_id": args.cluster_id,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "job_id": lease.scheduler_job_id,
            }
        ),
    )
    logger.info("Scheduler at %s (record %s)", scheduler.address, record)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    finished = asyncio.ensure_future(scheduler.finished())
    while not finished.done() and not stop.is_set():
        if lease.expired():
            print(
                f"dask-jobqueue: nobody renewed the lease of cluster {args.cluster_id} for "
                f"{lease.keep_alive:g} s: closing the scheduler",
                file=sys.stderr,
                flush=True,
            )
            break
        await asyncio.wait([finished], timeout=1.0)
    if not finished.done():
        # close_workers: the workers stop now rather than retry a scheduler that is gone
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await asyncio.wait_for(scheduler.close(), 30)
    return 0


def _own_job_id() -> str:
    """This process' batch job id, from the environment the batch system sets (``""``
    when there is none, as with the local backend)."""
    for variable in ("SLURM_JOB_ID", "PBS_JOBID", "JOB_ID", "LSB_JOBID", "OAR_JOB_ID"):
        value = os.environ.get(variable)
        if value:
            return value
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the scheduler until its lease expires or it is told to stop."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
