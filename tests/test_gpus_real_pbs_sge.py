"""GPUs and multi-node jobs on the real OpenPBS (``pytest -E pbs``, ``/opt/pbs/bin`` first on
PATH) and the real Grid Engine (``pytest -E sge``).

The beds (``ci/pbs/run.sh``, ``ci/sge/run.sh``) have one host with fake GPUs: PBS 3 vnodes of
2 GPUs each as the site resource ``ngpus`` (each vnode with a ``resources_available.host`` of
its own, so ``place=scatter`` puts the chunks of a ``nodes=`` job on distinct vnodes), Grid
Engine 2 GPUs as the consumable complex ``gpu``. Neither sets
``CUDA_VISIBLE_DEVICES`` (PBS would only with its cgroups hook), so the job script numbers the
devices ``0..gpus-1``, one per worker. ``nodes=2`` on Grid Engine runs through the bed's
parallel environment ``djq_pe``: tightly integrated (``qrsh -inherit``), and its
``start_proc_args`` lists each slot of ``$PE_HOSTFILE`` as a host line of its own, since the
bed has one host (see ``ci/sge/run.sh``); so two "nodes" are two ``qrsh -inherit`` tasks on
that host.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import xml.etree.ElementTree as ET

import dask
import pytest
from distributed import Client

from dask_jobqueue import PBSCluster, SGECluster

from .scheduler_suite import NO_DASHBOARD
from .waiting import quick_polling, wait_until


def run(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout


def pbs_live_jobs(job_name: str) -> dict[str, dict]:
    """Our PBS jobs of this name (the engine appends its tag) queued, running or exiting."""
    jobs = json.loads(run(["qstat", "-f", "-F", "json"]) or "{}").get("Jobs", {})
    return {
        job_id: info
        for job_id, info in jobs.items()
        if str(info.get("Job_Name", "")).startswith(f"{job_name}-")
        and info.get("job_state") in ("Q", "R", "E", "H")
    }


def sge_live_jobs(job_name: str) -> set[str]:
    """Ids of our Grid Engine jobs of this name still listed by qstat (the tag is a job
    context variable here, not part of the name)."""
    root = ET.fromstring(run(["qstat", "-xml"]))
    return {
        (entry.findtext("JB_job_number") or "").strip()
        for entry in root.iter("job_list")
        if (entry.findtext("JB_name") or "").strip() == job_name
    }


def worker_facts(client: Client, job_variable: str) -> dict[str, dict[str, str | None]]:
    """Worker name -> what its process sees: its batch job, CUDA_VISIBLE_DEVICES, pids.
    A worker that goes away meanwhile (a job ending) is left out."""

    def facts() -> dict[str, str | None]:
        return {
            "job": os.environ.get(job_variable),
            "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "task": os.environ.get("PBS_TASKNUM"),
            "nanny_pid": str(os.getppid()),
        }

    by_address = client.run(facts, on_error="ignore")
    names = {a: str(w["name"]) for a, w in client.scheduler_info()["workers"].items()}
    return {names[a]: f for a, f in by_address.items() if a in names}


def assert_two_gpu_workers(client: Client, job_variable: str) -> None:
    client.wait_for_workers(2, timeout=120)
    facts = worker_facts(client, job_variable)
    assert sorted(f["cuda"] for f in facts.values()) == ["0", "1"], facts
    assert len({f["job"] for f in facts.values()}) == 1, facts  # one batch job
    workers = client.scheduler_info()["workers"].values()
    assert [w["resources"] for w in workers] == [{"GPU": 1}, {"GPU": 1}]
    # GPU tasks run there, each on a worker seeing one device
    devices = client.gather(
        [
            client.submit(lambda i: os.environ["CUDA_VISIBLE_DEVICES"], i, resources={"GPU": 1})
            for i in range(4)
        ]
    )
    assert set(devices) <= {"0", "1"}


@pytest.fixture
def pbs_on_path():
    if "pbs_version" not in run(["qstat", "--version"]):
        pytest.fail("qstat on PATH is not PBS's: put /opt/pbs/bin first on PATH")


@pytest.mark.env("pbs")
def test_pbs_gpus_two_workers_one_device_each(pbs_on_path, tmp_path):
    with dask.config.set(quick_polling("pbs", "500ms", "2s")):
        with (
            PBSCluster(
                cores=2,
                memory="1GB",
                gpus=2,
                walltime="00:10:00",
                job_name="gpus-pbs",
                log_directory=str(tmp_path),
                scheduler_options=NO_DASHBOARD,
            ) as cluster,
            Client(cluster) as client,
        ):
            assert "#PBS -l select=1:ncpus=2:mem=954MB:ngpus=2" in cluster.job_script()
            cluster.scale(jobs=1)
            assert_two_gpu_workers(client, "PBS_JOBID")
            (info,) = pbs_live_jobs("gpus-pbs").values()
            # the server took the request and the scheduler granted it from the node's ngpus
            assert info["Resource_List"]["ngpus"] == 2
            assert "ngpus=2" in info["exec_vnode"]
        assert wait_until(lambda: not pbs_live_jobs("gpus-pbs"), timeout=60)


@pytest.mark.env("pbs")
def test_pbs_nodes_with_gpus_two_workers_per_vnode_one_device_each(pbs_on_path, tmp_path):
    # nodes=2, gpus=2: 2 chunks of ngpus=2 on 2 distinct vnodes, 2 workers on each (one pbsdsh
    # task per chunk), each worker seeing one of its vnode's devices 0 and 1
    with dask.config.set(quick_polling("pbs", "500ms", "2s")):
        with (
            PBSCluster(
                cores=2,
                memory="1GB",
                gpus=2,
                nodes=2,
                walltime="00:10:00",
                job_name="nodes-gpus-pbs",
                log_directory=str(tmp_path),
                scheduler_options=NO_DASHBOARD,
            ) as cluster,
            Client(cluster) as client,
        ):
            script = cluster.job_script()
            assert "#PBS -l select=2:ncpus=2:mem=954MB:ngpus=2\n#PBS -l place=scatter\n" in script
            cluster.scale(jobs=1)
            client.wait_for_workers(4, timeout=120)
            facts = worker_facts(client, "PBS_JOBID")
            (job_name,) = cluster.workers
            assert sorted(facts) == [f"{job_name}-{n}-{i}" for n in range(2) for i in range(2)]
            (job_id,) = {f["job"] for f in facts.values()}  # one batch job
            for node in range(2):
                mine = [f for name, f in facts.items() if name.startswith(f"{job_name}-{node}-")]
                assert sorted(f["cuda"] for f in mine) == ["0", "1"], facts
                assert len({f["task"] for f in mine}) == 1, facts  # one pbsdsh task per node
            assert len({f["task"] for f in facts.values()}) == 2, facts
            workers = client.scheduler_info()["workers"].values()
            assert [w["resources"] for w in workers] == [{"GPU": 1}] * 4
            live = pbs_live_jobs("nodes-gpus-pbs")
            assert set(live) == {job_id}
            info = live[job_id]
            assert info["Resource_List"]["ngpus"] == 4  # the job's sum over its chunks
            chunks = [c.strip("()").split(":") for c in info["exec_vnode"].split("+")]
            # one chunk of 2 GPUs on each of 2 distinct vnodes
            assert len(chunks) == 2 and len({c[0] for c in chunks}) == 2, info["exec_vnode"]
            assert all("ngpus=2" in c[1:] for c in chunks), info["exec_vnode"]
        assert wait_until(lambda: not pbs_live_jobs("nodes-gpus-pbs"), timeout=60)


@pytest.mark.env("sge")
def test_sge_gpus_two_workers_one_device_each(tmp_path):
    with dask.config.set(quick_polling("sge", "500ms", "2s")):
        with (
            SGECluster(
                cores=2,
                memory="1GB",
                gpus=2,
                walltime="00:10:00",
                job_name="gpus-sge",
                log_directory=str(tmp_path),
                scheduler_options=NO_DASHBOARD,
            ) as cluster,
            Client(cluster) as client,
        ):
            assert "#$ -l gpu=2" in cluster.job_script()
            cluster.scale(jobs=1)
            assert_two_gpu_workers(client, "JOB_ID")
            (job_id,) = sge_live_jobs("gpus-sge")
            # the consumable is booked against the exec host's gpu=2
            assert "gpu=2" in run(["qstat", "-j", job_id])
            host = run(["qstat", "-F", "gpu", "-q", "all.q"])
            assert "hc:gpu=0" in host, host
        assert wait_until(lambda: not sge_live_jobs("gpus-sge"), timeout=60)


@pytest.fixture
def sge_nodes_cluster(tmp_path):
    with dask.config.set(quick_polling("sge", "500ms", "2s")):
        with SGECluster(
            cores=1,
            memory="500MB",
            processes=1,
            nodes=2,
            parallel_environment="djq_pe",
            walltime="00:10:00",
            job_name="nodes-sge",
            log_directory=str(tmp_path),
            scheduler_options=NO_DASHBOARD,
        ) as cluster:
            yield cluster
    assert wait_until(lambda: not sge_live_jobs("nodes-sge"), timeout=60)


@pytest.mark.env("sge")
def test_sge_nodes_one_job_two_workers_retired_together(sge_nodes_cluster):
    cluster = sge_nodes_cluster
    assert "#$ -pe djq_pe 2" in cluster.job_script()
    with Client(cluster) as client:
        cluster.scale(jobs=1)
        client.wait_for_workers(2, timeout=120)
        seen = worker_facts(client, "JOB_ID")
        (job_name,) = cluster.workers
        assert sorted(seen) == [f"{job_name}-0", f"{job_name}-1"]
        (job_id,) = sge_live_jobs("nodes-sge")
        assert {f["job"] for f in seen.values()} == {job_id}  # one batch job
        # each worker runs under a task of its own that the execd started (qrsh -inherit):
        # the nearest sge_shepherd above each is a different one
        shepherds = {nearest_shepherd(int(f["nanny_pid"])) for f in seen.values()}
        assert len(shepherds) == 2 and None not in shepherds, shepherds
        cluster.scale(0)
        assert wait_until(lambda: not client.scheduler_info()["workers"], timeout=60)
        assert wait_until(lambda: not sge_live_jobs("nodes-sge"), timeout=60)
        assert cluster.command_counts["submit"] == 1


@pytest.mark.env("sge")
def test_sge_nodes_a_lost_node_ends_and_replaces_the_job(sge_nodes_cluster):
    cluster = sge_nodes_cluster
    with Client(cluster) as client:
        cluster.scale(jobs=1)
        client.wait_for_workers(2, timeout=120)
        seen = worker_facts(client, "JOB_ID")
        (first_job,) = {f["job"] for f in seen.values()}
        (job_name,) = cluster.workers
        os.kill(int(seen[f"{job_name}-1"]["nanny_pid"]), signal.SIGKILL)

        def replaced() -> bool:
            now = worker_facts(client, "JOB_ID")
            jobs = {f["job"] for f in now.values()}
            return len(now) == 2 and len(jobs) == 1 and first_job not in jobs

        assert wait_until(replaced, timeout=180), worker_facts(client, "JOB_ID")
        assert first_job not in sge_live_jobs("nodes-sge")
        assert cluster.command_counts["submit"] == 2


def nearest_shepherd(pid: int) -> int | None:
    """Pid of the nearest ``sge_shepherd`` process above ``pid``, if any."""
    while pid > 1:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
        pid = int(text[text.rindex(")") + 2 :].split()[1])
        with open(f"/proc/{pid}/comm") as comm:
            if comm.read().strip() == "sge_shepherd":
                return pid
    return None


@pytest.mark.env("sge")
def test_sge_nodes_with_gpus_book_the_complex_per_slot(tmp_path):
    # gpus=1 on each of 2 nodes: "-l gpu=1 -pe djq_pe 2", which Grid Engine books once per
    # slot: both GPUs of the host (a "-l gpu=2" here would ask for 4 and never run)
    with dask.config.set(quick_polling("sge", "500ms", "2s")):
        with (
            SGECluster(
                cores=1,
                memory="500MB",
                gpus=1,
                nodes=2,
                parallel_environment="djq_pe",
                walltime="00:10:00",
                job_name="nodes-gpus-sge",
                log_directory=str(tmp_path),
                scheduler_options=NO_DASHBOARD,
            ) as cluster,
            Client(cluster) as client,
        ):
            script = cluster.job_script()
            assert "#$ -l gpu=1" in script and "#$ -pe djq_pe 2" in script
            cluster.scale(jobs=1)
            client.wait_for_workers(2, timeout=120)
            facts = worker_facts(client, "JOB_ID")
            # each node's one worker sees that node's device 0
            assert [f["cuda"] for f in facts.values()] == ["0", "0"], facts
            workers = client.scheduler_info()["workers"].values()
            assert [w["resources"] for w in workers] == [{"GPU": 1}, {"GPU": 1}]
            host = run(["qstat", "-F", "gpu", "-q", "all.q"])
            assert "hc:gpu=0" in host, host
        assert wait_until(lambda: not sge_live_jobs("nodes-gpus-sge"), timeout=60)
