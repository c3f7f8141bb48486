"""Grid Engine (SGE, SoGE, UGE): ``qsub`` / ``qstat`` / ``qacct`` / ``qdel``, ``#$`` directives.

How job states are found (one poll, all live jobs):

1. ``qstat -xml`` (this user's jobs): the native state of every queued or running job.
2. Only when some of them are pending: ONE ``qstat -xml -j id1,id2,...`` for all pending ids,
   for the scheduler's reasons (needs ``schedd_job_info true``) and the error reason of
   ``Eqw`` jobs.
3. Only for jobs that left ``qstat`` (a finished job leaves no trace there): ``qacct``,
   while the engine's grace period for vanished jobs runs (accounting is written with a
   delay, ``accounting_flush_time``, 15 s by default): one ``qacct -j`` per job or array, at
   most a few at a time, or one listing of the user's records since the earliest submission
   when more are missing. After the grace, a job qacct never knew is cancelled if it was last
   seen waiting, else lost.

``Eqw`` jobs never leave the error state by themselves: they are reported FAILED with SGE's
error reason and marked stuck, so the engine deletes them once the cluster lets go of them.
The public job and cluster classes are in :mod:`dask_jobqueue.sge`.
"""

from __future__ import annotations

import getpass
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from .._values import directive_value
from ..dialect import (
    STATUS_MAX_IDS,
    ArraySupport,
    Dialect,
    Directive,
    HeaderTable,
    LimitsProbe,
    StatusStep,
    WalltimeDefault,
    adopt_one_array,
    hms_seconds,
    index_spans,
    missing_ids,
    single_array_id,
)
from ..tags import TAG_VARIABLE, TagSpec, only_tagged
from ..tracking import Interruption, JobState, JobStatus

__all__ = [
    "HEADER",
    "SGE_PATH_REFUSED",
    "SGE_REFUSED",
    "qsub_value",
    "sge_log_path",
    "DIALECT",
    "QACCT_CLOCK_MARGIN",
    "SGE_ARRAYS",
    "expand_sge_tasks",
    "parse_qacct",
    "parse_qacct_records",
    "parse_qacct_step",
    "parse_qstat_j_step",
    "parse_qstat_step",
    "parse_qstat_xml",
    "parse_qstat_xml_j",
    "parse_sge_limits",
    "parse_sge_queue_h_rt",
    "parse_sge_tags",
    "qacct_argv",
    "qacct_groups",
    "qacct_listing_argv",
    "qacct_status",
    "qstat_argv",
    "qstat_j_argv",
    "sge_array_task_ids",
    "sge_cancel_args",
    "sge_state",
    "waiting_ids",
]

_SCHEDD_INFO_OFF = "Collecting of scheduler job information is turned off"
_NOT_REASONS = ("Job is in error state", "Job is in hold state")
#: ``failed`` codes of qacct (see ``man accounting``) that mean a limit killed the job
_FAILED_TIMED_OUT = {37}
#: ``failed`` codes that mean someone deleted the job (qdel of a running job)
_FAILED_CANCELLED = {100}


def sge_state(native: str, reason: str | None = None) -> JobStatus:
    """Map a ``qstat`` state code (``r``, ``qw``, ``hqw``, ``Eqw``, ``dr``, ``s``...).

    ``s``/``S``/``T`` (suspended by ``qmod -sj``, by its queue, or by a load threshold) are
    suspensions; ``Rq`` (rescheduled by ``qmod -rj`` or a host failure, waiting again) a requeue.
    """
    code = native.strip()
    if "E" in code:
        return JobStatus(JobState.FAILED, reason or "error state (Eqw)", None, code)
    if "d" in code:
        return JobStatus(JobState.CANCELLED, "being deleted (qdel)", None, code)
    if "h" in code:
        return JobStatus(JobState.HELD, reason or "held", None, code)
    if any(c in code for c in "sST"):
        return JobStatus(
            JobState.HELD, "suspended", None, code, interruption=Interruption.SUSPENDED
        )
    if "r" in code or "t" in code:
        return JobStatus(JobState.RUNNING, None, None, code)
    if "R" in code:
        return JobStatus(
            JobState.QUEUED, reason or "rescheduled", None, code, interruption=Interruption.REQUEUED
        )
    return JobStatus(JobState.QUEUED, reason, None, code)


def _text(element: ET.Element | None, tag: str) -> str:
    found = None if element is None else element.find(tag)
    return (found.text or "").strip() if found is not None else ""


