"""Detached per-job runner: waits for free slots, runs the job, records the end.

One runner process is started (in its own session) for every submitted job,
so the submit command returns at once like the real tools.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import subprocess
import time
from typing import IO, Any

from .common import killpg
from .store import DONE, EXITING, HELD, JOB_MARKER, QUEUED, RUNNING, Job, Store


def _pending_reason(store: Store, job: Job) -> tuple[bool, dict[str, Any] | None]:
    """Decide whether ``job`` may start now (FIFO over jobs that fit at all)."""
    total = int(store.config.get("slots", 4))
    jobs = store.all_jobs()
    used = sum(j["cores"] for j in jobs if j["state"] in (RUNNING, EXITING))
    free = total - used
    reason = {"requested": job["cores"], "available": max(free, 0), "total": total}
    if job["cores"] > total:
        return False, {"kind": "never", **reason}
    order = (job["seq"], job.get("proc", 0))
    for other in jobs:
        if (other["seq"], other.get("proc", 0)) >= order:
            break
        if other["state"] == QUEUED and other["cores"] <= total:
            return False, {"kind": "fifo", **reason}
    if free >= job["cores"]:
        return True, None
    return False, {"kind": "resources", **reason}


def _wait_until_started(store: Store, key: str, poll: float) -> Job | None:
    while True:
        with store.lock():
            job = store.load_job(key)
            if job is None or job["state"] == DONE:
                return None
            if job["state"] == QUEUED:
                ok, reason = _pending_reason(store, job)
                if ok:
                    job.update(
                        state=RUNNING,
                        pend_reason=None,
                        start_time=time.time(),
                        state_time=time.time(),
                        returncode=None,
                        term_reason=None,
                        cancel_requested=False,
                        pid=None,
                    )
                    job["num_starts"] += 1
                    store.save_job(job)
                    return job
                if reason != job.get("pend_reason"):
                    job["pend_reason"] = reason
                    store.save_job(job)
        time.sleep(poll)


def _open(path: str | None, mode: str, store: Store, key: str, what: str) -> IO[bytes]:
    if not path:
        return open(os.devnull, "wb")  # noqa: SIM115
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        return open(path, mode + "b")  # noqa: SIM115
    except OSError:
        # Like PBS/LSF: output that cannot be delivered ends up in the spool.
        return open(store.spool / f"{key}.undelivered.{what}", "ab")  # noqa: SIM115


def _prepare(job: Job) -> None:
    for d in job.get("setup_dirs", []):
        os.makedirs(d, exist_ok=True)
    for path, content in job.get("setup_files", {}).items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fh:
            fh.write(content)


def _user_log(job: Job, event: str, **kw: Any) -> None:
    if job.get("flavour") == "htcondor" and job["extra"].get("user_log"):
        from .htcondor import write_user_log

        write_user_log(job, event, **kw)


def _default_signals() -> None:
    """Like the real execution daemons, jobs start with default signal handling: a runner
    started in the background by a non-interactive shell inherits SIGINT/SIGQUIT ignored,
    and a job would then survive ``bkill``'s SIGINT."""
    for sig in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)


