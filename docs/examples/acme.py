"""A whole new batch system in one file: the imaginary "Acme" scheduler.

Acme submits with ``acme-submit SCRIPT`` (printing ``job 12``), lists jobs with
``acme-stat ID...`` (one ``ID STATE`` line per job it knows, ``Q`` queued, ``R`` running,
``D`` done) and cancels with ``acme-cancel ID...``. Its job scripts carry ``#ACME`` directives.
Its settings live in a ``jobqueue.acme`` section of the dask configuration (it may be empty:
every keyword has a default).
"""

from __future__ import annotations

from dask_jobqueue.cluster import JobQueueCluster
from dask_jobqueue.dialect import Dialect, StatusStep, simple_parser
from dask_jobqueue.job import Job
from dask_jobqueue.tracking import JobState, JobStatus

STATES = {"Q": JobState.QUEUED, "R": JobState.RUNNING, "D": JobState.FINISHED}


def parse_acme_stat(stdout: str) -> dict[str, JobStatus]:
    """``acme-stat`` output: ``12 R`` per line."""
    statuses = {}
    for line in stdout.splitlines():
        job_id, _, code = line.strip().partition(" ")
        if job_id and code in STATES:
            statuses[job_id] = JobStatus(STATES[code], native_state=code)
    return statuses


DIALECT = Dialect(
    name="acme",
    submit_command="acme-submit",
    cancel_command="acme-cancel",
    directive_prefix="#ACME",
    job_id_regexp=r"^job (?P<job_id>\d+)$",
    status_steps=(
        StatusStep(
            "acme-stat", lambda job, ids, facts: ["acme-stat", *ids], simple_parser(parse_acme_stat)
        ),
    ),
)


class AcmeJob(Job):
    """An Acme batch job running Dask workers."""

    dialect = DIALECT

    def header_directives(self) -> list[str]:
        return [f"--name={self.job_name}", f"--cores={self.worker_cores}"]


class AcmeCluster(JobQueueCluster):
    """Launch Dask workers on an Acme cluster."""

    job_cls = AcmeJob
