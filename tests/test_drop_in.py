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
from dask_jobqueue.oar import OARJob
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
    # jobs, not clusters: a cluster's scheduler may warn too (its dashboard port in use by
    # another test), which the "no warning" check below would take for the memory's
    def job(memory):
        return OARJob("tcp://a:1", cores=1, memory=memory, memory_per_core_property_name="x")

    with pytest.warns(UserWarning, match=r"memory='28MiB' is less than 32 MiB per job"):
        small = job("28MiB")
    assert small.worker_memory == 28 * 2**20
    # nothing, zero, negative and a forgotten unit stay refused
    for bad, words in [
        (0, "must be a positive size"),
        (-5, "must be a positive size"),
        ("-1GB", "is not a size|must be a positive size"),
        (24, "below the minimum of 1 MiB: did you forget the unit"),
    ]:
        with pytest.raises(ValueError, match=rf"memory={bad!r} .*({words})"):
            job(bad)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 32 MiB and more: no warning
        job("32MiB")


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


# ------------------------------------------------- surprise 7: one-line errors naming the setting


def test_unknown_protocol_is_refused_naming_it():
    # was a chained "Scheduler failed to start" traceback from distributed
    with pytest.raises(ValueError, match=r"^protocol='foo://' is not a protocol Dask knows; "):
        SLURMCluster(cores=1, memory="1GB", protocol="foo://")
    with pytest.raises(
        ValueError, match=r"scheduler_options\['protocol'\]='bar' is not a protocol"
    ):
        SLURMCluster(cores=1, memory="1GB", scheduler_options={"protocol": "bar"})
    with SLURMCluster(cores=1, memory="1GB", protocol="tcp") as cluster:
        assert cluster.scheduler_address.startswith("tcp://")


@pytest.mark.parametrize("port", [-1, 65536, "x", True])
def test_bad_scheduler_port_is_refused_naming_it(port):
    # -1 was "Servname not supported for ai_socktype" buried in a chained traceback
    with pytest.raises(ValueError, match=rf"^scheduler_options\['port'\]={re.escape(repr(port))} "):
        SLURMCluster(cores=1, memory="1GB", scheduler_options={"port": port})


def test_bad_contact_address_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"scheduler_options\['contact_address'\]='10.0.0.1' must"):
        SLURMCluster(cores=1, memory="1GB", scheduler_options={"contact_address": "10.0.0.1"})


def test_existing_log_directory_that_cannot_be_written_is_refused_at_construction():
    # the local backend raised a bare FileNotFoundError at the first submission; /proc/self
    # is a directory nobody (root included) may create files in
    with pytest.raises(ValueError, match=r"log_directory='/proc/self' is a directory this user"):
        LocalCluster(cores=1, memory="1GB", log_directory="/proc/self")
    # /proc: os.access says yes to root, but no file can be created there; the local backend
    # writes its job scripts itself, so it tries
    with pytest.raises(ValueError, match=r"log_directory='/proc' is a directory this user"):
        LocalCluster(cores=1, memory="1GB", log_directory="/proc")


def _python(code: str, config_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "DASK_CONFIG": str(config_dir)},
        cwd=Path(__file__).resolve().parent.parent,
    )


def test_malformed_yaml_file_does_not_break_the_import_and_is_named_at_construction(tmp_path):
    bad = tmp_path / "site.yaml"
    bad.write_text("jobqueue:\n  slurm:\n    cores: [1,\n")
    result = _python(
        "import dask_jobqueue\n"
        "print('version', dask_jobqueue.__version__)\n"
        "try:\n"
        "    dask_jobqueue.SLURMCluster(cores=1, memory='1GB')\n"
        "except ValueError as e:\n"
        "    print('error', type(e).__name__, e)\n",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("version ")
    expected = f"dask configuration file {bad} is not valid YAML at line 4, column 1"
    assert lines[1].startswith(f"error ConfigFileError {expected}"), lines
    assert expected in result.stderr  # the warning at import
    cli = subprocess.run(
        [sys.executable, "-m", "dask_jobqueue", "job-script", "slurm"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "DASK_CONFIG": str(tmp_path)},
    )
    assert cli.returncode == 2 and "Traceback" not in cli.stderr
    assert (
        cli.stderr.strip()
        .splitlines()[-1]
        .startswith(f"dask-jobqueue job-script: error: {expected}")
    )


# ------------------------------------------------- surprise 8: silently accepted inputs


def test_job_name_with_a_variable_warns_that_it_is_written_as_is():
    with pytest.warns(UserWarning, match=r"job_name='run-\$SLURM_JOB_ID' is written as is"):
        job = SLURMJob(cores=1, memory="1GB", job_name="run-$SLURM_JOB_ID")
    assert "run-$SLURM_JOB_ID" in job.job_header
    with pytest.raises(ValueError) as info:
        SLURMJob(cores=1, memory="1GB", job_name="a b")
    # the message no longer says that variables are expanded (in a header they are not)
    assert "are not expanded" in str(info.value)
    assert "references expanded" not in str(info.value)


@pytest.mark.parametrize("value", [5, "mem core", "5mem"])
def test_oar_memory_property_name_must_be_a_name(value):
    with pytest.raises(ValueError, match=r"memory_per_core_property_name=.* must be a name given"):
        OARCluster(cores=1, memory="1GB", memory_per_core_property_name=value)


def test_yaml_section_given_as_a_string_is_refused_naming_it(tmp_path):
    config = tmp_path / "site.yaml"
    config.write_text('jobqueue:\n  slurm: "cores=4"\n')
    result = _python(
        "import dask_jobqueue\n"
        "try:\n"
        "    dask_jobqueue.SLURMCluster(cores=1, memory='1GB')\n"
        "except ValueError as e:\n"
        "    print(e)\n",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"jobqueue.slurm is the str 'cores=4' in {config}, not a section: write one setting "
        "per line, indented under 'slurm:' (e.g. 'cores: 4')"
    )
    with dask.config.set({"jobqueue.pbs": ["cores", 4]}):
        with pytest.raises(ValueError, match=r"jobqueue.pbs is the list \['cores', 4\] in the"):
            PBSCluster(cores=1, memory="1GB")


# ------------------------------------------------- surprise 3: custom sections inherit defaults


def test_custom_section_inherits_the_built_in_defaults_of_its_scheduler():
    with dask.config.set({"jobqueue.mysite": {"cores": 2, "memory": "2GB", "queue": "big"}}):
        custom = SLURMJob(config_name="mysite")
        default = SLURMJob(cores=2, memory="2GB", queue="big")
    assert custom.walltime == "00:30:00" == default.walltime
    assert custom.death_timeout == 60 == default.death_timeout
    assert custom.job_script() == default.job_script()
    assert (
        "--death-timeout 60" in custom.job_script() and "#SBATCH -t 00:30:00" in custom.job_script()
    )
    # what the section sets wins; the user's own `slurm` section is not inherited
    with dask.config.set({"jobqueue.mysite": {"cores": 2, "memory": "2GB", "walltime": "01:00:00"},
                          "jobqueue.slurm.queue": "from-slurm-section"}):  # fmt: skip
        custom = SLURMJob(config_name="mysite")
    assert custom.walltime == "01:00:00" and custom.queue is None


def test_configuration_page_says_what_custom_sections_inherit():
    text = " ".join(
        (Path(__file__).resolve().parent.parent / "docs/configuration.rst").read_text().split()
    )
    assert (
        "A named section inherits the built-in defaults of the scheduler's own section "
        "(``walltime``, ``death-timeout``, ``scheduler-check``, the job-state keys...), not "
        "the settings of your own ``slurm`` section" in text
    )
