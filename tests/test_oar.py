"""OAR: header and oarsub options, parsers on recorded real outputs, and -E oar runs."""

from __future__ import annotations

import json
import os
import pwd
import warnings
from pathlib import Path

import pytest
from distributed import Client

from dask_jobqueue import CommandError, OARCluster
from dask_jobqueue.oar import OARJob, decode_wait_status, oar_job_status, parse_oarstat_json
from dask_jobqueue.tracking import JobState

from .fakes import cancel, engine_with, query
from .scheduler_suite import Backend, SchedulerSuite, run, wait_until

DATA = Path(__file__).parent / "data" / "oar"
NA = {"memory_per_core_property_name": "not_applicable"}


def _job(**kwargs) -> OARJob:
    options = {"cores": 8, "memory": "28GB", "processes": 4, **NA, **kwargs}
    return OARJob("tcp://127.0.0.1:8786", name="w-0", **options)


def _directives(job: OARJob) -> list[str]:
    return [line for line in job.job_header.splitlines() if line.startswith("#OAR")]


# ------------------------------------------------------------------ header and submission


def test_header_one_resource_line_name_queue_project():
    job = _job(queue="regular", project="myproj", walltime="00:30:00")
    assert _directives(job) == [
        "#OAR -n dask-worker",
        "#OAR -q regular",
        "#OAR --project myproj",
        "#OAR -l /nodes=1/core=8,walltime=00:30:00",
    ]


def test_header_default_walltime_no_queue_no_project():
    job = _job()
    assert _directives(job) == ["#OAR -n dask-worker", "#OAR -l /nodes=1/core=8,walltime=00:30:00"]


def test_resource_spec_replaces_the_default_request():
    job = _job(resource_spec="/host=1/core=4", walltime="01:00:00")
    assert "#OAR -l /host=1/core=4,walltime=01:00:00" in _directives(job)
    assert sum(line.startswith("#OAR -l ") for line in _directives(job)) == 1


def test_log_directory_gives_O_and_E():
    job = _job(log_directory="/logs")
    assert "#OAR -O /logs/dask-worker.%jobid%.out" in _directives(job)
    assert "#OAR -E /logs/dask-worker.%jobid%.err" in _directives(job)
    assert job.output_files("42") == [
        Path("/logs/dask-worker.42.err"),
        Path("/logs/dask-worker.42.out"),
    ]


def test_memory_per_core_property():
    job = _job(memory_per_core_property_name="memcore")
    # 28 GB over 8 cores = 3337.9 MiB per core, rounded up
    assert _directives(job)[-1] == "#OAR -p memcore>=3338"


def test_memory_per_core_combined_with_an_existing_p():
    job = _job(memory_per_core_property_name="memcore", job_extra_directives=["-p gpu=YES"])
    lines = _directives(job)
    assert lines[-1] == "#OAR -p 'gpu=YES AND memcore>=3338'"
    assert sum(line.startswith("#OAR -p ") for line in lines) == 1
    assert job.submit_argv("unused")[-3:-1] == ["-p", "gpu=YES AND memcore>=3338"]


def test_memory_per_core_combined_with_a_quoted_p():
    job = _job(
        memory_per_core_property_name="memcore",
        job_extra_directives=["-p \"host='node1'\"", "--hold"],
    )
    argv = job.submit_argv("unused")
    i = argv.index("-p")
    assert argv[i + 1] == "host='node1' AND memcore>=3338"
    assert "--hold" in argv


def test_warning_without_memory_per_core_property_name():
    with pytest.warns(UserWarning, match="memory_per_core_property_name"):
        job = _job(memory_per_core_property_name=None)
    assert not any(line.startswith("#OAR -p") for line in _directives(job))


def test_no_warning_with_not_applicable():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        job = _job(memory_per_core_property_name="not_applicable")
    assert not any(line.startswith("#OAR -p") for line in _directives(job))


