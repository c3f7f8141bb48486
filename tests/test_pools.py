"""Pools: several kinds of job under one Dask scheduler (``cluster.add_pool``).

The placement rules are pure (``dask_jobqueue.pools``) and tested as such; the pools
themselves run end to end on the local backend (real worker processes).
"""

from __future__ import annotations

import os
import subprocess

import dask
import pytest
from distributed import Client

from dask_jobqueue.local import LocalCluster
from dask_jobqueue.pools import (
    PoolShape,
    ReadyTask,
    WorkerLoad,
    pick_pool,
    pool_targets,
    worker_resources,
)
from dask_jobqueue.slurm import SLURMCluster

from .scheduler_suite import NO_DASHBOARD
from .waiting import quick_polling, wait_until

FAST = quick_polling("local", "200ms", "1s")
GPU_ARGS = ["--resources", "GPU=1"]

CPU = PoolShape("cpu", {}, 2)
GPU = PoolShape("gpu", {"GPU": 1}, 1)
BIG = PoolShape("big", {"GPU": 2, "MEM": 1}, 1)


@pytest.fixture(autouse=True)
def fast_polling():
    with dask.config.set(FAST):
        yield


# ---------------------------------------------------------------------- placement (pure)


@pytest.mark.parametrize(
    ("restrictions", "pools", "expected"),
    [
        (None, [CPU, GPU], "cpu"),
        ({"GPU": 1}, [CPU, GPU], "gpu"),
        ({"GPU": 1}, [CPU, BIG, GPU], "gpu"),  # the pool with fewer kinds of resource
        ({"GPU": 2}, [CPU, GPU, BIG], "big"),  # only one has enough
        ({"GPU": 3}, [CPU, GPU, BIG], None),  # nobody can run it
        (None, [GPU, BIG], "gpu"),  # no plain pool: the least special one
        ({"FPGA": 1}, [CPU, GPU], None),
    ],
)
def test_a_task_counts_for_the_least_special_pool_that_can_run_it(restrictions, pools, expected):
    assert pick_pool(restrictions, pools) == expected


def test_gpu_tasks_grow_only_the_gpu_pool_and_plain_tasks_only_the_cpu_pool():
    gpu_tasks = [ReadyTask({"GPU": 1}, 1.0)] * 10
    assert pool_targets(gpu_tasks, 10, [], [CPU, GPU], target_duration=5.0) == {"cpu": 0, "gpu": 2}
    plain = [ReadyTask(None, 1.0)] * 10
    assert pool_targets(plain, 10, [], [CPU, GPU], target_duration=5.0) == {"cpu": 1, "gpu": 0}


def test_a_pool_with_ready_tasks_and_no_worker_asks_for_one_and_never_more_than_its_tasks():
    one_short_task = [ReadyTask({"GPU": 1}, 0.01)]
    assert pool_targets(one_short_task, 1, [], [CPU, GPU], 5.0)["gpu"] == 1
    # 3 long tasks: 300 s of work would ask for 60 threads, but there are only 3 tasks
    long_tasks = [ReadyTask({"GPU": 1}, 100.0)] * 3
    assert pool_targets(long_tasks, 3, [], [CPU, GPU], 5.0)["gpu"] == 3


def test_running_work_counts_for_the_pool_of_its_worker_and_a_sample_stands_for_all():
    workers = [WorkerLoad("cpu", occupancy=20.0, processing=8), WorkerLoad("gpu", 0.0, 0)]
    # 1000 sampled plain tasks of 0.1 s stand for 5000 waiting: 500 s, + 20 s running
    ready = [ReadyTask(None, 0.1)] * 1000
    targets = pool_targets(ready, 5000, workers, [CPU, GPU], target_duration=5.0)
    assert targets == {"cpu": 52, "gpu": 0}  # 104 threads / 2 per worker; idle GPU: none


