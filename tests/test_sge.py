"""Grid Engine: job script, parsers on recorded real SGE 8.1.9 outputs, the status query
strategy (with fake commands), and -E sge runs against a real Son of Grid Engine."""

from __future__ import annotations

import asyncio
import getpass
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from dask_jobqueue import SGECluster
from dask_jobqueue._shell import CommandError, CommandResult, CommandRunner
from dask_jobqueue.engine import BatchSystem
from dask_jobqueue.policy import FailurePolicy
from dask_jobqueue.sge import (
    SGEJob,
    parse_qacct,
    parse_qacct_records,
    parse_qstat_xml,
    parse_qstat_xml_j,
    qacct_status,
    sge_state,
)
from dask_jobqueue.tracker import JobTracker
from dask_jobqueue.tracking import JobState

from .fakes import cancel, engine_with, query
from .scheduler_suite import Backend, SchedulerSuite, run

DATA = Path(__file__).parent / "data" / "sge"


def _read(name: str) -> str:
    return (DATA / name).read_text()


# ---------------------------------------------------------------------------- job script


def test_header_and_script():
    job = SGEJob(
        "tcp://127.0.0.1:8786",
        name="w-0",
        cores=4,
        memory="8GB",
        processes=2,
        queue="all.q",
        project="proj",
        resource_spec="h_vmem=4G,mem_req=4G",
        walltime="02:00:00",
        job_extra_directives=["-pe smp 4"],
        job_script_prologue=["module load python"],
    )
    lines = job.job_script().splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert lines[2:11] == [
        "#$ -N dask-worker",
        "#$ -q all.q",
        "#$ -P proj",
        "#$ -l h_vmem=4G,mem_req=4G",
        "#$ -l h_rt=02:00:00",
        "#$ -cwd",
        "#$ -j y",
        "#$ -pe smp 4",
        "module load python",
    ]
    assert "--nworkers 2" in lines[-1]


def test_minimal_header_and_output_files_in_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    job = SGEJob(cores=1, memory="1GB", job_name="myjob")
    # walltime comes from the packaged jobqueue.yaml default
    assert job.job_header.splitlines() == [
        "#$ -N myjob",
        "#$ -l h_rt=00:30:00",
        "#$ -cwd",
        "#$ -j y",
    ]
    assert job.output_files("42")[0] == tmp_path / "myjob.o42"


def test_log_directory(tmp_path):
    logs = tmp_path / "logs"
    job = SGEJob(cores=1, memory="1GB", log_directory=str(logs))
    header = job.job_header.splitlines()
    assert f"#$ -e {logs}/" in header and f"#$ -o {logs}/" in header
    assert "#$ -j y" in header
    assert job.output_files("7") == [logs / "dask-worker.o7", logs / "dask-worker.e7"]
    assert logs.is_dir()  # created when the job is built, as in 0.9


def test_directives_skip():
    job = SGEJob(cores=1, memory="1GB", queue="q", job_directives_skip=["-q"])
    assert "-q q" not in job.job_header


def test_submit_output_regexp():
    job = SGEJob(cores=1, memory="1GB")
    assert job.job_id_from_submit_output(_read("qsub_plain.txt")) == "138"
    assert job.job_id_from_submit_output(_read("qsub_terse.txt")) == _read("qsub_terse.txt").strip()
    assert job.job_id_from_submit_output(_read("qsub_terse_array.txt")) == "140"
    assert job.job_id_from_submit_output('Your job 4 ("dask-worker-1") has been submitted') == "4"
    out = 'Your job-array 5.1-3:1 ("a9") has been submitted'
    assert job.job_id_from_submit_output(out) == "5"


def test_cancel_command_override():
    class AllMine(SGEJob):
        cancel_command = "qdel -u root"

    job = AllMine(cores=1, memory="1GB")
    assert job.cancel_argv(["1", "2"]) == ["qdel", "-u", "root", "1", "2"]
    job = SGEJob(cores=1, memory="1GB", cancel_command_extra=["-f"])
    assert job.cancel_argv(["3"]) == ["qdel", "-f", "3"]


def test_cluster_job_script():
    with SGECluster(
        cores=1, memory="1GB", queue="short.q", scheduler_options={"dashboard_address": ":0"}
    ) as c:
        assert "#$ -q short.q" in c.job_script()


