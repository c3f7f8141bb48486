"""A status listing that goes blank, and submit output that names no id or two, on the REAL
Slurm (``-E slurm``), with a fake command in front of the real one (``tests/fakecmd.py``).

* ``squeue`` printing nothing, or garbage, with exit code 0 for 60 s while 6 held jobs wait:
  nothing is declared ended or cancelled, nothing is resubmitted, no error, one warning; once
  ``squeue`` answers again the jobs are listed as before.
* ``sbatch`` really submitting but printing nothing, or a second id, with exit code 0: the
  job it made is found by its tag and tracked, and after ``close()`` no job of this test
  process is left in the queue (asked with the real ``squeue``, by tag).
"""

from __future__ import annotations

import getpass
import logging
import os
import time

import dask
import pytest

from dask_jobqueue import JobState
from dask_jobqueue.tags import JobTag

from .fakecmd import fake_commands  # noqa: F401  (fixture)
from .scheduler_suite import quick_polling, run, wait_until
from .test_real_faults import REAL_STATUS_COMMANDS, SLURM_COMMANDS, make_cluster

pytestmark = pytest.mark.env("slurm")

OUTAGE_SECONDS = 60
JOBS = 6


@pytest.fixture
def slurm(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # job output files land here
    with dask.config.set(
        {
            **quick_polling("slurm", "500ms", vanish_grace="4s"),
            "jobqueue.slurm.status-timeout": "5s",
            "jobqueue.slurm.submit-timeout": "10s",
            "jobqueue.slurm.job-arrays": "never",
        }
    ):
        yield SLURM_COMMANDS


def ours_in_queue() -> set[str]:
    """Ids of the real queue's jobs whose tag names this test process (real ``squeue``)."""
    out = run([REAL_STATUS_COMMANDS["squeue"], "-h", "-u", getpass.getuser(), "-o", "%i|%k"])
    ids = set()
    for line in out.splitlines():
        job_id, _, comment = line.partition("|")
        tag = JobTag.parse(comment)
        if tag is not None and tag.pid == os.getpid():
            ids.add(job_id.strip())
    return ids


def _library_records(caplog, level):
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("dask_jobqueue") and r.levelno >= level
    ]


@pytest.mark.parametrize(
    "listing",
    ["", "<html><body>503 Service Unavailable</body></html>\n||| #@! 42|x|y\n"],
    ids=["nothing", "garbage"],
)
def test_a_blank_listing_for_60s_ends_and_cancels_nothing(slurm, fake_commands, caplog, listing):  # noqa: F811
    fake_commands.wrap("sbatch")
    fake_commands.wrap("scancel")
    with make_cluster(slurm, **slurm.backend.hold_kwargs) as cluster:
        # (after the cluster is made: making it sets up logging anew)
        caplog.set_level(logging.INFO, logger="dask_jobqueue")
        cluster.scale(jobs=JOBS)
        assert wait_until(
            lambda: (
                len(cluster.jobs) == JOBS and all(r.state == JobState.HELD for r in cluster.jobs)
            ),
            60,
        ), repr(cluster.jobs)
        ids = {r.job_id for r in cluster.jobs}
        assert ours_in_queue() == ids
        caplog.clear()
        squeue_before = fake_commands.calls("squeue")
        fake_commands.fail_always("squeue", stderr="", rc=0, stdout=listing)
        started = time.monotonic()
        while time.monotonic() - started < OUTAGE_SECONDS:
            jobs = cluster.jobs  # live and recently ended: none may have ended
            assert {r.job_id for r in jobs} == ids, repr(jobs)
            assert all(r.state == JobState.HELD for r in jobs), repr(jobs)
            assert fake_commands.calls("scancel") == 0
            time.sleep(1)
        polls = fake_commands.calls("squeue") - squeue_before
        assert polls >= 20, polls  # it kept asking all along (far beyond the 4 s grace)
        # nothing cancelled, nothing resubmitted, the jobs still there for real
        assert fake_commands.calls("scancel") == 0
        assert fake_commands.calls("sbatch") == JOBS
        assert ours_in_queue() == ids
        assert {r.job_id for r in cluster.jobs} == ids
        assert all(r.state == JobState.HELD and "status unknown" in r.reason for r in cluster.jobs)
        warnings = _library_records(caplog, logging.WARNING)
        assert len(warnings) == 1, warnings
        assert f"lists none of this cluster's {JOBS} job(s)" in warnings[0]
        # squeue answers again: the jobs are listed as before, the outage is over
        fake_commands.wrap("squeue")
        assert wait_until(
            lambda: all(
                r.state == JobState.HELD and r.reason == slurm.backend.hold_reason
                for r in cluster.jobs
            ),
            30,
        ), repr(cluster.jobs)
        assert wait_until(
            lambda: any("work again" in m for m in _library_records(caplog, logging.INFO)), 30
        )
        squeue_after = fake_commands.calls("squeue")
        assert wait_until(lambda: fake_commands.calls("squeue") >= squeue_after + 5, 30)
        # a late ending or resubmission would show up in these counters
        assert fake_commands.calls("scancel") == 0
        assert fake_commands.calls("sbatch") == JOBS
        assert len(_library_records(caplog, logging.WARNING)) == 1
        assert cluster.jobs and {r.job_id for r in cluster.jobs} == ids
    assert wait_until(lambda: not ours_in_queue(), 60), ours_in_queue()


@pytest.mark.parametrize("output", ["nothing", "two ids"])
def test_unreadable_submit_output_leaves_no_job_behind(slurm, fake_commands, caplog, output):  # noqa: F811
    if output == "nothing":
        fake_commands.run_then_fail("sbatch", stderr="", rc=0)  # really submits, prints nothing
    else:
        fake_commands.banner("sbatch", "Submitted batch job 999999", where="after")
    assert not ours_in_queue()
    with make_cluster(slurm, **slurm.backend.hold_kwargs) as cluster:
        caplog.set_level(logging.WARNING, logger="dask_jobqueue")
        cluster.scale(jobs=2)
        assert wait_until(
            lambda: len(cluster.jobs) == 2 and all(r.state == JobState.HELD for r in cluster.jobs),
            60,
        ), repr(cluster.jobs)
        tracked = {r.job_id for r in cluster.jobs}
        # every job this process made is tracked, and nothing else
        assert ours_in_queue() == tracked
        assert fake_commands.calls("sbatch") == 2
        if output == "nothing":
            created = fake_commands.real_outputs("sbatch")
            assert sorted(tracked) == sorted(o.split()[-1] for o in created)
        adopted = [m for m in _library_records(caplog, logging.WARNING) if "adopting" in m]
        assert len(adopted) == 2, adopted
    assert wait_until(lambda: not ours_in_queue(), 60), ours_in_queue()