def expand_sge_tasks(spec: str) -> list[int]:
    """Task indices of a ``<tasks>`` field: ``3``, ``7,10``, ``5-10:1``, ``1-9:2,12``."""
    indices: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)(?:-(\d+)(?::(\d+))?)?", part)
        if not match:
            raise ValueError(f"unreadable array task list {spec!r}")
        first = int(match.group(1))
        last = int(match.group(2) or first)
        step = int(match.group(3) or 1)
        indices += range(first, last + 1, step)
    return indices


def parse_qstat_xml(stdout: str) -> dict[str, str]:
    """``qstat -xml`` -> ``{job id: state code}`` for running and pending jobs.

    An array task is reported as ``JOBID.TASK`` (running tasks have a line each, pending
    ones share one: ``<tasks>7,10</tasks>``); a plain job by its number.
    """
    root = ET.fromstring(stdout)
    states: dict[str, str] = {}
    for entry in root.iter("job_list"):
        job_id = _text(entry, "JB_job_number")
        if not job_id:
            continue
        tasks = _text(entry, "tasks")
        keys = [f"{job_id}.{i}" for i in expand_sge_tasks(tasks)] if tasks else [job_id]
        for key in keys:
            states.setdefault(key, _text(entry, "state"))
    return states


def parse_qstat_xml_j(stdout: str) -> tuple[dict[str, list[str]], dict[str, str]]:
    """``qstat -xml -j id1,id2`` -> (pending reasons per id, error reason per id).

    Reasons are the scheduler's messages naming the job (``MES_job_number_list``); when a job
    has none, the global messages (e.g. ``queue instance "all.q@vm" dropped because it is
    full``) are used. The error reason of an ``Eqw`` job is its ``QIM_message``.
    """
    root = ET.fromstring(stdout)
    job_ids = [
        _text(element, "JB_job_number")
        for element in root.findall("./djob_info/element")
        if _text(element, "JB_job_number")
    ]
    own: dict[str, list[str]] = {}
    global_messages: list[str] = []
    for message_list in root.iter("SME_message_list"):
        for element in message_list.findall("element"):
            message = _text(element, "MES_message")
            if not message or message in _NOT_REASONS:
                continue
            for value in element.iter("ULNG_value"):
                own.setdefault((value.text or "").strip(), []).append(message)
    for message_list in root.iter("SME_global_message_list"):
        for element in message_list.findall("element"):
            message = _text(element, "MES_message")
            if message and _SCHEDD_INFO_OFF not in message:
                global_messages.append(message)
    reasons = {job_id: own.get(job_id) or list(global_messages) for job_id in job_ids}
    errors: dict[str, str] = {}
    for element in root.findall("./djob_info/element"):
        job_id = _text(element, "JB_job_number")
        for qim_message in element.iter("QIM_message"):
            text = (qim_message.text or "").strip()
            if text:
                # "11/26/2026 14:54:19 [0:18215]: error: can't open output file ..."
                errors[job_id] = re.sub(r"^.*?\]:\s*(error:\s*)?", "", text)
                break
    return reasons, errors


def parse_qacct(stdout: str) -> dict[str, str]:
    """``qacct -j ID`` -> its fields; when several records match (an id reused after a
    qmaster restart, array tasks), the last one."""
    records: list[dict[str, str]] = []
    for line in stdout.splitlines():
        if line.startswith("====="):
            records.append({})
            continue
        key, _, value = line.partition(" ")
        if key and records:
            records[-1][key] = value.strip()
    return records[-1] if records else {}


def qacct_status(fields: Mapping[str, str]) -> JobStatus | None:
    """Final status from qacct fields: ``failed`` and ``exit_status``."""
    if "failed" not in fields:
        return None
    failed_text = fields.get("failed", "0")
    failed_match = re.match(r"\s*(\d+)\s*:?\s*(.*)", failed_text)
    failed = int(failed_match.group(1)) if failed_match else 0
    failed_reason = failed_match.group(2).strip() if failed_match else failed_text
    exit_match = re.match(r"\s*(\d+)", fields.get("exit_status", ""))
    exit_code = int(exit_match.group(1)) if exit_match else None
    native = f"failed={failed} exit_status={exit_code}"
    if failed in _FAILED_TIMED_OUT:
        return JobStatus(JobState.TIMED_OUT, failed_reason or "limit exceeded", exit_code, native)
    if failed in _FAILED_CANCELLED:
        return JobStatus(JobState.CANCELLED, "deleted (qdel)", exit_code, native)
    if failed:
        return JobStatus(JobState.FAILED, failed_reason or f"failed {failed}", exit_code, native)
    if exit_code == 0:
        return JobStatus(JobState.FINISHED, None, 0, native)
    return JobStatus(JobState.FAILED, None, exit_code, native)


