"""End to end on the local backend: real worker processes, real computations."""

from __future__ import annotations

import os
import signal
import sys
import time

import dask
import dask.array as da
import pytest
from distributed import Client

from dask_jobqueue import CommandError, JobFailedError, JobQueueCluster, JobState
from dask_jobqueue.engine import BatchSystem
from dask_jobqueue.local import LocalCluster, LocalJob

from .scheduler_suite import NO_DASHBOARD, scheduler_worker_names, scheduler_workers
from .waiting import quick_polling, wait_until

FAST = quick_polling("local", "200ms", "1s")


@pytest.fixture(autouse=True)
def fast_polling():
    with dask.config.set(FAST):
        yield


def test_scale_compute_scale_down_close(no_stray_processes, tmp_path):
    with (
        LocalCluster(
            cores=2,
            memory="2GiB",
            processes=2,
            log_directory=str(tmp_path),
            scheduler_options=NO_DASHBOARD,
        ) as cluster,
        Client(cluster) as client,
    ):
        cluster.scale(4)  # workers: 2 jobs of 2 processes
        client.wait_for_workers(4, timeout=60)
        workers = scheduler_workers(client)
        assert {w["nthreads"] for w in workers} == {1}
        assert {w["memory_limit"] for w in workers} == {2**30}
        assert sorted(w["name"] for w in workers) == [
            "LocalCluster-0-0",
            "LocalCluster-0-1",
            "LocalCluster-1-0",
            "LocalCluster-1-1",
        ]
        x = da.ones((2000, 2000), chunks=(250, 250))
        assert client.compute(x.sum()).result() == 4_000_000
        assert wait_until(lambda: all(r.state == JobState.CONNECTED for r in cluster.jobs))
        assert "2 connected" in cluster.jobs_summary()

        cluster.scale(jobs=1)
        assert wait_until(
            lambda: len(client.scheduler_info()["workers"]) == 2 and len(cluster.workers) == 1
        )
        names = scheduler_worker_names(client)
        assert names in (
            {"LocalCluster-0-0", "LocalCluster-0-1"},
            {"LocalCluster-1-0", "LocalCluster-1-1"},
        )
        # retired gracefully: the job either finished on its own or was cancelled after
        ended = [r for r in cluster.jobs if r.state in (JobState.CANCELLED, JobState.FINISHED)]
        assert len(ended) == 1, repr(cluster.jobs)


def test_scale_by_cores_and_memory_from_yaml():
    with dask.config.set(
        {"jobqueue.local.cores": 2, "jobqueue.local.memory": "2GB", "jobqueue.local.processes": 2}
    ):
        with LocalCluster(scheduler_options=NO_DASHBOARD) as cluster:
            assert cluster.processes == 2
            assert cluster.worker_spec == {}
            cluster.scale(cores=3)
            assert len(cluster.worker_spec) == 2
            assert cluster.worker_spec["LocalCluster-0"]["group"] == ["-0", "-1"]
            cluster.scale(memory="1GB")
            assert len(cluster.worker_spec) == 1
            cluster.scale(3)
            assert len(cluster.worker_spec) == 2
            cluster.scale(jobs=1)
            assert len(cluster.worker_spec) == 1
            with pytest.raises(ValueError, match="n=-1 must be >= 0"):
                cluster.scale(-1)
            cluster.scale(0)


def test_adapt_to_zero_and_back(no_stray_processes):
    with (
        LocalCluster(cores=2, memory="2GB", processes=2, scheduler_options=NO_DASHBOARD) as cluster,
        Client(cluster) as client,
    ):
        adaptive = cluster.adapt(
            minimum_jobs=0, maximum_jobs=2, interval="200ms", wait_count=2, target_duration="1s"
        )
        assert (adaptive.minimum, adaptive.maximum) == (0, 4)
        futures = client.map(lambda i: time.sleep(0.5) or i, range(20))
        assert sum(client.gather(futures)) == sum(range(20))
        del futures
        assert wait_until(
            lambda: not cluster.workers and not client.scheduler_info()["workers"], timeout=60
        )
        # back up again
        assert client.submit(lambda: 42).result(timeout=60) == 42
        cluster.adapt(minimum_jobs=1, maximum_jobs=1, interval="200ms")
        client.wait_for_workers(2, timeout=60)
        assert len(cluster.workers) == 1


def test_adaptive_scale_down_retires_whole_jobs():
    """Upstream #498: retiring one process of a 2-process job must not loop."""
    with (
        LocalCluster(cores=2, memory="2GB", processes=2, scheduler_options=NO_DASHBOARD) as cluster,
        Client(cluster) as client,
    ):
        cluster.scale(jobs=2)
        client.wait_for_workers(4, timeout=60)
        cluster.adapt(minimum=1, maximum=4, interval="200ms", wait_count=1)
        # minimum=1 worker still needs one whole job; the other job is retired as a unit
        assert wait_until(
            lambda: len(cluster.workers) == 1 and len(client.scheduler_info()["workers"]) == 2,
            timeout=60,
        )
        submitted = len(cluster.jobs)
        time.sleep(2)
        assert len(cluster.jobs) == submitted  # no start/cancel loop
        assert len(client.scheduler_info()["workers"]) == 2


