"""PBS Pro / Torque: job script, memory rounding, qstat parsers on recorded emulator outputs
and a hand-written PBS Pro document, status-query strategy, and -E pbs runs (emulated)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dask_jobqueue import PBSCluster
from dask_jobqueue._shell import CommandError, CommandResult
from dask_jobqueue.pbs import (
    PBSJob,
    match_job_ids,
    parse_qstat_json,
    parse_qstat_text,
    pbs_format_bytes_ceil,
    pbs_job_status,
)
from dask_jobqueue.tracking import JobState

from .fakes import engine_with, query
from .scheduler_suite import Backend, SchedulerSuite, emulator, run, wait_until  # noqa: F401

DATA = Path(__file__).parent / "data" / "pbs"


def _job(**kwargs):
    options = {"cores": 8, "memory": "28GB", "processes": 4, **kwargs}
    return PBSJob("tcp://127.0.0.1:8786", name="w-0", **options)


# ---------------------------------------------------------------------------- job script


def test_header_and_script(tmp_path):
    logs = str(tmp_path / "logs")
    job = _job(
        queue="regular",
        account="acct",
        walltime="02:00:00",
        log_directory=logs,
        job_extra_directives=["-V"],
        job_script_prologue=["module load python"],
    )
    lines = job.job_script().splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert lines[2:11] == [
        "#PBS -N dask-worker",
        "#PBS -q regular",
        "#PBS -A acct",
        "#PBS -l select=1:ncpus=8:mem=27GB",
        "#PBS -l walltime=02:00:00",
        f"#PBS -e {logs}/",
        f"#PBS -o {logs}/",
        "#PBS -V",
        "module load python",
    ]
    assert "--nworkers 4" in lines[-1] and "--nthreads 2" in lines[-1]


def test_minimal_header_has_no_optional_directives(monkeypatch):
    monkeypatch.delenv("PBS_ACCOUNT", raising=False)
    header = _job().job_header
    assert header.splitlines() == [
        "#PBS -N dask-worker",
        "#PBS -l select=1:ncpus=8:mem=27GB",
        "#PBS -l walltime=00:30:00",  # jobqueue.yaml default
    ]


def test_resource_spec_override_and_torque_style():
    assert "#PBS -l select=2:ncpus=4\n" in _job(resource_spec="select=2:ncpus=4").job_header + "\n"
    header = _job(resource_spec="nodes=1:ppn=8,mem=24gb").job_header
    assert "#PBS -l nodes=1:ppn=8,mem=24gb" in header
    assert "select=" not in header


def test_account_from_environment(monkeypatch):
    monkeypatch.setenv("PBS_ACCOUNT", "envacct")
    assert "#PBS -A envacct" in _job().job_header
    assert "#PBS -A given" in _job(account="given").job_header


def test_project_is_the_old_name_of_account():
    with pytest.warns(FutureWarning, match="project has been renamed to account"):
        job = _job(project="old")
    assert "#PBS -A old" in job.job_header


def test_directives_skip():
    header = _job(walltime="00:10:00", job_directives_skip=["walltime"]).job_header
    assert "walltime" not in header


@pytest.mark.parametrize(
    "nbytes, expected",
    [
        (28_000_000_000, "27GB"),
        (8_000_000_000, "7630MB"),
        (10 * 2**30, "10GB"),
        (10 * 2**30 + 1, "11GB"),
        (2**30, "1024MB"),
        (10 * 2**20, "10MB"),
        (10 * 2**20 - 1, "10240kB"),
        (5000, "5000B"),
        (10 * 2**10, "10kB"),
        (1, "1B"),
    ],
)
def test_pbs_format_bytes_ceil(nbytes, expected):
    assert pbs_format_bytes_ceil(nbytes) == expected


def test_full_job_ids_are_kept():
    job = _job()
    # qsub prints the whole id alone on a line (PBS Pro and Torque alike)
    assert job.job_id_from_submit_output("12.server\n") == "12.server"
    assert (
        job.job_id_from_submit_output("4815162.pbs01.example.org\n") == "4815162.pbs01.example.org"
    )
    assert job.job_id_from_submit_output("654321\n") == "654321"
    # a submit filter's notice before it is not taken for the id
    notice = "qsub: job will be routed to queue workq by the submit hook\n4815163.pbs01\n"
    assert job.job_id_from_submit_output(notice) == "4815163.pbs01"
    with pytest.raises(ValueError, match="Could not parse the job id"):
        job.job_id_from_submit_output("qsub: Unknown queue\n")


def test_output_files_match_pbs_naming(tmp_path):
    job = _job(log_directory=str(tmp_path))
    assert job.output_files("12.server") == [
        tmp_path / "dask-worker.e12",
        tmp_path / "dask-worker.o12",
    ]
    assert _job().output_files("7.pbs01")[0] == Path.cwd() / "dask-worker.e7"


# ---------------------------------------------------------------------------- parsers


def test_parse_qstat_json_recorded_mixed_states():
    statuses = parse_qstat_json((DATA / "qstat_f_json_x.txt").read_text())
    assert (statuses["1.server"].state, statuses["1.server"].exit_code) == (JobState.FINISHED, 0)
    assert (statuses["2.server"].state, statuses["2.server"].exit_code) == (JobState.FAILED, 3)
    assert statuses["3.server"].state == JobState.TIMED_OUT
    assert statuses["3.server"].exit_code == -29
    assert statuses["4.server"].state == JobState.CANCELLED  # qdel of a running job: 271
    assert statuses["5.server"].state == JobState.RUNNING
    assert (statuses["6.server"].state, statuses["6.server"].reason) == (
        JobState.HELD,
        "Job held by user",
    )
    assert statuses["8.server"].state == JobState.QUEUED
    assert statuses["8.server"].reason.startswith(
        "Not Running: Insufficient amount of resource: ncpus"
    )
    assert statuses["9.server"].state == JobState.CANCELLED  # deleted while queued
    assert statuses["9.server"].reason == "Job deleted before it ran"
    assert "999.server" not in statuses  # qstat said "Unknown Job Id" on stderr, exit 153
    assert "Unknown Job Id 999.server" in (DATA / "qstat_f_json_x.stderr.txt").read_text()


def test_parse_qstat_json_without_jobs():
    assert parse_qstat_json((DATA / "qstat_f_json_x_unknown_only.txt").read_text()) == {}


def test_parse_qstat_json_handwritten_real_document():
    statuses = parse_qstat_json((DATA / "pbspro_2022_qstat_f_F_json_handwritten.json").read_text())
    queued = statuses["4815162.pbs01"]
    assert queued.state == JobState.QUEUED and queued.native_state == "Q"
    assert (
        queued.reason == "Not Running: Insufficient amount of resource: ncpus (R: 8 A: 4 T: 2304)"
    )
    assert statuses["4815163.pbs01"].state == JobState.RUNNING
    assert statuses["4815163.pbs01"].reason is None
    held = statuses["4815164.pbs01"]
    assert (held.state, held.reason) == (JobState.HELD, "job held, too many failed attempts to run")
    assert statuses["4815160.pbs01"].state == JobState.TIMED_OUT
    assert statuses["4815161.pbs01"].state == JobState.CANCELLED


def test_parse_qstat_json_survives_unescaped_variables():
    # Some PBS Pro versions print exported values verbatim: backslashes and quotes break JSON.
    broken = (
        '{"timestamp":1,"pbs_version":"19.1.3","pbs_server":"s","Jobs":{"5.s":{"job_state":"R",'
        '"Variable_List":{\n"PS1":"\\u@\\h:\\w\\$ ","QUOTED":"say "hi""\n},\n"queue":"workq"}}}'
    )
    statuses = parse_qstat_json(broken)
    assert statuses["5.s"].state == JobState.RUNNING
    with pytest.raises(ValueError, match="invalid JSON"):
        parse_qstat_json('{"Jobs": {"5.s": {"job_state": "R",')


def test_parse_qstat_text_pbs_pro_recorded():
    statuses = parse_qstat_text((DATA / "qstat_f.txt").read_text())
    # without -x PBS Pro does not print finished jobs (stderr: "use -x or -H")
    assert set(statuses) == {"5.server", "6.server", "7.server", "8.server"}
    assert statuses["8.server"].reason.startswith("Not Running:")
    assert statuses["6.server"].state == JobState.HELD


def test_parse_qstat_text_torque_recorded():
    statuses = parse_qstat_text((DATA / "torque_qstat_f.txt").read_text())
    assert (statuses["1.server"].state, statuses["1.server"].native_state) == (
        JobState.FINISHED,
        "C",
    )
    assert (statuses["2.server"].state, statuses["2.server"].exit_code) == (JobState.FAILED, 3)
    assert statuses["3.server"].state == JobState.TIMED_OUT  # exit_status -11 on Torque
    assert statuses["4.server"].state == JobState.CANCELLED
    assert statuses["5.server"].state == JobState.RUNNING
    assert (statuses["6.server"].state, statuses["6.server"].reason) == (
        JobState.HELD,
        "Job held by user",
    )
    assert statuses["8.server"].state == JobState.QUEUED
    assert statuses["9.server"].state == JobState.CANCELLED
    assert "999.server" not in statuses


def test_parse_qstat_text_continuation_lines():
    text = (
        "Job Id: 12.pbs01\n"
        "    Job_Name = dask-worker\n"
        "    job_state = Q\n"
        "    comment = Not Running: Insufficient amount of resource: ncpus (R: 8 A: 0\n"
        "\t T: 64)\n"
        "    Variable_List = PBS_O_HOME=/home/u,PBS_O_LANG=C,\n"
        "\tPBS_O_WORKDIR=/home/u\n"
        "\n"
    )
    (status,) = parse_qstat_text(text).values()
    assert status.reason == "Not Running: Insufficient amount of resource: ncpus (R: 8 A: 0T: 64)"


@pytest.mark.parametrize(
    "args, state, exit_code",
    [
        (("F", 0), JobState.FINISHED, 0),
        (("F", 1), JobState.FAILED, 1),
        (("F", -29), JobState.TIMED_OUT, -29),
        (("F", 271), JobState.CANCELLED, 143),
        (("F", 265), JobState.CANCELLED, 137),
        (("F", 267), JobState.FAILED, 139),  # SIGSEGV
        (("F", -1), JobState.FAILED, -1),
        (("X", "0"), JobState.FINISHED, 0),
        (("C", -11, None, None, "torque"), JobState.TIMED_OUT, -11),
        (("C", -29, None, None, "torque"), JobState.FAILED, -29),
        (("W",), JobState.QUEUED, None),
        (("T",), JobState.QUEUED, None),
        (("E",), JobState.RUNNING, None),
        (("B",), JobState.RUNNING, None),
        (("S",), JobState.HELD, None),
        (("M",), JobState.LOST, None),
    ],
)
def test_pbs_job_status_table(args, state, exit_code):
    status = pbs_job_status(*args)
    assert (status.state, status.exit_code) == (state, exit_code)


def test_held_reason_from_hold_types():
    assert pbs_job_status("H", hold_types="s").reason == "Job held by system"
    assert pbs_job_status("H", hold_types="uo").reason == "Job held by user and operator"
    assert pbs_job_status("H", comment="Job held by admin").reason == "Job held by admin"


def test_match_job_ids_by_sequence_and_server():
    statuses = parse_qstat_json((DATA / "pbspro_2022_qstat_f_F_json_handwritten.json").read_text())
    ids = ["4815162.pbs01.cluster.example.org", "4815163", "4815164.other", "4815160.pbs01"]
    matched = match_job_ids(ids, statuses)
    assert set(matched) == {"4815162.pbs01.cluster.example.org", "4815163", "4815160.pbs01"}


# ---------------------------------------------------------------------------- query strategy


def _engine(monkeypatch, answer):
    return engine_with(_job(), answer, monkeypatch)


def test_query_uses_one_json_call_and_partial_output(monkeypatch):
    stdout = (DATA / "qstat_f_json_x.txt").read_text()
    stderr = (DATA / "qstat_f_json_x.stderr.txt").read_text()  # Unknown Job Id 999.server

    def answer(argv):
        raise CommandError(argv, 153, stdout, stderr)

    ids = ["1.server", "5.server", "8.server", "999.server"]
    engine, runner = _engine(monkeypatch, answer)
    result = query(engine, ids)
    assert runner.calls == [["qstat", "-f", "-F", "json", "-x", *ids]]
    assert engine.commands["status"] == 1
    assert set(result) == {"1.server", "5.server", "8.server"}
    assert result["5.server"].state == JobState.RUNNING
    assert engine.facts.get("pbs_flavour") != "torque"
    # nothing learned against JSON: the next poll uses it again
    query(engine, ["5.server"])
    assert runner.calls[-1] == ["qstat", "-f", "-F", "json", "-x", "5.server"]


def test_query_all_unknown_is_empty_not_an_error(monkeypatch):
    def answer(argv):
        raise CommandError(
            argv, 153, "", "qstat: Unknown Job Id 1.server\nqstat: Unknown Job Id 2.server\n"
        )

    engine, runner = _engine(monkeypatch, answer)
    assert query(engine, ["1.server", "2.server"]) == {}
    assert len(runner.calls) == 1 and engine.commands["status"] == 1
    assert engine.facts.get("pbs_flavour") != "torque"


def test_query_connection_failure_raises(monkeypatch):
    def answer(argv):
        raise CommandError(argv, 1, "", "qstat: cannot connect to server pbs01 (errno=111)\n")

    engine, runner = _engine(monkeypatch, answer)
    with pytest.raises(CommandError, match="cannot connect to server"):
        query(engine, ["1.server"])
    # an outage is not mistaken for Torque rejecting -F json: nothing else tried or learned
    assert runner.calls == [["qstat", "-f", "-F", "json", "-x", "1.server"]]
    assert engine.facts == {}


def test_query_torque_rejecting_json_switches_to_text(monkeypatch):
    text = (DATA / "torque_qstat_f.txt").read_text()

    def answer(argv):
        if "-F" in argv:
            raise CommandError(
                argv, 2, "", "qstat: invalid option -- 'F'\nusage: qstat [-f [-1]] ...\n"
            )
        return CommandResult(argv, text, "")

    engine, runner = _engine(monkeypatch, answer)
    result = query(engine, ["1.server", "3.server"])
    assert runner.calls == [
        ["qstat", "-f", "-F", "json", "-x", "1.server", "3.server"],
        ["qstat", "-f", "1.server", "3.server"],
    ]
    assert result["3.server"].state == JobState.TIMED_OUT
    assert engine.facts["pbs_flavour"] == "torque"
    # learnt once: the next poll goes straight to the text form
    runner.calls.clear()
    assert query(engine, ["1.server"])["1.server"].state == result["1.server"].state
    assert runner.calls == [["qstat", "-f", "1.server"]]
    assert engine.commands["status"] == 3


def test_query_torque_printing_xml_switches_to_text(monkeypatch):
    xml = (DATA / "torque_qstat_f_json_x.txt").read_text()
    text = (DATA / "torque_qstat_f.txt").read_text()

    def answer(argv):
        return CommandResult(argv, xml if "-F" in argv else text, "")

    engine, runner = _engine(monkeypatch, answer)
    result = query(engine, ["2.server"])
    assert runner.calls == [
        ["qstat", "-f", "-F", "json", "-x", "2.server"],
        ["qstat", "-f", "2.server"],
    ]
    assert engine.facts["pbs_flavour"] == "torque"
    assert (result["2.server"].state, result["2.server"].exit_code) == (JobState.FAILED, 3)
    runner.calls.clear()
    query(engine, ["2.server"])
    assert runner.calls == [["qstat", "-f", "2.server"]]


def test_query_invalid_json_falls_back_to_text(monkeypatch):
    text = (DATA / "qstat_f.txt").read_text()

    def answer(argv):
        if "-F" in argv:
            return CommandResult(argv, '{"Jobs": {"5.server": {"job_state": "R", ', "")
        return CommandResult(argv, text, "")

    engine, runner = _engine(monkeypatch, answer)
    result = query(engine, ["5.server"])
    assert runner.calls == [
        ["qstat", "-f", "-F", "json", "-x", "5.server"],
        ["qstat", "-f", "-x", "5.server"],
    ]
    assert result["5.server"].state == JobState.RUNNING
    # PBS Pro printed broken JSON once: still PBS Pro, JSON is tried again next time
    assert engine.facts.get("pbs_flavour") != "torque"
    runner.calls.clear()
    query(engine, ["5.server"])
    assert runner.calls[0] == ["qstat", "-f", "-F", "json", "-x", "5.server"]


# ---------------------------------------------------------------------------- end to end


def test_submit_error_messages_are_recorded():
    assert (DATA / "qsub_bad_queue.stderr.txt").read_text().strip() == "qsub: Unknown queue"
    assert (
        "Unknown queue MSG=requested queue not found"
        in (DATA / "torque_qsub_bad_queue.stderr.txt").read_text()
    )


def _qstat_queue_ids() -> set[str]:
    """Ids the emulator's plain ``qstat`` table lists as not yet completed."""
    ids = set()
    for line in run(["qstat"]).splitlines():
        fields = line.split()
        if len(fields) >= 6 and re.match(r"^\d+\.", fields[0]) and fields[-2] not in ("C", "F"):
            ids.add(fields[0])
    return ids


