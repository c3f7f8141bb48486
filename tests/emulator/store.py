"""On-disk state of an emulated batch system.

Everything lives under one directory (``DJQ_EMULATOR_HOME``)::

    config.json     flavour, queues, slots, timings (written by the helpers)
    faults.json     pending fault injections
    counter         last job sequence number
    lock            fcntl lock file serialising every read-modify-write
    jobs/<key>.json one record per job (``key`` is ``12`` or ``7.0``)
    spool/          copies of submitted scripts, node files, scratch dirs
    bin/            generated command launchers

Job files are replaced atomically, so readers never need the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HOME_ENV = "DJQ_EMULATOR_HOME"
#: Marker variable set in every emulated job process (used by ``kill_all``).
JOB_MARKER = "DJQ_EMULATOR_JOB"

DEFAULT_QUEUES: dict[str, list[str]] = {
    "pbs": ["workq"],
    "torque": ["batch"],
    "moab": ["batch"],
    "lsf": ["normal"],
    "htcondor": [],
}

#: Job states shared by every flavour (front ends translate them).
QUEUED = "queued"
HELD = "held"
RUNNING = "running"
EXITING = "exiting"
DONE = "done"
ACTIVE_STATES = (QUEUED, HELD, RUNNING, EXITING)

Job = dict[str, Any]


def default_config(flavour: str) -> dict[str, Any]:
    """Return the default configuration of an emulated ``flavour``."""
    queues = DEFAULT_QUEUES[flavour]
    return {
        "flavour": flavour,
        "slots": 4,
        "queues": list(queues),
        "default_queue": queues[0] if queues else None,
        "server_name": "server",
        "hostname": socket.gethostname().split(".")[0] or "localhost",
        "kill_delay": 2.0,
        "keep_completed": 300.0,
        "poll_interval": 0.1,
        "inherit_env": False,
    }


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class Store:
    """Access to the state directory of one emulated batch system."""

    def __init__(self, home: str | os.PathLike[str]) -> None:
        self.home = Path(home).resolve()
        self.jobs_dir = self.home / "jobs"
        self.spool = self.home / "spool"
        self.bin_dir = self.home / "bin"
        self._lock_depth = 0
        self._lock_fh: Any = None
        self._config: dict[str, Any] | None = None

    @classmethod
    def from_env(cls) -> Store:
        """Open the store named by ``$DJQ_EMULATOR_HOME``."""
        home = os.environ.get(HOME_ENV)
        if not home:
            raise SystemExit(f"{HOME_ENV} is not set: not inside an emulated batch system")
        return cls(home)

    def ensure_dirs(self) -> None:
        """Create the directory layout."""
        for d in (self.home, self.jobs_dir, self.spool, self.bin_dir):
            d.mkdir(parents=True, exist_ok=True)

    # -- locking -----------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the store-wide exclusive lock (re-entrant within a process)."""
        if self._lock_depth == 0:
            self._lock_fh = open(self.home / "lock", "a+")  # noqa: SIM115
            fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_EX)
        self._lock_depth += 1
        try:
            yield
        finally:
            self._lock_depth -= 1
            if self._lock_depth == 0:
                fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_UN)
                self._lock_fh.close()
                self._lock_fh = None

    # -- config ------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        """The configuration (``config.json``), cached per process."""
        if self._config is None:
            path = self.home / "config.json"
            self._config = json.loads(path.read_text()) if path.exists() else {}
        return self._config

    def write_config(self, config: dict[str, Any]) -> None:
        """Replace ``config.json``."""
        self.ensure_dirs()
        _atomic_write(self.home / "config.json", json.dumps(config, indent=2))
        self._config = dict(config)

    # -- ids ---------------------------------------------------------------
    def next_seq(self) -> int:
        """Allocate the next job (or cluster) sequence number."""
        with self.lock():
            path = self.home / "counter"
            current = int(path.read_text().strip() or 0) if path.exists() else 0
            current += 1
            _atomic_write(path, f"{current}\n")
            return current

    # -- jobs --------------------------------------------------------------
    def job_path(self, key: str) -> Path:
        """Path of the record of job ``key``."""
        return self.jobs_dir / f"{key}.json"

    def save_job(self, job: Job) -> None:
        """Write a job record atomically."""
        job["mtime"] = time.time()
        _atomic_write(self.job_path(job["key"]), json.dumps(job, indent=1, sort_keys=True))

    def load_job(self, key: str) -> Job | None:
        """Read one job record, or ``None`` if there is no such job."""
        try:
            return json.loads(self.job_path(key).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def all_jobs(self) -> list[Job]:
        """Every job record, ordered by submission."""
        jobs = []
        if not self.jobs_dir.exists():
            return jobs
        for path in self.jobs_dir.glob("*.json"):
            if path.name.startswith(".tmp-"):
                continue  # a record being written (_atomic_write): its final file counts
            try:
                jobs.append(json.loads(path.read_text()))
            except (FileNotFoundError, json.JSONDecodeError):
                continue
        jobs.sort(key=lambda j: (j["seq"], j.get("proc", 0)))
        return jobs

    @contextlib.contextmanager
    def update_job(self, key: str) -> Iterator[Job | None]:
        """Lock, load job ``key``, yield it for modification, then save it."""
        with self.lock():
            job = self.load_job(key)
            yield job
            if job is not None:
                self.save_job(job)

    # -- faults ------------------------------------------------------------
    def take_fault(self, kind: str) -> dict[str, Any] | None:
        """Consume one occurrence of a pending fault of ``kind`` (atomically).

        Returns the fault parameters, or ``None`` when no such fault is armed.
        A fault with ``count`` < 0 never runs out.
        """
        path = self.home / "faults.json"
        with self.lock():
            if not path.exists():
                return None
            try:
                faults = json.loads(path.read_text())
            except json.JSONDecodeError:
                return None
            for fault in faults:
                if fault.get("kind") != kind or fault.get("count", 1) == 0:
                    continue
                if fault.get("count", 1) > 0:
                    fault["count"] = fault.get("count", 1) - 1
                faults = [f for f in faults if f.get("count", 1) != 0]
                _atomic_write(path, json.dumps(faults, indent=2))
                return dict(fault.get("params", {}))
            return None

    def add_fault(self, kind: str, count: int, params: dict[str, Any]) -> None:
        """Append a fault to ``faults.json``."""
        path = self.home / "faults.json"
        with self.lock():
            faults = json.loads(path.read_text()) if path.exists() else []
            faults.append({"kind": kind, "count": count, "params": params})
            _atomic_write(path, json.dumps(faults, indent=2))

    def clear_faults(self) -> None:
        """Disarm every fault."""
        with self.lock():
            _atomic_write(self.home / "faults.json", "[]")