def test_submit_argv_options_then_inline_body():
    job = _job(
        queue="q1",
        walltime="00:10:00",
        job_extra_directives=["--hold"],
        job_script_prologue=["export A=1"],
        job_script_epilogue=["echo done"],
    )
    argv = job.submit_argv("/tmp/ignored/job.sh")
    assert argv[:9] == [
        "oarsub",
        "-n",
        "dask-worker",
        "-q",
        "q1",
        "-l",
        "/nodes=1/core=8,walltime=00:10:00",
        "--hold",
        argv[8],
    ]
    body = argv[-1]
    assert "/tmp/ignored/job.sh" not in argv
    assert body.splitlines()[0] == "export A=1"
    assert body.splitlines()[-1] == "echo done"
    assert "distributed.cli.dask_worker tcp://127.0.0.1:8786" in body
    assert not any(line.startswith("#") for line in body.splitlines())


def test_submit_command_extra_comes_first():
    job = _job(submit_command_extra=["-t", "besteffort"])
    assert job.submit_argv("x")[:3] == ["oarsub", "-t", "besteffort"]


def test_job_id_from_recorded_oarsub_output():
    job = _job()
    assert job.job_id_from_submit_output((DATA / "oarsub_inline.txt").read_text()) == "12"
    assert job.job_id_from_submit_output((DATA / "oarsub_hold.txt").read_text()) == "25"
    # OAR_JOB_ID=-5 means the request was refused: no id
    with pytest.raises(ValueError):
        job.job_id_from_submit_output((DATA / "oarsub_err_too_many_cores.txt").read_text())


def test_status_and_cancel_argv_are_one_call():
    mixed = (DATA / "oarstat_fJ_multi_mixed.txt").read_text()
    # `oardel 22 24 13 99999`: exit 1, 99999 does not exist (any more)
    deleted = (DATA / "oardel_multi.txt").read_text()
    missing = (DATA / "oardel_multi.stderr.txt").read_text()

    def answer(argv):
        if argv[0] == "oarstat":
            return mixed
        raise CommandError(argv, 1, deleted, missing)

    submitted = [f"OAR_JOB_ID={i}\n" for i in ("22", "24", "13", "99999")]
    engine, runner = engine_with(_job(), answer, submitted=submitted)
    statuses = query(engine, ["7", "8", "25"])
    assert runner.calls == [["oarstat", "-f", "-J", "-j", "7", "-j", "8", "-j", "25"]]
    assert engine.commands["status"] == 1
    assert statuses["7"].state == JobState.RUNNING
    assert (statuses["8"].state, statuses["25"].state) == (JobState.FINISHED, JobState.HELD)

    assert engine.live_ids == {"22", "24", "13", "99999"}
    runner.calls.clear()
    # one oardel for all; "not the right user" for a job that is gone is not a failure
    assert cancel(engine, ["22", "24", "13", "99999"]) == []
    assert runner.calls == [["oardel", "22", "24", "13", "99999"]]
    assert engine.commands["cancel"] == 1
    assert engine.live_ids == set()


def test_cancel_failure_is_retried_then_left_for_exit():
    def answer(argv):
        # not a recorded message: any complaint other than "already killed"/"not the right user"
        return (1, "[oardel] ERROR: cannot connect to the OAR database\n")

    submitted = ["OAR_JOB_ID=22\n", "OAR_JOB_ID=24\n"]
    engine, runner = engine_with(_job(), answer, submitted=submitted)
    assert cancel(engine, ["22", "24"]) == ["22", "24"]
    # the command's tries, then each id alone (one of them might be what it refuses)
    tries = [["oardel", "22", "24"]] * engine.cancel_attempts
    assert runner.calls == [*tries, ["oardel", "22"], ["oardel", "24"]]
    assert engine.commands["cancel"] == engine.cancel_attempts + 2 == 5
    assert runner.pauses == [0.5, 1.0]  # between the tries of the first command
    # still live: the exit finalizer tries them again
    assert engine.live_ids == {"22", "24"}
    # the job already killed is released even when cancelled alone
    already = (DATA / "oardel_finished_again.stderr.txt").read_text()
    runner.answer = lambda argv: (6, already)
    assert cancel(engine, ["22"]) == []
    assert engine.live_ids == {"24"}


