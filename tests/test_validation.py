"""Every bad input is a ValueError naming its keyword, raised before anything is submitted."""

from __future__ import annotations

import math
import os

import dask
import pytest

from dask_jobqueue import LSFCluster, OARCluster, SGECluster, SLURMCluster
from dask_jobqueue.local import LocalCluster, LocalJob
from dask_jobqueue.pbs import PBSJob
from dask_jobqueue.slurm import SLURMJob

BASE = {"cores": 2, "memory": "2GB"}

# (job class, keyword, bad value, words of the message besides the keyword)
BAD_JOB_INPUT = [
    (SLURMJob, "memory", math.nan, "not a finite size"),
    (SLURMJob, "memory", math.inf, "not a finite size"),
    (SLURMJob, "memory", "1e400", "not a size"),
    (SLURMJob, "memory", 1, "below the minimum of 1 MiB"),
    (SLURMJob, "memory", "1MB", "below the minimum of 1 MiB"),
    (SLURMJob, "death_timeout", "soon", "not a duration"),
    (SLURMJob, "death_timeout", -5, "positive duration"),
    (SLURMJob, "death_timeout", 0, "positive duration"),
    (SLURMJob, "interface", 5, "network interface"),
    (SLURMJob, "interface", "eth 0", "network interface"),
    (SLURMJob, "queue", ["a"], "must be a string"),
    (SLURMJob, "queue", "a b", "single word"),
    (SLURMJob, "queue", "a;b", "shell metacharacters"),
    (PBSJob, "queue", "a;b", "shell metacharacters"),
    (SLURMJob, "queue", "'a'", "quotes"),
    (SLURMJob, "account", "my account", "single word"),
    (PBSJob, "account", 'a"b', "quotes"),
    (SLURMJob, "job_mem", "10 G", "single word"),
    (SLURMJob, "job_mem", "lots", "not a Slurm memory size"),
    (SLURMJob, "job_mem", "10GB", "not a Slurm memory size"),
    (SLURMJob, "job_cpu", -3, ">= 1"),
    (SLURMJob, "job_cpu", "abc", "whole number"),
    (SLURMJob, "job_extra_directives", [None], "entries must be strings"),
    (SLURMJob, "job_extra_directives", "--exclusive", "must be a list of strings"),
    (SLURMJob, "worker_extra_args", [None], "entries must be strings"),
    (PBSJob, "resource_spec", "", "must not be empty"),
    (PBSJob, "resource_spec", "   ", "must not be empty"),
    (SLURMJob, "walltime", "00:00:00", "is zero"),
    (PBSJob, "walltime", "0", "is zero"),
    (SLURMJob, "walltime", 5.5, "must be a string"),
    (SLURMJob, "nanny", "no", "True or False"),
    (SLURMJob, "nanny", 0, "True or False"),
    (SLURMJob, "shebang", "/bin/bash", "must start with '#!'"),
    (SLURMJob, "protocol", 5, "protocol"),
    (SLURMJob, "security", "yes", "Security object"),
    (SLURMJob, "processes", 2.5, "whole number"),
    (SLURMJob, "python", ["python3"], "must be a string"),
]


def keyword_in_message(keyword: str, message: str) -> bool:
    return (
        f"{keyword}=" in message or f" {keyword} " in message or message.startswith(f"{keyword} ")
    )


@pytest.mark.parametrize("cls, keyword, value, words", BAD_JOB_INPUT)
def test_bad_job_input_names_the_keyword(cls, keyword, value, words):
    with pytest.raises(ValueError) as info:
        cls(**{**BASE, keyword: value})
    message = str(info.value)
    assert keyword_in_message(keyword, message), message
    assert words in message


@pytest.mark.parametrize(
    "cluster_cls, keyword, value",
    [
        (SGECluster, "project", "a b"),
        (OARCluster, "project", "a'b"),
        (LSFCluster, "queue", "a b"),  # an LSF project is quoted: tests/test_drop_in.py
        (SGECluster, "queue", "all.q;rm"),
        (OARCluster, "queue", "default -t besteffort"),
    ],
)
def test_words_are_checked_on_every_scheduler(cluster_cls, keyword, value):
    kwargs = {**BASE, keyword: value}
    if cluster_cls is OARCluster:
        kwargs["memory_per_core_property_name"] = "not_applicable"
    with pytest.raises(ValueError, match=f"{keyword}=.*single word without whitespace, quotes"):
        cluster_cls(**kwargs)


@pytest.mark.parametrize(
    "keyword, value, words",
    [
        ("scheduler_options", "x", "must be a dict"),
        ("security", "yes", "Security object, or True"),
        ("interface", 5, "network interface"),
        ("name", "my cluster", "not a valid name"),
        ("n_workers", -1, ">= 0"),
        ("n_workers", "two", "whole number"),
        ("asynchronous", "yes", "True or False"),
        ("shared_temp_directory", ["/tmp"], "must be a string"),
    ],
)
def test_bad_cluster_input_names_the_keyword(keyword, value, words):
    with pytest.raises(ValueError) as info:
        SLURMCluster(**BASE, **{keyword: value})
    message = str(info.value)
    assert f"{keyword}=" in message and words in message, message


