"""Helpers shared by the per-flavour front ends."""

from __future__ import annotations

import os
import pwd
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from .store import ACTIVE_STATES, DONE, EXITING, HELD, QUEUED, RUNNING, Job, Store

PACKAGE_DIR = Path(__file__).resolve().parent


class UsageError(Exception):
    """A command-line error: carries the message and the exit code to use."""

    def __init__(self, message: str, code: int = 2, stdout: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.stdout = stdout


def launcher_source(tool: str) -> str:
    """Python source that loads this package by path and runs ``tool``.

    Loading by path (under a private module name) avoids importing the
    ``dask_jobqueue`` package, so every emulated command starts quickly.
    """
    return (
        "import importlib.util, sys\n"
        f"_p = {str(PACKAGE_DIR)!r}\n"
        "_s = importlib.util.spec_from_file_location('_djq_emulator', _p + '/__init__.py',"
        " submodule_search_locations=[_p])\n"
        "_m = importlib.util.module_from_spec(_s)\n"
        "sys.modules['_djq_emulator'] = _m\n"
        "_s.loader.exec_module(_m)\n"
        "from _djq_emulator.cli import main\n"
        f"sys.exit(main({tool!r}, sys.argv[1:]))\n"
    )


def current_user() -> str:
    """Name of the submitting user."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return os.environ.get("USER", "user")


def directive_lines(text: str, prefix: str) -> list[list[str]]:
    """Tokens of every ``prefix`` directive before the first command line.

    Like the real tools, parsing stops at the first line that is neither
    blank nor a comment; the ``#!`` line is skipped.
    """
    result = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("#"):
            break
        if stripped.startswith(prefix) and (
            len(stripped) == len(prefix) or stripped[len(prefix)].isspace()
        ):
            rest = stripped[len(prefix) :]
            try:
                result.append(shlex.split(rest, comments=True))
            except ValueError as exc:
                raise UsageError(f"directive error: {line.strip()}: {exc}") from exc
    return result


def parse_hms(value: str) -> int | None:
    """``[[HH:]MM:]SS`` (fractions allowed) to seconds, or ``None`` if malformed."""
    if not re.fullmatch(r"\d+(:\d+){0,2}(\.\d+)?", value.strip()):
        return None
    parts = value.strip().split(":")
    total = 0.0
    for part in parts:
        total = total * 60 + float(part)
    return int(total)


def hms(seconds: float | None) -> str:
    """Seconds to ``HH:MM:SS``."""
    if seconds is None:
        return "--"
    seconds = max(0, int(seconds))
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40, "p": 2**50}


def parse_size(value: str, default_unit: str = "b") -> int | None:
    """``4GB``/``512mb``/``100`` style sizes to bytes, or ``None`` if malformed."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([bkmgtp]?)(b|w)?", value.strip().lower())
    if not m:
        return None
    number, unit, suffix = m.groups()
    if not unit and not suffix:
        unit = default_unit.lower().rstrip("b")
    factor = _UNITS[unit] * (8 if suffix == "w" else 1)
    return int(float(number) * factor)


def format_time(ts: float | None, fmt: str = "%a %b %d %H:%M:%S %Y") -> str:
    """Format a timestamp with ``time.strftime`` (``--`` when unset)."""
    return time.strftime(fmt, time.localtime(ts)) if ts else "--"


def base_job(
    store: Store,
    *,
    key: str,
    seq: int,
    name: str,
    queue: str | None,
    command: list[str],
    cwd: str,
    env: dict[str, str],
    cores: int,
    walltime: int | None,
    stdout: str | None,
    stderr: str | None,
) -> Job:
    """Build a job record with the fields the runner understands."""
    return {
        "key": key,
        "seq": seq,
        "proc": 0,
        "flavour": store.config.get("flavour"),
        "name": name,
        "queue": queue,
        "owner": current_user(),
        "command": command,
        "cwd": cwd,
        "submit_dir": os.getcwd(),
        "env": env,
        "cores": max(1, cores),
        "mem_bytes": None,
        "walltime": walltime,
        "stdout": stdout,
        "stderr": stderr,
        "stdout_mode": "w",
        "stderr_mode": "w",
        "state": QUEUED,
        "pend_reason": None,
        "hold_reason": None,
        "hold_by": None,
        "submit_time": time.time(),
        "start_time": None,
        "end_time": None,
        "state_time": time.time(),
        "pid": None,
        "runner_pid": None,
        "returncode": None,
        "term_reason": None,
        "cancel_requested": False,
        "die_at_start": None,
        "num_starts": 0,
        "setup_dirs": [],
        "setup_files": {},
        "cleanup_dirs": [],
        "walltime_action": "kill",
        "extra": {},
    }