def _join_reasons(messages: Sequence[str], limit: int = 3) -> str | None:
    if not messages:
        return None
    unique = list(dict.fromkeys(messages))
    text = "; ".join(unique[:limit])
    if len(unique) > limit:
        text += f" (+{len(unique) - limit} more)"
    return text


def qstat_argv(job: Any, job_ids: Sequence[str], facts: dict) -> list[str]:
    """``qstat -xml``: every queued and running job of this user (ids can't be given)."""
    return ["qstat", "-xml"]


def _stuck_if_error(status: JobStatus) -> JobStatus:
    # Eqw never leaves the error state by itself: the engine deletes it once it is let go.
    return replace(status, stuck=True) if "E" in (status.native_state or "") else status


def parse_qstat_step(
    stdout: str, job_ids: Sequence[str], known: Mapping[str, JobStatus]
) -> dict[str, JobStatus]:
    """States from ``qstat -xml`` (no reasons, no final states: finished jobs leave it)."""
    native = parse_qstat_xml(stdout)
    return {i: _stuck_if_error(sge_state(native[i])) for i in job_ids if i in native}


def waiting_ids(job_ids: Sequence[str], known: Mapping[str, JobStatus]) -> list[str]:
    """Pending jobs not on hold (they wait for resources: the scheduler says why) and jobs in
    error (their error reason)."""
    selected = []
    for job_id in job_ids:
        native = known[job_id].native_state or "" if job_id in known else ""
        if "E" in native or ("q" in native and "h" not in native):
            selected.append(job_id)
    return selected


def qstat_j_argv(job: Any, job_ids: Sequence[str], facts: dict) -> list[str]:
    """One ``qstat -xml -j id1,id2`` for every waiting id (reasons need schedd_job_info);
    array tasks are asked by their array's number."""
    return ["qstat", "-xml", "-j", ",".join(dict.fromkeys(i.split(".")[0] for i in job_ids))]


def parse_qstat_j_step(
    stdout: str, job_ids: Sequence[str], known: Mapping[str, JobStatus]
) -> dict[str, JobStatus]:
    """The waiting jobs' states with the scheduler's reasons or the error reason."""
    try:
        reasons, errors = parse_qstat_xml_j(stdout)
    except ET.ParseError as exc:
        raise ValueError(f"qstat -j printed invalid XML: {exc}") from None
    statuses = {}
    for job_id in job_ids:
        if job_id not in known:
            continue
        native = known[job_id].native_state or ""
        number = job_id.split(".")[0]
        reason = _join_reasons(reasons.get(number, []))
        if "E" in native:
            reason = errors.get(number) or reason
        statuses[job_id] = _stuck_if_error(sge_state(native, reason))
    return statuses


def qacct_argv(job: Any, job_ids: Sequence[str], facts: dict) -> list[str]:
    """``qacct -j ID`` for a job that left qstat; ``qacct -j ID -t TASK`` for one array
    task; ``qacct -j ID`` for several tasks of array ``ID`` (every task's record)."""
    number, _, task = job_ids[0].partition(".")
    if task and len(job_ids) == 1:
        return ["qacct", "-j", number, "-t", task]
    return ["qacct", "-j", number]


def qacct_groups(job_ids: Sequence[str]) -> list[list[str]]:
    """The ids of each ``qacct`` command: the tasks of one array together."""
    groups: dict[str, list[str]] = {}
    for job_id in job_ids:
        groups.setdefault(job_id.partition(".")[0], []).append(job_id)
    return list(groups.values())


#: Clock difference allowed between this host and the execution hosts for ``qacct -b``.
QACCT_CLOCK_MARGIN = 3600.0


def qacct_listing_argv(job: Any, job_ids: Sequence[str], facts: dict) -> list[str] | None:
    """One ``qacct -o USER -b TIME -j`` for many jobs: this user's records of jobs started
    after the earliest submission (less :data:`QACCT_CLOCK_MARGIN`), instead of one
    ``qacct`` per job (a separate ``-j`` per id is not possible: the last one wins).
    ``None`` when that time is unknown."""
    since = facts.get("submitted_since")
    if since is None:
        return None
    begin = time.strftime("%Y%m%d%H%M", time.localtime(since - QACCT_CLOCK_MARGIN))
    return ["qacct", "-o", getpass.getuser(), "-b", begin, "-j"]


