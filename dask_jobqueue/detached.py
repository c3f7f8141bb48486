"""Clusters whose scheduler runs outside the client process, found again by name.

With ``scheduler_in_job=True`` the cluster submits a job of its own running the Dask scheduler
(:mod:`dask_jobqueue.scheduler_job`; with the local backend, a detached local process), and
connects to it through :class:`RemoteScheduler`, a stand-in for the in-process scheduler of a
``SpecCluster``. The cluster keeps a record, ``<record directory>/<name>/record.json``: the
scheduler's address, its job id, the jobs' tag cluster id, the TLS files and the cluster's
keywords. The record directory is per user (mode 0700, files 0600); a record another user
owns, or that others could read or write, is refused.

One process owns a cluster at a time: it holds the lease kept by the scheduler
(:class:`~dask_jobqueue.scheduler_job.Lease`), renews it every
:data:`~dask_jobqueue.scheduler_job.HEARTBEAT_INTERVAL` seconds, and keeps its job table
there. A process attaching while the owner renews is refused; once the owner is gone (its
process is dead on this host, or it has not renewed for
:data:`~dask_jobqueue.scheduler_job.HEARTBEAT_TIMEOUT` seconds) the lease is taken over.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import socket
import stat
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dask.config
from distributed.core import rpc
from distributed.deploy.spec import ProcessInterface

from .scheduler_job import SCHEDULER_FILE

logger = logging.getLogger(__name__)

__all__ = [
    "RECORD_FILE",
    "ClusterRecord",
    "RecordError",
    "RemoteScheduler",
    "check_cluster_name",
    "generated_name",
    "list_records",
    "probe_record",
    "read_record",
    "record_root",
    "remove_record",
]

#: The record's file in the cluster's record directory.
RECORD_FILE = "record.json"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: Seconds to wait for a scheduler's answer when checking that a record is alive.
PROBE_TIMEOUT = 5.0


class RecordError(ValueError):
    """A cluster record that is missing, refused (permissions, owner) or stale."""


def check_cluster_name(name: Any, keyword: str = "cluster_name") -> str:
    """``name`` if it can name a cluster record (letters, digits, ``_.-``, at most 64),
    else ``ValueError`` naming ``keyword``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"{keyword}={name!r}: a cluster name is a letter or digit, then letters, digits, "
            "'_', '.' or '-' (at most 64 characters)"
        )
    return name


def generated_name() -> str:
    """A fresh cluster name, ``dask-<8 hex digits>``."""
    return f"dask-{uuid.uuid4().hex[:8]}"


def record_root(directory: str | os.PathLike[str] | None = None) -> Path:
    """The per-user record directory: ``directory``, else ``jobqueue.record-directory`` in
    the dask config, else ``$XDG_CONFIG_HOME/dask-jobqueue/clusters`` (``~/.config/...``)."""
    if directory is None:
        directory = dask.config.get("jobqueue.record-directory", None)
    if directory is None:
        base = os.environ.get("XDG_CONFIG_HOME") or os.path.join("~", ".config")
        directory = os.path.join(base, "dask-jobqueue", "clusters")
    return Path(os.path.expanduser(os.path.expandvars(str(directory))))


def _check_private(path: Path, directory: bool) -> None:
    """``RecordError`` unless ``path`` is this user's, not a symbolic link, and nobody else
    may read or write it."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise
    kind_ok = stat.S_ISDIR(info.st_mode) if directory else stat.S_ISREG(info.st_mode)
    if not kind_ok:
        what = "directory" if directory else "regular file"
        raise RecordError(f"{path} is not a {what}: refused")
    if info.st_uid != os.getuid():
        raise RecordError(f"{path} belongs to user id {info.st_uid}, not to you: refused")
    if info.st_mode & 0o077:
        raise RecordError(
            f"{path} has mode {stat.S_IMODE(info.st_mode):04o}: other users could read or "
            f"change it, so it is refused (a record is {'0700' if directory else '0600'})"
        )


def ensure_root(root: Path) -> Path:
    """Create the record directory (0700) if needed and check that it is private."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    _check_private(root, directory=True)
    return root


