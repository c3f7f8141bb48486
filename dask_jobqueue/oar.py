"""OAR: ``oarsub`` / ``oarstat`` / ``oardel``; ``#OAR`` directives become ``oarsub`` options."""

from __future__ import annotations

import math
import shlex
import warnings
from pathlib import Path
from typing import Any

from ._values import MIB, check_directive_value
from .core import Job, JobQueueCluster

__all__ = ["OARJob", "OARCluster"]


class OARJob(Job):
    """An OAR job running Dask workers.

    OAR runs the job's command on the node, where the login node's temporary files are not
    visible, so the script body is passed to ``oarsub`` inline and the ``#OAR`` header lines
    are turned into ``oarsub`` options.
    """

    config_name = "oar"
    submit_command = "oarsub"
    cancel_command = "oardel"
    directive_prefix = "#OAR"
    job_id_regexp = r"OAR_JOB_ID=(?P<job_id>\d+)"
    walltime_forms = ("hh:mm:ss", "hh:mm", "hours")

    def __init__(
        self,
        scheduler: str | None = None,
        name: str | None = None,
        queue: str | None = None,
        project: str | None = None,
        resource_spec: str | None = None,
        walltime: str | None = None,
        memory_per_core_property_name: str | None = None,
        config_name: str | None = None,
        **base_kwargs: Any,
    ):
        super().__init__(scheduler=scheduler, name=name, config_name=config_name, **base_kwargs)
        self.queue = self._checked("queue", queue)
        self.project = self._checked("project", project)
        self.resource_spec = self._checked("resource-spec", resource_spec) or (
            f"/nodes=1/core={self.worker_cores}"
        )
        self.walltime = self._walltime(walltime)
        self.memory_per_core_property_name = self._checked(
            "memory-per-core-property-name", memory_per_core_property_name
        )
        if self.memory_per_core_property_name is None:
            warnings.warn(
                "OAR does not reserve memory unless you name the resource property holding "
                "the memory per core: set memory_per_core_property_name= (or "
                "'not_applicable' to silence this warning).",
                UserWarning,
                stacklevel=3,
            )

    def _checked(self, key: str, value: Any) -> str | None:
        value = self._option(key, value)
        return None if value is None else check_directive_value(value, key.replace("-", "_"))

    def header_directives(self) -> list[str]:
        lines = [f"-n {self.job_name}"]
        if self.queue is not None:
            lines.append(f"-q {self.queue}")
        if self.project is not None:
            lines.append(f"--project {self.project}")
        # One -l line: several would make a moldable job.
        resources = self.resource_spec
        if self.walltime is not None:
            resources += f",walltime={self.walltime}"
        lines.append(f"-l {resources}")
        if self.log_directory is not None:
            base = f"{self.log_directory}/{self.job_name}.%jobid%"
            lines += [f"-O {base}.out", f"-E {base}.err"]
        return lines

    @property
    def job_header(self) -> str:
        header = super().job_header
        prop = self.memory_per_core_property_name
        if prop is None or prop == "not_applicable":
            return header
        per_core = math.ceil(self.worker_memory / (self.worker_cores * MIB))
        condition = f"{prop}>={per_core}"
        lines = header.splitlines()
        existing = [
            i for i, line in enumerate(lines) if line.startswith(f"{self.directive_prefix} -p ")
        ]
        if existing:
            i = existing[-1]
            old = lines[i][len(f"{self.directive_prefix} -p ") :].strip().strip("'\"")
            lines[i] = f"{self.directive_prefix} -p '{old} AND {condition}'"
        else:
            lines.append(f"{self.directive_prefix} -p {condition}")
        return "\n".join(lines)

    def _body(self) -> str:
        parts = [*self.job_script_prologue, self.worker_command_line(), *self.job_script_epilogue]
        return "\n".join(parts)

    def submit_argv(self, script_path: str) -> list[str]:
        options: list[str] = []
        for line in self.job_header.splitlines():
            if line.startswith(self.directive_prefix):
                options += shlex.split(line[len(self.directive_prefix) :])
        return [
            *self._split(self.submit_command),
            *self.submit_command_extra,
            *options,
            self._body(),
        ]

    def output_files(self, job_id: str) -> list[Path]:
        if self.log_directory is not None:
            base = Path(self.log_directory).expanduser() / f"{self.job_name}.{job_id}"
            return [base.with_name(base.name + ".err"), base.with_name(base.name + ".out")]
        return [Path.cwd() / f"OAR.{job_id}.stderr", Path.cwd() / f"OAR.{job_id}.stdout"]


class OARCluster(JobQueueCluster):
    """Launch Dask workers on an OAR cluster.

    Job keywords (besides the common ones): ``queue``, ``project``, ``resource_spec`` (default
    ``/nodes=1/core=<cores>``), ``walltime`` and ``memory_per_core_property_name``.

    >>> cluster = OARCluster(cores=8, memory="24GB", memory_per_core_property_name="memcore")  # doctest: +SKIP
    """

    job_cls = OARJob
