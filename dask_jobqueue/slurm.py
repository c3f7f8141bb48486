"""Slurm: the public job and cluster classes (``SLURMJob``, ``SLURMCluster``).

What Slurm is — commands, states, parsers, arrays, tags — is in
:mod:`dask_jobqueue.dialects.slurm`; this module adds Slurm's own keywords and the
``#SBATCH`` header of a job script.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._values import check_word, directive_value
from .cluster import JobQueueCluster
from .dialects.slurm import (  # noqa: F401  (re-exported: the public names of 0.9 and tests)
    DIALECT,
    SLURM_ARRAYS,
    decode_wait_status,
    parse_sacct,
    parse_scontrol_partitions,
    parse_slurm_limits,
    parse_slurm_tags,
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


def sbatch_value(
    value: object, keyword: str, refused: Mapping[str, str] | None = None, shown: object = None
) -> str:
    """``value`` as one argument of an ``#SBATCH`` line.

    sbatch reads a double-quoted directive value as one argument, a backslash escaping the
    next character (recorded on Slurm 22.05: ``#SBATCH -o "/t/a -p small -o /t/x.out"`` set
    ``StdOut=/t/a -p small -o /t/x.out`` and left the partition alone; ``\\"`` gave ``"``).
    """
    return directive_value(value, keyword, "Slurm", escaped='\\"', refused=refused, shown=shown)


#: What a Slurm output file name cannot carry, and why.
SLURM_PATH_REFUSED = {
    "\\": "a backslash in a Slurm output file name turns off the %J replacement, so every "
    "job would write the same file",
}


def slurm_log_file(directory: str, job_name: str, suffix: str) -> str:
    """The ``-e``/``-o`` value ``<directory>/<job_name>-%J.<suffix>``, quoted for ``#SBATCH``.
    Slurm reads it as a file-name pattern, where a literal ``%`` is written ``%%``."""
    literal = f"{directory}/{job_name}-".replace("%", "%%")
    return sbatch_value(
        f"{literal}%J.{suffix}", "log_directory", SLURM_PATH_REFUSED, shown=directory
    )


class SLURMJob(Job):
    """A Slurm batch job running Dask workers."""

    dialect = DIALECT
    options = (QUEUE, ACCOUNT, WALLTIME, JOB_CPU, JOB_MEM)
    queue: str | None
    account: str | None
    walltime: str | None
    job_cpu: int | None
    job_mem: str | None

    @classmethod
    def check_log_directory(cls, path: str, keyword: str) -> None:
        slurm_log_file(path, "dask-worker", "out")

    def header_directives(self) -> list[str]:
        # queue, account, job_name, walltime and job_mem are checked words without blanks or
        # quotes; the log paths are the only free text and are quoted
        lines = [f"-J {self.job_name}"]
        if self.log_directory is not None:
            lines += [
                f"-e {slurm_log_file(self.log_directory, self.job_name, 'err')}",
                f"-o {slurm_log_file(self.log_directory, self.job_name, 'out')}",
            ]
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
