"""Slurm: job script, memory rounding, parsers on recorded real outputs, and -E slurm runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from dask_jobqueue import SLURMCluster
from dask_jobqueue.slurm import SLURMJob, parse_sacct, parse_squeue, slurm_format_bytes_ceil
from dask_jobqueue.tracker import JobTracker
from dask_jobqueue.tracking import JobState

from .fakes import engine_with, query
from .scheduler_suite import Backend, SchedulerSuite, run

DATA = Path(__file__).parent / "data" / "slurm"


def test_header_and_script():
    job = SLURMJob(
        "tcp://127.0.0.1:8786",
        name="w-0",
        cores=8,
        memory="28GB",
        processes=4,
        queue="regular",
        account="acct",
        walltime="02:00:00",
        job_extra_directives=["--exclusive"],
        job_script_prologue=["module load python"],
        job_script_epilogue=["echo bye"],
    )
    lines = job.job_script().splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert lines[2:12] == [
        "#SBATCH -J dask-worker",
        "#SBATCH -p regular",
        "#SBATCH -A acct",
        "#SBATCH -n 1",
        "#SBATCH -N 1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=27G",
        "#SBATCH -t 02:00:00",
        "#SBATCH --exclusive",
        "module load python",
    ]
    assert lines[-1] == "echo bye"


def test_job_cpu_and_job_mem_override_the_request():
    job = SLURMJob("tcp://a:1", cores=4, memory="8GB", job_cpu=16, job_mem="64G")
    header = job.job_header
    assert "--cpus-per-task=16" in header and "--mem=64G" in header


@pytest.mark.parametrize(
    "nbytes, expected",
    [
        (28_000_000_000, "27G"),
        (8_000_000_000, "8G"),
        (2**30, "1G"),
        (2**30 + 1, "2G"),
        (500_000_000, "477M"),
        (2**20, "1M"),
        (5000, "5K"),
        (1024, "1K"),
        (100, "1K"),
        (1, "1K"),
    ],
)
def test_slurm_format_bytes_ceil(nbytes, expected):
    assert slurm_format_bytes_ceil(nbytes) == expected


def test_parse_squeue_recorded_mixed_states():
    statuses = parse_squeue((DATA / "squeue_mixed_states_exit_code_sep.txt").read_text())
    assert statuses["13"].state == JobState.RUNNING
    assert (statuses["15"].state, statuses["15"].reason) == (JobState.QUEUED, "Priority")
    assert (statuses["14"].state, statuses["14"].reason) == (JobState.QUEUED, "Resources")
    assert (statuses["12"].state, statuses["12"].reason) == (JobState.HELD, "JobHeldUser")
    assert (statuses["3"].state, statuses["3"].exit_code) == (JobState.FINISHED, 0)
    assert (statuses["4"].state, statuses["4"].exit_code) == (JobState.FAILED, 3)
    assert (statuses["7"].state, statuses["7"].exit_code) == (JobState.FAILED, 127)
    assert statuses["9"].state == JobState.CANCELLED
    assert (statuses["2"].state, statuses["2"].reason) == (JobState.TIMED_OUT, "TimeLimit")


def test_parse_squeue_three_column_form():
    statuses = parse_squeue((DATA / "squeue_mixed_states.txt").read_text())
    assert statuses["12"].state == JobState.HELD
    assert statuses["4"].exit_code is None


def test_parse_squeue_ignores_purged_ids():
    assert parse_squeue((DATA / "squeue_all_purged.txt").read_text()) == {}


def test_parse_sacct_recorded():
    fields = ("JobID", "JobName", "State", "ExitCode", "Start", "End")
    statuses = parse_sacct((DATA / "sacct_finished.txt").read_text(), fields)
    assert (statuses["4"].state, statuses["4"].exit_code) == (JobState.FAILED, 3)
    assert (statuses["7"].state, statuses["7"].exit_code) == (JobState.FAILED, 127)
    assert (statuses["3"].state, statuses["3"].exit_code) == (JobState.FINISHED, 0)
    assert statuses["9"].state == JobState.CANCELLED
    assert statuses["2"].state == JobState.TIMED_OUT


def test_submit_error_messages_are_real():
    text = (DATA / "sbatch_error_invalid_partition.stderr.txt").read_text()
    assert "invalid partition specified: nosuchpart" in text


def _queue_ids() -> set[str]:
    return set(run(["squeue", "-h", "-r", "-o", "%i"]).split())


SLURM = Backend(
    name="slurm",
    cluster_cls=SLURMCluster,
    kwargs={"cores": 1, "memory": "1GB", "processes": 1, "walltime": "00:10:00"},
    queue_ids=_queue_ids,
    cancel_argv=lambda job_id: ["scancel", job_id],
    bad_queue_kwargs={"queue": "nosuchpart"},
    bad_queue_message="invalid partition specified: nosuchpart",
    hold_kwargs={"job_extra_directives": ["--hold"]},
    hold_reason="JobHeldUser",
    short_walltime={"walltime": "00:01:00"},
    walltime_wait=180,
)


@pytest.mark.env("slurm")
class TestRealSlurm(SchedulerSuite):
    backend = SLURM


@pytest.mark.env("slurm")
def test_job_waiting_for_a_full_node_shows_slurms_reason(tmp_path, monkeypatch):
    import dask

    from .scheduler_suite import NO_DASHBOARD, wait_until

    monkeypatch.chdir(tmp_path)
    with dask.config.set({"jobqueue.slurm.poll-interval": "500ms"}):
        # each job takes all 16 CPUs of the CI node: the second one has to wait
        with SLURMCluster(
            cores=1, memory="1GB", job_cpu=16, walltime="00:10:00", scheduler_options=NO_DASHBOARD
        ) as cluster:
            cluster.scale(jobs=2)
            assert wait_until(
                lambda: any(
                    r.state == JobState.QUEUED and r.reason in ("Resources", "Priority")
                    for r in cluster.jobs
                ),
                60,
            ), repr(cluster.jobs)
            assert "queued (" in cluster.jobs_summary()
            ids = {r.job_id for r in cluster.jobs}
        assert wait_until(lambda: not (ids & _queue_ids()), 60)


def test_purged_jobs_are_finished():
    """After MinJobAge squeue no longer lists a job and, without accounting, sacct can't say
    either: once the vanish grace is over the tracker declares it finished (not lost)."""
    squeue_out = (DATA / "squeue_purged_and_running.txt").read_text()  # -j 3,21: 3 is purged
    no_accounting = (DATA / "sacct_no_accounting.stderr.txt").read_text()
    purged_alone = (DATA / "squeue_purged_alone.stderr.txt").read_text()

    def answer(argv):
        if argv[0] == "squeue":
            return squeue_out if "3,21" in argv else (1, purged_alone)
        return (1, no_accounting)

    engine, runner = engine_with(SLURMJob("tcp://a:1", cores=1, memory="1GB"), answer)
    statuses = query(engine, ["3", "21"])
    assert runner.calls == [
        [
            "squeue",
            "-h",
            "-t",
            "all",
            "-r",
            "-j",
            "3,21",
            "-O",
            "JobID:|,ArrayJobID:|,ArrayTaskID:|,State:|,Reason:|,exit_code:|,PreemptTime:|",
        ],
        ["sacct", "-X", "-P", "-n", "-j", "3", "-o", "JobID,State,ExitCode"],
    ]
    assert engine.commands["status"] == 2
    assert set(statuses) == {"21"} and statuses["21"].state == JobState.RUNNING
    # alone, the purged id makes squeue fail ("Invalid job id"): still an answer, not an error
    runner.calls.clear()
    assert query(engine, ["3"]) == {}
    assert [c[0] for c in runner.calls] == ["squeue", "sacct"]

    rule = SLURMJob.vanish
    tracker = JobTracker(rule)
    tracker.add("w-3", "3", workers_expected=1, now=0.0)
    tracker.add("w-21", "21", workers_expected=1, now=0.0)
    tracker.observe({"3": statuses["21"], "21": statuses["21"]}, ["3", "21"], now=1.0)
    # missed by fewer polls than the rule, or for less time: still running
    for now in [2.0 + i for i in range(rule.polls)]:
        _, ended = tracker.observe(statuses, ["3", "21"], now=now)
        assert ended == [] and tracker.get("3").state == JobState.RUNNING
    _, ended = tracker.observe(statuses, ["3", "21"], now=2.0 + rule.seconds)
    assert [(r.job_id, r.state) for r, _ in ended] == [("3", JobState.FINISHED)]
    assert "purged" in ended[0][0].reason
    assert tracker.get("21").state == JobState.RUNNING


def test_log_directory_tilde_is_expanded_in_directives(monkeypatch, tmp_path):
    # sbatch writes "~" literally: the job would fail with JobLaunchFailure (seen on the real
    # Slurm), so the home directory is expanded when the option is resolved.
    monkeypatch.setenv("HOME", str(tmp_path))
    header = SLURMJob("tcp://a:1", cores=1, memory="1GB", log_directory="~/logs").job_header
    assert f"#SBATCH -e {tmp_path}/logs/dask-worker-%J.err" in header
    assert "~" not in header
