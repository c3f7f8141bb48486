"""HTCondor: submit description, argument quoting, condor_q/condor_history parsers on recorded
emulator output, and the end-to-end suite against the HTCondor emulator (-E htcondor)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from dask_jobqueue import CommandError, HTCondorCluster
from dask_jobqueue.engine import BatchSystem
from dask_jobqueue.htcondor import (
    HTCondorJob,
    condor_status,
    escape_macros,
    parse_condor_json,
    quote_arguments,
)
from dask_jobqueue.policy import FailurePolicy
from dask_jobqueue.tracker import JobTracker
from dask_jobqueue.tracking import JobState

from .emulator.htcondor import parse_arguments
from .fakes import engine_with, query
from .scheduler_suite import Backend, SchedulerSuite, emulator, run  # noqa: F401

DATA = Path(__file__).parent / "data" / "htcondor"


def make_job(**kwargs) -> HTCondorJob:
    options = {"cores": 2, "memory": "2GB", "disk": "1GB", **kwargs}
    return HTCondorJob("tcp://127.0.0.1:8786", name="w-0", **options)


def test_header_items_and_script(tmp_path):
    logs = str(tmp_path)
    job = make_job(
        processes=2,
        log_directory=logs,
        job_extra_directives={"+Extra": "True", "MY.Project": '"proj"', "request_gpus": "1"},
    )
    script = job.job_script()
    lines = script.splitlines()
    assert lines[0] == "#!/usr/bin/env condor_submit"
    header = dict(line.split(" = ", 1) for line in lines[2:-3])
    assert header["RequestCpus"] == "MY.DaskWorkerCores"
    assert header["RequestMemory"] == "floor(MY.DaskWorkerMemory / 1048576)"
    assert header["RequestDisk"] == "floor(MY.DaskWorkerDisk / 1024)"
    assert header["MY.DaskWorkerCores"] == "2"
    assert header["MY.DaskWorkerMemory"] == "2000000000"
    assert header["MY.DaskWorkerDisk"] == "1000000000"
    assert header["MY.DaskWorkerName"] == '"w-0"'
    assert header["batch_name"] == "w-0"
    assert header["LogDirectory"] == logs
    assert header["Output"] == "$(LogDirectory)/worker-$(ClusterId).$(ProcId).out"
    assert header["Error"] == "$(LogDirectory)/worker-$(ClusterId).$(ProcId).err"
    assert header["+Extra"] == "True" and header["MY.Project"] == '"proj"'
    assert header["request_gpus"] == "1"
    assert lines[-3] == "Executable = /bin/sh"
    assert lines[-2].startswith('Arguments = "-c ')
    assert lines[-1] == "Queue"
    assert script.count("Queue") == 1
    assert job.output_files("7.0") == [tmp_path / "worker-7.0.err", tmp_path / "worker-7.0.out"]


def test_no_log_directory_no_output_lines():
    header = make_job().job_header
    assert "Output" not in header and "LogDirectory" not in header
    assert make_job().output_files("7.0") == []


def test_extra_directives_as_list_and_validation():
    job = make_job(job_extra_directives=["+Extra = True", "request_gpus=1"])
    assert job.job_extra_directives == {"+Extra": "True", "request_gpus": "1"}
    with pytest.raises(ValueError, match="key = value"):
        make_job(job_extra_directives=["no equal sign"])
    with pytest.raises(ValueError, match="queue"):
        make_job(job_extra_directives={"Queue": "2"})
    with pytest.raises(ValueError, match="not a submit-description key"):
        make_job(job_extra_directives={"a b": "1"})
    with pytest.raises(ValueError, match="single line"):
        make_job(job_extra_directives={"x": "1\nQueue 5"})


def test_queue_keyword_is_rejected():
    with pytest.raises(ValueError, match="queue"):
        HTCondorCluster(cores=1, memory="1GB", disk="1GB", queue="regular")


def test_disk_is_required():
    with pytest.raises(ValueError, match="disk"):
        HTCondorJob("tcp://a:1", cores=1, memory="1GB")


def test_directives_skip_absent_key_does_not_raise():
    job = make_job(job_directives_skip=["NoSuchKey", "RequestDisk"])
    header = job.job_header
    assert "RequestDisk" not in header and "RequestCpus" in header
    assert job.job_script().endswith("Queue\n")


def test_prologue_and_epilogue_joined_with_semicolons():
    job = make_job(
        job_script_prologue=["source env.sh", "export A=1"], job_script_epilogue=["echo done"]
    )
    command = job.shell_command()
    parts = command.split("; ")
    assert parts[:2] == ["source env.sh", "export A=1"] and parts[-1] == "echo done"
    assert "distributed.cli.dask_worker" in parts[-2]
    assert "socket.create_connection" in parts[2]  # the scheduler check, after the prologue
    args = parse_arguments(job.job_script().splitlines()[-2].split(" = ", 1)[1])
    assert args == ["-c", command]


@pytest.mark.parametrize(
    "args",
    [
        ["-c", "echo 'hi there'"],
        ["-c", "echo \"double\" and 'single'"],
        ['a"b', "it's", "", "two  spaces", "tab\there"],
        ["''", '""', "x'y z\"w"],
    ],
)
def test_quote_arguments_round_trip(args):
    # The new syntax: the value is in double quotes, literal " is "", arguments with white
    # space or ' are grouped in single quotes, inside which a literal ' is ''.
    assert parse_arguments(quote_arguments(args)) == args


def test_quote_arguments_example():
    assert quote_arguments(["-c", "echo 'hi there'"]) == "\"-c 'echo ''hi there'''\""
    assert quote_arguments(['a"b']) == '"a""b"'


def test_macros_are_escaped_in_arguments():
    assert escape_macros("echo $(hostname) $$(Memory) $HOME ${X}") == (
        "echo $(DOLLAR)(hostname) $(DOLLAR)$(DOLLAR)(Memory) $HOME ${X}"
    )
    job = make_job(job_script_prologue=["echo $(hostname)"])
    assert "$(DOLLAR)(hostname)" in job.job_script()


def test_command_lines():
    job = make_job(submit_command_extra=["-name", "sched@host"], cancel_command_extra=["-forcex"])
    assert job.submit_argv("/tmp/job.sub") == [
        "condor_submit",
        "-name",
        "sched@host",
        "/tmp/job.sub",
    ]
    assert job.cancel_argv(["7.0", "8.0"]) == ["condor_rm", "-forcex", "7.0", "8.0"]
    out = "Submitting job(s).\n1 job(s) submitted to cluster 7.\n"
    assert job.job_id_from_submit_output(out) == "7.0"

    def answer(argv):
        name = (
            "condor_q_json_mixed_states.json"
            if argv[0] == "condor_q"
            else ("condor_history_json_finished.json")
        )
        return (DATA / name).read_text()

    engine, runner = engine_with(job, answer)
    statuses = query(engine, ["7.0", "8.0", "5.0"])
    # one condor_q for all; condor_history only for the id the queue no longer has
    q, history = runner.calls
    assert q[:5] == ["condor_q", "7.0", "8.0", "5.0", "-json"]
    assert "JobStatus" in q[-1] and "HoldReasonCode" in q[-1]
    assert history[:3] == ["condor_history", "7.0", "-json"]
    assert engine.commands["status"] == 2
    assert statuses["8.0"].state == JobState.QUEUED
    assert (statuses["7.0"].state, statuses["7.0"].exit_code) == (JobState.FAILED, 137)
    # held for exceeding its allowed duration: timed out, and stuck in the queue
    expired = statuses["5.0"]
    assert (expired.state, expired.stuck) == (JobState.TIMED_OUT, True)
    assert not statuses["8.0"].stuck and not statuses["7.0"].stuck
    tracker = JobTracker(HTCondorJob.vanish)
    tracker.add("w-5", "5.0", workers_expected=1, now=0.0)
    tracker.set_connected({"w-5": 1}, now=1.0)
    tracker.set_connected({}, now=2.0)
    _, [(record, status)] = tracker.observe(statuses, ["5.0"], now=3.0)
    # a timed-out job is not a failure, but this one is still queued (held): the cluster
    # removes it, which it would not do for a job that left the queue at its walltime
    decision = FailurePolicy().job_ended(record, status, wanted=True, now=3.0, cap=4)
    assert decision.cancel and not decision.failure
    left = FailurePolicy().job_ended(record, replace(status, stuck=False), True, 3.0, 4)
    assert not left.cancel


def test_parse_condor_q_recorded_mixed_states():
    statuses = parse_condor_json((DATA / "condor_q_json_mixed_states.json").read_text())
    assert set(statuses) == {"1.0", "5.0", "6.0", "8.0"}  # 99.0 is unknown: nothing printed
    assert statuses["1.0"].state == JobState.RUNNING
    assert statuses["8.0"].state == JobState.QUEUED
    assert (statuses["6.0"].state, statuses["6.0"].reason) == (
        JobState.HELD,
        "via condor_hold (by user root)",
    )
    expired = statuses["5.0"]
    assert (expired.state, expired.native_state) == (JobState.TIMED_OUT, "Held")
    assert "allowed job duration" in expired.reason


def test_parse_condor_history_recorded_finished():
    statuses = parse_condor_json((DATA / "condor_history_json_finished.json").read_text())
    assert (statuses["2.0"].state, statuses["2.0"].exit_code) == (JobState.FAILED, 3)
    assert (statuses["3.0"].state, statuses["3.0"].exit_code) == (JobState.FINISHED, 0)
    assert statuses["4.0"].state == JobState.CANCELLED
    assert "condor_rm" in statuses["4.0"].reason
    assert (statuses["7.0"].state, statuses["7.0"].exit_code) == (JobState.FAILED, 137)


def test_parse_condor_nothing_matches():
    assert (DATA / "condor_q_json_all_unknown.json").read_text() == ""
    assert parse_condor_json("") == {}
    assert parse_condor_json("[]") == {}


@pytest.mark.parametrize(
    "ad, state",
    [
        ({"JobStatus": 6}, JobState.RUNNING),
        ({"JobStatus": 7}, JobState.HELD),
        ({"JobStatus": 5, "HoldReasonCode": 47, "HoldReason": "execute"}, JobState.TIMED_OUT),
        ({"JobStatus": 5, "HoldReasonCode": 15, "HoldReason": "submitted on hold"}, JobState.HELD),
        ({"JobStatus": 4}, JobState.FAILED),  # completed without an exit code: not a success
    ],
)
def test_condor_status_table(ad, state):
    assert condor_status(ad).state == state


def _queue_ids() -> set[str]:
    # condor_q lists idle, running, held (and removed-but-still-exiting) jobs
    return set(run(["condor_q", "-af:j", "JobStatus"]).split()[::2])


HTCONDOR = Backend(
    name="htcondor",
    cluster_cls=HTCondorCluster,
    kwargs={"cores": 1, "memory": "1GB", "disk": "1GB", "processes": 1},
    queue_ids=_queue_ids,
    cancel_argv=lambda job_id: ["condor_rm", job_id],
    # HTCondor has no queues: an unknown universe is what condor_submit rejects instead
    bad_queue_kwargs={"job_extra_directives": {"universe": "nosuch"}},
    bad_queue_message="I don't know about the 'nosuch' universe.",
    hold_kwargs={"job_extra_directives": {"hold": "True"}},
    hold_reason="submitted on hold",
    short_walltime={"job_extra_directives": {"allowed_job_duration": "8"}},
    walltime_wait=60,
    timeout=60,
)


@pytest.mark.env("htcondor")
@pytest.mark.usefixtures("emulator")
class TestEmulatedHTCondor(SchedulerSuite):
    backend = HTCONDOR
    emulator_flavour = "htcondor"
    emulator_options = {"kill_delay": 1.0}

    def test_status_query_uses_history_for_finished_jobs(self, emulator, tmp_path):  # noqa: F811
        from .emulator import wait_for_job

        sub = tmp_path / "job.sub"
        sub.write_text("executable = /bin/sh\narguments = \"-c 'exit 3'\"\nqueue\n")
        out = run(["condor_submit", str(sub)])
        job_id = out.split("cluster ")[1].split(".")[0] + ".0"
        wait_for_job(emulator["DJQ_EMULATOR_HOME"], job_id)
        engine = BatchSystem(make_job())
        statuses = asyncio.run(engine.query([job_id, "9999.0"]))
        assert set(statuses) == {job_id}
        assert engine.commands["status"] == 2  # condor_q, then condor_history for both
        assert (statuses[job_id].state, statuses[job_id].exit_code) == (JobState.FAILED, 3)

    def test_status_outage_is_a_command_error(self, emulator):  # noqa: F811
        from .emulator import inject_fault

        inject_fault(emulator["DJQ_EMULATOR_HOME"], "status_fail")
        with pytest.raises(CommandError, match="Failed to fetch ads"):
            asyncio.run(BatchSystem(make_job()).query(["1.0"]))
