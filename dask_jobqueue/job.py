"""A batch job running Dask workers: options, the job script, and batch-system commands.

A scheduler dialect (``slurm.py``, ``pbs.py``, ...) subclasses :class:`Job` with its header
directives, its submit/status/cancel command lines and pure functions that parse their output.
The cluster that drives jobs is in :mod:`dask_jobqueue.cluster`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import sys
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import dask
import dask.config
from dask.utils import parse_timedelta
from distributed.core import Status
from distributed.deploy.spec import ProcessInterface
from distributed.security import Security

from ._shell import CommandError, join_command, run_command, run_command_sync
from ._values import (
    check_directive_list,
    check_directive_value,
    check_name,
    check_string_list,
    format_memory_limit,
    parse_memory,
    parse_positive_int,
    parse_walltime,
)
from .tracking import JobRecord, JobStatus

logger = logging.getLogger(__name__)

__all__ = ["Job", "JobFailedError", "default_processes"]

PLACEHOLDER_SCHEDULER = "tcp://<insert-scheduler-address-here>:8786"


class JobFailedError(RuntimeError):
    """Jobs kept dying before their workers connected; the cluster stopped resubmitting."""

    def __init__(self, message: str, records: Sequence[JobRecord] = ()):
        super().__init__(message)
        self.records = list(records)


def default_processes(cores: int) -> int:
    """Worker processes for ``cores`` when the user gave none: all of them up to 4, else the
    smallest divisor of ``cores`` that is at least its square root (24 -> 6, 32 -> 8)."""
    if cores <= 4:
        return cores
    return min(d for d in range(1, cores + 1) if cores % d == 0 and d * d >= cores)


def _deprecation_message(old: str, new: str) -> str:
    return (
        f"The {old!r} parameter has been renamed to {new!r}. It is still used when {new!r} is "
        f"not set, and ignored otherwise. Please use {new!r} instead."
    )


class Job(ProcessInterface):
    """One batch job running ``processes`` Dask workers.

    Subclasses set the class attributes below and implement :meth:`header_directives`; most
    also override :meth:`parse_status` (and :meth:`status_argv`) so the cluster can tell what
    the job is doing.
    """

    #: Section of ``jobqueue.yaml`` holding this scheduler's defaults.
    config_name: ClassVar[str | None] = None
    #: Program (and fixed arguments) that submits a job script.
    submit_command: str | None = None
    #: Program (and fixed arguments) that cancels jobs; job ids are appended.
    cancel_command: str | None = None
    #: Prefix of a header directive line, e.g. ``#SBATCH``.
    directive_prefix: ClassVar[str] = ""
    #: Regular expression with a ``job_id`` group, applied to the submit command's stdout.
    job_id_regexp: ClassVar[str] = r"(?P<job_id>\d+)"
    #: Walltime forms the scheduler accepts (keys of ``_values._WALLTIME_FORMS``).
    walltime_forms: ClassVar[tuple[str, ...]] = ("hh:mm:ss", "seconds")
    #: First line of the script when neither the keyword nor the config sets one.
    default_shebang: ClassVar[str] = "#!/usr/bin/env bash"

    def __init__(
        self,
        scheduler: str | None = None,
        name: str | None = None,
        cores: int | None = None,
        memory: str | int | None = None,
        processes: int | None = None,
        nanny: bool = True,
        protocol: str | None = None,
        security: Security | None = None,
        interface: str | None = None,
        death_timeout: float | None = None,
        local_directory: str | None = None,
        extra: list[str] | None = None,
        worker_command: str | None = None,
        worker_extra_args: list[str] | None = None,
        job_extra: list[str] | None = None,
        job_extra_directives: list[str] | None = None,
        env_extra: list[str] | None = None,
        job_script_prologue: list[str] | None = None,
        job_script_epilogue: list[str] | None = None,
        header_skip: list[str] | None = None,
        job_directives_skip: list[str] | None = None,
        log_directory: str | None = None,
        shebang: str | None = None,
        python: str | None = None,
        job_name: str | None = None,
        config_name: str | None = None,
        submit_command_extra: list[str] | None = None,
        cancel_command_extra: list[str] | None = None,
    ):
        super().__init__()
        self.config_name = config_name or type(self).config_name
        if self.config_name is None:
            raise ValueError(
                f"{type(self).__name__} has no config_name: set the class attribute "
                "`config_name` or pass config_name= so its jobqueue.yaml section can be found"
            )
        if dask.config.get(f"jobqueue.{self.config_name}", default=None) is None:
            raise ValueError(
                f"config_name={self.config_name!r}: there is no section "
                f"'jobqueue.{self.config_name}' in the dask configuration"
            )
        self.scheduler = scheduler or PLACEHOLDER_SCHEDULER
        self.name = name if name is not None else "dummy-name"
        self.job_id: str | None = None

        cores = self._option("cores", cores)
        memory = self._option("memory", memory)
        if cores is None or memory is None:
            raise ValueError(
                f"You must specify how much cores and memory per job you want to use, for "
                f"example: {type(self).__name__.replace('Job', 'Cluster')}(cores=8, "
                f"memory='24GB') or set jobqueue.{self.config_name}.cores/memory in jobqueue.yaml"
            )
        self.worker_cores = parse_positive_int(cores, "cores")
        self.worker_memory = parse_memory(memory, "memory")
        processes = self._option("processes", processes)
        if processes is None:
            processes = default_processes(self.worker_cores)
        self.worker_processes = parse_positive_int(processes, "processes")
        if self.worker_processes > self.worker_cores:
            raise ValueError(
                f"processes={self.worker_processes} is more than cores={self.worker_cores}: "
                "each worker process needs at least one core"
            )
        self.worker_process_threads = self.worker_cores // self.worker_processes
        self.worker_process_memory = self.worker_memory // self.worker_processes
        unused = self.worker_cores - self.worker_process_threads * self.worker_processes
        if unused:
            warnings.warn(
                f"cores={self.worker_cores} is not a multiple of processes="
                f"{self.worker_processes}: each worker gets {self.worker_process_threads} "
                f"thread(s) and {unused} core(s) of every job stay unused",
                UserWarning,
                stacklevel=3,
            )

        self.nanny = nanny
        self.protocol = protocol
        self.security = security
        self.interface = self._option("interface", interface)
        death_timeout = self._option("death-timeout", death_timeout)
        self.death_timeout = (
            None if death_timeout is None else parse_timedelta(death_timeout, "seconds")
        )
        self.local_directory = self._option("local-directory", local_directory)
        self.worker_command = self._option("worker-command", worker_command) or (
            "distributed.cli.dask_worker"
        )
        if not re.match(r"^[A-Za-z_][\w.]*$", str(self.worker_command)):
            raise ValueError(
                f"worker_command={self.worker_command!r} must be a Python module name "
                "run as `python -m <module>`, e.g. 'distributed.cli.dask_worker'"
            )
        self.worker_extra_args = check_string_list(
            self._renamed("extra", extra, "worker-extra-args", worker_extra_args),
            "worker_extra_args",
        )
        self.job_extra_directives = self._extra_directives(
            self._renamed("job-extra", job_extra, "job-extra-directives", job_extra_directives)
        )
        self.job_script_prologue = [
            line
            for line in check_string_list(
                self._renamed("env-extra", env_extra, "job-script-prologue", job_script_prologue),
                "job_script_prologue",
            )
            if line.strip()
        ]
        self.job_script_epilogue = [
            line
            for line in check_string_list(
                self._option("job-script-epilogue", job_script_epilogue), "job_script_epilogue"
            )
            if line.strip()
        ]
        self.job_directives_skip = check_string_list(
            self._renamed("header-skip", header_skip, "job-directives-skip", job_directives_skip),
            "job_directives_skip",
        )
        log_directory = self._option("log-directory", log_directory)
        self.log_directory = (
            None if log_directory is None else check_directive_value(log_directory, "log_directory")
        )
        if self.log_directory is not None:
            os.makedirs(os.path.expanduser(os.path.expandvars(self.log_directory)), exist_ok=True)
        self.shebang = self._option("shebang", shebang) or self.default_shebang
        self.python = self._option("python", python) or sys.executable
        self.job_name = check_name(self._option("name", job_name) or "dask-worker", "job_name")
        self.submit_command_extra = check_string_list(
            self._option("submit-command-extra", submit_command_extra), "submit_command_extra"
        )
        self.cancel_command_extra = check_string_list(
            self._option("cancel-command-extra", cancel_command_extra), "cancel_command_extra"
        )

    # ------------------------------------------------------------------ configuration helpers

    def _option(self, key: str, value: Any, default: Any = None) -> Any:
        """Keyword if given, else ``jobqueue.<config_name>.<key>``, else ``default``."""
        if value is not None:
            return value
        found = dask.config.get(f"jobqueue.{self.config_name}.{key}", default=None)
        return default if found is None else found

    def _renamed(self, old_key: str, old_value: Any, new_key: str, new_value: Any) -> Any:
        """Resolve a renamed option, warning once when the old name is used."""
        old = self._option(old_key, old_value)
        new = self._option(new_key, new_value)
        if old is not None:
            warnings.warn(
                _deprecation_message(old_key.replace("-", "_"), new_key.replace("-", "_")),
                FutureWarning,
                stacklevel=4,
            )
            if not new:
                return old
        return new

    def _extra_directives(self, value: Any) -> Any:
        """Validate ``job_extra_directives`` (a list of directives for most schedulers)."""
        return check_directive_list(value or [], "job_extra_directives")

    def _directive_option(self, key: str, value: Any) -> str | None:
        """Keyword or config value that goes into a header directive, checked to be one line."""
        value = self._option(key, value)
        return None if value is None else check_directive_value(value, key.replace("-", "_"))

    def _walltime(self, value: Any, key: str = "walltime") -> str | None:
        walltime = self._option(key, value)
        if walltime is None:
            return None
        walltime = check_directive_value(walltime, key)
        parse_walltime(walltime, self.walltime_forms, key)
        return walltime

    # ------------------------------------------------------------------ the job script

    def header_directives(self) -> list[str]:
        """Generated header directives, without the prefix. Dialects override this."""
        return []

    @property
    def job_header(self) -> str:
        """Header lines: generated directives minus ``job_directives_skip``, then extras."""
        prefix = self.directive_prefix
        generated = [f"{prefix} {d}" for d in self.header_directives()]
        kept = [
            line for line in generated if not any(skip in line for skip in self.job_directives_skip)
        ]
        extras = [f"{prefix} {d}" for d in self.job_extra_directives]
        return "\n".join(kept + extras)

    def worker_command_tokens(self) -> list[str]:
        """The worker command as a list of arguments (not yet quoted)."""
        tokens = [
            self.python,
            "-m",
            self.worker_command,
            self.scheduler,
            "--name",
            str(self.name),
            "--nthreads",
            str(self.worker_process_threads),
            "--memory-limit",
            format_memory_limit(self.worker_process_memory),
        ]
        default_command = self.worker_command == "distributed.cli.dask_worker"
        if default_command:
            if self.worker_processes > 1:
                tokens += ["--nworkers", str(self.worker_processes)]
            tokens.append("--nanny" if self.nanny else "--no-nanny")
        if self.death_timeout is not None:
            tokens += ["--death-timeout", f"{self.death_timeout:g}"]
        if self.local_directory is not None:
            tokens += ["--local-directory", str(self.local_directory)]
        tokens += self.worker_extra_args
        if self.interface:
            tokens += ["--interface", str(self.interface)]
        if self.protocol:
            tokens += ["--protocol", str(self.protocol)]
        if self.security:
            tls = self.security.get_tls_config_for_role("worker")
            for key, option in (
                ("ca_file", "--tls-ca-file"),
                ("cert", "--tls-cert"),
                ("key", "--tls-key"),
            ):
                if tls.get(key):
                    tokens += [option, tls[key]]
        return tokens

    def worker_command_line(self) -> str:
        """The worker command, every token quoted for the job's shell."""
        return join_command(self.worker_command_tokens())

    def job_script(self) -> str:
        """The complete batch script: shebang, header, prologue, workers, epilogue."""
        parts = [self.shebang, ""]
        if self.job_header:
            parts.append(self.job_header)
        parts += self.job_script_prologue
        parts.append(self.worker_command_line())
        parts += self.job_script_epilogue
        return "\n".join(parts) + "\n"

    # ------------------------------------------------------------------ batch-system commands

    def submit_argv(self, script_path: str) -> list[str]:
        """Command line that submits the script at ``script_path``."""
        return [*self._split(self.submit_command), *self.submit_command_extra, script_path]

    def submit_stdin(self, script: str) -> str | None:
        """Text to feed the submit command on stdin (``None``: nothing)."""
        return None

    def cancel_argv(self, job_ids: Sequence[str]) -> list[str]:
        """Command line that cancels all ``job_ids`` in one call."""
        return [*self._split(self.cancel_command), *self.cancel_command_extra, *job_ids]

    def status_argv(self, job_ids: Sequence[str]) -> list[str] | None:
        """Command line that reports on all ``job_ids`` in one call (``None``: unsupported)."""
        return None

    def parse_status(self, stdout: str, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """Turn the status command's output into a status per job id it mentions."""
        return {}

    async def query_status(
        self, job_ids: Sequence[str], jobs: Mapping[str, Job], timeout: float
    ) -> dict[str, JobStatus] | None:
        """Ask the batch system about ``job_ids`` with as few commands as possible.

        Return ``None`` if this batch system cannot be asked. Ids missing from the result are
        unknown to the batch system (the poller marks them lost after a few polls).
        """
        argv = self.status_argv(job_ids)
        if argv is None:
            return None
        result = await run_command(argv, timeout=timeout)
        return self.parse_status(result.stdout, job_ids)

    def output_files(self, job_id: str) -> list[Path]:
        """Files that may hold this job's stderr, most useful first."""
        return []

    @staticmethod
    def _split(command: str | None) -> list[str]:
        if not command:
            raise ValueError("this job class has no submit/cancel command configured")
        return shlex.split(command)

    def job_id_from_submit_output(self, out: str) -> str:
        """Extract the job id from the submit command's stdout."""
        match = re.search(self.job_id_regexp, out)
        if match is None:
            raise ValueError(
                f"Could not parse the job id from the submit command output using the "
                f"regular expression {self.job_id_regexp!r}. Output:\n{out}"
            )
        try:
            job_id = match.group("job_id")
        except IndexError:
            raise ValueError(
                f"You need to use a 'job_id' named group in the regular expression "
                f"job_id_regexp, e.g. r'(?P<job_id>\\d+)'; got {self.job_id_regexp!r}"
            ) from None
        return job_id

    # keep the upstream private name working for users who called it
    _job_id_from_submit_output = job_id_from_submit_output

    async def submit(self, timeout: float | None = None) -> str:
        """Write the script to a private temporary file, submit it, return the job id."""
        script = self.job_script()
        logger.debug("Job script for %s:\n%s", self.name, script)
        with tempfile.TemporaryDirectory(prefix="dask-jobqueue-") as tmp:
            path = os.path.join(tmp, "job.sh")
            with open(path, "w", encoding="utf-8") as f:
                f.write(script)
            result = await run_command(
                self.submit_argv(path), stdin=self.submit_stdin(script), timeout=timeout
            )
        self.job_id = self.job_id_from_submit_output(result.stdout)
        logger.debug("Submitted job %s for worker %s", self.job_id, self.name)
        return self.job_id

    async def cancel_jobs(self, job_ids: Sequence[str], timeout: float | None = None) -> None:
        """Cancel ``job_ids`` in one command; failures are logged, not raised."""
        if not job_ids:
            return
        try:
            await run_command(self.cancel_argv(job_ids), timeout=timeout)
        except CommandError as exc:
            logger.debug("Cancel command reported an error (jobs may be gone already): %s", exc)

    def cancel_jobs_sync(self, job_ids: Iterable[str]) -> None:
        """Blocking variant of :meth:`cancel_jobs`, used at interpreter exit."""
        job_ids = list(job_ids)
        if not job_ids:
            return
        with contextlib.suppress(CommandError):
            run_command_sync(self.cancel_argv(job_ids), timeout=30)

    # ------------------------------------------------------------------ ProcessInterface

    async def start(self) -> None:
        """Submit the job. Returns once the batch system accepted it."""
        await self.submit()
        await super().start()

    async def close(self) -> None:
        """Cancel the job if it was submitted."""
        if self.job_id is not None and self.status not in (Status.closed, Status.closing):
            await self.cancel_jobs([self.job_id])
        self.mark_closed()

    def mark_closed(self) -> None:
        """Record that the job is gone without cancelling anything."""
        self.status = Status.closed
        self._event_finished.set()

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: name={self.name} job_id={self.job_id} status={self.status.name}>"


