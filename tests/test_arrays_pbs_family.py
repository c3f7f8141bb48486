"""Job arrays of the PBS family: Torque (``qsub -t``), OpenPBS through the emulator (``-J``),
and Moab (none: one ``msub`` per job, see ``moab.py``).

Parsers read real OpenPBS 23.06.06 recordings (``tests/data/arrays/pbs``) and EMULATED Torque
outputs (``tests/data/pbs/torque_*``: no real Torque is available, see its README). The engine
tests answer commands with those outputs (``tests/fakes.py``). End-to-end tests run the
emulators: ``pytest -E torque`` (emulated Torque and emulated PBS Pro: ``-E pbs`` is the real
OpenPBS) and ``pytest -E moab``.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from functools import partial
from pathlib import Path

import dask
import pytest
from distributed import Client

from dask_jobqueue import MoabCluster, PBSCluster
from dask_jobqueue.dialects.pbs import parse_pbs_tags
from dask_jobqueue.engine import array_script
from dask_jobqueue.moab import MoabJob
from dask_jobqueue.pbs import (
    TORQUE_ARRAYS,
    PBSJob,
    parse_pbs_limits,
    parse_pbs_version,
    parse_qstat_text,
    pbs_array_task_ids,
    qstat_text_argv,
    torque_qstat_argv,
)
from dask_jobqueue.tracking import JobState

from . import array_scenarios
from .array_scenarios import ArraySystem
from .emulator import inject_fault
from .fakes import cancel, engine_with
from .scheduler_suite import (
    NO_DASHBOARD,
    emulator,  # noqa: F401 (a fixture)
    quick_polling,
    run,
)

REAL = Path(__file__).parent / "data" / "arrays" / "pbs"  # real OpenPBS 23.06.06
EMULATED = Path(__file__).parent / "data" / "pbs"  # torque_*: emulated Torque


def real_stdout(name: str) -> str:
    text = (REAL / name).read_text()
    return text.split("### stdout\n", 1)[1].split("### stderr", 1)[0]


def real_stderr(name: str) -> str:
    text = (REAL / name).read_text()
    return text.split("### stderr\n", 1)[1].split("### exit code", 1)[0]


def pbs_jobs(n: int, prefix: str = "t", **kwargs) -> list[PBSJob]:
    options = {"cores": 1, "memory": "1GB", **kwargs}
    return [PBSJob("tcp://a:1", name=f"{prefix}-{i}", **options) for i in range(n)]


def submit_many(engine, jobs):
    return asyncio.run(engine.submit_many(jobs))


# ---------------------------------------------------------------------------- parsers


def test_torque_flavour_and_limit_from_emulated_outputs():
    assert parse_pbs_version((EMULATED / "torque_qstat_version.txt").read_text()) == {
        "pbs_flavour": "torque"
    }
    assert parse_pbs_limits((EMULATED / "torque_qmgr_list_server.txt").read_text()) == {
        "max_array_size": 1000
    }
    # qmgr's "print server" form; unset or 0: no limit
    assert parse_pbs_limits("set server max_job_array_size = 64\n") == {"max_array_size": 64}
    assert parse_pbs_limits("Server s\n\tserver_state = Active\n") == {}


def test_openpbs_limit_from_real_recording():
    assert parse_pbs_limits(real_stdout("34_limits_small.txt")) == {"max_array_size": 10}


def test_torque_subjob_ids_and_states_from_emulated_outputs():
    ids = pbs_array_task_ids((EMULATED / "torque_qsub_array.txt").read_text(), [0, 1, 2])
    assert ids == ["1[0].server", "1[1].server", "1[2].server"]
    statuses = parse_qstat_text((EMULATED / "torque_qstat_f_t_array.txt").read_text())
    assert statuses["1[0].server"].state == JobState.RUNNING
    assert statuses["1[2].server"].state == JobState.RUNNING
    # qdel'd while running: exit_status 271 (256 + SIGTERM), Torque's C state
    assert (statuses["1[1].server"].state, statuses["1[1].server"].native_state) == (
        JobState.CANCELLED,
        "C",
    )


def test_torque_tagged_array_listed_by_its_summary():
    # without -t, Torque's qstat -f shows the array as one job 1[]: its tag leads to the subjobs
    tags = parse_pbs_tags((EMULATED / "torque_qstat_f_array_summary.txt").read_text())
    assert tags == {"1[].server": "djq1.0a1b2c3d.0.4242.login01"}
    assert TORQUE_ARRAYS.adopt(list(tags), [0, 1, 2]) == [
        "1[0].server",
        "1[1].server",
        "1[2].server",
    ]


def test_finished_subjob_cancel_is_not_a_failure():
    gone = PBSJob.cancel_gone_pattern
    # real OpenPBS: a subjob that ended while its array runs
    assert gone.search(real_stderr("14_qdel_finished_subjob.txt"))
    assert gone.search(real_stderr("45_qdel_finished_subjob_after_array_done.txt"))
    # emulated Torque
    assert gone.search((EMULATED / "torque_qdel_completed_subjob.stderr.txt").read_text())
    # an index the array never had is a real error
    assert not gone.search(real_stderr("15_qdel_nonexistent_index.txt"))


def test_text_status_asks_for_subjobs_with_t():
    job = pbs_jobs(1)[0]
    assert torque_qstat_argv(job, ["3[0].srv", "4.srv"], {}) == [
        "qstat",
        "-f",
        "-t",
        "3[0].srv",
        "4.srv",
    ]
    assert torque_qstat_argv(job, ["4.srv"], {}) == ["qstat", "-f", "4.srv"]
    # PBS Pro's text form (a poll whose JSON was invalid) keeps finished jobs: -x
    assert qstat_text_argv(job, ["3[0].srv"], {}) == ["qstat", "-f", "-x", "-t", "3[0].srv"]


def test_subjob_output_files_cover_openpbs_and_torque_names(tmp_path):
    job = pbs_jobs(1, job_name="w")[0]
    names = [p.name for p in job.output_files("12[3].server")]
    assert "w.e12.3" in names  # OpenPBS (recorded: scen.e65.2)
    assert "w.e12-3" in names and "w-3.e12" in names  # Torque
    logs = pbs_jobs(1, job_name="w", log_directory=str(tmp_path))[0]
    paths = logs.output_files("12[3].server")
    assert tmp_path / "12[3].server.ER" in paths and tmp_path / "w.e12-3" in paths


def test_array_script_selects_the_worker_name_by_pbs_arrayid(tmp_path):
    jobs = pbs_jobs(2, prefix="arr", python="echo")
    path = tmp_path / "job.sh"
    path.write_text(array_script(jobs[0], [j.name for j in jobs], TORQUE_ARRAYS))
    for index, name in ((0, "arr-0"), (1, "arr-1")):
        env = {**os.environ, "PBS_ARRAYID": str(index)}
        done = subprocess.run(["bash", str(path)], capture_output=True, text=True, env=env)
        assert f"--name {name} " in done.stdout, done.stdout + done.stderr


# ---------------------------------------------------------------------------- engine


def _torque(limit: int | None, adopt_output: str | None = None):
    """Answers of an emulated-Torque-like site (qsub prints ``80[].srv`` / ``81.srv``)."""
    submitted = []

    def answer(argv):
        if argv[:2] == ["qstat", "--version"]:
            return "Version: 6.1.3\n"
        if argv[0] == "qmgr":
            return "Server srv\n" + (f"\tmax_job_array_size = {limit}\n" if limit else "")
        if argv[0] == "qsub":
            submitted.append(argv)
            base = 79 + len(submitted)
            return f"{base}[].srv\n" if "-t" in argv else f"{base}.srv\n"
        return ""

    return answer, submitted


def test_torque_arrays_split_to_the_site_limit():
    answer, submitted = _torque(limit=2)
    jobs = pbs_jobs(5)
    engine, runner = engine_with(jobs[0], answer, submit_concurrency=1)
    ids = submit_many(engine, jobs)
    assert sorted(ids) == ["80[0].srv", "80[1].srv", "81[0].srv", "81[1].srv", "82.srv"]
    arrays = [a for a in submitted if "-t" in a]
    assert [a[a.index("-t") + 1] for a in arrays] == ["0-1", "0-1"]
    assert len(submitted) == 3  # ceil(5 / 2)
    assert engine.facts["pbs_flavour"] == "torque"


def test_max_array_size_override_wins_over_the_site():
    answer, submitted = _torque(limit=1000)
    engine, _ = engine_with(pbs_jobs(1)[0], answer, max_array_size=3)
    submit_many(engine, pbs_jobs(6))
    assert [a[a.index("-t") + 1] for a in submitted] == ["0-2", "0-2"]


def test_job_arrays_never_submits_one_job_per_command():
    answer, submitted = _torque(limit=None)
    engine, runner = engine_with(pbs_jobs(1)[0], answer, job_arrays="never")
    submit_many(engine, pbs_jobs(3))
    assert len(submitted) == 3 and not any("-t" in a for a in submitted)
    assert not any(c[0] == "qmgr" for c in runner.calls)  # no limit asked for


def test_torque_subjobs_cancelled_one_qdel_each():
    answer, _ = _torque(limit=None)
    jobs = pbs_jobs(3)
    engine, runner = engine_with(jobs[0], answer)
    ids = submit_many(engine, jobs)
    runner.calls.clear()
    assert cancel(engine, ids[:2]) == []
    assert runner.calls == [["qdel", "80[0].srv"], ["qdel", "80[1].srv"]]
    assert engine.live_ids == {"80[2].srv"}


def test_torque_failed_submit_adopts_the_array_it_created():
    """qsub created the array, then failed with a transient error before printing its id:
    the array is found by its tag (Torque rejects -F json; plain qstat -f shows it as 90[])."""
    template = (EMULATED / "torque_qstat_f_array_summary.txt").read_text()
    state = {"qsub": 0}

    def answer(argv):
        if argv[:2] == ["qstat", "--version"]:
            return "Version: 6.1.3\n"
        if argv[0] == "qmgr":
            return "Server srv\n"
        if argv[0] == "qsub":
            state["qsub"] += 1
            # the tag is in the job name, dask-worker-<tag>
            state["tag"] = argv[argv.index("-N") + 1].removeprefix("dask-worker-")
            return (1, "qsub: End of File: Connection reset by peer\n")
        if argv[:4] == ["qstat", "-f", "-F", "json"]:
            return (2, "qstat: invalid option -- 'F'\n")
        if argv[:2] == ["qstat", "-f"]:
            text = template.replace("djq1.0a1b2c3d.0.4242.login01", state["tag"])
            return text.replace("Job Id: 1[].server", "Job Id: 90[].server")
        return ""

    jobs = pbs_jobs(3)
    engine, runner = engine_with(jobs[0], answer, submit_retry_delay=0.01, submit_concurrency=1)
    ids = submit_many(engine, jobs)
    assert ids == ["90[0].server", "90[1].server", "90[2].server"]
    assert state["qsub"] == 1  # adopted, not submitted again
    assert engine.live_ids == set(ids)


def test_moab_has_no_arrays():
    job = MoabJob("tcp://a:1", name="m-0", cores=1, memory="1GB")
    assert job.array_support_for({"pbs_flavour": "torque"}) is None
    assert MoabJob.site_probes == ()


# ---------------------------------------------------------------------------- end to end


def _subjob_ids() -> set[str]:
    """Subjobs (and plain jobs) the emulated qstat -t lists as not finished."""
    ids = set()
    for line in run(["qstat", "-t"]).splitlines():
        fields = line.split()
        if len(fields) >= 6 and re.match(r"^\d+(\[\d+\])?\.", fields[0]):
            if fields[-2] not in ("C", "F", "X"):
                ids.add(fields[0])
    return ids


PBS_ARRAYS = ArraySystem(
    "pbs",
    partial(
        PBSCluster,
        cores=1,
        memory="1GB",
        processes=1,
        walltime="00:10:00",
        scheduler_options=NO_DASHBOARD,
    ),
    _subjob_ids,
    ["qdel"],
    ["-h"],
)


class ArraySuite:
    """Arrays end to end on one emulated member of the PBS family."""

    emulator_flavour: str
    emulator_options = {"kill_delay": 0.5}
    limit_attribute: str  # the qmgr attribute of the array limit
    split_cancels: int  # qdel commands removing seven subjobs of three arrays

    @pytest.fixture(autouse=True)
    def _fast(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        with dask.config.set(quick_polling("pbs")):
            yield

    def test_scale_down_and_replacement(self):
        def subjobs_of_one_array(cluster, client):
            ids = {job.job_id for job in cluster.workers.values()}
            assert all("[" in i for i in ids) and len({i.split("[")[0] for i in ids}) == 1

        array_scenarios.end_to_end(PBS_ARRAYS, jobs=4, check=subjobs_of_one_array)

    def test_task_dying_before_connect_is_explained(self, tmp_path):
        failed = array_scenarios.task_dying_before_connect(PBS_ARRAYS, tmp_path / "logs")
        assert "[" in failed.job_id  # a subjob of the array

    def test_low_site_limit_splits_the_submission(self):
        run(["qmgr", "-c", "set server " + self.limit_attribute + " = 3"])
        try:
            array_scenarios.split(PBS_ARRAYS, cancel_commands=self.split_cancels)
        finally:
            run(["qmgr", "-c", "unset server " + self.limit_attribute])

    def test_override_above_the_site_limit_is_halved_after_the_refusal(self):
        run(["qmgr", "-c", "set server " + self.limit_attribute + " = 2"])
        try:
            with dask.config.set({"jobqueue.pbs.max-array-size": 5}):
                array_scenarios.halved_after_refusal(PBS_ARRAYS)
        finally:
            run(["qmgr", "-c", "unset server " + self.limit_attribute])

    def test_job_arrays_never(self):
        array_scenarios.never(PBS_ARRAYS)

    def test_submit_failing_after_creating_the_array(self, emulator):  # noqa: F811
        inject_fault(
            emulator.home,
            "submit_accept_then_fail",
            count=1,
            exit_code=1,
            stderr="qsub: cannot connect to server server (errno=104) Connection reset by peer",
        )
        array_scenarios.adopted_after_failed_submit(PBS_ARRAYS)


@pytest.mark.env("torque")
@pytest.mark.usefixtures("emulator")
class TestArraysOnEmulatedTorque(ArraySuite):
    emulator_flavour = "torque"
    limit_attribute = "max_job_array_size"
    split_cancels = 7  # one qdel per subjob: Torque's qdel ranges were never checked


# -E pbs is the real OpenPBS: the emulated PBS Pro flavour runs under -E torque too
@pytest.mark.env("torque")
@pytest.mark.usefixtures("emulator")
class TestArraysOnEmulatedPBSPro(ArraySuite):
    emulator_flavour = "pbs"
    limit_attribute = "max_array_size"
    split_cancels = 3  # one range per qdel


@pytest.mark.env("moab")
@pytest.mark.usefixtures("emulator")
class TestNoArraysOnEmulatedMoab:
    """Moab gets no arrays (see moab.py): several workers are several msub commands; the
    emulated Moab still runs Torque arrays submitted with qsub -t and shows their subjobs."""

    emulator_flavour = "moab"
    emulator_options = {"kill_delay": 0.5}

    def test_one_msub_per_job(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        with dask.config.set({"jobqueue.moab.poll-interval": "300ms"}):
            with (
                MoabCluster(
                    cores=1, memory="1GB", processes=1, scheduler_options=NO_DASHBOARD
                ) as cluster,
                Client(cluster) as client,
            ):
                cluster.scale(3)
                client.wait_for_workers(3, timeout=90)
                assert cluster.command_counts["submit"] == 3
                assert client.submit(lambda: 5).result(timeout=30) == 5

    def test_torque_subjobs_under_moab(self, tmp_path):
        script = tmp_path / "s.sh"
        script.write_text("#!/bin/bash\necho index=$PBS_ARRAYID\nsleep 30\n")
        out = subprocess.run(
            ["qsub", "-t", "0-1", "-h", str(script)], capture_output=True, text=True, check=True
        ).stdout
        seq = re.match(r"(\d+)\[\]\.", out).group(1)
        showq = run(["showq"])
        assert f"{seq}[0] " in showq and f"{seq}[1] " in showq
        assert "UserHold" in showq
        subprocess.run(["canceljob", f"{seq}[0]"], capture_output=True, check=True)
        assert f"{seq}[0] " not in run(["showq"])
        subprocess.run(["qdel", f"{seq}[].server"], capture_output=True, check=False)