def parse_qacct_records(stdout: str) -> dict[str, dict[str, str]]:
    """Every record of ``qacct -j`` output by id: ``jobnumber``, or ``jobnumber.taskid``
    for an array task; the last record of an id wins (ids reused after a restart)."""
    records: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None

    def keep(fields: dict[str, str] | None) -> None:
        if fields and fields.get("jobnumber"):
            task = fields.get("taskid", "")
            key = fields["jobnumber"] + (f".{task}" if task.isdigit() else "")
            records[key] = fields

    for line in stdout.splitlines():
        if line.startswith("====="):
            keep(current)
            current = {}
            continue
        key, _, value = line.partition(" ")
        if key and current is not None:
            current[key] = value.strip()
    keep(current)
    return records


def parse_qacct_step(
    stdout: str, job_ids: Sequence[str], known: Mapping[str, JobStatus]
) -> dict[str, JobStatus]:
    """The final states of ``job_ids`` from their accounting records."""
    records = parse_qacct_records(stdout)
    statuses = {}
    for job_id in job_ids:
        status = qacct_status(records[job_id]) if job_id in records else None
        if status is not None:
            statuses[job_id] = status
    return statuses


def sge_array_task_ids(stdout: str, indices: Sequence[int]) -> list[str]:
    """``Your job-array 69.1-3:1 ("x") has been submitted`` -> ``["69.1", "69.2", "69.3"]``."""
    array_id = single_array_id(DIALECT.job_id_regexp, stdout, "qsub")
    return [f"{array_id}.{i}" for i in indices]


def sge_cancel_args(job_ids: Sequence[str]) -> list[str]:
    """``qdel`` arguments: consecutive tasks of one array as ``69.3-5``, others as is."""
    tasks: dict[str, list[int]] = {}
    out: list[str] = []
    for job_id in job_ids:
        number, sep, task = job_id.partition(".")
        if sep and task.isdigit():
            tasks.setdefault(number, []).append(int(task))
        else:
            out.append(job_id)
    for number, indices in tasks.items():
        out += [f"{number}.{span}" for span in index_spans(indices)]
    return out


def parse_sge_limits(stdout: str) -> dict[str, int]:
    """``qconf -sconf`` -> ``max_array_size`` from ``max_aj_tasks`` (0: no limit)."""
    match = re.search(r"^max_aj_tasks\s+(\d+)\s*$", stdout, re.MULTILINE)
    return {"max_array_size": int(match.group(1))} if match and int(match.group(1)) else {}


SGE_ARRAYS = ArraySupport(
    index_var="SGE_TASK_ID",
    submit_args=lambda first, last: ["-t", f"{first}-{last}"],
    task_ids=sge_array_task_ids,
    first_index=1,
    cancel_args=sge_cancel_args,
    adopt=lambda listed, indices: adopt_one_array(listed, indices, lambda a, i: f"{a}.{i}"),
    # over max_aj_tasks (recorded on Grid Engine 8.1.9)
    too_large=re.compile(r"you tried to submit a job with more than \d+ tasks"),
)


def parse_sge_queue_h_rt(stdout: str) -> float | None:
    """``qconf -sq QUEUE``: the queue's ``h_rt`` (``INFINITY``: no limit)."""
    for line in stdout.splitlines():
        key, _, value = line.strip().partition(" ")
        if key == "h_rt":
            return hms_seconds(value)
    return None


# ---------------------------------------------------------------- tags


def parse_sge_tags(stdout: str, user: str | None = None) -> dict[str, str]:
    """``qstat -xml -j '*'``: ``JB_job_number`` and the ``DASK_JOBQUEUE_TAG`` entry of
    ``JB_context`` of every job (of ``user``'s jobs only, if given: ``JB_owner``)."""
    text = stdout.strip()
    if not text:
        return {}
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ValueError(f"qstat -xml printed invalid XML: {exc}") from None
    found = {}
    for job in root.iter():
        number = (job.findtext("JB_job_number") or "").strip()
        if not number:
            continue
        if user is not None and (job.findtext("JB_owner") or "").strip() not in ("", user):
            continue
        # the job context (qsub -ac), not the job's environment (same element names)
        for context in job.iter("JB_context"):
            for entry in context:
                if (entry.findtext("VA_variable") or "").strip() == TAG_VARIABLE:
                    found[number] = (entry.findtext("VA_value") or "").strip()
    return only_tagged(found)


# ---------------------------------------------------------------- the #$ header

