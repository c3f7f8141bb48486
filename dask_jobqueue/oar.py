"""OAR: ``oarsub`` / ``oarstat`` / ``oardel``; ``#OAR`` directives become ``oarsub`` options."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shlex
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ._values import MIB
from .cluster import JobQueueCluster
from .engine import ArraySupport, StatusStep, simple_parser
from .job import Job
from .options import PROJECT, QUEUE, RESOURCE_SPEC, TEXT, WALLTIME, WORD, Option
from .tags import TagSpec, parse_oar_tags
from .tracking import JobState, JobStatus

logger = logging.getLogger(__name__)

__all__ = ["OARJob", "OARCluster", "parse_oarstat_json", "oar_job_status", "decode_wait_status"]

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


def decode_wait_status(status: int) -> int:
    """OAR's ``exit_code`` is a raw wait status: 768 -> exit 3, 9 (killed) -> 128 + 9."""
    if status & 0x7F:
        return 128 + (status & 0x7F)
    return (status >> 8) & 0xFF


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
        return JobStatus(state, native, None, native)
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


def oarstat_argv(job: Job, job_ids: Sequence[str], facts: dict) -> list[str]:
    """``oarstat -f -J -j A -j B``: -j is repeated (``-j 7,8`` is an error, ``-j 7 8`` shows
    only job 7); the full record (-f) holds exit_code, events and scheduledStart."""
    argv = ["oarstat", "-f", "-J"]
    for job_id in job_ids:
        argv += ["-j", str(job_id)]
    return argv
def _default_resources(values: Mapping[str, Any], owner: type) -> str:
    return f"/nodes=1/core={values.get('cores')}"


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


