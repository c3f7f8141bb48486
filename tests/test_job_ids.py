"""Job ids are read from the submit command's own line, never from a banner around it."""

from __future__ import annotations

import asyncio
import getpass
import re

import pytest

from dask_jobqueue import CommandError
from dask_jobqueue.htcondor import HTCondorJob
from dask_jobqueue.lsf import LSFJob
from dask_jobqueue.moab import MoabJob
from dask_jobqueue.oar import OARJob
from dask_jobqueue.pbs import PBSJob
from dask_jobqueue.sge import SGEJob
from dask_jobqueue.slurm import SLURMJob
from dask_jobqueue.tags import TAG_PREFIX

from .fakes import engine_with

BANNER = "Welcome to cluster42 - maintenance on 2026-12-03 from 08:00, 3 nodes down\n"

# (job class, submit output as the tool prints it, expected id); outputs from tests/data where
# recorded, otherwise in the tool's documented format.
CASES = [
    (SLURMJob, "Submitted batch job 654321\n", "654321"),
    (SLURMJob, "654321;cluster\n", "654321"),
    (PBSJob, "12.pbs-server\n", "12.pbs-server"),
    (PBSJob, "12.pbs01.example.org\n", "12.pbs01.example.org"),
    (SGEJob, 'Your job 138 ("job") has been submitted\n', "138"),
    (SGEJob, 'Your job 4 ("dask-worker-12") has been submitted\n', "4"),
    (SGEJob, "140\n", "140"),
    (LSFJob, "Job <4242> is submitted to default queue <normal>.\n", "4242"),
    (OARJob, "[ADMISSION RULE] Set default walltime to 7200.\nOAR_JOB_ID=17\n", "17"),
    (HTCondorJob, "Submitting job(s).\n1 job(s) submitted to cluster 31.\n", "31.0"),
    (MoabJob, "\nMoab.12\n", "Moab.12"),
]


def _job(cls):
    extra = {"disk": "1GB"} if cls is HTCondorJob else {}
    extra.update({"memory_per_core_property_name": "not_applicable"} if cls is OARJob else {})
    return cls(cores=1, memory="1GB", processes=1, **extra)


@pytest.mark.parametrize("cls, output, expected", CASES)
def test_submit_output_parsed(cls, output, expected):
    assert _job(cls).job_id_from_submit_output(output) == expected


@pytest.mark.parametrize("cls, output, expected", CASES)
def test_banner_lines_with_numbers_are_ignored(cls, output, expected):
    job = _job(cls)
    assert job.job_id_from_submit_output(BANNER + output) == expected
    assert job.job_id_from_submit_output(output + BANNER) == expected


@pytest.mark.parametrize("cls", [SLURMJob, PBSJob, SGEJob, LSFJob, OARJob, HTCondorJob, MoabJob])
def test_output_without_the_id_line_is_refused(cls):
    with pytest.raises(ValueError, match="Could not parse the job id"):
        _job(cls).job_id_from_submit_output(BANNER)


def test_two_id_lines_are_refused_not_guessed():
    with pytest.raises(ValueError, match="several job ids"):
        _job(SLURMJob).job_id_from_submit_output("Submitted batch job 11\nSubmitted batch job 12\n")


# ---------------------------------------------------------------------------- unreadable output
# A submit command that exits 0 but prints no id, or several: the job(s) it made are found
# by the submission's tag and adopted, or cancelled; never left untracked.


def _user():
    return getpass.getuser()


# (job class, submit output naming two ids, the tag listing showing `ids` carrying `tag`, the
# cancel command) for the dialects whose listings are one line per job
UNREADABLE = {
    "slurm": (
        SLURMJob,
        "Submitted batch job 11\nSubmitted batch job 12\n",
        lambda ids, tag: "".join(f"{i}|{tag}\n" for i in ids),
        "scancel",
    ),
    "lsf": (
        LSFJob,
        "Job <11> is submitted to default queue <normal>.\n"
        "Job <12> is submitted to default queue <normal>.\n",
        lambda ids, tag: "".join(f"{i}|0|{tag}\n" for i in ids),
        "bkill",
    ),
    "htcondor": (
        HTCondorJob,
        "1 job(s) submitted to cluster 11.\n1 job(s) submitted to cluster 12.\n",
        lambda ids, tag: "".join(f"{i.split('.')[0]} 0 1 {tag}\n" for i in ids),
        "condor_rm",
    ),
    "pbs": (
        PBSJob,
        "11.s\n12.s\n",
        lambda ids, tag: "".join(
            f"Job Id: {i}\n    Job_Name = dask-worker-{tag}\n    Job_Owner = {_user()}@h\n"
            f"    job_state = Q\n"
            for i in ids
        ),
        "qdel",
    ),
}
CREATED = {"slurm": "12", "lsf": "12", "htcondor": "12.0", "pbs": "12.s"}
OTHER = {"slurm": "13", "lsf": "13", "htcondor": "13.0", "pbs": "13.s"}


