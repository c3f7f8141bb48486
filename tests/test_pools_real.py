"""Pools on the real multi-node Slurm with (fake) GPUs (``pytest -E slurm-multi``).

A CPU cluster on partition ``cpu`` and a GPU pool on partition ``gpu`` share one Dask
scheduler under ``adapt``: GPU-annotated tasks run on GPU workers and cause no CPU job; plain
tasks run too; closing the cluster leaves nothing of either in the queue.
"""

from __future__ import annotations

import os
import subprocess

import dask
import pytest
from distributed import Client

from dask_jobqueue import SLURMCluster

from .scheduler_suite import NO_DASHBOARD
from .waiting import quick_polling, wait_until

pytestmark = pytest.mark.env("slurm-multi")


def queued_job_ids(names: set[str]) -> set[str]:
    """Ids of the jobs with these batch job names still in the queue."""
    done = subprocess.run(
        ["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True, timeout=30, check=True
    )
    return {line.split()[0] for line in done.stdout.splitlines() if line.split()[1] in names}


def test_gpu_tasks_grow_the_gpu_pool_only_and_plain_tasks_run_too(slurm_multi, tmp_path):
    with dask.config.set(quick_polling("slurm", "500ms", "2s")):
        with (
            SLURMCluster(
                cores=1,
                memory="500MB",
                queue="cpu",
                walltime="00:10:00",
                job_name="pools-cpu",
                log_directory=str(tmp_path),
                scheduler_options=NO_DASHBOARD,
            ) as cluster,
            Client(cluster) as client,
        ):
            gpu = cluster.add_pool(
                "gpu",
                queue="gpu",
                job_name="pools-gpu",
                gpus=1,
            )
            cluster.adapt(minimum_jobs=0, maximum_jobs=3, interval="500ms")

            def device(i: int) -> str:
                return os.environ.get("CUDA_VISIBLE_DEVICES", "none")

            futures = [client.submit(device, i, resources={"GPU": 1}, pure=False) for i in range(6)]
            devices = client.gather(futures)
            assert set(devices) <= {"0", "1"}, devices  # only GPU workers ran them
            assert cluster.command_counts.get("submit", 0) == 0, repr(cluster.jobs)
            assert 1 <= gpu.command_counts["submit"] <= 3
            gpu_jobs = [r for r in cluster.jobs if r.pool == "gpu"]
            assert gpu_jobs and all(r.name.startswith("SLURMCluster-gpu-") for r in gpu_jobs)

            plain = client.submit(lambda: "plain", pure=False)
            assert plain.result(timeout=120) == "plain"
            names = {"pools-cpu", "pools-gpu"}
            assert queued_job_ids(names)  # jobs of ours are there while the cluster runs
        assert wait_until(lambda: not queued_job_ids(names), timeout=60), queued_job_ids(names)
