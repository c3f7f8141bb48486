"""Slurm: the public job and cluster classes (``SLURMJob``, ``SLURMCluster``).

What Slurm is — commands, states, parsers, arrays, tags, the ``#SBATCH`` header table — is
in :mod:`dask_jobqueue.dialects.slurm`; this module adds Slurm's own keywords.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ._values import check_word
from .cluster import JobQueueCluster
from .dialects.slurm import (  # noqa: F401  (re-exported: the public names of 0.9 and tests)
    DIALECT,
    SLURM_ARRAYS,
    SLURM_LAUNCHERS,
    SLURM_PATH_REFUSED,
    decode_wait_status,
    parse_sacct,
    parse_scontrol_partitions,
    parse_slurm_limits,
    parse_slurm_tags,
    parse_squeue,
    sbatch_value,
    slurm_array_task_ids,
    slurm_cancel_args,
    slurm_format_bytes_ceil,
    slurm_log_file,
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


JOB_CPU = Option(
    "job_cpu",
    "int",
    "CPUs requested from Slurm (``--cpus-per-task``). Default: ``cores``.",
    check=POSITIVE_INT,
)
JOB_MEM = Option(
    "job_mem",
    "str",
    "Memory requested from Slurm (``--mem``), e.g. ``'24G'``. Default: ``memory`` rounded up.",
    check=_slurm_mem,
)


class SLURMJob(Job):
    """A Slurm batch job running Dask workers."""

    dialect = DIALECT
    gpus_supported = True
    gpu_type_refusal = None
    launchers = SLURM_LAUNCHERS
    options = (QUEUE, ACCOUNT, WALLTIME, JOB_CPU, JOB_MEM)
    queue: str | None
    account: str | None
    walltime: str | None
    job_cpu: int | None
    job_mem: str | None

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.mem_per_gpu is not None and self.job_mem is not None:
            raise ValueError(
                f"job_mem={self.job_mem!r} together with mem_per_gpu: sbatch refuses --mem "
                "next to --mem-per-gpu; give one of them"
            )

    @classmethod
    def check_log_directory(cls, path: str, keyword: str) -> None:
        slurm_log_file(path, "dask-worker", "out")

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
