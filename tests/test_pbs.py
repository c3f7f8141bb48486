"""PBS Pro / OpenPBS / Torque: job script, memory rounding, qstat parsers on outputs recorded
from a real OpenPBS 23.06.06 (Torque: emulated, see data/pbs/README.md), the status-query
strategy, ``-E pbs`` runs against a real OpenPBS and ``-E torque`` runs against the emulator."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from distributed import Client

from dask_jobqueue import PBSCluster
from dask_jobqueue._shell import CommandError, CommandResult
from dask_jobqueue.dialects import pbs as pbs_dialects
from dask_jobqueue.pbs import (
    PBS_PRO,
    PBSJob,
    match_job_ids,
    parse_pbs_version,
    parse_qstat_json,
    parse_qstat_text,
    pbs_flavour,
    pbs_format_bytes_ceil,
    pbs_job_status,
    qstat_error_is_harmless,
)
from dask_jobqueue.tracking import JobState

from .fakes import cancel, engine_with, query
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
    # "-e dir/": OpenPBS writes dir/12.server.ER (seen on OpenPBS 23.06.06), Torque NAME.e12
    assert job.output_files("12.server") == [
        tmp_path / "12.server.ER",
        tmp_path / "dask-worker.e12",
        tmp_path / "12.server.OU",
        tmp_path / "dask-worker.o12",
    ]
    assert _job().output_files("7.pbs01")[0] == Path.cwd() / "dask-worker.e7"


def test_scale_to_zero_by_memory_or_cores_is_not_an_error():
    from dask_jobqueue._values import parse_memory

    with PBSCluster(
        cores=2, memory="4GB", scheduler_options={"dashboard_address": ":0"}
    ) as cluster:
        for how in ({"memory": "0GB"}, {"memory": 0}, {"cores": 0}):
            cluster.scale(**how)
            assert not cluster.worker_spec
        with pytest.raises(ValueError, match="memory"):
            cluster.scale(memory="-1GB")
    with pytest.raises(ValueError, match="memory='0GB' must be a positive size"):
        parse_memory("0GB", "memory")  # everywhere else zero stays refused


# ---------------------------------------------------------------------------- parsers

REAL = DATA / "openpbs-23.06.06"  # recorded from a real OpenPBS 23.06.06, see data/pbs/README.md


def _out(name: str) -> str:
    return (REAL / f"{name}.stdout").read_text()


def _err(name: str) -> str:
    return (REAL / f"{name}.stderr").read_text()


def _rc(name: str) -> int:
    return int((REAL / f"{name}.rc").read_text())


def _one(name: str, parse=parse_qstat_json):
    (status,) = parse(_out(name)).values()
    return status


def test_recordings_are_what_their_names_say():
    assert "23.06.06" in _out("version")
    assert (REAL / "qstat_f_json_running.cmd").read_text().split()[:4] == [
        "qstat",
        "-f",
        "-F",
        "json",
    ]


@pytest.mark.parametrize(
    "name, state, reason",
    [
        ("qstat_f_json_running", JobState.RUNNING, None),
        ("qstat_f_json_queued", JobState.QUEUED, "Not Running: Not enough free nodes available"),
        (
            "qstat_f_json_ncpus999",
            JobState.QUEUED,
            "Can Never Run: Insufficient amount of resource: ncpus (R: 999 A: 2 T: 2)",
        ),
        ("qstat_f_json_held_at_submit", JobState.HELD, "Job held by user"),  # from Hold_Types
        (
            "qstat_f_json_numeric_name",
            JobState.QUEUED,
            "Not Running: Not enough free nodes available",
        ),
        ("qstat_f_json_env_space", JobState.QUEUED, "Not Running: Not enough free nodes available"),
    ],
)
def test_parse_qstat_json_recorded_waiting_and_running(name, state, reason):
    status = _one(name)
    assert (status.state, status.reason) == (state, reason)


def test_parse_qstat_json_recorded_qhold_comment_is_the_reason():
    status = _one("qstat_f_json_held")
    assert status.state == JobState.HELD
    assert status.reason.startswith("Job held by root on ")


def test_parse_qstat_json_recorded_final_states():
    finished = _one("qstat_x_f_json_finished")
    assert (finished.state, finished.exit_code, finished.native_state) == (
        JobState.FINISHED,
        0,
        "F",
    )
    # qdel of a queued job: state F, no Exit_status, comment "... and terminated"
    deleted = _one("qstat_x_f_json_deleted_queued")
    assert (deleted.state, deleted.exit_code) == (JobState.CANCELLED, None)
    assert deleted.reason.endswith("and terminated")
    # qdel of a running job: Exit_status 0, only the comment tells that it was deleted
    killed = _one("qstat_x_f_json_deleted_running")
    assert killed.state == JobState.CANCELLED
    assert killed.reason.endswith("and terminated by root@vm-pbs")
    killed = _one("qstat_x_f_json_qdel_running_sleep")
    assert (killed.state, killed.exit_code) == (JobState.CANCELLED, 0)
    walltime = _one("qstat_x_f_json_walltime_killed")
    assert (walltime.state, walltime.exit_code) == (JobState.TIMED_OUT, -29)


def test_parse_qstat_json_numeric_job_name():
    assert '"Job_Name":123,' in _out("qstat_f_json_numeric_name")  # OpenPBS 23.06.06 bug
    assert set(parse_qstat_json(_out("qstat_f_json_numeric_name"))) == {"23.vm-pbs"}


def test_parse_qstat_json_arrays():
    assert set(parse_qstat_json(_out("qstat_f_json_array"))) == {"22[].vm-pbs"}
    statuses = parse_qstat_json(_out("qstat_f_json_array_t"))
    assert set(statuses) == {"22[].vm-pbs"} | {f"22[{i}].vm-pbs" for i in range(1, 5)}
    assert _one("qstat_x_f_json_array").state == JobState.FINISHED


@pytest.mark.parametrize("name", ["qstat_f_json_all", "qstat_x_f_json_env_backslash_INVALID_JSON"])
def test_parse_qstat_json_survives_the_backslash_bug(name):
    # `qsub -v FOO=a\c` makes OpenPBS 23.06.06 print Submit_arguments unescaped: invalid JSON,
    # for every job of a listing that includes that job.
    with pytest.raises(json.JSONDecodeError):
        json.loads(_out(name))
    statuses = parse_qstat_json(_out(name))
    assert "25.vm-pbs" in statuses
    if name == "qstat_f_json_all":
        assert len(statuses) == 7
        assert statuses["15.vm-pbs"].state == JobState.RUNNING
        assert statuses["19.vm-pbs"].reason.startswith("Can Never Run:")


def test_parse_qstat_json_gives_up_on_garbage():
    with pytest.raises(ValueError, match="invalid JSON"):
        parse_qstat_json('{"Jobs": {"5.s": {"job_state": "R",')


def test_parse_qstat_json_without_jobs():
    # an unknown id: rc 153, the JSON document has no "Jobs"
    assert _rc("qstat_unknown_job") == 153
    assert parse_qstat_json(_out("qstat_unknown_job")) == {}


def test_parse_qstat_text_recorded():
    statuses = parse_qstat_text(_out("qstat_f_all"))
    assert set(statuses) == {
        "15.vm-pbs",
        "16.vm-pbs",
        "19.vm-pbs",
        "22[].vm-pbs",
        "23.vm-pbs",
        "24.vm-pbs",
        "25.vm-pbs",
    }
    assert statuses["15.vm-pbs"].state == JobState.RUNNING
    # qstat -f wrapped this comment ("A: \n\t2 T: 2)"); the text and JSON forms agree
    assert statuses["19.vm-pbs"].reason == _one("qstat_f_json_ncpus999").reason
    assert _one("qstat_f_held", parse_qstat_text).state == JobState.HELD
    finished = _one("qstat_x_f_finished", parse_qstat_text)
    assert (finished.state, finished.exit_code) == (JobState.FINISHED, 0)


def test_parse_qstat_text_torque_emulated():
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
        (
            ("F", 0, "Job run at Mon Nov 30 at 13:17 on (h:ncpus=1) and finished"),
            JobState.FINISHED,
            0,
        ),
        (
            ("F", 0, "Job run at Mon Nov 30 at 13:17 on (h:ncpus=1) and terminated by u@h"),
            JobState.CANCELLED,
            0,
        ),
        (
            ("F", 271, "Job run at Mon Nov 30 at 13:17 on (h:ncpus=1) and terminated by u@h"),
            JobState.CANCELLED,
            143,
        ),
        (
            ("F", -29, "Job run at Mon Nov 30 at 13:17 on (h:ncpus=1) and terminated"),
            JobState.TIMED_OUT,
            -29,
        ),
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


def test_match_job_ids_by_sequence_server_and_array_index():
    statuses = {
        **parse_qstat_json(_out("qstat_f_json_array_t")),
        **parse_qstat_json(_out("qstat_f_json_running")),
    }
    ids = ["14.vm-pbs.example.org", "22[]", "22[3].vm-pbs", "22[9].vm-pbs", "14.other", "15.vm-pbs"]
    matched = match_job_ids(ids, statuses)
    assert set(matched) == {"14.vm-pbs.example.org", "22[]", "22[3].vm-pbs"}


def test_job_ids_from_recorded_qsub_output():
    job = _job()
    assert job.job_id_from_submit_output(_out("qsub_simple")) == "14.vm-pbs"
    assert job.job_id_from_submit_output(_out("qsub_array")) == "22[].vm-pbs"
    assert job.job_id_from_submit_output("22[3].vm-pbs\n") == "22[3].vm-pbs"
    assert _job().output_files("22[3].vm-pbs")[0].name == "dask-worker.e22.3"


@pytest.mark.parametrize(
    "name, harmless",
    [
        ("qstat_unknown_job", True),  # rc 153 "Unknown Job Id"
        ("qstat_unknown_job_plain", True),
        ("qstat_f_finished_without_x", True),  # rc 35 "Job has finished, use -x or -H"
    ],
)
def test_qstat_error_is_harmless_on_recorded_errors(name, harmless):
    assert _rc(name) != 0
    assert qstat_error_is_harmless(_rc(name), _err(name)) is harmless


def test_qstat_error_is_harmless_rejects_real_failures():
    assert not qstat_error_is_harmless(1, "qstat: cannot connect to server pbs01 (errno=111)\n")
    assert not qstat_error_is_harmless(None, _err("qstat_unknown_job"))  # killed on timeout
    assert not qstat_error_is_harmless(153, "")
    assert not qstat_error_is_harmless(
        153, _err("qstat_unknown_job") + "qstat: cannot connect to server pbs01\n"
    )
    assert qstat_error_is_harmless(153, "qstat: Unknown Job Id Error 7.server\n")  # Torque


def test_recorded_submit_errors():
    assert (_rc("qsub_unknown_queue"), _err("qsub_unknown_queue").strip()) == (
        170,
        "qsub: Unknown queue",
    )
    assert _rc("qsub_bad_walltime") == 166
    assert "Illegal attribute or resource value Resource_List.walltime" in _err("qsub_bad_walltime")
    assert (_rc("qdel_finished"), _err("qdel_finished").strip()) == (
        35,
        "qdel: Job has finished 14.vm-pbs",
    )
    assert (_rc("qdel_finished_again"), _err("qdel_finished_again").strip()) == (
        35,
        "qdel: Job has finished 55.vm-pbs",
    )
    assert (
        "Unknown queue MSG=requested queue not found"
        in (DATA / "torque_qsub_bad_queue.stderr.txt").read_text()
    )


# ---------------------------------------------------------------------------- query strategy


def _engine(answer):
    return engine_with(_job(), answer)


def test_query_uses_one_json_call_and_partial_output():
    stdout = _out("qstat_f_json_running")
    stderr = _err("qstat_unknown_job")

    def answer(argv):
        raise CommandError(argv, 153, stdout, stderr)

    ids = ["14.vm-pbs", "99999.vm-pbs"]
    engine, runner = _engine(answer)
    result = query(engine, ids)
    assert runner.calls == [["qstat", "-f", "-F", "json", "-x", *ids]]
    assert engine.commands["status"] == 1
    assert set(result) == {"14.vm-pbs"} and result["14.vm-pbs"].state == JobState.RUNNING
    assert engine.facts.get("pbs_flavour") != "torque"
    # nothing learned against JSON: the next poll uses it again
    query(engine, ["14.vm-pbs"])
    assert runner.calls[-1] == ["qstat", "-f", "-F", "json", "-x", "14.vm-pbs"]


def test_query_all_unknown_is_empty_not_an_error():
    def answer(argv):
        raise CommandError(argv, 153, _out("qstat_unknown_job"), _err("qstat_unknown_job"))

    engine, runner = _engine(answer)
    assert query(engine, ["99999.vm-pbs"]) == {}
    assert len(runner.calls) == 1 and engine.commands["status"] == 1
    assert engine.facts.get("pbs_flavour") != "torque"


def test_query_connection_failure_raises():
    def answer(argv):
        raise CommandError(argv, 1, "", "qstat: cannot connect to server pbs01 (errno=111)\n")

    engine, runner = _engine(answer)
    with pytest.raises(CommandError, match="cannot connect to server"):
        query(engine, ["1.server"])
    # an outage is not mistaken for Torque rejecting -F json: nothing else tried or learned
    assert runner.calls == [["qstat", "-f", "-F", "json", "-x", "1.server"]]
    assert engine.facts == {}


def test_query_torque_rejecting_json_switches_to_text():
    text = (DATA / "torque_qstat_f.txt").read_text()

    def answer(argv):
        if "-F" in argv:
            raise CommandError(
                argv, 2, "", "qstat: invalid option -- 'F'\nusage: qstat [-f [-1]] ...\n"
            )
        return CommandResult(argv, text, "")

    engine, runner = _engine(answer)
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


def test_query_torque_printing_xml_switches_to_text():
    xml = (DATA / "torque_qstat_f_json_x.txt").read_text()
    text = (DATA / "torque_qstat_f.txt").read_text()

    def answer(argv):
        return CommandResult(argv, xml if "-F" in argv else text, "")

    engine, runner = _engine(answer)
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


def test_query_unreadable_json_falls_back_to_text_for_that_poll():
    def answer(argv):
        if "-F" in argv:
            return CommandResult(argv, '{"Jobs": {"14.vm-pbs": {"job_state": "R", ', "")
        return CommandResult(argv, _out("qstat_f_running"), "")

    engine, runner = _engine(answer)
    result = query(engine, ["14.vm-pbs"])
    assert runner.calls == [
        ["qstat", "-f", "-F", "json", "-x", "14.vm-pbs"],
        ["qstat", "-f", "-x", "14.vm-pbs"],
    ]
    assert result["14.vm-pbs"].state == JobState.RUNNING
    # PBS Pro printed broken JSON once: still PBS Pro, JSON is tried again next time
    assert engine.facts.get("pbs_flavour") != "torque"
    runner.calls.clear()
    query(engine, ["14.vm-pbs"])
    assert runner.calls[0] == ["qstat", "-f", "-F", "json", "-x", "14.vm-pbs"]


@pytest.mark.parametrize(
    ("version", "first_poll", "arrays"),
    [
        ("pbs_version = 23.06.06\n", ["qstat", "-f", "-F", "json", "-x", "1.srv"], "-J"),
        ("Version: 6.1.3\n", ["qstat", "-f", "1.srv"], "-t"),
    ],
)
def test_the_flavour_told_by_qstat_version_picks_its_dialect(version, first_poll, arrays):
    flavour = pbs_flavour(parse_pbs_version(version))
    assert flavour is (PBS_PRO if arrays == "-J" else pbs_dialects.TORQUE)
    assert pbs_flavour({}) is None and _job().array_support_for({}) is None

    def answer(argv):
        if "-F" in argv:
            return CommandResult(
                argv, _out("qstat_f_json_running").replace("14.vm-pbs", "1.srv"), ""
            )
        return CommandResult(argv, (DATA / "torque_qstat_f.txt").read_text(), "")

    engine, runner = _engine(answer)
    engine.facts.update(parse_pbs_version(version))
    query(engine, ["1.srv"])
    assert runner.calls == [first_poll]
    support = _job().array_support_for(engine.facts)
    assert support is flavour.array_support and support.submit_args(0, 3) == [arrays, "0-3"]


# ---------------------------------------------------------------------------- end to end


def _qstat_queue_ids() -> set[str]:
    """Ids that ``qstat`` lists as not yet finished (``F``, subjob ``X``, Torque ``C``),
    subjobs included."""
    ids = set()
    # -t lists the subjobs of job arrays (65[0].server) too; the emulated Torque has no -t
    for line in (run(["qstat", "-t"]) or run(["qstat"])).splitlines():
        fields = line.split()
        if (
            len(fields) >= 6
            and re.match(r"^\d+(\[\d*\])?\.", fields[0])
            and fields[-2] not in ("C", "F", "X")
        ):
            ids.add(fields[0])
    return ids


def _backend(bad_queue_message: str, hold_reason: str, **options) -> Backend:
    return Backend(
        **{
            "name": "pbs",
            "cluster_cls": PBSCluster,
            "kwargs": {"cores": 1, "memory": "1GB", "processes": 1, "walltime": "00:10:00"},
            "queue_ids": _qstat_queue_ids,
            "cancel_argv": lambda job_id: ["qdel", job_id],
            "bad_queue_kwargs": {"queue": "nosuchq"},
            "bad_queue_message": bad_queue_message,
            "hold_kwargs": {"job_extra_directives": ["-h"]},
            "hold_reason": hold_reason,
            "short_walltime": {"walltime": "00:00:08"},
            "walltime_wait": 45,
            "timeout": 60,
            **options,
        }
    )


# The real OpenPBS of ci/pbs/run.sh: the mom enforces walltime every $check_poll_time seconds.
OPENPBS = _backend(
    "qsub: Unknown queue",
    "Job held by user",
    short_walltime={"walltime": "00:00:10"},
    walltime_wait=90,
)
TORQUE = _backend(
    "qsub: submit error (Unknown queue MSG=requested queue not found)", "held by user"
)


@pytest.fixture(scope="class")
def real_pbs():
    """The ``qsub``/``qstat`` on PATH must be PBS's (Grid Engine's /usr/bin/qsub may shadow them)."""
    version = run(["qstat", "--version"])
    if "pbs_version" not in version:
        pytest.fail("qstat on PATH is not PBS's: put /opt/pbs/bin first on PATH (ci/pbs/README.md)")
    return version


@pytest.mark.env("pbs")
@pytest.mark.usefixtures("real_pbs")
class TestRealPBS(SchedulerSuite):
    backend = OPENPBS

    def test_job_that_can_never_run_shows_pbs_comment(self):
        with self.cluster(resource_spec="select=1:ncpus=999") as cluster:
            cluster.scale(1)
            assert wait_until(
                lambda: any((r.reason or "").startswith("Can Never Run:") for r in cluster.jobs), 60
            ), repr(cluster.jobs)
            (record,) = cluster.jobs
            assert record.state == JobState.QUEUED
            assert "Insufficient amount of resource: ncpus (R: 999" in record.reason
            ids = {record.job_id}
            assert ids <= self.backend.queue_ids()
        self.assert_gone_from_queue(ids)

    def test_tls_workers_connect_and_compute(self, tmp_path):
        with (
            self.cluster(security=True, shared_temp_directory=str(tmp_path)) as cluster,
            Client(cluster, security=cluster.security) as client,
        ):
            assert cluster.scheduler_address.startswith("tls://")
            cluster.scale(1)
            client.wait_for_workers(1, timeout=self.backend.timeout)
            (worker,) = client.scheduler_info()["workers"]
            assert worker.startswith("tls://")
            assert client.submit(lambda x: x + 1, 1).result(timeout=30) == 2
            ids = {job.job_id for job in cluster.workers.values()}
        self.assert_gone_from_queue(ids)

    def test_scale_to_zero_empties_workers_and_spec(self):
        with self.cluster() as cluster, Client(cluster) as client:
            cluster.scale(2)
            client.wait_for_workers(2, timeout=self.backend.timeout)
            ids = {job.job_id for job in cluster.workers.values()}
            cluster.scale(0)
            assert wait_until(lambda: not client.scheduler_info()["workers"], 60)
            # 0.9 drops a job from cluster.workers before cancelling it
            assert not cluster.workers
            assert not cluster.worker_spec
        self.assert_gone_from_queue(ids)

    def test_scale_up_then_at_once_to_zero_leaves_nothing(self):
        with self.cluster() as cluster:
            cluster.scale(2)
            cluster.scale(0)
            # the corrections both calls asked for, done: scale(2)'s jobs may have been
            # submitted before scale(0) (then they are cancelled; a running PBS job stays
            # listed as exiting for a while)
            cluster.sync(cluster._correct_state)
            assert not cluster.worker_spec and not cluster.workers
            ids = {r.job_id for r in cluster.jobs}
            self.assert_gone_from_queue(ids)
            submits = cluster.command_counts["submit"]
            time.sleep(2)  # nothing is submitted late: the counter would catch it
            assert cluster.command_counts["submit"] == submits
            assert {r.job_id for r in cluster.jobs} == ids

    def test_grouped_workers_scale_by_whole_jobs(self):
        with self.cluster(cores=2, processes=2, memory="2GB") as cluster, Client(cluster) as client:
            cluster.scale(4)  # 4 workers = 2 jobs of 2 processes
            client.wait_for_workers(4, timeout=self.backend.timeout)
            ids = {job.job_id for job in cluster.workers.values()}
            assert len(ids) == 2 and ids <= self.backend.queue_ids()
            cluster.scale(1)  # rounded up to one whole job
            assert wait_until(lambda: len(ids & self.backend.queue_ids()) == 1, 60)
            assert wait_until(lambda: len(client.scheduler_info()["workers"]) == 2, 30)
        self.assert_gone_from_queue(ids)

    def test_scale_by_cores_and_memory(self):
        with self.cluster(cores=2, processes=1, memory="2GB") as cluster, Client(cluster) as client:
            cluster.scale(cores=3)  # 2 jobs of 2 cores
            client.wait_for_workers(2, timeout=self.backend.timeout)
            ids = {job.job_id for job in cluster.workers.values()}
            assert len(ids) == 2 and ids <= self.backend.queue_ids()
            cluster.scale(memory="2GB")  # 1 job
            assert wait_until(lambda: len(ids & self.backend.queue_ids()) == 1, 60)
        self.assert_gone_from_queue(ids)

    def test_adapt_keeps_its_minimum(self):
        with self.cluster() as cluster, Client(cluster) as client:
            cluster.adapt(minimum_jobs=1, maximum_jobs=2, interval="500ms", wait_count=2)
            client.wait_for_workers(1, timeout=self.backend.timeout)
            time.sleep(4)  # idle for several adapt intervals: the minimum stays
            assert len(cluster.workers) == 1
            ids = {job.job_id for job in cluster.workers.values()}
            assert len(ids & self.backend.queue_ids()) == 1
        self.assert_gone_from_queue(ids)

    @pytest.mark.parametrize("how", [{"memory": "0GB"}, {"cores": 0}])
    def test_scale_by_memory_or_cores_to_zero(self, how):
        with self.cluster(cores=1, memory="1GB") as cluster, Client(cluster) as client:
            cluster.scale(cores=1)
            client.wait_for_workers(1, timeout=self.backend.timeout)
            ids = {job.job_id for job in cluster.workers.values()}
            cluster.scale(**how)
            assert wait_until(lambda: not client.scheduler_info()["workers"], 60)
            assert wait_until(lambda: not cluster.workers and not cluster.worker_spec, 10)
        self.assert_gone_from_queue(ids)


@pytest.mark.env("torque")
@pytest.mark.usefixtures("emulator")
class TestEmulatedTorque(SchedulerSuite):
    backend = TORQUE
    emulator_flavour = "torque"
    emulator_options = {"kill_delay": 0.5}


def test_one_qdel_per_id():
    # OpenPBS 23.06.06's server crashed on `qdel <live job> <unknown id>` (reproduced here):
    # each id gets its own qdel
    engine, runner = _engine(lambda argv: "")
    assert cancel(engine, ["1.srv", "2.srv", "3[1-2].srv"]) == []
    assert runner.calls == [["qdel", "1.srv"], ["qdel", "2.srv"], ["qdel", "3[1-2].srv"]]


def test_subjobs_of_one_array_go_as_one_range_per_qdel():
    """A range of one array is one qdel argument: recorded on the real OpenPBS, it cancels the
    running subjobs and skips a finished one (rc 0); once the whole array finished, it says
    "Job has finished" (rc 35), which only means gone."""
    assert (_rc("qdel_range_with_finished_subjob"), _err("qdel_range_with_finished_subjob")) == (
        0,
        "",
    )
    assert " X " in _out("qstat_t_range_before") and " R " in _out("qstat_t_range_before")
    after = [line.split() for line in _out("qstat_x_t_range_after").splitlines()[2:]]
    assert {fields[-2] for fields in after} == {"F"}
    finished_rc, finished_err = (
        _rc("qdel_range_of_finished_array"),
        _err("qdel_range_of_finished_array"),
    )

    def answer(argv):
        if argv[0] == "qdel" and argv[1].startswith("4086["):
            raise CommandError(argv, finished_rc, "", finished_err)
        return ""

    engine, runner = _engine(answer)
    engine.facts["pbs_flavour"] = "pro"  # qstat --version said so: its arrays, its ranges
    ids = [f"4086[{i}].vm-pbs" for i in (10, 0, 1, 2, 3, 9, 8)] + ["4090[0].vm-pbs", "88.vm-pbs"]
    assert cancel(engine, ids) == []
    assert runner.calls == [
        ["qdel", "88.vm-pbs"],
        ["qdel", "4086[0-3].vm-pbs"],
        ["qdel", "4086[8-10].vm-pbs"],
        ["qdel", "4090[0].vm-pbs"],
    ]
