"""Job tags: the tag itself, the dialects' listing parsers (on real recordings where we have
them), and tags carried and listed by the emulated batch systems."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from dask_jobqueue.engine import BatchSystem
from dask_jobqueue.htcondor import HTCondorJob
from dask_jobqueue.lsf import LSFJob
from dask_jobqueue.moab import MoabJob
from dask_jobqueue.oar import OARJob
from dask_jobqueue.pbs import PBSJob
from dask_jobqueue.sge import SGEJob
from dask_jobqueue.slurm import SLURMJob
from dask_jobqueue.tags import (
    PARSERS,
    JobTag,
    TagSpec,
    new_cluster_id,
    parse_htcondor_tags,
    parse_lsf_tags,
    parse_oar_tags,
    parse_pbs_tags,
    parse_sge_tags,
    parse_slurm_tags,
    safe_host,
)

DATA = Path(__file__).parent / "data"
TAG = JobTag("0a1b2c3d", 7, 4242, "login01.example.org")


# ---------------------------------------------------------------------- the tag


def test_tag_text_round_trips():
    assert TAG.text() == "djq1.0a1b2c3d.7.4242.login01.example.org"
    assert JobTag.parse(TAG.text()) == TAG
    # found inside a longer field (e.g. a job name or a context list)
    assert JobTag.parse(f"dask-worker-{TAG.text()},OTHER=1") == JobTag(
        "0a1b2c3d", 7, 4242, "login01.example.org"
    )


@pytest.mark.parametrize("text", ["", None, "dask-worker", "djq1.0a1b2c3d.x.1.h", "djq1.XYZ.1.2.h"])
def test_text_without_a_tag_is_none(text):
    assert JobTag.parse(text) is None


def test_tag_refuses_what_no_field_can_carry():
    with pytest.raises(ValueError, match="cluster_id"):
        JobTag("not-hex!", 1, 1, "h")
    with pytest.raises(ValueError, match="host"):
        JobTag("0a1b2c3d", 1, 1, "my host,1")
    with pytest.raises(ValueError, match="pid"):
        JobTag("0a1b2c3d", 1, 0, "h")


def test_host_names_are_made_safe_and_ids_are_fresh():
    assert safe_host("node 1,a'b") == "node-1-a-b"
    assert safe_host("") == "unknown"
    ids = {new_cluster_id() for _ in range(50)}
    assert len(ids) == 50 and all(len(i) == 8 and int(i, 16) >= 0 for i in ids)


def test_every_dialect_declares_a_parser_the_watchdog_can_find():
    for cls in (SLURMJob, SGEJob, PBSJob, MoabJob, LSFJob, HTCondorJob):
        spec = cls.tagging
        assert isinstance(spec, TagSpec), cls
        assert PARSERS[spec.parser_name] is spec.parse
        args = spec.submit_args(TAG.text())
        assert any(TAG.text() in a for a in args), (cls, args)
        assert spec.list_argvs("me"), cls


def test_tag_arguments_come_right_after_the_submit_command():
    job = SLURMJob("tcp://a:1", cores=1, memory="1GB", submit_command_extra=["--x"])
    engine = BatchSystem(job)
    tag = engine.new_tag()
    assert tag.cluster_id == engine.cluster_id and tag.pid == os.getpid()
    assert engine.new_tag().serial == tag.serial + 1
    argv = engine.tagged_submit_argv(job, "/tmp/job.sh", tag)
    assert argv == ["sbatch", f"--comment={tag.text()}", "--x", "/tmp/job.sh"]


# ---------------------------------------------------------------------- parsers


def test_slurm_listing_keeps_tagged_jobs_only():
    out = f"12|{TAG.text()}\n13|(null)\n14|my own comment\n15_3|{TAG.text()}\n"
    assert parse_slurm_tags(out) == {"12": TAG.text(), "15_3": TAG.text()}


def test_lsf_listing():
    out = f"101|{TAG.text()}\n102|-\n"
    assert parse_lsf_tags(out) == {"101": TAG.text()}


def test_htcondor_listing():
    out = f"12 0 2 {TAG.text()}\n13 0 2 undefined\n"
    assert parse_htcondor_tags(out) == {"12.0": TAG.text()}


def test_htcondor_listing_leaves_out_removed_and_completed_jobs():
    # condor_q keeps a removed job (X, JobStatus 3) until its shadow exits: already cancelled
    out = (
        f"12 0 1 {TAG.text()}\n12 1 2 {TAG.text()}\n12 2 5 {TAG.text()}\n"
        f"13 0 3 {TAG.text()}\n14 0 4 {TAG.text()}\n15 0 2 undefined\n"
    )
    assert parse_htcondor_tags(out) == {"12.0": TAG.text(), "12.1": TAG.text(), "12.2": TAG.text()}


@pytest.mark.parametrize(
    "parse, listing, job_id",
    [
        (parse_slurm_tags, "12|{tag}", "12"),
        (parse_lsf_tags, "12|0|{tag}", "12"),
        (parse_htcondor_tags, "12 0 2 {tag}", "12.0"),
        (
            parse_pbs_tags,
            "Job Id: 12.s\n    Job_Owner = me@h\n    job_state = R\n"
            "    Variable_List = DASK_JOBQUEUE_TAG={tag}\n",
            "12.s",
        ),
    ],
    ids=["slurm", "lsf", "htcondor", "pbs-text"],
)
def test_line_listings_read_through_banner_lines(parse, listing, job_id):
    # a site banner before and after, one of them made of digits and words like a job line
    out = f"Welcome to cluster42 (maintenance 2026-12-01)\n{listing.format(tag=TAG.text())}\n"
    out += "1 2 3 maintenance notice|x\n"
    assert parse(out) == {job_id: TAG.text()}


def test_pbs_text_listing_joins_wrapped_lines_and_filters_by_owner():
    text = TAG.text()
    out = (
        "Job Id: 5.server\n    Job_Owner = me@host\n"
        f"    Variable_List = PBS_O_HOME=/home/me,DASK_JOBQUEUE_TAG={text[:10]}\n"
        f"\t{text[10:]},PBS_O_HOST=host\n\n"
        "Job Id: 6.server\n    Job_Owner = other@host\n"
        f"    Variable_List = DASK_JOBQUEUE_TAG={text}\n"
    )
    assert parse_pbs_tags(out) == {"5.server": text, "6.server": text}
    assert parse_pbs_tags(out, "me") == {"5.server": text}


def test_pbs_listing_leaves_out_exiting_and_ended_jobs():
    # E: exiting (a qdel'd job until its MOM killed it); C (Torque keep_completed), F, X: ended
    text = TAG.text()
    states = {"1": "Q", "2": "R", "3": "H", "4": "E", "5": "C", "6": "F", "7": "X"}
    plain = "".join(
        f"Job Id: {n}.s\n    Job_Owner = me@host\n    job_state = {state}\n"
        f"    Variable_List = DASK_JOBQUEUE_TAG={text}\n\n"
        for n, state in states.items()
    )
    as_json = json.dumps({"Jobs": {
        f"{n}.s": {"Job_Owner": "me@host", "job_state": state,
                   "Variable_List": {"DASK_JOBQUEUE_TAG": text}}
        for n, state in states.items()
    }})
    for out in (plain, as_json):
        assert parse_pbs_tags(out, "me") == {"1.s": text, "2.s": text, "3.s": text}


def test_pbs_invalid_json_is_read_in_document_order():
    text = TAG.text()
    out = (
        '{"Jobs":{"5.s":{"Job_Name":"a","Job_Owner":"me@h","Variable_List":'
        f'{{"X":"bad \\q","DASK_JOBQUEUE_TAG":"{text}"}}}},'
        '"6.s":{"Job_Name":"b","Job_Owner":"you@h","Variable_List":'
        f'{{"DASK_JOBQUEUE_TAG":"{text}"}}}}}}}}'
    )
    assert parse_pbs_tags(out) == {"5.s": text, "6.s": text}
    assert parse_pbs_tags(out, "me") == {"5.s": text}


def test_sge_invalid_xml_is_a_value_error():
    with pytest.raises(ValueError, match="invalid XML"):
        parse_sge_tags("<detailed_job_info><djob_info>")


def _recorded(scheduler: str, name: str) -> str:
    path = DATA / scheduler / name
    if not path.exists():
        pytest.fail(f"missing recording {path}")
    return path.read_text()


def test_real_slurm_listing():
    out = _recorded("slurm", "squeue_tags.txt")
    tags = {i: JobTag.parse(t) for i, t in parse_slurm_tags(out).items()}
    assert tags == {"110": JobTag("0a1b2c3d", 0, 4242, "vm"), "111": JobTag("0a1b2c3d", 1, 4242, "vm")}


def test_real_sge_listing():
    out = _recorded("sge", "qstat_xml_j_tags.xml")
    expected = {"62": "djq1.0a1b2c3d.0.4242.vm", "63": "djq1.0a1b2c3d.1.4242.vm"}
    assert parse_sge_tags(out) == expected
    assert parse_sge_tags(out, "root") == expected
    assert parse_sge_tags(out, "nobody-at-all") == {}


def test_real_pbs_listing():
    expected = {"41.vm-pbs": "djq1.0a1b2c3d.0.4242.vm", "42.vm-pbs": "djq1.0a1b2c3d.1.4242.vm"}
    for name in ("qstat_f_json_tags", "qstat_f_tags"):  # JSON, and the wrapped text form
        out = _recorded("pbs", f"openpbs-23.06.06/{name}.stdout")
        assert parse_pbs_tags(out) == expected, name
        assert parse_pbs_tags(out, "root") == expected, name
        assert parse_pbs_tags(out, "nobody-at-all") == {}, name


# ---------------------------------------------------------------------- emulated systems

EMULATED = [
    pytest.param("pbs", PBSJob, {}, marks=pytest.mark.env("pbs"), id="pbs"),
    pytest.param("torque", PBSJob, {}, marks=pytest.mark.env("torque"), id="torque"),
    pytest.param("moab", MoabJob, {}, marks=pytest.mark.env("moab"), id="moab"),
    pytest.param("lsf", LSFJob, {}, marks=pytest.mark.env("lsf"), id="lsf"),
    pytest.param("htcondor", HTCondorJob, {"disk": "1GB"}, marks=pytest.mark.env("htcondor"),
                 id="htcondor"),
]


@pytest.fixture
def emulated(tmp_path, monkeypatch):
    from .emulator import emulated_scheduler, kill_all

    homes = []

    def start(flavour: str):
        if os.environ.get("DASK_JOBQUEUE_REAL_SCHEDULER"):
            return
        home = tmp_path / f"emulator-{flavour}"
        env = emulated_scheduler(flavour, home)
        homes.append(home)
        for key, value in env.items():
            monkeypatch.setenv(key, value)

    yield start
    for home in homes:
        kill_all(home)


@pytest.mark.parametrize("flavour, job_cls, extra", EMULATED)
def test_emulated_jobs_carry_their_tags_and_the_watchdog_cleans_up(
    flavour, job_cls, extra, emulated
):
    from dask_jobqueue.watchdog import clean_up, state_for

    emulated(flavour)
    kwargs = {"cores": 1, "memory": "1GB", "scheduler_check": False, **extra}
    # workers of a scheduler that never existed: they retry for the death timeout
    kwargs["death_timeout"] = 120
    engine = BatchSystem(job_cls("tcp://127.0.0.1:9", **kwargs))
    jobs = [job_cls("tcp://127.0.0.1:9", name=f"w{i}", **kwargs) for i in range(2)]
    for job in jobs:
        asyncio.run(engine.submit(job))
    tagged = asyncio.run(engine.list_tagged())
    assert {j.job_id: tagged.get(j.job_id) for j in jobs} == {j.job_id: j.tag for j in jobs}
    assert {t.cluster_id for t in tagged.values()} == {engine.cluster_id}
    assert len({t.serial for t in tagged.values()}) == 2

    # The watchdog's cleanup finds them through the listing alone (ids not in its state).
    state = state_for(engine)
    assert state is not None and state.job_ids == []
    assert clean_up(state, relist_delay=0.0) == []
    assert asyncio.run(engine.list_tagged()) == {}


def test_listing_falls_back_to_the_next_command_and_raises_when_none_answers(monkeypatch):
    import getpass

    from dask_jobqueue._shell import CommandError

    from .fakes import engine_with

    user = getpass.getuser()
    text = TAG.text()
    plain = (
        f"Job Id: 5.s\n    Job_Owner = {user}@host\n    job_state = R\n"
        f"    Variable_List = DASK_JOBQUEUE_TAG={text}\n\n"
    )
    # a qstat without -F json (Torque): the plain listing is asked next
    engine, runner = engine_with(
        PBSJob("tcp://127.0.0.1:9", cores=1, memory="1GB"),
        lambda argv: (2, "qstat: invalid option -- 'F'") if "json" in argv else plain,
        monkeypatch,
    )
    assert asyncio.run(engine.list_tagged()) == {"5.s": TAG}
    assert ["json" in argv for argv in runner.calls] == [True, False]

    # SGE has one listing: output it cannot read is a failed listing, named as such
    engine, runner = engine_with(
        SGEJob("tcp://127.0.0.1:9", cores=1, memory="1GB"),
        lambda argv: "Welcome to cluster42\n<?xml version='1.0'?><detailed_job_info>",
        monkeypatch,
    )
    with pytest.raises(CommandError, match="could not be read"):
        asyncio.run(engine.list_tagged())
    assert len(runner.calls) == 1


def test_list_tagged_without_tagging_is_empty():
    from dask_jobqueue.local import LocalJob

    assert asyncio.run(BatchSystem(LocalJob(cores=1, memory="1GB")).list_tagged()) == {}


def test_real_oar_listing():
    # OAR keeps no free field: the tag is the first line of the job's command
    out = _recorded("oar", "oarstat_J_u_tags.txt")
    assert parse_oar_tags(out) == {"64": "djq1.0123abcd.7.4242.vm"}
    # jobs without a tag (recorded listing of ordinary jobs) are left out
    assert parse_oar_tags(_recorded("oar", "oarstat_J_user.txt")) == {}


def test_oar_carries_the_tag_in_its_command():
    job = OARJob(
        "tcp://127.0.0.1:8786", name="w-0", cores=1, memory="1GB",
        memory_per_core_property_name="not_applicable",
    )
    job.tag = TAG
    command = job.submit_argv("/unused")[-1]
    assert command.splitlines()[0] == f"export DASK_JOBQUEUE_TAG={TAG.text()}"
    assert OARJob.tagging.submit_args(TAG.text()) == []
    assert OARJob.tagging.list_argvs("alice") == [["oarstat", "-J", "-u", "alice"]]
    # round trip through the parser, in the recorded JSON layout
    listed = json.dumps({"9": {"Job_Id": 9, "command": command}})
    assert parse_oar_tags(listed) == {"9": TAG.text()}