@pytest.fixture
def recording_sbatch(tmp_path, monkeypatch):
    """A fake sbatch that records each call; bad input must never reach it."""
    marker = tmp_path / "called"
    fake = tmp_path / "bin" / "sbatch"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\ntouch {marker}\necho 'Submitted batch job 1'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    return marker


@pytest.mark.parametrize(
    "kwargs",
    [
        {"memory": "1e400"},
        {"death_timeout": "soon"},
        {"scheduler_options": "x"},
        {"security": "yes"},
        {"interface": 5},
        {"queue": ["a"]},
        {"job_extra_directives": [None]},
        {"walltime": "00:00:00"},
        {"job_cpu": "abc"},
        {"job_mem": "lots"},
        {"nanny": "no"},
        {"shebang": "bash"},
        {"account": "a b"},
        {"queue": "a;b"},
    ],
)
def test_nothing_is_submitted_on_bad_input(recording_sbatch, kwargs):
    with pytest.raises(ValueError):
        SLURMCluster(**{**BASE, **kwargs}, n_workers=2)
    assert not recording_sbatch.exists()


def test_good_values_still_pass():
    job = SLURMJob(
        cores=4,
        memory="32MiB",
        queue="gpu,cpu",
        account="proj-42",
        job_mem="24G",
        job_cpu="4",
        death_timeout="2m",
        walltime="1-00:00:00",
        interface="ib0",
        nanny=False,
    )
    header = job.job_header
    assert "#SBATCH -p gpu,cpu" in header and "#SBATCH -A proj-42" in header
    assert "#SBATCH --mem=24G" in header and "#SBATCH --cpus-per-task=4" in header
    assert job.death_timeout == 120
    # resource_spec is written verbatim, with its own syntax (OAR properties use quotes)
    job = PBSJob(**BASE, resource_spec="select=2:ncpus=4+1:ncpus=8", queue="workq@server1")
    assert "#PBS -l select=2:ncpus=4+1:ncpus=8" in job.job_header
    assert "#PBS -q workq@server1" in job.job_header


def test_local_log_directory_writable_by_others_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(ValueError, match="log_directory=.* can be written by other users"):
        LocalJob(**BASE, log_directory=str(shared))
    with pytest.raises(ValueError, match="log_directory"):
        LocalCluster(**BASE, log_directory=str(shared))
    group = tmp_path / "group"
    group.mkdir()
    group.chmod(0o775)
    with pytest.raises(ValueError, match="can be written by other users"):
        LocalJob(**BASE, log_directory=str(group))
    private = tmp_path / "private"
    private.mkdir()
    private.chmod(0o755)
    assert LocalJob(**BASE, log_directory=str(private)).log_directory == str(private)


def test_local_log_directory_is_checked_again_when_created(tmp_path):
    # created at construction, made writable by others before submission: refused
    target = tmp_path / "later"
    job = LocalJob(**BASE, log_directory=str(target))
    assert target.is_dir()
    target.chmod(0o777)
    with pytest.raises(ValueError, match="can be written by other users"):
        job.prepare_log_directory()
    target.chmod(0o700)
    job.prepare_log_directory()


def test_more_jobs_than_max_jobs_is_refused_before_anything_is_built(recording_sbatch):
    """``scale(jobs=10**6)`` would build a million jobs on the event loop: refused with the
    config key to raise, nothing submitted, nothing added to the cluster's spec."""
    # BASE: 2 workers per job
    with pytest.raises(ValueError, match=r"n_workers=12 asks for 6 jobs.*limit of 5.*max-jobs"):
        with dask.config.set({"jobqueue.slurm.max-jobs": 5}):
            SLURMCluster(**BASE, n_workers=12, scheduler_options={"dashboard_address": ":0"})
    with SLURMCluster(**BASE, scheduler_options={"dashboard_address": ":0"}) as cluster:
        for call, words in [
            (lambda: cluster.scale(jobs=10**6), "jobs=1000000 asks for 1000000 jobs"),
            (lambda: cluster.scale(n=200_001), "n=200001 asks for 100001 jobs"),
            (lambda: cluster.scale(cores=2 * 10**6), "cores=2000000 asks for 1000000 jobs"),
            (lambda: cluster.adapt(maximum_jobs=10**6), "maximum_jobs=1000000"),
        ]:
            with pytest.raises(ValueError, match=f"{words}.*100000.*jobqueue.slurm.max-jobs"):
                call()
            assert len(cluster.worker_spec) == 0
    assert not recording_sbatch.exists()
