"""HTCondor job arrays: one ``condor_submit`` of a cluster of N procs (``Queue N``), each proc
still one job of the Dask cluster (``12.3``).

No real HTCondor pool is available to this project (tests/data/htcondor/README.md). The files
read here are labelled: ``array_expanded_htcondor2.txt`` is the real HTCondor 25.14.1
submit-language library (its PyPI bindings) expanding our submit description per proc; the
``condor_*`` outputs were made by this repository's emulator. The end-to-end tests at the end
run against the emulator (``pytest -E htcondor``).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from functools import partial
from pathlib import Path

import dask
import pytest

from dask_jobqueue import CommandError, HTCondorCluster
from dask_jobqueue.engine import array_script
from dask_jobqueue.htcondor import (
    HTCONDOR_ARRAYS,
    HTCondorJob,
    condor_array_description,
    condor_array_names_ok,
    condor_proc_ids,
    parse_condor_json,
    parse_condor_limits,
)
from dask_jobqueue.tracking import JobState

from . import array_scenarios
from .array_scenarios import ArraySystem
from .emulator import clear_faults, inject_fault
from .emulator.htcondor import _expand, _read_description
from .emulator.store import Store
from .fakes import cancel, engine_with
from .scheduler_suite import (
    NO_DASHBOARD,
    emulator,  # noqa: F401 (a fixture)
    quick_polling,
    run,
    wait_until,
)

DATA = Path(__file__).parent / "data" / "htcondor"


def data(name: str) -> str:
    return (DATA / name).read_text()


def condor_jobs(n: int, prefix: str = "c", **kwargs) -> list[HTCondorJob]:
    options = {"cores": 1, "memory": "1GB", "disk": "1GB", **kwargs}
    return [HTCondorJob("tcp://a:1", name=f"{prefix}-{i}", **options) for i in range(n)]


def submit_many(engine, jobs):
    return asyncio.run(engine.submit_many(jobs))


def submitted_description(argv: list[str]) -> str:
    """The submit description a ``condor_submit`` call was given (its last argument)."""
    return Path(argv[-1]).read_text()


# ---------------------------------------------------------------------------- parsers


def test_proc_ids_from_submit_output():
    # emulated; the wording is HTCondor's documented "N job(s) submitted to cluster C."
    out = data("condor_submit_queue_4.txt")
    assert condor_proc_ids(out, [0, 1, 2, 3]) == ["1.0", "1.1", "1.2", "1.3"]
    with pytest.raises(ValueError, match="another number of jobs"):
        condor_proc_ids(out, [0, 1])
    with pytest.raises(ValueError):
        condor_proc_ids("Submitting job(s)....", [0, 1, 2, 3])


def test_limit_from_condor_config_val():
    assert parse_condor_limits(data("condor_config_val_max_jobs.txt")) == {"max_array_size": 4}
    # 20000: MAX_JOBS_PER_SUBMISSION's built-in default, as the real HTCondor 25.14.1 library
    # reports it (htcondor2.param["MAX_JOBS_PER_SUBMISSION"] with no configuration)
    assert parse_condor_limits("20000\n") == {"max_array_size": 20000}
    assert parse_condor_limits("") == {} and parse_condor_limits("0\n") == {}
    assert parse_condor_limits("Not defined: MAX_JOBS_PER_SUBMISSION\n") == {}


def test_each_proc_has_its_own_status():
    # emulated: a cluster of 4 procs, 0 running, 1 exited 3, 2 removed, 3 held
    queue = parse_condor_json(data("condor_q_json_array_procs.txt"))
    history = parse_condor_json(data("condor_history_json_array_procs.txt"))
    assert set(queue) == {"1.0", "1.3"} and set(history) == {"1.1", "1.2"}
    assert queue["1.0"].state == JobState.RUNNING
    assert (queue["1.3"].state, queue["1.3"].reason) == (
        JobState.HELD,
        "via condor_hold (by user root)",
    )
    assert (history["1.1"].state, history["1.1"].exit_code) == (JobState.FAILED, 3)
    assert history["1.2"].state == JobState.CANCELLED


def test_over_the_limit_message():
    # emulated, with the message of HTCondor's condor_submit when the schedd refuses a proc
    stderr = data("condor_submit_over_max_jobs.stderr.txt")
    assert "Number of submitted jobs would exceed MAX_JOBS_PER_SUBMISSION" in stderr
    assert "submitted to cluster" not in data("condor_submit_over_max_jobs.txt")


def test_description_expands_per_proc_as_htcondor_does():
    """The real HTCondor submit language gave each proc its own name, output files and
    arguments; the emulator expands the same description the same way."""
    description = data("array_description.sub")
    recorded: dict[int, dict[str, str]] = {}
    for line in data("array_expanded_htcondor2.txt").splitlines():
        if line.startswith("## proc "):
            proc = int(line.split()[-1])
            recorded[proc] = {}
        elif " = " in line and not line.startswith("#"):
            key, value = line.split(" = ", 1)
            recorded[proc][key] = value
    assert [recorded[p]["MY.DaskWorkerName"] for p in range(3)] == [
        '"HTCondorCluster-0"',
        '"HTCondorCluster-1"',
        '"w@h:3"',
    ]
    assert recorded[2]["Output"] == "/logs/worker-12.2.out"
    macros: dict[str, str] = {}
    for _, line in _read_description(description):
        key, sep, value = line.partition("=")
        if sep:
            macros[key.strip().lower().replace("_", "")] = value.strip()
    for proc, expected in recorded.items():
        for key, value in expected.items():
            raw = macros[key.lower().replace("_", "")]
            assert _expand(raw, macros, 12, proc) == value, (proc, key)
        assert (
            f"--name {['HTCondorCluster-0', 'HTCondorCluster-1', 'w@h:3'][proc]} "
            in (expected["Arguments"])
        )


def test_generated_description_matches_the_expanded_one():
    """Our description's per-proc lines are those the real library expanded."""
    job = HTCondorJob(
        "tcp://10.0.0.1:8786",
        name="x",
        cores=1,
        memory="1GB",
        disk="1GB",
        log_directory="/logs",
        python="/usr/bin/python3",
    )
    script = array_script(job, ["HTCondorCluster-0", "HTCondorCluster-1", "w@h:3"], HTCONDOR_ARRAYS)
    recorded = data("array_description.sub").splitlines()
    ours = script.splitlines()
    for prefix in (
        "DaskWorkerNames",
        "MY.DaskWorkerName",
        "batch_name",
        "Output",
        "Error",
        "Log",
        "Queue",
    ):
        assert [x for x in ours if x.startswith(prefix)] == [
            x for x in recorded if x.startswith(prefix)
        ], prefix
    arguments = next(x for x in ours if x.startswith("Arguments"))
    assert "--name $CHOICE(Process, DaskWorkerNames) " in arguments
    assert ours[-1] == "Queue 3" and script.count("Queue") == 1


