"""Slurm: ``sbatch`` / ``squeue`` / ``scancel`` and ``#SBATCH`` directives."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._shell import CommandError, run_command
from ._values import GIB, KIB, MIB, ceil_to_unit, check_directive_value
from .core import Job, JobQueueCluster
from .tracking import JobState, JobStatus

__all__ = ["SLURMJob", "SLURMCluster", "slurm_format_bytes_ceil", "parse_squeue", "parse_sacct"]


def slurm_format_bytes_ceil(nbytes: int) -> str:
    """Memory for ``--mem``, rounded up: whole ``G`` from 1 GiB, ``M`` from 1 MiB, else ``K``.

    >>> slurm_format_bytes_ceil(28_000_000_000)
    '27G'
    """
    return (
        ceil_to_unit(int(nbytes), [("G", GIB, GIB), ("M", MIB, MIB)], "K")
        if nbytes >= KIB
        else "1K"
    )


# Slurm job states (squeue %T / sacct State) in our state model.
_STATES: dict[str, JobState] = {
    "PENDING": JobState.QUEUED,
    "REQUEUED": JobState.QUEUED,
    "REQUEUE_FED": JobState.QUEUED,
    "CONFIGURING": JobState.RUNNING,
    "RUNNING": JobState.RUNNING,
    "COMPLETING": JobState.RUNNING,
    "RESIZING": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,
    "SUSPENDED": JobState.HELD,
    "STOPPED": JobState.HELD,
    "REQUEUE_HOLD": JobState.HELD,
    "RESV_DEL_HOLD": JobState.HELD,
    "COMPLETED": JobState.FINISHED,
    "FAILED": JobState.FAILED,
    "BOOT_FAIL": JobState.FAILED,
    "NODE_FAIL": JobState.FAILED,
    "OUT_OF_MEMORY": JobState.FAILED,
    "SPECIAL_EXIT": JobState.FAILED,
    "CANCELLED": JobState.CANCELLED,
    "REVOKED": JobState.CANCELLED,
    "PREEMPTED": JobState.CANCELLED,
    "TIMEOUT": JobState.TIMED_OUT,
    "DEADLINE": JobState.TIMED_OUT,
}
_HELD_REASONS = ("JobHeldUser", "JobHeldAdmin", "BeginTime")

SQUEUE_FORMAT = "%i|%T|%r"


def _status(native: str, reason: str | None, exit_code: int | None = None) -> JobStatus:
    native = native.strip().split()[0].upper() if native.strip() else "UNKNOWN"
    state = _STATES.get(native, JobState.QUEUED if native == "UNKNOWN" else JobState.RUNNING)
    reason = reason if reason and reason != "None" else None
    if state == JobState.QUEUED and reason in _HELD_REASONS:
        state = JobState.HELD
    return JobStatus(state, reason, exit_code, native)


def parse_squeue(stdout: str) -> dict[str, JobStatus]:
    """Parse ``squeue -h -t all -o '%i|%T|%r'`` output (one ``id|STATE|reason`` per line)."""
    statuses = {}
    for line in stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 2 or not parts[0]:
            continue
        statuses[parts[0]] = _status(parts[1], parts[2] if len(parts) > 2 else None)
    return statuses


def parse_exit_code(text: str) -> int | None:
    """``3:0`` (exit code:signal) -> 3; a signal-only death ``0:9`` -> 128 + 9."""
    code, _, signal = text.strip().partition(":")
    try:
        code_i = int(code)
        signal_i = int(signal or 0)
    except ValueError:
        return None
    return 128 + signal_i if code_i == 0 and signal_i else code_i


def parse_sacct(stdout: str) -> dict[str, JobStatus]:
    """Parse ``sacct -P -n -o JobID,State,ExitCode`` (``sacct -c`` works the same way).

    Job steps (``123.batch``) are skipped; ``CANCELLED by 0`` is read as ``CANCELLED``.
    """
    statuses = {}
    for line in stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 3 or not parts[0] or "." in parts[0]:
            continue
        statuses[parts[0]] = _status(parts[1], None, parse_exit_code(parts[2]))
    return statuses


def parse_scontrol_exit_codes(stdout: str) -> dict[str, int]:
    """Exit codes from ``scontrol -o show job <ids>`` (``JobId=5 ... ExitCode=3:0``)."""
    codes = {}
    for line in stdout.splitlines():
        fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
        if "JobId" in fields and "ExitCode" in fields:
            code = parse_exit_code(fields["ExitCode"])
            if code is not None:
                codes[fields["JobId"]] = code
    return codes


class SLURMJob(Job):
    """A Slurm batch job running Dask workers."""

    config_name = "slurm"
    submit_command = "sbatch"
    cancel_command = "scancel"
    directive_prefix = "#SBATCH"
    walltime_forms = ("minutes", "mm:ss", "hh:mm:ss", "d-hh", "d-hh:mm", "d-hh:mm:ss")

    def __init__(
        self,
        scheduler: str | None = None,
        name: str | None = None,
        queue: str | None = None,
        account: str | None = None,
        project: str | None = None,
        walltime: str | None = None,
        job_cpu: int | None = None,
        job_mem: str | None = None,
        config_name: str | None = None,
        **base_kwargs: Any,
    ):
        super().__init__(scheduler=scheduler, name=name, config_name=config_name, **base_kwargs)
        self.queue = self._optional_directive("queue", queue)
        self.account = self._renamed("project", project, "account", account)
        if self.account is not None:
            check_directive_value(self.account, "account")
        self.walltime = self._walltime(walltime)
        job_cpu = self._option("job-cpu", job_cpu)
        self.job_cpu = None if job_cpu is None else int(job_cpu)
        job_mem = self._option("job-mem", job_mem)
        self.job_mem = None if job_mem is None else check_directive_value(job_mem, "job_mem")

    def _optional_directive(self, key: str, value: Any) -> str | None:
        value = self._option(key, value)
        return None if value is None else check_directive_value(value, key)

    def header_directives(self) -> list[str]:
        lines = [f"-J {self.job_name}"]
        if self.log_directory is not None:
            base = f"{self.log_directory}/{self.job_name}-%J"
            lines += [f"-e {base}.err", f"-o {base}.out"]
        if self.queue is not None:
            lines.append(f"-p {self.queue}")
        if self.account is not None:
            lines.append(f"-A {self.account}")
        lines += ["-n 1", "-N 1", f"--cpus-per-task={self.job_cpu or self.worker_cores}"]
        memory = self.job_mem or slurm_format_bytes_ceil(self.worker_memory)
        lines.append(f"--mem={memory}")
        if self.walltime is not None:
            lines.append(f"-t {self.walltime}")
        return lines

    def status_argv(self, job_ids: Sequence[str]) -> list[str]:
        return ["squeue", "-h", "-t", "all", "-j", ",".join(job_ids), "-o", SQUEUE_FORMAT]

    def parse_status(self, stdout: str, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        return parse_squeue(stdout)

    async def query_status(
        self, job_ids: Sequence[str], jobs: Mapping[str, Job], timeout: float
    ) -> dict[str, JobStatus] | None:
        try:
            result = await run_command(self.status_argv(job_ids), timeout=timeout)
            statuses = parse_squeue(result.stdout)
        except CommandError as exc:
            # squeue refuses the whole list once one id has been purged (after MinJobAge):
            # ask about the user's jobs instead, which lists the others and omits the purged.
            if "Invalid job id" not in exc.stderr:
                raise
            result = await run_command(
                ["squeue", "-h", "-t", "all", "--me", "-o", SQUEUE_FORMAT], timeout=timeout
            )
            statuses = parse_squeue(result.stdout)
            for job_id in job_ids:
                statuses.setdefault(
                    job_id, JobStatus(JobState.LOST, "purged from squeue (Invalid job id)")
                )
        ended = [i for i in job_ids if i in statuses and statuses[i].state == JobState.FAILED]
        if ended:
            # squeue has no exit code: one scontrol call for the jobs that just failed.
            try:
                out = await run_command(["scontrol", "-o", "show", "job", *ended], timeout=timeout)
                for job_id, code in parse_scontrol_exit_codes(out.stdout).items():
                    if job_id in statuses:
                        st = statuses[job_id]
                        statuses[job_id] = JobStatus(st.state, st.reason, code, st.native_state)
            except CommandError:
                pass
        return {i: statuses[i] for i in job_ids if i in statuses}

    def output_files(self, job_id: str) -> list[Path]:
        if self.log_directory is not None:
            base = Path(self.log_directory).expanduser() / f"{self.job_name}-{job_id}"
            return [base.with_name(base.name + ".err"), base.with_name(base.name + ".out")]
        return [Path.cwd() / f"slurm-{job_id}.out"]


class SLURMCluster(JobQueueCluster):
    """Launch Dask workers on a Slurm cluster.

    Job keywords (besides the common ones): ``queue`` (partition), ``account``, ``walltime``,
    ``job_cpu`` and ``job_mem`` (override the CPUs/memory requested from Slurm).

    Examples
    --------
    >>> cluster = SLURMCluster(cores=24, memory="100GB", processes=6, queue="regular")
    >>> cluster.scale(jobs=2)  # doctest: +SKIP
    """

    job_cls = SLURMJob