def apply_submit_faults(store: Store) -> None:
    """Apply ``submit_hang`` and ``submit_fail`` faults (may raise UsageError)."""
    hang = store.take_fault("submit_hang")
    if hang is not None:
        time.sleep(float(hang.get("seconds", 5)))
    fail = store.take_fault("submit_fail")
    if fail is not None:
        raise UsageError(fail.get("stderr", "submission failed"), int(fail.get("exit_code", 1)))


def apply_status_faults(store: Store, default_stderr: str, default_code: int) -> None:
    """Apply a ``status_fail`` fault (raises UsageError when one is armed)."""
    fail = store.take_fault("status_fail")
    if fail is not None:
        raise UsageError(
            fail.get("stderr", default_stderr), int(fail.get("exit_code", default_code))
        )


def apply_cancel_faults(store: Store, default_stderr: str, default_code: int) -> None:
    """Apply a ``cancel_fail`` fault (raises UsageError when one is armed)."""
    fail = store.take_fault("cancel_fail")
    if fail is not None:
        raise UsageError(
            fail.get("stderr", default_stderr), int(fail.get("exit_code", default_code))
        )


def enqueue(store: Store, jobs: list[Job]) -> None:
    """Apply per-job faults, save the records and start a detached runner each."""
    for job in jobs:
        dies = store.take_fault("job_dies_at_start")
        if dies is not None:
            job["die_at_start"] = {
                "exit_code": int(dies.get("exit_code", 1)),
                "stderr": dies.get("stderr", "job died at start (injected fault)"),
            }
        hold = store.take_fault("hold_next")
        if hold is not None:
            job["state"] = HELD
            job["hold_by"] = "system"
            job["hold_reason"] = hold.get("reason", "job held by the system (injected fault)")
        store.save_job(job)
    for job in jobs:
        spawn_runner(store, job["key"])


def spawn_runner(store: Store, key: str) -> None:
    """Start the detached process that will run job ``key``."""
    env = dict(os.environ)
    env["DJQ_EMULATOR_HOME"] = str(store.home)
    subprocess.Popen(
        [sys.executable, "-I", "-c", launcher_source("_runner"), key],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
        env=env,
        cwd="/",
    )


def pid_alive(pid: int | None) -> bool:
    """Whether process ``pid`` exists (zombies count as dead)."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def killpg(pid: int | None, sig: int) -> None:
    """Send ``sig`` to the process group led by ``pid`` (ignore if gone)."""
    if not pid:
        return
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def is_visible(store: Store, job: Job, keep: float | None = None) -> bool:
    """Whether a finished job is still kept by the server."""
    if job["state"] in ACTIVE_STATES:
        return True
    keep = float(store.config.get("keep_completed", 300)) if keep is None else keep
    return (time.time() - (job.get("end_time") or 0)) <= keep


def request_cancel(
    store: Store, key: str, reason: str = "cancelled", sig: int = signal.SIGTERM
) -> str:
    """Cancel job ``key``; returns its state before the cancel (``None`` if unknown).

    Queued/held jobs are finished at once; running jobs get SIGTERM on their
    process group and the runner escalates to SIGKILL after ``kill_delay``.
    """
    with store.update_job(key) as job:
        if job is None:
            return "unknown"
        before = job["state"]
        if before in (QUEUED, HELD):
            job["state"] = DONE
            job["term_reason"] = reason
            job["end_time"] = job["state_time"] = time.time()
        elif before == RUNNING:
            job["state"] = EXITING
            job["cancel_requested"] = True
            job["term_reason"] = reason
            job["state_time"] = time.time()
            killpg(job.get("pid"), sig)
        elif before == EXITING:
            job["cancel_requested"] = True
    return before


def wait_finished(store: Store, key: str, timeout: float | None = None) -> None:
    """Wait (bounded) until job ``key`` has left the running/exiting states."""
    if timeout is None:
        timeout = float(store.config.get("kill_delay", 2.0)) + 3.0
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = store.load_job(key)
        if job is None or job["state"] not in (RUNNING, EXITING):
            return
        time.sleep(0.05)


def release(store: Store, key: str) -> str:
    """Release a held job; returns its state before (``unknown`` if none)."""
    with store.update_job(key) as job:
        if job is None:
            return "unknown"
        before = job["state"]
        if before == HELD:
            job["state"] = QUEUED
            job["hold_reason"] = None
            job["hold_by"] = None
            job["state_time"] = time.time()
    return before


def hold(store: Store, key: str, reason: str = "held by user") -> str:
    """Put a queued job on user hold; returns its state before."""
    with store.update_job(key) as job:
        if job is None:
            return "unknown"
        before = job["state"]
        if before == QUEUED:
            job["state"] = HELD
            job["hold_by"] = "user"
            job["hold_reason"] = reason
            job["state_time"] = time.time()
    return before