def test_names_that_cannot_be_listed():
    assert condor_array_names_ok(["HTCondorCluster-0", "a.b_c@d:1"])
    for bad in ("a,b", "a b", 'a"b', "a$b", "a'b", "a;b", ""):
        assert not condor_array_names_ok(["ok", bad]), bad
    with pytest.raises(ValueError, match="cannot be listed"):
        condor_array_description("x = PLACE\nQueue\n", "PLACE", ["a b", "c"])
    with pytest.raises(ValueError, match="Queue"):
        condor_array_description("x = PLACE\n", "PLACE", ["a", "b"])


def test_adopting_the_procs_of_a_tagged_cluster():
    adopt = HTCONDOR_ARRAYS.adopt
    # a proc that already left the queue is not listed: still one of the cluster
    assert adopt(["31.0", "31.2"], [0, 1, 2]) == ["31.0", "31.1", "31.2"]
    with pytest.raises(ValueError):
        adopt(["31.0", "32.0"], [0, 1])


# ---------------------------------------------------------------------------- engine


def _answer(limit: str = "20000\n", clusters=None):
    clusters = clusters if clusters is not None else iter(range(12, 40))

    def answer(argv):
        if argv[0] == "condor_config_val":
            return limit
        if argv[0] == "condor_submit":
            count = re.search(r"^Queue ?(\d*)$", submitted_description(argv), re.M).group(1)
            n = int(count or 1)
            return (
                f"Submitting job(s){'.' * n}\n{n} job(s) submitted to cluster {next(clusters)}.\n"
            )
        return ""

    return answer