def test_memory_pressure_doubles_only_that_pool():
    workers = [
        WorkerLoad("cpu", 0.0, 0, memory_used=7, memory_limit=10),
        WorkerLoad("gpu", 0.0, 0, memory_used=1, memory_limit=10),
    ]
    assert pool_targets([], 0, workers, [CPU, GPU], 5.0) == {"cpu": 2, "gpu": 0}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--resources", "GPU=1"], {"GPU": 1.0}),
        (["--resources", "GPU=2 MEM=4e9"], {"GPU": 2.0, "MEM": 4e9}),
        (["--resources=GPU=1,FOO=2", "--nthreads", "1"], {"GPU": 1.0, "FOO": 2.0}),
        (["--lifetime", "1h"], {}),
        (["--resources"], {}),
    ],
)
def test_worker_resources_are_read_from_the_worker_arguments(args, expected):
    assert worker_resources(args) == expected


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("1gpu", {}, "a pool's name is a letter"),
        ("gpu-a", {}, "a pool's name is a letter"),
        ("", {}, "a pool's name is a letter"),
        ("gpu", {"security": True}, "security can only be given to the cluster"),
        ("gpu", {"scheduler_options": {}}, "shares its cluster's scheduler"),
        ("gpu", {"cluster_cls": dict}, "cluster_cls must be a JobQueueCluster subclass"),
        ("gpu", {"cores": -1}, "cores"),
    ],
)
def test_bad_pools_are_refused_before_anything_is_submitted(name, kwargs, match):
    with LocalCluster(cores=1, memory="1GB", scheduler_options=NO_DASHBOARD) as cluster:
        with pytest.raises(ValueError, match=match):
            cluster.add_pool(name, **kwargs)
        assert cluster.pools == {}
        assert cluster.command_counts.get("submit", 0) == 0


def test_a_pool_name_is_used_once_and_a_pool_has_no_pools():
    with LocalCluster(cores=1, memory="1GB", scheduler_options=NO_DASHBOARD) as cluster:
        pool = cluster.add_pool("gpu")
        with pytest.raises(ValueError, match="has a pool named 'gpu' already"):
            cluster.add_pool("gpu")
        with pytest.raises(ValueError, match="is a pool; add pools to its cluster"):
            pool.add_pool("other")
        assert list(cluster.pools) == ["gpu"]


def test_pools_keyword_must_map_names_to_keywords():
    with pytest.raises(ValueError, match="pools=.*must map each pool's name to its keywords"):
        SLURMCluster(cores=1, memory="1GB", pools=["gpu"])


# ---------------------------------------------------------------------- end to end


def test_pools_share_the_scheduler_and_close_with_the_cluster(no_stray_processes):
    with (
        LocalCluster(cores=1, memory="1GB", scheduler_options=NO_DASHBOARD) as cluster,
        Client(cluster) as client,
    ):
        big = cluster.add_pool("big", cores=2, memory="2GB", processes=2)
        assert cluster.pools == {"big": big}
        assert big.scheduler_address == cluster.scheduler_address
        cluster.scale(1)
        big.scale(jobs=1)
        client.wait_for_workers(3, timeout=60)
        big.wait_for_workers(2, timeout=30)  # a pool counts its own workers
        names = sorted(w["name"] for w in client.scheduler_info()["workers"].values())
        assert names == ["LocalCluster-0", "LocalCluster-big-0-0", "LocalCluster-big-0-1"]
        table = cluster.jobs
        assert sorted((r.pool or "", r.name) for r in table) == [
            ("", "LocalCluster-0"),
            ("big", "LocalCluster-big-0"),
        ]
        assert repr(table).splitlines()[0].startswith("POOL")
        assert [r.name for r in big.jobs] == ["LocalCluster-big-0"]
        # the pool's scale changes the pool only
        big.scale(0)
        wait_until(lambda: len(client.scheduler_info()["workers"]) == 1, timeout=30)
        assert list(cluster.workers) == ["LocalCluster-0"]
        big.scale(jobs=1)
        client.wait_for_workers(3, timeout=60)
    assert cluster.status.name == "closed" and big.status.name == "closed"
    assert cluster.pools == {}


def test_gpu_tasks_grow_the_gpu_pool_only_under_adapt(no_stray_processes):
    with (
        LocalCluster(cores=1, memory="1GB", scheduler_options=NO_DASHBOARD) as cluster,
        Client(cluster) as client,
    ):
        gpu = cluster.add_pool("gpu", worker_extra_args=GPU_ARGS)
        cluster.adapt(minimum_jobs=0, maximum_jobs=2, interval="200ms")
        assert gpu._adaptive is not None  # the pool got the cluster's limits
        futures = [
            client.submit(lambda i: i, i, resources={"GPU": 1}, pure=False) for i in range(8)
        ]
        assert client.gather(futures, errors="raise") == list(range(8))
        assert gpu.command_counts.get("submit", 0) >= 1
        assert cluster.command_counts.get("submit", 0) == 0  # no CPU job for GPU tasks
        plain = client.submit(lambda: "plain", pure=False)
        assert plain.result(timeout=60) == "plain"
        # a plain task may run on the GPU worker already there; it never needs a GPU
        assert cluster.command_counts.get("submit", 0) <= 1


