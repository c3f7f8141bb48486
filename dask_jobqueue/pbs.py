"""PBS Pro / OpenPBS / Torque: ``qsub`` / ``qstat`` / ``qdel`` and ``#PBS`` directives."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ._values import GIB, KIB, MIB, ceil_to_unit, check_directive_value
from .core import Job, JobQueueCluster

logger = logging.getLogger(__name__)

__all__ = ["PBSJob", "PBSCluster", "pbs_format_bytes_ceil"]


def pbs_format_bytes_ceil(nbytes: int) -> str:
    """Memory for ``-l mem=``, rounded up: ``GB`` from 10 GiB, ``MB`` from 10 MiB, ``kB``
    from 10 KiB, else ``B`` (PBS reads these units as powers of 1024).

    >>> pbs_format_bytes_ceil(28_000_000_000)
    '27GB'
    """
    return ceil_to_unit(
        int(nbytes), [("GB", GIB, 10 * GIB), ("MB", MIB, 10 * MIB), ("kB", KIB, 10 * KIB)], "B"
    )


class PBSJob(Job):
    """A PBS batch job running Dask workers."""

    config_name = "pbs"
    submit_command = "qsub"
    cancel_command = "qdel"
    directive_prefix = "#PBS"
    walltime_forms = ("hh:mm:ss", "mm:ss", "seconds")

    def __init__(
        self,
        scheduler: str | None = None,
        name: str | None = None,
        queue: str | None = None,
        account: str | None = None,
        project: str | None = None,
        resource_spec: str | None = None,
        walltime: str | None = None,
        config_name: str | None = None,
        **base_kwargs: Any,
    ):
        super().__init__(scheduler=scheduler, name=name, config_name=config_name, **base_kwargs)
        queue = self._option("queue", queue)
        self.queue = None if queue is None else check_directive_value(queue, "queue")
        account = self._renamed("project", project, "account", account) or os.environ.get(
            "PBS_ACCOUNT"
        )
        self.account = None if account is None else check_directive_value(account, "account")
        resource_spec = self._option("resource-spec", resource_spec)
        if resource_spec is None:
            resource_spec = f"select=1:ncpus={self.worker_cores}:mem={pbs_format_bytes_ceil(self.worker_memory)}"
            logger.info("Resource specification for PBS not set, using %s", resource_spec)
        self.resource_spec = check_directive_value(resource_spec, "resource_spec")
        self.walltime = self._walltime(walltime)

    def header_directives(self) -> list[str]:
        lines = [f"-N {self.job_name}"]
        if self.queue is not None:
            lines.append(f"-q {self.queue}")
        if self.account is not None:
            lines.append(f"-A {self.account}")
        lines.append(f"-l {self.resource_spec}")
        if self.walltime is not None:
            lines.append(f"-l walltime={self.walltime}")
        if self.log_directory is not None:
            lines += [f"-e {self.log_directory}/", f"-o {self.log_directory}/"]
        return lines

    def output_files(self, job_id: str) -> list[Path]:
        sequence = job_id.split(".", 1)[0]
        directory = (
            Path(self.log_directory).expanduser() if self.log_directory is not None else Path.cwd()
        )
        return [
            directory / f"{self.job_name}.e{sequence}",
            directory / f"{self.job_name}.o{sequence}",
        ]


class PBSCluster(JobQueueCluster):
    """Launch Dask workers on a PBS (PBS Pro, OpenPBS, Torque) cluster.

    Job keywords (besides the common ones): ``queue``, ``account``, ``resource_spec``
    (default ``select=1:ncpus=<cores>:mem=<memory>``; Torque sites use e.g.
    ``nodes=1:ppn=8,mem=24gb``) and ``walltime``.

    >>> cluster = PBSCluster(cores=24, memory="100GB", queue="regular")  # doctest: +SKIP
    """

    job_cls = PBSJob