# ---------------------------------------------------------------------------- parsers


@pytest.mark.parametrize(
    "code, state, reason",
    [
        ("r", JobState.RUNNING, None),
        ("t", JobState.RUNNING, None),
        ("Rr", JobState.RUNNING, None),
        ("qw", JobState.QUEUED, None),
        ("hqw", JobState.HELD, "held"),
        ("hRwq", JobState.HELD, "held"),
        ("s", JobState.HELD, "suspended"),
        ("S", JobState.HELD, "suspended"),
        ("T", JobState.HELD, "suspended"),
        ("Eqw", JobState.FAILED, "error state (Eqw)"),
        ("dr", JobState.CANCELLED, "being deleted (qdel)"),
        ("dt", JobState.CANCELLED, "being deleted (qdel)"),
    ],
)
def test_sge_state(code, state, reason):
    status = sge_state(code)
    assert (status.state, status.reason, status.native_state) == (state, reason, code)


def test_parse_qstat_xml_recorded_mixed_states():
    states = parse_qstat_xml(_read("qstat_xml_mixed.txt"))
    # 15 entries; array tasks are reported one by one: 147 has 3 running, 155 pends 1-5:2
    assert len(states) == 17
    assert states["147.1"] == states["147.3"] == "r" and states["148"] == "r"
    assert states["152"] == "s"
    assert states["146"] == "qw" and states["155.1"] == states["155.5"] == "qw"
    assert "155.2" not in states
    assert states["156"] == "hqw"
    assert states["160"] == "Eqw"
    assert "139" not in states  # finished
    assert "158" not in states and "159" not in states  # other user's jobs
    assert set(parse_qstat_xml(_read("qstat_xml_mixed_all_users.txt"))) >= {"158", "159"}


def test_parse_qstat_xml_empty():
    assert parse_qstat_xml(_read("qstat_xml_empty.txt")) == {}
    assert parse_qstat_xml(_read("qstat_xml_finished.txt")) == {}


def test_parse_qstat_xml_j_reasons():
    reasons, errors = parse_qstat_xml_j(_read("qstat_xml_j_unsatisfiable_pe.txt"))
    assert reasons == {"146": ['cannot run in PE "smp" because it only offers 0 slots']}
    assert errors == {}
    reasons, _ = parse_qstat_xml_j(_read("qstat_xml_j_unsatisfiable_mem.txt"))
    assert reasons["157"][0].startswith("(-l mem_free=1000G) cannot run at host")


def test_parse_qstat_xml_j_falls_back_to_global_messages():
    # the running array job has no message of its own: the global "queue full" one is used
    reasons, _ = parse_qstat_xml_j(_read("qstat_xml_j_running_array.txt"))
    assert reasons["147"] == ['queue instance "all.q@vm" dropped because it is full']


def test_parse_qstat_xml_j_several_ids_and_unknown():
    reasons, _ = parse_qstat_xml_j(_read("qstat_xml_j_two_pending_and_unknown.txt"))
    assert reasons["172"] == ['cannot run in PE "smp" because it only offers 0 slots']
    assert reasons["173"] == []  # "Job is in hold state" is not a reason to report
    assert "99999" not in reasons


def test_parse_qstat_xml_j_error_reason():
    reasons, errors = parse_qstat_xml_j(_read("qstat_xml_j_error.txt"))
    assert errors == {
        "160": 'can\'t open output file "/nonexistent/dir/out": No such file or directory'
    }
    assert "Job is in error state" not in reasons["160"]


def test_parse_qstat_xml_j_without_schedd_job_info_and_missing():
    reasons, errors = parse_qstat_xml_j(_read("qstat_xml_j_schedd_job_info_false.txt"))
    assert reasons == {"146": []} and errors == {}
    assert parse_qstat_xml_j(_read("qstat_xml_j_missing.txt")) == ({}, {})


