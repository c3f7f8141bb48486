"""LSF job arrays: one ``bsub -J "name[1-N]"`` for many jobs, each element one job ``12[3]``.

No real LSF has been available to this project: every output read here is either made by the
LSF emulator (``tests/data/lsf/array_*``, see its README: *emulated*, not recordings) or
written by hand from IBM's LSF 10.1 documentation (marked so where used). Engine tests answer
the commands with those outputs (``tests/fakes.py``); the end-to-end tests run the emulator,
whose array elements are real local processes (``pytest -E lsf``).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from functools import partial
from pathlib import Path

import dask
import pytest

from dask_jobqueue import CommandError, JobState, LSFCluster
from dask_jobqueue.dialects.lsf import parse_lsf_tags
from dask_jobqueue.engine import array_script
from dask_jobqueue.lsf import (
    BJOBS_ARRAY_FIELDS,
    BJOBS_FIELDS,
    LSFJob,
    lsf_array_task_ids,
    lsf_cancel_args,
    parse_bjobs,
    parse_bjobs_json,
    parse_lsf_limits,
)

from . import array_scenarios
from .array_scenarios import ArraySystem
from .emulator import Store, clear_faults, inject_fault
from .fakes import cancel, engine_with, query
from .scheduler_suite import (
    NO_DASHBOARD,
    emulator,  # noqa: F401 (a fixture)
    quick_polling,
    run,
    wait_until,
)

DATA = Path(__file__).parent / "data" / "lsf"


def emulated(name: str) -> str:
    """An output of the LSF emulator (not of a real LSF), from ``tests/data/lsf``."""
    return (DATA / name).read_text()


def lsf_jobs(n: int, **kwargs) -> list[LSFJob]:
    options = {"cores": 1, "memory": "1GB", "lsf_units": "mb", **kwargs}
    return [LSFJob("tcp://a:1", name=f"l-{i}", **options) for i in range(n)]


def submit_many(engine, jobs):
    return asyncio.run(engine.submit_many(jobs))


def bsub_stdins(runner) -> list[str | None]:
    """The stdin of every ``bsub`` (``bsub < script``), in order."""
    return [
        stdin for argv, stdin in zip(runner.calls, runner.stdins, strict=True) if argv[0] == "bsub"
    ]


# ---------------------------------------------------------------------------- parsers


def _check_array_statuses(statuses):
    assert (statuses["1[1]"].state, statuses["1[1]"].native_state) == (JobState.RUNNING, "RUN")
    assert (statuses["1[2]"].state, statuses["1[2]"].exit_code) == (JobState.FAILED, 3)
    assert (statuses["1[3]"].state, statuses["1[3]"].exit_code) == (JobState.FINISHED, 0)
    assert statuses["1[4]"].state == JobState.RUNNING
    assert (statuses["1[5]"].state, statuses["1[5]"].reason) == (
        JobState.QUEUED,
        "Not enough job slot(s): 1 host",
    )
    assert (statuses["1[6]"].state, statuses["1[6]"].exit_code) == (JobState.CANCELLED, 130)
    assert statuses["1[6]"].reason.startswith("TERM_OWNER")
    assert "1" not in statuses  # the array itself is no job of the cluster


def test_bjobs_json_reports_each_element_emulated_output():
    statuses = parse_bjobs_json(emulated("array_bjobs_json_mixed.txt"))
    _check_array_statuses(statuses)
    assert statuses["2"].state == JobState.HELD  # jobindex 0: a plain job keeps its id
    assert set(statuses) == {f"1[{i}]" for i in range(1, 7)} | {"2"}  # 99 unknown: left out


def test_bjobs_delimited_reports_each_element_emulated_output():
    statuses = parse_bjobs(emulated("array_bjobs_delimited_mixed.txt"), BJOBS_ARRAY_FIELDS)
    _check_array_statuses(statuses)
    assert statuses["2"].state == JobState.HELD
    # LSB_BJOBS_DISPLAY_ENH=Y prints the element's id in JOBID: the same ids
    enh = parse_bjobs(emulated("array_bjobs_delimited_display_enh.txt"), BJOBS_ARRAY_FIELDS)
    _check_array_statuses(enh)
    # without jobindex, an id carrying its index is still read (and plain rows as before)
    assert set(parse_bjobs("12[3]|RUN|-|-|-\n13|PEND|-|-|x;\n")) == {"12[3]", "13"}


def test_array_ids_from_bsub_output():
    # emulated, and LSF 10.1's documented form ("to default queue"), written by hand
    assert lsf_array_task_ids(emulated("array_bsub.txt"), [1, 2]) == ["1[1]", "1[2]"]
    documented = "Job <123> is submitted to default queue <normal>.\n"
    assert lsf_array_task_ids(documented, [3]) == ["123[3]"]
    with pytest.raises(ValueError):
        lsf_array_task_ids("Bad job name. Job not submitted.\n", [1])


def test_limits_from_bparams():
    assert parse_lsf_limits(emulated("bparams_a.txt")) == {"max_array_size": 1000}
    # bparams -l puts each parameter under a description (hand-written from the docs)
    text = "The maximum number of jobs in a job array:\n    MAX_JOB_ARRAY_SIZE = 64\n"
    assert parse_lsf_limits(text) == {"max_array_size": 64}
    assert parse_lsf_limits("    MAX_JOB_NUM = 1000\n") == {}


def test_cancel_arguments_are_index_lists():
    assert lsf_cancel_args(["12[3]", "12[4]", "12[5]", "13", "12[9]", "14[1]"]) == [
        "12[3-5,9]",
        "13",
        "14[1]",
    ]
    assert lsf_cancel_args(["7", "8"]) == ["7", "8"]


def test_adopting_the_elements_of_a_tagged_array():
    adopt = LSFJob.array_support.adopt
    # bjobs lists every element under the array's id (or as 12[3] with LSB_BJOBS_DISPLAY_ENH)
    assert adopt(["12"], [1, 2, 3]) == ["12[1]", "12[2]", "12[3]"]
    assert adopt(["12[1]", "12[2]"], [1, 2]) == ["12[1]", "12[2]"]
    with pytest.raises(ValueError):
        adopt(["12", "13"], [1, 2])
    tag = "djq1.0a1b2c3d.7.123.host"
    # the listing asks for jobindex: each element under its own id
    listing = f"12|1|{tag}\n12|2|{tag}\n15|0|{tag}\n13[2]|2|{tag}\n14|0|someone else's\n"
    assert parse_lsf_tags(listing) == {"12[1]": tag, "12[2]": tag, "15": tag, "13[2]": tag}
    # the form without jobindex: elements collapse to their array's id, still adoptable
    assert parse_lsf_tags(f"12|{tag}\n12|{tag}\n") == {"12": tag}


def test_transient_bsub_errors():
    pattern = LSFJob.transient_submit_errors
    for message in (
        "LSF is processing your request. Please wait ...",
        "Failed in an LSF library call: Slave LIM configuration is not ready yet.",
        "LSF daemon (LIM) not responding ... still trying",
        "batch system daemon not responding ... still trying",
        "Resource temporarily unavailable",
    ):
        assert pattern.search(message), message
    for message in (
        "nosuchq: No such queue. Job not submitted.",
        "Bad job name. Job not submitted.",
        "Job array index too large. Job not submitted.",
    ):
        assert not pattern.search(message), message


# ---------------------------------------------------------------------------- the script


def test_array_script_names_the_array_in_its_only_j_line(tmp_path):
    jobs = lsf_jobs(3, python="echo", log_directory="/logs")
    script = array_script(jobs[0], [j.name for j in jobs], LSFJob.array_support)
    directives = [line for line in script.splitlines() if line.startswith("#BSUB")]
    assert [d for d in directives if d.startswith("#BSUB -J")] == ['#BSUB -J "dask-worker[1-3]"']
    assert "#BSUB -e /logs/dask-worker-%J_%I.err" in directives
    assert "#BSUB -o /logs/dask-worker-%J_%I.out" in directives
    assert jobs[0].output_files("12[3]")[0] == Path("/logs/dask-worker-12_3.err")
    assert jobs[0].output_files("12")[0] == Path("/logs/dask-worker-12.err")
    path = tmp_path / "job.sh"
    path.write_text(script)
    for index, name in ((1, "l-0"), (2, "l-1"), (3, "l-2")):
        env = {**os.environ, "LSB_JOBINDEX": str(index)}
        out = subprocess.run(["bash", str(path)], capture_output=True, text=True, env=env)
        assert f"--name {name} " in out.stdout
    # a plain job's script is untouched
    assert "#BSUB -J dask-worker\n" in jobs[0].job_script()


def test_no_arrays_for_names_lsf_refuses_in_one():
    assert lsf_jobs(1)[0].array_support_for({}) is LSFJob.array_support
    for kwargs in (
        {"job_name": "my+job"},
        {"job_name": "x" * 240},
        {"submit_command_extra": ["-J", "other"]},
    ):
        template = lsf_jobs(1, **kwargs)[0]
        assert template.array_support_for({}) is None, kwargs
        engine, runner = engine_with(template, _answer(arrays=iter(range(50, 60))))
        assert sorted(submit_many(engine, lsf_jobs(2, **kwargs))) == ["50", "51"]
        assert [c[0] for c in runner.calls].count("bsub") == 2


def test_array_without_a_j_line_still_gets_one():
    jobs = lsf_jobs(2, job_directives_skip=["-J"])
    script = array_script(jobs[0], ["a", "b"], LSFJob.array_support)
    assert script.splitlines()[1] == '#BSUB -J "dask-worker[1-2]"'


# ---------------------------------------------------------------------------- engine


def _answer(limit: int = 1000, arrays=None):
    """bparams -a stating ``limit``; each bsub prints the next id of ``arrays``."""
    arrays = iter(range(12, 40)) if arrays is None else arrays

    def answer(argv):
        if argv[0] == "bparams":
            return f"    CLEAN_PERIOD = 3600\n    MAX_JOB_ARRAY_SIZE = {limit}\n"
        return f"Job <{next(arrays)}> is submitted to queue <normal>.\n"

    return answer


def test_jobs_submitted_together_go_as_one_bsub():
    engine, runner = engine_with(lsf_jobs(1)[0], _answer(arrays=iter([12])))
    jobs = lsf_jobs(5)
    ids = submit_many(engine, jobs)
    assert ids == ["12[1]", "12[2]", "12[3]", "12[4]", "12[5]"]
    assert [j.job_id for j in jobs] == ids and engine.live_ids == set(ids)
    bsub = [c for c in runner.calls if c[0] == "bsub"]
    assert len(bsub) == 1
    assert bsub[0][:2] == ["bsub", "-Jd"] and "-J" not in bsub[0]  # the tag, no second -J
    assert '#BSUB -J "dask-worker[1-5]"' in bsub_stdins(runner)[0]
    assert ["bparams", "-a"] in runner.calls and engine.facts["max_array_size"] == 1000
    assert engine.commands["submit"] == 1


def test_split_to_max_job_array_size():
    engine, runner = engine_with(
        lsf_jobs(1)[0],
        _answer(limit=2, arrays=iter(range(20, 30))),
        submit_concurrency=1,
    )
    ids = submit_many(engine, lsf_jobs(5))
    assert ids == ["20[1]", "20[2]", "21[1]", "21[2]", "22"]
    assert engine.commands["submit"] == 3  # 2 + 2 + a single job
    scripts = bsub_stdins(runner)
    assert ['#BSUB -J "dask-worker[1-2]"' in s for s in scripts] == [True, True, False]
    assert "#BSUB -J dask-worker\n" in scripts[2]


def test_yaml_override_wins_over_bparams():
    engine, runner = engine_with(
        lsf_jobs(1)[0],
        _answer(limit=1000, arrays=iter(range(5, 15))),
        max_array_size=3,
        submit_concurrency=1,
    )
    ids = submit_many(engine, lsf_jobs(7))
    assert ids == ["5[1]", "5[2]", "5[3]", "6[1]", "6[2]", "6[3]", "7"]
    assert [c[0] for c in runner.calls].count("bsub") == 3


def test_arrays_never():
    engine, runner = engine_with(
        lsf_jobs(1)[0], _answer(arrays=iter(range(40, 50))), job_arrays="never"
    )
    assert sorted(submit_many(engine, lsf_jobs(3))) == ["40", "41", "42"]
    assert [c[0] for c in runner.calls] == ["bsub"] * 3  # no bparams either
    scripts = bsub_stdins(runner)
    assert [line for s in scripts for line in s.splitlines() if line.startswith("#BSUB -J")] == [
        "#BSUB -J dask-worker"
    ] * 3


def test_status_of_elements_is_one_bjobs_per_array():
    mixed = emulated("array_bjobs_json_mixed.txt")
    unknown_99 = emulated("array_bjobs_json_mixed.stderr.txt")

    def answer(argv):
        raise CommandError(argv, 255, mixed, unknown_99)

    engine, runner = engine_with(lsf_jobs(1)[0], answer)
    ids = ["1[1]", "1[2]", "1[3]", "1[5]", "1[6]", "2", "99"]
    statuses = query(engine, ids)
    assert runner.calls == [["bjobs", "-json", "-o", BJOBS_ARRAY_FIELDS, "1", "2", "99"]]
    assert set(statuses) == {"1[1]", "1[2]", "1[3]", "1[5]", "1[6]", "2"}  # 1[4] not asked
    assert statuses["1[2]"].exit_code == 3 and statuses["1[5]"].state == JobState.QUEUED
    # plain jobs alone: the fields as before (no jobindex)
    runner.calls.clear()
    query(engine, ["2"])
    assert runner.calls == [["bjobs", "-json", "-o", BJOBS_FIELDS, "2"]]


def test_status_of_elements_without_json():
    delimited = emulated("array_bjobs_delimited_mixed.txt")

    def answer(argv):
        if "-json" in argv:  # not a recorded message: an LSF older than 10.1.0.2
            raise CommandError(argv, 255, "", "bjobs: illegal option -- json\nUsage: bjobs\n")
        return delimited

    engine, runner = engine_with(lsf_jobs(1)[0], answer)
    statuses = query(engine, ["1[1]", "1[2]", "1[6]", "2"])
    assert runner.calls[-1] == [
        "bjobs",
        "-noheader",
        "-o",
        f"{BJOBS_ARRAY_FIELDS} delimiter='|'",
        "1",
        "2",
    ]
    assert statuses["1[6]"].state == JobState.CANCELLED and statuses["2"].state == JobState.HELD


def test_cancel_elements_in_one_bkill():
    engine, runner = engine_with(lsf_jobs(1)[0], lambda argv: "")
    assert cancel(engine, ["12[1]", "12[2]", "12[3]", "12[7]", "13"]) == []
    assert runner.calls == [["bkill", "12[1-3,7]", "13"]]


def test_cancel_of_elements_already_finished_is_no_failure():
    def answer(argv):  # emulated wording, as bkill 1[4-5] prints when 1[5] had ended
        raise CommandError(
            argv,
            255,
            "Job <12[4]> is being terminated\n",
            "Job <12[5]>: Job has already finished\n",
        )

    jobs = lsf_jobs(2)
    engine, runner = engine_with(jobs[0], answer)
    assert cancel(engine, ["12[4]", "12[5]"]) == []
    assert len(runner.calls) == 1  # not retried


def test_bsub_that_created_the_array_then_failed_is_adopted():
    """bsub exits 1 with a transient message after mbatchd took the array: its elements,
    listed under their tag, are adopted; nothing is submitted twice."""
    tags: list[str] = []

    def answer(argv):
        if argv[0] == "bparams":
            return "    MAX_JOB_ARRAY_SIZE = 1000\n"
        if argv[0] == "bsub":
            tags.append(argv[argv.index("-Jd") + 1])
            return (1, "LSF is processing your request. Please wait ...\n")
        if argv[:2] == ["bjobs", "-u"]:  # every element listed with its index
            return "".join(f"31|{i}|{tags[-1]}\n" for i in (1, 2, 3)) + "30|0|\n"
        raise AssertionError(argv)

    engine, runner = engine_with(lsf_jobs(1)[0], answer, submit_retry_delay=0.01)
    ids = submit_many(engine, lsf_jobs(3))
    assert ids == ["31[1]", "31[2]", "31[3]"]
    assert engine.live_ids == set(ids)
    assert [c[0] for c in runner.calls].count("bsub") == 1


def test_bsub_failing_for_good_is_not_retried():
    def answer(argv):
        if argv[0] == "bparams":
            return "    MAX_JOB_ARRAY_SIZE = 1000\n"
        return (255, "nosuchq: No such queue. Job not submitted.\n")

    engine, runner = engine_with(lsf_jobs(1)[0], answer, submit_retry_delay=0.01)
    (outcome, _) = submit_many(engine, lsf_jobs(2))
    assert isinstance(outcome, CommandError) and "No such queue" in str(outcome)
    assert [c[0] for c in runner.calls] == ["bparams", "bsub"]


# ---------------------------------------------------------------------------- the emulator


def test_emulator_arrays_are_real_processes(tmp_path):
    """The emulated bsub/bjobs/bkill/bparams on arrays (plain suite: no Dask involved)."""
    from .emulator import emulated_scheduler, kill_all, wait_for_job

    env = emulated_scheduler(
        "lsf", tmp_path / "home", slots=8, kill_delay=0.5, max_job_array_size=4
    )

    def sh(*argv, stdin=None):
        return subprocess.run(
            argv, env=env, capture_output=True, text=True, input=stdin, cwd=tmp_path
        )

    try:
        assert "    MAX_JOB_ARRAY_SIZE = 4\n" in sh("bparams", "-a").stdout
        too_big = sh("bsub", "-J", "big[1-5]", "true")
        assert too_big.returncode == 255 and "Job not submitted" in too_big.stderr
        script = (
            '#!/bin/bash\n#BSUB -J "arr[1-4]"\n#BSUB -o o-%J_%I.txt\n'
            'echo "index=$LSB_JOBINDEX"\nsleep 30\n'
        )
        out = sh("bsub", stdin=script).stdout
        assert out.startswith("Job <") and out.count("is submitted") == 1
        array = out.split("<")[1].split(">")[0]
        for index in range(1, 5):
            wait_for_job(tmp_path / "home", f"{array}[{index}]", states=("running",))
        assert wait_until(
            lambda: (
                (tmp_path / f"o-{array}_4.txt").exists()
                and "index=4" in (tmp_path / f"o-{array}_4.txt").read_text()
            ),
            10,
        )
        rows = sh(
            "bjobs", "-noheader", "-o", "jobid jobindex stat job_name delimiter='|'", array
        ).stdout.split()
        assert rows == [f"{array}|{i}|RUN|arr[{i}]" for i in range(1, 5)]
        assert sh("bkill", f"{array}[2]").stdout == f"Job <{array}[2]> is being terminated\n"
        assert sh("bkill", f"{array}[3-4]").returncode == 0
        states = sh(
            "bjobs", "-noheader", "-o", "jobindex stat exit_code delimiter='|'", array
        ).stdout.split()
        assert states == ["1|RUN|-", "2|EXIT|130", "3|EXIT|130", "4|EXIT|130"]
        assert sh("bkill", array).stdout == f"Job <{array}> is being terminated\n"
        assert sh("bkill", array).stderr == f"Job <{array}>: Job has already finished\n"
    finally:
        kill_all(tmp_path / "home")


def _queue_ids() -> set[str]:
    """Ids of the emulated LSF's active jobs and elements (``12``, ``12[3]``)."""
    ids = set()
    out = run(["bjobs", "-noheader", "-o", "jobid jobindex stat delimiter='|'"])
    for line in out.splitlines():
        job_id, index, stat = (p.strip() for p in line.split("|"))
        if stat in ("PEND", "PSUSP", "RUN", "USUSP", "SSUSP"):
            ids.add(f"{job_id}[{index}]" if index not in ("0", "-") else job_id)
    return ids


