"""OAR: ``oarsub`` / ``oarstat`` / ``oardel``; ``#OAR`` directives become ``oarsub`` options.

OAR's states, its ``oarstat -J`` parser, arrays and its DIALECT. The public job and cluster
classes are in :mod:`dask_jobqueue.oar`.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import time
from collections.abc import Mapping, Sequence
from typing import Any

from .._values import MIB
from ..dialect import (
    STATUS_MAX_IDS,
    ArraySupport,
    Dialect,
    Directive,
    HeaderTable,
    StatusStep,
    decode_wait_status,
    log_file,
    simple_parser,
)
from ..tags import TAG_PATTERN, TAG_VARIABLE, TagSpec, only_tagged
from ..tracking import Interruption, JobState, JobStatus

__all__ = [
    "DIALECT",
    "HEADER",
    "add_memory_property",
    "decode_wait_status",
    "oar_adopt",
    "oar_array_task_ids",
    "oar_job_status",
    "oar_tag_line",
    "oarstat_argv",
    "parse_oar_tags",
    "parse_oarstat_json",
]

# OAR job states (``oarstat`` ``state``) that are not final, in our state model.
_STATES: dict[str, JobState] = {
    "Waiting": JobState.QUEUED,
    "toLaunch": JobState.QUEUED,
    "Launching": JobState.QUEUED,
    "toAckReservation": JobState.QUEUED,
    "Hold": JobState.HELD,
    "Suspended": JobState.HELD,
    "Resuming": JobState.RUNNING,
    "Running": JobState.RUNNING,
    "Finishing": JobState.RUNNING,
    # On its way to Error: not final yet, the events tell why once it is Error.
    "toError": JobState.RUNNING,
}


def _event_types(record: Mapping[str, Any]) -> list[tuple[str, str]]:
    events = record.get("events") or []
    return [
        (str(e.get("type") or ""), str(e.get("description") or ""))
        for e in events
        if isinstance(e, Mapping)
    ]


def _error_status(record: Mapping[str, Any]) -> JobStatus:
    """An ``Error`` job: killed at its walltime, deleted (oardel), or failed to run."""
    events = _event_types(record)
    types = {t for t, _ in events}
    if "WALLTIME" in types:
        return JobStatus(JobState.TIMED_OUT, "walltime reached", None, "Error")
    # oardel (by the user or an admin) is a FRAG_JOB_REQUEST; the walltime kill is one too,
    # which is why WALLTIME is looked at first.
    for kind, description in events:
        if kind == "FRAG_JOB_REQUEST":
            return JobStatus(JobState.CANCELLED, description or "deleted (oardel)", None, "Error")
    # Anything else (node failure, oarexec trouble...): the last event says what happened.
    skip = {"SWITCH_INTO_ERROR_STATE", "SEND_KILL_JOB"}
    useful = [f"{t}: {d}" if d else t for t, d in events if t not in skip]
    return JobStatus(JobState.FAILED, useful[-1] if useful else "Error", None, "Error")


def _waiting_reason(native: str, record: Mapping[str, Any]) -> str | None:
    """OAR has no pending-reason field; its predicted start time is the most useful hint."""
    if native == "Waiting":
        start = record.get("scheduledStart")
        if isinstance(start, (int, float)) and start > 0:
            return "expected start " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(start))
        return None
    return native  # toLaunch / Launching / toAckReservation: about to start


def oar_job_status(record: Mapping[str, Any]) -> JobStatus:
    """Turn one job's ``oarstat -f -J`` record into a :class:`JobStatus`."""
    native = str(record.get("state") or "")
    if native == "Terminated":
        raw = record.get("exit_code")
        code = decode_wait_status(int(raw)) if isinstance(raw, int) else None
        if code:
            return JobStatus(JobState.FAILED, None, code, native)
        return JobStatus(JobState.FINISHED, None, code, native)
    if native == "Error":
        return _error_status(record)
    state = _STATES.get(native)
    if state is None:  # an unknown word: not final, so nothing is resubmitted by mistake
        state = JobState.RUNNING if native else JobState.QUEUED
        return JobStatus(state, native or None, None, native or None)
    if state == JobState.QUEUED:
        return JobStatus(state, _waiting_reason(native, record), None, native)
    if state == JobState.HELD:
        # oarhold -r / a suspension by the admin: stopped in place, not requeued
        interruption = Interruption.SUSPENDED if native == "Suspended" else None
        return JobStatus(state, native, None, native, interruption=interruption)
    return JobStatus(state, None, None, native)


