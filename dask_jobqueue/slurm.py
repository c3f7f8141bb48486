"""Slurm: the public job and cluster classes (``SLURMJob``, ``SLURMCluster``).

What Slurm is — commands, states, parsers, arrays, tags — is in
:mod:`dask_jobqueue.dialects.slurm`; this module adds Slurm's own keywords and the
``#SBATCH`` header of a job script.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ._values import check_word
from .cluster import JobQueueCluster
from .dialects.slurm import (
    DIALECT,
    SLURM_ARRAYS,
    decode_wait_status,
    parse_sacct,
    parse_slurm_limits,
    parse_squeue,
    slurm_array_task_ids,
    slurm_cancel_args,
    slurm_format_bytes_ceil,
)
from .job import Job
from .options import ACCOUNT, POSITIVE_INT, QUEUE, WALLTIME, Option

__all__ = [
    "SLURMJob",
    "SLURMCluster",
    "SLURM_ARRAYS",
    "decode_wait_status",
    "slurm_format_bytes_ceil",
    "parse_squeue",
    "parse_sacct",
    "parse_slurm_limits",
    "slurm_array_task_ids",
    "slurm_cancel_args",
]


def _slurm_mem(value: Any, keyword: str, owner: type) -> str:
    text = check_word(value, keyword)
    if not re.fullmatch(r"\d+[KMGTkmgt]?", text):
        raise ValueError(
            f"{keyword}={value!r} is not a Slurm memory size: use a whole number with an "
            "optional unit K, M, G or T, e.g. '24G' (no unit means megabytes)"
        )
    return text


JOB_CPU = Option("job_cpu", "int", "CPUs requested from Slurm (``--cpus-per-task``). "
                 "Default: ``cores``.", check=POSITIVE_INT)
JOB_MEM = Option("job_mem", "str", "Memory requested from Slurm (``--mem``), e.g. ``'24G'``. "
                 "Default: ``memory`` rounded up.", check=_slurm_mem)


class SLURMJob(Job):
    """A Slurm batch job running Dask workers."""

    dialect = DIALECT
    options = (QUEUE, ACCOUNT, WALLTIME, JOB_CPU, JOB_MEM)

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

    def output_files(self, job_id: str) -> list[Path]:
        if self.log_directory is not None:
            base = Path(self.log_directory).expanduser() / f"{self.job_name}-{job_id}"
            return [base.with_name(base.name + ".err"), base.with_name(base.name + ".out")]
        return [Path.cwd() / f"slurm-{job_id}.out"]


class SLURMCluster(JobQueueCluster):
    """Launch Dask workers on a Slurm cluster.

    Each job is one ``sbatch`` script (``#SBATCH -n 1 -N 1``) running ``processes`` workers.

    Examples
    --------
    >>> cluster = SLURMCluster(cores=24, memory="100GB", processes=6, queue="regular")
    >>> cluster.scale(jobs=2)  # doctest: +SKIP
    """

    job_cls = SLURMJob


# dask-jobqueue 0.9 users import the runner from this module.
from .runner import SLURMRunner, WorldTooSmallException  # noqa: E402,F401
