"""Job-array scenarios, run end to end on every batch system that has arrays.

The real Slurm, SGE, OAR and OpenPBS (``test_arrays.py``) and the emulated LSF, HTCondor,
Torque and PBS Pro (``test_arrays_lsf.py``, ``test_arrays_htcondor.py``,
``test_arrays_pbs_family.py``) each describe themselves as an ``ArraySystem`` and call these
functions. What differs between systems is data: how the queue is listed, which command
cancels a task from outside, which directive holds a job.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import pytest
from distributed import Client

from dask_jobqueue import JobFailedError, JobQueueCluster
from dask_jobqueue.tracking import JobRecord

from .scheduler_suite import scheduler_worker_names, wait_until


@dataclass(frozen=True)
class ArraySystem:
    """One batch system, real or emulated, as the array scenarios use it."""

    name: str  # its section of the configuration, ``jobqueue.<name>``
    make_cluster: Callable[..., JobQueueCluster]  # keyword arguments override its defaults
    listed: Callable[[], set[str]]  # ids of the user's jobs and array tasks it still lists
    cancel: Sequence[str]  # the command cancelling one id from outside
    hold: Any  # ``job_extra_directives`` submitting jobs held
    timeout: float = 90


def end_to_end(
    system: ArraySystem,
    jobs: int = 3,
    check: Callable[[JobQueueCluster, Client], None] | None = None,
) -> None:
    """``scale(jobs)`` is one submission whose tasks' workers connect and compute; scaling
    down by one cancels one task and leaves the others running; a task cancelled from outside
    is replaced by one new submission; ``close()`` leaves nothing listed. ``check`` looks at
    the running cluster once every worker connected."""
    with system.make_cluster(job_name="djqarr") as cluster, Client(cluster) as client:
        cluster.scale(jobs)
        client.wait_for_workers(jobs, timeout=system.timeout)
        assert client.submit(lambda x: x + 1, 1).result(timeout=60) == 2
        assert cluster.command_counts["submit"] == 1
        ids = {job.job_id for job in cluster.workers.values()}
        assert len(ids) == jobs and ids <= system.listed()
        # each worker is named after its task's job
        assert scheduler_worker_names(client) == set(cluster.workers)
        if check is not None:
            check(cluster, client)

        cluster.scale(jobs - 1)
        assert wait_until(lambda: len(ids & system.listed()) == jobs - 1, system.timeout), (
            system.listed()
        )
        assert wait_until(lambda: len(scheduler_worker_names(client)) == jobs - 1, 60)
        assert cluster.command_counts["submit"] == 1
        kept = ids & system.listed()

        victim = sorted(kept)[0]
        subprocess.run([*system.cancel, victim], capture_output=True, check=False)
        assert wait_until(
            lambda: (
                victim not in {j.job_id for j in cluster.workers.values()}
                and len(cluster.workers) == jobs - 1
            ),
            system.timeout,
        ), repr(cluster.jobs)
        client.wait_for_workers(jobs - 1, timeout=system.timeout)
        assert cluster.command_counts["submit"] == 2  # the replacement alone
        record = next(r for r in cluster.jobs if r.job_id == victim)
        assert record.state.is_final
        assert kept - {victim} <= system.listed()  # the other tasks kept running
        live = {j.job_id for j in cluster.workers.values()}
    assert wait_until(lambda: not (live | ids) & system.listed(), system.timeout), system.listed()


def task_dying_before_connect(system: ArraySystem, log_directory: Path) -> JobRecord:
    """Tasks whose script exits 3 before any worker starts: explained like single jobs (the
    script's stderr and exit code), the breaker opens after two; returns the first failure."""
    with dask.config.set({f"jobqueue.{system.name}.max-consecutive-failures": 2}):
        cluster = system.make_cluster(
            job_name="djqdie",
            log_directory=str(log_directory),
            job_script_prologue=["echo 'no such module: foo' >&2", "exit 3"],
        )
        with cluster:
            cluster.scale(2)
            with pytest.raises(JobFailedError) as info:
                cluster.wait_for_workers(1, timeout=system.timeout)
            assert "no such module: foo" in str(info.value)
            failed = [r for r in cluster.jobs if r.error]
            assert failed
            assert "before its workers connected" in failed[0].error
            assert "no such module: foo" in failed[0].error
            assert failed[0].job_id in failed[0].error
            assert failed[0].exit_code == 3
            # The first two were tasks of one array: more jobs than submissions. A submission
            # is counted when its command starts and its jobs are listed when it returns, so
            # a replacement in flight is waited for (jobs are read first: never an early yes).
            assert wait_until(
                lambda: len(list(cluster.jobs)) > cluster.command_counts["submit"], 30
            ), (list(cluster.jobs), cluster.command_counts)
            ids = {r.job_id for r in cluster.jobs}
    assert wait_until(lambda: not ids & system.listed(), system.timeout)
    return failed[0]


def split(system: ArraySystem, cancel_commands: int) -> dict[str, int]:
    """Seven held jobs under an array limit of three (set by the caller) are three
    submissions (3 + 3 + 1); ``scale(0)`` removes them all in ``cancel_commands`` commands.
    Returns the cluster's command counts."""
    with system.make_cluster(job_name="djqsplit", job_extra_directives=system.hold) as cluster:
        cluster.scale(7)
        assert wait_until(lambda: len(cluster.workers) == 7, system.timeout), repr(cluster.jobs)
        assert cluster.command_counts["submit"] == 3
        ids = {j.job_id for j in cluster.workers.values()}
        assert wait_until(lambda: ids <= system.listed(), 60), ids - system.listed()
        cluster.scale(0)
        assert wait_until(lambda: not ids & system.listed(), system.timeout), ids & system.listed()
        assert cluster.command_counts["cancel"] == cancel_commands
        return dict(cluster.command_counts)


def never(system: ArraySystem) -> None:
    """With ``job-arrays: never`` every job is its own submission."""
    with dask.config.set({f"jobqueue.{system.name}.job-arrays": "never"}):
        with system.make_cluster(job_name="djqnever", job_extra_directives=system.hold) as cluster:
            cluster.scale(3)
            assert wait_until(lambda: len(cluster.workers) == 3, system.timeout)
            assert cluster.command_counts["submit"] == 3
            ids = {j.job_id for j in cluster.workers.values()}
            assert wait_until(lambda: ids <= system.listed(), 60), ids - system.listed()
    assert wait_until(lambda: not ids & system.listed(), system.timeout)


@contextmanager
def _engine_warnings() -> Iterator[list[str]]:
    messages: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("dask_jobqueue.engine")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)  # pytest's own capture may be set higher
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def adopted_after_failed_submit(system: ArraySystem) -> None:
    """The caller armed a fault: the next submission creates its array, then fails with a
    transient error (or hangs). No error reaches the user, the array is adopted rather than
    submitted again, and every task it created is a tracked job of the cluster."""
    before = system.listed()
    with _engine_warnings() as warnings:
        with system.make_cluster(job_name="djqadopt") as cluster, Client(cluster) as client:
            cluster.scale(3)
            client.wait_for_workers(3, timeout=system.timeout)  # no error raised
            # the workers may connect while the engine is still looking for the tag
            assert wait_until(lambda: len(cluster.workers) == 3, 30), repr(cluster.jobs)
            assert cluster.command_counts["submit"] == 1  # adopted, not submitted again
            ids = {j.job_id for j in cluster.workers.values()}
            # no duplicate, nothing the cluster does not track: the counter above would have
            # seen a second submission
            assert system.listed() - before == ids
            assert len(scheduler_worker_names(client)) == 3
        assert any("adopting job(s)" in w for w in warnings), warnings
    assert wait_until(lambda: not ids & system.listed(), system.timeout)


