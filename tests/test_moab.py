"""Moab: msub ids, showq --xml parsing on recorded emulator outputs, the status-query strategy
and the -E moab end-to-end suite (emulated Moab on Torque)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dask_jobqueue import MoabCluster
from dask_jobqueue._shell import CommandError, CommandResult
from dask_jobqueue.moab import MoabJob, match_moab_ids, moab_job_status, parse_showq_xml
from dask_jobqueue.tracking import JobState

from .fakes import cancel, engine_with, query
from .scheduler_suite import Backend, SchedulerSuite, emulator, run  # noqa: F401

DATA = Path(__file__).parent / "data" / "moab"


def _job(**kwargs):
    return MoabJob("tcp://127.0.0.1:8786", name="w-0", cores=4, memory="16GB", **kwargs)


def test_script_uses_pbs_directives_and_moab_commands():
    job = _job(queue="batch", walltime="01:00:00")
    assert "#PBS -q batch" in job.job_header
    assert "#PBS -l select=1:ncpus=4:mem=15GB" in job.job_header
    assert job.submit_argv("/tmp/job.sh") == ["msub", "/tmp/job.sh"]
    # several ids in ONE canceljob call (the emulator and Moab's canceljob take a list)
    assert job.cancel_argv(["12", "13"]) == ["canceljob", "12", "13"]


@pytest.mark.parametrize(
    "output, expected",
    [("\n12\n", "12"), ("\nMoab.12\n", "Moab.12"), ("12.server\n", "12.server")],
)
def test_msub_job_ids(output, expected):
    assert _job().job_id_from_submit_output(output) == expected


def test_parse_showq_xml_recorded_active_sections():
    statuses = parse_showq_xml((DATA / "showq_xml.txt").read_text())
    assert set(statuses) == {"5", "6", "7", "8"}
    assert statuses["5"].state == JobState.RUNNING
    assert (statuses["8"].state, statuses["8"].reason) == (JobState.QUEUED, "Idle")
    assert (statuses["6"].state, statuses["6"].reason) == (JobState.HELD, "UserHold")


def test_parse_showq_xml_recorded_completed_section():
    statuses = parse_showq_xml((DATA / "showq_xml_completed.txt").read_text())
    assert (statuses["1"].state, statuses["1"].exit_code) == (JobState.FINISHED, 0)
    assert (statuses["2"].state, statuses["2"].exit_code) == (JobState.FAILED, 3)
    assert statuses["3"].state == JobState.TIMED_OUT  # CompletionCode -11 (Torque walltime)
    assert statuses["4"].state == JobState.CANCELLED  # Removed, 271
    assert statuses["9"].state == JobState.CANCELLED  # Removed before it ran: "None"
    assert statuses["9"].exit_code is None


def test_parse_showq_xml_blocked_idle_job_is_held():
    xml = (
        '<Data><queue count="1" option="blocked"><job JobID="Moab.7" State="Idle" '
        'BlockReason="IdlePolicy" /></queue></Data>'
    )
    status = parse_showq_xml(xml)["Moab.7"]
    assert (status.state, status.reason) == (JobState.HELD, "IdlePolicy")
    assert parse_showq_xml("") == {}


@pytest.mark.parametrize(
    "state, code, expected",
    [
        ("Idle", None, JobState.QUEUED),
        ("Deferred", None, JobState.HELD),
        ("SystemHold", None, JobState.HELD),
        ("Starting", None, JobState.RUNNING),
        ("Canceling", None, JobState.RUNNING),
        ("Completed", "0", JobState.FINISHED),
        ("Completed", "1", JobState.FAILED),
        ("Completed", "-11", JobState.TIMED_OUT),
        ("Completed", "271", JobState.CANCELLED),
        ("Removed", "-11", JobState.TIMED_OUT),
        ("Removed", "None", JobState.CANCELLED),
        ("Vacated", "0", JobState.FAILED),
    ],
)
def test_moab_job_status_table(state, code, expected):
    assert moab_job_status(state, code).state == expected


def test_match_moab_ids():
    statuses = parse_showq_xml((DATA / "showq_xml.txt").read_text())
    assert set(match_moab_ids(["Moab.5", "6.server", "8", "99"], statuses)) == {
        "Moab.5",
        "6.server",
        "8",
    }


def test_recorded_tool_messages():
    assert "invalid class specified 'nosuchq'" in (DATA / "msub_bad_queue.stderr.txt").read_text()
    assert "cannot locate job '999'" in (DATA / "checkjob_unknown.stderr.txt").read_text()


def _recorded(argv):
    name = "showq_xml_completed.txt" if "-c" in argv else "showq_xml.txt"
    return CommandResult(argv, (DATA / name).read_text(), "")


def test_query_one_call_while_all_jobs_are_live():
    engine, runner = engine_with(_job(), _recorded)
    result = query(engine, ["5", "6", "8"])
    assert runner.calls == [["showq", "--xml"]]
    assert engine.commands["status"] == 1
    assert set(result) == {"5", "6", "8"}
    assert result["6"].state == JobState.HELD


def test_query_completed_section_only_for_missing_ids():
    engine, runner = engine_with(_job(), _recorded)
    result = query(engine, ["5", "3", "404"])
    assert runner.calls == [["showq", "--xml"], ["showq", "-c", "--xml"]]
    assert engine.commands["status"] == 2
    assert result["3"].state == JobState.TIMED_OUT and "404" not in result
    assert result["5"].state == JobState.RUNNING


def test_query_completed_failure_keeps_live_states():
    def answer(argv):
        if "-c" in argv:
            raise CommandError(argv, 1, "", "ERROR:    lost connection to server 'server'")
        return _recorded(argv)

    engine, runner = engine_with(_job(), answer)
    result = query(engine, ["5", "3"])
    assert len(runner.calls) == 2
    assert set(result) == {"5"} and result["5"].state == JobState.RUNNING


def test_cancel_is_one_canceljob_and_unknown_ids_are_gone():
    unknown = (DATA / "canceljob_unknown.stderr.txt").read_text()  # canceljob 999

    def answer(argv):
        return (1, unknown) if "999" in argv else "job '5' cancelled\n"

    engine, runner = engine_with(_job(), answer, submitted=["5\n", "999\n"])
    assert engine.live_ids == {"5", "999"}
    assert cancel(engine, ["5", "999"]) == []
    assert runner.calls == [["canceljob", "5", "999"]]
    assert engine.live_ids == set()


# ---------------------------------------------------------------------------- end to end


def _showq_ids() -> set[str]:
    """Job ids in the emulated ``showq`` active / eligible / blocked tables."""
    return {
        line.split()[0]
        for line in run(["showq"]).splitlines()
        # JOBID USERNAME STATE PROCS ...; states are capitalised, which keeps out the
        # "1 active job   1 of 4 processors" summary lines
        if re.match(r"^\d+\s+\S+\s+[A-Z][A-Za-z]+\s+\d+\s", line)
    }


MOAB = Backend(
    name="moab",
    cluster_cls=MoabCluster,
    kwargs={"cores": 1, "memory": "1GB", "processes": 1, "walltime": "00:10:00"},
    queue_ids=_showq_ids,
    cancel_argv=lambda job_id: ["canceljob", job_id],
    bad_queue_kwargs={"queue": "nosuchq"},
    # the emulator names the class only when it was given with msub -q (see report)
    bad_queue_message="ERROR:  cannot submit job - invalid class specified 'nosuchq'",
    hold_kwargs={"job_extra_directives": ["-h"]},
    hold_reason="UserHold",
    short_walltime={"walltime": "00:00:08"},
    walltime_wait=45,
    timeout=60,
)


@pytest.mark.env("moab")
@pytest.mark.usefixtures("emulator")
class TestEmulatedMoab(SchedulerSuite):
    backend = MOAB
    emulator_flavour = "moab"
    emulator_options = {"kill_delay": 0.5}