def test_jobs_submitted_together_go_as_one_cluster():
    descriptions = []
    answer = _answer()

    def recording(argv):
        if argv[0] == "condor_submit":
            descriptions.append(submitted_description(argv))
        return answer(argv)

    engine, runner = engine_with(condor_jobs(1)[0], recording)
    jobs = condor_jobs(4)
    ids = submit_many(engine, jobs)
    assert ids == ["12.0", "12.1", "12.2", "12.3"]
    assert [j.job_id for j in jobs] == ids and engine.live_ids == set(ids)
    assert engine.commands["submit"] == 1
    assert engine.facts["max_array_size"] == 20000
    assert ["condor_config_val", "MAX_JOBS_PER_SUBMISSION"] in runner.calls
    (description,) = descriptions
    assert "DaskWorkerNames = c-0, c-1, c-2, c-3" in description
    assert description.rstrip().endswith("Queue 4")
    # the tag travels as a custom attribute of every proc
    (submit,) = [c for c in runner.calls if c[0] == "condor_submit"]
    assert submit[1] == "-a" and submit[2].startswith("+DaskJobqueueTag = ")


def test_split_to_max_jobs_per_submission():
    engine, runner = engine_with(condor_jobs(1)[0], _answer(limit="2\n"), submit_concurrency=1)
    ids = submit_many(engine, condor_jobs(5))
    submits = [c for c in runner.calls if c[0] == "condor_submit"]
    assert len(submits) == 3  # 2 + 2 + a single job
    assert ids == ["12.0", "12.1", "13.0", "13.1", "14.0"]


def test_yaml_override_wins_over_the_schedd():
    engine, runner = engine_with(
        condor_jobs(1)[0], _answer(), max_array_size=3, submit_concurrency=1
    )
    ids = submit_many(engine, condor_jobs(7))
    assert [c[0] for c in runner.calls].count("condor_submit") == 3
    assert ids == ["12.0", "12.1", "12.2", "13.0", "13.1", "13.2", "14.0"]


def test_arrays_never():
    engine, runner = engine_with(condor_jobs(1)[0], _answer(), job_arrays="never")
    assert sorted(submit_many(engine, condor_jobs(3))) == ["12.0", "13.0", "14.0"]
    submits = [c for c in runner.calls if c[0] == "condor_submit"]
    assert len(submits) == 3
    assert not [c for c in runner.calls if c[0] == "condor_config_val"]


def test_names_that_cannot_be_listed_go_one_by_one():
    engine, runner = engine_with(condor_jobs(1)[0], _answer())
    ids = submit_many(engine, condor_jobs(2, prefix="my cluster"))
    assert sorted(ids) == ["12.0", "13.0"]
    assert [c[0] for c in runner.calls].count("condor_submit") == 2


def test_cancel_several_procs_in_one_condor_rm():
    engine, runner = engine_with(condor_jobs(1)[0], lambda argv: "")
    assert cancel(engine, ["12.0", "12.1", "12.3", "13.0"]) == []
    assert runner.calls == [["condor_rm", "12.0", "12.1", "12.3", "13.0"]]


def test_procs_already_gone_are_cancelled():
    # emulated condor_rm of a live proc and one that left the queue: exit 1, the line on
    # stderr only says it is gone
    stderr = data("condor_rm_several_procs.stderr.txt")
    engine, runner = engine_with(condor_jobs(1)[0], lambda argv: (1, stderr))
    assert cancel(engine, ["1.0", "1.3", "1.2"]) == []
    assert len(runner.calls) == 1


