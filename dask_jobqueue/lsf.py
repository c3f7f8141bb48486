"""IBM Spectrum LSF: the public job and cluster classes (``LSFJob``, ``LSFCluster``).

What LSF is — commands, states, parsers, arrays, the ``#BSUB`` header table — is in
:mod:`dask_jobqueue.dialects.lsf`; this module adds LSF's keywords.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from ._values import check_text
from .cluster import JobQueueCluster
from .dialect import ArraySupport
from .dialects.lsf import (  # noqa: F401  (re-exported: the public names of 0.9 and tests)
    BJOBS_ARRAY_FIELDS,
    BJOBS_FIELDS,
    BKILL_EXIT_CODE,
    DIALECT,
    LSF_ARRAYS,
    LSF_PATH_REFUSED,
    RUNLIMIT_EXIT_CODE,
    bjobs_delimited_argv,
    bjobs_failure_is_usable,
    bjobs_json_argv,
    bsub_value,
    learn_no_json,
    lsf_array_task_ids,
    lsf_cancel_args,
    lsf_detect_units,
    lsf_format_bytes_ceil,
    lsf_log_file,
    lsf_status,
    lsf_unit_letter,
    parse_bjobs,
    parse_bjobs_json,
    parse_bjobs_step,
    parse_lsf_limits,
    parse_lsf_tags,
)
from .job import Job
from .layout import Launcher
from .options import BOOL, POSITIVE_INT, PROJECT, QUEUE, SIZE, WALLTIME, Option

logger = logging.getLogger(__name__)

__all__ = [
    "LSFJob",
    "LSFCluster",
    "lsf_format_bytes_ceil",
    "lsf_detect_units",
    "parse_bjobs_json",
    "parse_bjobs",
    "parse_lsf_limits",
    "lsf_array_task_ids",
    "lsf_cancel_args",
]

#: What a ``#BSUB -P "..."`` project name cannot carry, and why.
LSF_PROJECT_REFUSED = {"\"'\\": LSF_PATH_REFUSED["\"'\\"]}


def _lsf_project(value: Any, keyword: str, owner: type) -> str:
    """A project name, written in double quotes (``-P "Dask On LSF"``): blanks are fine,
    what a quoted ``#BSUB`` value cannot carry is refused."""
    bsub_value(value, keyword, LSF_PROJECT_REFUSED)
    return check_text(value, keyword)


#: LSF starts the workers of each host of a job with blaunch (no shell: the command's words
#: reach it as they are); LSB_MCPU_HOSTS lists "host slots host slots ...".
LSF_LAUNCHERS = (
    Launcher(
        "blaunch",
        lambda job: ["blaunch", "-no-shell", "{host}"],
        hosts="printf '%s\\n' $LSB_MCPU_HOSTS | awk 'NR % 2'",
    ),
)


def _default_ncpus(values: Mapping[str, Any], owner: type) -> int | None:
    logger.info("ncpus specification for LSF not set, using %s", values.get("cores"))
    return values.get("cores")


def _default_mem(values: Mapping[str, Any], owner: type) -> int | None:
    logger.info("mem specification for LSF not set, using %s", values.get("memory"))
    return values.get("memory")


def _units(value: Any, keyword: str, owner: type) -> str:
    return lsf_unit_letter(value) + "b"


class LSFJob(Job):
    """An LSF batch job running Dask workers."""

    dialect = DIALECT
    gpus_supported = True
    gpu_type_refusal = None
    launchers = LSF_LAUNCHERS

    options = (
        QUEUE,
        replace(
            PROJECT,
            doc="Project the jobs are charged to (``-P``), written in double quotes: blanks "
            "are fine, quotes and backslashes are refused.",
            check=_lsf_project,
        ),
        Option(
            "ncpus",
            "int",
            "Slots requested per job (``-n``). Default: ``cores``.",
            default_factory=_default_ncpus,
            check=POSITIVE_INT,
        ),
        Option(
            "mem",
            "int or str",
            "Memory limit per job (``-M``), in bytes or a size such "
            "as ``'24GB'``. Default: ``memory``.",
            default_factory=_default_mem,
            check=SIZE,
        ),
        replace(WALLTIME, doc="Time limit of each job, ``'HH:MM'`` or minutes (``-W``)."),
        Option(
            "lsf_units",
            "str",
            "Unit of LSF memory limits (``LSF_UNIT_FOR_LIMITS``: KB, "
            "MB, GB...). Default: read from ``lsf.conf``.",
            default_factory=lambda values, owner: lsf_detect_units(),
            check=_units,
        ),
        Option(
            "use_stdin",
            "bool",
            "Submit as ``bsub < script`` (the default) instead of ``bsub script``.",
            default=True,
            check=BOOL,
        ),
    )
    queue: str | None
    project: str | None
    ncpus: int
    mem: int
    walltime: str | None
    lsf_units: str
    use_stdin: bool

    @classmethod
    def check_log_directory(cls, path: str, keyword: str) -> None:
        lsf_log_file(path, "dask-worker", "out")

    def submit_argv(self, script_path: str) -> list[str]:
        argv = [*self._split(self.submit_command), *self.submit_command_extra]
        return argv if self.use_stdin else [*argv, script_path]

    def submit_stdin(self, script: str) -> str | None:
        # `bsub < script` without a shell: the script goes to bsub's stdin, stderr is kept.
        return script if self.use_stdin else None

    def array_support_for(self, facts: dict) -> ArraySupport | None:
        """Arrays unless LSF would refuse this job name for one (letters, digits, ``.``,
        ``-``, ``_``; the whole ``-J "name[1-N]"`` within 255 characters) or
        ``submit_command_extra`` names the job itself (a command-line ``-J`` overrides the
        script's): such jobs go one ``bsub`` each, as before."""
        name_ok = re.fullmatch(r"[A-Za-z0-9._-]{1,230}", str(self.job_name)) is not None
        if not name_ok or "-J" in self.submit_command_extra:
            return None
        return LSF_ARRAYS

    def output_files(self, job_id: str) -> list[Path]:
        if self.log_directory is None:
            return []
        # an array element 12[3] writes NAME-12_3.err (%J_%I)
        file_id = re.sub(r"\[(\d+)\]$", r"_\1", job_id)
        base = Path(self.log_directory).expanduser() / f"{self.job_name}-{file_id}"
        return [base.with_name(base.name + ".err"), base.with_name(base.name + ".out")]


class LSFCluster(JobQueueCluster):
    """Launch Dask workers on an LSF cluster.

    >>> cluster = LSFCluster(cores=8, memory="24GB", queue="normal")  # doctest: +SKIP
    """

    job_cls = LSFJob
