"""OAR: the public job and cluster classes (``OARJob``, ``OARCluster``).

What OAR is — commands, states, parsers, arrays, the ``#OAR`` header table — is in
:mod:`dask_jobqueue.dialects.oar`; this module adds OAR's keywords and turns the header into
``oarsub`` options.
"""

from __future__ import annotations

import logging
import os
import shlex
import warnings
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from .cluster import JobQueueCluster
from .dialects.oar import (  # noqa: F401  (re-exported: the public names of 0.9 and tests)
    DIALECT,
    decode_wait_status,
    oar_adopt,
    oar_array_task_ids,
    oar_job_status,
    oar_tag_line,
    oarstat_argv,
    parse_oar_tags,
    parse_oarstat_json,
)
from .job import Job
from .layout import GPU_TYPE_REFUSALS, Launcher
from .options import IDENTIFIER, PROJECT, QUEUE, RESOURCE_SPEC, TEXT, WALLTIME, Option

logger = logging.getLogger(__name__)

__all__ = ["OARJob", "OARCluster", "parse_oarstat_json", "oar_job_status", "decode_wait_status"]


#: OAR starts the workers of each node of a job with oarsh (ssh: the command reaches a
#: remote shell as one string); OAR_NODEFILE lists each host once per core.
OAR_LAUNCHERS = (
    Launcher(
        "oarsh",
        lambda job: ["oarsh", "{host}"],
        hosts="awk '!seen[$0]++' \"$OAR_NODEFILE\"",
        remote_shell=True,
    ),
)


def _default_resources(values: Mapping[str, Any], owner: type) -> str:
    nodes = values.get("nodes") or 1
    if values.get("gpus") is not None:
        # the gpu resource of OAR's host/cpu/core hierarchy (oar_resources_add -g): the
        # GPUs come with their cores
        return f"/nodes={nodes}/gpu={values['gpus']}"
    return f"/nodes={nodes}/core={values.get('cores')}"


class OARJob(Job):
    """An OAR job running Dask workers.

    OAR runs the job's command on the node, where the login node's temporary files are not
    visible, so the script body is passed to ``oarsub`` inline and the ``#OAR`` header lines
    are turned into ``oarsub`` options.
    """

    dialect = DIALECT
    gpus_supported = True
    gpu_type_refusal = GPU_TYPE_REFUSALS["oar"]
    launchers = OAR_LAUNCHERS

    options = (
        QUEUE,
        PROJECT,
        replace(
            RESOURCE_SPEC,
            doc="Resources of the ``-l`` line (walltime is appended), "
            "quoted as one ``oarsub`` argument. Default: ``/nodes=1/core=<cores>``.",
            default_factory=_default_resources,
            check=TEXT,
        ),
        WALLTIME,
        Option(
            "memory_per_core_property_name",
            "str",
            "OAR resource property holding the "
            "memory per core (e.g. ``'memcore'``): adds ``-p <property>>=<MiB per core>``. "
            "``'not_applicable'`` turns the memory request (and its warning) off.",
            check=IDENTIFIER,
        ),
    )
    queue: str | None
    project: str | None
    resource_spec: str
    walltime: str | None
    memory_per_core_property_name: str | None

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.memory_per_core_property_name is None:
            warnings.warn(
                "OAR Job memory reserved resources will not be set according to Dask Worker "
                "memory limit, which can cause crashes. Set memory_per_core_property_name= "
                "to the resource property holding the memory per core, or to "
                "'not_applicable' to silence this warning.",
                UserWarning,
                stacklevel=3,
            )

    def _tag_line(self) -> list[str]:
        # OAR keeps no free field for the tag: it travels in the job's command (oarstat lists
        # the command), on its first line; not exported, so no worker's child inherits it.
        if self.tag is None:
            return []
        return [oar_tag_line(self.tag.text())]

    def _body(self) -> str:
        parts = [
            *self._tag_line(),
            *self.job_script_prologue,
            *filter(None, [self.scheduler_check_line()]),
            self.worker_shell_command(),
            *self.job_script_epilogue,
        ]
        return "\n".join(parts)

    _submit_dir: str | None = None

    def submit_argv(self, script_path: str) -> list[str]:
        self._submit_dir = os.getcwd()  # where OAR writes its default output files
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

    def array_submit_argv(self, script_path: str, script: str) -> list[str]:
        # oarsub runs a command, not the script: the array script's body (the worker-name
        # selection, prologue, workers, epilogue) is that command
        argv = self.submit_argv(script_path)
        body = [
            line
            for line in script.splitlines()[1:]
            if line.strip() and not line.startswith(self.directive_prefix)
        ]
        return [*argv[:-1], "\n".join([*self._tag_line(), *body])]

    def output_files(self, job_id: str) -> list[Path]:
        if self.log_directory is not None:
            base = Path(self.log_directory).expanduser() / f"{self.job_name}.{job_id}"
            return [base.with_name(base.name + ".err"), base.with_name(base.name + ".out")]
        # OAR's default: OAR.<name>.<id>.stderr (OAR.<id>.stderr without -n) in the directory
        # oarsub ran from, which is this process' working directory at submission.
        where = Path(self._submit_dir or os.getcwd())
        return [
            where / f"OAR.{self.job_name}.{job_id}.stderr",
            where / f"OAR.{self.job_name}.{job_id}.stdout",
            where / f"OAR.{job_id}.stderr",
        ]


class OARCluster(JobQueueCluster):
    """Launch Dask workers on an OAR cluster.

    >>> cluster = OARCluster(cores=8, memory="24GB", memory_per_core_property_name="memcore")  # doctest: +SKIP
    """

    job_cls = OARJob