def test_default_output_files_in_the_submit_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    job = _job()
    job.submit_argv("x")
    monkeypatch.chdir("/")
    files = job.output_files("43")
    assert files[0] == tmp_path / "OAR.dask-worker.43.stderr"
    assert tmp_path / "OAR.43.stderr" in files


# ------------------------------------------------------------------ parsers on real outputs


@pytest.mark.parametrize("raw, code", [(0, 0), (768, 3), (32256, 126), (32512, 127), (9, 137)])
def test_decode_wait_status(raw, code):
    assert decode_wait_status(raw) == code


def test_parse_recorded_mixed_states():
    st = parse_oarstat_json((DATA / "oarstat_fJ_multi_mixed.txt").read_text())
    assert set(st) == {"7", "8", "10", "13", "17", "18", "19", "21", "23", "24", "25"}
    assert (st["7"].state, st["7"].native_state) == (JobState.RUNNING, "Running")
    assert (st["8"].state, st["8"].exit_code) == (JobState.FINISHED, 0)
    assert (st["17"].state, st["17"].exit_code, st["17"].reason) == (JobState.FAILED, 3, None)
    assert (st["19"].state, st["19"].exit_code) == (JobState.FAILED, 127)
    assert (st["10"].state, st["10"].exit_code) == (JobState.FAILED, 126)
    assert st["18"].state == JobState.CANCELLED
    assert "oartest requested to frag" in st["18"].reason
    assert (st["25"].state, st["25"].reason) == (JobState.HELD, "Hold")
    assert st["23"].state == JobState.QUEUED and st["23"].reason.startswith("expected start ")


def test_parse_recorded_walltime_kill_is_timed_out():
    # The walltime kill also has a FRAG_JOB_REQUEST (by root): WALLTIME must win.
    text = (DATA / "oarstat_fJ_walltime_killed.txt").read_text()
    types = [e["type"] for e in json.loads(text)["7"]["events"]]
    assert "FRAG_JOB_REQUEST" in types and "WALLTIME" in types
    st = parse_oarstat_json(text)
    assert (st["7"].state, st["7"].native_state) == (JobState.TIMED_OUT, "Error")
    final = parse_oarstat_json((DATA / "oarstat_fJ_multi_final.txt").read_text())
    assert final["7"].state == JobState.TIMED_OUT
    assert final["18"].state == JobState.CANCELLED
    assert final["24"].state == JobState.QUEUED


def test_parse_missing_ids_are_absent():
    assert parse_oarstat_json((DATA / "oarstat_fJ_missing.txt").read_text()) == {}
    assert parse_oarstat_json("") == {}
    st = parse_oarstat_json((DATA / "oarstat_J_missing_mixed.txt").read_text())
    assert set(st) == {"13", "25"}


def test_parse_status_keeps_only_asked_ids():
    final = (DATA / "oarstat_fJ_multi_final.txt").read_text()  # lists 8 jobs, 99999 not
    engine, runner = engine_with(_job(), lambda argv: final)
    statuses = query(engine, ["7", "25", "99999"])
    assert set(statuses) == {"7", "25"}
    assert statuses["7"].state == JobState.TIMED_OUT
    assert runner.calls == [["oarstat", "-f", "-J", "-j", "7", "-j", "25", "-j", "99999"]]


def test_parse_bad_json_raises_value_error():
    with pytest.raises(ValueError):
        parse_oarstat_json("oarstat: something went wrong")
    with pytest.raises(ValueError):
        parse_oarstat_json('{"7": {"state": ')


