"""PBS Pro / OpenPBS / Torque: the public job and cluster classes (``PBSJob``, ``PBSCluster``).

What PBS is — commands, states, the qstat parsers (JSON and text), flavours, arrays, tags, the
``#PBS`` header table — is in :mod:`dask_jobqueue.dialects.pbs`; this module adds its keywords
and the job name carrying the tag.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from .cluster import JobQueueCluster
from .dialect import ArraySupport
from .dialects.pbs import (  # noqa: F401  (re-exported: the public names of 0.9 and tests)
    DIALECT,
    FLAVOURS,
    JOB_NAME_PATTERN,
    PBS_MAX_JOB_NAME,
    PBS_PATH_REFUSED,
    PBS_PRO,
    PBS_PRO_ARRAYS,
    PBS_REFUSED,
    TORQUE,
    TORQUE_ARRAYS,
    learn_flavour,
    match_job_ids,
    name_with_tag,
    parse_pbs_limits,
    parse_pbs_queue_walltime,
    parse_pbs_tags,
    parse_pbs_version,
    parse_qstat_json,
    parse_qstat_json_step,
    parse_qstat_text,
    parse_qstat_text_step,
    pbs_adopt,
    pbs_array_task_ids,
    pbs_cancel_args,
    pbs_flavour,
    pbs_format_bytes_ceil,
    pbs_job_status,
    pbs_log_path,
    pbs_value,
    qstat_error_is_harmless,
    qstat_failure_is_usable,
    qstat_json_argv,
    qstat_text_argv,
    tag_in_name,
    torque_qstat_argv,
)
from .job import Job
from .layout import GPU_TYPE_REFUSALS, Launcher
from .options import ACCOUNT, QUEUE, RESOURCE_SPEC, WALLTIME
from .tags import safe_host

logger = logging.getLogger(__name__)

__all__ = [
    "PBSJob",
    "PBSCluster",
    "pbs_format_bytes_ceil",
    "parse_qstat_json",
    "parse_qstat_text",
    "pbs_job_status",
    "match_job_ids",
    "qstat_failure_is_usable",
    "qstat_error_is_harmless",
]


#: PBS starts the workers of each node of a job with pbsdsh: one task on the n-th chunk
#: (vnode entry of PBS_NODEFILE; one per chunk with the default mpiprocs=1).
PBS_LAUNCHERS = (
    Launcher("pbsdsh", lambda job: ["pbsdsh", "-n", "{node}", "--"], hosts='cat "$PBS_NODEFILE"'),
)


def _default_resource_spec(values: Mapping[str, Any], owner: type) -> str | None:
    if values.get("cores") is None or values.get("memory") is None:
        return None
    nodes = values.get("nodes") or 1
    spec = f"select={nodes}:ncpus={values['cores']}:mem={pbs_format_bytes_ceil(values['memory'])}"
    if values.get("gpus") is not None:
        spec += f":ngpus={values['gpus']}"
    logger.info("Resource specification for PBS not set, using %s", spec)
    return spec


#: Room kept in a job name for the tag besides the host: ``djq1.`` + 8 hex digits + 3 dots +
#: a serial of up to 9 digits + a pid of up to 7 digits (Linux's pid_max is at most 4194304).
_TAG_ROOM_WITHOUT_HOST = 5 + 8 + 3 + 9 + 7


def check_job_name_for_tag(job_name: str, host: str | None = None) -> None:
    """Refuse a ``job_name`` that cannot carry the tag in a PBS, Torque or Moab job name
    (``<job_name>-<tag>``, the tag ending in ``host``, default: this machine's)."""
    room = (
        PBS_MAX_JOB_NAME - 1 - _TAG_ROOM_WITHOUT_HOST - len(safe_host(host or socket.gethostname()))
    )
    if not re.fullmatch(JOB_NAME_PATTERN, str(job_name)) or len(job_name) > room:
        raise ValueError(
            f"job_name={job_name!r} cannot be used on PBS/Torque/Moab: jobs are named "
            f"<job_name>-<tag> (e.g. dask-worker-djq1.3f9a0c1e.12.4242.login01), so job_name "
            f"must start with a letter, hold only letters, digits and _ . + -, and be at most "
            f"{room} characters long here (job names are limited to {PBS_MAX_JOB_NAME})"
        )


class PBSJob(Job):
    """A PBS batch job running Dask workers."""

    dialect = DIALECT
    gpus_supported = True
    gpu_type_refusal = GPU_TYPE_REFUSALS["pbs"]
    launchers = PBS_LAUNCHERS

    options = (
        QUEUE,
        replace(
            ACCOUNT,
            doc=ACCOUNT.doc + " Default: ``$PBS_ACCOUNT``.",
            default_factory=lambda values, owner: os.environ.get("PBS_ACCOUNT"),
        ),
        replace(
            RESOURCE_SPEC,
            doc=RESOURCE_SPEC.doc + " Default: "
            "``select=1:ncpus=<cores>:mem=<memory>``; Torque sites use e.g. "
            "``nodes=1:ppn=8,mem=24gb``.",
            default_factory=_default_resource_spec,
        ),
        WALLTIME,
    )
    queue: str | None
    account: str | None
    resource_spec: str | None
    walltime: str | None

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        check_job_name_for_tag(self.job_name)
        if (
            self.gpus is not None
            and self.resource_spec is not None
            and not re.search(r"\b(ngpus|gpus)=", self.resource_spec)
        ):
            raise ValueError(
                f"gpus={self.gpus} with resource_spec={self.resource_spec!r}: the resource "
                f"request asks for no GPUs; add ':ngpus={self.gpus}' to its select statement "
                "(Torque: ':gpus=N' in nodes=), or leave resource_spec out"
            )
        if (
            self.nodes > 1
            and self.resource_spec is not None
            and not re.match(rf"select={self.nodes}:", self.resource_spec)
        ):
            raise ValueError(
                f"nodes={self.nodes} with resource_spec={self.resource_spec!r}: a job of "
                f"{self.nodes} nodes asks for {self.nodes} chunks, one per node "
                f"('select={self.nodes}:ncpus=...'), or leave resource_spec out"
            )

    @property
    def batch_job_name(self) -> str:
        """The job's name on the batch system: ``<job_name>-<tag>`` once the engine gave the
        job its tag, ``job_name`` before."""
        return self.job_name if self.tag is None else name_with_tag(self.job_name, self.tag.text())

    def submit_argv(self, script_path: str) -> list[str]:
        argv = super().submit_argv(script_path)
        if self.tag is None:
            return argv
        # after submit_command_extra (the last -N wins), overriding the script's #PBS -N
        return [*argv[:-1], "-N", self.batch_job_name, argv[-1]]

    @classmethod
    def check_log_directory(cls, path: str, keyword: str) -> None:
        pbs_log_path(path)

    def array_support_for(self, facts: dict) -> ArraySupport | None:
        """The arrays of this site's flavour (:func:`~dask_jobqueue.dialects.pbs.pbs_flavour`):
        ``-J`` on PBS Pro / OpenPBS, ``-t`` on Torque; none while the flavour is unknown."""
        flavour = pbs_flavour(facts)
        return flavour.array_support if flavour is not None else None

    def output_files(self, job_id: str) -> list[Path]:
        head = job_id.split(".", 1)[0]
        task = re.fullmatch(r"(\d+)\[(\d+)\]", head)
        # a plain job: NAME.e12; a subjob 12[3].server: OpenPBS writes NAME.e12.3, Torque
        # NAME.e12-3 (its subjobs are also named NAME-3: NAME-3.e12 is looked for too)
        names = [("", head)]
        if task:
            seq, index = task.groups()
            names = [("", f"{seq}.{index}"), ("", f"{seq}-{index}"), (f"-{index}", seq)]
        if self.log_directory is None:  # no -e/-o: in the submission directory
            return [
                Path.cwd() / f"{self.batch_job_name}{suffix}.{kind}{sequence}"
                for kind in "eo"
                for suffix, sequence in names
            ]
        directory = Path(self.log_directory).expanduser()
        # "-e dir/": OpenPBS / PBS Pro write dir/<job id>.ER, Torque dir/NAME.e<seq>
        return [
            path
            for kind, ext in (("e", "ER"), ("o", "OU"))
            for path in [
                directory / f"{job_id}.{ext}",
                *(
                    directory / f"{self.batch_job_name}{suffix}.{kind}{sequence}"
                    for suffix, sequence in names
                ),
            ]
        ]


class PBSCluster(JobQueueCluster):
    """Launch Dask workers on a PBS (PBS Pro, OpenPBS, Torque) cluster.

    >>> cluster = PBSCluster(cores=24, memory="100GB", queue="regular")  # doctest: +SKIP
    """

    job_cls = PBSJob
