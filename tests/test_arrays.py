"""Job arrays: one submit command for many jobs, each task still one job of the cluster.

Unit tests drive the engine with recorded command outputs (``tests/fakes.py``); the parsers
read real outputs recorded on Slurm 22.05, Grid Engine 8.1.9 and OpenPBS 23.06
(``tests/data/arrays``). Tests on the real batch systems are at the end (``pytest -E slurm``,
``-E sge``, ``-E oar``, ``-E pbs``).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import dask
import pytest

from dask_jobqueue import CommandError, SLURMCluster
from dask_jobqueue.engine import array_script, index_spans
from dask_jobqueue.pbs import parse_pbs_limits, pbs_cancel_args
from dask_jobqueue.sge import sge_cancel_args
from dask_jobqueue.slurm import (
    SLURMJob,
    parse_slurm_limits,
    parse_squeue,
    slurm_array_task_ids,
    slurm_cancel_args,
)
from dask_jobqueue.tracking import JobState

from . import array_scenarios
from .array_scenarios import ArraySystem
from .fakecmd import fake_commands  # noqa: F401  (fixture)
from .fakes import cancel, engine_with
from .scheduler_suite import NO_DASHBOARD, quick_polling, run

RECORDED = Path(__file__).parent / "data" / "arrays"


def recorded(name: str) -> str:
    """The stdout of a recorded command (``### stdout`` section of the file)."""
    text = (RECORDED / name).read_text()
    return text.split("### stdout\n", 1)[1].split("### stderr", 1)[0]


def slurm_jobs(n: int, **kwargs) -> list[SLURMJob]:
    options = {"cores": 1, "memory": "1GB", **kwargs}
    return [SLURMJob("tcp://a:1", name=f"c-{i}", **options) for i in range(n)]


def submit_many(engine, jobs):
    return asyncio.run(engine.submit_many(jobs))


# ---------------------------------------------------------------------------- parsers


def test_squeue_array_tasks_from_recorded_output():
    statuses = parse_squeue(recorded("slurm/37_squeue_O_scenario.txt"))
    assert statuses["17_3"].state == JobState.CANCELLED
    assert statuses["17_0"].state == JobState.FINISHED
    assert statuses["17_1"].state == JobState.FAILED
    assert statuses["17_1"].reason == "NonZeroExitCode"
    assert (statuses["17_6"].state, statuses["17_6"].reason) == (
        JobState.QUEUED,
        "JobArrayTaskLimit",
    )
    assert statuses["17_5"].state == JobState.RUNNING
    # raw ids of started tasks are not reported: the task id is what the cluster tracks
    assert "21" not in statuses and "23" not in statuses


def test_squeue_mixes_plain_jobs_and_tasks():
    statuses = parse_squeue(recorded("slurm/08_squeue_O_fields.txt"))
    assert statuses["1"].state == JobState.FINISHED  # ArrayTaskID N/A: a plain job
    assert statuses["2_9"].state == JobState.RUNNING  # the last task keeps the array's raw id
    assert statuses["3_4"].reason == "JobArrayTaskLimit"
    assert len(statuses) == 21


def test_squeue_earlier_forms_still_read():
    assert parse_squeue("12|PENDING|Priority|0|\n")["12"].reason == "Priority"
    assert parse_squeue("12|FAILED|NonZeroExitCode|768|\n")["12"].exit_code == 3


def test_array_ids_from_sbatch_output():
    assert slurm_array_task_ids(recorded("slurm/02_sbatch_array_0-9.txt"), [0, 1, 2]) == [
        "2_0",
        "2_1",
        "2_2",
    ]
    assert slurm_array_task_ids(
        recorded("slurm/03_sbatch_array_0-9_throttle3_parsable.txt"), [5]
    ) == ["3_5"]
    with pytest.raises(ValueError):
        slurm_array_task_ids("sbatch: error: Batch job submission failed\n", [0])


def test_limits_from_scontrol_show_config():
    assert parse_slurm_limits(recorded("slurm/01_limits_default.txt")) == {
        "max_array_size": 1001,
        "max_job_count": 10000,
    }
    assert parse_slurm_limits("MaxArraySize            = 64\n") == {"max_array_size": 64}


def test_adopting_the_tasks_of_a_tagged_array():
    adopt = SLURMJob.array_support.adopt
    # squeue %i collapses pending tasks; started ones are listed one by one
    assert adopt(["36_[1-2]", "36_0"], [0, 1, 2]) == ["36_0", "36_1", "36_2"]
    with pytest.raises(ValueError):
        adopt(["36_0", "37_0"], [0, 1])


def test_cancel_arguments_join_tasks_into_ranges():
    assert slurm_cancel_args(["12_3", "12_4", "12_5", "13", "12_9", "14_1"]) == [
        "12_[3-5,9]",
        "13",
        "14_1",
    ]
    assert slurm_cancel_args(["7", "8"]) == ["7", "8"]
    assert sge_cancel_args(["69.3", "69.4", "69.5", "70", "69.9"]) == ["70", "69.3-5", "69.9"]
    assert pbs_cancel_args(["65[3].srv", "65[4].srv", "66.srv", "65[7].srv"]) == [
        "66.srv",
        "65[3-4].srv",
        "65[7].srv",
    ]
    assert index_spans([]) == [] and index_spans([5, 3, 4, 4]) == ["3-5"]


# ---------------------------------------------------------------------------- engine


def test_array_script_names_each_task(tmp_path):
    """The task index selects the worker name: run the script's name selection for real."""
    jobs = slurm_jobs(3, python="echo")
    script = array_script(jobs[0], [j.name for j in jobs], SLURMJob.array_support)
    path = tmp_path / "job.sh"
    path.write_text(script)
    for index, name in enumerate(["c-0", "c-1", "c-2"]):
        env = {**os.environ, "SLURM_ARRAY_TASK_ID": str(index)}
        out = subprocess.run(["bash", str(path)], capture_output=True, text=True, env=env)
        assert f"--name {name} " in out.stdout
    out = subprocess.run(
        ["bash", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "SLURM_ARRAY_TASK_ID": "7"},
    )
    assert out.returncode == 1 and "no worker name for array task 7" in out.stderr


def test_array_script_log_files_name_the_task():
    jobs = slurm_jobs(2, log_directory="/logs")
    script = array_script(jobs[0], ["c-0", "c-1"], SLURMJob.array_support)
    assert "#SBATCH -e /logs/dask-worker-%A_%a.err" in script
    assert "%J" not in script
    assert [str(p) for p in jobs[0].output_files("12_3")][0] == "/logs/dask-worker-12_3.err"


def test_jobs_submitted_together_go_as_one_array():
    def answer(argv):
        if argv[0] == "scontrol":
            return "MaxArraySize            = 1001\nMaxJobCount             = 10000\n"
        return "Submitted batch job 12\n"

    engine, runner = engine_with(slurm_jobs(1)[0], answer)
    jobs = slurm_jobs(5)
    ids = submit_many(engine, jobs)
    assert ids == ["12_0", "12_1", "12_2", "12_3", "12_4"]
    assert [j.job_id for j in jobs] == ids
    sbatch = [c for c in runner.calls if c[0] == "sbatch"]
    assert len(sbatch) == 1 and "--array=0-4" in sbatch[0]
    assert engine.live_ids == set(ids)
    assert engine.facts["max_array_size"] == 1001
    assert engine.commands["submit"] == 1


def test_split_to_the_site_limit():
    arrays = iter(range(20, 30))

    def answer(argv):
        if argv[0] == "scontrol":
            return "MaxArraySize            = 2\n"
        return f"Submitted batch job {next(arrays)}\n"

    engine, runner = engine_with(slurm_jobs(1)[0], answer, submit_concurrency=1)
    ids = submit_many(engine, slurm_jobs(5))
    sbatch = [c for c in runner.calls if c[0] == "sbatch"]
    assert len(sbatch) == 3  # 2 + 2 + a single job
    assert [c for c in sbatch if "--array=0-1" in c] and len(sbatch[-1]) == len(sbatch[0]) - 1
    assert ids == ["20_0", "20_1", "21_0", "21_1", "22"]


def test_yaml_override_wins_over_the_site():
    arrays = iter(range(5, 15))

    def answer(argv):
        if argv[0] == "scontrol":
            return "MaxArraySize            = 1001\n"
        return f"Submitted batch job {next(arrays)}\n"

    engine, runner = engine_with(slurm_jobs(1)[0], answer, max_array_size=2, submit_concurrency=1)
    ids = submit_many(engine, slurm_jobs(4) + slurm_jobs(1, job_name="other"))
    # jobs with another script are not tasks of the same array
    assert [c[0] for c in runner.calls].count("sbatch") == 3
    assert ids == ["5_0", "5_1", "6_0", "6_1", "7"]


def test_arrays_never():
    ids = iter(range(40, 50))
    engine, runner = engine_with(
        slurm_jobs(1)[0],
        lambda argv: f"Submitted batch job {next(ids)}\n",
        job_arrays="never",
    )
    assert sorted(submit_many(engine, slurm_jobs(3))) == ["40", "41", "42"]
    assert all(not any(a.startswith("--array") for a in c) for c in runner.calls)
    assert len(runner.calls) == 3


def test_cancel_tasks_in_one_command():
    engine, runner = engine_with(slurm_jobs(1)[0], lambda argv: "")
    assert cancel(engine, ["12_0", "12_1", "12_2", "12_7", "13"]) == []
    assert runner.calls == [["scancel", "12_[0-2,7]", "13"]]


def test_rate_limit():
    ids = iter(range(40, 50))
    engine, runner = engine_with(
        slurm_jobs(1)[0],
        lambda argv: f"Submitted batch job {next(ids)}\n",
        job_arrays="never",
        submit_rate_limit=20,
    )
    started = time.monotonic()
    submit_many(engine, slurm_jobs(4))
    assert time.monotonic() - started >= 3 / 20 - 0.01


def recorded_stderr(name: str) -> str:
    text = (RECORDED / name).read_text()
    return text.split("### stderr\n", 1)[1].split("### exit code", 1)[0]


# sbatch of a real Slurm 22.05 started with MaxArraySize=64, for --array=0-100
SBATCH_TOO_LARGE = recorded_stderr("slurm/84_sbatch_array_exceeds_MaxArraySize.txt")
# scontrol while slurmctld is down: written after the recorded "slurm_load_jobs error: ..." and
# "Unable to contact slurm controller (connect failure)" (research/slurm.md); only its exit
# status matters here
SCONTROL_DOWN = "slurm_load_ctl_conf error: Unable to contact slurm controller (connect failure)"


def _slurm_site(max_array_size: int, probe_failures: int):
    """Answers of a Slurm whose ``scontrol show config`` fails ``probe_failures`` times, then
    tells ``max_array_size``, and whose sbatch refuses larger arrays as the real one does."""
    arrays = iter(range(20, 99))
    probes = iter(range(100))

    def answer(argv):
        if argv[0] == "scontrol":
            if next(probes) < probe_failures:
                return (1, SCONTROL_DOWN)
            return f"MaxArraySize            = {max_array_size}\n"
        spec = [a for a in argv if a.startswith("--array=")]
        if spec and int(spec[0].rsplit("-", 1)[1]) >= max_array_size:
            return (1, SBATCH_TOO_LARGE)
        return f"Submitted batch job {next(arrays)}\n"

    return answer


def test_array_refused_as_too_large_is_submitted_again_halved(caplog):
    # the limit could not be read: the first array is too large, the site refuses it
    engine, runner = engine_with(
        slurm_jobs(1)[0], _slurm_site(3, probe_failures=1), submit_concurrency=1
    )
    with caplog.at_level("WARNING", logger="dask_jobqueue.engine"):
        ids = submit_many(engine, slurm_jobs(7))
    assert ids == ["20_0", "20_1", "20_2", "21_0", "21_1", "21_2", "22"]  # 3 + 3 + 1
    sbatch = [c for c in runner.calls if c[0] == "sbatch"]
    assert [a for c in sbatch for a in c if a.startswith("--array")] == [
        "--array=0-6",
        "--array=0-2",
        "--array=0-2",
    ]
    assert len(sbatch) == 4 and engine.commands["submit"] == 4
    assert "refused an array of 7 jobs as too large" in caplog.text
    assert "arrays of at most 3 jobs" in caplog.text
    assert engine.live_ids == set(ids)

    # the next scale asks the limit again (it answers now) and submits no refused array
    runner.calls.clear()
    more = submit_many(engine, slurm_jobs(4, job_name="more"))
    assert more == ["23_0", "23_1", "23_2", "24"]
    assert [c[0] for c in runner.calls] == ["scontrol", "sbatch", "sbatch"]
    assert engine.facts["max_array_size"] == 3


def test_halving_ends_in_single_jobs():
    # a site refusing every array (MaxArraySize=1): 5 -> 2 + 2 + 1 -> 1 + 1 + 1 + 1 + 1
    engine, runner = engine_with(
        slurm_jobs(1)[0], _slurm_site(1, probe_failures=99), submit_concurrency=1
    )
    ids = submit_many(engine, slurm_jobs(5))
    assert ids == ["20", "21", "22", "23", "24"]
    specs = [a for c in runner.calls for a in c if a.startswith("--array")]
    assert specs == ["--array=0-4", "--array=0-1"]  # then the cap is 1: single jobs
    assert [c[0] for c in runner.calls].count("sbatch") == 7


def test_refusals_converge_on_the_site_limit():
    # 1000 jobs, MaxArraySize=64 unknown: 1000, 500, 250 and 125 refused, then arrays of 62
    engine, runner = engine_with(
        slurm_jobs(1)[0], _slurm_site(64, probe_failures=99), submit_concurrency=1
    )
    ids = submit_many(engine, slurm_jobs(1000))
    assert len(set(ids)) == 1000 and all(isinstance(i, str) for i in ids)
    sbatch = [c for c in runner.calls if c[0] == "sbatch"]
    assert len(sbatch) == 4 + 17  # 17 = ceil(1000 / 62)
    assert engine.array_size_limit() == 62


def test_a_closing_engine_stops_halving():
    answer = _slurm_site(3, probe_failures=99)
    engine = None

    def close_after_the_first_array(argv):
        out = answer(argv)
        if argv[0] == "sbatch" and isinstance(out, str):
            engine.close()  # the cluster closes while the halves go in
        return out

    engine, runner = engine_with(
        slurm_jobs(1)[0], close_after_the_first_array, submit_concurrency=1
    )
    outcomes = submit_many(engine, slurm_jobs(7))
    sbatch = [c for c in runner.calls if c[0] == "sbatch"]
    assert len(sbatch) == 2  # the refused 7, then one array of 3; no more
    assert all(isinstance(o, CommandError) for o in outcomes)
    # what the one accepted array created was cancelled, not left behind
    assert [c for c in runner.calls if c[0] == "scancel"] == [["scancel", "20_[0-2]"]]


@pytest.mark.parametrize("fault", ["fails", "hangs"])
def test_failing_site_probe_is_asked_again_three_times_at_most(fault):
    site = _slurm_site(1001, probe_failures=99)

    def answer(argv):
        if argv[0] == "scontrol" and fault == "hangs":  # killed at its time limit
            raise CommandError(argv, None, reason="timed out after 30s")
        return site(argv)

    engine, runner = engine_with(slurm_jobs(1)[0], answer)
    for k in range(5):
        submit_many(engine, slurm_jobs(2, job_name=f"n{k}"))
    assert [c[0] for c in runner.calls].count("scontrol") == 3
    assert engine.commands["limits"] == 3 and "max_array_size" not in engine.facts
    assert engine.commands["submit"] == 5  # the arrays went unsplit, and were accepted


def test_too_large_refusal_of_a_single_job_is_an_error():
    engine, runner = engine_with(slurm_jobs(1)[0], lambda argv: (1, SBATCH_TOO_LARGE))
    (outcome,) = submit_many(engine, slurm_jobs(1))
    assert isinstance(outcome, CommandError) and "Invalid job array" in str(outcome)
    assert len(runner.calls) == 1


@pytest.mark.parametrize(
    "dialect, refusal",
    [
        ("slurm", SBATCH_TOO_LARGE),
        ("sge", recorded_stderr("sge/62_qsub_array_exceeds_max_aj_tasks.txt")),
        ("pbs", recorded_stderr("pbs/35_qsub_J_exceeds_max_array_size.txt")),
    ],
)
def test_recorded_refusals_read_as_too_large(dialect, refusal):
    from dask_jobqueue.pbs import PBS_PRO_ARRAYS, TORQUE_ARRAYS
    from dask_jobqueue.sge import SGE_ARRAYS
    from dask_jobqueue.slurm import SLURM_ARRAYS

    supports = {
        "slurm": [SLURM_ARRAYS],
        "sge": [SGE_ARRAYS],
        "pbs": [PBS_PRO_ARRAYS, TORQUE_ARRAYS],
    }[dialect]
    assert all(support.too_large.search(refusal) for support in supports)
    # and not the transient errors retried with adoption
    assert not any(
        support.too_large.search("Socket timed out on send/recv operation") for support in supports
    )


BANNER = "*** Maintenance on Friday 12: nodes n1-n4 down ***\n"


@pytest.mark.parametrize("where", ["before", "after"])
def test_limit_probes_read_through_a_site_banner(where):
    from dask_jobqueue.htcondor import parse_condor_limits
    from dask_jobqueue.lsf import parse_lsf_limits
    from dask_jobqueue.pbs import parse_pbs_version
    from dask_jobqueue.sge import parse_sge_limits

    cases = [
        (parse_slurm_limits, recorded("slurm/83_limits_small_config.txt"), 64),
        (parse_sge_limits, recorded("sge/61_limits_small.txt"), 10),
        (parse_pbs_limits, recorded("pbs/34_limits_small.txt"), 10),
        (parse_lsf_limits, "MAX_JOB_ARRAY_SIZE = 64\n", 64),  # hand-written from LSF's docs
        (parse_condor_limits, "20000\n", 20000),  # what the real HTCondor 25.14.1 reports
    ]
    for parse, text, limit in cases:
        shown = BANNER + text if where == "before" else text + BANNER
        assert parse(shown)["max_array_size"] == limit, parse
    version = recorded("pbs/00_version.txt")
    shown = BANNER + version if where == "before" else version + BANNER
    assert parse_pbs_version(shown) == {"pbs_flavour": "pro"}


def test_bad_engine_settings_are_refused():
    with dask.config.set({"jobqueue.slurm.job-arrays": "sometimes"}):
        with pytest.raises(ValueError, match="job_arrays='sometimes' must be 'auto' or 'never'"):
            SLURMCluster(cores=1, memory="1GB", scheduler_options=NO_DASHBOARD)
    with dask.config.set({"jobqueue.slurm.submit-rate-limit": 0}):
        with pytest.raises(ValueError, match="submit_rate_limit"):
            SLURMCluster(cores=1, memory="1GB", scheduler_options=NO_DASHBOARD)
    with dask.config.set({"jobqueue.slurm.max-array-size": -3}):
        with pytest.raises(ValueError, match="max_array_size"):
            SLURMCluster(cores=1, memory="1GB", scheduler_options=NO_DASHBOARD)


# ---------------------------------------------------------------------------- Grid Engine, OAR


def test_sge_array_tasks_from_recorded_qstat():
    from dask_jobqueue.sge import parse_qstat_xml

    states = parse_qstat_xml(recorded("sge/37_qstat_xml_scenario.txt"))
    assert {k: v for k, v in states.items() if k.startswith("76.")} == {
        "76.3": "r",
        "76.5": "r",
        "76.6": "r",
        "76.9": "r",
        "76.7": "qw",
        "76.10": "qw",
    }
    detailed = parse_qstat_xml(recorded("sge/38_qstat_xml_g_d_scenario.txt"))
    assert {k for k in detailed if k.startswith("76.")} == set(states)


def test_sge_submit_output_limits_and_cancel():
    from dask_jobqueue.sge import parse_sge_limits, sge_array_task_ids, sge_cancel_args

    assert sge_array_task_ids(recorded("sge/02_qsub_array_1-10.txt"), [1, 2]) == ["69.1", "69.2"]
    assert sge_array_task_ids(recorded("sge/03_qsub_array_terse.txt"), [3]) == ["70.3"]
    assert parse_sge_limits(recorded("sge/01_limits_default.txt")) == {"max_array_size": 75000}
    assert parse_sge_limits("max_aj_tasks                 0\n") == {}
    assert sge_cancel_args(["70.3", "70.4", "70.5", "70.8", "71"]) == ["71", "70.3-5", "70.8"]


def test_sge_qacct_asks_for_the_task():
    from dask_jobqueue.sge import parse_qacct, qacct_argv, qacct_status

    assert qacct_argv(None, ["76.3"], {}) == ["qacct", "-j", "76", "-t", "3"]
    assert qacct_argv(None, ["76"], {}) == ["qacct", "-j", "76"]
    status = qacct_status(parse_qacct(recorded("sge/40_qacct_j_scenario.txt")))
    assert status is not None and status.state.is_final


def test_sge_engine_submits_one_array():
    from dask_jobqueue.sge import SGEJob

    def answer(argv):
        if argv[0] == "qconf":
            return recorded("sge/61_limits_small.txt")
        return 'Your job-array 69.1-2:1 ("dask-worker") has been submitted\n'

    jobs = [SGEJob("tcp://a:1", name=f"s-{i}", cores=1, memory="1GB") for i in range(3)]
    engine, runner = engine_with(jobs[0], answer)
    ids = submit_many(engine, jobs)
    assert engine.facts["max_array_size"] == 10
    assert ids == ["69.1", "69.2", "69.3"]
    qsub = [c for c in runner.calls if c[0] == "qsub"]
    assert len(qsub) == 1 and qsub[0][3:5] == ["-t", "1-3"]


def test_oar_array_command_selects_the_name(tmp_path):
    from dask_jobqueue.oar import OARJob, oar_array_task_ids

    out = (
        "[ADMISSION RULE] Set default walltime\nOAR_JOB_ID=101\nOAR_JOB_ID=102\nOAR_ARRAY_ID=101\n"
    )
    assert oar_array_task_ids(out, [1, 2]) == ["101", "102"]
    with pytest.raises(ValueError):
        oar_array_task_ids(out, [1, 2, 3])
    jobs = [
        OARJob(
            "tcp://a:1",
            name=f"o-{i}",
            cores=1,
            memory="1GB",
            python="echo",
            memory_per_core_property_name="not_applicable",
        )
        for i in range(2)
    ]
    engine, runner = engine_with(jobs[0], lambda argv: out)
    assert submit_many(engine, jobs) == ["101", "102"]
    (argv,) = runner.calls
    assert "--array" in argv and argv[argv.index("--array") + 1] == "2"
    body = argv[-1]
    for index, name in ((1, "o-0"), (2, "o-1")):
        env = {**os.environ, "OAR_ARRAY_INDEX": str(index)}
        done = subprocess.run(["sh", "-c", body], capture_output=True, text=True, env=env)
        assert f"--name {name} " in done.stdout


# ---------------------------------------------------------------------------- PBS Pro / OpenPBS


def test_pbs_subjobs_from_recorded_outputs():
    from dask_jobqueue.pbs import (
        parse_pbs_limits,
        parse_pbs_version,
        parse_qstat_json,
        pbs_array_task_ids,
        pbs_cancel_args,
    )

    assert pbs_array_task_ids(recorded("pbs/02_qsub_env_array.txt"), [1, 2]) == [
        "64[1].vm-pbs",
        "64[2].vm-pbs",
    ]
    assert parse_pbs_limits(recorded("pbs/01_limits_default.txt")) == {"max_array_size": 10000}
    assert parse_pbs_version(recorded("pbs/00_version.txt")) == {"pbs_flavour": "pro"}
    assert parse_pbs_version("Version: 6.1.3\nCommit: abc\n") == {"pbs_flavour": "torque"}
    assert pbs_cancel_args(["65[3].vm-pbs", "65[4].vm-pbs", "65[9].vm-pbs", "70.vm-pbs"]) == [
        "70.vm-pbs",
        "65[3-4].vm-pbs",
        "65[9].vm-pbs",
    ]
    statuses = parse_qstat_json(recorded("pbs/10_qstat_f_json_t_scenario.txt"))
    assert statuses["65[3].vm-pbs"].state == JobState.RUNNING
    assert statuses["65[1].vm-pbs"].state.is_final
    assert statuses["65[7].vm-pbs"].state == JobState.QUEUED


def test_pbs_arrays_only_once_the_flavour_is_known():
    from dask_jobqueue.pbs import PBSJob

    def answer(argv):
        if argv[:2] == ["qstat", "--version"]:
            return "pbs_version = 23.06.06\n"
        if argv[0] == "qmgr":
            return "Server vm-pbs\n    max_array_size = 2\n"
        return "80[].vm-pbs\n" if "-J" in argv else "81.vm-pbs\n"

    jobs = [PBSJob("tcp://a:1", name=f"p-{i}", cores=1, memory="1GB") for i in range(3)]
    engine, runner = engine_with(jobs[0], answer, submit_concurrency=1)
    assert submit_many(engine, jobs) == ["80[0].vm-pbs", "80[1].vm-pbs", "81.vm-pbs"]
    qsub = [c for c in runner.calls if c[0] == "qsub"]
    assert qsub[0][qsub[0].index("-J") + 1] == "0-1"
    assert "-J" not in qsub[1]  # a single job for the rest

    # Torque: its own arrays (-t), never PBS Pro's -J
    torque = [PBSJob("tcp://a:1", name=f"t-{i}", cores=1, memory="1GB") for i in range(2)]
    engine, runner = engine_with(
        torque[0],
        lambda argv: "Version: 6.1.3\n" if argv[0] != "qsub" else "12[].srv\n",
    )
    assert submit_many(engine, torque) == ["12[0].srv", "12[1].srv"]
    qsub = [c for c in runner.calls if c[0] == "qsub"]
    assert len(qsub) == 1 and "-J" not in qsub[0]
    assert qsub[0][qsub[0].index("-t") + 1] == "0-1"

    # flavour unknown (qstat --version fails): one qsub per job
    unknown = [PBSJob("tcp://a:1", name=f"u-{i}", cores=1, memory="1GB") for i in range(2)]
    engine, runner = engine_with(
        unknown[0],
        lambda argv: (
            (2, "qstat: invalid option") if argv[0] != "qsub" else f"{len(runner.calls)}.srv\n"
        ),
    )
    assert len(submit_many(engine, unknown)) == 2
    qsub = [c for c in runner.calls if c[0] == "qsub"]
    assert len(qsub) == 2 and not any("-J" in c or "-t" in c for c in qsub)


def test_engine_cancel_arguments_are_the_arguments_its_cancels_run():
    # what the watchdog is given to cancel after the owner's death: PBS Pro, one range per qdel
    from dask_jobqueue.pbs import PBSJob

    answers = {"qstat": "pbs_version = 23.06.06\n", "qsub": "80[].vm-pbs\n"}
    jobs = [PBSJob("tcp://a:1", name=f"p-{i}", cores=1, memory="1GB") for i in range(2)]
    engine, runner = engine_with(jobs[0], lambda argv: answers.get(argv[0], ""))
    assert submit_many(engine, jobs) == ["80[0].vm-pbs", "80[1].vm-pbs"]  # learns the flavour
    runner.calls.clear()
    ids = [f"65[{i}].vm-pbs" for i in range(200)] + ["70.vm-pbs"]
    groups = engine.cancel_arguments(ids)
    assert groups == [["65[0-199].vm-pbs"], ["70.vm-pbs"]]
    assert cancel(engine, ids) == []
    assert [c[1:] for c in runner.calls] == groups


# ---------------------------------------------------------------------------- real batch systems


def _slurm_tasks() -> set[str]:
    return set(run(["squeue", "-h", "-r", "-o", "%i"]).split())


def _sge_tasks() -> set[str]:
    from dask_jobqueue.sge import parse_qstat_xml

    out = run(["qstat", "-xml"])
    return set(parse_qstat_xml(out)) if out.strip() else set()


def _oar_tasks() -> set[str]:
    import json
    import pwd

    out = run(["oarstat", "-J", "-u", pwd.getpwuid(os.getuid()).pw_name])
    return set(json.loads(out)) if out.strip() else set()


def _pbs_tasks() -> set[str]:
    ids = set()
    for line in run(["qstat", "-t"]).splitlines():
        fields = line.split()
        if len(fields) >= 6 and re.match(r"^\d+(\[\d*\])?\.", fields[0]):
            if "[]" not in fields[0] and fields[-2] not in ("X", "F"):
                ids.add(fields[0])
    return ids


def _real_systems():
    from dask_jobqueue import OARCluster, PBSCluster, SGECluster

    def system(name, cluster_cls, listed, cancel, hold, **kwargs):
        options = {
            "cores": 1,
            "memory": "1GB",
            "processes": 1,
            "scheduler_options": NO_DASHBOARD,
            **kwargs,
        }
        return ArraySystem(
            name, partial(cluster_cls, **options), listed, [cancel], hold, timeout=180
        )

    return [
        pytest.param(
            system("slurm", SLURMCluster, _slurm_tasks, "scancel", ["--hold"], walltime="00:10:00"),
            marks=pytest.mark.env("slurm"),
            id="slurm",
        ),
        pytest.param(
            system("sge", SGECluster, _sge_tasks, "qdel", ["-h"]),
            marks=pytest.mark.env("sge"),
            id="sge",
        ),
        pytest.param(
            system(
                "oar",
                OARCluster,
                _oar_tasks,
                "oardel",
                ["--hold"],
                walltime="00:10:00",
                memory_per_core_property_name="not_applicable",
            ),
            marks=pytest.mark.env("oar"),
            id="oar",
        ),
        pytest.param(
            system("pbs", PBSCluster, _pbs_tasks, "qdel", ["-h"], walltime="00:10:00"),
            marks=pytest.mark.env("pbs"),
            id="pbs",
        ),
    ]


def _quick(system: ArraySystem, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the jobs' output files land here
    with dask.config.set(quick_polling(system.name, "500ms", vanish_grace="4s")):
        yield system


@pytest.fixture(params=_real_systems())
def real(request, tmp_path, monkeypatch):
    yield from _quick(request.param, tmp_path, monkeypatch)


# OAR has no array size limit: the other three
@pytest.fixture(params=[p for p in _real_systems() if p.id != "oar"])
def limited(request, tmp_path, monkeypatch):
    yield from _quick(request.param, tmp_path, monkeypatch)


def test_real_array_end_to_end(real):
    array_scenarios.end_to_end(real)


def test_real_task_dying_before_connect_is_explained(real, tmp_path):
    array_scenarios.task_dying_before_connect(real, tmp_path / "logs")


def test_real_split_at_a_low_max_array_size(real):
    # one command for all (ranges per array), except PBS: one qdel per argument (its server
    # crashes on a qdel naming a live job and an unknown one), each array's tasks one range
    with dask.config.set({f"jobqueue.{real.name}.max-array-size": 3}):
        array_scenarios.split(real, cancel_commands=3 if real.name == "pbs" else 1)


@contextmanager
def _site_refusing_arrays_over_2(name: str, fakes):
    """The site refuses arrays of more than 2 tasks and the engine's limit probe fails
    (a fake in front of the real probe command). SGE and OpenPBS refuse for real, with
    ``max_aj_tasks``/``max_array_size`` set to 2 (restored after); on Slurm, whose
    MaxArraySize only changes with a restart, a fake sbatch refuses ``--array`` past index 1
    with the recorded refusal and runs the real sbatch for the rest."""
    probe = {"slurm": "scontrol", "sge": "qconf", "pbs": "qmgr"}[name]
    real_probe = shutil.which(probe)

    def must(*args: str) -> str:
        return subprocess.run(
            [real_probe, *args], capture_output=True, text=True, check=True
        ).stdout

    restore: list[str] = []  # the real probe's arguments putting the limit back
    try:
        if name == "slurm":
            fakes.fail_matching(
                "sbatch", "^--array=0-([2-9]|[1-9][0-9]+)$", stderr=SBATCH_TOO_LARGE, rc=1
            )
        elif name == "sge":
            # qconf -Mconf reads a file named after the configuration, without its header
            saved = re.sub(r"(?m)^#global:\n", "", must("-sconf", "global"))
            Path("saved").mkdir()
            Path("saved", "global").write_text(saved)
            Path("global").write_text(re.sub(r"(?m)^max_aj_tasks\s.*$", "max_aj_tasks 2", saved))
            must("-Mconf", "global")
            restore = ["-Mconf", str(Path("saved", "global"))]
        else:
            saved = parse_pbs_limits(must("-c", "list server")).get("max_array_size")
            must("-c", "set server max_array_size = 2")
            restore = [
                "-c",
                f"set server max_array_size = {saved}" if saved else "unset server max_array_size",
            ]
        fakes.fail_always(probe, stderr=f"{probe}: cannot connect to the controller")
        yield probe
    finally:
        if restore:
            must(*restore)


def test_real_array_over_a_limit_the_engine_could_not_read_is_halved(limited, fake_commands):  # noqa: F811
    with _site_refusing_arrays_over_2(limited.name, fake_commands) as probe:
        array_scenarios.halved_after_refusal(limited)
        assert fake_commands.calls(probe) == 1  # failed once, not asked again while halving
