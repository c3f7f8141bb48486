"""HTCondor: a submit description for ``condor_submit``; ``condor_q`` / ``condor_rm``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._shell import join_command
from ._values import check_directive_value, parse_memory
from .core import Job, JobQueueCluster

__all__ = ["HTCondorJob", "HTCondorCluster", "quote_arguments", "quote_environment"]


def _double_up_quotes(text: str) -> str:
    return text.replace('"', '""').replace("'", "''")


def quote_arguments(args: list[str]) -> str:
    """Quote ``args`` for an ``Arguments =`` line in HTCondor's new syntax.

    The whole value is in double quotes; each argument with white space or quotes is wrapped
    in single quotes; literal quotes are doubled.

    >>> quote_arguments(["-c", "echo 'hi there'"])
    '"-c \\'echo \\'\\'hi there\\'\\'\\'"'
    """
    quoted = []
    for arg in args:
        arg = _double_up_quotes(arg)
        if not arg or re.search(r"[\s']", arg):
            arg = f"'{arg}'"
        quoted.append(arg)
    return '"' + " ".join(quoted) + '"'


def quote_environment(env: Mapping[str, str]) -> str:
    """Quote a mapping for an ``Environment =`` line (new syntax)."""
    items = []
    for key, value in env.items():
        value = _double_up_quotes(str(value))
        if not value or re.search(r"[\s']", value):
            value = f"'{value}'"
        items.append(f"{key}={value}")
    return '"' + " ".join(items) + '"'


class HTCondorJob(Job):
    """An HTCondor job running Dask workers (``/bin/sh -c '<prologue; workers; epilogue>'``)."""

    config_name = "htcondor"
    submit_command = "condor_submit"
    cancel_command = "condor_rm"
    job_id_regexp = r"submitted to cluster (?P<job_id>\d+)"
    default_shebang = "#!/usr/bin/env condor_submit"

    def __init__(
        self,
        scheduler: str | None = None,
        name: str | None = None,
        disk: str | int | None = None,
        config_name: str | None = None,
        **base_kwargs: Any,
    ):
        super().__init__(scheduler=scheduler, name=name, config_name=config_name, **base_kwargs)
        disk = self._option("disk", disk)
        if disk is None:
            raise ValueError(
                "You must specify how much disk to use per job like HTCondorCluster(..., "
                "disk='1 GB') or set jobqueue.htcondor.disk in jobqueue.yaml"
            )
        self.worker_disk = parse_memory(disk, "disk")

    def _extra_directives(self, value: Any) -> Any:
        if value is None:
            return {}
        if isinstance(value, Mapping):
            items = dict(value)
        else:
            items = {}
            for line in value:
                key, sep, val = str(line).partition("=")
                if not sep:
                    raise ValueError(
                        f"job_extra_directives entry {line!r} must look like 'key = value' "
                        "(or pass a dict)"
                    )
                items[key.strip()] = val.strip()
        for key, val in items.items():
            check_directive_value(key, "job_extra_directives")
            check_directive_value(val, "job_extra_directives")
        return items

    def header_items(self) -> dict[str, str]:
        """Submit-description entries, before ``job_directives_skip`` and extras."""
        items = {
            "MY.DaskWorkerName": f'"{self.name}"',
            "batch_name": str(self.name),
            "RequestCpus": "MY.DaskWorkerCores",
            "RequestMemory": "floor(MY.DaskWorkerMemory / 1048576)",
            "RequestDisk": "floor(MY.DaskWorkerDisk / 1024)",
            "MY.JobId": '"$(ClusterId).$(ProcId)"',
            "MY.DaskWorkerCores": str(self.worker_cores),
            "MY.DaskWorkerMemory": str(self.worker_memory),
            "MY.DaskWorkerDisk": str(self.worker_disk),
        }
        if self.log_directory is not None:
            items.update(
                {
                    "LogDirectory": self.log_directory,
                    "Output": "$(LogDirectory)/worker-$(MY.JobId).out",
                    "Error": "$(LogDirectory)/worker-$(MY.JobId).err",
                    "Log": "$(LogDirectory)/worker-$(MY.JobId).log",
                    "Stream_Output": "True",
                    "Stream_Error": "True",
                }
            )
        return items

    @property
    def job_header(self) -> str:
        items = {k: v for k, v in self.header_items().items() if k not in self.job_directives_skip}
        items.update(self.job_extra_directives)
        return "\n".join(f"{key} = {value}" for key, value in items.items())

    def shell_command(self) -> str:
        """The shell command line the job runs: prologue; workers; epilogue."""
        return "; ".join(
            [
                *self.job_script_prologue,
                join_command(self.worker_command_tokens()),
                *self.job_script_epilogue,
            ]
        )

    def job_script(self) -> str:
        lines = [
            self.shebang,
            "",
            self.job_header,
            "Executable = /bin/sh",
            f"Arguments = {quote_arguments(['-c', self.shell_command()])}",
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
    """Launch Dask workers on an HTCondor pool.

    Job keywords (besides the common ones): ``disk`` (required), ``job_extra_directives`` as a
    dict of submit-description entries, ``submit_command_extra`` and ``cancel_command_extra``.
    HTCondor has no queue or walltime keyword.

    >>> cluster = HTCondorCluster(cores=4, memory="8GB", disk="4GB")  # doctest: +SKIP
    """

    job_cls = HTCondorJob
