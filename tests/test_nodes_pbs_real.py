"""``nodes=`` on the real OpenPBS (``pytest -E pbs``; ``/opt/pbs/bin`` first on PATH).

The bed (``ci/pbs/run.sh``) has one host whose mom reports 3 vnodes, each with a
``resources_available.host`` of its own, so ``place=scatter`` (one chunk per host, what
``nodes`` asks) spreads a job of 3 chunks over the 3 vnodes as over 3 hosts. Checked: the
job's ``exec_vnode`` has one chunk on each vnode, ``pbsdsh -n`` starts one worker per chunk
(a task each, named by its index), the three retire together, and one of them lost ends and
replaces the job whole. The mom is the same for all 3 (one host): ``exec_host`` names it
three times and a task's environment does not name its vnode, so which vnode runs which task
is PBS's (``pbsdsh -n i`` runs on the job's i-th chunk).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess

import dask
import pytest
from distributed import Client

from dask_jobqueue import PBSCluster

from .scheduler_suite import NO_DASHBOARD
from .waiting import quick_polling, wait_until

pytestmark = pytest.mark.env("pbs")


def live_jobs(job_name: str) -> dict[str, dict]:
    """Our jobs of this name (the engine appends its tag to it) that qstat lists as queued,
    running or exiting: id -> qstat's attributes."""
    done = subprocess.run(
        ["qstat", "-f", "-F", "json"], capture_output=True, text=True, timeout=30, check=False
    )
    jobs = json.loads(done.stdout or "{}").get("Jobs", {})
    return {
        job_id: info
        for job_id, info in jobs.items()
        if str(info.get("Job_Name", "")).startswith(f"{job_name}-")
        and info.get("job_state") in ("Q", "R", "E", "H")
    }


def chunks(exec_vnode: str) -> list[tuple[str, dict[str, str]]]:
    """``exec_vnode`` (``(v[0]:ncpus=1:mem=488448kb)+(v[1]:ncpus=1)``) as (vnode, resources)
    pairs, one per chunk."""
    out = []
    for chunk in exec_vnode.split("+"):
        vnode, *resources = chunk.strip("()").split(":")
        out.append((vnode, dict(r.split("=", 1) for r in resources)))
    return out


def vnodes_of_this_host() -> set[str]:
    """The vnodes that can run jobs: those with CPUs (the natural vnode of the bed's mom has
    none)."""
    nodes = json.loads(
        subprocess.run(
            ["pbsnodes", "-av", "-F", "json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    )["nodes"]
    return {
        name
        for name, node in nodes.items()
        if int(node.get("resources_available", {}).get("ncpus", 0)) > 0
    }


def facts(client: Client) -> dict[str, dict[str, str | None]]:
    def mine() -> dict[str, str | None]:
        return {
            "job": os.environ.get("PBS_JOBID"),
            "task": os.environ.get("PBS_TASKNUM"),
            "nanny_pid": str(os.getppid()),
        }

    by_address = client.run(mine, on_error="ignore")  # a worker may be leaving meanwhile
    names = {a: str(w["name"]) for a, w in client.scheduler_info()["workers"].items()}
    return {names[a]: f for a, f in by_address.items() if a in names}


@pytest.fixture
def pbs_cluster(tmp_path):
    if (
        "pbs_version"
        not in subprocess.run(
            ["qstat", "--version"], capture_output=True, text=True, check=False
        ).stdout
    ):
        pytest.fail("qstat on PATH is not PBS's: put /opt/pbs/bin first on PATH")
    with dask.config.set(quick_polling("pbs", "500ms", "2s")):
        with PBSCluster(
            cores=1,
            memory="500MB",
            processes=1,
            nodes=3,
            walltime="00:10:00",
            job_name="nodes-pbs",
            log_directory=str(tmp_path),
            scheduler_options=NO_DASHBOARD,
        ) as cluster:
            yield cluster
    assert wait_until(lambda: not live_jobs("nodes-pbs"), timeout=60), live_jobs("nodes-pbs")


def test_pbs_nodes_one_job_three_workers_on_three_vnodes_retired_together(pbs_cluster):
    cluster = pbs_cluster
    script = cluster.job_script()
    assert "#PBS -l select=3:ncpus=1:mem=477MB\n#PBS -l place=scatter\n" in script
    vnodes = vnodes_of_this_host()
    assert len(vnodes) >= 3, f"the bed has fewer than 3 vnodes with CPUs: {vnodes}"
    with Client(cluster) as client:
        cluster.scale(jobs=1)
        client.wait_for_workers(3, timeout=120)
        seen = facts(client)
        (job_name,) = cluster.workers
        assert sorted(seen) == [f"{job_name}-{n}" for n in range(3)]
        (job_id,) = {f["job"] for f in seen.values()}  # one batch job
        assert len({f["task"] for f in seen.values()}) == 3  # three pbsdsh tasks
        live = live_jobs("nodes-pbs")
        assert set(live) == {job_id}
        info = live[job_id]
        assert info["Resource_List"]["place"] == "scatter"
        placed = chunks(info["exec_vnode"])
        # one chunk on each of 3 distinct vnodes of the bed
        assert len(placed) == 3 and len({v for v, _ in placed}) == 3, info["exec_vnode"]
        assert {v for v, _ in placed} <= vnodes, (placed, vnodes)
        assert [r["ncpus"] for _, r in placed] == ["1", "1", "1"], placed
        cluster.scale(0)
        assert wait_until(lambda: not client.scheduler_info()["workers"], timeout=60)
        assert wait_until(lambda: not live_jobs("nodes-pbs"), timeout=60)
        assert cluster.command_counts["submit"] == 1


def test_pbs_nodes_a_lost_node_ends_and_replaces_the_job(pbs_cluster):
    cluster = pbs_cluster
    with Client(cluster) as client:
        cluster.scale(jobs=1)
        client.wait_for_workers(3, timeout=120)
        seen = facts(client)
        (first_job,) = {f["job"] for f in seen.values()}
        (job_name,) = cluster.workers
        os.kill(int(seen[f"{job_name}-1"]["nanny_pid"]), signal.SIGKILL)

        def replaced() -> bool:
            now = facts(client)
            jobs = {f["job"] for f in now.values()}
            return len(now) == 3 and len(jobs) == 1 and first_job not in jobs

        assert wait_until(replaced, timeout=180), facts(client)
        assert first_job.split(".")[0] not in {j.split(".")[0] for j in live_jobs("nodes-pbs")}
        assert cluster.command_counts["submit"] == 2