@pytest.mark.parametrize(
    "name, state, exit_code",
    [
        ("qacct_exit0.txt", JobState.FINISHED, 0),
        ("qacct_exit3.txt", JobState.FAILED, 3),
        ("qacct_h_rt_killed.txt", JobState.TIMED_OUT, 137),
        ("qacct_qdel_running.txt", JobState.CANCELLED, 137),
        ("qacct_nonexistent_python.txt", JobState.FAILED, 127),
        # parallel jobs (nodes=): one record per qrsh -inherit task, the job script's last
        ("qacct_pe_tasks_ok.txt", JobState.FINISHED, 0),
        ("qacct_pe_master_exit3.txt", JobState.FAILED, 3),
        ("qacct_pe_master_exits_first.txt", JobState.FAILED, 3),  # not its killed task's 137
    ],
)
def test_qacct_recorded(name, state, exit_code):
    status = qacct_status(parse_qacct(_read(name)))
    assert (status.state, status.exit_code) == (state, exit_code)


def test_qacct_details():
    fields = parse_qacct(_read("qacct_h_rt_killed.txt"))
    assert fields["jobnumber"] == "164" and fields["category"] == "-l h_rt=5"
    status = qacct_status(fields)
    assert status.reason == "qmaster enforced h_rt, h_cpu, or h_vmem limit"
    assert qacct_status(parse_qacct(_read("qacct_missing.txt"))) is None
    other = qacct_status({"failed": "1   : assumedly before job", "exit_status": "0"})
    assert (other.state, other.reason) == (JobState.FAILED, "assumedly before job")


def test_recorded_submit_errors():
    assert 'job requests unknown queue "nosuch.q"' in _read("qsub_err_unknown_queue.stderr.txt")


# ---------------------------------------------------------------------------- query strategy


def _sge_job() -> SGEJob:
    return SGEJob(cores=1, memory="1GB")


def test_query_one_qstat_plus_details_only_for_pending_and_qdel_of_eqw():
    details = _read("qstat_xml_j_unsatisfiable_pe.txt").replace(
        "</djob_info>",
        _read("qstat_xml_j_error.txt").split("<djob_info>")[1].split("</djob_info>")[0]
        + "</djob_info>",
    )

    def answers(argv):
        if argv == ["qstat", "-xml"]:
            return _read("qstat_xml_mixed.txt")
        if argv[:3] == ["qstat", "-xml", "-j"]:
            return details
        if argv[0] == "qdel":
            return "root has deleted job 160\n"
        raise AssertionError(argv)

    engine, runner = engine_with(_sge_job(), answers)
    statuses = query(engine, ["146", "148", "152", "156", "160"])
    # one qstat for everything, one qstat -j for the pending (not held) and the Eqw job only
    assert runner.calls == [["qstat", "-xml"], ["qstat", "-xml", "-j", "146,160"]]
    assert engine.commands["status"] == 2
    assert statuses["148"].state == JobState.RUNNING
    assert (statuses["152"].state, statuses["152"].reason) == (JobState.HELD, "suspended")
    assert (statuses["156"].state, statuses["156"].reason) == (JobState.HELD, "held")
    assert statuses["146"].state == JobState.QUEUED
    assert statuses["146"].reason == 'cannot run in PE "smp" because it only offers 0 slots'
    assert not any(statuses[i].stuck for i in ("146", "148", "152", "156"))
    eqw = statuses["160"]
    assert (eqw.state, eqw.native_state, eqw.stuck) == (JobState.FAILED, "Eqw", True)
    assert "can't open output file" in eqw.reason

    # a query never deletes anything; the cluster cancels the stuck job once it ended it
    tracker = JobTracker(SGEJob.vanish)
    tracker.add("w-160", "160", workers_expected=1, now=0.0)
    _, ended = tracker.observe(statuses, ["160"], now=1.0)
    [(record, status)] = ended
    decision = FailurePolicy().job_ended(record, status, wanted=True, now=1.0, cap=4)
    assert decision.cancel and decision.failure
    assert cancel(engine, ["160"]) == []
    assert runner.calls[-1] == ["qdel", "160"] and engine.commands["cancel"] == 1


def test_one_qdel_for_many_and_jobs_already_gone_are_cancelled():
    # `qdel 148 153 139 99999` as recorded: exit 1, everything on stdout
    several = _read("qdel_several.txt")

    def answers(argv):
        raise CommandError(argv, 1, several, "")

    submitted = [f'Your job {i} ("w-0") has been submitted\n' for i in (148, 153, 139, 99999)]
    engine, runner = engine_with(_sge_job(), answers, submitted=submitted)
    assert cancel(engine, ["148", "153", "139", "99999"]) == []
    assert runner.calls == [["qdel", "148", "153", "139", "99999"]]
    assert engine.live_ids == set()


