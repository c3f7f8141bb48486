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
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ._values import check_text
from .cluster import JobQueueCluster
from .job import Job
from .options import JOB_OPTIONS_BY_NAME, PROJECT, QUEUE, RESOURCE_SPEC, WALLTIME
from .tracking import JobState, JobStatus

logger = logging.getLogger(__name__)

__all__ = ["LocalJob", "LocalCluster"]


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
    return text


class LocalJob(Job):
    """A job run as a local subprocess (``bash job.sh``)."""

    config_name = "local"
    submit_command = "bash"
    cancel_command = None

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

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._process: asyncio.subprocess.Process | None = None
        self._output_path: Path | None = None
        self._cancelled = False
        self._private_dir: str | None = None

    def prepare_log_directory(self) -> None:
        super().prepare_log_directory()
        if self.log_directory is not None:
            _private_directory(self.log_directory, "log_directory", type(self))

    async def submit(self, timeout: float | None = None) -> str:
        self.prepare_log_directory()
        directory = self.log_directory
        if directory is None:
            directory = self._private_dir = tempfile.mkdtemp(prefix="dask-jobqueue-local-")
        directory = os.path.expanduser(os.path.expandvars(directory))
        stem = f"{self.job_name}-{self.name}-{time.time_ns()}"
        script_path = Path(directory) / f"{stem}.sh"
        script_path.write_text(self.job_script(), encoding="utf-8")
        self._output_path = Path(directory) / f"{stem}.log"
        with open(self._output_path, "wb") as out:
            self._process = await asyncio.create_subprocess_exec(
                "bash",
                str(script_path),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        self.job_id = str(self._process.pid)
        logger.debug("Started local job %s for worker %s", self.job_id, self.name)
        return self.job_id

    async def query_status(
        self, job_ids: Sequence[str], jobs: Mapping[str, Job], timeout: float
    ) -> dict[str, JobStatus]:
        statuses = {}
        for job_id in job_ids:
            job = jobs.get(job_id)
            process = getattr(job, "_process", None)
            if process is None:
                continue
            code = process.returncode
            if code is None:
                statuses[job_id] = JobStatus(JobState.RUNNING, None, None, "running")
            elif getattr(job, "_cancelled", False):
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

    async def cancel_jobs(self, job_ids: Sequence[str], timeout: float | None = None) -> None:
        pids = [int(i) for i in job_ids]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_group_alive(pid) for pid in pids):
            await asyncio.sleep(0.1)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

    def cancel_jobs_sync(self, job_ids: Iterable[str]) -> None:
        for job_id in job_ids:
            with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
                os.killpg(int(job_id), signal.SIGKILL)

    async def close(self) -> None:
        self._cancelled = True
        if (
            self.job_id is not None
            and self._process is not None
            and self._process.returncode is None
        ):
            await self.cancel_jobs([self.job_id])
        self.mark_closed()

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
