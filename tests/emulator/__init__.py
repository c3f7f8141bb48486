"""Emulators of the PBS, Torque, Moab, LSF and HTCondor command-line tools.

Tests call :func:`emulated_scheduler` to get an environment (``PATH`` with the
emulated commands first, ``DJQ_EMULATOR_HOME`` naming the state directory) and
run the library against it; jobs really run as local processes.  Always call
:func:`kill_all` (or use the returned environment as a context manager) at
teardown so that no job process survives.  See ``EMULATORS.md``.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from .common import launcher_source, pid_alive
from .store import (
    ACTIVE_STATES,
    DONE,
    EXITING,
    HELD,
    HOME_ENV,
    JOB_MARKER,
    QUEUED,
    RUNNING,
    Store,
    default_config,
)

__all__ = [
    "FLAVOURS",
    "TOOLS",
    "EmulatorEnv",
    "emulated_scheduler",
    "kill_all",
    "list_jobs",
    "inject_fault",
    "clear_faults",
    "FAULT_KINDS",
    "job_record",
    "wait_for_job",
    "surviving_processes",
    "write_bin",
    "Store",
]

FLAVOURS = ("pbs", "torque", "moab", "lsf", "htcondor")
_PBS_TOOLS = ["qsub", "qstat", "qdel", "qhold", "qrls", "qmgr"]
TOOLS: dict[str, list[str]] = {
    "pbs": _PBS_TOOLS,
    "torque": _PBS_TOOLS,
    "moab": ["msub", "showq", "checkjob", "canceljob", "releasehold", *_PBS_TOOLS],
    "lsf": ["bsub", "bjobs", "bkill", "bresume", "bparams"],
    "htcondor": [
        "condor_submit",
        "condor_q",
        "condor_history",
        "condor_rm",
        "condor_release",
        "condor_hold",
        "condor_config_val",
    ],
}
FAULT_KINDS = (
    "submit_fail",
    "submit_hang",
    "status_fail",
    "cancel_fail",
    "job_dies_at_start",
    "hold_next",
    "submit_accept_then_fail",
)


class EmulatorEnv(dict[str, str]):
    """Environment for running the emulated commands; also a context manager.

    Leaving the ``with`` block calls :func:`kill_all` on the home directory.
    """

    home: Path
    flavour: str
    bin_dir: Path

    def __enter__(self) -> EmulatorEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        kill_all(self.home)


def write_bin(home: str | os.PathLike[str], flavour: str) -> Path:
    """(Re)generate ``<home>/bin`` with one launcher per command of ``flavour``."""
    store = Store(home)
    store.ensure_dirs()
    for tool in TOOLS[flavour]:
        path = store.bin_dir / tool
        path.write_text(f"#!{sys.executable} -I\n" + launcher_source(tool))
        path.chmod(0o755)
    return store.bin_dir


def emulated_scheduler(
    flavour: str,
    home_dir: str | os.PathLike[str],
    slots: int = 4,
    queues: list[str] | None = None,
    **config: Any,
) -> EmulatorEnv:
    """Set up an emulated batch system of ``flavour`` in ``home_dir``.

    Writes ``config.json`` (``slots`` cores in total; ``queues``, first one is
    the default; any other key overrides :func:`store.default_config`, e.g.
    ``kill_delay=1.0``, ``keep_completed=60``, ``server_name="server"``,
    ``inherit_env=True``, ``lsf_unit_for_limits="MB"``), creates ``bin/`` and
    returns a copy of ``os.environ`` with ``PATH`` prefixed by that ``bin``
    directory and ``DJQ_EMULATOR_HOME`` set, usable as ``subprocess`` ``env``.
    """
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown flavour {flavour!r}; expected one of {FLAVOURS}")
    store = Store(home_dir)
    cfg = default_config(flavour)
    cfg["slots"] = int(slots)
    if queues is not None:
        cfg["queues"] = list(queues)
        cfg["default_queue"] = queues[0] if queues else None
    cfg.update(config)
    store.write_config(cfg)
    bin_dir = write_bin(store.home, flavour)
    env = EmulatorEnv(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
    env[HOME_ENV] = str(store.home)
    env.home = store.home
    env.flavour = flavour
    env.bin_dir = bin_dir
    return env


def list_jobs(home: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All job records of ``home`` (dicts; ``state`` is queued/held/running/exiting/done)."""
    return Store(home).all_jobs()


