"""Cancels that fail for some ids only: each id is settled, not its whole command.

A cancel command naming several ids that keeps failing is tried again in halves, down to
single ids, so only the ids the batch system refuses stay behind (live, for the exit
finalizer); the number of commands stays bounded when the batch system refuses everything.
"""

from __future__ import annotations

import asyncio
import logging
import math

from dask_jobqueue._shell import CommandError
from dask_jobqueue.slurm import SLURMJob

from .fakes import cancel, engine_with

REFUSED = "scancel: error: Kill job error on job id {}: Access/permission denied"


def _job() -> SLURMJob:
    return SLURMJob(cores=1, memory="1GB")


def _refusing(*bad: str):
    """``scancel`` that fails (exit 1) whenever it is asked to cancel one of ``bad``."""

    def answer(argv):
        if argv[0] != "scancel":
            raise AssertionError(argv)
        refused = [i for i in argv[1:] if i in bad]
        if refused:
            return (1, "\n".join(REFUSED.format(i) for i in refused))
        return ""

    return answer


def _submitted(ids):
    return [f"Submitted batch job {i}\n" for i in ids]


def test_one_refused_id_leaves_only_itself(caplog):
    ids = ["11", "12", "13", "14"]
    engine, runner = engine_with(_job(), _refusing("13"), submitted=_submitted(ids))
    with caplog.at_level(logging.WARNING, logger="dask_jobqueue"):
        assert cancel(engine, ids) == ["13"]
    assert engine.live_ids == {"13"}  # the exit finalizer tries it again
    tries = [["scancel", *ids]] * engine.cancel_attempts
    halves = [["scancel", "11", "12"], ["scancel", "13", "14"]]
    assert runner.calls == [*tries, *halves, ["scancel", "13"], ["scancel", "14"]]
    assert engine.commands["cancel"] == len(runner.calls)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "Could not cancel job(s) 13 " in warnings[0], warnings


def test_an_id_gone_already_is_no_failure_in_a_piece():
    def answer(argv):
        lines = []
        if "22" in argv[1:]:
            lines.append("scancel: error: Kill job error on job id 22: Invalid job id specified")
        if "23" in argv[1:]:
            lines.append(REFUSED.format("23"))
        return (1, "\n".join(lines)) if lines else ""

    ids = ["21", "22", "23", "24"]
    engine, runner = engine_with(_job(), answer, submitted=_submitted(ids))
    assert cancel(engine, ids) == ["23"]
    assert engine.live_ids == {"23"}


def test_a_batch_system_refusing_everything_costs_a_bounded_number_of_commands(caplog):
    ids = [str(1000 + k) for k in range(1000)]
    engine, runner = engine_with(_job(), _refusing(*ids), submitted=_submitted(ids))
    with caplog.at_level(logging.WARNING, logger="dask_jobqueue"):
        left = cancel(engine, ids)
    assert sorted(left) == sorted(ids) and engine.live_ids == set(ids)
    bound = engine.cancel_attempts + 4 * math.ceil(math.log2(len(ids))) + 4
    assert engine.cancel_attempts < engine.commands["cancel"] <= bound
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert all(i in warned.split() for i in ids)


def test_exit_cancel_settles_ids_one_by_one_too():
    ids = ["31", "32", "33"]
    engine, runner = engine_with(_job(), _refusing("32"), submitted=_submitted(ids))
    engine.cancel_sync()
    assert engine.live_ids == {"32"}
    # one try of the whole command at exit, then the pieces
    assert runner.calls[0] == ["scancel", "31", "32", "33"]
    assert ["scancel", "32"] in runner.calls and ["scancel", "31"] in runner.calls


def test_several_commands_each_settled_on_its_own():
    ids = [str(10_000 + k) for k in range(1500)]  # two commands: 1000 ids, then 500
    bad = (ids[5], ids[1200])
    engine, runner = engine_with(_job(), _refusing(*bad), submitted=_submitted(ids))
    left = asyncio.run(engine.cancel(ids, attempts=1))
    assert sorted(left) == sorted(bad)
    assert engine.live_ids == set(bad)
    assert [len(c) - 1 for c in runner.calls[:1]] == [1000]
    assert engine.commands["cancel"] <= 2 * (1 + 4 * math.ceil(math.log2(1000)) + 4)


def test_a_cancel_that_times_out_is_not_split():
    """Each piece would wait as long again: a command that did not answer is retried, then
    its ids are left whole (for the exit finalizer)."""

    def answer(argv):
        raise CommandError(argv, None, reason="timed out after 30s")

    ids = ["41", "42", "43", "44"]
    engine, runner = engine_with(_job(), answer, submitted=_submitted(ids))
    assert cancel(engine, ids) == ids
    assert runner.calls == [["scancel", *ids]] * engine.cancel_attempts
    assert engine.live_ids == set(ids)


def test_splitting_stops_at_a_piece_that_times_out():
    def answer(argv):
        if len(argv) == 5:  # the whole chunk: refused
            return (1, REFUSED.format(argv[1]))
        raise CommandError(argv, None, reason="timed out after 30s")

    ids = ["51", "52", "53", "54"]
    engine, runner = engine_with(_job(), answer, submitted=_submitted(ids))
    assert sorted(cancel(engine, ids)) == ids
    assert runner.calls[engine.cancel_attempts :] == [["scancel", "51", "52"]]
    assert engine.live_ids == set(ids)
