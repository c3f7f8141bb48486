"""Faults of the batch-system commands, on the REAL Slurm, Grid Engine, OpenPBS and OAR.

A fake command stands in front of the real one on ``PATH`` (``tests/fakecmd.py``): it hangs,
fails once or always, answers "unknown job", prints a banner, submits and then hangs, or
submits and then fails with a transient error. For
each: no runaway (submit calls are counted), the right job ids, time limits honoured, and
nothing left in the real queue.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import pwd
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import dask
import pytest
from distributed import Client

from dask_jobqueue import JobFailedError, JobState
from dask_jobqueue.sge import parse_qstat_xml

from .fakecmd import fake_commands  # noqa: F401  (fixture)
from .scheduler_suite import NO_DASHBOARD, Backend, quick_polling, run, wait_until
from .test_oar import OAR
from .test_pbs import OPENPBS
from .test_sge import SGE
from .test_slurm import SLURM

DATA = Path(__file__).parent / "data"
# resolved before any fake is put on PATH
REAL_STATUS_COMMANDS = {name: shutil.which(name) or name for name in ("squeue", "qstat", "oarstat")}


@dataclass(frozen=True)
class Commands:
    backend: Backend
    submit: str
    status: str
    cancel: str
    #: what the status command answers when the controller forgot every job: (stdout, stderr, rc)
    forgot_jobs: tuple[str, str, int]
    #: what a cancel command says when the controller does not answer
    cancel_error: str
    #: a transient error a submit command prints after the controller took the job (its
    #: reply lost): a timeout, a dropped connection
    submit_transient: str


SLURM_COMMANDS = Commands(
    SLURM,
    "sbatch",
    "squeue",
    "scancel",
    ("", "slurm_load_jobs error: Invalid job id specified", 1),
    "scancel: error: Kill job error on job id: Socket timed out on send/recv operation",
    "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation",
)
SGE_COMMANDS = Commands(
    SGE,
    "qsub",
    "qstat",
    "qdel",
    ((DATA / "sge" / "qstat_xml_empty.txt").read_text(), "", 0),
    "error: commlib error: got select error (Connection refused)",
    "error: commlib error: got select error (Connection reset by peer)\n"
    "Unable to run job: failed receiving gdi request response for mid=1 (got syncron message "
    "receive timeout error).",
)


PBS_RECORDED = DATA / "pbs" / "openpbs-23.06.06"
PBS_COMMANDS = Commands(
    OPENPBS,
    "qsub",
    "qstat",
    "qdel",
    (
        (PBS_RECORDED / "qstat_unknown_job.stdout").read_text(),
        (PBS_RECORDED / "qstat_unknown_job.stderr").read_text(),
        int((PBS_RECORDED / "qstat_unknown_job.rc").read_text()),
    ),
    "qdel: cannot connect to server vm-pbs (errno=15010)",
    "qsub: Connection reset by peer",
)


OAR_COMMANDS = Commands(
    OAR,
    "oarsub",
    "oarstat",
    "oardel",
    # oarstat -f -J -j <ids OAR no longer knows> prints nothing and exits 0 (recorded)
    ((DATA / "oar" / "oarstat_fJ_missing.txt").read_text(), "", 0),
    "[oardel] ERROR: cannot connect to the OAR database",
    "DBI connect('dbname=oar;host=localhost','oar',...) failed: could not connect to server: "
    "Connection refused",
)


@pytest.fixture(
    params=[
        pytest.param(SLURM_COMMANDS, marks=pytest.mark.env("slurm"), id="slurm"),
        pytest.param(SGE_COMMANDS, marks=pytest.mark.env("sge"), id="sge"),
        pytest.param(PBS_COMMANDS, marks=pytest.mark.env("pbs"), id="pbs"),
        pytest.param(OAR_COMMANDS, marks=pytest.mark.env("oar"), id="oar"),
    ]
)
def system(request, tmp_path, monkeypatch):
    commands: Commands = request.param
    monkeypatch.chdir(tmp_path)  # job output files of the real systems land here
    name = commands.backend.name
    with dask.config.set(
        {
            **quick_polling(name, "500ms", vanish_grace="4s"),
            f"jobqueue.{name}.status-timeout": "3s",
            f"jobqueue.{name}.submit-timeout": "6s",
            # these tests count one submit command per job (arrays: tests/test_arrays.py)
            f"jobqueue.{name}.job-arrays": "never",
        }
    ):
        yield commands


def make_cluster(system: Commands, **kwargs):
    options = {**system.backend.kwargs, "scheduler_options": NO_DASHBOARD, **kwargs}
    return system.backend.cluster_cls(**options)


def real_queue_ids(system: Commands) -> set[str]:
    """Ids the real batch system lists, asked with the real status command (not the fake)."""
    real = REAL_STATUS_COMMANDS[system.status]
    if system.status == "squeue":
        return set(run([real, "-h", "-r", "-o", "%i"]).split())
    if system is OAR_COMMANDS:
        out = run([real, "-J", "-u", pwd.getpwuid(os.getuid()).pw_name])
        return set(json.loads(out)) if out.strip() else set()
    if system is PBS_COMMANDS:
        # -t: subjobs of arrays too (not the array itself), not those that finished (X, F)
        ids = set()
        for line in run([real, "-t"]).splitlines():
            fields = line.split()
            if len(fields) >= 6 and re.match(r"^\d+(\[\d*\])?\.", fields[0]):
                if "[]" not in fields[0] and fields[-2] not in ("X", "F"):
                    ids.add(fields[0])
        return ids
    return set(parse_qstat_xml(run([real, "-xml"]) or "<job_info/>"))


def in_queue(system: Commands, ids: set[str]) -> set[str]:
    return ids & real_queue_ids(system)


def assert_gone(system: Commands, ids: set[str], timeout: float = 60) -> None:
    assert wait_until(lambda: not in_queue(system, ids), timeout), (
        f"left in the queue: {in_queue(system, ids)}"
    )


def test_forgotten_connected_jobs_are_not_replaced(system, fake_commands):  # noqa: F811
    """A controller that forgets every job (restart) while the workers compute: nothing
    is declared dead, nothing is resubmitted."""
    fake_commands.wrap(system.submit)
    with make_cluster(system) as cluster, Client(cluster) as client:
        cluster.scale(2)
        client.wait_for_workers(2, timeout=90)
        ids = {r.job_id for r in cluster.jobs}
        stdout, stderr, rc = system.forgot_jobs
        fake_commands.unknown_job(system.status, 40, stderr=stderr, rc=rc, stdout=stdout)
        # far beyond the 4 s vanish grace
        assert wait_until(lambda: fake_commands.calls(system.status) >= 20, 60)
        assert fake_commands.calls(system.submit) == 2
        assert {r.job_id for r in cluster.jobs} == ids
        assert all(r.state == JobState.CONNECTED for r in cluster.jobs), repr(cluster.jobs)
        assert client.submit(lambda: 41 + 1).result(timeout=30) == 42
        assert in_queue(system, ids) == ids
    assert_gone(system, ids)


def test_forgotten_queued_jobs_are_cancelled_before_replacement(system, fake_commands):  # noqa: F811
    """Held jobs the controller forgets: once declared ended they are cancelled for real
    before replacements go in, and the breaker bounds the resubmissions.

    Where the status command says so only by listing nothing with exit code 0 (Grid
    Engine's ``qstat -xml``, OAR's ``oarstat``), that is indistinguishable from a listing
    outage: the jobs are kept as unknown, neither ended nor cancelled nor replaced."""
    fake_commands.wrap(system.submit)
    fake_commands.wrap(system.cancel)
    with make_cluster(system, **system.backend.hold_kwargs) as cluster:
        cluster.scale(2)
        assert wait_until(
            lambda: len(cluster.jobs) == 2 and all(r.state == JobState.HELD for r in cluster.jobs),
            60,
        )
        originals = {r.job_id for r in cluster.jobs}
        stdout, stderr, rc = system.forgot_jobs
        fake_commands.unknown_job(system.status, 1000, stderr=stderr, rc=rc, stdout=stdout)
        if rc == 0:
            # far beyond the 4 s vanish grace
            assert wait_until(lambda: fake_commands.calls(system.status) >= 30, 60)
            assert fake_commands.calls(system.cancel) == 0
            assert fake_commands.calls(system.submit) == 2
            assert {r.job_id for r in cluster.jobs} == originals
            assert all(r.state == JobState.HELD for r in cluster.jobs), repr(cluster.jobs)
            assert in_queue(system, originals) == originals
            seen = originals
        else:
            # the originals are cancelled in the real queue, not merely forgotten
            assert_gone(system, originals, timeout=60)
            # the replacements are forgotten too; the breaker stops the resubmissions
            with pytest.raises(JobFailedError):
                cluster.wait_for_workers(2, timeout=120)
            submits = fake_commands.calls(system.submit)
            assert 2 < submits <= 2 + 3, submits
            seen = {r.job_id for r in cluster.jobs}
            time.sleep(3)  # a late resubmission would show up here
            assert fake_commands.calls(system.submit) == submits
    assert_gone(system, seen)


def test_banner_lines_around_the_submit_output(system, fake_commands):  # noqa: F811
    fake_commands.banner(system.submit, "Welcome to cluster42 (42 nodes, 2026-12-01 maintenance)")
    fake_commands.banner(system.status, "1 2 3 maintenance notice", where="after", stream="stderr")
    with make_cluster(system) as cluster, Client(cluster) as client:
        cluster.scale(2)
        client.wait_for_workers(2, timeout=90)
        ids = {job.job_id for job in cluster.workers.values()}
        assert len(ids) == 2 and ids <= real_queue_ids(system)
        assert fake_commands.calls(system.submit) == 2
    assert_gone(system, ids)


def test_submit_that_submits_then_hangs_is_tracked(system, fake_commands):  # noqa: F811
    """The submit command prints its job's id, then hangs: the 6 s time limit kills it, the
    job it created is tracked and used, not submitted again and not left behind."""
    fake_commands.run_then_hang(system.submit, grandchild=True)
    with make_cluster(system) as cluster, Client(cluster) as client:
        started = time.monotonic()
        cluster.scale(1)
        assert wait_until(lambda: len(cluster.workers) == 1, 30)
        assert time.monotonic() - started < 6 + 8  # the limit, plus the group kill's grace
        client.wait_for_workers(1, timeout=90)
        (job_id,) = {job.job_id for job in cluster.workers.values()}
        created = fake_commands.real_outputs(system.submit)
        assert len(created) == 1 and job_id in created[0]
        assert fake_commands.calls(system.submit) == 1
    assert_gone(system, {job_id})


@pytest.mark.parametrize("jobs", [1, 2], ids=["one job", "array of 2"])
def test_submit_accepted_then_transient_error_is_adopted(system, fake_commands, jobs):  # noqa: F811
    """The submit command creates the job(s), then exits 1 with a transient error (its reply
    lost): no error, no second submission, every job it created tracked and used, none left."""
    fake_commands.run_then_fail(system.submit, system.submit_transient, rc=1)
    before = real_queue_ids(system)
    with dask.config.set({f"jobqueue.{system.backend.name}.job-arrays": "auto"}):
        cluster = make_cluster(system)
    with cluster, Client(cluster) as client:
        cluster.scale(jobs)
        client.wait_for_workers(jobs, timeout=120)
        # a fast system (SGE) starts the job, and its workers connect, while the engine is
        # still looking for the tag: the submission is recorded once that look is done
        assert wait_until(lambda: len(cluster.workers) == jobs, 30), repr(cluster.jobs)
        assert fake_commands.calls(system.submit) == 1
        tracked = {job.job_id for job in cluster.workers.values()}
        assert len(tracked) == jobs
        assert real_queue_ids(system) - before == tracked  # nothing untracked
        assert client.submit(lambda: 41 + 1).result(timeout=30) == 42
    assert_gone(system, tracked)


def test_close_does_not_wait_for_a_hung_submission(system, fake_commands):  # noqa: F811
    fake_commands.run_then_hang(system.submit, grandchild=True)
    with dask.config.set({f"jobqueue.{system.backend.name}.submit-timeout": "25s"}):
        cluster = make_cluster(system)
    cluster.scale(1)
    assert wait_until(lambda: fake_commands.real_outputs(system.submit), 20)
    started = time.monotonic()
    cluster.close()
    assert time.monotonic() - started < 12
    # the job the hung command created is cancelled once its id is known (the command is
    # killed at its 25 s limit; its output names the job)
    created = fake_commands.real_outputs(system.submit)[0]
    job_id = re.search(r"\b(\d+(?:\.[\w-]+)*)", created).group(1)
    assert_gone(system, {job_id}, timeout=120)


def test_hanging_status_command_is_bounded(system, fake_commands, caplog):  # noqa: F811
    with make_cluster(system) as cluster, Client(cluster) as client:
        cluster.scale(1)
        client.wait_for_workers(1, timeout=90)
        ids = {r.job_id for r in cluster.jobs}
        fake_commands.hang(system.status, grandchild=True)
        with caplog.at_level(logging.WARNING, logger="dask_jobqueue"):
            # each poll ends at the 3 s limit: three hung polls well within 30 s
            assert wait_until(lambda: fake_commands.calls(system.status) >= 3, 30)
        assert {r.job_id for r in cluster.jobs} == ids
        assert all(r.state == JobState.CONNECTED for r in cluster.jobs)
        assert any("status query failed" in r.getMessage() for r in caplog.records)
        started = time.monotonic()
    assert time.monotonic() - started < 20
    assert_gone(system, ids)


def test_cancel_failing_once_at_close_is_retried(system, fake_commands):  # noqa: F811
    with make_cluster(system, **system.backend.hold_kwargs) as cluster:
        cluster.scale(2)
        assert wait_until(lambda: len(cluster.jobs) == 2, 60)
        ids = {r.job_id for r in cluster.jobs}
        fake_commands.fail_times(system.cancel, 1, stderr=system.cancel_error, rc=1)
    assert_gone(system, ids)
    # one failed call, then the retry; PBS cancels one id per qdel (a second command)
    per_command = system.backend.cluster_cls.job_cls.cancel_max_ids
    assert fake_commands.calls(system.cancel) == 1 + -(-len(ids) // per_command)


def _held_cluster_with_two_jobs(system: Commands):
    cluster = make_cluster(system, **system.backend.hold_kwargs)
    cluster.scale(2)
    assert wait_until(lambda: len(cluster.jobs) == 2, 60)
    return cluster, {r.job_id for r in cluster.jobs}


def test_cancel_refused_for_one_id_leaves_only_that_one(system, fake_commands, caplog):  # noqa: F811
    """One cancel command for both jobs fails because of one of them (the fake refuses any
    call naming it, without running the real command): the other is cancelled all the
    same, only the refused one is reported and left for the exit finalizer."""
    cluster, ids = _held_cluster_with_two_jobs(system)
    refused, other = sorted(ids)
    fake_commands.fail_matching(
        system.cancel, f"^{re.escape(refused)}$", stderr=system.cancel_error, rc=1
    )
    with caplog.at_level(logging.WARNING, logger="dask_jobqueue"):
        cluster.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    not_cancelled = " ".join(w for w in warnings if "Could not cancel" in w)
    assert refused in not_cancelled.split() and other not in not_cancelled.split(), warnings
    assert_gone(system, {other})
    assert in_queue(system, ids) == {refused}
    fake_commands.wrap(system.cancel)
    del cluster
    gc.collect()  # the exit finalizer runs when the cluster goes away (or at exit)
    assert_gone(system, {refused})


def test_cancel_failing_at_close_warns_and_exit_cleans_up(system, fake_commands, caplog):  # noqa: F811
    cluster, ids = _held_cluster_with_two_jobs(system)
    fake_commands.fail_always(system.cancel, stderr=system.cancel_error, rc=1)
    with caplog.at_level(logging.WARNING, logger="dask_jobqueue"):
        cluster.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    not_cancelled = " ".join(w for w in warnings if "Could not cancel" in w)
    assert all(i in not_cancelled for i in ids), warnings
    assert in_queue(system, ids) == ids  # really still there: the warning was not a lie
    fake_commands.wrap(system.cancel)  # the controller answers again
    del cluster
    gc.collect()  # the exit finalizer runs when the cluster goes away (or at exit)
    assert_gone(system, ids)