def test_query_disappeared_jobs_use_qacct_then_grace():
    accounted = {"164": _read("qacct_h_rt_killed.txt")}

    listing = ["qstat_xml_empty.txt"]

    def answers(argv):
        if argv == ["qstat", "-xml"]:
            return _read(listing[0])
        if argv[:1] == ["qstat"] and "-j" in argv:  # details of waiting jobs (optional)
            return (1, "error: not recorded for this test")
        if argv[0] == "qacct":
            return accounted.get(argv[2]) or (1, f"error: job id {argv[2]} not found")
        raise AssertionError(argv)

    engine, runner = engine_with(_sge_job(), answers)
    clock = [0.0]
    engine.clock = lambda: clock[0]
    ids = ["164", "170", "171"]
    statuses = query(engine, ids)
    # qstat -xml lists none of them: one qacct per missing id
    assert runner.calls[0] == ["qstat", "-xml"]
    assert sorted(runner.calls[1:]) == [["qacct", "-j", i] for i in ids]
    assert engine.commands["status"] == 4
    assert set(statuses) == {"164"}  # no accounting record yet for 170 and 171: unknown
    assert (statuses["164"].state, statuses["164"].exit_code) == (JobState.TIMED_OUT, 137)

    tracker = JobTracker(SGEJob.vanish)
    for job_id in ids:
        tracker.add(f"w-{job_id}", job_id, workers_expected=1, now=0.0)
    tracker.observe(
        {"164": sge_state("r"), "170": sge_state("r"), "171": sge_state("qw")}, ids, now=1.0
    )
    _, ended = tracker.observe(statuses, ids, now=2.0)
    assert [(r.job_id, r.state, r.exit_code) for r, _ in ended] == [
        ("164", JobState.TIMED_OUT, 137)
    ]
    # missing from qstat and qacct (accounting is written late): last state kept for a while
    rule = SGEJob.vanish
    step_pace = SGEJob.status_steps[-1].pace
    engine_time = 0.0
    for now in [3.0 + i for i in range(rule.polls)]:
        runner.calls.clear()
        engine_time += step_pace / 2
        clock[0] = engine_time
        statuses = query(engine, ["170", "171"])
        # qacct reads the whole accounting file: asked again only every `pace` seconds
        expected = (
            [["qacct", "-j", "170"], ["qacct", "-j", "171"]] if engine_time % step_pace == 0 else []
        )
        assert sorted(c for c in runner.calls if c[0] == "qacct") == expected
        _, ended = tracker.observe(statuses, ["170", "171"], now=now)
        assert ended == []
        assert tracker.get("170").state == JobState.RUNNING
        assert tracker.get("171").state == JobState.QUEUED
        # qstat lists none of the cluster's jobs: an outage until proven otherwise
        assert "status unknown" in tracker.get("170").reason
    # far beyond the grace, while qstat still lists none of them: kept, not ended
    _, ended = tracker.observe(query(engine, ["170", "171"]), ["170", "171"], now=600.0)
    assert ended == [] and len(tracker) == 2
    # qstat lists a job of the cluster again (172): it works, and 170 and 171, still missing
    # from it and from accounting, vanish by the usual grace
    tracker.add("w-172", "172", workers_expected=1, now=601.0)
    listing[0] = "qstat_xml_two_pending.txt"
    ended = []
    for now in (602.0, 620.0, 640.0):
        clock[0] += step_pace
        _, ended = tracker.observe(
            query(engine, ["170", "171", "172"]), ["170", "171", "172"], now=now
        )
    assert sorted((r.job_id, r.state) for r, _ in ended) == [
        ("170", JobState.LOST),
        ("171", JobState.CANCELLED),
    ]
    assert tracker.live_ids() == ["172"]


def _qacct_record(job_id: str) -> str:
    """A recorded qacct record (killed at h_rt) renumbered as ``job_id`` (``N`` or ``N.T``)."""
    number, _, task = job_id.partition(".")
    return (
        _read("qacct_h_rt_killed.txt")
        .replace("jobnumber    164", f"jobnumber    {number}")
        .replace("taskid       undefined", f"taskid       {task or 'undefined'}")
    )