def _backend(bad_queue_message: str, hold_reason: str) -> Backend:
    return Backend(
        name="pbs",
        cluster_cls=PBSCluster,
        kwargs={"cores": 1, "memory": "1GB", "processes": 1, "walltime": "00:10:00"},
        queue_ids=_qstat_queue_ids,
        cancel_argv=lambda job_id: ["qdel", job_id],
        bad_queue_kwargs={"queue": "nosuchq"},
        bad_queue_message=bad_queue_message,
        hold_kwargs={"job_extra_directives": ["-h"]},
        hold_reason=hold_reason,
        short_walltime={"walltime": "00:00:08"},
        walltime_wait=45,
        timeout=60,
    )


PBS_PRO = _backend("qsub: Unknown queue", "Job held by user")
TORQUE = _backend(
    "qsub: submit error (Unknown queue MSG=requested queue not found)", "held by user"
)


@pytest.mark.env("pbs")
@pytest.mark.usefixtures("emulator")
class TestEmulatedPBS(SchedulerSuite):
    backend = PBS_PRO
    emulator_flavour = "pbs"
    emulator_options = {"kill_delay": 0.5}


@pytest.mark.env("pbs")
@pytest.mark.usefixtures("emulator")
class TestEmulatedTorque(SchedulerSuite):
    backend = TORQUE
    emulator_flavour = "torque"
    emulator_options = {"kill_delay": 0.5}