def test_transient_failure_after_the_cluster_was_created_adopts_its_procs():
    tags: list[str] = []

    def answer(argv):
        if argv[0] == "condor_config_val":
            return "20000\n"
        if argv[0] == "condor_submit":
            tags.append(argv[2].split(" = ", 1)[1].strip('"'))
            # the schedd committed the cluster; the reply was lost
            raise CommandError(
                argv, 1, "Submitting job(s)...\n", "ERROR: ... Connection reset by peer\n"
            )
        if argv[0] == "condor_q":  # the tag listing: procs 0 and 2 (1 already left)
            return f"31 0 1 {tags[-1]}\n31 2 1 {tags[-1]}\n30 0 2 undefined\n"
        return ""

    engine, runner = engine_with(condor_jobs(1)[0], answer, submit_retry_delay=0)
    assert submit_many(engine, condor_jobs(3)) == ["31.0", "31.1", "31.2"]
    assert [c[0] for c in runner.calls].count("condor_submit") == 1
    assert engine.live_ids == {"31.0", "31.1", "31.2"}


# ---------------------------------------------------------------------------- emulator


def test_emulated_clusters_of_procs(tmp_path):
    """The emulator's ``Queue N``: N procs that really run, each with its own ``$(Process)``
    and ``$CHOICE`` item; condor_rm of one proc, several, a whole cluster; the schedd's
    limit."""
    from .emulator import emulated_scheduler, wait_for_job

    home = tmp_path / "condor"
    with emulated_scheduler(
        "htcondor", home, slots=8, kill_delay=0.5, max_jobs_per_submission=4
    ) as env:

        def tool(*argv: str) -> subprocess.CompletedProcess:
            return subprocess.run(argv, env=env, capture_output=True, text=True, cwd=tmp_path)

        sub = tmp_path / "procs.sub"
        sub.write_text(
            "Names = a-0, b-1, c-2\n"
            'MY.Who = "$CHOICE(Process, Names)"\n'
            "executable = /bin/sh\n"
            "arguments = \"-c 'echo $CHOICE(Process, Names) $(Process) >out.$(ProcId); "
            "sleep 60'\"\n"
            "queue 3\n"
        )
        done = tool("condor_submit", str(sub))
        assert done.stdout == "Submitting job(s)...\n3 job(s) submitted to cluster 1.\n"
        assert tool("condor_config_val", "MAX_JOBS_PER_SUBMISSION").stdout == "4\n"
        for proc in range(3):
            wait_for_job(home, f"1.{proc}", states=("running",))
        assert wait_until(lambda: all((tmp_path / f"out.{p}").exists() for p in range(3)), 10)
        assert [(tmp_path / f"out.{p}").read_text() for p in range(3)] == [
            "a-0 0\n",
            "b-1 1\n",
            "c-2 2\n",
        ]
        listed = tool("condor_q", "1", "-af", "ClusterId", "ProcId", "Who", "JobStatus").stdout
        assert sorted(listed.splitlines()) == ["1 0 a-0 2", "1 1 b-1 2", "1 2 c-2 2"]

        assert tool("condor_rm", "1.1").stdout == "Job 1.1 marked for removal\n"
        wait_for_job(home, "1.1")
        assert tool("condor_q", "-af:j", "JobStatus").stdout.split()[::2] == ["1.0", "1.2"]
        done = tool("condor_rm", "1.0", "1.1", "1.2")
        assert done.returncode == 1 and "ProcId == 1" in done.stderr
        assert done.stdout.splitlines() == [
            "Job 1.0 marked for removal",
            "Job 1.2 marked for removal",
        ]

        sub.write_text("executable = /bin/sleep\narguments = 60\nqueue 2\n")
        assert "submitted to cluster 2." in tool("condor_submit", str(sub)).stdout
        assert (
            tool("condor_rm", "2").stdout == "All jobs in cluster 2 have been marked for removal\n"
        )
        wait_for_job(home, "2.0")
        wait_for_job(home, "2.1")

        sub.write_text("executable = /bin/true\nqueue 5\n")
        done = tool("condor_submit", str(sub))
        assert done.returncode == 1 and "submitted to cluster" not in done.stdout
        assert "would exceed MAX_JOBS_PER_SUBMISSION" in done.stderr
        wait_for_job(home, "1.0")
        wait_for_job(home, "1.2")
        assert not tool("condor_q", "-af:j", "JobStatus").stdout.strip()


