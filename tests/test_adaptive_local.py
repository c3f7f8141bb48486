"""``adapt(idle_timeout=)`` and ``adapt-idle-timeout`` on the local batch system (real worker
processes, no batch scheduler): where the keep-warm time comes from, bad values, and a job
kept between two computations then released."""

from __future__ import annotations

import time

import dask
import pytest
from distributed import Client

from dask_jobqueue.local import LocalCluster

from .scheduler_suite import NO_DASHBOARD
from .waiting import quick_polling, wait_until


@pytest.fixture
def cluster():
    with dask.config.set(quick_polling("local", "200ms", "1s")):
        with LocalCluster(cores=1, memory="1GiB", scheduler_options=NO_DASHBOARD) as cluster:
            yield cluster


def test_default_keep_warm_is_sixty_seconds(cluster):
    assert cluster.adapt(maximum_jobs=2).idle_timeout == 60.0


def test_keyword_config_and_wait_count(cluster):
    assert cluster.adapt(maximum_jobs=2, idle_timeout="2m").idle_timeout == 120.0
    # adapt()'s options accumulate, as in distributed: the keep-warm time stays
    assert cluster.adapt(maximum_jobs=3).idle_timeout == 120.0
    # distributed's wait_count, given explicitly, keeps its meaning (intervals before release)
    adaptive = cluster.adapt(idle_timeout=None, interval="200ms", wait_count=2)
    assert adaptive.idle_timeout == 120.0  # the earlier explicit idle_timeout still wins


def test_wait_count_alone_sets_the_keep_warm_time(cluster):
    assert cluster.adapt(maximum_jobs=1, interval="200ms", wait_count=3).idle_timeout == (
        pytest.approx(0.6)
    )


def test_config_key_sets_the_default():
    with dask.config.set({"jobqueue.local.adapt-idle-timeout": "7s"}):
        with LocalCluster(cores=1, memory="1GiB", scheduler_options=NO_DASHBOARD) as cluster:
            assert cluster.adapt(maximum_jobs=1).idle_timeout == 7.0


def test_bad_config_value_is_refused_before_anything_runs():
    with dask.config.set({"jobqueue.local.adapt-idle-timeout": "soon"}):
        with pytest.raises(ValueError, match="adapt_idle_timeout='soon'"):
            LocalCluster(cores=1, memory="1GiB", scheduler_options=NO_DASHBOARD)


@pytest.mark.parametrize("value", [0, -5, "soon", True, "0s"])
def test_bad_idle_timeout_is_refused_and_changes_nothing(cluster, value):
    before = cluster.adapt(maximum_jobs=1, idle_timeout="9s")
    with pytest.raises(ValueError, match="idle_timeout="):
        cluster.adapt(maximum_jobs=2, idle_timeout=value)
    assert cluster._adaptive is before and before.idle_timeout == 9.0
    assert not cluster.worker_spec and cluster.command_counts.get("submit", 0) == 0


def test_a_job_is_kept_between_computations_then_released(cluster, no_stray_processes):
    with Client(cluster) as client:
        adaptive = cluster.adapt(
            minimum_jobs=0, maximum_jobs=2, idle_timeout="6s", interval="200ms"
        )
        assert sum(client.gather(client.map(lambda i: time.sleep(0.2) or i, range(10)))) == 45
        submitted = cluster.command_counts["submit"]
        time.sleep(2)  # a pause shorter than the keep-warm time
        started = time.monotonic()
        assert client.submit(lambda: 42, pure=False).result(timeout=30) == 42
        assert time.monotonic() - started < 2.0
        assert cluster.command_counts["submit"] == submitted
        assert cluster.command_counts.get("cancel", 0) == 0
        assert adaptive.released_jobs == 0
        # idle past the keep-warm time: every job goes
        assert wait_until(lambda: not cluster.workers, timeout=30)
        assert adaptive.released_jobs == adaptive.submitted_jobs >= 1
        assert cluster.command_counts["submit"] == submitted
