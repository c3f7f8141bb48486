"""A batch job running Dask workers: options, the job script, and batch-system commands.

A scheduler's public module (``slurm.py``, ``pbs.py``, ...) subclasses :class:`Job` with its
dialect (``dialects/<name>.py``: header table, submit/status/cancel command lines and pure
functions that parse their output) and its own keywords.
The cluster that drives jobs is in :mod:`dask_jobqueue.cluster`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import tempfile
import warnings
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import dask.config
from distributed.core import Status
from distributed.deploy.spec import ProcessInterface
from distributed.security import Security

from ._shell import join_command
from ._values import check_shared_directory, format_memory_limit
from .dialect import (
    ArraySupport,
    Dialect,
    HeaderTable,
    LimitsProbe,
    StatusStep,
    WalltimeDefault,
    render_header,
)
from .engine import BatchSystem
from .layout import (
    GPU_TYPE_REFUSALS,
    NODE_WORKER_NAME,
    STATUS_VAR,
    Launcher,
    check_layout,
    gpu_worker_lines,
    node_script_lines,
    one_line,
    worker_suffixes,
)
from .options import (
    JOB_IDENTITY,
    JOB_OPTIONS,
    Option,
    ParametersDocumented,
    accepted_keywords,
    config_section,
    declared_options,
    resolve_engine_settings,
    resolve_options,
    unknown_keyword_error,
    with_parameters,
)
from .pools import with_resource
from .tags import JobTag, TagSpec
from .tracker import Vanish
from .tracking import JobRecord

logger = logging.getLogger(__name__)

__all__ = ["Job", "JobFailedError", "default_processes"]

PLACEHOLDER_SCHEDULER = "tcp://<insert-scheduler-address-here>:8786"

#: Seconds the job script tries to reach the scheduler before giving up.
SCHEDULER_CHECK_SECONDS = 5

#: The line the check prints when the scheduler is unreachable, with ``{address}``,
#: ``{node}``, ``{seconds}`` and ``{error}`` for its parts.
SCHEDULER_UNREACHABLE_MESSAGE = (
    "dask-jobqueue: cannot reach the Dask scheduler at {address} from node {node} (tried for "
    "{seconds} s: {error}). If its cluster is still running, compute nodes cannot reach that "
    "address: set interface (e.g. ib0) to a network the compute nodes share with "
    "the scheduler host, or scheduler_options contact_address or host to an address they "
    "can reach. Exiting without starting workers."
)

# The reachability check of the job script: `python -c` code with the scheduler address as
# argument, on one line (HTCondor's Arguments are one line): exit 0 when a TCP connection
# succeeds (or the protocol is not tcp/tls), exit 3 with one line on stderr when none did
# within SCHEDULER_CHECK_SECONDS. IPv6 addresses are bracketed: tcp://[::1]:8786. The line
# says what was tried, from which node, for how long and which settings to change; it is
# quoted in docs/troubleshooting.rst (checked by a test).
_SCHEDULER_CHECK_SOURCE = f"""\
import socket, sys, time
a = sys.argv[1]
s, _, r = a.partition("://")
h, _, p = r.rpartition(":")
if s not in ("tcp", "tls") or not p.isdigit(): sys.exit(0)
h = h[1:-1] if h.startswith("[") else h
t = time.monotonic()
while True:
    try:
        socket.create_connection((h, int(p)), 2).close()
        sys.exit(0)
    except OSError as e:
        err = e
    if time.monotonic() - t > {SCHEDULER_CHECK_SECONDS}: break
    time.sleep(0.5)
