"""A poll of tens of thousands of single jobs: status commands name at most
``STATUS_MAX_IDS`` ids each, so no argument outgrows what Linux lets a program receive
(128 KiB for one argument: ``squeue -j 1,2,...`` with 50,000 ids is ~340 KB)."""

from __future__ import annotations

import json
import re

import pytest

from dask_jobqueue._shell import CommandError
from dask_jobqueue.dialect import STATUS_MAX_IDS
from dask_jobqueue.oar import OARJob
from dask_jobqueue.slurm import SLURMJob
from dask_jobqueue.tracking import JobState

from .fakes import engine_with, query

ONE_ARGUMENT_MAX = 128 * 1024


def test_slurm_poll_of_many_single_jobs_is_split():
    ids = [str(100000 + k) for k in range(2 * STATUS_MAX_IDS + 1)]
    running = set(ids[::2])

    def answer(argv):
        assert argv[0] == "squeue"
        asked = argv[argv.index("-j") + 1].split(",")
        # the recorded four-column form (tests/data/slurm/squeue_mixed_states_exit_code_sep.txt)
        return "".join(f"{i}|{'RUNNING' if i in running else 'PENDING'}|None|0|\n" for i in asked)

    engine, runner = engine_with(SLURMJob("tcp://a:1", cores=1, memory="1GB"), answer)
    answered = query(engine, ids)

    assert [call[0] for call in runner.calls] == ["squeue"] * 3
    assert all(len(arg.encode()) < ONE_ARGUMENT_MAX for call in runner.calls for arg in call)
    asked = [call[call.index("-j") + 1].split(",") for call in runner.calls]
    assert sorted(i for chunk in asked for i in chunk) == sorted(ids)  # each id once
    assert set(answered) == set(ids)
    assert {i for i, status in answered.items() if status.state is JobState.RUNNING} == running


def test_a_failing_chunk_fails_the_poll_and_changes_nothing():
    """The second of three squeue commands fails: the poll fails as one (states unchanged),
    rather than reporting a third of the jobs."""
    ids = [str(100000 + k) for k in range(2 * STATUS_MAX_IDS + 1)]
    calls = 0

    def answer(argv):
        nonlocal calls
        calls += 1
        if calls == 2:
            return (1, "slurm_load_jobs error: Socket timed out on send/recv operation")
        return "".join(f"{i}|RUNNING|None|0|\n" for i in argv[argv.index("-j") + 1].split(","))

    engine, runner = engine_with(SLURMJob("tcp://a:1", cores=1, memory="1GB"), answer)
    with pytest.raises(CommandError, match="Socket timed out"):
        query(engine, ids)
    assert len(runner.calls) == 2  # the third chunk is not asked once the poll failed


def test_oar_poll_names_each_id_once_over_several_commands():
    ids = [str(5000 + k) for k in range(STATUS_MAX_IDS + 7)]

    def answer(argv):
        asked = [argv[k + 1] for k, arg in enumerate(argv) if arg == "-j"]
        return json.dumps({i: {"Job_Id": int(i), "state": "Running"} for i in asked})

    engine, runner = engine_with(
        OARJob("tcp://a:1", cores=1, memory="1GB", memory_per_core_property_name="not_applicable"),
        answer,
    )
    answered = query(engine, ids)

    assert len(runner.calls) == 2
    named = [re.fullmatch(r"\d+", a) and a for call in runner.calls for a in call[4::2]]
    assert sorted(named) == sorted(ids)
    assert {i for i, status in answered.items() if status.state is JobState.RUNNING} == set(ids)
