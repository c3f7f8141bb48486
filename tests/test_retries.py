"""Submissions failing with a transient error are retried without duplicates.

Every submission carries a unique tag (Slurm: ``--comment``); before a retry the engine lists
this user's jobs and adopts those carrying the tag instead of submitting again. Unit tests
answer the commands from recordings; on the real Slurm, Grid Engine, OpenPBS and OAR a fake
submit command in front of the real one submits, then fails with a transient error
(``tests/test_real_faults.py``, ``test_submit_accepted_then_transient_error_is_adopted``).
"""

from __future__ import annotations

import asyncio
import logging

from dask_jobqueue._shell import CommandError

from .fakecmd import fake_commands  # noqa: F401  (fixture)
from .fakes import engine_with
from .test_arrays import slurm_jobs

SOCKET_TIMEOUT = (
    "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation"
)


class Site:
    """A Slurm whose ``sbatch`` fails ``failures`` times (having accepted the job or not)."""

    def __init__(self, failures: int, accepted: bool, stderr: str = SOCKET_TIMEOUT):
        self.failures = failures
        self.accepted = accepted
        self.stderr = stderr
        self.queue: list[tuple[str, str]] = []  # (id, comment)
        self.next_id = 100

    def answer(self, argv):
        if argv[0] == "scontrol":
            return "MaxArraySize            = 1001\n"
        if argv[0] == "squeue":  # squeue -h -u USER -o '%i|%k': pending tasks collapse
            arrays: dict[str, list[str]] = {}
            lines = []
            for job_id, comment in self.queue:
                if "_" in job_id:
                    base, index = job_id.split("_")
                    arrays.setdefault((base, comment), []).append(index)
                else:
                    lines.append(f"{job_id}|{comment}\n")
            for (base, comment), indices in arrays.items():
                lines.append(f"{base}_[{indices[0]}-{indices[-1]}]|{comment}\n")
            lines.append("999|djq1.0badc0de.1.1.otherhost\n")  # another cluster's job
            return "".join(lines)
        assert argv[0] == "sbatch"
        comment = next(a.split("=", 1)[1] for a in argv if a.startswith("--comment="))
        array = next((a.split("=", 1)[1] for a in argv if a.startswith("--array=")), None)
        if not self.failures or self.accepted:
            job = str(self.next_id)
            self.next_id += 1
            if array:
                first, last = map(int, array.split("-"))
                self.queue += [(f"{job}_{k}", comment) for k in range(first, last + 1)]
            else:
                self.queue.append((job, comment))
        if self.failures:
            self.failures -= 1
            return (1, self.stderr)
        return f"Submitted batch job {self.next_id - 1}\n"


def make_engine(site, **kwargs):
    return engine_with(slurm_jobs(1)[0], site.answer, submit_retry_delay=0.0, **kwargs)


def submit(engine, jobs):
    return asyncio.run(engine.submit_many(jobs))


def test_accepted_despite_a_socket_timeout_is_adopted(caplog):
    site = Site(failures=1, accepted=True)
    engine, runner = make_engine(site)
    with caplog.at_level(logging.WARNING, logger="dask_jobqueue.engine"):
        assert submit(engine, slurm_jobs(1)) == ["100"]
    assert [c[0] for c in runner.calls] == ["sbatch", "squeue"]
    assert [i for i, _ in site.queue] == ["100"]  # no duplicate
    assert engine.live_ids == {"100"}
    assert "adopting job(s) 100" in caplog.text
    # the tag names this cluster and this submission
    (sbatch,) = [c for c in runner.calls if c[0] == "sbatch"]
    assert any(a.startswith(f"--comment=djq1.{engine.cluster_id}.") for a in sbatch)


def test_accepted_array_is_adopted_task_by_task():
    site = Site(failures=1, accepted=True)
    engine, runner = make_engine(site)
    assert submit(engine, slurm_jobs(3)) == ["100_0", "100_1", "100_2"]
    assert [c[0] for c in runner.calls].count("sbatch") == 1
    assert len(site.queue) == 3


def test_rejected_submission_is_retried():
    site = Site(failures=2, accepted=False)
    engine, runner = make_engine(site)
    assert submit(engine, slurm_jobs(1)) == ["100"]
    assert [c[0] for c in runner.calls] == ["sbatch", "squeue", "sbatch", "squeue", "sbatch"]
    assert len(site.queue) == 1
    # each attempt of a submission carries the same tag
    comments = {a for c in runner.calls if c[0] == "sbatch" for a in c if a.startswith("--comment")}
    assert len(comments) == 1


def test_attempts_are_bounded():
    site = Site(failures=10, accepted=False)
    engine, runner = make_engine(site, submit_attempts=3)
    (result,) = submit(engine, slurm_jobs(1))
    assert isinstance(result, CommandError) and "Socket timed out" in str(result)
    assert [c[0] for c in runner.calls].count("sbatch") == 3
    assert not site.queue and not engine.live_ids


def test_permanent_error_is_not_retried():
    site = Site(
        failures=1,
        accepted=False,
        stderr="sbatch: error: Batch job submission failed: Invalid partition name specified",
    )
    engine, runner = make_engine(site)
    (result,) = submit(engine, slurm_jobs(1))
    assert isinstance(result, CommandError) and "Invalid partition" in str(result)
    assert [c[0] for c in runner.calls] == ["sbatch"]


def test_listing_failure_stops_retrying():
    site = Site(failures=1, accepted=True)

    def answer(argv):
        if argv[0] == "squeue":
            return (1, "squeue: error: Socket timed out on send/recv operation")
        return site.answer(argv)

    engine, runner = engine_with(slurm_jobs(1)[0], answer, submit_retry_delay=0.0)
    (result,) = submit(engine, slurm_jobs(1))
    assert isinstance(result, CommandError)
    assert "not retrying to avoid duplicates" in str(result)
    assert [c[0] for c in runner.calls] == ["sbatch", "squeue"]


def test_submit_timeout_is_transient():
    calls = []

    def answer(argv):
        calls.append(argv[0])
        if argv[0] == "sbatch" and calls.count("sbatch") == 1:
            raise CommandError(argv, None, reason="timed out after 120s")
        if argv[0] == "squeue":
            return ""
        return "Submitted batch job 7\n"

    engine, runner = engine_with(slurm_jobs(1)[0], answer, submit_retry_delay=0.0)
    assert submit(engine, slurm_jobs(1)) == ["7"]
    assert calls == ["sbatch", "squeue", "sbatch"]