print({SCHEDULER_UNREACHABLE_MESSAGE!r}.format(address=a, node=socket.gethostname(), seconds="%.0f" % (time.monotonic() - t), error=err), file=sys.stderr)
sys.exit(3)
"""
_SCHEDULER_CHECK = 'exec("{}")'.format(
    _SCHEDULER_CHECK_SOURCE.strip().replace('"', '\\"').replace("\n", "\\n")
)


class JobFailedError(RuntimeError):
    """Jobs kept dying before their workers connected; the cluster stopped resubmitting."""

    def __init__(self, message: str, records: Sequence[JobRecord] = ()):
        super().__init__(message)
        self.records = list(records)


def make_log_directory(path: str) -> None:
    """Create ``path`` and its parents; ``ValueError`` naming ``log_directory`` if it cannot be."""
    try:
        os.makedirs(os.path.expanduser(os.path.expandvars(path)), exist_ok=True)
    except OSError as exc:
        raise ValueError(
            f"log_directory={path!r} cannot be created: {exc.strerror or exc}. Choose a "
            "directory you can write to, on a filesystem the compute nodes share."
        ) from None


def default_processes(cores: int) -> int:
    """Worker processes for ``cores`` when the user gave none: all of them up to 4, else the
    smallest divisor of ``cores`` that is at least its square root (24 -> 6, 32 -> 8)."""
    if cores <= 4:
        return cores
    return min(d for d in range(1, cores + 1) if cores % d == 0 and d * d >= cores)


class Job(ParametersDocumented, ProcessInterface):
    """One batch job running ``processes`` Dask workers.

    A dialect subclasses it, sets the class attributes below (commands, directive prefix and
    header table, an anchored job-id pattern, :class:`~dask_jobqueue.engine.StatusStep` s,
    ...), usually from one :class:`~dask_jobqueue.dialect.Dialect` value, and declares its own
    keywords in an ``options`` tuple (see :mod:`dask_jobqueue.options`); the cluster's :class:`~dask_jobqueue.engine.BatchSystem` runs
    the commands for many jobs at once.
    """

    #: The batch system this job class speaks (``dialects/<name>.py``): its fields become
    #: the class attributes below, unless the class sets them itself. A job class may also
    #: set the attributes directly, without a dialect (as dask-jobqueue 0.9 subclasses do).
    dialect: ClassVar[Dialect | None] = None
    #: Section of ``jobqueue.yaml`` holding this scheduler's defaults (on an instance: the
    #: section it read, never ``None``).
    config_name: str | None = None
    #: Program (and fixed arguments) that submits a job script.
    submit_command: str | None = None
    #: Program (and fixed arguments) that cancels jobs; job ids are appended.
    cancel_command: str | None = None
    #: Prefix of a header directive line, e.g. ``#SBATCH``.
    directive_prefix: ClassVar[str] = ""
    #: The directives of the script's header, as data (none: only the extras).
    header_table: ClassVar[HeaderTable] = HeaderTable()
    #: Regular expression with a ``job_id`` group, applied to the submit command's stdout.
    job_id_regexp: ClassVar[str] = r"(?P<job_id>\d+)"
    #: Walltime forms the scheduler accepts (keys of ``_values._WALLTIME_FORMS``).
    walltime_forms: ClassVar[tuple[str, ...]] = ("hh:mm:ss", "seconds")
    #: How to read the scheduler's default walltime (None: it cannot be read).
    walltime_default: ClassVar[WalltimeDefault | None] = None
    #: First line of the script when neither the keyword nor the config sets one.
    default_shebang: ClassVar[str] = "#!/usr/bin/env bash"
    #: The status commands of one poll, run in order by the engine (none: no polling).
    status_steps: ClassVar[tuple[StatusStep, ...]] = ()
    #: Lines a failing cancel command prints that only mean "this job is gone already".
    cancel_gone_pattern: ClassVar[re.Pattern[str] | None] = None
    #: Most job ids (or task ranges) in one cancel command.
    cancel_max_ids: ClassVar[int] = 1000
    #: When a job the status commands stopped listing counts as ended, and as what.
    vanish: ClassVar[Vanish] = Vanish()
    #: How this dialect submits job arrays (``None``: it has none; see :meth:`array_support_for`).
    array_support: ClassVar[ArraySupport | None] = None
    #: Commands telling the site's array limits (and flavour), run once before the first
    #: submission of several jobs (their facts decide :meth:`array_support_for`).
    site_probes: ClassVar[tuple[LimitsProbe, ...]] = ()
    #: Submit errors that are worth a retry (``None``: the engine's generic list).
    transient_submit_errors: ClassVar[re.Pattern[str] | None] = None
    #: How the jobs carry their owner's tag and how to list tagged jobs (none: untagged).
    tagging: ClassVar[TagSpec | None] = None
    #: The engine that runs this dialect's commands.
    batch_system_cls: ClassVar[type[BatchSystem]] = BatchSystem
    #: Keywords of this class (merged with those of its base classes).
    options: ClassVar[tuple[Option, ...]] = JOB_OPTIONS
    #: Whether the header requests ``gpus`` from the batch system (else ``gpus`` is refused).
    gpus_supported: ClassVar[bool] = False
    #: Why ``gpu_type`` is refused and the site-specific way instead (``None``: the header
    #: requests the GPU model).
    gpu_type_refusal: ClassVar[str | None] = GPU_TYPE_REFUSALS["generic"]
    #: How a job of several ``nodes`` starts workers on each (the first is the default;
    #: none: ``nodes`` > 1 is refused).
    launchers: ClassVar[tuple[Launcher, ...]] = ()

    # The checked values of JOB_OPTIONS, set by __init__ (attribute: Option.attribute); a
    # dialect declares the attributes of its own options the same way.
    worker_cores: int
    worker_memory: int
    worker_processes: int
    gpus: int | None
    gpu_type: str | None
    mem_per_gpu: int | None
    nodes: int
    launcher: str | None
    nanny: bool
    protocol: str | None
    security: Security | None
    interface: str | None
    death_timeout: float | None
    local_directory: str | None
    worker_command: str
    worker_extra_args: list[str]
    job_extra_directives: list[str] | dict[str, str]  # HTCondorJob: submit-description entries
    job_directives_skip: list[str]
    job_script_prologue: list[str]
    job_script_epilogue: list[str]
    log_directory: str | None
    shebang: str
    python: str
    scheduler_check: bool
    job_name: str
    submit_command_extra: list[str]
    cancel_command_extra: list[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        dialect = cls.__dict__.get("dialect")
        if dialect is not None:
            for attribute, value in dialect.job_attributes().items():
                if attribute not in cls.__dict__:
                    setattr(cls, attribute, value)
            if "config_name" not in cls.__dict__:
                cls.config_name = dialect.name
        super().__init_subclass__(**kwargs)

    @classmethod
    def documented_options(cls) -> list[Option]:
        """Everything the constructor accepts, as documented in the class docstring."""
        identity = [o for o in JOB_IDENTITY if o.name not in declared_options(cls)]
        return [*identity, *declared_options(cls).values()]

    @classmethod
    def default_config_name(cls) -> str:
        """The ``jobqueue.yaml`` section of this class (its ``config_name`` attribute)."""
        config_name = getattr(cls, "config_name", None)
        if config_name is None:
            # one line naming config_name, then the class (0.9's tests match that order)
            raise ValueError(
                f"config_name is not set for {cls.__name__}: looks like you are trying to "
                "create a class that inherits from dask_jobqueue.core.Job, and such a class "
                "is required to have a 'config_name' class variable. Set it to the name of a "
                "section of jobqueue.yaml (and create that section), or pass config_name= to "
                "the constructor."
            )
        return config_name

    @classmethod
    def accepted_keywords(cls) -> set[str]:
        """Keywords a cluster may pass to this class (besides ``scheduler`` and ``name``)."""
        return accepted_keywords(cls)

    def __init__(
        self,
        scheduler: str | None = None,
        name: str | None = None,
        config_name: str | None = None,
        **kwargs: Any,
    ):
        super().__init__()
        cls = type(self)
        self.config_name = config_name or cls.default_config_name()
        config_section(self.config_name)
        self.scheduler = scheduler or PLACEHOLDER_SCHEDULER
        self.name = name if name is not None else "dummy-name"
        self.job_id: str | None = None
        #: The tag this job was submitted with (set by the engine at submission).
        self.tag: JobTag | None = None
        # the engine of this job's own submission (a job used without a cluster)
        self._engine: BatchSystem | None = None
        self._exit_cancel: weakref.finalize | None = None
        self._job_header_override: str | None = None

        options = declared_options(cls)
        allowed = set(options) | {o.renamed_from for o in options.values() if o.renamed_from}
        unknown = set(kwargs) - allowed
        if unknown:
            raise unknown_keyword_error(cls.__name__, unknown, allowed, kwargs)
        values = resolve_options(options.values(), self.config_name, kwargs, cls)
        self._check_gpu_memory(values, kwargs)
        if values["cores"] is None or values["memory"] is None:
            raise ValueError(
                "You must specify how much cores and memory per job you want to use, for "
                f"example:\ncluster = {cls.__name__.replace('Job', 'Cluster')}("
                f"cores={kwargs.get('cores') or 8}, memory={kwargs.get('memory') or '24GB'!r})\n"
                f"(or set jobqueue.{self.config_name}.cores and .memory in jobqueue.yaml)"
            )
        for opt in options.values():
            setattr(self, opt.attribute, values[opt.name])
        # created here, as in 0.9 (an existing one was checked when the option was resolved:
        # no second walk up its parents for each of thousands of jobs)
        if self.log_directory is not None and not os.path.isdir(
            os.path.expanduser(os.path.expandvars(self.log_directory))
        ):
            self.prepare_log_directory()

        if self.worker_processes is None:
            self.worker_processes = default_processes(self.worker_cores)
        if self.worker_processes > self.worker_cores:
            raise ValueError(
                f"processes={self.worker_processes} is more than cores={self.worker_cores}: "
                "each worker process needs at least one core"
            )
        #: The launcher starting the workers of each node (``None``: a job of one node).
        self.node_launcher = check_layout(
            cls.__name__,
            self.gpus,
            self.worker_processes,
            self.nodes,
            self.launcher,
            cls.launchers,
            cls.gpus_supported,
            self.gpu_type,
            cls.gpu_type_refusal,
        )
        self.worker_process_threads = self.worker_cores // self.worker_processes
        #: Memory limit of each worker, in bytes.
        self.worker_process_memory_bytes = self.worker_memory // self.worker_processes
        #: Memory limit of each worker as passed to ``--memory-limit`` (a string, as in 0.9).
        self.worker_process_memory = format_memory_limit(self.worker_process_memory_bytes)
        unused = self.worker_cores - self.worker_process_threads * self.worker_processes
        if unused:
            warnings.warn(
                f"cores={self.worker_cores} is not a multiple of processes="
                f"{self.worker_processes}: each worker gets {self.worker_process_threads} "
                f"thread(s) and {unused} core(s) of every job stay unused",
                UserWarning,
                stacklevel=3,
            )

    def _check_gpu_memory(self, values: dict[str, Any], kwargs: dict[str, Any]) -> None:
        """``mem_per_gpu`` needs ``gpus`` and replaces ``memory`` (keyword or config)."""
        if values["mem_per_gpu"] is None:
            return
        if values["gpus"] is None:
            raise ValueError(
                f"mem_per_gpu={kwargs.get('mem_per_gpu', values['mem_per_gpu'])!r} needs gpus="
                "(the number of GPUs per job)"
            )
        memory = kwargs.get("memory")
        where = "memory"
        if memory is None:
            where = f"jobqueue.{self.config_name}.memory"
            memory = dask.config.get(where, default=None)
        if memory is not None:
            raise ValueError(
                f"mem_per_gpu={kwargs.get('mem_per_gpu', values['mem_per_gpu'])!r} together "
                f"with {where}={memory!r}: give one of them (with mem_per_gpu a job's memory "
                "is gpus times mem_per_gpu)"
            )

    @property
    def workers_per_job(self) -> int:
        """Dask workers of one job: ``processes`` on each of its ``nodes``."""
        return self.worker_processes * self.nodes

    def worker_name_suffixes(self) -> list[str]:
        """What the job's workers add to its name (``-0``, ``-1``...; none for one worker)."""
        return worker_suffixes(self.worker_processes, self.nodes)

    # ------------------------------------------------------------------ log directory

    @classmethod
    def check_log_directory(cls, path: str, keyword: str) -> None:
        """Raise ``ValueError`` if this scheduler's header directives cannot carry ``path``
        (called when the keyword is resolved). Dialects with output-file directives
        override it with the same code that writes those directives."""

    def prepare_log_directory(self) -> None:
        """Create ``log_directory`` (when the job is built, as in 0.9, and again just before
        submitting, in case it was removed), then check again that nobody else can replace
        it (it may have been created meanwhile)."""
        if self.log_directory is not None:
            make_log_directory(self.log_directory)
            check_shared_directory(self.log_directory, "log_directory", "the jobs' output files")

    @contextlib.contextmanager
    def job_file(self) -> Iterator[str]:
        """Write the job script to a private temporary file; yield its path, then delete it."""
        with tempfile.TemporaryDirectory(prefix="dask-jobqueue-") as tmp:
            path = os.path.join(tmp, "job.sh")
            with open(path, "w", encoding="utf-8") as f:
                f.write(self.job_script())
            yield path

    # ------------------------------------------------------------------ the job script

    @property
    def job_header(self) -> str:
        """Header lines: :meth:`generated_job_header`, unless a subclass written for
        dask-jobqueue 0.9 assigned its own header string."""
        if self._job_header_override is not None:
            return self._job_header_override
        return self.generated_job_header()

    @job_header.setter
    def job_header(self, value: str) -> None:
        self._job_header_override = value

    def generated_job_header(self) -> str:
        """The dialect's :attr:`header_table` rendered for this job's options, minus
        ``job_directives_skip``, then the extras (:func:`~dask_jobqueue.dialect.render_header`)."""
        return render_header(self, self.header_table, self.directive_prefix)

    def worker_command_tokens(
        self, name: str | None = None, one_process: bool = False
    ) -> list[str]:
        """The worker command as a list of arguments (not yet quoted): ``name`` instead of the
        job's name; ``one_process``: one worker process (no ``--nworkers``), as each GPU
        worker is."""
        tokens = [
            self.python,
            "-m",
            self.worker_command,
            self.scheduler,
            "--name",
            str(self.name) if name is None else name,
            "--nthreads",
            str(self.worker_process_threads),
            "--memory-limit",
            self.worker_process_memory,
        ]
        default_command = self.worker_command == "distributed.cli.dask_worker"
        if default_command:
            if self.worker_processes > 1 and not one_process:
                tokens += ["--nworkers", str(self.worker_processes)]
            tokens.append("--nanny" if self.nanny else "--no-nanny")
        if self.death_timeout is not None:
            tokens += ["--death-timeout", f"{self.death_timeout:g}"]
        if self.local_directory is not None:
            tokens += ["--local-directory", str(self.local_directory)]
        if self.gpus is not None:
            tokens += with_resource(self.worker_extra_args, "GPU", "1")
        else:
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

    def worker_lines(self) -> list[str]:
        """The lines of the job script starting its workers: one worker command, or one per
        GPU (:func:`~dask_jobqueue.layout.gpu_worker_lines`), on every node through the
        launcher for a job of several nodes (:func:`~dask_jobqueue.layout.node_script_lines`)."""
        if self.node_launcher is None:
            if self.gpus is None:
                return [self.worker_command_line()]
            return self._gpu_lines(str(self.name))
        if self.gpus is None:
            node_lines = ["exec " + join_command(self.worker_command_tokens(NODE_WORKER_NAME))]
        else:
            # the node's status is its first worker's: a failed worker fails the launcher
            node_lines = [*self._gpu_lines(NODE_WORKER_NAME), f'exit "${STATUS_VAR}"']
        return node_script_lines(self, self.node_launcher, node_lines, self.nodes, str(self.name))

    def _gpu_lines(self, name: str) -> list[str]:
        assert self.gpus is not None
        suffixed = self.gpus > 1
        return gpu_worker_lines(
            self.gpus,
            lambda i: join_command(
                self.worker_command_tokens(f"{name}-{i}" if suffixed else name, one_process=True)
            ),
        )

    def worker_shell_command(self) -> str:
        """:meth:`worker_lines` as one shell command (for batch systems running a command
        line rather than a script: HTCondor, OAR): the worker command, or ``bash -c`` of the
        lines."""
        lines = self.worker_lines()
        if len(lines) == 1:
            return lines[0]
        return join_command(["bash", "-c", one_line(lines)], keep_env=False)

    def scheduler_check_line(self) -> str | None:
        """One shell line that ends the job (status 0) when the scheduler does not accept
        TCP connections within a few seconds, or ``None`` (``scheduler_check=False``).
        For one-line commands (HTCondor, OAR); job scripts use :meth:`scheduler_check_lines`.

        The check is plain Python run with the job's ``python`` after the prologue (which
        may set that Python up), without ``site`` (``-S``: the standard library is all it
        needs, and skipping site-packages' ``.pth`` files halves its start-up). It exits 3 when the scheduler is
        unreachable, and only that status ends the job: if the check itself cannot run, the
        workers start and report the problem themselves. Protocols other than ``tcp://`` and
        ``tls://`` are not checked.
        """
        if not self.scheduler_check:
            return None
        return (
            f"{join_command([self.python, '-S', '-c', _SCHEDULER_CHECK, self.scheduler])} "
            "|| test $? -ne 3 || exit 0"
        )

    def scheduler_check_lines(self) -> list[str]:
        """The same check as :meth:`scheduler_check_line`, readable: a comment and a
        here-document (for job scripts). Empty with ``scheduler_check=False``."""
        if not self.scheduler_check:
            return []
        return [
            "# Exit at once (status 0) if the Dask scheduler is gone (scheduler_check=False "
            "removes this)",
            f"{join_command([self.python, '-S', '-', self.scheduler])} <<'DASK_JOBQUEUE_CHECK' "
            "|| test $? -ne 3 || exit 0",
            _SCHEDULER_CHECK_SOURCE.rstrip("\n"),
            "DASK_JOBQUEUE_CHECK",
        ]

    def job_script(self) -> str:
        """The complete batch script: shebang, header, prologue, scheduler check, workers,
        epilogue."""
        parts = [self.shebang, ""]
        if self.job_header:
            parts.append(self.job_header)
        parts += self.job_script_prologue
        parts += self.scheduler_check_lines()
        parts += self.worker_lines()
        parts += self.job_script_epilogue
        return "\n".join(parts) + "\n"

    # ------------------------------------------------------------------ batch-system commands

    def submit_argv(self, script_path: str) -> list[str]:
        """Command line that submits the script at ``script_path``."""
        return [*self._split(self.submit_command), *self.submit_command_extra, script_path]

    def array_submit_argv(self, script_path: str, script: str) -> list[str]:
        """Command line that submits the job-array script ``script`` (written at
        ``script_path``); the engine adds the dialect's array arguments."""
        return self.submit_argv(script_path)

    def submit_stdin(self, script: str) -> str | None:
        """Text to feed the submit command on stdin (``None``: nothing)."""
        return None

    def cancel_argv(self, job_ids: Sequence[str]) -> list[str]:
        """Command line that cancels all ``job_ids`` in one call."""
        return [*self._split(self.cancel_command), *self.cancel_command_extra, *job_ids]

    def array_support_for(self, facts: dict) -> ArraySupport | None:
        """Array support at this site (``facts``: what the engine learned, e.g. the PBS
        flavour)."""
        return type(self).array_support

    def output_files(self, job_id: str) -> list[Path]:
        """Files that may hold this job's stderr, most useful first."""
        return []

    @staticmethod
    def _split(command: str | None) -> list[str]:
        if not command:
            raise ValueError("this job class has no submit/cancel command configured")
        return shlex.split(command)

    def job_id_from_submit_output(self, out: str) -> str:
        """Extract the job id from the submit command's stdout.

        ``job_id_regexp`` is searched line by line (``^``/``$`` match at each line), so an
        anchored pattern ignores banner lines; if an anchored pattern matches two different
        ids the output is ambiguous and refused rather than guessed.
        """
        matches = list(re.finditer(self.job_id_regexp, out, re.MULTILINE))
        if not matches:
            raise ValueError(
                f"Could not parse the job id from the submit command output using the "
                f"regular expression {self.job_id_regexp!r}. Output:\n{out}"
            )
        try:
            ids = list(dict.fromkeys(m.group("job_id") for m in matches))
        except IndexError:
            raise ValueError(
                f"You need to use a 'job_id' named group in the regular expression "
                f"job_id_regexp, e.g. r'(?P<job_id>\\d+)'; got {self.job_id_regexp!r}"
            ) from None
        if len(ids) > 1 and self.job_id_regexp.startswith("^"):
            raise ValueError(
                f"The submit command output names several job ids ({', '.join(ids)}); "
                f"refusing to guess which one is this job's. Output:\n{out}"
            )
        return ids[0]

    # keep the upstream private name working for users who called it
    _job_id_from_submit_output = job_id_from_submit_output

    def batch_system(self) -> BatchSystem:
        """A batch-system engine for this job alone, with the settings of its
        ``jobqueue.<config_name>`` section (a cluster shares one engine for all its jobs)."""
        settings = resolve_engine_settings(self.config_name or self.default_config_name())
        return self.batch_system_cls.from_settings(self, settings)

    async def submit(self, timeout: float | None = None) -> str:
        """Submit the job and return its id (also stored as ``job_id``).

        For a job used on its own (a cluster submits its jobs through its engine): the
        engine that submits it keeps it until :meth:`close` cancels it, and cancels it at
        interpreter exit if it is still there, as a cluster does with its jobs.
        """
        engine = self.batch_system()
        if timeout is not None:
            engine.submit_timeout = timeout
        # the engine holds this job (its template): it stays alive until close() or exit
        self._engine = engine
        self._exit_cancel = weakref.finalize(self, engine.cancel_sync)
        try:
            return await engine.submit(self)
        except Exception:
            self._forget_engine()  # nothing submitted (a cancelled wait keeps the finalizer)
            raise
        finally:
            engine.close()  # a submission still running cancels what it creates

    async def cancel_jobs(self, job_ids: Sequence[str], timeout: float | None = None) -> None:
        """Cancel ``job_ids`` in as few commands as possible; failures are logged (and the
        jobs this job's own submission created are tried again at interpreter exit)."""
        if not job_ids:
            return
        engine = self._engine if self._engine is not None else self.batch_system()
        if timeout is not None:
            engine.cancel_timeout = timeout
        await engine.cancel(job_ids)
        self._forget_engine()

    def _forget_engine(self) -> None:
        """Drop the engine of this job's own submission once it holds no live job."""
        if self._engine is not None and not self._engine.live_ids:
            if self._exit_cancel is not None:
                self._exit_cancel.detach()
            self._engine = self._exit_cancel = None

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