def test_qacct_records_by_id():
    listing = _qacct_record("7") + _qacct_record("8.2") + _qacct_record("8.3")
    records = parse_qacct_records(listing)
    assert sorted(records) == ["7", "8.2", "8.3"]
    assert records["8.3"]["failed"].startswith("37")
    # no records: qacct prints its summary table instead
    assert parse_qacct_records(_read("qacct_missing.txt")) == {}


def test_many_missing_jobs_are_one_qacct_listing():
    """300 jobs left qstat at once: one qacct for all of them (this user's records since the
    first submission), not 300; their records give their final states."""
    ids = [str(1000 + k) for k in range(300)]
    accounted = ["1000", "1150", "1299"]

    def answers(argv):
        if argv == ["qstat", "-xml"]:
            return _read("qstat_xml_empty.txt")
        if argv[0] == "qacct":
            return "".join(_qacct_record(i) for i in accounted)
        raise AssertionError(argv)

    submitted = [f'Your job {i} ("w") has been submitted\n' for i in ids]
    engine, runner = engine_with(_sge_job(), answers, submitted=submitted)
    statuses = query(engine, ids)
    qaccts = [c for c in runner.calls if c[0] == "qacct"]
    assert len(qaccts) == 1
    argv = qaccts[0]
    assert argv[:3] == ["qacct", "-o", getpass.getuser()] and argv[3] == "-b"
    assert re.fullmatch(r"\d{12}", argv[4]) and argv[5:] == ["-j"]
    assert sorted(statuses) == accounted
    assert {s.state for s in statuses.values()} == {JobState.TIMED_OUT}
    # asked again only after the pace
    runner.calls.clear()
    query(engine, ids)
    assert [c for c in runner.calls if c[0] == "qacct"] == []


def test_per_job_qacct_runs_a_few_at_a_time():
    """Without a submission time (jobs this engine did not submit) the listing cannot be
    bounded: one qacct per job, at most ``each_concurrency`` running at once."""
    ids = [str(2000 + k) for k in range(300)]
    running = [0]
    most = [0]
    calls: list[list[str]] = []

    class ConcurrentQacct(CommandRunner):
        """qacct commands that take a few loop turns, to see how many run at once."""

        async def run(self, argv, *, stdin=None, timeout=None):
            calls.append(list(argv))
            if argv == ["qstat", "-xml"]:
                return CommandResult(argv, _read("qstat_xml_empty.txt"), "")
            running[0] += 1
            most[0] = max(most[0], running[0])
            for _ in range(3):
                await asyncio.sleep(0)  # let any other command start meanwhile
            running[0] -= 1
            if argv[2] == "2042":
                return CommandResult(argv, _qacct_record("2042"), "")
            raise CommandError(argv, 1, "", f"error: job id {argv[2]} not found")

    engine = BatchSystem(_sge_job(), runner=ConcurrentQacct())
    statuses = asyncio.run(engine.query(ids))
    qaccts = [c for c in calls if c[0] == "qacct"]
    assert sorted(qaccts) == sorted(["qacct", "-j", i] for i in ids)
    assert 1 < most[0] <= engine.each_concurrency == 4
    assert list(statuses) == ["2042"]


def test_missing_tasks_of_one_array_are_one_qacct():
    ids = [f"76.{k}" for k in range(1, 301)]

    def answers(argv):
        if argv == ["qstat", "-xml"]:
            return _read("qstat_xml_empty.txt")
        if argv == ["qacct", "-j", "76"]:
            return _qacct_record("76.1") + _qacct_record("76.300")
        raise AssertionError(argv)

    engine, runner = engine_with(_sge_job(), answers)
    statuses = query(engine, ids)
    assert runner.calls == [["qstat", "-xml"], ["qacct", "-j", "76"]]
    assert sorted(statuses) == ["76.1", "76.300"]


def test_query_qstat_failure_is_a_command_error():
    engine, runner = engine_with(
        _sge_job(), lambda argv: (1, "error: commlib error: got select error")
    )
    with pytest.raises(CommandError, match="commlib error"):
        query(engine, ["1"])
    # the required qstat failed: no qstat -j nor qacct guesses after it
    assert runner.calls == [["qstat", "-xml"]]