@dataclass
class ClusterRecord:
    """What another process needs to find and attach to a cluster (``record.json``).

    Parameters
    ----------
    name : str
        The cluster's name (``cluster_name``), also its directory's name.
    scheduler : str
        The batch system (``slurm``, ``local``, ...), as in :mod:`dask_jobqueue.registry`.
    spec_name : str
        The ``SpecCluster`` name, prefix of the job names.
    cluster_id : str
        The cluster id in the jobs' tags (8 hex digits).
    address : str
        The scheduler's address.
    dashboard : str or None
        The scheduler's dashboard link.
    scheduler_job_id : str
        The batch job id of the scheduler's job.
    keep_alive : float or None
        Seconds the cluster outlives its owner (None: it ends with its owner).
    settings : dict
        The cluster's keywords (JSON values), used again when attaching.
    tls : dict
        ``ca_file``, ``cert``, ``key`` paths a client connects with (empty: no TLS).
    created : float
        Creation time (seconds since the epoch).
    """

    name: str
    scheduler: str
    spec_name: str
    cluster_id: str
    address: str
    dashboard: str | None = None
    scheduler_job_id: str = ""
    keep_alive: float | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    tls: dict[str, str] = field(default_factory=dict)
    created: float = 0.0
    #: The record's directory (not stored).
    directory: Path | None = None

    def write(self) -> None:
        """Write ``record.json`` (mode 0600, atomically) in :attr:`directory`."""
        assert self.directory is not None
        data = asdict(self)
        data.pop("directory")
        text = json.dumps(data, indent=1, sort_keys=True)
        path = self.directory / RECORD_FILE
        tmp = self.directory / f".{RECORD_FILE}.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)

    @classmethod
    def load(cls, directory: Path) -> ClusterRecord:
        """Read the record in ``directory`` (``RecordError`` if refused or unreadable)."""
        _check_private(directory, directory=True)
        path = directory / RECORD_FILE
        _check_private(path, directory=False)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**data, directory=directory)
        except (ValueError, TypeError) as exc:
            raise RecordError(f"{path} is not a cluster record: {exc}") from None


def read_record(name: str, root: Path) -> ClusterRecord:
    """The record of the cluster ``name`` (``RecordError`` naming it if there is none)."""
    check_cluster_name(name, "name")
    directory = root / name
    if root.exists():
        _check_private(root, directory=True)
    try:
        return ClusterRecord.load(directory)
    except FileNotFoundError:
        raise RecordError(
            f"No cluster named {name!r}: no record {directory / RECORD_FILE} "
            "(dask-jobqueue list shows your clusters)"
        ) from None


def remove_record(directory: Path) -> None:
    """Remove a record directory (with the TLS files kept there)."""
    shutil.rmtree(directory, ignore_errors=True)


def list_records(root: Path) -> list[tuple[str, ClusterRecord | RecordError]]:
    """Every record under ``root``, by name: the record, or why it is refused."""
    if not root.exists():
        return []
    _check_private(root, directory=True)
    found: list[tuple[str, ClusterRecord | RecordError]] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or not _NAME.fullmatch(entry.name):
            continue
        try:
            found.append((entry.name, ClusterRecord.load(entry)))
        except FileNotFoundError:
            found.append((entry.name, RecordError(f"{entry}: no {RECORD_FILE} (starting?)")))
        except RecordError as exc:
            found.append((entry.name, exc))
    return found


def client_security(record: ClusterRecord) -> Any:
    """The ``Security`` a client connects to the record's scheduler with (None: no TLS)."""
    if not record.tls:
        return None
    from distributed.security import Security

    return Security(
        require_encryption=True,
        tls_ca_file=record.tls.get("ca_file"),
        tls_client_cert=record.tls.get("cert"),
        tls_client_key=record.tls.get("key"),
    )