def _unreadable_engine(dialect, output, listed):
    """An engine whose submit command prints ``output`` (exit 0) and whose tag listing shows
    ``listed()`` (ids, called at each listing) carrying the submission's tag."""
    cls, _, listing, _ = UNREADABLE[dialect]
    tags: list[str] = []
    job = _job(cls)

    def answer(argv):
        if argv[0] == job.submit_command.split()[0]:
            # the tag as the submit command carries it (comment, -Jd, -N name-tag, -a ...)
            carried = re.search(
                rf"{TAG_PREFIX}\.[0-9a-f]{{8}}\.\d+\.\d+\.[A-Za-z0-9.-]*[A-Za-z0-9]", " ".join(argv)
            )
            tags.append(carried.group() if carried is not None else "")
            return output
        if argv[:2] == ["qstat", "-f"] and "json" in argv:
            return (1, "qstat: illegal option -- F")  # the text listing answers instead
        if any(argv == list(a) for a in cls.tagging.list_argvs(_user())):
            return listing(listed(), tags[-1]) if tags else ""
        return ""

    engine, runner = engine_with(job, answer, submit_retry_delay=0)
    return engine, runner, job


def _cancels(runner, dialect):
    return [c[1:] for c in runner.calls if c[0] == UNREADABLE[dialect][3]]


@pytest.mark.parametrize("dialect", sorted(UNREADABLE))
@pytest.mark.parametrize("two_ids", [True, False], ids=["two ids", "nothing"])
def test_unreadable_submit_output_adopts_the_tagged_job(caplog, dialect, two_ids):
    output = UNREADABLE[dialect][1] if two_ids else ""
    engine, runner, job = _unreadable_engine(dialect, output, lambda: [CREATED[dialect]])
    assert asyncio.run(engine.submit(job)) == CREATED[dialect]
    assert engine.live_ids == {CREATED[dialect]}
    assert _cancels(runner, dialect) == []
    assert any("adopting job(s)" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("dialect", sorted(UNREADABLE))
def test_unreadable_submit_output_with_two_tagged_jobs_cancels_both(dialect):
    both = [CREATED[dialect], OTHER[dialect]]
    engine, runner, job = _unreadable_engine(dialect, "", lambda: both)
    with pytest.raises(CommandError, match="not what it submitted"):
        asyncio.run(engine.submit(job))
    assert sorted(sum(_cancels(runner, dialect), [])) == sorted(both)
    assert engine.live_ids == set()


@pytest.mark.parametrize("dialect", sorted(UNREADABLE))
def test_a_job_that_shows_up_late_is_cancelled_at_close(dialect):
    shown: list[str] = []
    engine, runner, job = _unreadable_engine(dialect, "", lambda: shown)
    with pytest.raises(CommandError, match="no job carries its tag"):
        asyncio.run(engine.submit(job))
    assert engine.live_ids == set() and _cancels(runner, dialect) == []
    shown.append(CREATED[dialect])  # the listing caught up
    engine.cancel_sync()  # the exit finalizer (close() runs the same look)
    assert sum(_cancels(runner, dialect), []) == [CREATED[dialect]]
    assert engine.live_ids == set()
    listings = len(runner.calls)
    engine.cancel_sync()  # settled: not looked for again
    assert len(runner.calls) == listings


def test_unreadable_output_without_tagging_is_an_error_naming_the_output(monkeypatch):
    engine, runner, job = _unreadable_engine("slurm", "", lambda: [])
    monkeypatch.setattr(SLURMJob, "tagging", None)
    with pytest.raises(CommandError, match="could not be read"):
        asyncio.run(engine.submit(job))
    assert [c[0] for c in runner.calls] == ["sbatch"]  # nothing to look it up by
