"""Grid Engine (SGE, SoGE, UGE): ``qsub`` / ``qstat`` / ``qdel`` and ``#$`` directives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._values import check_directive_value
from .core import Job, JobQueueCluster

__all__ = ["SGEJob", "SGECluster"]


class SGEJob(Job):
    """A Grid Engine batch job running Dask workers."""

    config_name = "sge"
    submit_command = "qsub"
    cancel_command = "qdel"
    directive_prefix = "#$"
    walltime_forms = ("hh:mm:ss", "seconds")

    def __init__(
        self,
        scheduler: str | None = None,
        name: str | None = None,
        queue: str | None = None,
        project: str | None = None,
        resource_spec: str | None = None,
        walltime: str | None = None,
        config_name: str | None = None,
        **base_kwargs: Any,
    ):
        super().__init__(scheduler=scheduler, name=name, config_name=config_name, **base_kwargs)
        self.queue = self._checked("queue", queue)
        self.project = self._checked("project", project)
        self.resource_spec = self._checked("resource-spec", resource_spec)
        self.walltime = self._walltime(walltime)

    def _checked(self, key: str, value: Any) -> str | None:
        value = self._option(key, value)
        return None if value is None else check_directive_value(value, key.replace("-", "_"))

    def header_directives(self) -> list[str]:
        lines = [f"-N {self.job_name}"]
        if self.queue is not None:
            lines.append(f"-q {self.queue}")
        if self.project is not None:
            lines.append(f"-P {self.project}")
        if self.resource_spec is not None:
            lines.append(f"-l {self.resource_spec}")
        if self.walltime is not None:
            lines.append(f"-l h_rt={self.walltime}")
        if self.log_directory is not None:
            lines += [f"-e {self.log_directory}/", f"-o {self.log_directory}/"]
        lines += ["-cwd", "-j y"]
        return lines

    def output_files(self, job_id: str) -> list[Path]:
        directory = (
            Path(self.log_directory).expanduser() if self.log_directory is not None else Path.cwd()
        )
        return [directory / f"{self.job_name}.o{job_id}", directory / f"{self.job_name}.e{job_id}"]


class SGECluster(JobQueueCluster):
    """Launch Dask workers on a Grid Engine cluster.

    Job keywords (besides the common ones): ``queue``, ``project``, ``resource_spec`` (SGE gets
    no memory request unless you give one here, e.g. ``"h_vmem=4G,mem_req=4G"``) and
    ``walltime`` (``h_rt``).

    >>> cluster = SGECluster(cores=8, memory="32GB", resource_spec="h_vmem=4G")  # doctest: +SKIP
    """

    job_cls = SGEJob