def inject_fault(home: str | os.PathLike[str], kind: str, count: int = 1, **params: Any) -> None:
    """Arm a fault for the next ``count`` occurrences (``count=-1``: forever).

    Kinds and parameters: ``submit_fail(stderr, exit_code)``,
    ``submit_hang(seconds)``, ``status_fail(stderr, exit_code)``,
    ``cancel_fail(stderr, exit_code)``, ``job_dies_at_start(exit_code, stderr)``,
    ``hold_next(reason)``, ``submit_accept_then_fail(stderr, exit_code[, seconds])`` (PBS
    family, LSF and HTCondor: the next submission creates its job(s), then fails without
    printing the id).
    """
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
    Store(home).add_fault(kind, count, params)


def clear_faults(home: str | os.PathLike[str]) -> None:
    """Disarm every pending fault."""
    Store(home).clear_faults()


def _marked_pids(home: Path) -> list[int]:
    marker = f"{JOB_MARKER}={home}:".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if any(v.startswith(marker) for v in fh.read().split(b"\0")):
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def kill_all(home: str | os.PathLike[str], timeout: float = 5.0) -> int:
    """Kill every emulated job and runner of ``home``; returns how many jobs were active.

    Queued/held jobs are finished (``term_reason="killed"``), running ones get
    SIGKILL on their process group; any remaining process carrying the job
    marker variable is killed too. Safe to call repeatedly.
    """
    store = Store(home)
    if not store.jobs_dir.exists():
        return 0
    active = 0
    runners: list[int] = []
    with store.lock():
        for job in store.all_jobs():
            if job["state"] not in ACTIVE_STATES:
                continue
            active += 1
            if job.get("runner_pid"):
                runners.append(job["runner_pid"])
            if job["state"] in (QUEUED, HELD):
                job.update(state=DONE, term_reason="killed", end_time=time.time())
            else:
                job.update(cancel_requested=True, term_reason=job.get("term_reason") or "killed")
                if job.get("pid"):
                    try:
                        os.killpg(job["pid"], signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
            store.save_job(job)
    deadline = time.time() + timeout
    while time.time() < deadline and any(pid_alive(p) for p in runners):
        time.sleep(0.05)
    for pid in runners:
        if pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for _ in range(3):
        pids = _marked_pids(store.home)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    with store.lock():
        for job in store.all_jobs():
            if job["state"] in (RUNNING, EXITING):
                job.update(
                    state=DONE,
                    pid=None,
                    end_time=time.time(),
                    term_reason=job.get("term_reason") or "killed",
                )
                store.save_job(job)
    return active


def surviving_processes(home: str | os.PathLike[str]) -> list[int]:
    """PIDs of processes still carrying the job marker of ``home`` (should be empty)."""
    return _marked_pids(Store(home).home)


def job_record(home: str | os.PathLike[str], key: str | int) -> dict[str, Any] | None:
    """The record of job ``key`` (``"12"`` or HTCondor ``"7.0"``), or ``None``."""
    return Store(home).load_job(str(key))


def wait_for_job(
    home: str | os.PathLike[str],
    key: str | int,
    states: tuple[str, ...] = (DONE,),
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Poll until job ``key`` is in one of ``states``; returns its record.

    Raises ``TimeoutError`` otherwise. States: ``queued``, ``held``,
    ``running``, ``exiting``, ``done``.
    """
    deadline = time.time() + timeout
    job = None
    while time.time() < deadline:
        job = job_record(home, key)
        if job is not None and job["state"] in states:
            return job
        time.sleep(0.05)
    raise TimeoutError(f"job {key} not in {states} after {timeout}s (last: {job and job['state']})")
