"""A whole new batch system in one file: the imaginary "Acme" scheduler.

Acme submits with ``acme-submit SCRIPT`` (printing ``job 12``), lists jobs with
``acme-stat ID...`` (one ``ID STATE`` line per job it knows, ``Q`` queued, ``R`` running,
``D`` done) and cancels with ``acme-cancel ID...``. Its job scripts carry ``#ACME`` directives,
declared as a table: one line per directive, rendered (with ``job_directives_skip`` and
``job_extra_directives``) by the package.
Its settings live in a ``jobqueue.acme`` section of the dask configuration (it may be empty:
every keyword has a default).
"""

from __future__ import annotations

from dask_jobqueue.cluster import JobQueueCluster
from dask_jobqueue.dialect import Dialect, Directive, HeaderTable, StatusStep, simple_parser
from dask_jobqueue.job import Job
from dask_jobqueue.options import QUEUE
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
    # "{}" is the value of the job option named next; a line whose option is None is left out
    header_table=HeaderTable(
        (
            Directive("--name={}", "job_name"),
            Directive("--cores={}", "worker_cores"),
            Directive("--queue={}", "queue"),
        )
    ),
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
    options = (QUEUE,)  # Acme's own keywords besides the common ones
    queue: str | None


class AcmeCluster(JobQueueCluster):
    """Launch Dask workers on an Acme cluster."""

    job_cls = AcmeJob
