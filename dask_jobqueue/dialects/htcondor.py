"""HTCondor: a submit description for ``condor_submit``; ``condor_q`` / ``condor_history`` /
``condor_rm``.

HTCondor's states, the ``-json`` parsers, submit-description quoting, arrays (one cluster of
N procs), limits and its DIALECT. The public job and cluster classes are in
:mod:`dask_jobqueue.htcondor`.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from .._values import check_text
from ..dialect import (
    STATUS_MAX_IDS,
    ArraySupport,
    Dialect,
    Directive,
    HeaderTable,
    LimitsProbe,
    StatusStep,
    adopt_one_array,
    missing_ids,
    single_array_id,
)
from ..tags import TagSpec, only_tagged
from ..tracking import Interruption, JobState, JobStatus

__all__ = [
    "HEADER",
    "submit_value",
    "ARRAY_NAMES_VARIABLE",
    "DIALECT",
    "HTCONDOR_ARRAYS",
    "HTCONDOR_ATTRIBUTE",
    "HTCONDOR_LEAVING",
    "STATUS_ATTRIBUTES",
    "TIME_LIMIT_HOLD_CODES",
    "condor_array_description",
    "condor_array_names_ok",
    "condor_history_argv",
    "condor_proc_ids",
    "condor_q_argv",
    "condor_status",
    "escape_macros",
    "parse_condor_json",
    "parse_condor_limits",
    "parse_condor_step",
    "parse_htcondor_tags",
    "quote_arguments",
]

#: Job ClassAd attributes read by the status query (``-json -attributes``).
STATUS_ATTRIBUTES = (
    "ClusterId",
    "ProcId",
    "JobStatus",
    "ExitCode",
    "ExitBySignal",
    "ExitSignal",
    "HoldReason",
    "HoldReasonCode",
    "RemoveReason",
    # an Idle job that has started before was evicted (vacated) and is waiting to run again
    "NumJobStarts",
    "LastVacateTime",
)
_JOB_STATUS_NAMES = {
    1: "Idle",
    2: "Running",
    3: "Removed",
    4: "Completed",
    5: "Held",
    6: "Transferring Output",
    7: "Suspended",
}
#: HoldReasonCode of jobs held by a time-limit policy: 46 JobDurationExceeded
#: (``allowed_job_duration``), 47 JobExecuteExceeded (``allowed_execute_duration``).
TIME_LIMIT_HOLD_CODES = frozenset({46, 47})


def condor_status(ad: Mapping[str, Any]) -> JobStatus:
    """One job ClassAd (``JobStatus``, ``ExitCode``, ``Hold*``...) in our state model.

    1 idle: queued; 2 running (6 transferring output) : running; 3 removed: cancelled;
    4 completed: finished if ``ExitCode`` is 0, else failed (killed by signal S: 128 + S);
    5 held: held with ``HoldReason``, except a hold for exceeding a time limit
    (HoldReasonCode 46/47), which is the HTCondor way of ending a job at its walltime:
    timed out. 7 suspended: held.
    """
    try:
        code = int(ad.get("JobStatus"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        code = 0
    native = _JOB_STATUS_NAMES.get(code, str(ad.get("JobStatus")))
    exit_code: int | None = None
    reason: str | None = None
    if code == 1:
        state = JobState.QUEUED
    elif code in (2, 6):
        state = JobState.RUNNING
    elif code == 3:
        state, reason = JobState.CANCELLED, _text(ad.get("RemoveReason"))
    elif code == 4:
        if ad.get("ExitBySignal") is True and _int(ad.get("ExitSignal")) is not None:
            exit_code = 128 + _int(ad.get("ExitSignal"))  # type: ignore[operator]
            reason = f"killed by signal {ad.get('ExitSignal')}"
        else:
            exit_code = _int(ad.get("ExitCode"))
        state = JobState.FINISHED if exit_code == 0 else JobState.FAILED
    elif code == 5:
        reason = _text(ad.get("HoldReason"))
        if _int(ad.get("HoldReasonCode")) in TIME_LIMIT_HOLD_CODES:
            state = JobState.TIMED_OUT
        else:
            state = JobState.HELD
    elif code == 7:
        state, reason = JobState.HELD, "suspended"
    else:
        state = JobState.QUEUED
    interruption = None
    when = None
    if code == 7:
        interruption = Interruption.SUSPENDED
    elif code == 1 and (_int(ad.get("NumJobStarts")) or 0) > 0:
        interruption = Interruption.REQUEUED
        reason = "evicted; idle again"
        vacated = _int(ad.get("LastVacateTime"))
        if vacated:
            when = datetime.datetime.fromtimestamp(vacated, datetime.timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            )
    return JobStatus(
        state,
        reason,
        exit_code,
        native,
        interruption=interruption,
        interrupted_at=when,
        starts=_int(ad.get("NumJobStarts")),
    )


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str | None:
    return str(value) if isinstance(value, str) and value else None


def parse_condor_json(stdout: str) -> dict[str, JobStatus]:
    """Parse ``condor_q|condor_history <ids> -json -attributes ClusterId,ProcId,JobStatus,...``.

    Both print a JSON list of ads, or nothing at all when no job matches.
    """
    if not stdout.strip():
        return {}
    statuses = {}
    for ad in json.loads(stdout):
        if not isinstance(ad, dict) or ad.get("ClusterId") is None:
            continue
        statuses[f"{ad['ClusterId']}.{ad.get('ProcId', 0)}"] = condor_status(ad)
    return statuses


def escape_macros(text: str) -> str:
    """Protect ``$(...)`` and ``$$(...)`` from condor_submit's macro expansion.

    Each ``$`` that would start a macro becomes ``$(DOLLAR)``, which condor_submit turns back
    into a literal ``$``. ``$NAME`` and ``${NAME}`` are not macros and are left alone.
    """
    return re.sub(r"\$(?=\$*\()", "$(DOLLAR)", text)


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


def condor_q_argv(job: Any, job_ids: Sequence[str], facts: dict) -> list[str]:
    """``condor_q ids -json -attributes ...``: jobs still in the queue."""
    return ["condor_q", *job_ids, "-json", "-attributes", ",".join(STATUS_ATTRIBUTES)]


def condor_history_argv(job: Any, job_ids: Sequence[str], facts: dict) -> list[str]:
    """``condor_history ids -json ...``: completed and removed jobs leave the queue at once."""
    return ["condor_history", *job_ids, "-json", "-attributes", ",".join(STATUS_ATTRIBUTES)]


def parse_condor_step(
    stdout: str, job_ids: Sequence[str], known: Mapping[str, JobStatus]
) -> dict[str, JobStatus]:
    """Statuses of our ids. A job held for exceeding its time limit is timed out and stuck: a
    held job keeps its place in the queue until someone releases or removes it."""
    statuses = parse_condor_json(stdout)
    result = {}
    for job_id in job_ids:
        status = statuses.get(job_id)
        if status is None:
            continue
        if status.state == JobState.TIMED_OUT and status.native_state == "Held":
            status = replace(status, stuck=True)
        result[job_id] = status
    return result


# ---------------------------------------------------------------------------- job arrays
# An HTCondor "array" is one cluster of N procs: the submit description ends in ``Queue N``
# and condor_submit prints ``N job(s) submitted to cluster 12.``; proc k is job ``12.k``.
# Each proc's worker name is picked at submit time by condor_submit's ``$CHOICE`` macro from
# a list of names in the description, indexed by ``$(Process)``: the name lands in the
# proc's own Arguments (and ``DaskWorkerName``), so the shell command needs no index and no
# table of every name (one argument of 128 KiB at most on Linux, copied into every proc ad).

#: Submit variable holding an array's worker names, proc 0's first (comma-separated).
ARRAY_NAMES_VARIABLE = "DaskWorkerNames"
_PROC_NAME = f"$CHOICE(Process, {ARRAY_NAMES_VARIABLE})"
# Names that survive a comma-separated $CHOICE list, the ClassAd string of DaskWorkerName and
# an unquoted word of the shell command: no commas, white space, quotes, $ or shell syntax.
_LISTABLE_NAME = re.compile(r"[A-Za-z0-9_.@%+=:/-]+")


def condor_array_names_ok(names: Sequence[str]) -> bool:
    """Whether these worker names can be the procs of one cluster (see ``_LISTABLE_NAME``);
    jobs with other names are submitted one by one."""
    return all(_LISTABLE_NAME.fullmatch(str(name)) for name in names)


def condor_array_description(template: str, placeholder: str, names: Sequence[str]) -> str:
    """The submit description of one cluster of ``len(names)`` procs.

    ``template`` is a job's description with its worker name replaced by ``placeholder``: the
    name becomes ``$CHOICE(Process, DaskWorkerNames)`` (proc k gets ``names[k]``), the names
    are listed before the other entries and the final ``Queue`` becomes ``Queue N``.
    """
    if not condor_array_names_ok(names):
        raise ValueError(f"worker names {list(names)} cannot be listed in a submit description")
    lines = template.rstrip("\n").split("\n")
    if not lines or lines[-1].strip().lower() != "queue":
        raise ValueError("the submit description does not end with one 'Queue' statement")
    head = 1 if lines[0].startswith("#!") else 0
    if head and len(lines) > 1 and not lines[1].strip():
        head = 2  # after the shebang and its blank line
    body = [line.replace(placeholder, _PROC_NAME) for line in lines[head:-1]]
    listing = f"{ARRAY_NAMES_VARIABLE} = {', '.join(str(name) for name in names)}"
    return "\n".join([*lines[:head], listing, *body, f"Queue {len(names)}"]) + "\n"


def condor_proc_ids(stdout: str, indices: Sequence[int]) -> list[str]:
    """``3 job(s) submitted to cluster 12.`` for procs 0-2 -> ``["12.0", "12.1", "12.2"]``."""
    cluster = single_array_id(DIALECT.job_id_regexp, stdout, "condor_submit")
    count = re.search(r"^(\d+) job\(s\) submitted to cluster", stdout, re.MULTILINE)
    if count is None or int(count.group(1)) != len(indices):
        raise ValueError(
            f"condor_submit reported another number of jobs than the {len(indices)} "
            f"queued:\n{stdout}"
        )
    return [f"{cluster}.{i}" for i in indices]


def parse_condor_limits(stdout: str) -> dict[str, int]:
    """``condor_config_val MAX_JOBS_PER_SUBMISSION`` (``20000`` by default) ->
    ``max_array_size``: the schedd refuses a submission of more procs. The value is the line
    that is only a number (a site's banner may surround it)."""
    values = re.findall(r"(?m)^\s*(\d+)\s*$", stdout)
    if values and int(values[-1]) > 0:
        return {"max_array_size": int(values[-1])}
    return {}


HTCONDOR_ARRAYS = ArraySupport(
    # no environment variable: condor_submit's $(Process) picks the name (see render)
    index_var="Process",
    # the count is the description's ``Queue N``: no command-line arguments
    submit_args=lambda first, last: [],
    task_ids=condor_proc_ids,
    first_index=0,
    min_size=2,
    # ``condor_rm 12.3 12.4``: several procs in one command (the default)
    adopt=lambda listed, indices: adopt_one_array(listed, indices, lambda c, i: f"{c}.{i}"),
    render=condor_array_description,
    names_ok=condor_array_names_ok,
    # condor_submit over MAX_JOBS_PER_SUBMISSION (emulated, with HTCondor's message)
    too_large=re.compile(r"would exceed MAX_JOBS_PER_SUBMISSION"),
)


# ---------------------------------------------------------------- tags

#: Name of the HTCondor job attribute carrying the tag.
HTCONDOR_ATTRIBUTE = "DaskJobqueueTag"
#: HTCondor ``JobStatus`` of jobs on their way out of the queue: removed, completed.
HTCONDOR_LEAVING = (3, 4)


def parse_htcondor_tags(stdout: str, user: str | None = None) -> dict[str, str]:
    """``condor_q USER -af ClusterId ProcId JobStatus DaskJobqueueTag``: ``12 0 2 djq1....``
    per job (``undefined`` for jobs without the attribute). Removed (3) and completed (4)
    jobs are left out: ``condor_q`` lists a removed job until its shadow exits, and it needs
    no cancel."""
    found = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and all(part.isdigit() for part in parts[:3]):
            if int(parts[2]) not in HTCONDOR_LEAVING:
                found[f"{parts[0]}.{parts[1]}"] = parts[3]
    return only_tagged(found)


# ---------------------------------------------------------------- the submit description


def submit_value(value: object, keyword: str) -> str:
    """``value`` as the right side of a ``key = value`` line of a submit description.

    condor_submit takes the rest of the line as the value, trimmed, and expands ``$(...)``
    macros in it: the macros are protected (:func:`escape_macros`) and blanks at either end,
    which would be trimmed away, are refused. Blanks and options inside stay in the value.
    """
    text = check_text(value, keyword)
    if text != text.strip():
        raise ValueError(
            f"{keyword}={value!r} starts or ends with a blank, which condor_submit would "
            "trim away from a submit-description value"
        )
    return escape_macros(text)


def _require_gpus(job: Any) -> str | None:
    if job.gpu_type is None or job.gpus is None:
        return None
    pattern = job.gpu_type.replace(".", "[.]")  # a checked name: letters, digits, _ . -
    return f'regexp("{pattern}", DeviceName, "i")'


def _has_log_directory(job: Any) -> bool:
    return job.log_directory is not None


#: The entries of a job's submit description before ``Executable``, ``Arguments`` and
#: ``Queue``; extra directives replace an entry of the same key.
HEADER = HeaderTable(
    (
        Directive("MY.DaskWorkerName = {}", lambda job: f'"{job.name}"'),
        Directive("batch_name = {}", "name"),
        Directive("RequestCpus = MY.DaskWorkerCores"),
        Directive("RequestMemory = floor(MY.DaskWorkerMemory / 1048576)"),
        Directive("RequestDisk = floor(MY.DaskWorkerDisk / 1024)"),
        Directive("request_gpus = {}", "gpus"),
        # require_gpus: a ClassAd expression every GPU of the job must match; DeviceName is
        # the model name condor_gpu_discovery reports (e.g. "NVIDIA A100-SXM4-40GB"), so the
        # model is a case-insensitive substring of it ("." taken literally)
        Directive("require_gpus = {}", lambda job: _require_gpus(job)),
        Directive('MY.JobId = "$(ClusterId).$(ProcId)"'),
        Directive("MY.DaskWorkerCores = {}", "worker_cores"),
        Directive("MY.DaskWorkerMemory = {}", "worker_memory"),
        Directive("MY.DaskWorkerDisk = {}", "worker_disk"),
        Directive(
            "LogDirectory = {}",
            "log_directory",
            write=lambda path: submit_value(path, "log_directory"),
        ),
        *(
            Directive(line, when=_has_log_directory)
            for line in (
                "Output = $(LogDirectory)/worker-$(ClusterId).$(ProcId).out",
                "Error = $(LogDirectory)/worker-$(ClusterId).$(ProcId).err",
                "Log = $(LogDirectory)/worker-$(ClusterId).$(ProcId).log",
                "Stream_Output = True",
                "Stream_Error = True",
            )
        ),
    ),
    key_separator=" = ",
)


DIALECT = Dialect(
    name="htcondor",
    submit_command="condor_submit",
    cancel_command="condor_rm",
    directive_prefix="",  # a submit description, not a script with directives
    header_table=HEADER,
    job_id_regexp=r"^\d+ job\(s\) submitted to cluster (?P<job_id>\d+)\.\s*$",
    status_steps=(
        StatusStep("condor_q", condor_q_argv, parse_condor_step, max_ids=STATUS_MAX_IDS),
        StatusStep(
            "condor_history",
            condor_history_argv,
            parse_condor_step,
            select=missing_ids,
            required=False,
            max_ids=STATUS_MAX_IDS,
        ),
    ),
    # condor_rm of a job that left the queue meanwhile
    cancel_gone_pattern=re.compile(r"Couldn't find|not found"),
    # the tag is a custom job attribute, appended to the submit description
    tagging=TagSpec(
        submit_args=lambda text: ["-a", f'+{HTCONDOR_ATTRIBUTE} = "{text}"'],
        list_argvs=lambda user: [
            ["condor_q", user, "-af", "ClusterId", "ProcId", "JobStatus", HTCONDOR_ATTRIBUTE]
        ],
        parse=parse_htcondor_tags,
    ),
    default_shebang="#!/usr/bin/env condor_submit",
    # One cluster of N procs per submission; the per-proc Output/Error/Log names
    # ($(ClusterId).$(ProcId)) already tell the procs' files apart.
    array_support=HTCONDOR_ARRAYS,
    site_probes=(
        LimitsProbe(
            lambda job: ["condor_config_val", "MAX_JOBS_PER_SUBMISSION"], parse_condor_limits
        ),
    ),
)