#: What Grid Engine's qsub cannot carry in a ``#$`` value, and why.
SGE_REFUSED = {
    "\"'": "qsub drops quote characters inside a '#$' value (or ends the value there)",
    "#": "qsub cuts a '#$' line at '#', even inside quotes",
}
#: ... and in an ``-e``/``-o`` path list, ``[host:]path[,[host:]path...]``.
SGE_PATH_REFUSED = {
    **SGE_REFUSED,
    ":,": "qsub reads ':' and ',' in -e/-o as host and list separators",
}


def qsub_value(
    value: object, keyword: str, refused: Mapping[str, str] = SGE_REFUSED, shown: object = None
) -> str:
    """``value`` as one argument of a ``#$`` line.

    Grid Engine's qsub reads a double- or single-quoted directive value as one argument,
    without escapes (recorded on SGE 8.1.9: ``#$ -o "/t/a -q other -o /t/"`` set
    ``stdout_path_list /t/a -q other -o /t/`` and no queue; a backslash stayed literal).
    """
    return directive_value(value, keyword, "Grid Engine", refused=refused, shown=shown)


def sge_log_path(directory: str) -> str:
    """The ``-e``/``-o`` value ``<directory>/``, quoted for ``#$``."""
    return qsub_value(f"{directory}/", "log_directory", SGE_PATH_REFUSED, shown=directory)


#: The ``#$`` lines of a job script.
def _gpu_request(job: Any) -> str | None:
    # a consumable complex of the site's choosing (gpu_resource_name), e.g. -l gpu=2. A job of
    # several nodes is a parallel job, for which Grid Engine books a consumable once per slot
    # (recorded on 8.1.9: -l gpu=1 -pe pe 2 took 2): gpus per node over the cores slots of each
    # host (SGEJob requires gpus == cores there)
    if job.gpus is None:
        return None
    per_slot = job.gpus // job.worker_cores if job.nodes > 1 else job.gpus
    return f"{job.gpu_resource_name}={per_slot}"


HEADER = HeaderTable(
    (
        Directive("-N {}", "job_name"),
        Directive("-q {}", "queue"),
        Directive("-P {}", "project"),
        Directive("-l {}", "resource_spec"),
        Directive("-l h_rt={}", "walltime"),
        Directive("-l {}", lambda job: _gpu_request(job)),
        Directive(
            "-pe {}",
            lambda job: f"{job.parallel_environment} {job.worker_cores * job.nodes}",
            when=lambda job: job.nodes > 1,
        ),
        Directive("-e {}", "log_directory", write=sge_log_path),
        Directive("-o {}", "log_directory", write=sge_log_path),
        Directive("-cwd"),
        Directive("-j y"),
    )
)


DIALECT = Dialect(
    name="sge",
    submit_command="qsub",
    cancel_command="qdel",
    directive_prefix="#$",
    header_table=HEADER,
    # "Your job 4 ("name") has been submitted", "Your job-array 5.1-3:1 (...)", or -terse "4"
    job_id_regexp=r"^(?:Your job(?:-array)? )?(?P<job_id>\d+)(?:\.\d+-\d+:\d+)?(?= \(|\s*$)",
    walltime_forms=("hh:mm:ss", "seconds"),
    # the queue's h_rt; without a queue the job may land in any queue: unknown
    walltime_default=WalltimeDefault(
        lambda job: ["qconf", "-sq", job.queue] if job.queue else None,
        lambda stdout, job: parse_sge_queue_h_rt(stdout),
    ),
    status_steps=(
        StatusStep("qstat -xml", qstat_argv, parse_qstat_step),
        StatusStep(
            "qstat -xml -j",
            qstat_j_argv,
            parse_qstat_j_step,
            select=waiting_ids,
            required=False,
            max_ids=STATUS_MAX_IDS,
        ),
        # qacct reads the whole accounting file: at most every 5 s per vanished job, one
        # command per array, and one listing for all when more than a few would run
        StatusStep(
            "qacct",
            qacct_argv,
            parse_qacct_step,
            select=missing_ids,
            each=True,
            pace=5.0,
            group=qacct_groups,
            batch_argv=qacct_listing_argv,
            required=False,
        ),
    ),
    # qdel of a job that ended meanwhile: 'denied: job "12" does not exist'
    cancel_gone_pattern=re.compile(r"does not exist"),
    array_support=SGE_ARRAYS,
    site_probes=(LimitsProbe(lambda job: ["qconf", "-sconf"], parse_sge_limits),),
    # the tag is a job context variable (qsub -ac), shown by qstat -j
    tagging=TagSpec(
        submit_args=lambda text: ["-ac", f"{TAG_VARIABLE}={text}"],
        list_argvs=lambda user: [["qstat", "-xml", "-u", user, "-j", "*"]],
        parse=parse_sge_tags,
    ),
)
