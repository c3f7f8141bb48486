"""Grid Engine (SGE, SoGE, UGE): ``qsub`` / ``qstat`` / ``qacct`` / ``qdel`` and ``#$`` directives.

How job states are found (one poll, all live jobs):

1. ``qstat -xml`` (this user's jobs): the native state of every queued or running job.
2. Only when some of them are pending: ONE ``qstat -xml -j id1,id2,...`` for all pending ids,
   for the scheduler's reasons (needs ``schedd_job_info true``) and the error reason of
   ``Eqw`` jobs.
3. Only for jobs that just left ``qstat`` (a finished job leaves no trace there): ``qacct -j
   ID``. qacct takes a single job id, so it runs once per *disappeared* job, not per poll: the
   first time the job is missing, then at most every ``accounting_retry`` seconds until
   ``accounting_grace`` seconds have passed (accounting is written with a delay,
   ``accounting_flush_time``, 15 s by default). The number of qacct calls is therefore bounded
   by the number of job deaths times ``accounting_grace / accounting_retry``; the calls of one
   poll run concurrently.

``Eqw`` jobs never leave the error state by themselves: they are reported FAILED with SGE's
error reason and deleted (one ``qdel`` for all of them) in the same poll, so nothing is left in
the queue once the cluster forgets them.
"""

from __future__ import annotations

import asyncio
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ._shell import CommandError, run_command
from .cluster import JobQueueCluster
from .job import Job
from .options import PROJECT, QUEUE, RESOURCE_SPEC, WALLTIME
from .tracking import JobState, JobStatus

__all__ = [
    "SGEJob",
    "SGECluster",
    "parse_qstat_xml",
    "parse_qstat_xml_j",
    "parse_qacct",
    "qacct_status",
    "sge_state",
]

_SCHEDD_INFO_OFF = "Collecting of scheduler job information is turned off"
_NOT_REASONS = ("Job is in error state", "Job is in hold state")
#: ``failed`` codes of qacct (see ``man accounting``) that mean a limit killed the job
_FAILED_TIMED_OUT = {37}
#: ``failed`` codes that mean someone deleted the job (qdel of a running job)
_FAILED_CANCELLED = {100}


def sge_state(native: str, reason: str | None = None) -> JobStatus:
    """Map a ``qstat`` state code (``r``, ``qw``, ``hqw``, ``Eqw``, ``dr``, ``s``...)."""
    code = native.strip()
    if "E" in code:
        return JobStatus(JobState.FAILED, reason or "error state (Eqw)", None, code)
    if "d" in code:
        return JobStatus(JobState.CANCELLED, "being deleted (qdel)", None, code)
    if "h" in code:
        return JobStatus(JobState.HELD, reason or "held", None, code)
    if any(c in code for c in "sST"):
        return JobStatus(JobState.HELD, "suspended", None, code)
    if "r" in code or "t" in code:
        return JobStatus(JobState.RUNNING, None, None, code)
    return JobStatus(JobState.QUEUED, reason, None, code)


def _text(element: ET.Element | None, tag: str) -> str:
    found = None if element is None else element.find(tag)
    return (found.text or "").strip() if found is not None else ""


def parse_qstat_xml(stdout: str) -> dict[str, str]:
    """``qstat -xml`` -> ``{job id: state code}`` for running and pending jobs.

    Array jobs appear once per running task; the first entry wins (we submit no arrays).
    """
    root = ET.fromstring(stdout)
    states: dict[str, str] = {}
    for entry in root.iter("job_list"):
        job_id = _text(entry, "JB_job_number")
        if job_id and job_id not in states:
            states[job_id] = _text(entry, "state")
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
        for message in element.iter("QIM_message"):
            text = (message.text or "").strip()
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