Job.__doc__ = with_parameters(Job.__doc__, Job.documented_options())


_STDERR_TAIL_LINES = 20


def explain_death(job: Job, record: JobRecord) -> str:
    """Why a job ended badly, in one message: id, state, exit code, reason, and the last
    lines of its output file (its stderr) when one can be found."""
    what = f"Job {record.job_id} ({job.name}) {record.state.value}"
    if record.exit_code is not None:
        what += f" with exit code {record.exit_code}"
    if not record.ever_connected:
        what += " before its workers connected"
    if record.reason:
        what += f" ({record.reason})"
    paths = job.output_files(record.job_id)
    for path in paths:
        tail = _tail(path, _STDERR_TAIL_LINES)
        if tail:
            # the job script's own diagnosis first: the address, the node, what to change
            unreachable = [line for line in tail.splitlines() if line.startswith(_UNREACHABLE)]
            if unreachable:
                return f"{what}: {unreachable[-1].removeprefix('dask-jobqueue: ')} (from {path})"
            return f"{what}. Last lines of {path}:\n{tail}"
    if job.scheduler_check and record.exit_code == 0 and not record.ever_connected:
        # a job that did nothing and ended with status 0 is what the check does when the
        # scheduler is unreachable; its line is in the output this process cannot see
        what += (
            f". Most likely its scheduler check could not reach the Dask scheduler at "
            f"{job.scheduler} from the compute node: set interface (e.g. ib0) to "
            "a network the compute nodes share with the scheduler host, or "
            "scheduler_options contact_address or host to an address they can reach"
        )
    if paths:
        return f"{what}. No output found in {', '.join(str(p) for p in paths)}"
    return f"{what}. Set log_directory= to keep the jobs' output files."


_UNREACHABLE = SCHEDULER_UNREACHABLE_MESSAGE.split("{", 1)[0]


def _tail(path: Path | str, lines: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 16384))
            data = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(data.strip().splitlines()[-lines:])
