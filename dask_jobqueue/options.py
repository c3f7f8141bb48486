"""Every keyword of the jobs and clusters, declared once as data, and resolved in one place.

An :class:`Option` names a keyword, its ``jobqueue.yaml`` key, how it is checked, its default
and its one description. Job classes list theirs in a class-level ``options`` tuple (merged
along the class hierarchy, a subclass may replace an inherited declaration of the same name);
:func:`resolve_options` turns keyword arguments into checked values (keyword, then
``jobqueue.<config_name>.<key>``, then default); the ``Parameters`` sections of the class
docstrings are generated from the same declarations by :func:`parameters_section`.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import os
import re
import sys
import tempfile
import textwrap
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dask.config
from distributed.security import Security

from ._values import (
    MIN_JOB_MEMORY,
    USUAL_JOB_MEMORY,
    check_bool,
    check_directive_list,
    check_name,
    check_resource_list,
    check_shared_directory,
    check_shebang,
    check_string_list,
    check_text,
    check_word,
    format_size,
    parse_duration,
    parse_memory,
    parse_positive_int,
    parse_walltime,
)

if TYPE_CHECKING:
    from .job import Job

__all__ = [
    "Option",
    "EngineSettings",
    "UnknownKeywordError",
    "JOB_OPTIONS",
    "JOB_IDENTITY",
    "CLUSTER_OPTIONS",
    "ENGINE_OPTIONS",
    "accepted_keywords",
    "check_config_section",
    "config_section",
    "declared_options",
    "parameters_section",
    "resolve_engine_settings",
    "resolve_options",
    "with_parameters",
]

Check = Callable[[Any, str, type], Any]
Factory = Callable[[Mapping[str, Any], type], Any]


@dataclass(frozen=True)
class Option:
    """One keyword of a job or cluster.

    Parameters
    ----------
    name : str
        The keyword.
    type : str
        One-line type shown in the docs, e.g. ``"int"`` or ``"list of str"``.
    doc : str
        The one description of the keyword (reStructuredText, used in every docstring).
    key : str or None
        Key in ``jobqueue.<config_name>``; ``""`` (the default) derives it from ``name``
        (underscores become dashes); ``None``: the keyword cannot be set in the config.
    default : object
        Value when neither the keyword nor the config sets one.
    default_factory : callable, optional
        ``(values_so_far, owner) -> default``, for defaults computed from other options.
    check : callable, optional
        ``(value, keyword, owner) -> value``: validates and normalises a non-``None`` value,
        raising ``ValueError`` that names the keyword.
    renamed_from : str, optional
        Deprecated former keyword: still honoured (with a ``FutureWarning``) when this one is
        empty.
    attr : str, optional
        Attribute of the job holding the value (default: ``name``).
    required : str, optional
        Error message when the option ends up ``None``.
    sexagesimal : bool
        An integer from the config is refused: YAML reads an unquoted ``12:00:00`` as the
        base-60 integer 43200.
    """

    name: str
    type: str
    doc: str
    key: str | None = ""
    default: Any = None
    default_factory: Factory | None = None
    check: Check | None = None
    renamed_from: str | None = None
    attr: str | None = None
    required: str | None = None
    sexagesimal: bool = False

    @property
    def config_key(self) -> str | None:
        if self.key is None:
            return None
        return self.key or self.name.replace("_", "-")

    @property
    def alias_key(self) -> str | None:
        return None if self.renamed_from is None else self.renamed_from.replace("_", "-")

    @property
    def attribute(self) -> str:
        return self.attr or self.name


class UnknownKeywordError(ValueError, TypeError):
    """A keyword no declaration accepts (a ``TypeError`` too, like Python's own)."""


@dataclass(frozen=True)
class EngineSettings:
    """Cluster-wide settings of the poller and the submitter, all checked positive."""

    poll_interval: float = 2.0
    poll_interval_max: float = 30.0
    status_timeout: float = 30.0
    submit_timeout: float = 120.0
    submit_concurrency: int = 8
    max_consecutive_failures: int = 3
    resubmit_backoff: float = 2.0
    vanish_grace: float = 30.0
    owner_watchdog: bool = True
    replace_before_walltime: bool = True
    walltime_margin: float | None = None
    walltime_stagger: float | None = None
    job_arrays: str = "auto"
    max_array_size: int | None = None
    submit_rate_limit: float | None = None
    submit_attempts: int = 4
    max_jobs: int = 100_000
    command_rate_limit: float | None = None
    command_burst: int = 10
    adapt_idle_timeout: float = 60.0


# ---------------------------------------------------------------------------- checks


def _plain(fn: Callable[[Any, str], Any]) -> Check:
    return lambda value, keyword, owner: fn(value, keyword)


def _memory(value: Any, keyword: str, owner: type) -> int:
    nbytes = parse_memory(value, keyword, MIN_JOB_MEMORY)
    if nbytes < USUAL_JOB_MEMORY:
        warnings.warn(
            f"{keyword}={value!r} is less than {format_size(USUAL_JOB_MEMORY)} per job: a Dask "
            "worker process alone uses more, so it may be paused or restarted as soon as it "
            "starts. Used as given.",
            UserWarning,
            stacklevel=5,
        )
    return nbytes


def check_writable_directory(value: Any, keyword: str, probe: bool = False) -> None:
    """``ValueError`` naming ``keyword`` when ``value`` is an existing directory this user
    cannot create files in: refused when the job is built, not when its first files cannot
    be written (one ``access`` call; a path with ``$VARIABLES`` is the job shell's).

    With ``probe``, a file is also created and removed there: ``access`` says yes to root
    for directories no one can create files in (``/proc``). Used where this process itself
    writes into the directory (the local backend's job scripts)."""
    path = os.path.expandvars(os.path.expanduser(str(value)))
    if "$" in path or not os.path.isdir(path):
        return
    writable = os.access(path, os.W_OK | os.X_OK)
    if writable and probe:
        try:
            with tempfile.TemporaryFile(dir=path):
                pass
        except OSError:
            writable = False
    if not writable:
        raise ValueError(
            f"{keyword}={value!r} is a directory this user cannot write to: the jobs could "
            "not write their files there. Choose a directory you can write to, on a "
            "filesystem the compute nodes share."
        )


def _memory_from_gpus(values: Mapping[str, Any], owner: type) -> int | None:
    # mem_per_gpu instead of memory: the job's memory is what its GPUs ask for
    if values.get("mem_per_gpu") is None or values.get("gpus") is None:
        return None
    return values["gpus"] * values["mem_per_gpu"]


def _directory(value: Any, keyword: str, owner: type) -> str:
    path = os.path.expanduser(check_shared_directory(value, keyword, "the jobs' output files"))
    check_writable_directory(value, keyword)
    # the dialect refuses a path its header directives cannot carry (before any submission)
    check = getattr(owner, "check_log_directory", None)
    if check is not None:
        check(path, keyword)
    return path


def _scratch_directory(value: Any, keyword: str, owner: type) -> str:
    return check_shared_directory(value, keyword, "the files the workers spill and load")


def _walltime(value: Any, keyword: str, owner: type) -> str:
    forms = getattr(owner, "walltime_forms", ("hh:mm:ss", "seconds"))
    if isinstance(value, int) and not isinstance(value, bool):
        # refused like an integer from the YAML file: its unit depends on the scheduler
        hours, rest = divmod(value, 3600)
        if "hh:mm:ss" in forms:
            example = f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
        else:
            example = f"{hours:02d}:{-(-rest // 60):02d}"
        raise ValueError(
            f"{keyword}={value} is an integer, which batch systems read differently (Slurm "
            "and LSF as minutes, PBS and Grid Engine as seconds): give a string, e.g. "
            f"{keyword}={example!r} for {value} seconds, or {keyword}='{value}' for this "
            "scheduler's own reading of a bare number"
        )
    text = check_text(value, keyword)
    if parse_walltime(text, forms, keyword) == 0:
        raise ValueError(f"{keyword}={value!r} is zero: a job needs some time to run")
    return text


def _duration(value: Any, keyword: str, owner: type) -> float:
    return parse_duration(value, keyword)


def _interface(value: Any, keyword: str, owner: type) -> str:
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
        raise ValueError(
            f"{keyword}={value!r} must be the name of a network interface, e.g. 'ib0' or 'eth0'"
        )
    return value


def _protocol(value: Any, keyword: str, owner: type) -> str:
    from distributed.comm.registry import backends, get_backend

    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
        raise ValueError(f"{keyword}={value!r} must be a protocol such as 'tcp://' or 'tls://'")
    scheme = value.removesuffix("://")
    try:
        # the registry also loads backends that packages install as entry points
        get_backend(scheme)
    except ValueError:
        known = ", ".join(repr(f"{name}://") for name in sorted(backends))
        raise ValueError(
            f"{keyword}={value!r} is not a protocol Dask knows; known protocols: {known}"
        ) from None
    return value


def _port(value: Any, keyword: str) -> int | str | None:
    text = str(value)
    if isinstance(value, bool) or not (isinstance(value, int) or text.isdigit()):
        raise ValueError(f"{keyword}={value!r} must be a port number (0 for any free port)")
    if not 0 <= int(text) <= 65535:
        raise ValueError(
            f"{keyword}={value!r} is not a port number: ports go from 1 to 65535 (0 picks "
            "any free port)"
        )
    return value


def _contact_address(value: Any, keyword: str, owner: type) -> str:
    text = check_text(value, keyword)
    scheme, sep, rest = text.partition("://")
    host, _, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(
            f"{keyword}={value!r} must be an address such as 'tcp://10.0.0.1:8786' (protocol, "
            "host and port: the address the workers connect to)"
        )
    _protocol(scheme, keyword, owner)
    return text


def _scheduler_options(value: Any, keyword: str, owner: type) -> dict:
    """The scheduler's keyword arguments, with the ones whose bad values would only surface
    as a chained "Scheduler failed to start" traceback checked here, under their name."""
    options = _mapping(value, keyword, owner)
    for key, check in (
        ("port", lambda v, k, o: _port(v, k)),
        ("protocol", _protocol),
        ("interface", _interface),
        ("host", WORD),
        ("contact_address", _contact_address),
    ):
        if options.get(key) is not None:
            check(options[key], f"{keyword}[{key!r}]", owner)
    return options


def _job_security(value: Any, keyword: str, owner: type) -> Security:
    if not isinstance(value, Security):
        raise ValueError(f"{keyword}={value!r} must be a distributed.Security object")
    return value


def _cluster_security(value: Any, keyword: str, owner: type) -> Security | bool:
    if not isinstance(value, (Security, bool)):
        raise ValueError(
            f"{keyword}={value!r} must be a distributed.Security object, or True for "
            "temporary credentials"
        )
    return value


def _mapping(value: Any, keyword: str, owner: type) -> dict:
    if not isinstance(value, Mapping):
        raise ValueError(
            f"{keyword}={value!r} must be a dict, e.g. {{'dashboard_address': ':8787'}}"
        )
    return dict(value)


def _pools(value: Any, keyword: str, owner: type) -> dict[str, dict[str, Any]]:
    if not isinstance(value, Mapping) or not all(
        isinstance(name, str) and isinstance(kwargs, Mapping) for name, kwargs in value.items()
    ):
        raise ValueError(
            f"{keyword}={value!r} must map each pool's name to its keywords, "
            "e.g. {'gpu': {'queue': 'gpu', 'cores': 8}}"
        )
    return {
        name: {str(k).replace("-", "_"): v for k, v in kwargs.items()}
        for name, kwargs in value.items()
    }


def _worker_command(value: Any, keyword: str, owner: type) -> str:
    if not isinstance(value, str) or not re.match(r"^[A-Za-z_][\w.]*$", value):
        raise ValueError(
            f"{keyword}={value!r} must be a Python module name run as `python -m <module>`, "
            "e.g. 'distributed.cli.dask_worker'"
        )
    return value


def _prologue(value: Any, keyword: str, owner: type) -> list[str]:
    return [line for line in check_string_list(value, keyword) if line.strip()]


def _type(value: Any, keyword: str, owner: type) -> type:
    if not isinstance(value, type):
        raise ValueError(f"{keyword}={value!r} must be a class")
    return value


def _job_name(value: Any, keyword: str, owner: type) -> str:
    """A job name: written in the job's header, where no shell expands ``$VARIABLES``."""
    try:
        check_name(value, keyword)  # the characters every name may hold ($VAR, ${VAR} too)
    except ValueError:
        raise ValueError(
            f"{keyword}={value!r} is not a valid name: use letters, digits and "
            "_ . + @ % : - (a job name is written in the job's header, where $VARIABLES are not "
            "expanded)"
        ) from None
    if "$" in value:
        warnings.warn(
            f"{keyword}={value!r} is written as is in the job's header: batch systems do not "
            "expand $VARIABLES there, so every job is named literally "
            f"{value!r}",
            UserWarning,
            stacklevel=5,
        )
    return value


def _identifier(value: Any, keyword: str, owner: type) -> str:
    """A name such as a resource property (letters, digits and ``_``), given as a string."""
    if not isinstance(value, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", value):
        raise ValueError(
            f"{keyword}={value!r} must be a name given as a string (letters, digits and _, "
            "not starting with a digit), e.g. 'memcore'"
        )
    return value


def _gpu_type(value: Any, keyword: str, owner: type) -> str:
    """A GPU model name: it is written in the job's header, so letters, digits and
    ``_ . -`` only (no quoting needed in any dialect), not starting with ``-``."""
    if not isinstance(value, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", value):
        raise ValueError(
            f"{keyword}={value!r} must be a GPU model name given as a string of letters, "
            "digits and _ . - (e.g. 'a100'), as the batch system names it"
        )
    return value


def _int_at_least_zero(value: Any, keyword: str, owner: type) -> int:
    return parse_positive_int(value, keyword, allow_zero=True)


# ---------------------------------------------------------------------------- declarations

# Checks for declarations, ``(value, keyword, owner) -> value``; dialects use them too.
WORD: Check = _plain(check_word)
TEXT: Check = _plain(check_text)
STRINGS: Check = _plain(check_string_list)


def _directives(value: Any, keyword: str, owner: type) -> list[str]:
    """Directive lines without the prefix (the job writes it): a line that repeats the
    scheduler's prefix (``'#SBATCH --gres=gpu:1'``) loses it, with a warning, instead of
    becoming ``#SBATCH #SBATCH --gres=gpu:1``, which the batch system ignores."""
    lines = check_directive_list(value, keyword)
    prefix = getattr(owner, "directive_prefix", "")
    if not prefix:
        return lines
    kept = []
    for line in lines:
        rest = line.lstrip()
        if rest.startswith(prefix) and (rest == prefix or rest[len(prefix)].isspace()):
            rest = rest[len(prefix) :].strip()
            warnings.warn(
                f"{keyword}: {line!r} starts with {prefix!r}, which is added to every line: "
                f"written as {prefix} {rest} (remove {prefix!r} from the value)",
                UserWarning,
                stacklevel=5,
            )
            if not rest:
                continue
            line = rest
        kept.append(line)
    return kept


DIRECTIVES: Check = _directives
POSITIVE_INT: Check = _plain(parse_positive_int)
IDENTIFIER: Check = _identifier


def _job_arrays(value: Any, keyword: str, owner: type) -> str:
    if value not in ("auto", "never"):
        raise ValueError(f"{keyword}={value!r} must be 'auto' or 'never'")
    return value


def _rate_per_minute(value: Any, keyword: str, owner: type) -> float:
    try:
        rate = float(value)
    except (TypeError, ValueError):
        rate = -1.0
    if isinstance(value, bool) or not rate > 0 or rate == float("inf"):
        raise ValueError(f"{keyword}={value!r} must be a positive number (commands per minute)")
    return rate


def _rate(value: Any, keyword: str, owner: type) -> float:
    try:
        rate = float(value)
    except (TypeError, ValueError):
        rate = -1.0
    if isinstance(value, bool) or not rate > 0 or rate == float("inf"):
        raise ValueError(f"{keyword}={value!r} must be a positive number (submissions per second)")
    return rate


BOOL: Check = _plain(check_bool)
SIZE: Check = _plain(parse_memory)

#: Keywords every job accepts (``Job.__init__``), in resolution order.
JOB_OPTIONS: tuple[Option, ...] = (
    Option(
        "cores",
        "int",
        "Total number of CPU cores per job, shared by its worker processes. "
        "Required (keyword or config).",
        check=POSITIVE_INT,
        attr="worker_cores",
    ),
    Option(
        "gpus",
        "int",
        "GPUs per job (per node with ``nodes``), requested the way the batch system asks "
        "for them. The job runs one worker per GPU (``processes`` defaults to ``gpus``), "
        "each seeing one device (``CUDA_VISIBLE_DEVICES``) and advertising the worker "
        "resource ``GPU: 1``. Default: none.",
        check=POSITIVE_INT,
    ),
    Option(
        "gpu_type",
        "str",
        "GPU model the job's ``gpus`` must be, as the batch system names it (letters, "
        "digits, ``_ . -``). Slurm: ``--gpus=<type>:<gpus>`` (``--gpus-per-node`` with "
        '``nodes``); LSF: ``-gpu "num=<gpus>:gmodel=<type>"``; HTCondor: ``require_gpus`` '
        "on ``DeviceName``. PBS, Moab, SGE, OAR and the local backend have no standard form "
        "and refuse it (use the site's resource through ``job_extra_directives``). Needs "
        "``gpus``. Default: any model.",
        check=_gpu_type,
    ),
    Option(
        "mem_per_gpu",
        "str",
        "Memory per GPU, instead of ``memory`` (Slurm: ``--mem-per-gpu``; elsewhere "
        "``memory`` becomes ``gpus`` times this). Needs ``gpus``.",
        check=_memory,
    ),
    Option(
        "memory",
        "str",
        "Total memory per job, e.g. ``'24GB'`` (decimal ``GB``) or ``'22GiB'`` "
        "(binary). Required (keyword or config) unless ``mem_per_gpu`` is given; less than "
        "1 MiB is refused (a forgotten unit), less than 32 MiB warns.",
        default_factory=_memory_from_gpus,
        check=_memory,
        attr="worker_memory",
    ),
    Option(
        "processes",
        "int",
        "Number of Dask worker processes per job; the cores are split "
        "evenly between them. Default: ``gpus`` when given, else about the square root "
        "of ``cores``.",
        default_factory=lambda values, owner: values.get("gpus"),
        check=POSITIVE_INT,
        attr="worker_processes",
    ),
    Option(
        "nodes",
        "int",
        "Nodes per job: one batch job over this many nodes, ``cores``, ``memory``, "
        "``processes`` and ``gpus`` per node, the workers started on every node by "
        "``launcher``. Default: 1.",
        default=1,
        check=POSITIVE_INT,
    ),
    Option(
        "launcher",
        "str",
        "Command starting the workers on every node of a job of several ``nodes`` (Slurm: "
        "``'srun'``). Default: the batch system's own.",
        check=WORD,
    ),
    Option(
        "nanny",
        "bool",
        "Start the workers under a nanny process (``--nanny``).",
        key=None,
        default=True,
        check=BOOL,
    ),
    Option(
        "protocol",
        "str",
        "Protocol of the workers' addresses, e.g. ``'tcp://'`` or ``'tls://'``.",
        key=None,
        check=_protocol,
    ),
    Option(
        "security",
        "distributed.Security",
        "TLS settings; the workers get the ``--tls-*`` options.",
        key=None,
        check=_job_security,
    ),
    Option(
        "interface",
        "str",
        "Network interface the workers (and, unless "
        "``scheduler_options`` says otherwise, the scheduler) listen on, e.g. ``'ib0'``.",
        check=_interface,
    ),
    Option(
        "death_timeout",
        "float or str",
        "Seconds a worker waits for an unreachable "
        "scheduler before it exits, e.g. ``60`` or ``'2m'``.",
        check=_duration,
    ),
    Option(
        "local_directory",
        "str",
        "Scratch directory of the workers on the compute node; "
        "``$VARIABLES`` are expanded by the job's shell. A directory (or parent) that "
        "every user may write to without a sticky bit is refused.",
        check=_scratch_directory,
    ),
    Option(
        "worker_command",
        "str",
        "Python module run as ``python -m <module>`` in each "
        "job; other modules than the default get no ``--nworkers``/``--nanny``.",
        default="distributed.cli.dask_worker",
        check=_worker_command,
    ),
    Option(
        "worker_extra_args",
        "list of str",
        "Extra arguments of the worker command, e.g. ``['--lifetime', '55m']``.",
        default=(),
        check=STRINGS,
        renamed_from="extra",
    ),
    Option(
        "job_extra_directives",
        "list of str",
        "Extra header directives, written after "
        "the generated ones with the scheduler's prefix (never dropped by "
        "``job_directives_skip``).",
        default=(),
        check=DIRECTIVES,
        renamed_from="job_extra",
    ),
    Option(
        "job_directives_skip",
        "list of str",
        "Generated header lines containing any of these strings are left out.",
        default=(),
        check=STRINGS,
        renamed_from="header_skip",
    ),
    Option(
        "job_script_prologue",
        "list of str",
        "Shell lines run before the workers start, e.g. ``['module load python']``.",
        default=(),
        check=_prologue,
        renamed_from="env_extra",
    ),
    Option(
        "job_script_epilogue",
        "list of str",
        "Shell lines run after the workers stop.",
        default=(),
        check=_prologue,
    ),
    Option(
        "log_directory",
        "str",
        "Directory for the jobs' output and error files. It is "
        "created when the cluster (or job) is built, as in 0.9; a leading ``~`` is expanded here, since "
        "batch systems write it literally. It is quoted in the header directives (spaces "
        "are fine); a character the scheduler cannot carry there, and a directory (or "
        "parent) that every user may write to without a sticky bit, are refused.",
        check=_directory,
    ),
    Option(
        "shebang",
        "str",
        "First line of the job script; must start with ``#!``.",
        default_factory=lambda values, owner: getattr(
            owner, "default_shebang", "#!/usr/bin/env bash"
        ),
        check=_plain(check_shebang),
    ),
    Option(
        "python",
        "str",
        "Python executable on the compute nodes. Default: the Python running this process.",
        default_factory=lambda values, owner: sys.executable,
        check=TEXT,
    ),
    Option(
        "scheduler_check",
        "bool",
        "Check, at the top of the job script, that the "
        "scheduler accepts TCP connections (for up to 5 seconds) before starting the "
        "workers; a job whose scheduler is gone prints one line to stderr and exits "
        "with status 0 at once instead of waiting ``death_timeout``.",
        default=True,
        check=BOOL,
    ),
    Option(
        "job_name",
        "str",
        "Name of the batch jobs.",
        key="name",
        default="dask-worker",
        check=_job_name,
    ),
    Option(
        "submit_command_extra",
        "list of str",
        "Extra arguments of the submit command.",
        default=(),
        check=STRINGS,
    ),
    Option(
        "cancel_command_extra",
        "list of str",
        "Extra arguments of the cancel command.",
        default=(),
        check=STRINGS,
    ),
)

#: Keywords of a job that are not options: set by the cluster for each job.
JOB_IDENTITY: tuple[Option, ...] = (
    Option("scheduler", "str", "Address of the Dask scheduler the workers connect to.", key=None),
    Option(
        "name",
        "str",
        "Name of the job's worker (``--name``); with several processes "
        "the workers are named ``<name>-<i>``.",
        key=None,
    ),
    Option(
        "config_name",
        "str",
        "Section of ``jobqueue.yaml`` to read (``jobqueue.<name>``). "
        "Default: the class's ``config_name``.",
        key=None,
    ),
)

JOB_OPTIONS_BY_NAME: Mapping[str, Option] = {o.name: o for o in JOB_OPTIONS}

# Scheduler options shared by several dialects (each dialect lists the ones it accepts).
QUEUE = Option(
    "queue",
    "str",
    "Queue (Slurm: partition) the jobs are submitted to. One word: "
    "whitespace, quotes and shell metacharacters are refused.",
    check=WORD,
)
ACCOUNT = Option(
    "account",
    "str",
    "Account charged for the jobs. One word, like ``queue``.",
    check=WORD,
    renamed_from="project",
)
PROJECT = Option(
    "project", "str", "Project the jobs belong to. One word, like ``queue``.", check=WORD
)
WALLTIME = Option(
    "walltime",
    "str",
    "Time limit of each job, in a form the scheduler "
    "accepts (``'01:30:00'``; LSF ``'01:30'``). Quote it in YAML: an unquoted "
    "``12:00:00`` is read as the integer 43200.",
    check=_walltime,
    sexagesimal=True,
)
RESOURCE_SPEC = Option(
    "resource_spec",
    "str",
    "Resource request written verbatim after "
    "the scheduler's ``-l``: one resource list, without blanks or "
    "quotes.",
    check=_plain(check_resource_list),
)
#: Keywords of ``JobQueueCluster.__init__`` (job keywords come on top of these).
CLUSTER_OPTIONS: tuple[Option, ...] = (
    Option(
        "n_workers",
        "int",
        "Workers (not jobs) to start right away.",
        key=None,
        default=0,
        check=_int_at_least_zero,
    ),
    Option(
        "job_cls",
        "type",
        "The :class:`~dask_jobqueue.job.Job` subclass to run; needed only "
        "when using ``JobQueueCluster`` directly.",
        key=None,
        check=_type,
    ),
    Option(
        "loop",
        "tornado.ioloop.IOLoop",
        "Event loop to run on (see :class:`distributed.deploy.spec.SpecCluster`).",
        key=None,
    ),
    Option(
        "security",
        "distributed.Security or bool",
        "TLS settings of scheduler and "
        "workers; ``True`` creates temporary credentials (needs ``cryptography``).",
        key=None,
        check=_cluster_security,
    ),
    Option(
        "shared_temp_directory",
        "str",
        "Directory seen by the scheduler's host and the "
        "workers, where temporary TLS credentials are written. Default: the current "
        "directory (with a warning).",
        check=TEXT,
    ),
    Option(
        "silence_logs",
        "str or bool",
        "Log level of the scheduler's logs shown here, or ``False``.",
        key=None,
        default="error",
    ),
    Option(
        "name",
        "str",
        "Name of the cluster, also the prefix of the worker names.",
        key=None,
        check=_plain(check_name),
    ),
    Option(
        "asynchronous",
        "bool",
        "Use the cluster with ``await`` in a running event loop.",
        key=None,
        default=False,
        check=BOOL,
    ),
    Option(
        "dashboard_address", "str", "Not accepted here: pass it in ``scheduler_options``.", key=None
    ),
    Option("host", "str", "Not accepted here: pass it in ``scheduler_options``.", key=None),
    Option(
        "scheduler_options",
        "dict",
        "Keyword arguments of the scheduler, e.g. ``{'dashboard_address': ':8787', 'host': ...}``.",
        default=None,
        check=_scheduler_options,
    ),
    Option(
        "scheduler_cls",
        "type",
        "Scheduler class. Default: ``distributed.Scheduler``.",
        key=None,
        check=_type,
    ),
    Option(
        "interface",
        "str",
        "Network interface of the workers and, unless "
        "``scheduler_options`` has ``host`` or ``interface``, of the scheduler.",
        check=_interface,
    ),
    Option(
        "protocol",
        "str",
        "Protocol, e.g. ``'tcp://'``; ``'tls://'`` when ``security`` is given.",
        key=None,
        check=_protocol,
    ),
    Option(
        "config_name",
        "str",
        "Section of ``jobqueue.yaml`` to read (``jobqueue.<name>``); "
        "lets you keep named profiles. Default: the job class's section.",
        key=None,
    ),
    Option(
        "scheduler_in_job",
        "bool",
        "Run the Dask scheduler outside this process: in a batch job of its own (a detached "
        "process with the local backend). The cluster gets a name and a record, so that "
        "another process can attach to it (see :meth:`attach`).",
        key=None,
        default=False,
        check=BOOL,
    ),
    Option(
        "cluster_name",
        "str",
        "Name of a ``scheduler_in_job`` cluster, to attach to it from another process. "
        "Default: generated (``dask-<8 hex digits>``).",
        key=None,
    ),
    Option(
        "keep_alive",
        "duration",
        "With ``scheduler_in_job``: how long the cluster outlives this process when it ends "
        "without ``close()`` (e.g. ``'30 minutes'``), for another process to attach. "
        "Default: the cluster ends with this process.",
        key=None,
        check=_duration,
    ),
    Option(
        "scheduler_cores",
        "int",
        "Cores of the scheduler's job. Default: 1.",
        key=None,
        check=_int_at_least_zero,
    ),
    Option(
        "scheduler_memory",
        "str",
        "Memory of the scheduler's job. Default: the workers' job memory, at most 4 GiB.",
        key=None,
    ),
    Option(
        "scheduler_walltime",
        "str",
        "Walltime of the scheduler's job. Default: the workers' ``walltime``.",
        key=None,
        check=TEXT,
    ),
    Option(
        "scheduler_queue",
        "str",
        "Queue of the scheduler's job. Default: the workers' ``queue``.",
        key=None,
        check=TEXT,
    ),
    Option(
        "record_directory",
        "str",
        "Directory of this user's cluster records (mode 0700). Default: "
        "``jobqueue.record-directory`` in the dask config, else "
        "``~/.config/dask-jobqueue/clusters``.",
        key=None,
        check=TEXT,
    ),
    Option(
        "pools",
        "dict of str to dict",
        "Pools to add at construction, ``{name: {keyword: value}}``: each is "
        "``cluster.add_pool(name, **keywords)``, e.g. ``{'gpu': {'queue': 'gpu'}}``.",
        check=_pools,
    ),
)

#: Config-only keys of the cluster's poller and submitter (``jobqueue.<name>.<key>``).
ENGINE_OPTIONS: tuple[Option, ...] = (
    Option(
        "poll_interval",
        "duration",
        "Fastest interval between two status queries.",
        default="2s",
        check=_duration,
    ),
    Option(
        "poll_interval_max",
        "duration",
        "Slowest interval, reached while no job changes state.",
        default="30s",
        check=_duration,
    ),
    Option(
        "status_timeout",
        "duration",
        "Time limit of one status or cancel command.",
        default="30s",
        check=_duration,
    ),
    Option(
        "submit_timeout",
        "duration",
        "Time limit of one submit command.",
        default="120s",
        check=_duration,
    ),
    Option(
        "submit_concurrency",
        "int",
        "Submit commands that may run at the same time.",
        default=8,
        check=POSITIVE_INT,
    ),
    Option(
        "max_consecutive_failures",
        "int",
        "Jobs in a row that may die before their "
        "workers connect before the cluster stops resubmitting.",
        default=3,
        check=POSITIVE_INT,
    ),
    Option(
        "resubmit_backoff",
        "duration",
        "Delay before replacing a dead job; doubles with each consecutive failure.",
        default="2s",
        check=_duration,
    ),
    Option(
        "vanish_grace",
        "duration",
        "How long a job may be missing from every status "
        "command (a restarted controller, late accounting) before it counts as ended; "
        "connected workers always keep it alive.",
        default="30s",
        check=_duration,
    ),
    Option(
        "owner_watchdog",
        "bool",
        "Start a small process with the cluster that cancels "
        "its jobs "
        "if this process dies without closing the cluster (``kill -9``, out of memory).",
        default=True,
        check=BOOL,
    ),
    Option(
        "replace_before_walltime",
        "bool",
        "Submit a replacement for each job ahead of its "
        "walltime and retire its workers before the batch system kills them (when the "
        "walltime is known: keyword, config, or the scheduler's default).",
        default=True,
        check=BOOL,
    ),
    Option(
        "walltime_margin",
        "duration",
        "How long before the walltime workers retire. "
        "Default (empty): max(60s, 5% of the walltime), at most a quarter of it and 15 "
        "minutes.",
        default=None,
        check=_duration,
    ),
    Option(
        "walltime_stagger",
        "duration",
        "Window over which jobs that started together "
        "retire, so they do not all leave at once. Default (empty): 10% of the walltime, "
        "at most 5 minutes.",
        default=None,
        check=_duration,
    ),
    Option(
        "job_arrays",
        "str",
        "``auto``: jobs submitted together go as job arrays (one "
        "submit command, one task per job, split to the site's array size limit) where the "
        "batch system has them; ``never``: one submit command per job.",
        default="auto",
        check=_job_arrays,
    ),
    Option(
        "max_array_size",
        "int",
        "Most tasks of one job array; default: what the batch "
        "system says (Slurm ``MaxArraySize``, ...), else no limit.",
        check=POSITIVE_INT,
    ),
    Option(
        "submit_rate_limit",
        "float",
        "Most submit commands per second (an array submission is one command); default: no limit.",
        check=_rate,
    ),
    Option(
        "submit_attempts",
        "int",
        "Tries of a submission that fails with a transient "
        "error (socket timeout, 'try again later', ...); before each retry the jobs "
        "carrying the submission's tag are adopted instead (batch systems with tags only).",
        default=4,
        check=POSITIVE_INT,
    ),
    Option(
        "max_jobs",
        "int",
        "Most jobs one cluster may ask for: ``scale()``, ``adapt()`` "
        "or ``n_workers`` beyond it raise ``ValueError`` (every job is tracked in this "
        "process).",
        default=100_000,
        check=POSITIVE_INT,
    ),
    Option(
        "command_rate_limit",
        "float",
        "Most batch-system commands per minute, submit, "
        "status and cancel together, for sites that rate-limit their controller; commands "
        "wait their turn. Default: no limit.",
        check=_rate_per_minute,
    ),
    Option(
        "command_burst",
        "int",
        "Commands that may run back to back before "
        "``command_rate_limit`` applies (keep it below the site's own burst).",
        default=10,
        check=POSITIVE_INT,
    ),
    Option(
        "adapt_idle_timeout",
        "duration",
        "Under ``adapt()``, how long a surplus of jobs must last and a job must have run no "
        "task before it is released (``adapt(idle_timeout=...)`` wins). Long enough that a "
        "pause between two computations costs no new job.",
        default="60s",
        check=_duration,
    ),
)


# ---------------------------------------------------------------------------- resolution


def config_section(config_name: str) -> Mapping[str, Any]:
    """The ``jobqueue.<config_name>`` section, or ``ValueError`` if there is none."""
    section = dask.config.get(f"jobqueue.{config_name}", default=None)
    if section is not None and not isinstance(section, Mapping):
        from .config import sources_of

        files = ", ".join(sources_of(f"jobqueue.{config_name}")) or "the dask configuration"
        raise ValueError(
            f"jobqueue.{config_name} is the {type(section).__name__} {section!r} in {files}, "
            f"not a section: write one setting per line, indented under '{config_name}:' "
            "(e.g. 'cores: 4')"
        )
    if not isinstance(section, Mapping):
        raise ValueError(
            f"config_name={config_name!r}: there is no section 'jobqueue.{config_name}' in the "
            "dask configuration (jobqueue.yaml)"
        )
    return section


def _renamed_warning(old: str, new: str) -> str:
    # 0.9's sentence first (warning filters match on it), then what happens to the value.
    return (
        f"{old} has been renamed to {new}. {old!r} is still used when {new!r} is not set "
        f"(also check your config files), and ignored otherwise; it will be removed in a "
        f"future release."
    )


def built_in_section(owner: type, config_name: str) -> Mapping[str, Any]:
    """The built-in defaults a custom section (``config_name="mysite"``) builds on: the
    packaged section of the job class's own scheduler (``slurm`` for ``SLURMJob``). Empty
    for the class's own section (already merged into ``dask.config``) and for classes
    without a packaged section."""
    from .config import packaged_section

    own = getattr(owner, "config_name", None)
    if not isinstance(own, str) or own == config_name:
        return {}
    return packaged_section(own)


def resolve_options(
    options: Iterable[Option],
    config_name: str,
    kwargs: Mapping[str, Any],
    owner: type,
) -> dict[str, Any]:
    """Checked value of every option: keyword, else ``jobqueue.<config_name>.<key>``, else
    the default. A custom section (``config_name`` other than the class's) inherits the
    built-in defaults of the class's section (:func:`built_in_section`) for the keys it
    does not set.

    A deprecated alias (``renamed_from``) set as keyword or in the config warns once and is
    used when the new option is empty. Integer walltimes from the config are refused (YAML
    sexagesimal). Returns ``{name: value}`` in declaration order.
    """
    values: dict[str, Any] = {}
    built_in = built_in_section(owner, config_name)
    for opt in options:
        value = kwargs.get(opt.name)
        from_config = from_alias = False
        if value is None and opt.config_key is not None:
            value = dask.config.get(f"jobqueue.{config_name}.{opt.config_key}", default=None)
            if value is None and built_in.get(opt.config_key) is not None:
                value = copy.deepcopy(built_in[opt.config_key])
            from_config = value is not None
        if opt.renamed_from is not None:
            old = kwargs.get(opt.renamed_from)
            if old is None and opt.alias_key is not None and opt.key is not None:
                old = dask.config.get(f"jobqueue.{config_name}.{opt.alias_key}", default=None)
            if old is not None:
                # the deprecation first, whatever the value: then it is checked as the new
                # keyword's, and an error names the keyword the user wrote
                warnings.warn(
                    _renamed_warning(opt.renamed_from, opt.name), FutureWarning, stacklevel=4
                )
                if not value:
                    value, from_config, from_alias = old, False, True
        if (
            from_config
            and opt.sexagesimal
            and isinstance(value, int)
            and not isinstance(value, bool)
        ):
            h, rest = divmod(value, 3600)
            raise ValueError(
                f"jobqueue.{config_name}.{opt.config_key} is the integer {value}, not a "
                f"{opt.name}: YAML reads an unquoted {h}:{rest // 60:02d}:{rest % 60:02d} as a "
                f"base-60 number. Quote it in the YAML file: {opt.config_key}: "
                f"'{h:02d}:{rest // 60:02d}:{rest % 60:02d}'"
            )
        if value is None:
            if opt.default_factory is not None:
                value = opt.default_factory(values, owner)
            else:
                value = list(opt.default) if isinstance(opt.default, tuple) else opt.default
        if value is None and opt.required:
            raise ValueError(opt.required)
        if value is not None and opt.check is not None:
            try:
                value = opt.check(value, opt.name, owner)
            except ValueError as exc:
                if not from_alias:
                    raise
                raise ValueError(
                    f"{opt.renamed_from}={value!r} (renamed to {opt.name}): {exc}"
                ) from None
        values[opt.name] = value
    return values


def declared_options(cls: type) -> dict[str, Option]:
    """The options of ``cls``: the ``options`` tuples along its MRO, base classes first; a
    subclass's declaration replaces an inherited one of the same name in place."""
    merged: dict[str, Option] = {}
    for klass in reversed(cls.__mro__):
        for opt in klass.__dict__.get("options", ()):
            merged[opt.name] = opt
    return merged


def _foreign_init_parameters(cls: type) -> set[str]:
    """Explicit keyword parameters of ``__init__`` methods written outside this package
    (a user's ``Job`` subclass with its own keywords that calls ``super().__init__``)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        module = getattr(klass, "__module__", "") or ""
        if init is None or module.split(".")[0] in ("dask_jobqueue", "distributed", "builtins"):
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            continue
        for param in params:
            if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
                names.add(param.name)
    names.discard("self")
    return names


def accepted_keywords(job_cls: type) -> set[str]:
    """Keywords a cluster may pass on to ``job_cls`` (beside ``scheduler``/``name``)."""
    options = declared_options(job_cls)
    names = set(options) | {o.renamed_from for o in options.values() if o.renamed_from}
    names |= _foreign_init_parameters(job_cls)
    names.add("config_name")
    return names - {"scheduler", "name"}


def unknown_keyword_error(
    owner: str,
    unknown: Iterable[str],
    accepted: Iterable[str],
    given: Mapping[str, Any] | None = None,
) -> UnknownKeywordError:
    """0.9's wording (the unknown keywords, the class, the ``job_kwargs`` it was given), then
    the keywords that are accepted."""
    unknown = sorted(unknown)
    listed = ", ".join(repr(k) for k in unknown)
    plural = "s" if len(unknown) > 1 else ""
    shown = "" if given is None else f" with job_kwargs={dict(given)!r}"
    return UnknownKeywordError(
        f"Got an unexpected keyword argument{plural} {listed}: {owner} was called{shown}. "
        f"Accepted keywords: {', '.join(sorted(accepted))}"
    )


def _packaged_keys(config_name: str) -> set[str]:
    from .config import packaged_defaults

    section = (packaged_defaults().get("jobqueue") or {}).get(config_name) or {}
    return {str(k) for k in section}


def known_config_keys(job_cls: type, config_name: str | None = None) -> set[str]:
    """Every key a ``jobqueue.<config_name>`` section used with ``job_cls`` may hold: the
    keys of its options, of the cluster and the engine, and those of the packaged section
    of that name (a custom job class may read the ``slurm`` section without using all of it).
    """
    keys: set[str] = set() if config_name is None else _packaged_keys(config_name)
    for opt in (*declared_options(job_cls).values(), *CLUSTER_OPTIONS, *ENGINE_OPTIONS):
        if opt.config_key is not None:
            keys.add(opt.config_key)
            if opt.alias_key is not None:
                keys.add(opt.alias_key)
    keys |= {k.replace("_", "-") for k in _foreign_init_parameters(job_cls)}
    return keys


def check_cluster_arguments(
    cluster_name: str,
    job_cls: type | None,
    config_name: str | None,
    job_kwargs: Mapping[str, Any],
    dashboard_address: str | None = None,
    host: str | None = None,
) -> tuple[type[Job], str]:
    """The checks of a cluster's constructor before anything is resolved: a job class, no
    keyword moved to ``scheduler_options``, a known config section without misspelt keys (a
    warning), no unknown keyword. Returns the job class and the config section's name."""
    from .job import Job  # the job module imports this one

    if job_cls is None:
        raise ValueError(
            "You need to specify a Job type. Two cases:\n"
            "- you are inheriting from JobQueueCluster (most likely): you need to add a "
            f"'job_cls' class variable in your JobQueueCluster-derived class "
            f"{cluster_name}, e.g. job_cls = SLURMJob\n"
            "- you are using JobQueueCluster directly (less likely, only useful for "
            "tests): please explicitly pass a Job type through the 'job_cls' parameter, "
            "e.g. JobQueueCluster(job_cls=SLURMJob, cores=8, memory='24GB')"
        )
    if not (isinstance(job_cls, type) and issubclass(job_cls, Job)):
        raise ValueError(f"job_cls={job_cls!r} must be a subclass of dask_jobqueue.core.Job")
    for keyword, value in (("dashboard_address", dashboard_address), ("host", host)):
        if value is not None:
            raise ValueError(
                f"Please pass '{keyword}' through 'scheduler_options': use\n"
                f'cluster = {cluster_name}(..., scheduler_options={{"{keyword}": "{value}"}})'
            )
    config_name = config_name or job_cls.default_config_name()
    config_section(config_name)
    check_config_section(config_name, known_config_keys(job_cls, config_name))
    accepted = accepted_keywords(job_cls)
    unknown = set(job_kwargs) - accepted
    if unknown:
        raise unknown_keyword_error(cluster_name, unknown, accepted, job_kwargs)
    return job_cls, config_name


def check_config_section(config_name: str, known: Iterable[str]) -> list[str]:
    """Warn (``UserWarning``) about each key of ``jobqueue.<config_name>`` that no option reads,
    naming the closest known key. Returns the unknown keys."""
    known = sorted(set(known))
    unknown = []
    for key in config_section(config_name):
        normal = str(key).replace("_", "-")
        if normal in known:
            continue
        unknown.append(str(key))
        close = difflib.get_close_matches(normal, known, n=1, cutoff=0.4)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        warnings.warn(
            f"jobqueue.{config_name}.{key} is not a known setting and is ignored.{hint}",
            UserWarning,
            stacklevel=4,
        )
    return unknown


def resolve_engine_settings(
    config_name: str, overrides: Mapping[str, Any] | None = None
) -> EngineSettings:
    """Poller and submitter settings from ``jobqueue.<config_name>`` (and ``overrides``,
    keyed by option name or config key), each checked to be positive.

    ``poll-interval-max`` below ``poll-interval`` is raised to it.
    """
    given = {str(k).replace("-", "_"): v for k, v in (overrides or {}).items()}
    unknown = set(given) - {o.name for o in ENGINE_OPTIONS}
    if unknown:
        raise unknown_keyword_error(
            "resolve_engine_settings", unknown, [o.name for o in ENGINE_OPTIONS]
        )
    try:
        values = resolve_options(ENGINE_OPTIONS, config_name, given, EngineSettings)
    except ValueError as exc:
        # name the config key too: these are only ever set in jobqueue.yaml
        raise ValueError(f"jobqueue.{config_name}: {exc}") from None
    values["poll_interval_max"] = max(values["poll_interval_max"], values["poll_interval"])
    return EngineSettings(**values)


# ---------------------------------------------------------------------------- documentation


def parameters_section(options: Iterable[Option]) -> str:
    """A numpydoc ``Parameters`` section documenting ``options`` (and their old names)."""
    lines = ["Parameters", "----------"]
    for opt in options:
        lines.append(f"{opt.name} : {opt.type}")
        doc = opt.doc
        if opt.config_key is not None:
            doc += f" Config key: ``{opt.config_key}``."
        lines += textwrap.wrap(
            doc, width=88, initial_indent="    ", subsequent_indent="    ", break_on_hyphens=False
        )
        if opt.renamed_from is not None:
            lines.append(f"{opt.renamed_from} : {opt.type}")
            lines.append(f"    Deprecated former name of ``{opt.name}``.")
    return "\n".join(lines)


_SECTION_TITLES = ("Examples", "Notes", "See Also", "References", "Attributes", "Methods")


def with_parameters(doc: str | None, options: Sequence[Option]) -> str:
    """``doc`` (cleaned) with a generated ``Parameters`` section inserted before its first
    later section (``Examples``, ``Notes``...), or appended."""
    text = inspect.cleandoc(doc or "")
    lines = text.splitlines()
    cut = len(lines)
    for i in range(len(lines) - 1):
        if lines[i].strip() in _SECTION_TITLES and set(lines[i + 1].strip()) == {"-"}:
            cut = i
            break
    head = "\n".join(lines[:cut]).rstrip()
    tail = "\n".join(lines[cut:]).strip()
    parts = [head, parameters_section(options)] + ([tail] if tail else [])
    return "\n\n".join(p for p in parts if p) + "\n"


class ParametersDocumented:
    """Mixin: a subclass with its own docstring gets a generated ``Parameters`` section from
    its ``documented_options()`` (unless the docstring already has one)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own_doc = cls.__dict__.get("__doc__")
        if own_doc and "Parameters\n" not in own_doc:
            cls.__doc__ = with_parameters(own_doc, cls.documented_options())  # type: ignore[attr-defined]