def _execute(store: Store, job: Job, poll: float) -> None:
    key = job["key"]
    kill_delay = float(store.config.get("kill_delay", 2.0))
    scale = float(store.config.get("walltime_scale", 1.0))
    _prepare(job)
    out = _open(job.get("stdout"), "a" if job.get("stdout_mode") == "a" else "w", store, key, "out")
    if job.get("stderr") in (None, "join") or job.get("stderr") == job.get("stdout"):
        err = out if job.get("stderr") is not None else _open(None, "w", store, key, "err")
    else:
        err = _open(job["stderr"], "a" if job.get("stderr_mode") == "a" else "w", store, key, "err")
    _user_log(job, "execute")
    rc: int
    term_sent: float | None = None
    try:
        if job.get("die_at_start"):
            err.write((job["die_at_start"]["stderr"].rstrip("\n") + "\n").encode())
            rc = int(job["die_at_start"]["exit_code"])
        else:
            cwd = job["cwd"] if os.path.isdir(job["cwd"]) else os.path.expanduser("~")
            try:
                env = {**job["env"], JOB_MARKER: f"{store.home}:{key}"}
                proc = subprocess.Popen(
                    job["command"],
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                    preexec_fn=_default_signals,
                )
            except OSError as exc:
                err.write(f"{job['command'][0]}: {exc.strerror}\n".encode())
                rc = 127
            else:
                with store.update_job(key) as rec:
                    if rec is not None:
                        rec["pid"] = proc.pid
                        if rec.get("cancel_requested"):
                            killpg(proc.pid, signal.SIGTERM)
                            term_sent = time.time()
                while True:
                    code = proc.poll()
                    if code is not None:
                        rc = code
                        break
                    now = time.time()
                    rec = store.load_job(key) or job
                    if term_sent is None and rec.get("cancel_requested"):
                        # the cancelling command already signalled the process group
                        term_sent = now
                    limit = rec.get("walltime")
                    if (
                        term_sent is None
                        and limit is not None
                        and now - job["start_time"] > limit * scale
                    ):
                        used = math.ceil((now - job["start_time"]) / scale)
                        with store.update_job(key) as rec2:
                            if rec2 is not None:
                                rec2.update(state=EXITING, term_reason="walltime", state_time=now)
                        msg = job["extra"].get("walltime_message")
                        if msg:
                            err.write((msg.format(used=used, limit=limit) + "\n").encode())
                            err.flush()
                        killpg(proc.pid, signal.SIGTERM)
                        term_sent = now
                    if term_sent is not None and now - term_sent > kill_delay:
                        killpg(proc.pid, signal.SIGKILL)
                    time.sleep(poll)
                # Like the real execution daemons: nothing of the job outlives it.
                killpg(proc.pid, signal.SIGKILL)
    finally:
        for fh in {id(out): out, id(err): err}.values():
            with contextlib.suppress(OSError):
                fh.close()
    now = time.time()
    ending: dict[str, Any] = {"returncode": rc, "pid": None, "end_time": now, "state_time": now}
    current = store.load_job(key)
    if current is None:
        return
    if current.get("term_reason") == "walltime" and current.get("walltime_action") == "hold":
        ending.update(
            state=HELD,
            hold_by="system",
            hold_reason=current["extra"].get("walltime_hold_reason", "walltime exceeded"),
        )
    else:
        ending["state"] = DONE
    final = {**current, **ending}
    # LSF appends its report to the output file before the job is shown as ended, so
    # whoever sees DONE also finds the report (writing it afterwards raced with readers).
    if final.get("flavour") == "lsf" and final.get("stdout"):
        from .lsf import job_report

        with contextlib.suppress(OSError), open(final["stdout"], "a") as fh:
            fh.write(job_report(store, final))
    with store.update_job(key) as rec:
        if rec is None:
            return
        rec.update(ending)
        final = dict(rec)
    if final["state"] == HELD:
        _user_log(final, "held", reason=final["hold_reason"])
    elif final.get("term_reason") == "cancelled":
        _user_log(final, "aborted")
    else:
        _user_log(final, "terminated", returncode=rc)
    for d in job.get("cleanup_dirs", []):
        shutil.rmtree(d, ignore_errors=True)


def run(key: str) -> int:
    """Run job ``key`` of the store named by ``$DJQ_EMULATOR_HOME`` to completion."""
    store = Store.from_env()
    poll = float(store.config.get("poll_interval", 0.1))
    with store.update_job(key) as job:
        if job is None:
            return 1
        job["runner_pid"] = os.getpid()
    while True:
        job = _wait_until_started(store, key, poll)
        if job is None:
            return 0
        _execute(store, job, poll)
        rec = store.load_job(key)
        if rec is None or rec["state"] == DONE:
            return 0
