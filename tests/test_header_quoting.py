"""Header directives carry every value as ONE argument: a ``log_directory`` holding
``-q debug -o /x`` is a path, never a second option, on every scheduler.

The unit tests read the generated header the way each submit command does (see the
``*_value`` docstrings of the dialects for what was recorded); the ``env`` tests submit to
the real Slurm, Grid Engine and OpenPBS and read the queue and output path back from the
scheduler's own job information.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from dask_jobqueue import (
    HTCondorCluster,
    LSFCluster,
    MoabCluster,
    PBSCluster,
    SGECluster,
    SLURMCluster,
)
from dask_jobqueue.dialects.slurm import SLURM_ARRAYS
from dask_jobqueue.htcondor import HTCondorJob
from dask_jobqueue.local import LocalCluster, LocalJob
from dask_jobqueue.lsf import LSFJob
from dask_jobqueue.moab import MoabJob
from dask_jobqueue.oar import OARJob
from dask_jobqueue.pbs import PBSJob
from dask_jobqueue.sge import SGEJob
from dask_jobqueue.slurm import SLURMJob

INJECTION = "/x -q debug -o /x"
BASE = {"cores": 1, "memory": "1GB"}


def split_like_make_argv(line: str) -> list[str]:
    """A directive line split as OpenPBS's qsub (``make_argv``) and SGE's qsub do: blanks
    outside quotes separate, a double- or single-quoted part is copied without escapes."""
    words, word, quote, started = [], [], None, False
    for char in line:
        if quote:
            if char == quote:
                quote = None
            else:
                word.append(char)
        elif char in "\"'":
            quote, started = char, True
        elif char.isspace():
            if started or word:
                words.append("".join(word))
            word, started = [], False
        else:
            word.append(char)
    assert quote is None, f"unmatched quote in {line!r}"
    if started or word:
        words.append("".join(word))
    return words


def directive_options(header: str, prefix: str, split) -> list[tuple[str, str]]:
    """``(option, argument)`` pairs of every ``prefix`` line (each option takes one)."""
    pairs = []
    for line in header.splitlines():
        if not line.startswith(prefix + " "):
            continue
        words = split(line[len(prefix) + 1 :])
        while words:
            option = words.pop(0)
            assert option.startswith("-"), f"stray argument {option!r} in {line!r}"
            if words and not words[0].startswith("-"):
                pairs.append((option, words.pop(0)))
            else:
                pairs.append((option, ""))
    return pairs


def values_of(pairs: list[tuple[str, str]], option: str) -> list[str]:
    return [value for opt, value in pairs if opt == option]


# ---------------------------------------------------------------------------- unit, per dialect


def test_slurm_log_directory_cannot_change_the_partition():
    job = SLURMJob(**BASE, queue="small", log_directory=INJECTION)
    pairs = directive_options(job.job_header, "#SBATCH", shlex.split)
    assert values_of(pairs, "-p") == ["small"]
    assert values_of(pairs, "-q") == []
    assert values_of(pairs, "-o") == [f"{INJECTION}/dask-worker-%J.out"]
    assert values_of(pairs, "-e") == [f"{INJECTION}/dask-worker-%J.err"]
    # the array form (one file per task) keeps the quoting
    arrays = directive_options(SLURM_ARRAYS.edit_script(job.job_header), "#SBATCH", shlex.split)
    assert values_of(arrays, "-o") == [f"{INJECTION}/dask-worker-%A_%a.out"]


def test_slurm_quote_and_percent_are_escaped_backslash_refused():
    job = SLURMJob(**BASE, log_directory='/l "q" 50%')
    pairs = directive_options(job.job_header, "#SBATCH", shlex.split)
    assert values_of(pairs, "-o") == ['/l "q" 50%%/dask-worker-%J.out']  # %% is Slurm's '%'
    with pytest.raises(ValueError, match=r"log_directory=.*backslash.*%J replacement"):
        SLURMJob(**BASE, log_directory="/l\\x")


@pytest.mark.parametrize("cls", [PBSJob, MoabJob], ids=["pbs/torque", "moab"])
def test_pbs_family_log_directory_cannot_change_the_queue(cls):
    job = cls(**BASE, queue="workq", log_directory=INJECTION)
    for split in (split_like_make_argv, shlex.split):  # OpenPBS's parser, and the emulators'
        pairs = directive_options(job.job_header, "#PBS", split)
        assert values_of(pairs, "-q") == ["workq"]
        assert values_of(pairs, "-o") == values_of(pairs, "-e") == [f"{INJECTION}/"]


def test_sge_log_directory_cannot_change_the_queue():
    job = SGEJob(**BASE, queue="all.q", log_directory=INJECTION)
    pairs = directive_options(job.job_header, "#$", split_like_make_argv)
    assert values_of(pairs, "-q") == ["all.q"]
    assert values_of(pairs, "-o") == values_of(pairs, "-e") == [f"{INJECTION}/"]


def test_lsf_log_directory_cannot_change_the_queue():
    job = LSFJob(**BASE, queue="normal", lsf_units="kb", log_directory=INJECTION)
    pairs = directive_options(job.job_header, "#BSUB", shlex.split)
    assert values_of(pairs, "-q") == ["normal"]
    assert values_of(pairs, "-o") == [f"{INJECTION}/dask-worker-%J.out"]


def test_oar_log_directory_and_resources_stay_one_argument():
    job = OARJob(
        **BASE,
        queue="default",
        memory_per_core_property_name="not_applicable",
        log_directory=INJECTION,
        resource_spec="{gpu > 0}/nodes=1 -q besteffort",
    )
    argv = job.submit_argv("unused")
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-q"] == ["default"]
    assert argv[argv.index("-O") + 1] == f"{INJECTION}/dask-worker.%jobid%.out"
    assert argv[argv.index("-l") + 1].startswith("{gpu > 0}/nodes=1 -q besteffort,walltime=")


def test_htcondor_log_directory_is_one_submit_value():
    job = HTCondorJob(**BASE, disk="1GB", log_directory=INJECTION + " $(Owner)")
    entries = {}
    for line in job.job_header.splitlines():
        key, _, value = line.partition(" = ")
        entries[key] = value
    # the whole rest of the line is the value; the macro is protected from expansion
    assert entries["LogDirectory"] == INJECTION + " $(DOLLAR)(Owner)"
    assert sum(1 for line in job.job_script().splitlines() if line == "Queue") == 1
    with pytest.raises(ValueError, match="log_directory=.*blank"):
        HTCondorJob(**BASE, disk="1GB", log_directory="/logs ")


def test_local_log_directory_with_options_text_is_a_plain_directory(tmp_path):
    logs = tmp_path / "a b -q debug -o x"
    job = LocalJob(**BASE, log_directory=str(logs))
    assert job.job_header == ""  # no directives: the value is only ever a path
    assert job.log_directory == str(logs)


@pytest.mark.parametrize(
    "cls, kwargs, bad, what",
    [
        (PBSJob, {}, "/a:b", "host name"),
        (PBSJob, {}, '/a"b', "double quote"),
        (MoabJob, {}, "/a\\b", "backslashes"),
        (SGEJob, {}, "/a,b", "list"),
        (SGEJob, {}, "/a#b", "cuts"),
        (SGEJob, {}, "/it's", "quote"),
        (LSFJob, {"lsf_units": "kb"}, "/a%b", "no escape"),
        (LSFJob, {"lsf_units": "kb"}, '/a"b', "not recorded"),
    ],
)
def test_values_a_scheduler_cannot_carry_are_refused_at_construction(cls, kwargs, bad, what):
    with pytest.raises(ValueError, match=rf"log_directory={re.escape(repr(bad))} .*{what}"):
        cls(**BASE, **kwargs, log_directory=bad)


@pytest.mark.parametrize(
    "cluster_cls, kwargs, bad",
    [
        (SLURMCluster, {}, "/a\\b"),
        (PBSCluster, {}, "/a:b"),
        (SGECluster, {}, "/a#b"),
        (LSFCluster, {"lsf_units": "kb"}, "/a%b"),
        (MoabCluster, {}, '/a"b'),
        (HTCondorCluster, {"disk": "1GB"}, " /a"),
    ],
)
def test_refusals_come_from_the_cluster_constructor(cluster_cls, kwargs, bad):
    # (OAR's oarsub arguments are shlex-quoted: it carries every one-line value)
    with pytest.raises(ValueError, match="log_directory="):
        cluster_cls(**BASE, **kwargs, log_directory=bad)


@pytest.mark.parametrize("cls", [PBSJob, SGEJob])
def test_resource_spec_is_one_resource_list(cls):
    with pytest.raises(
        ValueError, match=r"resource_spec=.*one resource list.*job_extra_directives"
    ):
        cls(**BASE, resource_spec="select=1 -q debug")


# ---------------------------------------------------------------------------- directories


@pytest.mark.parametrize("keyword", ["log_directory", "local_directory"])
@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (SLURMJob, {}),
        (SGEJob, {}),
        (PBSJob, {}),
        (LSFJob, {"lsf_units": "kb"}),
        (HTCondorJob, {"disk": "1GB"}),
        (LocalJob, {}),
    ],
)
def test_world_writable_directory_without_sticky_bit_is_refused(tmp_path, keyword, cls, kwargs):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(ValueError, match=rf"{keyword}=.*(every user|other users)"):
        cls(**BASE, **kwargs, **{keyword: str(shared)})
    # a directory still to be created inside it: the parent is the problem, and is named
    with pytest.raises(ValueError, match=rf"{keyword}=.*(its parent '{shared}'|other users)"):
        cls(**BASE, **kwargs, **{keyword: str(shared / "logs")})
    shared.chmod(0o1777)  # sticky, like /tmp: nobody can replace another user's files
    if cls is LocalJob and keyword == "log_directory":
        # the local backend runs the scripts it writes there: it wants a private directory
        with pytest.raises(ValueError, match="can be written by other users"):
            cls(**BASE, **kwargs, **{keyword: str(shared)})
        assert getattr(cls(**BASE, **kwargs, **{keyword: str(shared / "mine")}), keyword)
    else:
        assert getattr(cls(**BASE, **kwargs, **{keyword: str(shared)}), keyword) == str(shared)


def test_group_writable_directories_are_fine_for_batch_backends(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    project.chmod(0o2775)
    job = SLURMJob(**BASE, log_directory=str(project), local_directory=str(project))
    assert job.log_directory == job.local_directory == str(project)


def test_local_directory_with_a_variable_is_checked_up_to_it(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    assert SLURMJob(**BASE, local_directory="$TMPDIR/dask").local_directory == "$TMPDIR/dask"
    with pytest.raises(ValueError, match="local_directory="):
        SLURMJob(**BASE, local_directory=f"{shared}/$USER")


def test_log_directory_made_world_writable_before_submission_is_refused(tmp_path):
    target = tmp_path / "later"
    job = SLURMJob(**BASE, log_directory=str(target))  # created here, private
    assert target.is_dir()
    target.chmod(0o777)
    with pytest.raises(ValueError, match="log_directory=.*every user"):
        job.prepare_log_directory()
    target.chmod(0o755)
    job.prepare_log_directory()


# ---------------------------------------------------------------------------- end to end


def test_local_cluster_runs_with_a_log_directory_holding_spaces_and_options(tmp_path):
    logs = tmp_path / "logs with space -q debug -o x"
    with LocalCluster(
        cores=1,
        memory="1GB",
        processes=1,
        log_directory=str(logs),
        scheduler_options={"dashboard_address": ":0"},
    ) as cluster:
        from distributed import Client

        cluster.scale(1)
        with Client(cluster) as client:
            client.wait_for_workers(1, timeout=60)
            assert client.submit(lambda: 6 * 7).result(timeout=30) == 42
    scripts = sorted(p.name for p in logs.glob("*.sh"))
    assert scripts and all(p.startswith("dask-worker-") for p in scripts)


UNREACHABLE = "tcp://127.0.0.1:1"  # the job script's check ends the job at once, with a line


def _submit(job) -> str:
    job.prepare_log_directory()
    return asyncio.run(job.submit(timeout=60))


def _wait_for_file(paths: list[Path], timeout: float = 120) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in paths:
            if path.exists() and "cannot reach the Dask scheduler" in path.read_text(
                errors="replace"
            ):
                return path
        time.sleep(1)
    raise AssertionError(f"no output with the check's message in {paths}")


def _run(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False).stdout


@pytest.mark.env("slurm")
def test_real_slurm_partition_unchanged_and_output_in_the_quoted_directory(tmp_path):
    logs = tmp_path / "out dir 5% -p debug -o x"
    job = SLURMJob(
        UNREACHABLE,
        cores=1,
        memory="100MB",
        queue="small",
        walltime="00:05:00",
        log_directory=str(logs),
    )
    job_id = _submit(job)
    try:
        info = _run(["scontrol", "show", "job", job_id])
        assert re.search(r"\bPartition=small\b", info), info
        assert f"StdOut={logs}/dask-worker-%J.out" in info.replace("%%", "%"), info
        found = _wait_for_file([logs / f"dask-worker-{job_id}.err"])
        assert found.parent == logs
    finally:
        subprocess.run(["scancel", job_id], capture_output=True, check=False)


@pytest.mark.env("sge")
def test_real_sge_queue_unchanged_and_output_in_the_quoted_directory(tmp_path):
    queues = _run(["qconf", "-sql"]).split()
    assert len(queues) >= 2, f"needs two queues, has {queues}"
    wanted, other = queues[0], queues[1]
    logs = tmp_path / f"out dir -q {other} -o x"
    job = SGEJob(
        UNREACHABLE,
        cores=1,
        memory="100MB",
        queue=wanted,
        walltime="00:05:00",
        log_directory=str(logs),
    )
    job_id = _submit(job)
    try:
        info = _run(["qstat", "-j", job_id])
        assert re.search(rf"^hard_queue_list:\s+{re.escape(wanted)}\s*$", info, re.M), info
        assert re.search(rf"^stdout_path_list:\s+\S*:?{re.escape(str(logs))}/\s*$", info, re.M), (
            info
        )
        found = _wait_for_file([logs / f"dask-worker.o{job_id}"])
        assert found.parent == logs
    finally:
        subprocess.run(["qdel", job_id], capture_output=True, check=False)


@pytest.mark.env("pbs")
def test_real_pbs_queue_unchanged_and_output_in_the_quoted_directory(tmp_path):
    queues = [line.split()[0] for line in _run(["qstat", "-Q"]).splitlines()[2:] if line.strip()]
    assert queues, "no PBS queue"
    wanted = queues[0]
    logs = tmp_path / "out dir -q nosuchqueue -o x"
    job = PBSJob(
        UNREACHABLE,
        cores=1,
        memory="100MB",
        queue=wanted,
        walltime="00:05:00",
        log_directory=str(logs),
    )
    job_id = _submit(job)
    try:
        info = _run(["qstat", "-f", "-x", job_id])
        assert re.search(rf"^\s*queue = {re.escape(wanted)}\s*$", info, re.M), info
        joined = re.sub(r"\n\t", "", info)  # qstat -f wraps long values
        assert re.search(rf"Output_Path = [^:\n]+:{re.escape(str(logs))}/", joined), info
        found = _wait_for_file([logs / f"{job_id}.ER", logs / f"{job_id}.OU"])
        assert found.parent == logs
    finally:
        subprocess.run(["qdel", job_id], capture_output=True, check=False)