NAME = "djqcarr"


def _queue_ids() -> set[str]:
    """Ids the emulated schedd still lists (idle, running, held, being removed)."""
    return set(run(["condor_q", "-af:j", "JobStatus"]).split()[::2])


def _clusters(ids: set[str]) -> set[str]:
    return {i.split(".")[0] for i in ids}


HTCONDOR_ARRAYS_E2E = ArraySystem(
    "htcondor",
    partial(
        HTCondorCluster,
        cores=1,
        memory="1GB",
        disk="1GB",
        processes=1,
        scheduler_options=NO_DASHBOARD,
    ),
    _queue_ids,
    ["condor_rm"],
    {"hold": "True"},
)


@pytest.mark.env("htcondor")
@pytest.mark.usefixtures("emulator")
class TestEmulatedHTCondorArrays:
    emulator_flavour = "htcondor"
    emulator_options = {"kill_delay": 1.0, "slots": 8}

    @pytest.fixture(autouse=True)
    def _fast(self, emulator):  # noqa: F811
        with dask.config.set(quick_polling("htcondor")):
            yield
        clear_faults(emulator.home)

    @pytest.fixture
    def max_jobs(self, emulator):  # noqa: F811
        """Set the emulated schedd's MAX_JOBS_PER_SUBMISSION (restored afterwards)."""
        store = Store(emulator.home)
        saved = dict(store.config)

        def set_limit(value: int) -> None:
            store.write_config({**saved, "max_jobs_per_submission": value})

        yield set_limit
        store.write_config(saved)

    def test_array_end_to_end(self):
        def procs_of_one_cluster_named_in_the_schedd(cluster, client):
            assert len(_clusters({j.job_id for j in cluster.workers.values()})) == 1
            listed = dict(
                line.split(" ", 1)
                for line in run(["condor_q", "-af:j", "DaskWorkerName"]).splitlines()
            )
            assert {listed[j.job_id] for j in cluster.workers.values()} == set(cluster.workers)

        array_scenarios.end_to_end(
            HTCONDOR_ARRAYS_E2E, jobs=4, check=procs_of_one_cluster_named_in_the_schedd
        )

    def test_proc_dying_before_connect_is_explained(self, tmp_path):
        failed = array_scenarios.task_dying_before_connect(HTCONDOR_ARRAYS_E2E, tmp_path / "logs")
        assert re.fullmatch(r"\d+\.\d", failed.job_id)
        assert (tmp_path / "logs" / f"worker-{failed.job_id}.err").exists()

    def test_split_at_a_low_max_jobs_per_submission(self, max_jobs):
        max_jobs(3)
        # one condor_rm for all seven
        counts = array_scenarios.split(HTCONDOR_ARRAYS_E2E, cancel_commands=1)
        assert counts["limits"] == 1

    def test_override_above_the_schedd_limit_is_halved_after_the_refusal(self, max_jobs):
        max_jobs(2)
        with dask.config.set({"jobqueue.htcondor.max-array-size": 5}):
            array_scenarios.halved_after_refusal(HTCONDOR_ARRAYS_E2E)

    def test_arrays_never(self):
        array_scenarios.never(HTCONDOR_ARRAYS_E2E)

    @pytest.mark.parametrize(
        "fault, settings",
        [
            # condor_submit exits 1 with a transient message after the schedd committed
            (
                {
                    "stderr": "\nERROR: Failed to commit job submission into the queue.\n"
                    "ERROR: Connection reset by peer"
                },
                {},
            ),
            # condor_submit hangs after the commit and is killed at submit-timeout
            ({"seconds": 30}, {"jobqueue.htcondor.submit-timeout": "4s"}),
        ],
        ids=["exit-1", "timeout"],
    )
    def test_cluster_created_by_a_failed_submit_is_adopted(self, emulator, fault, settings):  # noqa: F811
        inject_fault(emulator.home, "submit_accept_then_fail", count=1, **fault)
        with dask.config.set(settings):
            array_scenarios.adopted_after_failed_submit(HTCONDOR_ARRAYS_E2E)