# ---------------------------------------------------------------------------- real SGE


def _queue_ids() -> set[str]:
    out = run(["qstat", "-xml"])
    try:
        return set(parse_qstat_xml(out))
    except Exception:
        return set()


SGE = Backend(
    name="sge",
    cluster_cls=SGECluster,
    kwargs={"cores": 1, "memory": "1GB", "processes": 1},
    queue_ids=_queue_ids,
    cancel_argv=lambda job_id: ["qdel", job_id],
    bad_queue_kwargs={"queue": "nosuch.q"},
    bad_queue_message='job requests unknown queue "nosuch.q"',
    hold_kwargs={"job_extra_directives": ["-h"]},
    hold_reason="held",
    short_walltime={"walltime": "00:00:20"},
    walltime_wait=90,
)


@pytest.mark.env("sge")
class TestRealSGE(SchedulerSuite):
    backend = SGE

    @pytest.fixture(autouse=True)
    def _job_output_in_tmp(self, tmp_path, monkeypatch):
        # -cwd writes dask-worker.o<id> to the submission directory: keep it out of the repo
        monkeypatch.chdir(tmp_path)


def _fake_qacct(bin_dir: Path, log: Path) -> None:
    """A ``qacct`` in front of the real one that logs when each call starts and ends."""
    real = shutil.which("qacct")
    assert real is not None
    bin_dir.mkdir()
    script = bin_dir / "qacct"
    script.write_text(
        "#!/bin/bash\n"
        f'echo "start $$" >> {shlex.quote(str(log))}\n'
        f'{shlex.quote(real)} "$@"\nrc=$?\n'
        f'echo "end $$" >> {shlex.quote(str(log))}\n'
        "exit $rc\n"
    )
    script.chmod(0o755)


def _most_at_once(log: Path) -> tuple[int, int]:
    """(calls, most calls running at the same time) from the fake's log."""
    running = most = calls = 0
    for line in log.read_text().splitlines():
        if line.startswith("start"):
            calls += 1
            running += 1
            most = max(most, running)
        else:
            running -= 1
    return calls, most


@pytest.mark.env("sge")
def test_real_sge_300_missing_jobs_few_qacct_at_a_time(tmp_path, monkeypatch):
    """300 jobs leave the queue at once (deleted while held): the engine that submitted them
    asks qacct once for all; an engine that did not (no submission times) asks per job, at
    most four at a time. Counted with a fake qacct in front of the real one."""
    monkeypatch.chdir(tmp_path)
    log = tmp_path / "qacct.log"
    _fake_qacct(tmp_path / "bin", log)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    template = SGEJob(cores=1, memory="1GB", job_extra_directives=["-h"], name="acct-0")
    engine = BatchSystem(template, job_arrays="never")
    jobs = [
        SGEJob(cores=1, memory="1GB", job_extra_directives=["-h"], name=f"acct-{k}")
        for k in range(300)
    ]
    ids: list[str] = []
    try:
        results = asyncio.run(engine.submit_many(jobs, arrays=False))
        ids = [r for r in results if isinstance(r, str)]
        assert len(ids) == 300, [r for r in results if not isinstance(r, str)][:3]
        subprocess.run(["qdel", *ids], capture_output=True, check=False)
        deadline = time.monotonic() + 60
        while set(ids) & _queue_ids() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not set(ids) & _queue_ids()

        asyncio.run(engine.query(ids))
        assert _most_at_once(log) == (1, 1)

        log.write_text("")
        stranger = BatchSystem(template)
        asyncio.run(stranger.query(ids))
        calls, most = _most_at_once(log)
        assert calls == 300
        assert most <= 4
    finally:
        engine.close()
        if ids:
            subprocess.run(["qdel", *ids], capture_output=True, check=False)


def test_qacct_records_of_a_parallel_job_keep_the_job_scripts():
    """The batched qacct step reads records by id: a parallel job's tasks share its id, and
    the job script's record (the last) is the one kept."""
    records = parse_qacct_records(_read("qacct_pe_master_exits_first.txt"))
    assert list(records) == ["6"]
    status = qacct_status(records["6"])
    assert (status.state, status.exit_code) == (JobState.FAILED, 3)
