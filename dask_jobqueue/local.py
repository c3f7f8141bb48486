"""A backend whose "jobs" are local processes: runs anywhere, no batch system needed.

Each job is the same bash script a batch system would get, started in its own session so that
cancelling it stops every process it started. The job id is the process id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ._values import check_shared_directory, check_text
from .cluster import JobQueueCluster
from .engine import BatchSystem, PollAnswer
from .job import Job, make_log_directory
from .layout import GPU_TYPE_REFUSALS
from .options import (
    JOB_OPTIONS_BY_NAME,
    PROJECT,
    QUEUE,
    RESOURCE_SPEC,
    WALLTIME,
    check_writable_directory,
)
from .tags import TAG_VARIABLE, JobTag
from .tracking import JobState, JobStatus

logger = logging.getLogger(__name__)

__all__ = ["LocalJob", "LocalCluster"]


class LocalProcesses(BatchSystem):
    """The local backend's engine: each job is ``bash job.sh`` in a session of its own, its
    id the process id; status is the process' exit status; cancel kills the session."""

    def __init__(self, template: Job, **kwargs: Any):
        super().__init__(template, **kwargs)
        self._processes: dict[str, subprocess.Popen] = {}
        self._cancelled: set[str] = set()
        self._adopted: set[str] = set()

    def adopt(self, job_ids: Iterable[str]) -> None:
        ids = [i for i in job_ids if i.isdigit()]
        self._adopted.update(ids)
        super().adopt(ids)

    async def list_tagged(self) -> dict[str, JobTag]:
        """This user's local jobs carrying a tag: session leaders whose environment holds
        ``DASK_JOBQUEUE_TAG`` (read from ``/proc``; processes of other users are not
        readable and not listed)."""
        found: dict[str, JobTag] = {}
        prefix = f"{TAG_VARIABLE}=".encode()
        uid = os.getuid()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.stat(f"/proc/{entry}").st_uid != uid or os.getsid(int(entry)) != int(entry):
                    continue
                with open(f"/proc/{entry}/environ", "rb") as f:
                    environment = f.read().split(b"\0")
            except (OSError, ValueError):
                continue
            for item in environment:
                if item.startswith(prefix):
                    tag = JobTag.parse(item[len(prefix) :].decode(errors="replace"))
                    if tag is not None and _group_alive(int(entry)):
                        found[entry] = tag
        return found

    async def submit(self, job: Job) -> str:
        if not isinstance(job, LocalJob):
            raise TypeError(f"LocalProcesses runs LocalJob instances, not {type(job).__name__}")
        if self._closing:
            raise RuntimeError("the cluster is closing: no more submissions")
        directory = job.log_directory
        if directory is None:
            directory = job._private_dir = tempfile.mkdtemp(prefix="dask-jobqueue-local-")
        directory = os.path.expanduser(os.path.expandvars(directory))
        os.makedirs(directory, exist_ok=True)
        stem = f"{job.job_name}-{job.name}-{time.time_ns()}"
        script_path = Path(directory) / f"{stem}.sh"
        script_path.write_text(job.job_script(), encoding="utf-8")
        job._output_path = Path(directory) / f"{stem}.log"
        self.commands["submit"] += 1
        # the tag, in the environment of the job's session leader: read back from /proc by
        # list_tagged (a cluster attached by name finds its jobs by it)
        job.tag = self.new_tag()
        environment = {**os.environ, TAG_VARIABLE: job.tag.text()}
        with open(job._output_path, "wb") as out:
            process = subprocess.Popen(
                ["bash", str(script_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                env=environment,
            )
        job_id = str(process.pid)
        self._processes[job_id] = process
        with self._lock:
            self._live.add(job_id)
        job.job_id = job_id
        logger.debug("Started local job %s for worker %s", job_id, job.name)
        return job_id

    can_query = True

    async def query(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        self.commands["status"] += 1
        statuses = {}
        for job_id in job_ids:
            process = self._processes.get(job_id)
            if process is None:
                if job_id in self._adopted:
                    # another process' child: no exit status to read, only whether it runs
                    statuses[job_id] = (
                        JobStatus(JobState.RUNNING, None, None, "running")
                        if _group_alive(int(job_id))
                        else JobStatus(JobState.FINISHED, None, None, "gone")
                    )
                continue
            code = process.poll()
            if code is None:
                statuses[job_id] = JobStatus(JobState.RUNNING, None, None, "running")
            elif job_id in self._cancelled:
                statuses[job_id] = JobStatus(JobState.CANCELLED, "cancelled", code, "killed")
            elif code == 0:
                statuses[job_id] = JobStatus(JobState.FINISHED, None, 0, "exited")
            elif code < 0:
                statuses[job_id] = JobStatus(
                    JobState.FAILED, f"killed by signal {-code}", 128 - code, "killed"
                )
            else:
                statuses[job_id] = JobStatus(JobState.FAILED, "non-zero exit code", code, "exited")
        return statuses

    async def poll(self, job_ids: Sequence[str]) -> PollAnswer:
        statuses = await self.query(job_ids)
        # every process this engine started is known: an id it has none for is not ours
        return PollAnswer(statuses, frozenset(i for i in job_ids if i not in statuses))

    async def cancel(self, job_ids: Iterable[str], attempts: int | None = None) -> list[str]:
        pids = []
        for job_id in dict.fromkeys(job_ids):
            self._cancelled.add(job_id)
            with contextlib.suppress(ValueError):
                pids.append(int(job_id))
        self.commands["cancel"] += 1
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_group_alive(pid) for pid in pids):
            await asyncio.sleep(0.1)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        for pid in pids:
            process = self._processes.get(str(pid))
            if process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=1)
        self.release(str(pid) for pid in pids)
        return []

    def cancel_sync(self, job_ids: Iterable[str] | None = None) -> None:
        ids = self.live_ids if job_ids is None else set(job_ids)
        for job_id in ids:
            with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
                os.killpg(int(job_id), signal.SIGKILL)
        self.release(ids)


def _writable_by_others(path: str) -> bool:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return bool(mode & (stat.S_IWGRP | stat.S_IWOTH))


def _private_directory(value: Any, keyword: str, owner: type) -> str:
    text = check_text(value, keyword)
    path = os.path.expanduser(os.path.expandvars(text))
    if _writable_by_others(path):
        raise ValueError(
            f"{keyword}={value!r} can be written by other users: the local backend runs the "
            "job scripts it writes there. Use a directory only you can write to "
            "(chmod go-w), or a new one."
        )
    # and no parent in which anyone could rename it and put another in its place
    check_shared_directory(path, keyword, "the job scripts")
    check_writable_directory(text, keyword, probe=True)
    return text


class LocalJob(Job):
    """A job run as a local subprocess (``bash job.sh``)."""

    config_name = "local"
    submit_command = "bash"
    cancel_command = None
    batch_system_cls = LocalProcesses
    # GPUs of this machine: each worker gets one of 0..gpus-1 (or of CUDA_VISIBLE_DEVICES)
    gpus_supported = True
    gpu_type_refusal = GPU_TYPE_REFUSALS["local"]

    # Accepted for compatibility with batch backends (and checked); a local process has no
    # queue, project or resources. The log directory holds the job scripts, so nobody else
    # may write to it.
    options = (
        QUEUE,
        PROJECT,
        RESOURCE_SPEC,
        WALLTIME,
        replace(
            JOB_OPTIONS_BY_NAME["log_directory"],
            doc="Directory for the job scripts and their output; other users must not be "
            "able to write to it. Default: a private temporary directory.",
            check=_private_directory,
        ),
    )
    queue: str | None
    project: str | None
    resource_spec: str | None
    walltime: str | None

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._output_path: Path | None = None
        self._private_dir: str | None = None

    def prepare_log_directory(self) -> None:
        if self.log_directory is not None:
            make_log_directory(self.log_directory)
            _private_directory(self.log_directory, "log_directory", type(self))

    def mark_closed(self) -> None:
        super().mark_closed()
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)
            self._private_dir = None

    def output_files(self, job_id: str) -> list[Path]:
        return [self._output_path] if self._output_path is not None else []


def _group_alive(pgid: int) -> bool:
    """True while any non-zombie process of the group exists."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        with open(f"/proc/{pgid}/stat") as f:
            leader_state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    # A zombie leader may keep the group "alive" for kill(0); look for live members.
    if leader_state != "Z":
        return True
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


class LocalCluster(JobQueueCluster):
    """Workers in local processes started from the same job script as on a batch system.

    Useful to try a configuration, for tests and demos, and on a workstation.

    >>> cluster = LocalCluster(cores=2, memory="2GB", processes=2)  # doctest: +SKIP
    """

    job_cls = LocalJob
