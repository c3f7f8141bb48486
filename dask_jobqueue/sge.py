"""Grid Engine: the public job and cluster classes (``SGEJob``, ``SGECluster``).

What Grid Engine is — commands, states, the qstat/qacct parsers, arrays, tags, the ``#$``
header table — is in :mod:`dask_jobqueue.dialects.sge`; this module adds its keywords.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

from ._values import parse_walltime
from .cluster import JobQueueCluster
from .dialects.sge import (  # noqa: F401  (re-exported: the public names of 0.9 and tests)
    DIALECT,
    QACCT_CLOCK_MARGIN,
    SGE_ARRAYS,
    SGE_PATH_REFUSED,
    SGE_REFUSED,
    expand_sge_tasks,
    parse_qacct,
    parse_qacct_records,
    parse_qacct_step,
    parse_qstat_j_step,
    parse_qstat_step,
    parse_qstat_xml,
    parse_qstat_xml_j,
    parse_sge_limits,
    parse_sge_queue_h_rt,
    parse_sge_tags,
    qacct_argv,
    qacct_groups,
    qacct_listing_argv,
    qacct_status,
    qstat_argv,
    qstat_j_argv,
    qsub_value,
    sge_array_task_ids,
    sge_cancel_args,
    sge_log_path,
    sge_state,
    waiting_ids,
)
from .job import Job
from .layout import GPU_TYPE_REFUSALS, Launcher
from .options import PROJECT, QUEUE, RESOURCE_SPEC, WALLTIME, WORD, Option

__all__ = [
    "SGEJob",
    "SGECluster",
    "parse_qstat_xml",
    "parse_qstat_xml_j",
    "parse_qacct",
    "parse_qacct_records",
    "qacct_status",
    "sge_state",
    "expand_sge_tasks",
    "parse_sge_limits",
    "sge_array_task_ids",
    "sge_cancel_args",
]


def _sge_walltime(value: Any, keyword: str, owner: type) -> str:
    """``HH:MM:SS`` or seconds as given (what ``h_rt`` takes); two fields, which Grid Engine
    refuses (``attribute "h_rt" is not a time value``), are read as ``MM:SS`` like Slurm and
    PBS read them and written as ``HH:MM:SS``, with a warning."""
    check = WALLTIME.check
    assert check is not None
    try:
        return check(value, keyword, owner)
    except ValueError as refused:
        if not isinstance(value, str):
            raise
        try:
            seconds = parse_walltime(value, ("mm:ss",), keyword)
        except ValueError:
            raise ValueError(f"{refused}, or MM:SS (converted)") from None
    if seconds == 0:
        raise ValueError(f"{keyword}={value!r} is zero: a job needs some time to run")
    hours, rest = divmod(seconds, 3600)
    written = f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
    warnings.warn(
        f"{keyword}={value!r} is read as MM:SS ({seconds} seconds), as Slurm and PBS read "
        f"two fields; Grid Engine takes HH:MM:SS or seconds, so the jobs ask for "
        f"h_rt={written}. Write '{value}:00' if you meant hours and minutes.",
        UserWarning,
        stacklevel=5,
    )
    return written


#: Grid Engine starts the workers of each host of a parallel job with qrsh -inherit, which
#: hands its command line to the user's login shell on that host (as rsh does); PE_HOSTFILE
#: lists each host once, its name first.
SGE_LAUNCHERS = (
    Launcher(
        "qrsh",
        lambda job: ["qrsh", "-inherit", "-nostdin", "{host}"],
        hosts="awk '{print $1}' \"$PE_HOSTFILE\"",
        remote_shell=True,
    ),
)


class SGEJob(Job):
    """A Grid Engine batch job running Dask workers."""

    dialect = DIALECT
    gpus_supported = True
    gpu_type_refusal = GPU_TYPE_REFUSALS["sge"]
    launchers = SGE_LAUNCHERS

    options = (
        QUEUE,
        PROJECT,
        replace(
            RESOURCE_SPEC,
            doc=RESOURCE_SPEC.doc + " Grid Engine gets no memory request "
            "unless you give one here, e.g. ``'h_vmem=4G,mem_req=4G'``.",
        ),
        replace(
            WALLTIME,
            doc="Time limit of each job (``-l h_rt``): ``'HH:MM:SS'`` or seconds; ``'MM:SS'`` "
            "is converted to ``HH:MM:SS`` with a warning (Grid Engine refuses two fields). "
            + WALLTIME.doc.split(". ", 1)[1],
            check=_sge_walltime,
        ),
        Option(
            "gpu_resource_name",
            "str",
            "The site's consumable complex counting GPUs, requested as ``-l <name>=<gpus>`` "
            "with ``gpus``; with ``nodes`` > 1 Grid Engine books it per slot, so ``-l <name>=1`` "
            "and ``gpus`` must equal ``cores``.",
            default="gpu",
            check=WORD,
        ),
        Option(
            "parallel_environment",
            "str",
            "The site's parallel environment for jobs of several ``nodes`` (``-pe <name> "
            "<cores × nodes>``): tightly integrated (``control_slaves TRUE``, so "
            "``qrsh -inherit`` works) and giving ``cores`` slots per host (``allocation_rule`` "
            "``cores``). Required with ``nodes`` > 1.",
            check=WORD,
        ),
    )
    queue: str | None
    project: str | None
    resource_spec: str | None
    walltime: str | None
    gpu_resource_name: str
    parallel_environment: str | None

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.nodes > 1 and self.parallel_environment is None:
            raise ValueError(
                f"nodes={self.nodes} needs parallel_environment=: the name of the site's "
                "tightly integrated parallel environment (qrsh -inherit) giving cores slots "
                "per host"
            )
        if self.nodes > 1 and self.gpus is not None and self.gpus != self.worker_cores:
            raise ValueError(
                f"gpus={self.gpus} with nodes={self.nodes} and cores={self.worker_cores}: Grid "
                "Engine books the GPU complex per slot of a parallel job (cores slots per "
                f"host), so gpus per node must equal cores; set cores={self.gpus}"
            )
        self._submit_cwd = Path.cwd()

    @classmethod
    def check_log_directory(cls, path: str, keyword: str) -> None:
        sge_log_path(path)

    def output_files(self, job_id: str) -> list[Path]:
        directory = (
            Path(self.log_directory).expanduser()
            if self.log_directory is not None
            else self._submit_cwd
        )
        return [directory / f"{self.job_name}.o{job_id}", directory / f"{self.job_name}.e{job_id}"]


class SGECluster(JobQueueCluster):
    """Launch Dask workers on a Grid Engine cluster (SGE, UGE, OGE).

    >>> cluster = SGECluster(cores=8, memory="32GB", resource_spec="h_vmem=4G")  # doctest: +SKIP
    """

    job_cls = SGEJob
