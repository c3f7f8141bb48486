"""Issue 20: what dask-jobqueue 0.9 accepts is accepted (or refused with a clear reason), and
its tests' messages match. Each test names the item of the issue it covers."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from pathlib import Path

import dask
import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

import dask_jobqueue
from dask_jobqueue import (
    JobQueueCluster,
    OARCluster,
    PBSCluster,
    SGECluster,
    SLURMCluster,
    registry,
)
from dask_jobqueue.core import Job
from dask_jobqueue.htcondor import HTCondorCluster
from dask_jobqueue.local import LocalCluster
from dask_jobqueue.lsf import LSFJob
from dask_jobqueue.pbs import PBSJob
from dask_jobqueue.sge import SGEJob
from dask_jobqueue.slurm import SLURMJob
from dask_jobqueue.walltime import keyword_walltime

CLUSTER_CLASSES = [s.cluster_class() for s in registry.SCHEDULERS]


def cluster_kwargs(cls, **kwargs):
    kwargs.setdefault("cores", 1)
    kwargs.setdefault("memory", "1GB")
    if cls is HTCondorCluster:
        kwargs.setdefault("disk", "1GB")
    return kwargs


# ---------------------------------------------------------------------------- item 3: messages


@pytest.mark.parametrize("cls", CLUSTER_CLASSES, ids=lambda c: c.__name__)
def test_unknown_keyword_message_names_class_job_kwargs_and_value(cls):
    name = cls.__name__
    pattern = (
        rf"unexpected keyword argument.+wrong_parameter.+{name}.+job_kwargs.+cores.+memory"
        r".+wrong_parameter.+wrong_parameter_value"
    )
    with pytest.raises(ValueError, match=re.compile(pattern, re.DOTALL)) as info:
        cls(**cluster_kwargs(cls), wrong_parameter="wrong_parameter_value")
    # our list of accepted keywords still follows
    assert "Accepted keywords:" in str(info.value).split("wrong_parameter_value")[-1]


def test_job_subclass_without_config_name_is_named():
    class MyJob(Job):
        submit_command = "true"

    with pytest.raises(ValueError, match="config_name.+MyJob"):
        MyJob(cores=1, memory="1GB")

    class MyNoneJob(Job):
        submit_command = "true"
        config_name = None

    with pytest.raises(ValueError, match="config_name.+MyNoneJob"):
        JobQueueCluster(job_cls=MyNoneJob, cores=1, memory="1GB")


def test_cluster_subclass_without_job_cls_is_named():
    class MyCluster(JobQueueCluster):
        pass

    with pytest.raises(ValueError, match="job_cls.+MyCluster"):
        MyCluster(cores=1, memory="1GB")


@pytest.mark.parametrize("cls", CLUSTER_CLASSES, ids=lambda c: c.__name__)
def test_missing_cores_or_memory_shows_an_example(cls):
    extra = {"disk": "1GB"} if cls is HTCondorCluster else {}
    with pytest.raises(ValueError, match=rf"{cls.__name__}.+cores=\d, memory='\d+GB'"):
        cls(**extra)


# ---------------------------------------------------------------------------- item 1: accepted


def test_small_memory_is_accepted_with_a_warning():
    with pytest.warns(UserWarning, match=r"memory='28MiB' is less than 32 MiB per job"):
        cluster = OARCluster(
            cores=1, memory="28MiB", memory_per_core_property_name="not_applicable"
        )
    with cluster:
        assert cluster._dummy_job.worker_memory == 28 * 2**20
    # nothing, zero, negative and a forgotten unit stay refused
    for bad, words in [
        (0, "must be a positive size"),
        (-5, "must be a positive size"),
        ("-1GB", "is not a size|must be a positive size"),
        (24, "below the minimum of 1 MiB: did you forget the unit"),
    ]:
        with pytest.raises(ValueError, match=rf"memory={bad!r} .*({words})"):
            OARCluster(cores=1, memory=bad, memory_per_core_property_name="not_applicable")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 32 MiB and more: no warning
        OARCluster(cores=1, memory="32MiB", memory_per_core_property_name="not_applicable").close()


def test_lsf_project_with_blanks_is_quoted():
    job = LSFJob("tcp://a:1", cores=1, memory="1GB", project="Dask On LSF", lsf_units="mb")
    assert '#BSUB -P "Dask On LSF"' in job.job_header.splitlines()
    with pytest.raises(ValueError, match=r"project='a\"b' contains"):
        LSFJob("tcp://a:1", cores=1, memory="1GB", project='a"b', lsf_units="mb")


def test_sge_walltime_with_two_fields_is_converted_with_a_warning():
    with pytest.warns(UserWarning, match=r"walltime='00:02' is read as MM:SS \(2 seconds\)"):
        cluster = SGECluster(cores=1, memory="1GB", walltime="00:02")
    with cluster:
        # what qsub takes for h_rt (recorded on SGE 8.1.9: h_rt=00:02 is "not a time value")
        assert "#$ -l h_rt=00:00:02" in cluster.job_script().splitlines()
    with pytest.warns(UserWarning, match="h_rt=00:30:00"):
        job = SGEJob(cores=1, memory="1GB", walltime="30:00")
    assert keyword_walltime(job) == 1800
    assert "#$ -l h_rt=01:00:00" in SGEJob(cores=1, memory="1GB", walltime="01:00:00").job_header
    for bad in ["1:75", "2h", "00:00"]:
        with pytest.raises(ValueError, match=f"walltime='{bad}'"):
            SGEJob(cores=1, memory="1GB", walltime=bad)


@pytest.mark.parametrize(
    "cls, old, value, new",
    [
        (SLURMCluster, "job_extra", {"old_param": "1"}, "job_extra_directives"),
        (PBSCluster, "job_extra", {"old_param": "1"}, "job_extra_directives"),
        (SLURMCluster, "project", ["project is used"], "account"),
        (PBSCluster, "project", ["project is used"], "account"),
        (SLURMCluster, "extra", {"--a": "1"}, "worker_extra_args"),
        (SLURMCluster, "env_extra", "export A=1", "job_script_prologue"),
        (SLURMCluster, "header_skip", {"-n": 1}, "job_directives_skip"),
    ],
)
def test_deprecated_keyword_with_a_wrong_type_warns_once_then_names_it(cls, old, value, new):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError) as info:
            cls(cores=1, memory="1GB", **{old: value})
    renamed = [w for w in caught if issubclass(w.category, FutureWarning)]
    assert len(renamed) == 1 and f"{old} has been renamed to {new}" in str(renamed[0].message)
    # the error names the keyword the user wrote, then what the new keyword takes
    assert str(info.value).startswith(f"{old}={value!r} (renamed to {new}): {new}")


def test_deprecated_keyword_dict_is_fine_where_dicts_are_the_form():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with HTCondorCluster(
            cores=1, memory="1GB", disk="1GB", job_extra={"old_param": "1"}
        ) as cluster:
            assert "old_param = 1" in cluster.job_script()
    renamed = [w for w in caught if issubclass(w.category, FutureWarning)]
    assert len(renamed) == 1 and "job_extra has been renamed" in str(renamed[0].message)
    # the old keyword beside the new one: warned once, ignored
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with SLURMCluster(
            cores=1, memory="1GB", job_extra={"old_param": "1"}, job_extra_directives=["-x"]
        ) as cluster:
            script = cluster.job_script()
    assert "#SBATCH -x" in script and "old_param" not in script
    assert sum(issubclass(w.category, FutureWarning) for w in caught) == 1


# ---------------------------------------------------------------------------- item 7


@pytest.mark.parametrize("cls", [SLURMJob, PBSJob, SGEJob, LSFJob], ids=lambda c: c.__name__)
def test_integer_walltime_keyword_is_refused_like_the_yaml_integer(cls):
    with pytest.raises(ValueError, match=r"walltime=3600 is an integer.+give a string"):
        cls(cores=1, memory="1GB", walltime=3600)
    with dask.config.set({f"jobqueue.{cls.config_name}.walltime": 3600}):
        with pytest.raises(ValueError, match=r"walltime is the integer 3600.+Quote it"):
            cls(cores=1, memory="1GB")
    # as strings, each scheduler's own reading
    assert cls(cores=1, memory="1GB", walltime="90").walltime == "90"


def test_directive_prefix_repeated_in_extra_directives_is_dropped_with_a_warning():
    with pytest.warns(UserWarning, match=r"'#SBATCH --gres=gpu:1' starts with '#SBATCH'"):
        job = SLURMJob(cores=1, memory="1GB", job_extra_directives=["#SBATCH --gres=gpu:1"])
    lines = job.job_header.splitlines()
    assert "#SBATCH --gres=gpu:1" in lines
    assert not any(line.count("#SBATCH") > 1 for line in lines)
    with pytest.warns(UserWarning, match="starts with '#PBS'"):
        job = PBSJob(cores=1, memory="1GB", job_extra_directives=["  #PBS -l gpus=1", "-V"])
    assert job.job_extra_directives == ["-l gpus=1", "-V"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a value that merely contains the prefix is kept
        job = SLURMJob(cores=1, memory="1GB", job_extra_directives=["--comment=#SBATCH"])
    assert job.job_extra_directives == ["--comment=#SBATCH"]


@pytest.fixture
def local_cluster():
    with LocalCluster(
        cores=2, memory="1GB", processes=2, scheduler_options={"dashboard_address": ":0"}
    ) as cluster:
        yield cluster


def test_adapt_minimum_above_maximum_is_refused(local_cluster):
    with pytest.raises(ValueError, match=r"adapt\(minimum=5, maximum=2\): the minimum"):
        local_cluster.adapt(minimum=5, maximum=2)
    with pytest.raises(ValueError, match=r"minimum_jobs=3, maximum_jobs=1\): the minimum"):
        local_cluster.adapt(minimum_jobs=3, maximum_jobs=1)
    assert not local_cluster.worker_spec and getattr(local_cluster, "_adaptive", None) is None


def test_limits_in_workers_and_in_jobs_together_are_refused(local_cluster):
    with pytest.raises(ValueError, match=r"maximum=10, maximum_jobs=2\): give the maximum"):
        local_cluster.adapt(maximum_jobs=2, maximum=10)
    with pytest.raises(ValueError, match=r"minimum=1, minimum_jobs=1\): give the minimum"):
        local_cluster.adapt(minimum=1, minimum_jobs=1)
    with pytest.raises(ValueError, match=r"scale\(n=1, jobs=2\): give either jobs or n=1"):
        local_cluster.scale(1, jobs=2)
    with pytest.raises(ValueError, match=r"give either jobs or cores=4, memory='2GB'"):
        local_cluster.scale(jobs=1, cores=4, memory="2GB")
    assert not local_cluster.worker_spec and getattr(local_cluster, "_adaptive", None) is None
    # n, cores and memory together: the largest wins (distributed's rule)
    local_cluster.scale(n=2, cores=6, memory="1GB")
    assert len(local_cluster.worker_spec) == 3
    local_cluster.scale(0)


# ---------------------------------------------------------------------------- item 5: version


def test_one_version_above_every_0x_release_everywhere():
    root = Path(__file__).resolve().parent.parent
    version = Version(dask_jobqueue.__version__)
    # what pins and `pip install -U dask-jobqueue` compare against 0.9
    assert not version.is_prerelease and version > Version("0.9.999")
    assert version in SpecifierSet(">=0.8")
    cli = subprocess.run(
        [sys.executable, "-m", "dask_jobqueue", "--version"],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=60,
    )
    assert cli.returncode == 0 and cli.stdout.strip() == f"dask-jobqueue {version}"
    built = subprocess.run(
        [sys.executable, "setup.py", "--version"],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=60,
    )
    assert built.stdout.strip().splitlines()[-1] == str(version)
    assert f"version **{version}**" in (root / "README.rst").read_text(encoding="utf-8")
    assert f"{version} (unreleased)" in (root / "docs/changelog.rst").read_text(encoding="utf-8")
