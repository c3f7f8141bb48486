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

from dask_jobqueue import (
    CommandError,
    HTCondorCluster,
    JobFailedError,
    JobState,
    LSFCluster,
    PBSCluster,
)

from .emulator import clear_faults, inject_fault
from .scheduler_suite import (
    NO_DASHBOARD,
    emulator,  # noqa: F401 (a fixture)
    quick_polling,
    wait_until,
)

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("DASK_JOBQUEUE_REAL_SCHEDULER")),
    reason="fault injection needs the emulator, not a real batch system",
)


class FaultSuite:
    """The fault checks, run against one emulated batch system per subclass."""

    config_name: str
    cluster_cls: type
    cluster_kwargs: dict = {}
    emulator_flavour: str
    submit_error = ("qsub: Request rejected by a server hook", 15)

    @pytest.fixture(autouse=True)
    def _no_fault_outlives_its_test(self, emulator):  # noqa: F811
        # the emulator is shared by the class: a fault armed "forever" must not reach the
        # next test
        yield
        clear_faults(emulator.home)

    @pytest.fixture(autouse=True)
    def _fast(self):
        with dask.config.set(quick_polling(self.config_name)):
            yield

    def cluster(self, **kwargs):
        return self.cluster_cls(
            cores=1,
            memory="1GB",
            processes=1,
            scheduler_options=NO_DASHBOARD,
            **self.cluster_kwargs,
            **kwargs,
        )

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
            assert cluster.failed_polls >= 10
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
        # a timeout is transient: retried (after looking for the submission's tag) up to
        # submit-attempts times, then the error is raised
        inject_fault(emulator.home, "submit_hang", count=-1, seconds=30)
        with dask.config.set(
            {
                f"jobqueue.{self.config_name}.submit-timeout": "2s",
                f"jobqueue.{self.config_name}.submit-attempts": 2,
            }
        ):
            with self.cluster() as cluster:
                cluster.scale(1)
                with pytest.raises(CommandError, match="timed out after 2s"):
                    cluster.wait_for_workers(1, timeout=60)

    def test_submit_that_hangs_once_is_retried(self, emulator):  # noqa: F811
        inject_fault(emulator.home, "submit_hang", count=1, seconds=60)
        # not 2 s: an emulated submit alone may take that long on a loaded machine
        with dask.config.set({f"jobqueue.{self.config_name}.submit-timeout": "8s"}):
            with self.cluster() as cluster, Client(cluster) as client:
                cluster.scale(1)
                client.wait_for_workers(1, timeout=60)
                assert cluster.command_counts["submit"] == 2
                assert len(cluster.jobs) == 1

    def test_job_dies_at_start_is_explained_and_replaced(self, emulator, tmp_path):  # noqa: F811
        inject_fault(
            emulator.home,
            "job_dies_at_start",
            count=1,
            exit_code=42,
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
        with dask.config.set({f"jobqueue.{self.config_name}.max-consecutive-failures": 3}):
            with self.cluster(log_directory=str(tmp_path)) as cluster:
                cluster.scale(2)
                with pytest.raises(
                    JobFailedError, match="jobs in a row ended before their workers connected"
                ):
                    cluster.wait_for_workers(1, timeout=60)

                # A replacement whose submission began before the breaker opened may still land:
                # let it (bounded), then nothing more may be submitted.
                def counts():
                    return len(cluster.jobs), cluster.command_counts.get("submit", 0)

                settle_deadline = time.monotonic() + 30
                before = counts()
                while time.monotonic() < settle_deadline:
                    time.sleep(1)
                    now = counts()
                    if now == before:
                        break
                    before = now
                time.sleep(2)
                assert counts() == before, "kept resubmitting after the breaker opened"
                # at most the breaker's limit plus one replacement already in flight per job
                assert before[0] <= 3 + 2, repr(cluster.jobs)

    def test_submit_failure_carries_the_tools_message(self, emulator):  # noqa: F811
        message, code = self.submit_error
        inject_fault(emulator.home, "submit_fail", count=1, exit_code=code, stderr=message)
        with self.cluster() as cluster:
            cluster.scale(1)
            with pytest.raises(CommandError) as info:
                cluster.wait_for_workers(1, timeout=30)
            assert info.value.returncode == code
            assert message in str(info.value)


@pytest.mark.env("lsf")
@pytest.mark.usefixtures("emulator")
class TestFaultsOnEmulatedLSF(FaultSuite):
    config_name = emulator_flavour = "lsf"
    cluster_cls = LSFCluster
    submit_error = ("Request aborted by esub. Job not submitted.", 255)


# -E pbs is the real OpenPBS, where faults cannot be injected: the emulated PBS family (its PBS
# Pro flavour here, Torque in test_pbs.py) runs under -E torque.
@pytest.mark.env("torque")
@pytest.mark.usefixtures("emulator")
class TestFaultsOnEmulatedPBS(FaultSuite):
    config_name = emulator_flavour = "pbs"
    cluster_cls = PBSCluster


@pytest.mark.env("htcondor")
@pytest.mark.usefixtures("emulator")
class TestFaultsOnEmulatedHTCondor(FaultSuite):
    config_name = emulator_flavour = "htcondor"
    cluster_cls = HTCondorCluster
    cluster_kwargs = {"disk": "1GB"}
    submit_error = ("ERROR: Failed to connect to local queue manager", 1)