REAL = bool(os.environ.get("DASK_JOBQUEUE_REAL_SCHEDULER"))
emulator_only = pytest.mark.skipif(
    REAL, reason="sets the emulator's MAX_JOB_ARRAY_SIZE or injects its faults"
)


LSF_ARRAYS = ArraySystem(
    "lsf",
    partial(
        LSFCluster,
        cores=1,
        memory="1GB",
        processes=1,
        walltime="10:00",
        scheduler_options=NO_DASHBOARD,
    ),
    _queue_ids,
    ["bkill"],
    ["-H"],
)


@pytest.mark.env("lsf")
@pytest.mark.usefixtures("emulator")
class TestEmulatedLSFArrays:
    emulator_flavour = "lsf"
    emulator_options = {"walltime_scale": 1 / 60, "kill_delay": 1.0, "slots": 8}

    @pytest.fixture(autouse=True)
    def _fast(self, tmp_path, monkeypatch, emulator):  # noqa: F811
        monkeypatch.chdir(tmp_path)
        with dask.config.set(quick_polling("lsf")):
            yield
        if not REAL:
            clear_faults(emulator.home)

    def test_scale_is_one_bsub_and_elements_live_their_own_lives(self):
        def elements_of_one_array(cluster, client):
            ids = {job.job_id for job in cluster.workers.values()}
            assert len({i.split("[")[0] for i in ids}) == 1 and all("[" in i for i in ids)

        array_scenarios.end_to_end(LSF_ARRAYS, jobs=4, check=elements_of_one_array)

    def test_element_dying_before_connect_is_explained(self, tmp_path):
        failed = array_scenarios.task_dying_before_connect(LSF_ARRAYS, tmp_path / "logs")
        assert "[" in failed.job_id  # an element of the array

    @pytest.fixture
    def site_limit(self, emulator):  # noqa: F811
        """Set the emulated MAX_JOB_ARRAY_SIZE (restored afterwards)."""
        store = Store(emulator.home)
        saved = dict(store.config)
        yield lambda value: store.write_config({**saved, "max_job_array_size": value})
        store.write_config(saved)

    @emulator_only
    def test_low_max_job_array_size_splits_the_request(self, site_limit):
        site_limit(3)
        # three arrays, one bkill
        counts = array_scenarios.split(LSF_ARRAYS, cancel_commands=1)
        assert counts["limits"] == 1

    @emulator_only
    def test_override_above_the_site_limit_is_halved_after_the_refusal(self, site_limit):
        site_limit(2)
        with dask.config.set({"jobqueue.lsf.max-array-size": 5}):
            array_scenarios.halved_after_refusal(LSF_ARRAYS)

    def test_job_arrays_never_is_one_bsub_per_job(self):
        array_scenarios.never(LSF_ARRAYS)

    @emulator_only
    def test_bsub_that_created_the_array_then_failed_is_adopted(self, emulator):  # noqa: F811
        inject_fault(
            emulator.home,
            "submit_accept_then_fail",
            count=1,
            exit_code=1,
            stderr="LSF is processing your request. Please wait ...",
        )
        array_scenarios.adopted_after_failed_submit(LSF_ARRAYS)