class OARJob(Job):
    """An OAR job running Dask workers.

    OAR runs the job's command on the node, where the login node's temporary files are not
    visible, so the script body is passed to ``oarsub`` inline and the ``#OAR`` header lines
    are turned into ``oarsub`` options.
    """

    config_name = "oar"
    submit_command = "oarsub"
    cancel_command = "oardel"
    directive_prefix = "#OAR"
    job_id_regexp = r"^OAR_JOB_ID=(?P<job_id>\d+)\s*$"
    status_steps = (StatusStep("oarstat", oarstat_argv, simple_parser(parse_oarstat_json)),)
    # oardel of a job that ended meanwhile: "Cannot frag 17 ; This job was already killed."
    # (an id that no longer exists: "... You are not the right user.")
    cancel_gone_pattern = re.compile(r"already killed|not the right user")
    tagging = TagSpec(
        submit_args=lambda text: [],  # the tag is in the command itself: see _tag_line
        list_argvs=lambda user: [["oarstat", "-J", "-u", user]],
        parse=parse_oar_tags,
    )
    array_support = ArraySupport(
        index_var="OAR_ARRAY_INDEX",
        submit_args=lambda first, last: ["--array", str(last - first + 1)],
        task_ids=lambda stdout, indices: oar_array_task_ids(stdout, indices),
        first_index=1,
        adopt=lambda listed, indices: oar_adopt(listed, indices),
    )
    walltime_forms = ("hh:mm:ss", "hh:mm", "hours")

    options = (
        QUEUE,
        PROJECT,
        replace(RESOURCE_SPEC, doc="Resources of the ``-l`` line (walltime is appended), "
                "quoted as one ``oarsub`` argument. Default: ``/nodes=1/core=<cores>``.",
                default_factory=_default_resources, check=TEXT),
        WALLTIME,
        Option("memory_per_core_property_name", "str", "OAR resource property holding the "
               "memory per core (e.g. ``'memcore'``): adds ``-p <property>>=<MiB per core>``. "
               "``'not_applicable'`` turns the memory request (and its warning) off.",
               check=WORD),
    )

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.memory_per_core_property_name is None:
            warnings.warn(
                "OAR Job memory reserved resources will not be set according to Dask Worker "
                "memory limit, which can cause crashes. Set memory_per_core_property_name= "
                "to the resource property holding the memory per core, or to "
                "'not_applicable' to silence this warning.",
                UserWarning,
                stacklevel=3,
            )

    def header_directives(self) -> list[str]:
        # The #OAR lines become oarsub arguments through shlex.split (submit_argv): every
        # free-text value is shlex-quoted, so it stays one argument whatever it holds.
        lines = [f"-n {shlex.quote(self.job_name)}"]
        if self.queue is not None:
            lines.append(f"-q {self.queue}")
        if self.project is not None:
            lines.append(f"--project {self.project}")
        # One -l line: several would make a moldable job.
        resources = self.resource_spec
        if self.walltime is not None:
            resources += f",walltime={self.walltime}"
        lines.append(f"-l {shlex.quote(resources)}")
        if self.log_directory is not None:
            base = f"{self.log_directory}/{self.job_name}.%jobid%"
            lines += [f"-O {shlex.quote(base + '.out')}", f"-E {shlex.quote(base + '.err')}"]
        return lines

    @property
    def job_header(self) -> str:
        header = super().job_header
        prop = self.memory_per_core_property_name
        if prop is None or prop == "not_applicable":
            return header
        per_core = math.ceil(self.worker_memory / (self.worker_cores * MIB))
        condition = f"{prop}>={per_core}"
        lines = header.splitlines()
        existing = [
            i for i, line in enumerate(lines) if line.startswith(f"{self.directive_prefix} -p ")
        ]
        if existing:
            # Combine with the user's -p (OAR keeps only one): unquote it the way submit_argv
            # will, then quote the combined condition again.
            i = existing[-1]
            old = " ".join(shlex.split(lines[i][len(f"{self.directive_prefix} -p ") :]))
            combined = shlex.quote(f"{old} AND {condition}")
            lines[i] = f"{self.directive_prefix} -p {combined}"
        else:
            if shlex.split(condition) != [condition]:
                condition = shlex.quote(condition)
            lines.append(f"{self.directive_prefix} -p {condition}")
        return "\n".join(lines)

    def _tag_line(self) -> list[str]:
        # OAR keeps no free field for the tag: it travels in the job's command (oarstat lists
        # the command), on its first line.
        if self.tag is None:
            return []
        return [f"export DASK_JOBQUEUE_TAG={shlex.quote(self.tag.text())}"]

    def _body(self) -> str:
        parts = [
            *self._tag_line(),
            *self.job_script_prologue,
            *filter(None, [self.scheduler_check_line()]),
            self.worker_command_line(),
            *self.job_script_epilogue,
        ]
        return "\n".join(parts)

    _submit_dir: str | None = None

    def submit_argv(self, script_path: str) -> list[str]:
        self._submit_dir = os.getcwd()  # where OAR writes its default output files
        options: list[str] = []
        for line in self.job_header.splitlines():
            if line.startswith(self.directive_prefix):
                options += shlex.split(line[len(self.directive_prefix) :])
        return [
            *self._split(self.submit_command),
            *self.submit_command_extra,
            *options,
            self._body(),
        ]

    def array_submit_argv(self, script_path: str, script: str) -> list[str]:
        # oarsub runs a command, not the script: the array script's body (the worker-name
        # selection, prologue, workers, epilogue) is that command
        argv = self.submit_argv(script_path)
        body = [
            line
            for line in script.splitlines()[1:]
            if line.strip() and not line.startswith(self.directive_prefix)
        ]
        return [*argv[:-1], "\n".join([*self._tag_line(), *body])]

    def output_files(self, job_id: str) -> list[Path]:
        if self.log_directory is not None:
            base = Path(self.log_directory).expanduser() / f"{self.job_name}.{job_id}"
            return [base.with_name(base.name + ".err"), base.with_name(base.name + ".out")]
        # OAR's default: OAR.<name>.<id>.stderr (OAR.<id>.stderr without -n) in the directory
        # oarsub ran from, which is this process' working directory at submission.
        where = Path(self._submit_dir or os.getcwd())
        return [
            where / f"OAR.{self.job_name}.{job_id}.stderr",
            where / f"OAR.{self.job_name}.{job_id}.stdout",
            where / f"OAR.{job_id}.stderr",
        ]


class OARCluster(JobQueueCluster):
    """Launch Dask workers on an OAR cluster.

    >>> cluster = OARCluster(cores=8, memory="24GB", memory_per_core_property_name="memcore")  # doctest: +SKIP
    """

    job_cls = OARJob
