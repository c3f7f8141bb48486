"""The same end-to-end checks for every real or emulated batch system.

A test module describes its batch system with a :class:`Backend` and subclasses
:class:`SchedulerSuite`; the checks look at the batch system's own queue (``squeue``, ``qstat``,
``oarstat``...) rather than trusting the library.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.array as da
import pytest
from distributed import Client

from dask_jobqueue import CommandError, JobFailedError, JobState

from .waiting import quick_polling, wait_until  # noqa: F401  (imported from here too)

NO_DASHBOARD = {"dashboard_address": ":0"}


@dataclass
class Backend:
    name: str  # config section, e.g. "slurm"
    cluster_cls: type
    kwargs: dict[str, Any]
    #: ids of this user's jobs that the batch system still lists as queued/running
    queue_ids: Callable[[], set[str]]
    #: argv that cancels a job from outside the library
    cancel_argv: Callable[[str], list[str]]
    bad_queue_kwargs: dict[str, Any]
    bad_queue_message: str
    #: extra kwargs that submit the job held, and a word expected in its reason (or None)
    hold_kwargs: dict[str, Any]
    hold_reason: str | None
    #: kwargs giving the shortest walltime the system enforces, and how long to wait for it
    short_walltime: dict[str, Any]
    walltime_wait: float = 150
    timeout: float = 90
    extra_config: dict[str, Any] = field(default_factory=dict)


def run(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout


def scheduler_worker_names(client: Client) -> set:
    """Names of the workers connected now, asked of the scheduler itself (see
    ``lifetime_stream.scheduler_worker_count`` for why not ``client.scheduler_info()``)."""
    return set(
        client.run_on_scheduler(
            lambda dask_scheduler: [ws.name for ws in dask_scheduler.workers.values()]
        )
    )


def scheduler_workers(client: Client) -> list[dict]:
    """Name, threads and memory limit of each worker connected now, asked of the scheduler
    itself (see ``scheduler_worker_names``)."""
    return client.run_on_scheduler(
        lambda dask_scheduler: [
            {"name": ws.name, "nthreads": ws.nthreads, "memory_limit": ws.memory_limit}
            for ws in dask_scheduler.workers.values()
        ]
    )


class SchedulerSuite:
    backend: Backend

    @pytest.fixture(autouse=True)
    def _fast_polling(self, tmp_path, monkeypatch):
        # Batch systems write job output files to the submit directory: keep them out of cwd.
        monkeypatch.chdir(tmp_path)
        name = self.backend.name
        with dask.config.set({**quick_polling(name, "500ms", "2s"), **self.backend.extra_config}):
            yield

    def cluster(self, **kwargs):
        options = {**self.backend.kwargs, "scheduler_options": NO_DASHBOARD, **kwargs}
        return self.backend.cluster_cls(**options)

    def assert_gone_from_queue(self, ids: set[str]) -> None:
        assert wait_until(lambda: not (ids & self.backend.queue_ids()), 60), (
            f"jobs still queued: {ids & self.backend.queue_ids()}"
        )

    def test_basic(self):
        with (
            self.cluster(cores=2, processes=2, memory="2GiB") as cluster,
            Client(cluster) as client,
        ):
            cluster.scale(2)
            client.wait_for_workers(2, timeout=self.backend.timeout)
            workers = scheduler_workers(client)
            assert {w["nthreads"] for w in workers} == {1}
            assert {w["memory_limit"] for w in workers} == {2**30}
            x = da.ones((1000, 1000), chunks=(100, 100))
            assert client.compute(x.sum()).result() == 1_000_000
            ids = {job.job_id for job in cluster.workers.values()}
            assert len(ids) == 1 and ids <= self.backend.queue_ids()
            assert wait_until(lambda: [r.state for r in cluster.jobs] == [JobState.CONNECTED], 20)
        self.assert_gone_from_queue(ids)

    def test_scale_up_and_down_seen_in_queue(self):
        with self.cluster() as cluster, Client(cluster) as client:
            cluster.scale(jobs=2)
            client.wait_for_workers(2, timeout=self.backend.timeout)
            ids = {job.job_id for job in cluster.workers.values()}
            assert len(ids) == 2 and ids <= self.backend.queue_ids()
            cluster.scale(jobs=1)
            assert wait_until(lambda: len(ids & self.backend.queue_ids()) == 1, 60)
            assert wait_until(lambda: len(client.scheduler_info()["workers"]) == 1, 30)
            # the cluster forgets the job once its cancel command returned, which may be a
            # moment after the queue stopped listing it
            assert wait_until(lambda: len(cluster.workers) == 1, 10), cluster.workers
            (remaining,) = {job.job_id for job in cluster.workers.values()}
            assert remaining in ids & self.backend.queue_ids()
        self.assert_gone_from_queue(ids)

    def test_adapt_to_zero_and_back(self):
        with self.cluster() as cluster, Client(cluster) as client:
            cluster.adapt(
                minimum_jobs=0, maximum_jobs=2, interval="500ms", wait_count=2, target_duration="1s"
            )
            assert client.submit(lambda: 1 + 1).result(timeout=self.backend.timeout) == 2
            seen = {r.job_id for r in cluster.jobs}
            assert seen
            assert wait_until(lambda: not cluster.workers, 60)
            self.assert_gone_from_queue(seen)
            assert client.submit(lambda: 2 + 2).result(timeout=self.backend.timeout) == 4
            seen = {r.job_id for r in cluster.jobs}
        self.assert_gone_from_queue(seen)

    def test_submit_error_from_the_real_tool(self):
        with self.cluster(**self.backend.bad_queue_kwargs) as cluster:
            cluster.scale(1)
            with pytest.raises(CommandError) as info:
                cluster.wait_for_workers(1, timeout=60)
            assert self.backend.bad_queue_message in str(info.value)
            assert info.value.returncode not in (0, None)

    def test_job_cancelled_from_outside_is_replaced(self):
        with self.cluster() as cluster, Client(cluster) as client:
            cluster.scale(1)
            client.wait_for_workers(1, timeout=self.backend.timeout)
            (first,) = [job.job_id for job in cluster.workers.values()]
            subprocess.run(self.backend.cancel_argv(first), capture_output=True, check=False)
            assert wait_until(
                lambda: any(j.job_id != first for j in cluster.workers.values()),
                self.backend.timeout,
            ), repr(cluster.jobs)
            ended = {r.job_id: r.state for r in cluster.jobs}
            assert ended[first] in (JobState.CANCELLED, JobState.FAILED, JobState.LOST), repr(
                cluster.jobs
            )
            client.wait_for_workers(1, timeout=self.backend.timeout)
            ids = {r.job_id for r in cluster.jobs}
        self.assert_gone_from_queue(ids)

    def test_death_before_connect_is_explained(self, tmp_path_factory):
        logs = self.log_directory(tmp_path_factory)
        with dask.config.set({f"jobqueue.{self.backend.name}.max-consecutive-failures": 2}):
            with self.cluster(python="/nonexistent/python", log_directory=logs) as cluster:
                cluster.scale(1)
                with pytest.raises(JobFailedError) as info:
                    cluster.wait_for_workers(1, timeout=self.backend.timeout + 60)
                message = str(info.value)
                assert "/nonexistent/python" in message, message
                failed = [r for r in cluster.jobs if r.state.is_final]
                assert len(failed) == 2, repr(cluster.jobs)
                assert failed[-1].job_id in message
                time.sleep(3)
                assert len(cluster.jobs) == 2, "resubmitted after the circuit breaker opened"
                ids = {r.job_id for r in cluster.jobs}
        self.assert_gone_from_queue(ids)

    def log_directory(self, tmp_path_factory) -> str:
        return str(tmp_path_factory.mktemp("logs"))

    def test_held_job_shows_its_reason(self):
        with self.cluster(**self.backend.hold_kwargs) as cluster:
            cluster.scale(1)
            assert wait_until(lambda: [r.state for r in cluster.jobs] == [JobState.HELD], 60), repr(
                cluster.jobs
            )
            (record,) = cluster.jobs
            if self.backend.hold_reason:
                assert self.backend.hold_reason in (record.reason or ""), repr(cluster.jobs)
            assert "held" in cluster.jobs_summary()
            ids = {record.job_id}
            assert ids <= self.backend.queue_ids()
        self.assert_gone_from_queue(ids)

    def test_walltime_expiry_is_timed_out_not_failed(self):
        # The batch system's own walltime kill (replacement ahead of it is off here; it has
        # its own tests): reported as timed out, and not counted as a failure.
        no_early = {f"jobqueue.{self.backend.name}.replace-before-walltime": False}
        with (
            dask.config.set(no_early),
            self.cluster(**self.backend.short_walltime) as cluster,
            Client(cluster) as client,
        ):
            cluster.scale(1)
            client.wait_for_workers(1, timeout=self.backend.timeout)
            (first,) = [job.job_id for job in cluster.workers.values()]
            assert wait_until(
                lambda: any(r.job_id == first and r.state.is_final for r in cluster.jobs),
                self.backend.walltime_wait,
                interval=1,
            ), repr(cluster.jobs)
            states = {r.job_id: r for r in cluster.jobs}
            assert states[first].state == JobState.TIMED_OUT, repr(cluster.jobs)
            # not a failure: replaced right away, and the circuit breaker stays closed
            assert wait_until(lambda: any(j.job_id != first for j in cluster.workers.values()), 30)
            assert states[first].error is None  # not explained as a death
            # the replacement connects: no failure was counted, the breaker stays closed
            cluster.wait_for_workers(1, timeout=self.backend.timeout)
            ids = {r.job_id for r in cluster.jobs}
        self.assert_gone_from_queue(ids)


@pytest.fixture(scope="class")
def emulator(request, tmp_path_factory):
    """Put the emulated batch system of the requesting class on PATH for its tests.

    The class sets ``emulator_flavour`` (``pbs``, ``torque``, ``moab``, ``lsf``, ``htcondor``)
    and may set ``emulator_options`` (passed to ``emulated_scheduler``). Every job process is
    killed at teardown.
    """
    import os

    from .emulator import emulated_scheduler, kill_all, surviving_processes

    if os.environ.get("DASK_JOBQUEUE_REAL_SCHEDULER"):
        # On a site with the real PBS/Moab/LSF/HTCondor: use its commands, not the emulator.
        yield dict(os.environ)
        return
    flavour = request.cls.emulator_flavour
    home = tmp_path_factory.mktemp(f"emulator-{flavour}")
    env = emulated_scheduler(flavour, home, **getattr(request.cls, "emulator_options", {}))
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    # Torque, Moab and the emulator write job output to the submit directory: a directory of
    # the test run's, not the checkout the tests were started from.
    submit_dir = home / "submit"
    submit_dir.mkdir()
    started_in = os.getcwd()
    os.chdir(submit_dir)
    try:
        yield env
    finally:
        os.chdir(started_in)
        kill_all(home)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        assert not surviving_processes(home), "emulated job processes survived"