def halved_after_refusal(system: ArraySystem) -> None:
    """The caller made the site refuse arrays of more than 2 tasks, with the engine unable
    to know it (its limit probe fails, or ``max-array-size`` says more). Five held jobs: the
    array of 5 is refused, then 2 + 2 + 1 are submitted; each of the five is tracked and
    listed, nothing else was created, and the refusal is logged with the site's message."""
    before = system.listed()
    with _engine_warnings() as warnings:
        with system.make_cluster(job_name="djqhalf", job_extra_directives=system.hold) as cluster:
            cluster.scale(5)
            assert wait_until(lambda: len(cluster.workers) == 5, system.timeout), (
                repr(cluster.jobs),
                warnings,
            )
            ids = {j.job_id for j in cluster.workers.values()}
            assert wait_until(lambda: ids <= system.listed(), 60), ids - system.listed()
            assert system.listed() - before == ids
            assert cluster.command_counts["submit"] == 4  # 5 refused, then 2 + 2 + 1
            assert not [r for r in cluster.jobs if r.error]
        refusals = [w for w in warnings if "refused an array of 5 jobs as too large" in w]
        assert len(refusals) == 1 and "arrays of at most 2 jobs" in refusals[0], warnings
    assert wait_until(lambda: not ids & system.listed(), system.timeout)
