"""LSF: job script, memory units, stdin submission, bjobs parsers on recorded emulator output,
and the end-to-end suite against the LSF emulator (-E lsf)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import dask
import pytest

from dask_jobqueue import CommandError, LSFCluster
from dask_jobqueue.engine import BatchSystem
from dask_jobqueue.lsf import (
    LSFJob,
    lsf_detect_units,
    lsf_format_bytes_ceil,
    lsf_status,
    parse_bjobs,
    parse_bjobs_json,
)
from dask_jobqueue.tracking import JobState

from .fakes import cancel, engine_with, query
from .scheduler_suite import Backend, SchedulerSuite, emulator, run  # noqa: F401

DATA = Path(__file__).parent / "data" / "lsf"


@pytest.fixture
def no_lsf_conf(monkeypatch, tmp_path):
    """No lsf.conf anywhere we look (so the units are LSF's default, KB)."""
    monkeypatch.setenv("LSF_ENVDIR", str(tmp_path / "none"))
    monkeypatch.delenv("LSF_CONFDIR", raising=False)


def test_header_and_script(tmp_path):
    logs = str(tmp_path / "logs")
    job = LSFJob(
        "tcp://127.0.0.1:8786",
        name="w-0",
        cores=8,
        memory="28GB",
        processes=4,
        queue="general",
        project="proj",
        walltime="00:30",
        lsf_units="mb",
        log_directory=logs,
        job_extra_directives=["-x"],
        job_script_prologue=["module load python"],
        job_script_epilogue=["echo bye"],
    )
    lines = job.job_script().splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert lines[2:14] == [
        "#BSUB -J dask-worker",
        f"#BSUB -e {logs}/dask-worker-%J.err",
        f"#BSUB -o {logs}/dask-worker-%J.out",
        "#BSUB -q general",
        '#BSUB -P "proj"',
        "#BSUB -n 8",
        '#BSUB -R "span[hosts=1]"',
        "#BSUB -M 28000",
        "#BSUB -W 00:30",
        "#BSUB -x",
        "module load python",
        lines[13],
    ]
    assert lines[13].startswith("# Exit at once")  # the scheduler check, after the prologue
    worker = lines[-2]
    assert "distributed.cli.dask_worker tcp://127.0.0.1:8786" in worker
    assert "--nworkers 4" in worker and "--nthreads 2" in worker
    assert lines[-1] == "echo bye"
    assert job.output_files("12") == [
        Path(logs) / "dask-worker-12.err",
        Path(logs) / "dask-worker-12.out",
    ]


def test_single_core_has_no_span_and_ncpus_mem_override(no_lsf_conf):
    job = LSFJob("tcp://a:1", cores=1, memory="2GB", walltime="90")
    header = job.job_header
    assert "span[hosts=1]" not in header
    assert "#BSUB -n 1" in header and "#BSUB -W 90" in header
    assert "#BSUB -M 2000000" in header  # KB, LSF's default unit
    job = LSFJob("tcp://a:1", cores=2, memory="2GB", ncpus=4, mem=3_000_000_000, lsf_units="GB")
    assert "#BSUB -n 4" in job.job_header and "#BSUB -M 3" in job.job_header


def test_directives_skip_and_project_quotes():
    job = LSFJob(
        "tcp://a:1", cores=2, memory="2GB", lsf_units="mb", job_directives_skip=["-R", "nope"]
    )
    assert "span" not in job.job_header and "#BSUB -n 2" in job.job_header
    for bad in ['a"b', "a'b", "a\\b", "a\nb"]:
        with pytest.raises(ValueError, match="project="):
            LSFJob("tcp://a:1", cores=1, memory="1GB", project=bad)


@pytest.mark.parametrize("walltime", ["1:00:00", "1-00:00", "abc"])
def test_walltime_must_be_hh_mm_or_minutes(walltime):
    with pytest.raises(ValueError):
        LSFJob("tcp://a:1", cores=1, memory="1GB", walltime=walltime)


@pytest.mark.parametrize(
    "nbytes, units, expected",
    [
        (28_000_000_000, "mb", "28000"),
        (28_000_000_000, "MB", "28000"),
        (28_000_000_001, "mb", "28001"),
        (1, "kb", "1"),
        (1500, "KB", "2"),
        (2_000_000_000, "gb", "2"),
        (2_500_000_000, "G", "3"),
        (10**12, "tb", "1"),
        (0, "mb", "0"),
    ],
)
def test_lsf_format_bytes_ceil(nbytes, units, expected):
    assert lsf_format_bytes_ceil(nbytes, units) == expected


def test_lsf_format_bytes_ceil_rejects_unknown_units():
    with pytest.raises(ValueError, match="not an LSF unit"):
        lsf_format_bytes_ceil(1, "qb")


@pytest.mark.parametrize(
    "conf, expected",
    [
        ("LSF_UNIT_FOR_LIMITS=MB\n", "mb"),
        ('# comment\nLSF_LOGDIR=/var/log\n  LSF_UNIT_FOR_LIMITS = "GB"\n', "gb"),
        ("LSF_UNIT_FOR_LIMITS=KB\nLSF_UNIT_FOR_LIMITS=TB\n", "tb"),
        ("#LSF_UNIT_FOR_LIMITS=MB\n", "kb"),
        ("LSF_LOGDIR=/var/log\n", "kb"),
    ],
)
def test_lsf_detect_units_reads_lsf_conf(monkeypatch, tmp_path, conf, expected):
    (tmp_path / "lsf.conf").write_text(conf)
    monkeypatch.setenv("LSF_ENVDIR", str(tmp_path))
    assert lsf_detect_units() == expected


def test_lsf_detect_units_confdir_and_default(monkeypatch, tmp_path, no_lsf_conf):
    assert lsf_detect_units() == "kb"
    (tmp_path / "lsf.conf").write_text("LSF_UNIT_FOR_LIMITS=MB\n")
    monkeypatch.setenv("LSF_CONFDIR", str(tmp_path))
    assert lsf_detect_units() == "mb"
    job = LSFJob("tcp://a:1", cores=1, memory="28GB")
    assert job.lsf_units == "mb" and "#BSUB -M 28000" in job.job_header
    # an explicit keyword (or config) wins over lsf.conf
    assert "#BSUB -M 28" in LSFJob("tcp://a:1", cores=1, memory="28GB", lsf_units="GB").job_header
    with dask.config.set({"jobqueue.lsf.lsf-units": "kb"}):
        assert LSFJob("tcp://a:1", cores=1, memory="28GB").lsf_units == "kb"


@pytest.mark.parametrize("config", [None, True, False])
@pytest.mark.parametrize("keyword", [None, True, False])
def test_use_stdin_keyword_and_config(keyword, config):
    expected = keyword if keyword is not None else (config if config is not None else True)
    with dask.config.set({"jobqueue.lsf.use-stdin": config}):
        job = LSFJob(
            "tcp://a:1", cores=1, memory="1GB", use_stdin=keyword, submit_command_extra=["-K"]
        )
    script = job.job_script()
    assert job.use_stdin is expected
    if expected:
        assert job.submit_argv("/tmp/job.sh") == ["bsub", "-K"]
        assert job.submit_stdin(script) == script
    else:
        assert job.submit_argv("/tmp/job.sh") == ["bsub", "-K", "/tmp/job.sh"]
        assert job.submit_stdin(script) is None


def test_cancel_and_status_argv_take_all_ids_at_once():
    job = LSFJob("tcp://a:1", cores=1, memory="1GB", cancel_command_extra=["-s", "KILL"])
    assert job.job_id_from_submit_output("Job <42> is submitted to queue <normal>.\n") == "42"
    mixed = (DATA / "bjobs_json_mixed_states.json").read_text()
    unknown_99 = (DATA / "bjobs_json_mixed_states.stderr.txt").read_text()

    def answer(argv):
        if argv[0] == "bjobs":  # exit 255 because 99 is unknown, the others still listed
            raise CommandError(argv, 255, mixed, unknown_99)
        return (DATA / "bkill_two.stdout.txt").read_text()

    submitted = ["Job <1> is submitted to queue <normal>.\n", "Job <6> is submitted.\n"]
    engine, runner = engine_with(job, answer, submitted=submitted)
    ids = [str(i) for i in range(1, 8)] + ["99"]
    _check_mixed(query(engine, ids))
    assert runner.calls == [
        ["bjobs", "-json", "-o", "jobid stat exit_code exit_reason pend_reason", *ids]
    ]
    assert engine.facts.get("lsf_json", True) is True

    runner.calls.clear()
    assert cancel(engine, ["1", "6"]) == []
    assert runner.calls == [["bkill", "-s", "KILL", "1", "6"]]
    assert engine.live_ids == set()


def test_bjobs_without_json_switches_to_delimited_for_good():
    delimited = (DATA / "bjobs_delimited_mixed_states.txt").read_text()
    unknown_99 = (DATA / "bjobs_delimited_mixed_states.stderr.txt").read_text()

    def answer(argv):
        if "-json" in argv:  # not a recorded message: an LSF older than 10.1.0.2
            raise CommandError(argv, 255, "", "bjobs: illegal option -- json\nUsage: bjobs ...\n")
        raise CommandError(argv, 255, delimited, unknown_99)

    engine, runner = engine_with(LSFJob("tcp://a:1", cores=1, memory="1GB"), answer)
    ids = [str(i) for i in range(1, 8)] + ["99"]
    _check_mixed(query(engine, ids))
    delimited_argv = [
        "bjobs",
        "-noheader",
        "-o",
        "jobid stat exit_code exit_reason pend_reason delimiter='|'",
    ]
    assert runner.calls == [
        ["bjobs", "-json", "-o", "jobid stat exit_code exit_reason pend_reason", *ids],
        [*delimited_argv, *ids],
    ]
    assert engine.facts["lsf_json"] is False
    runner.calls.clear()
    assert query(engine, ["1"])["1"].state == JobState.RUNNING
    assert runner.calls == [[*delimited_argv, "1"]]
    assert engine.commands["status"] == 3


def _check_mixed(statuses):
    assert set(statuses) == {"1", "2", "3", "4", "5", "6", "7"}  # 99 is unknown: left out
    assert (statuses["1"].state, statuses["1"].native_state) == (JobState.RUNNING, "RUN")
    assert (statuses["2"].state, statuses["2"].exit_code) == (JobState.FAILED, 3)
    assert (statuses["3"].state, statuses["3"].exit_code) == (JobState.FINISHED, 0)
    assert (statuses["4"].state, statuses["4"].exit_code) == (JobState.CANCELLED, 130)
    assert statuses["4"].reason.startswith("TERM_OWNER")
    assert (statuses["5"].state, statuses["5"].exit_code) == (JobState.TIMED_OUT, 140)
    assert statuses["5"].reason.startswith("TERM_RUNLIMIT")
    assert (statuses["6"].state, statuses["6"].reason) == (
        JobState.QUEUED,
        "Not enough job slot(s): 1 host",
    )
    assert statuses["7"].state == JobState.HELD
    assert "suspended by the user" in statuses["7"].reason
    assert statuses["1"].exit_code is None and statuses["6"].exit_code is None


def test_parse_bjobs_json_recorded_mixed_states():
    _check_mixed(parse_bjobs_json((DATA / "bjobs_json_mixed_states.json").read_text()))


def test_parse_bjobs_delimited_recorded_mixed_states():
    _check_mixed(parse_bjobs((DATA / "bjobs_delimited_mixed_states.txt").read_text()))


def test_parse_bjobs_all_unknown():
    assert parse_bjobs_json((DATA / "bjobs_json_all_unknown.json").read_text()) == {}
    assert parse_bjobs((DATA / "bjobs_delimited_all_unknown.txt").read_text()) == {}
    assert parse_bjobs_json("") == {}
    stderr = (DATA / "bjobs_json_all_unknown.stderr.txt").read_text()
    assert "Job <99> is not found" in stderr


@pytest.mark.parametrize(
    "row, state, exit_code",
    [
        (("EXIT", "140", "-", "-"), JobState.TIMED_OUT, 140),  # LSF without exit_reason
        (("EXIT", "130", "", ""), JobState.CANCELLED, 130),
        (
            ("EXIT", "137", "TERM_MEMLIMIT: job killed after reaching LSF memory usage limit", ""),
            JobState.FAILED,
            137,
        ),
        (
            ("EXIT", "143", "TERM_ADMIN: job killed by root or LSF administrator", ""),
            JobState.CANCELLED,
            143,
        ),
        (("EXIT", "-", "-", "-"), JobState.FAILED, None),
        (("USUSP", "-", "-", "-"), JobState.HELD, None),
        (("SSUSP", "-", "-", "-"), JobState.HELD, None),
        (("UNKWN", "-", "-", "-"), JobState.RUNNING, None),
        (("ZOMBI", "-", "-", "-"), JobState.FAILED, None),
    ],
)
def test_lsf_status_table(row, state, exit_code):
    status = lsf_status(*row)
    assert (status.state, status.exit_code) == (state, exit_code)
    if state == JobState.HELD:
        assert "suspended" in status.reason


def test_submit_error_message_is_recorded():
    text = (DATA / "bsub_error_no_such_queue.stderr.txt").read_text()
    assert text.strip() == "nosuchq: No such queue. Job not submitted."


def _queue_ids() -> set[str]:
    # array elements (jobs submitted together) as 12[3], plain jobs (jobindex 0) as 12
    ids = set()
    out = run(["bjobs", "-noheader", "-o", "jobid jobindex stat delimiter='|'"])
    for line in out.splitlines():
        job_id, index, stat = (part.strip() for part in line.split("|", 2))
        if stat in ("PEND", "PSUSP", "RUN", "USUSP", "SSUSP"):
            ids.add(f"{job_id}[{index}]" if index.isdigit() and int(index) else job_id)
    return ids


LSF = Backend(
    name="lsf",
    cluster_cls=LSFCluster,
    # walltime is in emulated minutes: 10:00 is 600 s with walltime_scale=1/60
    kwargs={"cores": 1, "memory": "1GB", "processes": 1, "walltime": "10:00"},
    queue_ids=_queue_ids,
    cancel_argv=lambda job_id: ["bkill", job_id],
    bad_queue_kwargs={"queue": "nosuchq"},
    bad_queue_message="nosuchq: No such queue. Job not submitted.",
    hold_kwargs={"job_extra_directives": ["-H"]},
    hold_reason="suspended by the user",
    short_walltime={"walltime": "00:08"},  # 8 s in the emulator
    walltime_wait=60,
    timeout=60,
)


@pytest.mark.env("lsf")
@pytest.mark.usefixtures("emulator")
class TestEmulatedLSF(SchedulerSuite):
    backend = LSF
    emulator_flavour = "lsf"
    emulator_options = {"walltime_scale": 1 / 60, "kill_delay": 1.0}

    def test_status_query_is_one_bjobs_call_and_skips_unknown_ids(self, emulator):  # noqa: F811
        out = run(["bsub", "-J", "t", "-H", "sleep", "30"])
        job_id = out.split("<")[1].split(">")[0]
        engine = BatchSystem(LSFJob("tcp://a:1", cores=1, memory="1GB"))
        statuses = asyncio.run(engine.query([job_id, "9999"]))
        assert set(statuses) == {job_id}
        assert statuses[job_id].state == JobState.HELD
        assert asyncio.run(engine.query(["9998", "9999"])) == {}
        assert engine.commands["status"] == 2
        run(["bkill", job_id])

    def test_status_outage_is_a_command_error(self, emulator):  # noqa: F811
        from .emulator import inject_fault

        inject_fault(emulator["DJQ_EMULATOR_HOME"], "status_fail")
        engine = BatchSystem(LSFJob("tcp://a:1", cores=1, memory="1GB"))
        with pytest.raises(CommandError, match="LSF is down"):
            asyncio.run(engine.query(["1"]))
