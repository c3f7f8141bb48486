"""The multi-node Slurm test bed (``ci/slurm-multi/run.sh``, ``pytest -E slurm-multi``).

Three nodes n1..n3 (one ``slurmd`` each, all on this host), 2 fake GPUs per node, partitions
cpu (default), gpu, low (requeued on preemption, GraceTime=20) and high. These tests prove the
bed itself and that the current code works on it, by outcomes: workers that connect, the
environment a job sees, where srun runs its tasks, and what a preempted job goes through.

With ``DASK_JOBQUEUE_RECORD_DIR`` set, the preemption test writes the outputs it saw there
(the files of ``tests/data/slurm_multi/`` were recorded that way).
"""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dask
import pytest
from distributed import Client

from dask_jobqueue import SLURMCluster

from .scheduler_suite import NO_DASHBOARD
from .waiting import quick_polling, wait_until

pytestmark = pytest.mark.env("slurm-multi")

ACTIVE = "pending,running,suspended,completing,configuring"


def sh(argv: list[str], timeout: float = 30) -> str:
    """Stdout of a Slurm command (SLURM_CONF comes from the environment the fixture set)."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{argv}: exit {done.returncode}: {done.stderr.strip()}"
    return done.stdout


def sbatch(*args: str) -> str:
    return sh(["sbatch", "--parsable", *args]).strip().split(";")[0]


def active_jobs() -> dict[str, str]:
    """Job id (and array job id) -> state of every job still pending/running/completing."""
    states = {}
    for line in sh(["squeue", "-h", "-r", "-t", ACTIVE, "-o", "%i %F %T"]).splitlines():
        job_id, array_id, state = line.split()
        states[job_id] = states[array_id] = state
    return states


def job_fields(job_id: str) -> dict[str, str]:
    """``scontrol show job`` as KEY -> VALUE (first occurrence of each key)."""
    fields: dict[str, str] = {}
    for word in sh(["scontrol", "-o", "show", "job", job_id]).split():
        key, sep, value = word.partition("=")
        if sep:
            fields.setdefault(key, value)
    return fields


def cancel(ids: list[str]) -> None:
    """Cancel only our own jobs, and wait until they have left the queue."""
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30, check=False)
        assert wait_until(lambda: not set(ids) & set(active_jobs()), 60), active_jobs()


@pytest.fixture
def bed(slurm_multi):
    with dask.config.set(quick_polling("slurm", "500ms", "2s")):
        yield slurm_multi


def test_two_workers_on_the_multinode_cluster_and_nothing_left_after_close(bed, no_stray_processes):
    with SLURMCluster(
        cores=1, memory="500MB", walltime="00:10:00", scheduler_options=NO_DASHBOARD
    ) as cluster:
        cluster.scale(2)
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=120)
            nodes = client.run(lambda: os.environ["SLURMD_NODENAME"])
            confs = client.run(lambda: os.environ.get("SLURM_CONF"))
        ids = [record.job_id for record in cluster.jobs]
        assert len(nodes) == 2 and set(nodes.values()) <= {"n1", "n2", "n3"}, nodes
        # slurmd sets SLURM_CONF in the job: the jobs ran on this cluster's nodes
        assert set(confs.values()) == {bed}, confs
        assert set(ids) <= set(active_jobs()), (ids, active_jobs())
    bases = {job_id.split("_")[0] for job_id in ids}
    assert wait_until(lambda: not bases & set(active_jobs()), 60), active_jobs()


def test_gpu_partition_job_sees_both_gpus(bed, no_stray_processes):
    with SLURMCluster(
        cores=1,
        memory="500MB",
        walltime="00:10:00",
        queue="gpu",
        job_extra_directives=["--gpus=2"],
        scheduler_options=NO_DASHBOARD,
    ) as cluster:
        cluster.scale(1)
        with Client(cluster) as client:
            client.wait_for_workers(1, timeout=120)
            worker = next(iter(client.scheduler_info()["workers"]))
            seen = client.submit(
                lambda: os.environ.get("CUDA_VISIBLE_DEVICES"), workers=[worker], pure=False
            ).result(timeout=60)
        (job_id,) = [record.job_id for record in cluster.jobs]
        fields = job_fields(job_id)
    assert seen == "0,1"
    assert fields["Partition"] == "gpu"
    assert fields["TresPerJob"] == "gres:gpu:2", fields


def test_three_node_job_runs_srun_on_n1_n2_n3(bed, tmp_path):
    out = tmp_path / "nodes.out"
    job_id = sbatch(
        "-N",
        "3",
        "--ntasks-per-node=1",
        "-t",
        "00:02:00",
        "-o",
        str(out),
        "--wrap",
        "srun bash -c 'echo $SLURMD_NODENAME $SLURM_PROCID'",
    )
    try:
        assert wait_until(lambda: job_fields(job_id)["JobState"] == "COMPLETED", 60), job_fields(
            job_id
        )
    finally:
        cancel([job_id] if job_id in active_jobs() else [])
    lines = sorted(out.read_text().splitlines())
    assert [line.split()[0] for line in lines] == ["n1", "n2", "n3"], lines
    assert sorted(line.split()[1] for line in lines) == ["0", "1", "2"], lines


PREEMPT_FORMAT = "JobID:|,Partition:|,State:|,Reason:|,PreemptTime:|,NodeList:"


def test_high_job_preempts_and_requeues_one_low_job(bed, tmp_path):
    """A low job on every node, then a high job wanting a whole node: one low job gets a
    PreemptTime while still RUNNING, and after GraceTime + KillWait it is requeued: the same
    id PENDING again with Restarts=1; the other low jobs are untouched."""
    script = tmp_path / "low.sh"
    script.write_text("#!/bin/bash\necho restart=${SLURM_RESTART_COUNT:-0}\nexec sleep 600\n")
    common = ["-t", "00:15:00", "-o", str(tmp_path / "%j.out"), "--exclusive", "-N", "1"]
    low = [sbatch("-p", "low", "-J", f"low{i}", *common, str(script)) for i in range(3)]
    high: list[str] = []
    try:
        assert wait_until(lambda: all(job_fields(i)["JobState"] == "RUNNING" for i in low), 60), [
            job_fields(i)["JobState"] for i in low
        ]
        assert sorted(job_fields(i)["NodeList"] for i in low) == ["n1", "n2", "n3"]

        t_submit = time.monotonic()
        high.append(sbatch("-p", "high", "-J", "high", *common, "--wrap", "sleep 30"))
        timeline = [(0.0, f"submitted high job {high[0]} (-p high -N 1 --exclusive)")]

        def preempted() -> list[str]:
            # "None" until chosen; a requeued job has no PreemptTime at all
            return [i for i in low if job_fields(i).get("PreemptTime", "None") != "None"]

        chosen = wait_until(preempted, 30, 0.2)
        t_chosen = time.monotonic() - t_submit
        assert len(chosen) == 1, [job_fields(i) for i in low]
        victim = chosen[0]
        at_preempt = job_fields(victim)
        # squeue says nothing about it but PreemptTime: still RUNNING, reason None
        assert (at_preempt["JobState"], at_preempt["Reason"]) == ("RUNNING", "None")
        squeue_at_preempt = sh(["squeue", "-j", ",".join(low), "-O", PREEMPT_FORMAT])
        scontrol_at_preempt = sh(["scontrol", "show", "job", victim])
        timeline.append((t_chosen, f"low job {victim} has PreemptTime, state RUNNING"))

        states = [("RUNNING", t_chosen)]

        def requeued() -> bool:
            state = job_fields(victim)["JobState"]
            if state != states[-1][0]:
                states.append((state, time.monotonic() - t_submit))
            return state == "PENDING"

        assert wait_until(requeued, 90, 0.2), states
        timeline += [(t, f"low job {victim} {state}") for state, t in states[1:]]
        after = job_fields(victim)
        assert after["Restarts"] == "1" and after["JobId"] == victim, after
        assert after["Reason"] == "BeginTime", after
        scontrol_requeued = sh(["scontrol", "show", "job", victim])
        squeue_requeued = sh(["squeue", "-j", ",".join(low), "-O", PREEMPT_FORMAT])
        # the high job got the node, the other low jobs never stopped
        assert wait_until(lambda: job_fields(high[0])["JobState"] == "RUNNING", 30)
        assert job_fields(high[0])["NodeList"] == at_preempt["NodeList"]
        timeline.append((time.monotonic() - t_submit, f"high job {high[0]} RUNNING"))
        for other in set(low) - {victim}:
            fields = job_fields(other)
            assert (fields["JobState"], fields["Restarts"]) == ("RUNNING", "0"), fields
        # grace (20 s) plus up to a 30 s sweep, then KillWait: the measured window
        requeue_seconds = next(t for state, t in states if state == "PENDING")
        assert 20 <= requeue_seconds <= 80, states
    finally:
        cancel(low + high)
    record = os.environ.get("DASK_JOBQUEUE_RECORD_DIR")
    if record:
        _record(
            Path(record),
            {
                "squeue_preempt_running.txt": squeue_at_preempt,
                "scontrol_preempt_running.txt": scontrol_at_preempt,
                "squeue_requeued_pending.txt": squeue_requeued,
                "scontrol_requeued_pending.txt": scontrol_requeued,
            },
            timeline,
        )


def test_watchdog_of_a_killed_client_cancels_on_the_multinode_cluster(bed, tmp_path):
    """The watchdog inherits SLURM_CONF: when its owner is killed it cancels the jobs on this
    cluster (an scancel on the wrong cluster would leave them running)."""
    kwargs = (
        '{"cores": 1, "memory": "500MB", "walltime": "00:10:00", '
        '"scheduler_options": {"dashboard_address": ":0"}}'
    )
    client = subprocess.Popen(
        [sys.executable, "-m", "tests.orphan_client", "dask_jobqueue", "SLURMCluster", "2", kwargs],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    try:
        assert client.stdout is not None
        line = client.stdout.readline().split()
        assert line[:1] == ["READY"], line
        ids = line[3:]
        bases = {job_id.split("_")[0] for job_id in ids}
        assert len(ids) == 2 and bases <= set(active_jobs()), (ids, active_jobs())
    finally:
        client.send_signal(signal.SIGKILL)
        client.wait(30)
    assert wait_until(lambda: not bases & set(active_jobs()), 60), active_jobs()

    # cancelled, not ended by workers that gave up on their dead scheduler. Asked by the
    # array's own id (whatever records of its tasks exist), until the answer is final: a CI
    # run once found no record right after the jobs left the active states
    def final_states() -> set[str]:
        out = sh(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(sorted(bases)), "-o", "%i %T"])
        return {line.split()[1] for line in out.splitlines()}

    assert wait_until(lambda: final_states() == {"CANCELLED"}, 30), final_states()


def _record(directory: Path, outputs: dict[str, str], timeline: list[tuple[float, str]]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in outputs.items():
        (directory / name).write_text(text)
    version = sh(["sinfo", "--version"]).strip()
    lines = [
        f"# Recorded {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M:%S} UTC, "
        f"{version}, cluster of ci/slurm-multi/run.sh",
        "# by: DASK_JOBQUEUE_RECORD_DIR=... pytest -E slurm-multi tests/test_multinode_bed.py"
        " -k preempts",
        "# seconds after `sbatch -p high -N 1 --exclusive --wrap 'sleep 30'`, with a",
        "# `sbatch -p low -N 1 --exclusive low.sh` (sleep 600) running on each of n1..n3",
    ]
    lines += [f"{t:6.1f}  {what}" for t, what in timeline]
    (directory / "preemption_timeline.txt").write_text("\n".join(lines) + "\n")
