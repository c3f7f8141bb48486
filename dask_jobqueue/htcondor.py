"""HTCondor: the public job and cluster classes (``HTCondorJob``, ``HTCondorCluster``).

What HTCondor is — commands, states, parsers, quoting, arrays, the submit description's
entries — is in :mod:`dask_jobqueue.dialects.htcondor`; this module adds HTCondor's keywords
and writes the description around them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from ._values import check_directive_value
from .cluster import JobQueueCluster
from .dialects.htcondor import (  # noqa: F401  (re-exported: the public names of 0.9 and tests)
    ARRAY_NAMES_VARIABLE,
    DIALECT,
    HTCONDOR_ARRAYS,
    HTCONDOR_ATTRIBUTE,
    HTCONDOR_LEAVING,
    STATUS_ATTRIBUTES,
    TIME_LIMIT_HOLD_CODES,
    condor_array_description,
    condor_array_names_ok,
    condor_history_argv,
    condor_proc_ids,
    condor_q_argv,
    condor_status,
    escape_macros,
    parse_condor_json,
    parse_condor_limits,
    parse_condor_step,
    parse_htcondor_tags,
    quote_arguments,
    submit_value,
)
from .job import Job
from .options import JOB_OPTIONS_BY_NAME, SIZE, Option

logger = logging.getLogger(__name__)

__all__ = [
    "HTCondorJob",
    "HTCondorCluster",
    "quote_arguments",
    "escape_macros",
    "parse_condor_json",
    "condor_status",
    "condor_array_description",
    "condor_array_names_ok",
    "condor_proc_ids",
    "parse_condor_limits",
    "HTCONDOR_ARRAYS",
]


def _submit_entries(value: Any, keyword: str, owner: type) -> dict[str, str]:
    """``job_extra_directives`` for HTCondor: submit-description ``key = value`` entries."""
    if isinstance(value, Mapping):
        items = dict(value)
    elif isinstance(value, (list, tuple)):
        items = {}
        for line in value:
            key, sep, val = str(line).partition("=")
            if not isinstance(line, str) or not sep:
                raise ValueError(
                    f"{keyword} entry {line!r} must look like 'key = value' (or pass a dict)"
                )
            items[key.strip()] = val.strip()
    else:
        raise ValueError(f"{keyword}={value!r} must be a dict of submit-description entries")
    checked = {}
    for key, val in items.items():
        key = check_directive_value(key, keyword).strip()
        if not re.fullmatch(r"\+?[A-Za-z_][\w.]*", key):
            raise ValueError(
                f"{keyword} key {key!r} is not a submit-description key "
                "(e.g. 'request_gpus', '+ProjectName' or 'MY.ProjectName')"
            )
        if key.lower() == "queue":
            raise ValueError(
                f"{keyword} must not contain 'queue': the submit description "
                "already ends with one 'Queue' statement (one job per Dask job)"
            )
        if val is None or isinstance(val, (list, dict)):
            raise ValueError(f"{keyword} entry {key!r} has no usable value: {val!r}")
        checked[key] = check_directive_value(val, keyword)
    return checked


class HTCondorJob(Job):
    """An HTCondor job running Dask workers (``/bin/sh -c '<prologue; workers; epilogue>'``)."""

    dialect = DIALECT
    gpus_supported = True
    gpu_type_refusal = None

    #: Program the job runs (with ``-c '<prologue; workers; epilogue>'``).
    executable = "/bin/sh"

    options = (
        replace(
            JOB_OPTIONS_BY_NAME["job_extra_directives"],
            type="dict or list of str",
            doc="Extra submit-description entries, as a dict ``{'+Extra': 'True'}`` or "
            "a list of ``'key = value'`` strings.",
            check=_submit_entries,
        ),
        Option(
            "disk",
            "str",
            "Disk space requested per job, e.g. ``'1GB'``. Required (keyword or config).",
            check=SIZE,
            attr="worker_disk",
            required="You must specify how much disk to use per job like "
            "HTCondorCluster(..., disk='1 GB') or set jobqueue.htcondor.disk in "
            "jobqueue.yaml",
        ),
    )
    job_extra_directives: dict[str, str]
    worker_disk: int

    @classmethod
    def check_log_directory(cls, path: str, keyword: str) -> None:
        submit_value(path, keyword)

    def shell_command(self) -> str:
        """The shell command line the job runs: prologue; workers; epilogue."""
        return "; ".join(
            [
                *self.job_script_prologue,
                *filter(None, [self.scheduler_check_line()]),
                self.worker_shell_command(),
                *self.job_script_epilogue,
            ]
        )

    def job_script(self) -> str:
        lines = [
            self.shebang,
            "",
            self.job_header,
            f"Executable = {self.executable}",
            f"Arguments = {escape_macros(quote_arguments(['-c', self.shell_command()]))}",
            "Queue",
        ]
        return "\n".join(lines) + "\n"

    def job_id_from_submit_output(self, out: str) -> str:
        return f"{super().job_id_from_submit_output(out)}.0"

    def output_files(self, job_id: str) -> list[Path]:
        if self.log_directory is None:
            return []
        base = Path(self.log_directory).expanduser()
        return [base / f"worker-{job_id}.err", base / f"worker-{job_id}.out"]


class HTCondorCluster(JobQueueCluster):
    """Launch Dask workers on an HTCondor pool (no queue or walltime keyword).

    >>> cluster = HTCondorCluster(cores=4, memory="8GB", disk="4GB")  # doctest: +SKIP
    """

    job_cls = HTCondorJob