def test_pools_from_the_configuration():
    pools = {"gpu": {"worker-extra-args": GPU_ARGS, "cores": 2}}
    with dask.config.set({"jobqueue.local.pools": pools}):
        with LocalCluster(cores=1, memory="1GB", scheduler_options=NO_DASHBOARD) as cluster:
            assert list(cluster.pools) == ["gpu"]
            gpu = cluster.pools["gpu"]
            assert gpu.pool_shape().resources == {"GPU": 1.0}
            assert "--resources GPU=1" in gpu.job_script()
            assert gpu.job_script().count("--nthreads 1") == 1  # cores=2: 2 processes


def test_a_bad_pool_in_the_configuration_fails_the_construction_cleanly(no_stray_processes):
    with dask.config.set({"jobqueue.local.pools": {"gpu": {"cores": -2}}}):
        with pytest.raises(ValueError, match="cores"):
            LocalCluster(cores=1, memory="1GB", n_workers=1, scheduler_options=NO_DASHBOARD)


def test_the_configuration_example_of_the_pools_page_gives_what_it_says():
    """docs/pools.rst's YAML block, as a user would paste it into ~/.config/dask."""
    import pathlib
    import re
    import textwrap

    import yaml

    page = (pathlib.Path(__file__).parents[1] / "docs" / "pools.rst").read_text()
    block = re.search(r"\.\. code-block:: yaml\n\n((?:    .*\n|\n)+)", page)
    assert block is not None
    config = yaml.safe_load(textwrap.dedent(block.group(1)))
    with dask.config.set(config):
        with SLURMCluster(scheduler_options=NO_DASHBOARD) as cluster:
            gpu = cluster.pools["gpu"]
            script = gpu.job_script()
            assert "#SBATCH -p gpu" in script and "#SBATCH --gpus=1" in script
            assert "CUDA_VISIBLE_DEVICES" in script
            assert "#SBATCH -p cpu" in cluster.job_script()
            assert "--resources GPU=1" in script
            assert gpu.pool_shape().resources == {"GPU": 1.0}
            assert cluster.command_counts.get("submit", 0) == 0


@pytest.mark.env("lsf")
def test_a_pool_of_another_batch_system_joins_the_same_scheduler(tmp_path, monkeypatch):
    """The stretch of issue 16: a cluster of one batch system (the local backend) with a pool
    of another (the LSF emulator's ``bsub``), under one scheduler. Under ``adapt``, tasks
    asking for the pool's resource grow the LSF pool only; ``close()`` ends both."""
    from dask_jobqueue.lsf import LSFCluster

    from .emulator import emulated_scheduler

    with emulated_scheduler("lsf", tmp_path / "home", kill_delay=1.0) as env:
        for key in ("PATH", "DJQ_EMULATOR_HOME"):
            monkeypatch.setenv(key, env[key])
        with (
            dask.config.set(quick_polling("lsf", "300ms", "1s")),
            LocalCluster(cores=1, memory="1GB", scheduler_options=NO_DASHBOARD) as cluster,
            Client(cluster) as client,
        ):
            far = cluster.add_pool(
                "far",
                cluster_cls=LSFCluster,
                cores=1,
                memory="1GB",
                log_directory=str(tmp_path / "logs"),
                worker_extra_args=["--resources", "FAR=1"],
            )
            assert type(far) is LSFCluster and far.scheduler_address == cluster.scheduler_address
            cluster.adapt(minimum_jobs=0, maximum_jobs=2, interval="200ms")
            futures = [
                client.submit(
                    lambda i: (i, os.environ.get("LSB_JOBID")), i, resources={"FAR": 1}, pure=False
                )
                for i in range(6)
            ]
            results = client.gather(futures, errors="raise")
            assert [i for i, _ in results] == list(range(6))
            assert all(job_id for _, job_id in results)  # every one ran in an LSF job
            assert far.command_counts.get("submit", 0) >= 1
            assert cluster.command_counts.get("submit", 0) == 0  # no local job for them
            assert {r.pool for r in cluster.jobs} == {"far"}  # the cluster's table shows them
            lsf_ids = {r.job_id for r in far.jobs}
        assert cluster.status.name == "closed" and far.status.name == "closed"
        done = subprocess.run(
            ["bjobs", "-a", "-noheader", "-o", "jobid stat", *sorted(lsf_ids)],
            capture_output=True,
            text=True,
            check=True,
        )
        states = dict(line.split() for line in done.stdout.splitlines())
        assert set(states) == lsf_ids and set(states.values()) <= {"EXIT", "DONE"}, states
