"""Status commands split into several, on the REAL Slurm (``pytest -E slurm``).

``STATUS_MAX_IDS`` (5,000) is too many jobs for a test, so the cluster here runs a Slurm job
class whose status steps name at most 2 ids: five held single jobs are polled in three
``squeue`` commands (a fake ``squeue`` in front of the real one counts them). One of those
commands failing makes that poll fail as a whole: no job is reported lost or replaced, and the
next poll sees all five again.
"""

from __future__ import annotations

import dataclasses

import dask
import pytest

from dask_jobqueue import JobState, SLURMCluster
from dask_jobqueue.slurm import SLURMJob

from .fakecmd import fake_commands  # noqa: F401  (the fixture)
from .scheduler_suite import NO_DASHBOARD, quick_polling, run, wait_until

pytestmark = pytest.mark.env("slurm")


class TwoIdsSLURMJob(SLURMJob):
    status_steps = tuple(dataclasses.replace(s, max_ids=2) for s in SLURMJob.status_steps)


class TwoIdsSLURMCluster(SLURMCluster):
    job_cls = TwoIdsSLURMJob


def listed(job_ids: set[str]) -> set[str]:
    return set(run(["squeue", "-h", "-o", "%i", "-j", ",".join(sorted(job_ids))]).split())


def test_five_single_jobs_are_polled_two_ids_at_a_time(fake_commands):  # noqa: F811
    fake_commands.wrap("squeue")
    settings = {**quick_polling("slurm", "300ms", "1s"), "jobqueue.slurm.job-arrays": "never"}
    with (
        dask.config.set(settings),
        TwoIdsSLURMCluster(
            cores=1,
            memory="100MB",
            job_extra_directives=["-H"],  # held: they stay queued, no worker needed
            scheduler_options=NO_DASHBOARD,
        ) as cluster,
    ):
        cluster.scale(jobs=5)

        def all_held() -> bool:
            records = list(cluster.jobs)
            return len(records) == 5 and all(r.state is JobState.HELD for r in records)

        assert wait_until(all_held, 60), repr(cluster.jobs)
        ids = {r.job_id for r in cluster.jobs}
        assert cluster.command_counts["submit"] == 5  # single jobs, no array
        polls = [
            argv
            for argv in fake_commands.argv("squeue")
            if "-O" in argv  # the status listing, not a tag listing
        ]
        named = [argv[argv.index("-j") + 1].split(",") for argv in polls]
        assert named and all(len(chunk) <= 2 for chunk in named), named
        assert set().union(*named) >= ids

        # one squeue of a poll fails: the poll fails whole, no job is lost or replaced
        failed_before = cluster.failed_polls
        fake_commands.fail_times(
            "squeue", 1, stderr="squeue: error: slurm_receive_msg: Socket timed out", rc=1
        )
        assert wait_until(lambda: cluster.failed_polls > failed_before, 30)
        calls = fake_commands.calls("squeue")
        assert wait_until(lambda: fake_commands.calls("squeue") >= calls + 6, 30)  # 2 polls on
        assert all_held(), repr(cluster.jobs)
        assert {r.job_id for r in cluster.jobs} == ids
        assert cluster.command_counts["submit"] == 5
    assert wait_until(lambda: not listed(ids), 30), listed(ids)