@pytest.mark.parametrize(
    "native, state",
    [
        ("Waiting", JobState.QUEUED),
        ("toLaunch", JobState.QUEUED),
        ("Launching", JobState.QUEUED),
        ("toAckReservation", JobState.QUEUED),
        ("Hold", JobState.HELD),
        ("Suspended", JobState.HELD),
        ("Resuming", JobState.RUNNING),
        ("Running", JobState.RUNNING),
        ("Finishing", JobState.RUNNING),
        ("toError", JobState.RUNNING),
        ("SomethingNew", JobState.RUNNING),
    ],
)
def test_non_final_states(native, state):
    status = oar_job_status({"state": native, "scheduledStart": None})
    assert (status.state, status.native_state) == (state, native)
    assert status.exit_code is None


def test_waiting_without_prediction_has_no_reason():
    assert oar_job_status({"state": "Waiting", "scheduledStart": None}).reason is None


def test_error_without_walltime_or_frag_is_failed():
    status = oar_job_status(
        {
            "state": "Error",
            "exit_code": None,
            "events": [
                {"type": "PROLOGUE_ERROR", "description": "error of oarexec prologue"},
                {"type": "SWITCH_INTO_ERROR_STATE", "description": "[bipbip 5] Ask"},
            ],
        }
    )
    assert status.state == JobState.FAILED
    assert status.reason == "PROLOGUE_ERROR: error of oarexec prologue"


def test_recorded_submit_errors():
    text = (DATA / "oarsub_err_unknown_queue.stderr.txt").read_text()
    assert "The queue nosuchq does not exist" in text
    text = (DATA / "oarsub_err_unknown_property.stderr.txt").read_text()
    assert 'column "memcore" does not exist' in text


# ------------------------------------------------------------------ real OAR (-E oar)


def _queue_ids() -> set[str]:
    # Without -j, oarstat lists only the jobs that are not finished.
    out = run(["oarstat", "-J", "-u", pwd.getpwuid(os.getuid()).pw_name])
    return set(json.loads(out)) if out.strip() else set()


OAR = Backend(
    name="oar",
    cluster_cls=OARCluster,
    kwargs={"cores": 1, "memory": "1GB", "processes": 1, "walltime": "00:10:00", **NA},
    queue_ids=_queue_ids,
    cancel_argv=lambda job_id: ["oardel", job_id],
    bad_queue_kwargs={"queue": "nosuchq"},
    bad_queue_message="The queue nosuchq does not exist",
    hold_kwargs={"job_extra_directives": ["--hold"]},
    hold_reason="Hold",
    short_walltime={"walltime": "0:01:00"},
    walltime_wait=120,
    timeout=120,
)


@pytest.mark.env("oar")
class TestRealOAR(SchedulerSuite):
    backend = OAR

    def test_oardel_from_outside_is_cancelled_and_polled_in_one_call(self):
        with self.cluster() as cluster, Client(cluster) as client:
            cluster.scale(jobs=2)
            client.wait_for_workers(2, timeout=self.backend.timeout)
            first, second = sorted(j.job_id for j in cluster.workers.values())
            calls = cluster.status_calls
            run(["oardel", first])
            assert wait_until(
                lambda: any(r.job_id == first and r.state.is_final for r in cluster.jobs),
                self.backend.timeout,
            ), repr(cluster.jobs)
            record = {r.job_id: r for r in cluster.jobs}[first]
            assert record.state == JobState.CANCELLED, repr(cluster.jobs)
            assert "frag" in (record.reason or ""), repr(cluster.jobs)
            assert {r.job_id: r.state for r in cluster.jobs}[second] == JobState.CONNECTED
            assert cluster.status_calls > calls
            ids = {r.job_id for r in cluster.jobs}
        self.assert_gone_from_queue(ids)

    def test_unknown_memory_property_is_rejected_by_oarsub(self):
        with self.cluster(memory_per_core_property_name="nosuchprop") as cluster:
            cluster.scale(1)
            with pytest.raises(CommandError) as info:
                cluster.wait_for_workers(1, timeout=60)
            assert 'column "nosuchprop" does not exist' in str(info.value)