async def scheduler_state(
    address: str, connection_args: dict, timeout: float = PROBE_TIMEOUT
) -> dict:
    """The lease state the scheduler at ``address`` keeps (``OSError`` if unreachable or
    not a scheduler of ours)."""
    async with rpc(address, connection_args=connection_args, timeout=timeout) as comm:
        try:
            state = await asyncio.wait_for(comm.djq_state(), timeout)
        except asyncio.TimeoutError:
            raise OSError(f"no answer from {address} within {timeout:g}s") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise OSError(f"{address} is not the scheduler of a cluster record: {exc}") from None
    if not isinstance(state, dict) or "cluster_id" not in state:
        raise OSError(f"{address} is not the scheduler of a cluster record")
    return state


def probe_record(record: ClusterRecord, timeout: float = PROBE_TIMEOUT) -> dict | None:
    """The state of the record's scheduler if it runs and is this cluster's (the same
    cluster id), else None. Blocking; runs its own event loop in a thread, so it works
    from inside a running loop too."""
    security = client_security(record)
    args = security.get_connection_args("client") if security is not None else {}
    result: list[dict | None] = [None]

    def run() -> None:
        with contextlib.suppress(OSError, ValueError):
            state = asyncio.run(scheduler_state(record.address, args, timeout))
            if state.get("cluster_id") == record.cluster_id:
                result[0] = state

    thread = threading.Thread(target=run, name="dask-jobqueue-probe", daemon=True)
    thread.start()
    thread.join(timeout + 5)
    return result[0]