class SGEJob(Job):
    """A Grid Engine batch job running Dask workers."""

    config_name = "sge"
    submit_command = "qsub"
    cancel_command = "qdel"
    directive_prefix = "#$"
    # "Your job 4 ("name") has been submitted", "Your job-array 5.1-3:1 (...)", or -terse "4"
    job_id_regexp = r"(?:Your job(?:-array)? )?(?P<job_id>\d+)"
    walltime_forms = ("hh:mm:ss", "seconds")
    #: seconds to keep asking qacct about a job that left qstat, and the pause between asks
    accounting_grace = 30.0
    accounting_retry = 2.0

    options = (
        QUEUE,
        PROJECT,
        replace(RESOURCE_SPEC, doc=RESOURCE_SPEC.doc + " Grid Engine gets no memory request "
                "unless you give one here, e.g. ``'h_vmem=4G,mem_req=4G'``."),
        WALLTIME,
    )

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._submit_cwd = Path.cwd()
        # poller memory (used on the cluster's template job): last status seen in qstat, and
        # for jobs that left qstat: (first missed, last qacct call) in time.monotonic()
        self._last_seen: dict[str, JobStatus] = {}
        self._gone: dict[str, tuple[float, float]] = {}


    def header_directives(self) -> list[str]:
        lines = [f"-N {self.job_name}"]
        if self.queue is not None:
            lines.append(f"-q {self.queue}")
        if self.project is not None:
            lines.append(f"-P {self.project}")
        if self.resource_spec is not None:
            lines.append(f"-l {self.resource_spec}")
        if self.walltime is not None:
            lines.append(f"-l h_rt={self.walltime}")
        if self.log_directory is not None:
            lines += [f"-e {self.log_directory}/", f"-o {self.log_directory}/"]
        lines += ["-cwd", "-j y"]
        return lines

    def status_argv(self, job_ids: Sequence[str]) -> list[str]:
        return ["qstat", "-xml"]

    def parse_status(self, stdout: str, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """Status from ``qstat -xml`` alone (no reasons, no final states)."""
        return {i: sge_state(s) for i, s in parse_qstat_xml(stdout).items() if i in job_ids}

    async def query_status(
        self, job_ids: Sequence[str], jobs: Mapping[str, Job], timeout: float
    ) -> dict[str, JobStatus] | None:
        result = await run_command(self.status_argv(job_ids), timeout=timeout)
        native = {i: s for i, s in parse_qstat_xml(result.stdout).items() if i in job_ids}
        statuses = {i: sge_state(s) for i, s in native.items()}

        # held jobs need no scheduler reasons: they wait for qrls, not for resources
        waiting = [i for i, s in native.items() if "E" in s or ("q" in s and "h" not in s)]
        if waiting:
            reasons, errors = await self._pending_details(waiting, timeout)
            for job_id in waiting:
                state = native[job_id]
                if "E" in state:
                    reason = errors.get(job_id) or _join_reasons(reasons.get(job_id, []))
                    statuses[job_id] = sge_state(state, reason)
                else:
                    statuses[job_id] = sge_state(state, _join_reasons(reasons.get(job_id, [])))
            in_error = [i for i in waiting if "E" in native[i]]
            if in_error:
                await self._delete(in_error, timeout)

        now = time.monotonic()
        for job_id, status in statuses.items():
            self._last_seen[job_id] = status
            self._gone.pop(job_id, None)
        gone = [i for i in job_ids if i not in statuses]
        if gone:
            statuses.update(await self._accounting(gone, now, timeout))
        for job_id in list(self._last_seen):
            if job_id not in job_ids:
                self._last_seen.pop(job_id, None)
                self._gone.pop(job_id, None)
        return statuses

    async def _pending_details(
        self, job_ids: Sequence[str], timeout: float
    ) -> tuple[dict[str, list[str]], dict[str, str]]:
        try:
            result = await run_command(
                ["qstat", "-xml", "-j", ",".join(job_ids)], timeout=timeout
            )
            return parse_qstat_xml_j(result.stdout)
        except (CommandError, ET.ParseError):
            return {}, {}

    async def _delete(self, job_ids: Sequence[str], timeout: float) -> None:
        try:
            await run_command(self.cancel_argv(job_ids), timeout=timeout)
        except CommandError:
            pass

    async def _qacct(self, job_id: str, timeout: float) -> JobStatus | None:
        try:
            result = await run_command(["qacct", "-j", job_id], timeout=timeout)
        except CommandError:  # "error: job id N not found" (rc 1): not (yet) in accounting
            return None
        return qacct_status(parse_qacct(result.stdout))

    async def _accounting(
        self, job_ids: Sequence[str], now: float, timeout: float
    ) -> dict[str, JobStatus]:
        """Statuses of jobs that left qstat: final ones from qacct; while qacct does not know
        a job yet (accounting delay), its last seen state with a note, for ``accounting_grace``
        seconds. After that a job last seen pending was deleted before it ran (CANCELLED); any
        other is left out, so the poller calls it lost."""
        due = []
        for job_id in job_ids:
            first, last_call = self._gone.get(job_id, (now, -1e9))
            self._gone[job_id] = (first, last_call)
            if now - last_call >= self.accounting_retry:
                due.append(job_id)
                self._gone[job_id] = (first, now)
        found = await asyncio.gather(*(self._qacct(i, timeout) for i in due))
        statuses: dict[str, JobStatus] = {}
        accounted = {i: s for i, s in zip(due, found, strict=True) if s is not None}
        for job_id in job_ids:
            if job_id in accounted:
                statuses[job_id] = accounted[job_id]
                continue
            first, _ = self._gone[job_id]
            last = self._last_seen.get(job_id, JobStatus(JobState.QUEUED, None, None, "qw"))
            if now - first < self.accounting_grace:
                statuses[job_id] = JobStatus(
                    last.state if not last.state.is_final else JobState.RUNNING,
                    "left the queue; waiting for accounting (qacct)",
                    None,
                    last.native_state,
                )
            elif last.state.is_waiting:
                statuses[job_id] = JobStatus(
                    JobState.CANCELLED, "deleted before it ran (not in qacct)", None, None
                )
        return statuses

    def output_files(self, job_id: str) -> list[Path]:
        directory = (
            Path(self.log_directory).expanduser()
            if self.log_directory is not None
            else self._submit_cwd
        )
        return [directory / f"{self.job_name}.o{job_id}", directory / f"{self.job_name}.e{job_id}"]


class SGECluster(JobQueueCluster):
    """Launch Dask workers on a Grid Engine cluster (SGE, UGE, OGE).

    >>> cluster = SGECluster(cores=8, memory="32GB", resource_spec="h_vmem=4G")  # doctest: +SKIP
    """

    job_cls = SGEJob
