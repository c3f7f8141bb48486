"""GPUs and multi-node jobs on the real multi-node Slurm (``pytest -E slurm-multi``).

Three nodes n1..n3 with 2 fake GPUs each (``ci/slurm-multi``). ``gpus=2``: one job, two
workers, each seeing one of the job's devices and advertising ``GPU: 1``. ``nodes=3``: one job
over the three nodes, one worker on each, retired together; a node's workers lost mid-job end
the job, and the cluster replaces it whole.
"""

from __future__ import annotations

import os
import signal
import subprocess

import dask
import pytest
from distributed import Client

from dask_jobqueue import CommandError, JobFailedError, SLURMCluster

from .scheduler_suite import NO_DASHBOARD
from .waiting import quick_polling, wait_until

pytestmark = pytest.mark.env("slurm-multi")


def squeue(job_name: str) -> dict[str, str]:
    """Job id -> ``STATE NODES`` of our jobs of this batch job name still in the queue."""
    done = subprocess.run(
        ["squeue", "-h", "-n", job_name, "-o", "%i %T %D"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return {
        line.split()[0]: " ".join(line.split()[1:]) for line in done.stdout.splitlines() if line
    }


def worker_facts(client: Client) -> dict[str, dict[str, str | None]]:
    """Worker name -> what its process sees: node, CUDA_VISIBLE_DEVICES, pids."""

    def facts() -> dict[str, str | None]:
        return {
            "node": os.environ.get("SLURMD_NODENAME"),
            "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "job": os.environ.get("SLURM_JOB_ID"),
            "nanny_pid": str(os.getppid()),
        }

    # a worker that leaves meanwhile (its job ending) is left out, not an error
    by_address = client.run(facts, on_error="ignore")
    names = {a: str(w["name"]) for a, w in client.scheduler_info()["workers"].items()}
    return {names[a]: f for a, f in by_address.items() if a in names}


def gpu_cluster(tmp_path, job_name: str, **keywords) -> SLURMCluster:
    """A cluster of 2-GPU jobs (2 cores, 1 GB) on the bed's ``gpu`` partition; ``keywords``
    add to or replace these."""
    settings = {
        "cores": 2,
        "memory": "1GB",
        "gpus": 2,
        "queue": "gpu",
        "walltime": "00:10:00",
        "job_name": job_name,
        "log_directory": str(tmp_path),
        "scheduler_options": NO_DASHBOARD,
        **keywords,
    }
    return SLURMCluster(**{k: v for k, v in settings.items() if v is not None})


def test_gpus_two_workers_one_device_each(slurm_multi, tmp_path):
    with dask.config.set(quick_polling("slurm", "500ms", "2s")):
        with (
            gpu_cluster(tmp_path, "gpus-two") as cluster,
            Client(cluster) as client,
        ):
            assert "#SBATCH --gpus=2" in cluster.job_script()
            cluster.scale(jobs=1)
            client.wait_for_workers(2, timeout=120)
            facts = worker_facts(client)
            assert len(facts) == 2
            assert sorted(f["cuda"] for f in facts.values()) == ["0", "1"], facts
            assert len({f["job"] for f in facts.values()}) == 1  # one batch job
            assert len(squeue("gpus-two")) == 1
            workers = client.scheduler_info()["workers"].values()
            assert [w["resources"] for w in workers] == [{"GPU": 1}, {"GPU": 1}]
            # GPU tasks run on them, one GPU each
            devices = client.gather(
                [
                    client.submit(
                        lambda i: os.environ["CUDA_VISIBLE_DEVICES"],
                        i,
                        resources={"GPU": 1},
                        pure=False,
                    )
                    for i in range(4)
                ]
            )
            assert set(devices) <= {"0", "1"}
        assert wait_until(lambda: not squeue("gpus-two"), timeout=60)


def test_mem_per_gpu_writes_mem_per_gpu_and_no_mem(slurm_multi, tmp_path):
    with dask.config.set(quick_polling("slurm", "500ms", "2s")):
        with (
            gpu_cluster(tmp_path, "gpus-mem", memory=None, mem_per_gpu="1GB") as cluster,
            Client(cluster) as client,
        ):
            header = cluster.job_header.splitlines()
            assert "#SBATCH --mem-per-gpu=954M" in header
            assert not [line for line in header if line.startswith("#SBATCH --mem=")]
            cluster.scale(jobs=1)
            client.wait_for_workers(2, timeout=120)
            job_id = next(iter(squeue("gpus-mem")))
            shown = subprocess.run(
                ["scontrol", "show", "job", job_id],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout
            # recorded on Slurm 22.05: MemPerTres=gres:gpu:954, MinMemoryNode=0 (no --mem)
            assert "MemPerTres=gres:gpu:954" in shown, shown
            assert "MinMemoryNode=0" in shown, shown
            assert "TresPerJob=gres:gpu:2" in shown, shown
        assert wait_until(lambda: not squeue("gpus-mem"), timeout=60)


#: The model of the bed's fake GPUs (gres.conf Type=, ci/slurm-multi/run.sh).
BED_GPU_TYPE = "fakegpu"


def scontrol_job(job_id: str) -> str:
    return subprocess.run(
        ["scontrol", "show", "job", job_id],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout


def test_gpu_type_two_workers_one_device_each(slurm_multi, tmp_path):
    """``gpu_type`` writes ``--gpus=<type>:2``; Slurm gives the job 2 GPUs of that type."""
    with dask.config.set(quick_polling("slurm", "500ms", "2s")):
        with (
            gpu_cluster(tmp_path, "gpus-typed", gpu_type=BED_GPU_TYPE) as cluster,
            Client(cluster) as client,
        ):
            assert f"#SBATCH --gpus={BED_GPU_TYPE}:2" in cluster.job_header.splitlines()
            cluster.scale(jobs=1)
            client.wait_for_workers(2, timeout=120)
            facts = worker_facts(client)
            assert sorted(f["cuda"] for f in facts.values()) == ["0", "1"], facts
            (job_id,) = {f["job"] for f in facts.values()}
            assert list(squeue("gpus-typed")) == [job_id]
            workers = client.scheduler_info()["workers"].values()
            assert [w["resources"] for w in workers] == [{"GPU": 1}, {"GPU": 1}]
            # recorded on Slurm 22.05: TresPerJob=gres:gpu:fakegpu:2
            shown = scontrol_job(str(job_id))
            assert f"TresPerJob=gres:gpu:{BED_GPU_TYPE}:2" in shown, shown
            assert cluster.command_counts["submit"] == 1
        assert wait_until(lambda: not squeue("gpus-typed"), timeout=60)


def test_gpu_type_with_nodes_per_node_devices(slurm_multi, tmp_path):
    """``nodes=2``: ``--gpus-per-node=<type>:2``, two workers on each node, devices 0 and 1."""
    with dask.config.set(quick_polling("slurm", "500ms", "2s")):
        with (
            gpu_cluster(tmp_path, "gpus-typed-nodes", gpu_type=BED_GPU_TYPE, nodes=2) as cluster,
            Client(cluster) as client,
        ):
            assert f"#SBATCH --gpus-per-node={BED_GPU_TYPE}:2" in cluster.job_header.splitlines()
            cluster.scale(jobs=1)
            client.wait_for_workers(4, timeout=120)
            facts = worker_facts(client)
            (job_id,) = {f["job"] for f in facts.values()}
            by_node: dict[str, list[str]] = {}
            for fact in facts.values():
                by_node.setdefault(str(fact["node"]), []).append(str(fact["cuda"]))
            assert len(by_node) == 2, facts
            assert all(sorted(devices) == ["0", "1"] for devices in by_node.values()), facts
            # recorded on Slurm 22.05: TresPerNode=gres:gpu:fakegpu:2
            shown = scontrol_job(str(job_id))
            assert f"TresPerNode=gres:gpu:{BED_GPU_TYPE}:2" in shown, shown
        assert wait_until(lambda: not squeue("gpus-typed-nodes"), timeout=60)


def test_gpu_type_no_node_has_is_refused_and_reported(slurm_multi, tmp_path):
    """A model no node has: sbatch refuses the job at once, the cluster raises sbatch's
    error and does not resubmit it again and again."""
    with dask.config.set(quick_polling("slurm", "500ms", "2s")):
        with gpu_cluster(tmp_path, "gpus-badtype", gpu_type="nosuchgpu") as cluster:
            cluster.scale(jobs=1)
            with pytest.raises(CommandError) as info:
                cluster.wait_for_workers(2, timeout=60)
            # recorded on Slurm 22.05
            assert "Requested node configuration is not available" in str(info.value)
            assert info.value.returncode not in (0, None)
            assert cluster.command_counts["submit"] == 1
            assert not squeue("gpus-badtype")  # nothing queued
            # the refusal stands: asking again raises the same error without a new job
            with pytest.raises(CommandError, match="Requested node configuration"):
                cluster.wait_for_workers(2, timeout=5)
            assert not squeue("gpus-badtype")
            assert cluster.command_counts["submit"] == 1


def three_node_cluster(job_name: str, tmp_path) -> SLURMCluster:
    """A cluster of jobs over the three nodes n1..n3, one worker per node."""
    return SLURMCluster(
        cores=1,
        memory="500MB",
        processes=1,
        nodes=3,
        queue="cpu",
        walltime="00:10:00",
        job_name=job_name,
        log_directory=str(tmp_path),
        scheduler_options=NO_DASHBOARD,
    )


def test_nodes_three_one_job_three_workers_retired_together(slurm_multi, tmp_path):
    with dask.config.set(quick_polling("slurm", "500ms", "2s")):
        with (
            three_node_cluster("nodes-three", tmp_path) as cluster,
            Client(cluster) as client,
        ):
            cluster.scale(jobs=1)
            client.wait_for_workers(3, timeout=120)
            facts = worker_facts(client)
            assert sorted(f["node"] for f in facts.values()) == ["n1", "n2", "n3"], facts
            assert len({f["job"] for f in facts.values()}) == 1
            jobs = squeue("nodes-three")
            assert list(jobs.values()) == ["RUNNING 3"], jobs
            (job_name,) = cluster.workers  # one spec: the job
            assert sorted(facts) == [f"{job_name}-{n}" for n in range(3)]
            assert cluster.command_counts["submit"] == 1

            cluster.scale(0)
            assert wait_until(lambda: not client.scheduler_info()["workers"], timeout=60)
            assert wait_until(lambda: not squeue("nodes-three"), timeout=60), squeue("nodes-three")
            assert cluster.command_counts["submit"] == 1


def test_nodes_a_lost_node_ends_and_replaces_the_job(slurm_multi, tmp_path):
    with dask.config.set(quick_polling("slurm", "500ms", "2s")):
        with (
            three_node_cluster("nodes-lost", tmp_path) as cluster,
            Client(cluster) as client,
        ):
            cluster.scale(jobs=1)
            client.wait_for_workers(3, timeout=120)
            facts = worker_facts(client)
            (first_job,) = {f["job"] for f in facts.values()}
            on_n2 = next(f for f in facts.values() if f["node"] == "n2")
            # the srun task of node n2 is its worker's nanny (exec'd): kill it, as a node
            # crash would end it
            os.kill(int(on_n2["nanny_pid"]), signal.SIGKILL)

            def replaced() -> bool:
                now = worker_facts(client)
                return len(now) == 3 and {f["job"] for f in now.values()} == {
                    next(iter({f["job"] for f in now.values()}))
                } != {first_job}

            assert wait_until(replaced, timeout=180), worker_facts(client)
            assert first_job not in squeue("nodes-lost")  # the old job ended whole
            assert len(squeue("nodes-lost")) == 1
            assert cluster.command_counts["submit"] == 2
            assert sorted(f["node"] for f in worker_facts(client).values()) == ["n1", "n2", "n3"]
        assert wait_until(lambda: not squeue("nodes-lost"), timeout=60)


def test_nodes_launcher_failing_always_is_explained_and_bounded(slurm_multi, tmp_path):
    """A fake ``srun`` ahead of the real one on the jobs' PATH (sbatch exports the
    submitting environment) fails at once: each job ends before its workers connect, and
    after max-consecutive-failures of them the cluster stops and says why."""
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\necho 'srun: error: fake launcher failure' >&2\nexit 7\n")
    os.chmod(fake / "srun", 0o755)
    settings = {
        **quick_polling("slurm", "500ms", "2s"),
        "jobqueue.slurm.max-consecutive-failures": 2,
    }
    with dask.config.set(settings):
        with SLURMCluster(
            cores=1,
            memory="500MB",
            processes=1,
            nodes=2,
            queue="cpu",
            walltime="00:10:00",
            job_name="nodes-fail",
            log_directory=str(tmp_path),
            job_script_prologue=[f"export PATH={fake}:$PATH"],
            scheduler_options=NO_DASHBOARD,
        ) as cluster:
            cluster.scale(jobs=1)
            with pytest.raises(JobFailedError) as info:
                cluster.wait_for_workers(2, timeout=120)
            message = str(info.value)
            assert "2 jobs in a row ended before their workers connected" in message
            assert "srun: error: fake launcher failure" in message
            assert cluster.command_counts["submit"] == 2
        assert wait_until(lambda: not squeue("nodes-fail"), timeout=60)
