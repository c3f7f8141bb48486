"""IBM Spectrum LSF: ``bsub`` / ``bjobs`` / ``bkill`` and ``#BSUB`` directives."""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from typing import Any

from ._values import check_directive_value, parse_memory, parse_positive_int
from .core import Job, JobQueueCluster

logger = logging.getLogger(__name__)

__all__ = ["LSFJob", "LSFCluster", "lsf_format_bytes_ceil", "lsf_detect_units"]

_UNIT_POWERS = {"k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6, "z": 7}


def _unit_letter(units: str) -> str:
    letter = str(units).strip().lower()[:1]
    if letter not in _UNIT_POWERS:
        raise ValueError(
            f"lsf_units={units!r} is not an LSF unit: use one of KB, MB, GB, TB, PB, EB, ZB"
        )
    return letter


def lsf_format_bytes_ceil(nbytes: int, lsf_units: str = "mb") -> str:
    """``nbytes`` in LSF's decimal ``lsf_units`` (``kb``, ``mb``, ...), rounded up.

    >>> lsf_format_bytes_ceil(28_000_000_000, "mb")
    '28000'
    """
    power = _UNIT_POWERS[_unit_letter(lsf_units)]
    return str(math.ceil(int(nbytes) / 1000**power))


def lsf_detect_units() -> str:
    """Read ``LSF_UNIT_FOR_LIMITS`` from ``lsf.conf`` (``$LSF_ENVDIR``, ``$LSF_CONFDIR``,
    then ``/etc``); LSF's own default is ``kb``."""
    for directory in (os.environ.get("LSF_ENVDIR"), os.environ.get("LSF_CONFDIR"), "/etc"):
        if not directory:
            continue
        path = Path(directory) / "lsf.conf"
        try:
            text = path.read_text()
        except OSError:
            continue
        found = re.findall(r"^\s*LSF_UNIT_FOR_LIMITS\s*=\s*\"?(\w+)\"?", text, re.MULTILINE)
        if found:
            return found[-1].lower()
        return "kb"
    return "kb"


class LSFJob(Job):
    """An LSF batch job running Dask workers."""

    config_name = "lsf"
    submit_command = "bsub"
    cancel_command = "bkill"
    directive_prefix = "#BSUB"
    walltime_forms = ("hh:mm", "minutes")

    def __init__(
        self,
        scheduler: str | None = None,
        name: str | None = None,
        queue: str | None = None,
        project: str | None = None,
        ncpus: int | None = None,
        mem: int | None = None,
        walltime: str | None = None,
        lsf_units: str | None = None,
        use_stdin: bool | None = None,
        config_name: str | None = None,
        **base_kwargs: Any,
    ):
        super().__init__(scheduler=scheduler, name=name, config_name=config_name, **base_kwargs)
        queue = self._option("queue", queue)
        self.queue = None if queue is None else check_directive_value(queue, "queue")
        project = self._option("project", project)
        self.project = None if project is None else check_directive_value(project, "project")
        if '"' in str(self.project or ""):
            raise ValueError(f"project={self.project!r} must not contain double quotes")
        ncpus = self._option("ncpus", ncpus)
        if ncpus is None:
            ncpus = self.worker_cores
            logger.info("ncpus specification for LSF not set, using %s", ncpus)
        self.ncpus = parse_positive_int(ncpus, "ncpus")
        mem = self._option("mem", mem)
        if mem is None:
            mem = self.worker_memory
            logger.info("mem specification for LSF not set, using %s", mem)
        self.mem = parse_memory(mem, "mem")
        self.walltime = self._walltime(walltime)
        units = self._option("lsf-units", lsf_units) or lsf_detect_units()
        self.lsf_units = _unit_letter(units) + "b"
        use_stdin = self._option("use-stdin", use_stdin)
        self.use_stdin = True if use_stdin is None else bool(use_stdin)

    def header_directives(self) -> list[str]:
        lines = [f"-J {self.job_name}"]
        if self.log_directory is not None:
            base = f"{self.log_directory}/{self.job_name}-%J"
            lines += [f"-e {base}.err", f"-o {base}.out"]
        if self.queue is not None:
            lines.append(f"-q {self.queue}")
        if self.project is not None:
            lines.append(f'-P "{self.project}"')
        lines.append(f"-n {self.ncpus}")
        if self.ncpus > 1:
            lines.append('-R "span[hosts=1]"')
        lines.append(f"-M {lsf_format_bytes_ceil(self.mem, self.lsf_units)}")
        if self.walltime is not None:
            lines.append(f"-W {self.walltime}")
        return lines

    def submit_argv(self, script_path: str) -> list[str]:
        argv = [*self._split(self.submit_command), *self.submit_command_extra]
        return argv if self.use_stdin else [*argv, script_path]

    def submit_stdin(self, script: str) -> str | None:
        # `bsub < script` without a shell: the script goes to bsub's stdin, stderr is kept.
        return script if self.use_stdin else None

    def output_files(self, job_id: str) -> list[Path]:
        if self.log_directory is None:
            return []
        base = Path(self.log_directory).expanduser() / f"{self.job_name}-{job_id}"
        return [base.with_name(base.name + ".err"), base.with_name(base.name + ".out")]


class LSFCluster(JobQueueCluster):
    """Launch Dask workers on an LSF cluster.

    Job keywords (besides the common ones): ``queue``, ``project``, ``ncpus`` (default:
    cores), ``mem`` (bytes, default: memory), ``walltime`` (``HH:MM``), ``lsf_units`` (default:
    from ``lsf.conf``) and ``use_stdin`` (submit as ``bsub < script``, the default).

    >>> cluster = LSFCluster(cores=8, memory="24GB", queue="normal")  # doctest: +SKIP
    """

    job_cls = LSFJob
