"""``nodes=`` on the real OpenPBS (``pytest -E pbs``; ``/opt/pbs/bin`` first on PATH).

The bed has one host: a job of 3 chunks gets them all there, so ``place=scatter`` (one chunk
per host, what ``nodes`` asks on a site) is skipped with ``job_directives_skip``. What is
checked is the launcher: ``pbsdsh -n`` starts one worker on each chunk, named by its index,
the three retire together, and one of them lost ends and replaces the job whole.
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


def live_jobs(job_name: str) -> set[str]:
    """Ids of our jobs of this name (the engine appends its tag to it) that qstat lists as
    queued, running or exiting."""
    done = subprocess.run(
        ["qstat", "-f", "-F", "json"], capture_output=True, text=True, timeout=30, check=False
    )
    jobs = json.loads(done.stdout or "{}").get("Jobs", {})
    return {
        job_id
        for job_id, info in jobs.items()
        if str(info.get("Job_Name", "")).startswith(f"{job_name}-")
        and info.get("job_state") in ("Q", "R", "E", "H")
    }


def facts(client: Client) -> dict[str, dict[str, str | None]]:
    def mine() -> dict[str, str | None]:
        return {
            "job": os.environ.get("PBS_JOBID"),
            "task": os.environ.get("PBS_TASKNUM"),
            "nanny_pid": str(os.getppid()),
        }

    by_address = client.run(mine)
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
            job_directives_skip=["place=scatter"],
            log_directory=str(tmp_path),
            scheduler_options=NO_DASHBOARD,
        ) as cluster:
            yield cluster
    assert wait_until(lambda: not live_jobs("nodes-pbs"), timeout=60), live_jobs("nodes-pbs")


def test_pbs_nodes_one_job_three_workers_retired_together(pbs_cluster):
    cluster = pbs_cluster
    assert "#PBS -l select=3:ncpus=1:mem=477MB" in cluster.job_script()
    with Client(cluster) as client:
        cluster.scale(jobs=1)
        client.wait_for_workers(3, timeout=120)
        seen = facts(client)
        (job_name,) = cluster.workers
        assert sorted(seen) == [f"{job_name}-{n}" for n in range(3)]
        assert len({f["job"] for f in seen.values()}) == 1  # one batch job
        assert len({f["task"] for f in seen.values()}) == 3  # three pbsdsh tasks
        assert len(live_jobs("nodes-pbs")) == 1
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