def parse_oarstat_json(stdout: str) -> dict[str, JobStatus]:
    """Parse ``oarstat -f -J -j A -j B ...`` (or ``oarstat -J ...``) output.

    The output is a JSON object keyed by job id (a string). Ids OAR does not know are simply
    absent, and when none is known ``oarstat`` prints nothing at all: both give no entry.
    Raises ``ValueError`` if the output is not such JSON.
    """
    text = stdout.strip()
    if not text:
        return {}
    start = text.find("{")  # tolerate anything printed before the JSON
    if start < 0:
        raise ValueError(f"oarstat printed no JSON object: {text[:200]!r}")
    data = json.loads(text[start:])
    if not isinstance(data, dict):
        raise ValueError(f"oarstat JSON is not an object keyed by job id: {text[:200]!r}")
    return {
        str(job_id): oar_job_status(record)
        for job_id, record in data.items()
        if isinstance(record, Mapping)
    }


def oarstat_argv(job: Any, job_ids: Sequence[str], facts: dict) -> list[str]:
    """``oarstat -f -J -j A -j B``: -j is repeated (``-j 7,8`` is an error, ``-j 7 8`` shows
    only job 7); the full record (-f) holds exit_code, events and scheduledStart."""
    argv = ["oarstat", "-f", "-J"]
    for job_id in job_ids:
        argv += ["-j", str(job_id)]
    return argv


def oar_array_task_ids(stdout: str, indices: Sequence[int]) -> list[str]:
    """Every task of an OAR array is a job of its own: one ``OAR_JOB_ID=`` line each, in
    index order (the ``OAR_ARRAY_ID=`` line names the array)."""
    ids = re.findall(r"^OAR_JOB_ID=(\d+)\s*$", stdout, re.MULTILINE)
    if len(ids) != len(indices):
        raise ValueError(
            f"oarsub printed {len(ids)} job id(s) for an array of {len(indices)}:\n{stdout}"
        )
    return ids


def oar_adopt(listed: Sequence[str], indices: Sequence[int]) -> list[str]:
    """An OAR array's tasks are jobs with consecutive ids, in index order."""
    if len(listed) != len(indices):
        raise ValueError(f"{len(listed)} job(s) for an array of {len(indices)}")
    return sorted(listed, key=int)


# ---------------------------------------------------------------- tags

#: The first line of a tagged OAR job's command: a shell variable that is not exported, so
#: neither the workers nor the jobs they submit see it (``export`` first: as written by
#: dask_jobqueue before 2026-12, whose jobs are still ours).
_OAR_TAG_LINE = re.compile(rf"(?:export )?{TAG_VARIABLE}=(?P<tag>{TAG_PATTERN})")


def oar_tag_line(text: str) -> str:
    """The first line of the command of an OAR job tagged ``text``."""
    return f"{TAG_VARIABLE}={text}"


def parse_oar_tags(stdout: str, user: str | None = None) -> dict[str, str]:
    """``oarstat -J -u USER`` (JSON keyed by job id): OAR keeps no free field for the tag, so
    it travels in the job's command, whose first line must be exactly
    :func:`oar_tag_line` (``DASK_JOBQUEUE_TAG=<tag>``)."""
    text = stdout.strip()
    if not text:
        return {}
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"oarstat -J printed invalid JSON: {exc}") from None
    items = doc.items() if isinstance(doc, dict) else ((None, job) for job in doc)
    found = {}
    for key, job in items:
        if not isinstance(job, dict):
            continue
        job_id = job.get("Job_Id", job.get("id", key))
        first_line = str(job.get("command") or "").split("\n", 1)[0]
        match = _OAR_TAG_LINE.fullmatch(first_line.strip())
        if job_id is not None and match:
            found[str(job_id)] = match["tag"]
    return only_tagged(found)


