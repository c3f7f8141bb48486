"""Flaky batch systems, reproduced with the emulators' fault injection.

A status command that fails must never make the cluster believe its jobs died; a submit that
hangs then succeeds must still give a worker; a job that dies at start is explained and
replaced; a failing submit is reported with the tool's own message.
"""

from __future__ import annotations

import os
import time

import dask
import pytest
from distributed import Client

from dask_jobqueue import CommandError, JobFailedError, JobState, LSFCluster
from dask_jobqueue.testing.emulator import inject_fault

from .scheduler_suite import NO_DASHBOARD, emulator, wait_until  # noqa: F401

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("DASK_JOBQUEUE_REAL_SCHEDULER")),
    reason="fault injection needs the emulator, not a real batch system",
)

FAST = {
    "jobqueue.lsf.poll-interval": "300ms",
    "jobqueue.lsf.poll-interval-max": "1s",
    "jobqueue.lsf.resubmit-backoff": "300ms",
}


@pytest.mark.env("lsf")
@pytest.mark.usefixtures("emulator")
class TestFaultsOnEmulatedLSF:
    emulator_flavour = "lsf"

    @pytest.fixture(autouse=True)
    def _fast(self):
        with dask.config.set(FAST):
            yield

    def cluster(self, **kwargs):
        return LSFCluster(cores=1, memory="1GB", processes=1, scheduler_options=NO_DASHBOARD, **kwargs)

    def test_failing_status_command_causes_no_false_deaths(self, emulator):  # noqa: F811
        with self.cluster() as cluster, Client(cluster) as client:
            cluster.scale(2)
            client.wait_for_workers(2, timeout=60)
            ids = {r.job_id for r in cluster.jobs}
            calls_before = cluster.status_calls
            inject_fault(emulator.home, "status_fail", count=15)
            assert wait_until(lambda: cluster.status_calls >= calls_before + 12, 40)
            # every poll failed, yet no job was declared dead, replaced or resubmitted
            assert {r.job_id for r in cluster.jobs} == ids
            assert all(r.state == JobState.CONNECTED for r in cluster.jobs), repr(cluster.jobs)
            assert cluster._status_errors >= 10
            assert client.submit(lambda: 3).result(timeout=30) == 3

    def test_submit_that_hangs_then_succeeds(self, emulator):  # noqa: F811
        inject_fault(emulator.home, "submit_hang", count=1, seconds=3)
        with self.cluster() as cluster, Client(cluster) as client:
            started = time.monotonic()
            cluster.scale(1)
            client.wait_for_workers(1, timeout=60)
            assert time.monotonic() - started >= 3
            assert len(cluster.jobs) == 1

    def test_submit_that_hangs_past_the_timeout_is_an_error(self, emulator):  # noqa: F811
        inject_fault(emulator.home, "submit_hang", count=1, seconds=30)
        with dask.config.set({"jobqueue.lsf.submit-timeout": "2s"}):
            with self.cluster() as cluster:
                cluster.scale(1)
                with pytest.raises(CommandError, match="timed out after 2s"):
                    cluster.wait_for_workers(1, timeout=30)

    def test_job_dies_at_start_is_explained_and_replaced(self, emulator, tmp_path):  # noqa: F811
        inject_fault(
            emulator.home, "job_dies_at_start", count=1, exit_code=42,
            stderr="module: command not found: python/3.11",
        )
        with self.cluster(log_directory=str(tmp_path)) as cluster, Client(cluster) as client:
            cluster.scale(1)
            client.wait_for_workers(1, timeout=60)  # the replacement connects
            failed = [r for r in cluster.jobs if r.state == JobState.FAILED]
            assert len(failed) == 1, repr(cluster.jobs)
            assert failed[0].exit_code == 42
            assert "module: command not found: python/3.11" in (failed[0].error or "")
            assert failed[0].job_id in failed[0].error

    def test_jobs_dying_every_time_open_the_circuit_breaker(self, emulator, tmp_path):  # noqa: F811
        inject_fault(emulator.home, "job_dies_at_start", count=-1, exit_code=1, stderr="boom")
        with dask.config.set({"jobqueue.lsf.max-consecutive-failures": 3}):
            with self.cluster(log_directory=str(tmp_path)) as cluster:
                cluster.scale(2)
                with pytest.raises(JobFailedError, match="jobs in a row ended before their workers connected"):
                    cluster.wait_for_workers(1, timeout=60)
                count = len(cluster.jobs)
                time.sleep(2)
                assert len(cluster.jobs) == count, "kept resubmitting after the breaker opened"
                # at most the breaker's limit plus one replacement already in flight per job
                assert count <= 3 + 2, repr(cluster.jobs)

    def test_submit_failure_carries_the_tools_message(self, emulator):  # noqa: F811
        inject_fault(
            emulator.home, "submit_fail", count=1, exit_code=255,
            stderr="Request aborted by esub. Job not submitted.",
        )
        with self.cluster() as cluster:
            cluster.scale(1)
            with pytest.raises(CommandError) as info:
                cluster.wait_for_workers(1, timeout=30)
            assert info.value.returncode == 255
            assert "Request aborted by esub" in str(info.value)
