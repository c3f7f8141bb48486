"""Job tags: the tag itself, the dialects' listing parsers (on real recordings where we have
them), and tags carried and listed by the emulated batch systems."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from dask_jobqueue.dialects.htcondor import parse_htcondor_tags
from dask_jobqueue.dialects.lsf import parse_lsf_tags
from dask_jobqueue.dialects.oar import parse_oar_tags
from dask_jobqueue.dialects.pbs import name_with_tag, parse_pbs_tags, tag_in_name
from dask_jobqueue.dialects.sge import parse_sge_tags
from dask_jobqueue.dialects.slurm import parse_slurm_tags
from dask_jobqueue.engine import BatchSystem
from dask_jobqueue.htcondor import HTCondorJob
from dask_jobqueue.lsf import LSFJob
from dask_jobqueue.moab import MoabJob
from dask_jobqueue.oar import OARJob
from dask_jobqueue.pbs import PBSJob
from dask_jobqueue.sge import SGEJob
from dask_jobqueue.slurm import SLURMJob
from dask_jobqueue.tags import JobTag, TagSpec, new_cluster_id, safe_host, tag_parser

from .fakes import engine_with

DATA = Path(__file__).parent / "data"
TAG = JobTag("0a1b2c3d", 7, 4242, "login01.example.org")


# ---------------------------------------------------------------------- the tag


def test_tag_text_round_trips():
    assert TAG.text() == "djq1.0a1b2c3d.7.4242.login01.example.org"
    assert JobTag.parse(TAG.text()) == TAG
    assert JobTag.parse(f" {TAG.text()}\n") == TAG


@pytest.mark.parametrize(
    "text",
    [
        "",
        None,
        "dask-worker",
        "djq1.0a1b2c3d.x.1.h",
        "djq1.XYZ.1.2.h",
        # a field that merely mentions a tag is not a tag
        f"see {TAG.text()}",
        f"{TAG.text()} (old)",
        f"dask-worker-{TAG.text()}",
        f"{TAG.text()},OTHER=1",
        f"x{TAG.text()}",
        # the tag's form, but no tag of ours: never an error that would stop a listing
        "djq1.0a1b2c3d.1.0.h",
        "djq1.0a1b2c3d.1.2.h-",
    ],
)
def test_text_that_is_not_exactly_a_tag_is_none(text):
    assert JobTag.parse(text) is None


def test_pbs_job_names_carry_the_tag_in_one_exact_form():
    name = name_with_tag("dask-worker", TAG.text())
    assert name == f"dask-worker-{TAG.text()}"
    assert tag_in_name(name) == TAG.text()
    for other in (
        TAG.text(),
        f"see {name}",
        f"{name} x",
        f"{name},x",
        f"1a-{TAG.text()}",
        f"a b-{TAG.text()}",
        f"-{TAG.text()}",
        "dask-worker",
        None,
    ):
        assert tag_in_name(other) is None, other
    assert parse_pbs_tags(f"Job Id: 1.s\n    Job_Name = {name}-\n    job_state = R\n") == {}
    # the host ends the name: more text after it is another host, never this tag
    assert JobTag.parse(tag_in_name(f"{name}x")).host == "login01.example.orgx"
    # a Torque subjob N[3] may be named <name>-3 (its PBS_JOBNAME); only with its own index
    assert tag_in_name(f"{name}-3", "3") == TAG.text()
    assert tag_in_name(f"{name}-3", "4") == f"{TAG.text()}-3"  # host login01.example.org-3
    with pytest.raises(ValueError, match="job_name"):
        name_with_tag("a b", TAG.text())


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
    for cls in (SLURMJob, SGEJob, PBSJob, MoabJob, LSFJob, HTCondorJob, OARJob):
        spec = cls.tagging
        assert isinstance(spec, TagSpec), cls
        assert spec.parser_name.startswith("dask_jobqueue.dialects.")
        assert tag_parser(spec.parser_name) is spec.parse
        args = spec.submit_args(TAG.text())
        # PBS, Torque, Moab: in the job name; OAR: in the command (both set by submit_argv)
        assert any(TAG.text() in a for a in args) == (cls not in (PBSJob, MoabJob, OARJob))
        assert spec.list_argvs("me"), cls


@pytest.mark.parametrize("job_cls, command", [(PBSJob, "qsub"), (MoabJob, "msub")])
def test_pbs_family_names_the_job_after_its_tag_last(job_cls, command):
    job = job_cls("tcp://a:1", cores=1, memory="1GB", submit_command_extra=["-N", "mine"])
    assert job.submit_argv("/tmp/job.sh") == [command, "-N", "mine", "/tmp/job.sh"]
    job.tag = TAG
    # the last -N wins over submit_command_extra's and over the script's #PBS -N
    assert job.submit_argv("/tmp/job.sh") == [
        command,
        "-N",
        "mine",
        "-N",
        f"dask-worker-{TAG.text()}",
        "/tmp/job.sh",
    ]
    assert "#PBS -N dask-worker" in job.job_script()
    assert "-v" not in job.submit_argv("/tmp/job.sh")
    # the batch system names the output files after the job: the tagged name
    assert Path.cwd() / f"dask-worker-{TAG.text()}.e12" in job.output_files("12.server")


@pytest.mark.parametrize("job_name", ["a b", "1st", "w@host", "$USER", "x" * 300])
def test_pbs_family_refuses_job_names_that_cannot_carry_the_tag(job_name):
    for cls in (PBSJob, MoabJob):
        with pytest.raises(ValueError, match="job_name="):
            cls("tcp://a:1", cores=1, memory="1GB", job_name=job_name)


def test_pbs_job_name_room_depends_on_the_host():
    from dask_jobqueue.pbs import check_job_name_for_tag

    # 236 - 1 - (5 + 8 + 3 + 9 + 7) - len("vm") = 201
    check_job_name_for_tag("a" * 201, host="vm")
    with pytest.raises(ValueError, match="at most 201 characters"):
        check_job_name_for_tag("a" * 202, host="vm")


def test_tag_arguments_come_right_after_the_submit_command():
    job = SLURMJob("tcp://a:1", cores=1, memory="1GB", submit_command_extra=["--x"])
    engine, runner = engine_with(job, lambda argv: "Submitted batch job 12\n")
    assert asyncio.run(engine.submit(job)) == "12"
    tag = job.tag
    assert tag.cluster_id == engine.cluster_id and tag.pid == os.getpid()
    assert engine.new_tag().serial == tag.serial + 1
    (argv,) = [c for c in runner.calls if c[0] == "sbatch"]
    assert argv[:3] == ["sbatch", f"--comment={tag.text()}", "--x"]


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
            "Job Id: 12.s\n    Job_Name = w-{tag}\n    Job_Owner = me@h\n    job_state = R\n",
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
        f"Job Id: 5.server\n    Job_Name = dask-worker-{text[:10]}\n\t{text[10:]}\n"
        "    Job_Owner = me@host\n\n"
        f"Job Id: 6.server\n    Job_Name = dask-worker-{text}\n    Job_Owner = other@host\n"
    )
    assert parse_pbs_tags(out) == {"5.server": text, "6.server": text}
    assert parse_pbs_tags(out, "me") == {"5.server": text}


def test_pbs_listing_leaves_out_exiting_and_ended_jobs():
    # E: exiting (a qdel'd job until its MOM killed it); C (Torque keep_completed), F, X: ended
    text = TAG.text()
    states = {"1": "Q", "2": "R", "3": "H", "4": "E", "5": "C", "6": "F", "7": "X"}
    plain = "".join(
        f"Job Id: {n}.s\n    Job_Name = w-{text}\n    Job_Owner = me@host\n"
        f"    job_state = {state}\n\n"
        for n, state in states.items()
    )
    jobs = {
        f"{n}.s": {"Job_Name": f"w-{text}", "Job_Owner": "me@host", "job_state": state}
        for n, state in states.items()
    }
    as_json = json.dumps({"Jobs": jobs})
    # invalid JSON (a backslash in Submit_arguments): read in document order, same result
    broken = as_json.replace('"job_state"', '"Submit_arguments": "-v X=a\\c", "job_state"')
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken)
    for out in (plain, as_json, broken):
        assert parse_pbs_tags(out, "me") == {"1.s": text, "2.s": text, "3.s": text}


def test_pbs_invalid_json_is_read_in_document_order():
    text = TAG.text()
    out = (
        f'{{"Jobs":{{"5.s":{{"Job_Name":"a-{text}","Job_Owner":"me@h","Variable_List":'
        '{"X":"bad \\q"}},'
        f'"6.s":{{"Job_Name":"b-{text}","Job_Owner":"you@h"}},'
        f'"7.s":{{"Job_Name":"see {text}","Job_Owner":"me@h"}},'
        f'"8.s":{{"Job_Name":123,"Job_Owner":"me@h","Variable_List":'
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
    assert tags == {
        "110": JobTag("0a1b2c3d", 0, 4242, "vm"),
        "111": JobTag("0a1b2c3d", 1, 4242, "vm"),
    }


def test_real_sge_listing():
    out = _recorded("sge", "qstat_xml_j_tags.xml")
    expected = {"62": "djq1.0a1b2c3d.0.4242.vm", "63": "djq1.0a1b2c3d.1.4242.vm"}
    assert parse_sge_tags(out) == expected
    assert parse_sge_tags(out, "root") == expected
    assert parse_sge_tags(out, "nobody-at-all") == {}


def test_real_pbs_tag_in_the_environment_is_not_ours():
    # jobs 41, 42 carry a tag in their environment (qsub -v, what a child submitted with
    # qsub -V from a worker of an older version inherited): not a carrier any more
    for name in ("qstat_f_json_tags", "qstat_f_tags"):  # JSON, and the wrapped text form
        out = _recorded("pbs", f"openpbs-23.06.06/{name}.stdout")
        assert "DASK_JOBQUEUE_TAG=djq1.0a1b2c3d.0.4242.vm" in out.replace("\n\t", "")
        assert parse_pbs_tags(out) == {}, name


def test_real_slurm_comment_that_mentions_a_tag_is_not_ours():
    out = _recorded("slurm", "squeue_tags_mentions.txt")
    assert "8|see djq1.0a1b2c3d.1.4242.vm" in out.splitlines()
    assert parse_slurm_tags(out) == {"7": "djq1.0a1b2c3d.0.4242.vm"}


def test_real_sge_context_mention_and_environment_are_not_ours():
    # 19: a context value mentioning a tag; 20: a tag in another context variable; 21: a tag
    # in the environment (-v); 23: submitted with qsub -V from a tagged job (environment only)
    out = _recorded("sge", "qstat_xml_j_tags_mentions.xml")
    assert parse_sge_tags(out) == {"18": "djq1.0a1b2c3d.0.4242.vm"}
    assert parse_sge_tags(out, "root") == {"18": "djq1.0a1b2c3d.0.4242.vm"}


def test_lsf_and_htcondor_mentions_are_not_ours():
    text = TAG.text()
    # bjobs -o 'jobid jobindex job_description delimiter="|"' (form of tests/data/lsf)
    out = f"101|0|{text}\n102|0|see {text}\n103|0|{text} old\n104|2|x{text}\n"
    assert parse_lsf_tags(out) == {"101": text}
    # condor_q -af prints one word per attribute: a value with spaces has more words
    out = f"12 0 2 {text}\n13 0 2 see {text}\n14 0 2 x{text}\n"
    assert parse_htcondor_tags(out) == {"12.0": text}


def test_emulated_torque_array_listings():
    # tests/data/pbs/README.md: emulated Torque, named dask-worker style <name>-<tag>
    tag = "djq1.0a1b2c3d.0.4242.login01"
    listed = parse_pbs_tags(_recorded("pbs", "torque_qstat_f_t_array.txt"))
    assert listed == {"1[0].server": tag, "1[2].server": tag}  # 1[1] completed (C)
    # a subjob named <name>-<index> (Torque's PBS_JOBNAME form), but not another index
    out = _recorded("pbs", "torque_qstat_f_t_array.txt").replace(
        f"Job_Name = djq-rec-{tag}", f"Job_Name = djq-rec-{tag}-2"
    )
    listed = parse_pbs_tags(out)
    assert listed == {"1[0].server": f"{tag}-2", "1[2].server": tag}


# ---------------------------------------------------------------------- emulated systems

EMULATED = [
    pytest.param("pbs", PBSJob, {}, marks=pytest.mark.env("pbs"), id="pbs"),
    pytest.param("torque", PBSJob, {}, marks=pytest.mark.env("torque"), id="torque"),
    pytest.param("moab", MoabJob, {}, marks=pytest.mark.env("moab"), id="moab"),
    pytest.param("lsf", LSFJob, {}, marks=pytest.mark.env("lsf"), id="lsf"),
    pytest.param(
        "htcondor", HTCondorJob, {"disk": "1GB"}, marks=pytest.mark.env("htcondor"), id="htcondor"
    ),
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


def test_listing_falls_back_to_the_next_command_and_raises_when_none_answers():
    import getpass

    from dask_jobqueue._shell import CommandError

    from .fakes import engine_with

    user = getpass.getuser()
    text = TAG.text()
    plain = (
        f"Job Id: 5.s\n    Job_Name = dask-worker-{text}\n    Job_Owner = {user}@host\n"
        "    job_state = R\n\n"
    )
    # a qstat without -F json (Torque): the plain listing is asked next
    engine, runner = engine_with(
        PBSJob("tcp://127.0.0.1:9", cores=1, memory="1GB"),
        lambda argv: (2, "qstat: invalid option -- 'F'") if "json" in argv else plain,
    )
    assert asyncio.run(engine.list_tagged()) == {"5.s": TAG}
    assert ["json" in argv for argv in runner.calls] == [True, False]

    # SGE has one listing: output it cannot read is a failed listing, named as such
    engine, runner = engine_with(
        SGEJob("tcp://127.0.0.1:9", cores=1, memory="1GB"),
        lambda argv: "Welcome to cluster42\n<?xml version='1.0'?><detailed_job_info>",
    )
    with pytest.raises(CommandError, match="could not be read"):
        asyncio.run(engine.list_tagged())
    assert len(runner.calls) == 1


def test_list_tagged_without_tagging_is_empty():
    from dask_jobqueue.local import LocalJob

    assert asyncio.run(BatchSystem(LocalJob(cores=1, memory="1GB")).list_tagged()) == {}


def test_real_oar_listing():
    # OAR keeps no free field: the tag is the first line of the job's command (recorded with
    # the exported form earlier versions wrote: still ours)
    out = _recorded("oar", "oarstat_J_u_tags.txt")
    assert parse_oar_tags(out) == {"64": "djq1.0123abcd.7.4242.vm"}
    # jobs without a tag (recorded listing of ordinary jobs) are left out
    assert parse_oar_tags(_recorded("oar", "oarstat_J_user.txt")) == {}


@pytest.mark.parametrize(
    "command, ours",
    [
        ("DASK_JOBQUEUE_TAG=djq1.0123abcd.7.4242.vm\nsleep 60", True),
        ("echo see DASK_JOBQUEUE_TAG=djq1.0123abcd.7.4242.vm\nsleep 60", False),
        ("sleep 60\nexport DASK_JOBQUEUE_TAG=djq1.0123abcd.7.4242.vm", False),
        ("DASK_JOBQUEUE_TAG=djq1.0123abcd.7.4242.vm; qdel 1\nsleep 60", False),
        ("export DASK_JOBQUEUE_TAG='djq1.0123abcd.7.4242.vm x'\nsleep 60", False),
    ],
)
def test_oar_command_must_start_with_exactly_the_tag_line(command, ours):
    # the recorded listing (tests/data/oar) with only its command changed
    doc = json.loads(_recorded("oar", "oarstat_J_u_tags.txt"))
    doc["64"]["command"] = command
    expected = {"64": "djq1.0123abcd.7.4242.vm"} if ours else {}
    assert parse_oar_tags(json.dumps(doc)) == expected


def test_oar_carries_the_tag_in_its_command():
    job = OARJob(
        "tcp://127.0.0.1:8786",
        name="w-0",
        cores=1,
        memory="1GB",
        memory_per_core_property_name="not_applicable",
    )
    job.tag = TAG
    command = job.submit_argv("/unused")[-1]
    # a shell variable, not exported: the workers and what they submit do not see it
    assert command.splitlines()[0] == f"DASK_JOBQUEUE_TAG={TAG.text()}"
    assert OARJob.tagging.submit_args(TAG.text()) == []
    assert OARJob.tagging.list_argvs("alice") == [["oarstat", "-J", "-u", "alice"]]
    # round trip through the parser, in the recorded JSON layout
    listed = json.dumps({"9": {"Job_Id": 9, "command": command}})
    assert parse_oar_tags(listed) == {"9": TAG.text()}