def test_death_before_connect_is_explained_and_bounded(tmp_path):
    with dask.config.set({"jobqueue.local.max-consecutive-failures": 2}):
        with LocalCluster(
            cores=1,
            memory="1GB",
            python="/nonexistent/python",
            log_directory=str(tmp_path),
            scheduler_options=NO_DASHBOARD,
        ) as cluster:
            cluster.scale(1)
            started = time.monotonic()
            with pytest.raises(JobFailedError) as info:
                cluster.wait_for_workers(1, timeout=60)
            assert time.monotonic() - started < 20
            message = str(info.value)
            assert "2 jobs in a row ended before their workers connected" in message
            assert "/nonexistent/python" in message and "No such file or directory" in message
            assert "exit code 127" in message
            failed = [r for r in cluster.jobs if r.state == JobState.FAILED]
            assert len(failed) == 2
            time.sleep(1.5)
            assert len(cluster.jobs) == 2  # circuit breaker: no more submissions
            # the cause is raised by the next scale() too, which then tries again
            with pytest.raises(JobFailedError):
                cluster.scale(1)
            assert wait_until(lambda: len(cluster.jobs) == 3, timeout=10)


def test_job_killed_from_outside_is_replaced():
    with (
        LocalCluster(cores=1, memory="1GB", scheduler_options=NO_DASHBOARD) as cluster,
        Client(cluster) as client,
    ):
        cluster.scale(1)
        client.wait_for_workers(1, timeout=60)
        first = cluster.workers["LocalCluster-0"].job_id
        os.killpg(int(first), signal.SIGKILL)
        # the replacement is a new job under a new name: the old worker's name is never reused
        assert wait_until(
            lambda: len(cluster.workers) == 1 and "LocalCluster-0" not in cluster.workers,
            timeout=30,
        )
        (replacement,) = cluster.workers.values()
        assert replacement.job_id != first
        client.wait_for_workers(1, timeout=60)
        states = {r.job_id: r.state for r in cluster.jobs}
        assert states[first] == JobState.FAILED
        assert states[replacement.job_id] == JobState.CONNECTED
        assert client.submit(lambda: 1).result(timeout=30) == 1


class FailingSubmitJob(LocalJob):
    """A local job submitted through a (failing) submit command, like a batch system's."""

    submit_command = "false"
    batch_system_cls = BatchSystem


def _fake_sbatch(tmp_path, body):
    path = tmp_path / "fake-submit"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_submit_failure_reaches_the_user_and_close_is_clean(tmp_path, no_stray_processes):
    fake = _fake_sbatch(
        tmp_path, "echo 'sbatch: error: invalid partition specified: nosuch' >&2\nexit 1\n"
    )

    class BadSubmitJob(FailingSubmitJob):
        submit_command = fake

    with JobQueueCluster(
        job_cls=BadSubmitJob, cores=1, memory="1GB", scheduler_options=NO_DASHBOARD
    ) as cluster:
        cluster.scale(2)
        with pytest.raises(CommandError) as info:
            cluster.wait_for_workers(1, timeout=30)
        err = info.value
        assert err.returncode == 1
        assert "invalid partition specified: nosuch" in str(err)
        assert fake in str(err)
        assert cluster.workers == {}
        # the next scale() raises it too, then tries again
        with pytest.raises(CommandError):
            cluster.scale(1)
    # close() did not raise although no job ever started


def test_missing_submit_binary_is_reported():
    class MissingBinaryJob(FailingSubmitJob):
        submit_command = "/nonexistent/bin/sbatch"

    with JobQueueCluster(
        job_cls=MissingBinaryJob, cores=1, memory="1GB", scheduler_options=NO_DASHBOARD
    ) as cluster:
        cluster.scale(1)
        with pytest.raises(CommandError, match="program not found"):
            cluster.wait_for_workers(1, timeout=30)


async def test_async_submit_failure_raised_from_await_and_scale(tmp_path):
    fake = _fake_sbatch(tmp_path, "echo 'qsub: Unknown queue' >&2\nexit 170\n")

    class BadSubmitJob(FailingSubmitJob):
        submit_command = fake

    async with JobQueueCluster(
        job_cls=BadSubmitJob,
        cores=1,
        memory="1GB",
        asynchronous=True,
        scheduler_options=NO_DASHBOARD,
    ) as cluster:
        with pytest.raises(CommandError, match="exit code 170"):
            await cluster.scale(1)
        with pytest.raises(CommandError, match="Unknown queue"):
            await cluster
        with pytest.raises(CommandError):
            cluster.scale(1)