def owner_gone(owner: dict | None) -> bool:
    """Whether the lease's owner is known to be dead: a process of this host that no
    longer exists (an owner elsewhere is gone only once its lease runs out)."""
    if not owner:
        return True
    if owner.get("host") != socket.gethostname():
        return False
    try:
        pid = int(owner.get("pid", 0))
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    with contextlib.suppress(OSError, IndexError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state == "Z"
    return False


class RemoteScheduler(ProcessInterface):
    """The scheduler of a ``SpecCluster`` that runs elsewhere: ``start`` finds its address
    (``starter``: submits the scheduler's job and waits, or reads a record), ``close``
    leaves it alone (``SpecCluster`` stops it with a ``terminate`` message).

    Parameters
    ----------
    starter : callable
        Coroutine function returning the scheduler's address.
    """

    def __init__(self, starter: Callable[[], Awaitable[str]]):
        self._starter = starter
        super().__init__()

    async def start(self) -> None:
        self.address = await self._starter()
        await super().start()

    async def close(self) -> None:
        await super().close()


def wait_deadline(timeout: float) -> Callable[[], float]:
    """Seconds left until ``timeout`` seconds from now (never below 0)."""
    end = time.monotonic() + timeout
    return lambda: max(0.0, end - time.monotonic())


#: Seconds a cluster without ``keep_alive`` outlives its owner's last renewal if its watchdog
#: could not cancel its jobs (normally the watchdog cancels them within seconds).
NO_KEEP_ALIVE_LEASE = 20.0
#: Seconds the scheduler waits for its first owner before ending itself.
START_GRACE = 120.0


class DetachedControl:
    """The client side of a ``scheduler_in_job`` cluster: starting (or finding) its
    scheduler, holding its lease, keeping its job table there, adopting its jobs.

    Parameters
    ----------
    name : str
        The cluster's name.
    root : Path
        The record directory.
    keep_alive : float or None
        Seconds the cluster outlives its owner.
    attach : ClusterRecord, optional
        The record of the cluster to attach to (else a new cluster is started).
    start_timeout : float
        Seconds to wait for the scheduler's job to start and write its address.
    """

    def __init__(
        self,
        name: str,
        root: Path,
        keep_alive: float | None,
        attach: ClusterRecord | None = None,
        start_timeout: float = 600.0,
    ):
        self.name = name
        self.root = root
        self.keep_alive = keep_alive
        self.attached = attach
        self.start_timeout = start_timeout
        self.directory = root / name
        #: This process' lease token.
        self.token = uuid.uuid4().hex
        self.record: ClusterRecord | None = attach
        #: What the scheduler said when the lease was taken (job table, scheduler job id).
        self.state: dict[str, Any] = {}
        #: Set once another process took the lease: this one must not scale any more.
        self.lost: str | None = None
        self._sent: dict[str, str] = {}
        self._task: asyncio.Task | None = None
        self._comm: Any = None
        self._created_directory = False

    @property
    def lease_seconds(self) -> float:
        """How long the scheduler outlives its owner's last renewal."""
        return self.keep_alive if self.keep_alive is not None else NO_KEEP_ALIVE_LEASE

    def create_directory(self) -> Path:
        """Create this cluster's record directory (before anything is submitted):
        ``ValueError`` if a live cluster has this name; a dead one's record is removed."""
        ensure_root(self.root)
        try:
            self.directory.mkdir(mode=0o700)
        except FileExistsError:
            try:
                old = ClusterRecord.load(self.directory)
            except FileNotFoundError:
                old = None  # a cluster starting now, or one that died starting
            if old is not None and probe_record(old) is not None:
                raise ValueError(
                    f"cluster_name={self.name!r}: a cluster of that name is running (scheduler "
                    f"{old.address}); attach to it, close it, or choose another name"
                ) from None
            if old is None and _recent(self.directory):
                raise ValueError(
                    f"cluster_name={self.name!r}: a cluster of that name is starting "
                    f"({self.directory}); choose another name"
                ) from None
            remove_record(self.directory)
            self.directory.mkdir(mode=0o700)
        self._created_directory = True
        return self.directory

    def check_name_free(self) -> None:
        """``ValueError`` if a live cluster has this name (checked again at the start)."""
        if self.attached is not None:
            return
        try:
            old = ClusterRecord.load(self.directory)
        except FileNotFoundError:
            return
        except RecordError as exc:
            raise ValueError(f"cluster_name={self.name!r}: {exc}") from None
        if probe_record(old) is not None:
            raise ValueError(
                f"cluster_name={self.name!r}: a cluster of that name is running (scheduler "
                f"{old.address}); attach to it, close it, or choose another name"
            )

    def remove_directory(self) -> None:
        """Remove the record if it is this object's (it created the cluster, or attached
        and took the lease): the cluster ended."""
        if self._created_directory or (self.attached is not None and self.state):
            remove_record(self.directory)

    async def take_lease(self, address: str, connection_args: dict, force: bool) -> dict:
        """Take the lease of the scheduler at ``address`` (``RecordError`` if another live
        process holds it)."""
        self._comm = rpc(address, connection_args=connection_args)
        answer = await self._comm.djq_lease(
            token=self.token,
            owner={"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()},
            force=force,
        )
        if not answer.get("ok"):
            owner = answer.get("owner") or {}
            raise RecordError(
                f"Cluster {self.name!r} is owned by process {owner.get('pid')} on "
                f"{owner.get('host')}, which is alive: one process scales a cluster at a "
                "time. Close it there, or attach once that process has ended."
            )
        self.state = answer
        self._sent = {str(k): str(v) for k, v in answer.get("jobs", {}).items()}
        return answer

    def start_heartbeat(self, live_jobs: Callable[[], dict[str, str]]) -> None:
        """Renew the lease and send the job table every few seconds (on the running loop)."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._heartbeat(live_jobs))

    @property
    def ends_at(self) -> float | None:
        """When the scheduler's job reaches its walltime (seconds since the epoch), if known."""
        value = self.state.get("ends_at")
        return float(value) if value is not None else None

    async def _heartbeat(self, live_jobs: Callable[[], dict[str, str]]) -> None:
        from .scheduler_job import HEARTBEAT_INTERVAL

        warned = False
        while self.lost is None:
            try:
                await self.sync(live_jobs())
            except asyncio.CancelledError:
                raise
            except (OSError, asyncio.TimeoutError) as exc:
                logger.warning("Could not renew the lease of cluster %r: %s", self.name, exc)
            if not warned:
                message = walltime_warning(self.name, self.ends_at, time.time())
                if message is not None:
                    logger.warning("%s", message)
                    warned = True
            await asyncio.sleep(HEARTBEAT_INTERVAL)

    async def sync(self, jobs: dict[str, str]) -> None:
        """Renew the lease and send what changed in the job table (``jobs``: id -> name)."""
        if self._comm is None or self.lost is not None:
            return
        add = {k: v for k, v in jobs.items() if self._sent.get(k) != v}
        remove = [k for k in self._sent if k not in jobs]
        if add or remove:
            answer = await self._comm.djq_jobs(token=self.token, add=add, remove=remove)
        else:
            answer = await self._comm.djq_renew(token=self.token)
        if not answer.get("ok"):
            self.lost = (
                f"Cluster {self.name!r}: another process took it over (this one had not "
                "renewed its lease in time); this cluster object no longer scales it"
            )
            logger.error("%s", self.lost)
            return
        self._sent = dict(jobs)

    async def release(self) -> None:
        """Give the lease back without ending the cluster (attaching failed): another
        process may attach at once; this object closes without touching the cluster."""
        self.lost = f"Cluster {self.name!r}: this object let go of it"
        if self._comm is not None:
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                await self._comm.djq_release(token=self.token)

    async def stop(self) -> None:
        """Stop renewing (closing)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._comm is not None:
            await self._comm.close_rpc()
            self._comm = None


#: How long before the scheduler's job reaches its walltime the owner is warned (seconds).
WALLTIME_WARNING = 600.0


def walltime_warning(name: str, ends_at: float | None, now: float) -> str | None:
    """The warning to give when the scheduler's job of cluster ``name`` reaches its walltime
    within :data:`WALLTIME_WARNING` seconds of ``now`` (None: not yet, or no limit known)."""
    if ends_at is None or ends_at - now > WALLTIME_WARNING:
        return None
    left = max(0.0, ends_at - now)
    when = time.strftime("%H:%M:%S", time.localtime(ends_at))
    return (
        f"Cluster {name!r}: the scheduler's job reaches its walltime at {when} (in "
        f"{left / 60:.0f} min). The scheduler cannot move to another job: it ends then, with "
        "its task state, the workers' data and every worker. Save what you need; start a new "
        "cluster for the work after that (a longer scheduler_walltime next time)."
    )


def _recent(path: Path, seconds: float = 60.0) -> bool:
    try:
        return time.time() - path.stat().st_mtime < seconds
    except OSError:
        return False


async def wait_for_scheduler_file(
    directory: Path,
    cluster_id: str,
    timeout: float,
    job_ended: Callable[[], Awaitable[str | None]],
) -> dict:
    """Wait until the scheduler job writes its address into ``directory``; raise
    ``RuntimeError`` if its job ends first (``job_ended()`` says why) or after ``timeout``."""
    left = wait_deadline(timeout)
    path = directory / SCHEDULER_FILE
    last_check = 0.0
    while True:
        if path.exists():
            _check_private(path, directory=False)
            with contextlib.suppress(ValueError):
                data = json.loads(path.read_text(encoding="utf-8"))
                if data.get("cluster_id") == cluster_id and data.get("address"):
                    return data
        if time.monotonic() - last_check > 2.0:
            last_check = time.monotonic()
            reason = await job_ended()
            if reason is not None:
                raise RuntimeError(f"The scheduler's job ended before it started: {reason}")
        if left() <= 0:
            raise RuntimeError(
                f"The scheduler's job did not start within {timeout:g}s (still queued?)"
            )
        await asyncio.sleep(0.2)