# ---------------------------------------------------------------- the #OAR header
# The #OAR lines become oarsub arguments through shlex.split (OARJob.submit_argv): every
# free-text value is shlex-quoted, so it stays one argument whatever it holds.


def _resources(job: Any) -> str:
    # One -l line: several would make a moldable job.
    resources = job.resource_spec
    if job.walltime is not None:
        resources += f",walltime={job.walltime}"
    return shlex.quote(resources)


def _oar_log_file(directory: str, job_name: str, suffix: str) -> str:
    return shlex.quote(f"{directory}/{job_name}.%jobid%.{suffix}")


def add_memory_property(job: Any, lines: list[str], prefix: str) -> list[str]:
    """The header ``lines`` with ``-p <property>>=<MiB per core>`` for
    ``memory_per_core_property_name``, combined with the user's own ``-p`` (OAR keeps only
    one): that one is unquoted the way ``oarsub``'s arguments are split, then the combined
    condition quoted again."""
    prop = job.memory_per_core_property_name
    if prop is None or prop == "not_applicable":
        return lines
    per_core = math.ceil(job.worker_memory / (job.worker_cores * MIB))
    condition = f"{prop}>={per_core}"
    lines = list(lines)
    existing = [i for i, line in enumerate(lines) if line.startswith(f"{prefix} -p ")]
    if existing:
        i = existing[-1]
        old = " ".join(shlex.split(lines[i][len(f"{prefix} -p ") :]))
        lines[i] = f"{prefix} -p {shlex.quote(f'{old} AND {condition}')}"
    else:
        if shlex.split(condition) != [condition]:
            condition = shlex.quote(condition)
        lines.append(f"{prefix} -p {condition}")
    return lines


#: The ``#OAR`` lines of a job script, then the memory property (after the extras: it
#: merges with a ``-p`` of the user's).
HEADER = HeaderTable(
    (
        Directive("-n {}", "job_name", write=shlex.quote),
        Directive("-q {}", "queue"),
        Directive("--project {}", "project"),
        Directive("-l {}", _resources),
        Directive("-O {}", log_file(_oar_log_file, "out")),
        Directive("-E {}", log_file(_oar_log_file, "err")),
    ),
    finish=add_memory_property,
)


DIALECT = Dialect(
    name="oar",
    submit_command="oarsub",
    cancel_command="oardel",
    directive_prefix="#OAR",
    header_table=HEADER,
    job_id_regexp=r"^OAR_JOB_ID=(?P<job_id>\d+)\s*$",
    status_steps=(
        StatusStep(
            "oarstat", oarstat_argv, simple_parser(parse_oarstat_json), max_ids=STATUS_MAX_IDS
        ),
    ),
    # oardel of a job that ended meanwhile: "Cannot frag 17 ; This job was already killed."
    # (an id that no longer exists: "... You are not the right user.")
    cancel_gone_pattern=re.compile(r"already killed|not the right user"),
    tagging=TagSpec(
        submit_args=lambda text: [],  # the tag is in the command itself (OARJob._tag_line)
        list_argvs=lambda user: [["oarstat", "-J", "-u", user]],
        parse=parse_oar_tags,
    ),
    array_support=ArraySupport(
        index_var="OAR_ARRAY_INDEX",
        submit_args=lambda first, last: ["--array", str(last - first + 1)],
        task_ids=lambda stdout, indices: oar_array_task_ids(stdout, indices),
        first_index=1,
        adopt=lambda listed, indices: oar_adopt(listed, indices),
    ),
    walltime_forms=("hh:mm:ss", "hh:mm", "hours"),
)