async def test_async_cluster_computes(no_stray_processes):
    async with LocalCluster(
        cores=1, memory="1GB", asynchronous=True, scheduler_options=NO_DASHBOARD
    ) as cluster:
        await cluster.scale(2)
        async with Client(cluster, asynchronous=True) as client:
            await client.wait_for_workers(2, timeout=60)
            assert await client.submit(lambda x: x + 1, 1) == 2


def test_wait_for_workers_timeout_shows_the_job_table(capsys):
    with LocalCluster(
        cores=1, memory="1GB", job_script_prologue=["sleep 30"], scheduler_options=NO_DASHBOARD
    ) as cluster:
        cluster.scale(1)
        with pytest.raises(TimeoutError) as info:
            cluster.wait_for_workers(1, timeout=1.5)
        assert "Only 0 of 1 workers connected" in str(info.value)
        assert "LocalCluster-0" in str(info.value) and "running" in str(info.value)
        assert "0/1 workers; 1 job: 1 running" in capsys.readouterr().err


def test_close_kills_every_job_process(no_stray_processes):
    cluster = LocalCluster(cores=2, memory="2GB", processes=2, scheduler_options=NO_DASHBOARD)
    cluster.scale(jobs=2)
    with Client(cluster) as client:
        client.wait_for_workers(4, timeout=60)
    pids = [int(job.job_id) for job in cluster.workers.values()]
    cluster.close()
    assert wait_until(lambda: not any(_alive(p) for p in pids), timeout=10)


def test_interpreter_exit_cancels_jobs(tmp_path):
    code = f"""
import sys, dask
from dask_jobqueue.local import LocalCluster
cluster = LocalCluster(cores=1, memory="1GB", job_script_prologue=["sleep 600"],
                       scheduler_options={{"dashboard_address": ":0"}})
cluster.scale(2)
cluster.sync(cluster._correct_state)
open({str(tmp_path / "pids")!r}, "w").write(" ".join(j.job_id for j in cluster.workers.values()))
sys.exit(0)  # no close(): atexit must cancel the jobs
"""
    import subprocess

    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
    assert len(pids) == 2
    assert wait_until(lambda: not any(_alive(p) for p in pids), timeout=10)


def test_html_repr_has_the_job_table():
    with LocalCluster(cores=1, memory="1GB", scheduler_options=NO_DASHBOARD) as cluster:
        cluster.scale(1)
        assert wait_until(lambda: len(cluster.jobs) == 1)
        html = cluster._repr_html_()
        assert "dask-jobqueue-jobs" in html and "LocalCluster-0" in html
        frame = cluster.jobs.to_dataframe()
        assert list(frame["name"]) == ["LocalCluster-0"]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def test_async_n_workers_and_unawaited_scale(recwarn):
    async with LocalCluster(
        cores=1, memory="1GB", n_workers=1, asynchronous=True, scheduler_options=NO_DASHBOARD
    ) as cluster:
        cluster.scale(2)  # not awaited: still scales, and no "never awaited" warning
        async with Client(cluster, asynchronous=True) as client:
            await client.wait_for_workers(2, timeout=60)
    assert not [w for w in recwarn if "never awaited" in str(w.message)]


def test_local_job_output_directory_is_removed_with_the_job():
    with LocalCluster(cores=1, memory="1GB", scheduler_options=NO_DASHBOARD) as cluster:
        cluster.scale(1)
        assert wait_until(lambda: "LocalCluster-0" in cluster.workers)
        job = cluster.workers["LocalCluster-0"]
        directory = job._private_dir
        assert directory and os.path.isdir(directory)
    assert not os.path.exists(directory)


def test_close_with_a_pending_error_does_not_raise(tmp_path):
    with dask.config.set({"jobqueue.local.max-consecutive-failures": 1}):
        cluster = LocalCluster(
            cores=1, memory="1GB", python="/nonexistent/python", scheduler_options=NO_DASHBOARD
        )
        cluster.scale(1)
        with pytest.raises(JobFailedError):
            cluster.wait_for_workers(1, timeout=60)
        assert cluster._pending_error is not None
        cluster.close()  # must not raise the pending error


def test_scale_to_zero_clears_a_pending_error_without_raising():
    with dask.config.set({"jobqueue.local.max-consecutive-failures": 1}):
        with LocalCluster(
            cores=1, memory="1GB", python="/nonexistent/python", scheduler_options=NO_DASHBOARD
        ) as cluster:
            cluster.scale(1)
            with pytest.raises(JobFailedError):
                cluster.wait_for_workers(1, timeout=60)
            cluster.scale(0)
            assert cluster._pending_error is None
