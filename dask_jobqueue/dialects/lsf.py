"""IBM Spectrum LSF: ``bsub`` / ``bjobs`` / ``bkill`` and ``#BSUB`` directives.

LSF's states, units, the ``bjobs`` parsers (JSON and delimited), limits, arrays and its
DIALECT. The public job and cluster classes are in :mod:`dask_jobqueue.lsf`.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._shell import CommandError
from .._values import directive_value
from ..dialect import (
    STATUS_MAX_IDS,
    ArraySupport,
    Dialect,
    Directive,
    HeaderTable,
    LimitsProbe,
    StatusStep,
    adopt_one_array,
    group_tasks,
    index_spans,
    log_file,
    simple_parser,
    single_array_id,
)
from ..tags import TagSpec, only_tagged
from ..tracking import Interruption, JobState, JobStatus

__all__ = [
    "HEADER",
    "LSF_PATH_REFUSED",
    "bsub_value",
    "lsf_log_file",
    "BJOBS_ARRAY_FIELDS",
    "BJOBS_FIELDS",
    "BKILL_EXIT_CODE",
    "DIALECT",
    "LSF_ARRAYS",
    "RUNLIMIT_EXIT_CODE",
    "bjobs_delimited_argv",
    "bjobs_failure_is_usable",
    "bjobs_json_argv",
    "learn_no_json",
    "lsf_array_task_ids",
    "lsf_cancel_args",
    "lsf_detect_units",
    "lsf_format_bytes_ceil",
    "lsf_status",
    "lsf_unit_letter",
    "parse_bjobs",
    "parse_bjobs_json",
    "parse_bjobs_step",
    "parse_lsf_limits",
    "parse_lsf_tags",
]

_UNIT_POWERS = {"k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6, "z": 7}


def lsf_unit_letter(units: str) -> str:
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
    power = _UNIT_POWERS[lsf_unit_letter(lsf_units)]
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


#: ``bjobs -o`` fields, ``pend_reason`` last: in the delimited form it may contain anything.
BJOBS_FIELDS = "jobid stat exit_code exit_reason pend_reason"
#: The same with the array index, asked only when array tasks are polled (``jobid`` is the
#: array's id for every element, unless the site sets ``LSB_BJOBS_DISPLAY_ENH=Y``).
BJOBS_ARRAY_FIELDS = "jobid jobindex stat exit_code exit_reason pend_reason"
_JOB_ID = re.compile(r"(\d+)(?:\[(\d+)\])?")

_STATES: dict[str, JobState] = {
    "PEND": JobState.QUEUED,
    "WAIT": JobState.QUEUED,  # chunk job waiting for its turn
    "PROV": JobState.QUEUED,  # host being provisioned
    "PSUSP": JobState.HELD,  # suspended while pending (bsub -H, bstop)
    "USUSP": JobState.HELD,  # suspended while running, by the user or an admin
    "SSUSP": JobState.HELD,  # suspended while running, by LSF (load, preemption...)
    "RUN": JobState.RUNNING,
    "UNKWN": JobState.RUNNING,  # the execution host stopped answering; the job may still run
    "DONE": JobState.FINISHED,
    "EXIT": JobState.FAILED,
    "ZOMBI": JobState.FAILED,
}
_SUSPENDED_STATES = frozenset({"PSUSP", "USUSP", "SSUSP"})
_SUSPENDED_REASONS = {
    "USUSP": "suspended by the user or the administrator while running",
    "SSUSP": "suspended by LSF while running",
}
# ``exit_reason`` prefixes of jobs killed on purpose (``bkill``, preemption...).
_CANCEL_REASONS = (
    "TERM_OWNER",
    "TERM_ADMIN",
    "TERM_FORCE_OWNER",
    "TERM_FORCE_ADMIN",
    "TERM_PREEMPT",
    "TERM_REQUEUE_OWNER",
    "TERM_REQUEUE_ADMIN",
)
_TIMEOUT_REASONS = ("TERM_RUNLIMIT", "TERM_DEADLINE")
#: bjobs ``exit_code`` of a job killed at its run limit, and of a job killed by ``bkill``
#: (SIGINT) when the LSF version has no ``exit_reason`` field.
RUNLIMIT_EXIT_CODE = 140
BKILL_EXIT_CODE = 130


def _blank(value: Any) -> str:
    text = "" if value is None else str(value).strip()
    return "" if text == "-" else text


def lsf_status(
    stat: str, exit_code: str = "", exit_reason: str = "", pend_reason: str = ""
) -> JobStatus:
    """One bjobs row in our state model.

    ``PEND`` is queued with its pending reason, ``PSUSP/USUSP/SSUSP`` held, ``DONE`` finished,
    ``EXIT`` failed, except jobs killed at their run limit (``TERM_RUNLIMIT``, exit 140:
    timed out) and killed by their owner or an admin (``TERM_OWNER``..., exit 130: cancelled).
    """
    native = _blank(stat).upper() or "UNKNOWN"
    state = _STATES.get(native, JobState.RUNNING)
    code_text, why, pending = _blank(exit_code), _blank(exit_reason), _blank(pend_reason)
    code = int(code_text) if code_text.lstrip("-").isdigit() else None
    reason: str | None = None
    if state.is_waiting:
        reason = pending.rstrip(";").strip() or _SUSPENDED_REASONS.get(native)
    elif native == "DONE":
        code = 0
    elif native == "EXIT":
        reason = why or None
        if why.startswith(_TIMEOUT_REASONS) or (not why and code == RUNLIMIT_EXIT_CODE):
            state = JobState.TIMED_OUT
        elif why.startswith(_CANCEL_REASONS) or (not why and code == BKILL_EXIT_CODE):
            state = JobState.CANCELLED
    elif native == "UNKWN":
        reason = "the execution host does not answer"
    if not state.is_final:
        code = None
    interruption = None
    if native in _SUSPENDED_STATES:
        interruption = Interruption.SUSPENDED
    elif state.is_final and why.startswith("TERM_PREEMPT"):
        interruption = Interruption.PREEMPTED
    return JobStatus(state, reason, code, native, interruption=interruption)


def _task_id(job_id: str, index: str = "") -> str | None:
    """``12`` + index ``3`` -> ``12[3]``; ``12[3]`` (``LSB_BJOBS_DISPLAY_ENH=Y``) stays;
    index ``0`` or none is a plain job. ``None`` if ``job_id`` is no job id."""
    match = _JOB_ID.fullmatch(job_id.strip())
    if match is None:
        return None
    index = _blank(index)
    if match.group(2) is None and index.isdigit() and int(index) > 0:
        return f"{match.group(1)}[{int(index)}]"
    return match.group(0)


def parse_bjobs_json(stdout: str) -> dict[str, JobStatus]:
    """Parse ``bjobs -json -o "jobid [jobindex] stat exit_code exit_reason pend_reason" <ids>``.

    An array element is reported as ``ARRAY[INDEX]`` (``12[3]``), from ``JOBINDEX`` or from
    a ``JOBID`` that already carries it. Records of unknown ids (``{"JOBID": "99", "ERROR":
    "Job <99> is not found"}``) are left out. Empty output (nothing at all) is no job.
    """
    if not stdout.strip():
        return {}
    data = json.loads(stdout)
    statuses = {}
    for record in data.get("RECORDS", []):
        job_id = _task_id(_blank(record.get("JOBID")), record.get("JOBINDEX", ""))
        if not job_id or record.get("ERROR") or not _blank(record.get("STAT")):
            continue
        statuses[job_id] = lsf_status(
            record.get("STAT", ""),
            record.get("EXIT_CODE", ""),
            record.get("EXIT_REASON", ""),
            record.get("PEND_REASON", ""),
        )
    return statuses


def parse_bjobs(stdout: str, fields: str = BJOBS_FIELDS) -> dict[str, JobStatus]:
    """Parse ``bjobs -noheader -o "FIELDS delimiter='|'" <ids>`` (LSF before 10.1.0.2 has no
    ``-json``); ``fields`` as asked: :data:`BJOBS_FIELDS`, or :data:`BJOBS_ARRAY_FIELDS`
    (array elements become ``12[3]``). Empty values are ``-``."""
    names = fields.split()
    statuses = {}
    for line in stdout.splitlines():
        parts = line.strip().split("|", len(names) - 1)
        if len(parts) < 2:
            continue
        values = dict(zip(names, (p.strip() for p in parts), strict=False))
        job_id = _task_id(values["jobid"], values.get("jobindex", ""))
        if job_id is None:
            continue  # e.g. "Job <99> is not found" when stderr is merged
        statuses[job_id] = lsf_status(
            values.get("stat", ""),
            values.get("exit_code", ""),
            values.get("exit_reason", ""),
            values.get("pend_reason", ""),
        )
    return statuses


def _only_unknown_ids(stderr: str) -> bool:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return bool(lines) and all(
        re.fullmatch(r"Job <[^>]+> is not found\.?", line)
        or line in ("No unfinished job found", "No job found")
        for line in lines
    )


def bjobs_failure_is_usable(exc: CommandError) -> bool:
    """bjobs exits 255 when any id is unknown (purged after ``CLEAN_PERIOD``) but still
    prints the others; other failures (``LSF is down``...) fail the poll."""
    return bool(exc.returncode) and bool(exc.stdout.strip() or _only_unknown_ids(exc.stderr))


def _fields(job_ids: Sequence[str]) -> str:
    return BJOBS_ARRAY_FIELDS if any("[" in i for i in job_ids) else BJOBS_FIELDS


def _asked(job_ids: Sequence[str]) -> list[str]:
    """Array elements are asked by their array's id (``bjobs 12`` lists every element):
    one argument per array however many tasks it has."""
    return list(dict.fromkeys(i.split("[", 1)[0] for i in job_ids))


def bjobs_json_argv(job: Any, job_ids: Sequence[str], facts: dict) -> list[str]:
    """``bjobs -json -o FIELDS ids`` (LSF >= 10.1.0.2)."""
    return ["bjobs", "-json", "-o", _fields(job_ids), *_asked(job_ids)]


def bjobs_delimited_argv(job: Any, job_ids: Sequence[str], facts: dict) -> list[str]:
    """``bjobs -noheader -o "FIELDS delimiter='|'" ids`` for LSF without ``-json``."""
    return ["bjobs", "-noheader", "-o", f"{_fields(job_ids)} delimiter='|'", *_asked(job_ids)]


def parse_bjobs_step(
    stdout: str, job_ids: Sequence[str], known: Mapping[str, JobStatus]
) -> dict[str, JobStatus]:
    """The delimited form, read with the fields :func:`bjobs_delimited_argv` asked for."""
    statuses = parse_bjobs(stdout, _fields(job_ids))
    return {i: statuses[i] for i in job_ids if i in statuses}


def learn_no_json(exc: Exception, facts: dict) -> bool:
    """bjobs refused ``-json``: use the delimited form from now on."""
    if not isinstance(exc, CommandError) or not exc.returncode or exc.stdout.strip():
        return False
    if re.search(r"(illegal|invalid|unknown) option|usage", exc.stderr, re.I):
        facts["lsf_json"] = False
        return True
    return False


def parse_lsf_limits(stdout: str) -> dict[str, int]:
    """``bparams -a`` (or ``-l``): ``MAX_JOB_ARRAY_SIZE = 1000`` -> ``max_array_size``. LSF
    bounds the highest index, and arrays here count from 1: the same number."""
    match = re.search(r"^\s*MAX_JOB_ARRAY_SIZE\s*=\s*(\d+)\s*$", stdout, re.MULTILINE)
    return {"max_array_size": int(match.group(1))} if match and int(match.group(1)) > 0 else {}


def lsf_array_task_ids(stdout: str, indices: Sequence[int]) -> list[str]:
    """``Job <12> is submitted to queue <normal>.`` for ``-J "name[1-3]"`` -> ``12[1]``,
    ``12[2]``, ``12[3]`` (bsub prints the array's id once)."""
    array_id = single_array_id(DIALECT.job_id_regexp, stdout, "bsub")
    return [f"{array_id}[{i}]" for i in indices]


def _lsf_task(job_id: str) -> tuple[str, int] | None:
    match = _JOB_ID.fullmatch(job_id)
    return (match.group(1), int(match.group(2))) if match and match.group(2) else None


def lsf_cancel_args(job_ids: Sequence[str]) -> list[str]:
    """``bkill`` arguments: the elements of one array as one index list (``12[3-5,9]``),
    other ids as they are."""
    return [
        arg if indices is None else f"{arg}[{','.join(index_spans(indices))}]"
        for arg, indices in group_tasks(job_ids, _lsf_task)
    ]


def _task_log_names(script: str) -> str:
    # one output file per element, named by its id (ARRAY_INDEX), as output_files looks
    return re.sub(
        r'^(#BSUB -[eo] .*)-%J\.(err|out)("?)$', r"\1-%J_%I.\2\3", script, flags=re.MULTILINE
    )


def _name_the_array(script: str, first: int, last: int) -> str:
    """The ``#BSUB -J`` line names the array and its indices: one ``-J`` only (a second
    one on bsub's command line would override the script's, and the name with it)."""
    lines = script.split("\n")
    for k, line in enumerate(lines):
        match = re.fullmatch(r"#BSUB\s+-J\s+(\S+)\s*", line)
        if match:
            name = match.group(1).strip('"')
            lines[k] = f'#BSUB -J "{name}[{first}-{last}]"'
            return "\n".join(lines)
    # no -J line (job_directives_skip): the array still needs one, after the shebang
    at = 1 if lines and lines[0].startswith("#!") else 0
    lines.insert(at, f'#BSUB -J "dask-worker[{first}-{last}]"')
    return "\n".join(lines)


LSF_ARRAYS = ArraySupport(
    index_var="LSB_JOBINDEX",
    submit_args=lambda first, last: [],  # the range is in the script's -J line
    task_ids=lsf_array_task_ids,
    first_index=1,
    cancel_args=lsf_cancel_args,
    adopt=lambda listed, indices: adopt_one_array(listed, indices, lambda a, i: f"{a}[{i}]"),
    edit_script=_task_log_names,
    script_range=_name_the_array,
    # over MAX_JOB_ARRAY_SIZE: the emulator's wording, not recorded on a real LSF
    too_large=re.compile(r"Job array index too large"),
)


# ---------------------------------------------------------------- tags


def parse_lsf_tags(stdout: str, user: str | None = None) -> dict[str, str]:
    """``bjobs -u USER -o 'jobid jobindex job_description delimiter="|"' -noheader``: array
    elements (``jobindex`` > 0) as ``12[3]``; also the form without ``jobindex``, and ids
    printed as ``12[3]`` already (``LSB_BJOBS_DISPLAY_ENH=Y``)."""
    found = {}
    for line in stdout.splitlines():
        parts = [part.strip() for part in line.strip().split("|", 2)]
        if len(parts) == 3 and parts[1].isdigit():
            job_id, index, description = parts
        elif len(parts) >= 2:
            job_id, index, description = parts[0], "0", "|".join(parts[1:])
        else:
            continue
        if re.fullmatch(r"\d+", job_id) and int(index) > 0:
            job_id = f"{job_id}[{int(index)}]"
        if re.fullmatch(r"\d+(?:\[\d+\])?", job_id):
            found[job_id] = description
    return only_tagged(found)


# ---------------------------------------------------------------- the #BSUB header

#: What a ``#BSUB`` output file value cannot carry, and why.
LSF_PATH_REFUSED = {
    "\"'\\": "bsub reads a double-quoted #BSUB value as one argument (as in "
    "'-R \"span[hosts=1]\"'), but how it reads quotes and backslashes inside one is not "
    "recorded",
    "%": "LSF replaces %J and %I in output file names and has no escape for a literal '%'",
}


def bsub_value(
    value: object, keyword: str, refused: Mapping[str, str] | None = None, shown: object = None
) -> str:
    """``value`` as one argument of a ``#BSUB`` line: in double quotes when it is not
    plain, as LSF's documentation writes ``-J "name[1-10]"`` and ``-R "..."`` values."""
    return directive_value(value, keyword, "LSF", refused=refused, shown=shown)


def lsf_log_file(directory: str, job_name: str, suffix: str) -> str:
    """The ``-e``/``-o`` value ``<directory>/<job_name>-%J.<suffix>``, quoted for ``#BSUB``."""
    bsub_value(directory, "log_directory", LSF_PATH_REFUSED)  # refuses what it cannot carry
    return bsub_value(f"{directory}/{job_name}-%J.{suffix}", "log_directory")


def _lsf_gpus(job: Any) -> str | None:
    if job.gpus is None:
        return None
    return f"{job.gpus}:gmodel={job.gpu_type}" if job.gpu_type is not None else str(job.gpus)


#: The ``#BSUB`` lines of a job script. The project is written in double quotes (its
#: option refuses what they cannot carry); all slots of a job on one host.
HEADER = HeaderTable(
    (
        Directive("-J {}", "job_name"),
        Directive("-e {}", log_file(lsf_log_file, "err")),
        Directive("-o {}", log_file(lsf_log_file, "out")),
        Directive("-q {}", "queue"),
        Directive('-P "{}"', "project"),
        Directive("-n {}", lambda job: job.ncpus * job.nodes),
        Directive('-R "span[hosts=1]"', when=lambda job: job.ncpus > 1 and job.nodes == 1),
        Directive('-R "span[ptile={}]"', "ncpus", when=lambda job: job.nodes > 1),
        Directive("-M {}", lambda job: lsf_format_bytes_ceil(job.mem, job.lsf_units)),
        Directive("-W {}", "walltime"),
        # num=<gpus>[:gmodel=<gpu_type>] (gmodel: brand name, model number or total memory;
        # a checked name, nothing to quote inside the double quotes)
        Directive('-gpu "num={}"', lambda job: _lsf_gpus(job)),
    )
)


DIALECT = Dialect(
    name="lsf",
    submit_command="bsub",
    cancel_command="bkill",
    directive_prefix="#BSUB",
    header_table=HEADER,
    walltime_forms=("hh:mm", "minutes"),
    job_id_regexp=r"^Job <(?P<job_id>\d+)> is submitted",
    status_steps=(
        StatusStep(
            "bjobs -json",
            bjobs_json_argv,
            simple_parser(parse_bjobs_json),
            usable_failure=bjobs_failure_is_usable,
            fallback=learn_no_json,
            when=lambda facts, fell_back: facts.get("lsf_json", True),
            max_ids=STATUS_MAX_IDS,
        ),
        StatusStep(
            "bjobs -o",
            bjobs_delimited_argv,
            parse_bjobs_step,
            usable_failure=bjobs_failure_is_usable,
            when=lambda facts, fell_back: fell_back or not facts.get("lsf_json", True),
            max_ids=STATUS_MAX_IDS,
        ),
    ),
    # bkill of a job that ended meanwhile: "Job has already finished", "No matching job found"
    cancel_gone_pattern=re.compile(r"already finished|No matching job found|is not found"),
    array_support=LSF_ARRAYS,
    site_probes=(LimitsProbe(lambda job: ["bparams", "-a"], parse_lsf_limits),),
    # a busy or restarting master batch daemon, not a bad option
    transient_submit_errors=re.compile(
        r"Resource temporarily unavailable|try again later|Connection refused|"
        r"Connection reset|LSF is processing your request|LSF is down\. Please wait|"
        r"Cannot connect to LSF|Slave LIM configuration is not ready|"
        r"daemon \(\w+\) not responding|not responding \.\.\. still trying|"
        r"Failed in an LSF library call: (?:Communication time out|Timeout)",
        re.IGNORECASE,
    ),
    # the tag is the job description (bsub -Jd)
    tagging=TagSpec(
        submit_args=lambda text: ["-Jd", text],
        list_argvs=lambda user: [
            ["bjobs", "-u", user, "-o", "jobid jobindex job_description delimiter='|'", "-noheader"]
        ],
        parse=parse_lsf_tags,
    ),
)
