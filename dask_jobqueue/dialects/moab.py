"""Moab: ``msub`` / ``showq`` / ``canceljob`` with PBS-style ``#PBS`` directives.

Job states come from ``showq --xml``, which lists every active, eligible (idle) and blocked
(held, deferred) job in one call; ``checkjob`` would be one command per job. Finished jobs
leave those sections, so only when some of our ids are missing a second call,
``showq -c --xml``, reads the completed section (``CompletionCode`` is the resource manager's
exit status: Torque's ``-11`` walltime kill, ``256 + S`` for a signal). Jobs gone from both
are unknown to Moab (the cluster marks them lost after a few polls).

``canceljob`` takes several ids, so a batch of jobs is still cancelled with one command.

Moab's states, the ``showq --xml`` parser and its DIALECT: the Torque flavour of the PBS
dialect with Moab's commands. The public job and cluster classes are in :mod:`dask_jobqueue.moab`.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from ..dialect import StatusStep, missing_ids
from ..tags import TagSpec
from ..tracking import Interruption, JobState, JobStatus
from .pbs import TORQUE, parse_pbs_tags, pbs_job_status

__all__ = [
    "DIALECT",
    "match_moab_ids",
    "moab_job_status",
    "parse_moab_tags",
    "parse_showq_step",
    "parse_showq_xml",
    "showq_argv",
    "showq_completed_argv",
]

_STATES: dict[str, JobState] = {
    "Idle": JobState.QUEUED,
    "Staging": JobState.QUEUED,
    "Migrated": JobState.QUEUED,
    "NotQueued": JobState.QUEUED,
    "UserHold": JobState.HELD,
    "SystemHold": JobState.HELD,
    "BatchHold": JobState.HELD,
    "Hold": JobState.HELD,
    "Deferred": JobState.HELD,
    "Blocked": JobState.HELD,
    "Suspended": JobState.HELD,
    "Starting": JobState.RUNNING,
    "Running": JobState.RUNNING,
    "Canceling": JobState.RUNNING,
    "Completing": JobState.RUNNING,
}


def moab_job_status(
    state: str, completion_code: str | None = None, reason: str | None = None
) -> JobStatus:
    """One job's status from its Moab ``State`` and ``CompletionCode``.

    ``Completed`` jobs are judged by the completion code (Torque conventions), ``Removed``
    ones were cancelled, ``Vacated`` ones failed. Waiting jobs get ``reason`` or their state
    word (``UserHold``, ``Deferred``...) as reason.
    """
    state = (state or "").strip()
    code: int | None
    try:
        code = int(completion_code) if completion_code is not None else None
    except ValueError:  # "None" for jobs removed before they ran
        code = None
    if state == "Completed":
        status = pbs_job_status("C", code, None, None, "torque")
        return JobStatus(status.state, status.reason, status.exit_code, state)
    if state == "Removed":
        if code is not None and code != 0:
            status = pbs_job_status("C", code, None, None, "torque")
            if status.state in (JobState.TIMED_OUT, JobState.CANCELLED):
                return JobStatus(status.state, status.reason, status.exit_code, state)
        return JobStatus(JobState.CANCELLED, reason or "removed", code, state)
    if state == "Vacated":
        return JobStatus(JobState.FAILED, reason or "vacated", code, state)
    job_state = _STATES.get(state, JobState.RUNNING if state else JobState.QUEUED)
    if job_state.is_waiting:
        interruption = Interruption.SUSPENDED if state == "Suspended" else None
        return JobStatus(job_state, reason or state or None, None, state, interruption=interruption)
    return JobStatus(job_state, None, None, state)


def parse_showq_xml(stdout: str) -> dict[str, JobStatus]:
    """Parse ``showq --xml`` (any of its sections): a status per ``JobID``.

    A job in the ``blocked`` section that Moab still calls ``Idle`` is reported held.
    """
    text = stdout.strip()
    if not text:
        return {}
    root = ET.fromstring(text)
    statuses = {}
    for queue in root.iter("queue"):
        section = queue.get("option", "")
        for job in queue.iter("job"):
            job_id = job.get("JobID")
            if not job_id:
                continue
            reason = job.get("BlockReason") or job.get("BlockMsg") or job.get("HoldReason")
            status = moab_job_status(job.get("State", ""), job.get("CompletionCode"), reason)
            if section == "blocked" and status.state == JobState.QUEUED:
                status = JobStatus(JobState.HELD, reason or "blocked", None, status.native_state)
            statuses[job_id] = status
    return statuses


def _number(job_id: str) -> str:
    match = re.search(r"\d+", job_id)
    return match.group(0) if match else job_id


def match_moab_ids(
    job_ids: Sequence[str], statuses: Mapping[str, JobStatus]
) -> dict[str, JobStatus]:
    """Statuses keyed by our ids; ``Moab.12``, ``12`` and ``12.server`` name the same job."""
    by_number = {_number(key): status for key, status in statuses.items()}
    result = {}
    for job_id in job_ids:
        status = statuses.get(job_id) or by_number.get(_number(job_id))
        if status is not None:
            result[job_id] = status
    return result


def showq_argv(job: Any, job_ids: Sequence[str], facts: dict) -> list[str]:
    """``showq --xml``: every active, eligible and blocked job (ids can't be given)."""
    return ["showq", "--xml"]


def showq_completed_argv(job: Any, job_ids: Sequence[str], facts: dict) -> list[str]:
    """``showq -c --xml``: recently completed jobs, for ids the first step did not list."""
    return ["showq", "-c", "--xml"]


def parse_showq_step(
    stdout: str, job_ids: Sequence[str], known: Mapping[str, JobStatus]
) -> dict[str, JobStatus]:
    """Statuses of our ids from ``showq --xml`` output."""
    return match_moab_ids(job_ids, parse_showq_xml(stdout))


# ---------------------------------------------------------------- tags


def parse_moab_tags(stdout: str, user: str | None = None) -> dict[str, str]:
    """Torque's ``qstat -f`` under Moab: as :func:`parse_pbs_tags`, with Moab's job ids
    (``12``, where Torque says ``12.server``)."""
    return {job_id.split(".", 1)[0]: text for job_id, text in parse_pbs_tags(stdout, user).items()}


# PBS directives and walltime forms (Moab runs over Torque), Moab's commands.
DIALECT = replace(
    TORQUE,
    name="moab",
    submit_command="msub",
    cancel_command="canceljob",
    # msub prints a blank line then the id: ``12``, ``Moab.12`` or ``12.server``
    job_id_regexp=r"^\s*(?P<job_id>(?:Moab\.)?\d+(?:\.[\w-]+)*)\s*$",
    status_steps=(
        StatusStep("showq --xml", showq_argv, parse_showq_step),
        StatusStep(
            "showq -c --xml",
            showq_completed_argv,
            parse_showq_step,
            select=missing_ids,
            required=False,
        ),
    ),
    cancel_gone_pattern=re.compile(r"invalid job|cannot locate job|not found", re.IGNORECASE),
    cancel_max_ids=1000,  # canceljob, not PBS's qdel
    # tagged like PBS (the job name); Torque's qstat lists them under its own ids (12.server)
    tagging=TagSpec(
        submit_args=TORQUE.tagging.submit_args if TORQUE.tagging else (lambda text: []),
        list_argvs=lambda user: [["qstat", "-f"]],
        parse=parse_moab_tags,
    ),
    # No arrays through Moab: they exist only where the site enabled them (ENABLEJOBARRAYS in
    # moab.cfg, which a user cannot query), the index reaches the job only with ``msub -V``
    # (which exports the whole submit environment), the task id form changed between
    # versions (``235.1`` in 6.0, ``235[1]`` later) and msub's output for an array is not
    # documented; no real Moab is available to record it. One msub per job.
    array_support=None,
    site_probes=(),
)
