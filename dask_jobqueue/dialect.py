"""The vocabulary a batch-system dialect is written in, and the contract it fills.

A dialect (``dialects/slurm.py``, ``dialects/pbs.py``, ...) is one :class:`Dialect` value:
its commands, an anchored job-id pattern, the :class:`HeaderTable` of its job scripts, the
:class:`StatusStep` s of a poll with their pure parsers, how it cancels, submits arrays,
carries tags and tells its limits and default walltime. The engine runs those declarations for many jobs at once; the job classes of the
public modules (``dask_jobqueue.slurm.SLURMJob``, ...) take them as class attributes.

This module, like every dialect, imports the standard library and the package's pure modules
only (no dask, no distributed, no engine): the watchdog and the command line read dialects
without starting anything. Argument builders receive the cluster's template job as ``job``
and read its options (``job.queue``, ``job.account``...) only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from ._shell import CommandError
from ._values import parse_walltime
from .tags import TagSpec
from .tracker import Vanish
from .tracking import JobStatus

__all__ = [
    "ArraySupport",
    "Dialect",
    "Directive",
    "HeaderTable",
    "LimitsProbe",
    "StatusStep",
    "TRANSIENT_SUBMIT_ERRORS",
    "WalltimeDefault",
    "adopt_one_array",
    "all_ids",
    "decode_wait_status",
    "hms_seconds",
    "group_tasks",
    "index_spans",
    "missing_ids",
    "natural_key",
    "render_header",
    "simple_parser",
    "single_array_id",
]

Selector = Callable[[Sequence[str], Mapping[str, JobStatus]], Sequence[str]]
ArgvBuilder = Callable[[Any, Sequence[str], dict], "list[str] | None"]
Parser = Callable[[str, Sequence[str], Mapping[str, JobStatus]], Mapping[str, JobStatus]]


def all_ids(ids: Sequence[str], known: Mapping[str, JobStatus]) -> Sequence[str]:
    """Every id of the poll."""
    return ids


def missing_ids(ids: Sequence[str], known: Mapping[str, JobStatus]) -> Sequence[str]:
    """The ids no earlier step reported (finished jobs that left the queue, typically)."""
    return [i for i in ids if i not in known]


@dataclass(frozen=True)
class Directive:
    """One line of a job script's header, as data: ``form`` with ``{}`` replaced by a value.

    Parameters
    ----------
    form : str
        The line without the directive prefix, ``{}`` standing for the value (``"-p {}"``);
        a form without ``{}`` is a fixed line (``"-N 1"``).
    value : str or callable, optional
        The job option the line writes: the name of a job attribute (``"queue"``), or
        ``value(job)`` for a value computed from several (a default, a unit). A value of
        ``None`` (an option left unset) leaves the line out. None: a fixed line.
    write : callable
        ``write(value)``: the value as written on the line, checked and quoted the way the
        scheduler's submit command reads its directives (the dialect's
        :func:`~dask_jobqueue._values.directive_value` rules); raises ``ValueError`` naming
        the keyword. Default ``str``: the value is a checked word already.
    when : callable, optional
        ``when(job)``: write the line only if true (a fixed line that depends on an option,
        such as LSF's ``span[hosts=1]`` for jobs of several slots).
    """

    form: str
    value: str | Callable[[Any], object] | None = None
    write: Callable[[Any], str] = str
    when: Callable[[Any], bool] | None = None

    def line(self, job: Any) -> str | None:
        """This directive for ``job`` (without the prefix), or ``None`` if it is left out."""
        if self.when is not None and not self.when(job):
            return None
        if self.value is None:
            return self.form
        value = getattr(job, self.value) if isinstance(self.value, str) else self.value(job)
        if value is None:
            return None
        return self.form.replace("{}", self.write(value))


@dataclass(frozen=True)
class HeaderTable:
    """The header of a dialect's job scripts: its directives in order, rendered by
    :func:`render_header`. Adding a directive is adding one :class:`Directive` here.

    Parameters
    ----------
    directives : tuple of Directive
        The generated lines, in the order they are written.
    key_separator : str, optional
        For headers of ``key<separator>value`` entries rather than prefixed directives
        (HTCondor's submit description, ``" = "``): no prefix is written, and the job's
        extra directives are entries that replace a generated entry of the same key.
    finish : callable, optional
        ``finish(job, lines, prefix)``: the final lines, after the skips and the extras, for
        a directive the scheduler takes only once and that merges with the user's own (OAR's
        ``-p`` memory property). Its lines are not subject to ``job_directives_skip``.
    """

    directives: tuple[Directive, ...] = ()
    key_separator: str | None = None
    finish: Callable[[Any, list[str], str], list[str]] | None = None


def log_file(render: Callable[[str, str, str], str], suffix: str) -> Callable[[Any], str | None]:
    """A :class:`Directive` value for an output file: ``render(log_directory, job_name,
    suffix)`` (the dialect's file name pattern, quoted), or ``None`` — the line left out —
    when the job has no ``log_directory``."""

    def value(job: Any) -> str | None:
        if job.log_directory is None:
            return None
        return render(job.log_directory, job.job_name, suffix)

    return value


def render_header(job: Any, table: HeaderTable, prefix: str) -> str:
    """The header of ``job``'s script: the lines of ``table`` for its options, those
    containing any string of ``job.job_directives_skip`` left out, then
    ``job.job_extra_directives``; each line after ``prefix`` and a blank.

    The one place a header is written: every dialect's table goes through it.
    """
    separator = table.key_separator
    generated = [text for d in table.directives if (text := d.line(job)) is not None]
    if separator is None:
        generated = [f"{prefix} {text}" for text in generated]
    kept = [line for line in generated if not any(skip in line for skip in job.job_directives_skip)]
    if separator is None:
        lines = kept + [f"{prefix} {extra}" for extra in job.job_extra_directives]
    else:
        entries = dict(line.split(separator, 1) for line in kept)
        entries.update(job.job_extra_directives)  # a key already written keeps its place
        lines = [f"{key}{separator}{value}" for key, value in entries.items()]
    if table.finish is not None:
        lines = table.finish(job, lines, prefix)
    return "\n".join(lines)


#: Most job ids one status command names. Linux refuses a single argument over 128 KiB and
#: a command line over about 2 MiB: 5,000 ids of up to 20 characters stay under 110 KB, and
#: 50,000 single jobs take 10 commands.
STATUS_MAX_IDS = 5000


@dataclass(frozen=True)
class StatusStep:
    """One status command of a poll, as a dialect declares it.

    Parameters
    ----------
    name : str
        For logs and errors, e.g. ``"squeue"``.
    argv : callable
        ``argv(job, ids, facts)``: the command line for these ids, or ``None`` to skip the
        step. ``job`` is the cluster's template job (its options), ``facts`` what the engine
        learned about the site.
    parse : callable
        ``parse(stdout, ids, known)``: statuses of (some of) ``ids`` from the command's output.
        ``known`` holds what earlier steps of this poll reported. Raises ``ValueError`` on
        output it cannot read.
    select : callable
        ``select(ids, known)``: which ids of the poll this step asks about.
    each : bool
        One command per id (``qacct -j ID``), or per group of ids (``group``); at most
        :attr:`~dask_jobqueue.engine.BatchSystem.each_concurrency` of them run at a time.
    pace : float
        With ``each``: seconds between two commands for the same id (a job whose record is
        not written yet is not asked again at every poll).
    group : callable, optional
        With ``each``: ``group(ids)``, the ids each command asks about (the tasks of one
        array in one ``qacct -j ARRAY``); default one id per command.
    batch_argv : callable, optional
        With ``each``: ``batch_argv(job, ids, facts)``, one command for all ``ids`` (their
        statuses read by ``parse``), run instead of more commands than
        ``each_concurrency``; ``None`` to run those. ``facts`` then also holds
        ``submitted_since``, the earliest submission (wall-clock seconds) of ``ids``, or
        ``None`` if one of them was not submitted by this engine.
    required : bool
        If this step fails, the poll fails (states unchanged). An optional step's failure
        only leaves its ids unreported.
    usable_failure : callable, optional
        ``usable_failure(error)``: the command failed but its stdout is still the answer
        (e.g. some ids were unknown, the others are listed).
    fallback : callable, optional
        ``fallback(error, facts)``: return True if the failure taught something (recorded in
        ``facts``) and the following steps answer instead; the poll then goes on.
    when : callable, optional
        ``when(facts, fell_back)``: run this step only if it returns True; ``fell_back`` tells
        whether the previous step fell back.
    max_ids : int, optional
        Most ids one command of this step names; more are asked in several commands, one
        after the other (``None``: the command names no ids, e.g. it lists the user's jobs).
    """

    name: str
    argv: ArgvBuilder
    parse: Parser
    select: Selector = all_ids
    each: bool = False
    pace: float = 0.0
    group: Callable[[Sequence[str]], list[list[str]]] | None = None
    batch_argv: ArgvBuilder | None = None
    required: bool = True
    usable_failure: Callable[[CommandError], bool] | None = None
    fallback: Callable[[Exception, dict], bool] | None = None
    when: Callable[[dict, bool], bool] | None = None
    max_ids: int | None = None


@dataclass(frozen=True)
class LimitsProbe:
    """A command that tells the site's limits, run once before the first array submission.

    ``argv(job)`` is the command; ``parse(stdout)`` returns facts such as
    ``{"max_array_size": 1001, "max_job_count": 10000}`` (only what the output states).
    """

    argv: Callable[[Any], list[str]]
    parse: Callable[[str], dict[str, int]]


@dataclass(frozen=True)
class ArraySupport:
    """How a dialect submits many identical jobs as one job array, as data.

    Parameters
    ----------
    index_var : str
        Environment variable holding the task index inside the job script
        (``SLURM_ARRAY_TASK_ID``); the script picks its worker name with it. With
        ``render``, the dialect's own index (HTCondor: the ``$(Process)`` macro).
    submit_args : callable
        ``submit_args(first, last)``: extra arguments of the submit command for the indices
        ``first..last`` (inclusive), e.g. ``["--array=0-9"]``.
    task_ids : callable
        ``task_ids(stdout, indices)``: the id of every task (in the order of ``indices``) from
        the submit command's output, e.g. ``["12_0", "12_1"]``. Raises ``ValueError``.
    first_index : int
        Index of the first task of every array (Grid Engine counts from 1).
    min_size : int
        Fewest tasks of an array (OpenPBS refuses ``-J 1-1``); smaller groups are single jobs.
    cancel_args : callable
        ``cancel_args(ids)``: the arguments of one cancel command for these ids, with tasks of
        one array joined into ranges where the scheduler takes them (``12_[3-5]``).
    adopt : callable, optional
        ``adopt(listed, indices)``: the task ids of an array whose submit command failed,
        from the ids its tag is listed under (``12_[0-4]`` for pending Slurm tasks...);
        raises ``ValueError`` if they do not make the whole array.
    edit_script : callable, optional
        ``edit_script(script)``: the array's script adapted to arrays, e.g. output file
        patterns naming the task (``%A_%a``) so a dead task's output is found by its id.
    render : callable, optional
        ``render(template, placeholder, names)``: the whole array script, for dialects whose
        script is not a shell script (HTCondor's submit description): ``template`` is the
        job's script with its worker name replaced by ``placeholder``. Replaces the shell
        ``case`` on ``index_var`` that :func:`array_script` writes otherwise.
    names_ok : callable, optional
        ``names_ok(names)``: whether jobs with these worker names can be tasks of one array
        (HTCondor lists them in the submit description, comma-separated); if not, they are
        submitted one by one.
    script_range : callable, optional
        ``script_range(script, first, last)``: the array's script declaring the indices
        ``first..last`` itself, for batch systems that read them from a directive rather
        than from an argument (LSF's ``#BSUB -J "name[1-4]"``); applied after
        ``edit_script``.
    too_large : re.Pattern, optional
        The submit command's refusal of an array with more tasks than the site allows
        (Slurm: ``Invalid job array specification``). The engine then submits the jobs of
        that array again as arrays of half its size, and keeps that cap.
    """

    index_var: str
    submit_args: Callable[[int, int], list[str]]
    task_ids: Callable[[str, Sequence[int]], list[str]]
    first_index: int = 0
    min_size: int = 2
    cancel_args: Callable[[Sequence[str]], list[str]] = list
    edit_script: Callable[[str], str] | None = None
    adopt: Callable[[Sequence[str], Sequence[int]], list[str]] | None = None
    render: Callable[[str, str, Sequence[str]], str] | None = None
    names_ok: Callable[[Sequence[str]], bool] | None = None
    script_range: Callable[[str, int, int], str] | None = None
    too_large: re.Pattern[str] | None = None


def single_array_id(pattern: str, stdout: str, tool: str) -> str:
    """The one job id an array submission printed, read with the dialect's own anchored
    ``job_id_regexp``; ``ValueError`` if there is not exactly one."""
    found = list(dict.fromkeys(m.group("job_id") for m in re.finditer(pattern, stdout, re.M)))
    if len(found) != 1:
        raise ValueError(f"Could not read one array job id from {tool}'s output:\n{stdout}")
    return found[0]


def group_tasks(
    job_ids: Sequence[str], split: Callable[[str], tuple[str, int] | None]
) -> list[tuple[str, list[int] | None]]:
    """``job_ids`` in order, the tasks of each array gathered where the array first appears:
    ``(array, [indices])`` for tasks (``split(id)`` -> ``(array, index)``), ``(id, None)``
    for other ids (``split(id)`` -> ``None``). For cancel commands taking task ranges."""
    groups: list[tuple[str, list[int] | None]] = []
    tasks: dict[str, list[int]] = {}
    for job_id in job_ids:
        task = split(job_id)
        if task is None:
            groups.append((job_id, None))
        elif task[0] in tasks:
            tasks[task[0]].append(task[1])
        else:
            tasks[task[0]] = [task[1]]
            groups.append((task[0], tasks[task[0]]))
    return groups


def index_spans(indices: Iterable[int]) -> list[str]:
    """Runs of consecutive array indices: ``[3, 4, 5, 7]`` -> ``["3-5", "7"]`` (for cancel
    commands that take task ranges)."""
    spans: list[str] = []
    ordered = sorted(set(indices))
    if not ordered:
        return spans
    start = prev = ordered[0]
    for i in [*ordered[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        spans.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return spans


def adopt_one_array(
    listed: Sequence[str], indices: Sequence[int], task_id: Callable[[str, int], str]
) -> list[str]:
    """Task ids of the one array whose tasks (or collapsed pending tasks) are ``listed``."""
    bases = {m.group() for i in listed if (m := re.match(r"\d+", i))}
    if len(bases) != 1:
        raise ValueError(f"expected the tasks of one array, found {', '.join(listed)}")
    base = bases.pop()
    return [task_id(base, i) for i in indices]


def natural_key(job_id: str) -> list[str | int]:
    """``12[10]`` after ``12[9]``: digit runs compare as numbers."""
    return [int(part) if k % 2 else part for k, part in enumerate(re.split(r"(\d+)", job_id))]


#: Submit errors worth another try, unless a dialect declares its own: a loaded or restarting
#: controller, not a bad option.
TRANSIENT_SUBMIT_ERRORS = re.compile(
    r"Socket timed out|Resource temporarily unavailable|try again later|"
    r"temporarily unable|Connection refused|Connection reset",
    re.IGNORECASE,
)


def simple_parser(parse: Callable[[str], Mapping[str, JobStatus]]) -> Parser:
    """Adapt a ``parse(stdout) -> {id: status}`` function to the step signature, keeping
    only the ids of the step."""

    def parser(stdout: str, ids: Sequence[str], known: Mapping[str, JobStatus]):
        statuses = parse(stdout)
        return {i: statuses[i] for i in ids if i in statuses}

    parser.__name__ = getattr(parse, "__name__", "parser")
    parser.__doc__ = parse.__doc__
    return parser


def decode_wait_status(status: int) -> int:
    """A raw wait status as an exit code: 768 -> exit 3, 15 -> signal 15 (143)."""
    if status & 0x7F:
        return 128 + (status & 0x7F)
    return (status >> 8) & 0xFF


def hms_seconds(text: str) -> float | None:
    """``[D-]HH:MM:SS``, ``MM:SS``, ``HH:MM:SS`` or seconds, as printed by a scheduler's
    limits; ``None`` for no limit (``UNLIMITED``, ``INFINITY``...) or an unreadable value."""
    text = text.strip()
    if not text or text.upper() in ("UNLIMITED", "INFINITY", "NONE", "N/A"):
        return None
    try:
        return float(parse_walltime(text, ("d-hh:mm:ss", "hh:mm:ss", "mm:ss", "seconds")))
    except ValueError:
        return None


@dataclass(frozen=True)
class WalltimeDefault:
    """How a dialect reads the walltime its scheduler gives a job that asks for none.

    Parameters
    ----------
    argv : callable
        ``argv(job)``: the command, or ``None`` when the default cannot be read for this job.
    parse : callable
        ``parse(stdout, job)``: seconds, or ``None`` for no limit / unknown.
    """

    argv: Callable[[Any], list[str] | None]
    parse: Callable[[str, Any], float | None]


@dataclass(frozen=True)
class Dialect:
    """Everything one batch system is, as data: the contract of a ``dialects/<name>.py``.

    The first six fields are mandatory; the others say what a batch system has beyond
    submitting, polling and cancelling single jobs, and default to "has none".

    Parameters
    ----------
    name : str
        The scheduler's name (its ``jobqueue.yaml`` section and command-line name).
    submit_command : str
        Program that submits a job script (the script's path is appended).
    cancel_command : str
        Program that cancels jobs (ids are appended).
    directive_prefix : str
        Prefix of a header directive line, e.g. ``#SBATCH`` (empty where the job file is not
        a shell script with directives: HTCondor's submit description).
    header_table : HeaderTable
        The directives of a job script's header (default: none), see :func:`render_header`.
    job_id_regexp : str
        Anchored regular expression with a ``job_id`` group, matched per line of the submit
        command's output.
    status_steps : tuple of StatusStep
        The commands of one poll, run in order (empty: the batch system is never polled).
    walltime_forms : tuple of str
        Walltime forms the scheduler accepts, in the order it tries them.
    walltime_default : WalltimeDefault, optional
        How to read the walltime a job without one gets.
    cancel_gone_pattern : re.Pattern, optional
        Lines of a failing cancel command that only mean "this job is gone already".
    cancel_max_ids : int
        Most job ids (or task ranges) in one cancel command.
    vanish : Vanish
        When a job the status commands stopped listing counts as ended, and as what.
    array_support : ArraySupport, optional
        How many identical jobs go as one job array.
    site_probes : tuple of LimitsProbe
        Commands telling the site's limits, run once before the first array.
    transient_submit_errors : re.Pattern, optional
        Submit errors worth another try (default: :data:`TRANSIENT_SUBMIT_ERRORS`).
    tagging : TagSpec, optional
        How jobs carry their owner's tag and how tagged jobs are listed.
    default_shebang : str
        First line of a job script when neither a keyword nor the configuration sets one.
    """

    name: str
    submit_command: str
    cancel_command: str
    directive_prefix: str
    job_id_regexp: str
    status_steps: tuple[StatusStep, ...]
    header_table: HeaderTable = HeaderTable()
    walltime_forms: tuple[str, ...] = ("hh:mm:ss", "seconds")
    walltime_default: WalltimeDefault | None = None
    cancel_gone_pattern: re.Pattern[str] | None = None
    cancel_max_ids: int = 1000
    vanish: Vanish = Vanish()
    array_support: ArraySupport | None = None
    site_probes: tuple[LimitsProbe, ...] = ()
    transient_submit_errors: re.Pattern[str] | None = None
    tagging: TagSpec | None = None
    default_shebang: str = "#!/usr/bin/env bash"

    def __post_init__(self) -> None:
        for name in ("name", "submit_command", "cancel_command"):
            if not getattr(self, name):
                raise ValueError(f"a Dialect needs a {name}")
        if "(?P<job_id>" not in self.job_id_regexp:
            raise ValueError("a Dialect's job_id_regexp needs a named group 'job_id'")
        re.compile(self.job_id_regexp)

    def job_attributes(self) -> dict[str, Any]:
        """The class attributes a job class of this dialect takes (every field but ``name``)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "name"}
