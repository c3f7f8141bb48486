"""Options as declarations: resolution, documentation, config checks, upstream surface."""

from __future__ import annotations

import inspect
import os
import re
import warnings

import dask.config
import docutils.core
import docutils.nodes
import docutils.parsers.rst.roles
import pytest
import yaml

from dask_jobqueue import (
    HTCondorCluster,
    JobQueueCluster,
    PBSCluster,
    SLURMCluster,
    registry,
)
from dask_jobqueue.config import DEFAULTS_FILE
from dask_jobqueue.core import Job
from dask_jobqueue.htcondor import HTCondorJob
from dask_jobqueue.local import LocalCluster, LocalJob
from dask_jobqueue.lsf import LSFJob
from dask_jobqueue.moab import MoabJob
from dask_jobqueue.oar import OARJob
from dask_jobqueue.options import (
    ENGINE_OPTIONS,
    EngineSettings,
    Option,
    accepted_keywords,
    check_config_section,
    declared_options,
    known_config_keys,
    resolve_engine_settings,
    resolve_options,
)
from dask_jobqueue.pbs import PBSJob
from dask_jobqueue.slurm import SLURMJob

JOB_CLASSES = [s.job_class() for s in registry.SCHEDULERS]
CLUSTER_CLASSES = [s.cluster_class() for s in registry.SCHEDULERS]
SECTIONS = {s.name: s.job_class() for s in registry.SCHEDULERS}


def documented_parameters(cls: type) -> list[str]:
    """Names in the numpydoc Parameters section of ``cls``'s docstring."""
    doc = inspect.getdoc(cls) or ""
    lines = doc.splitlines()
    start = lines.index("Parameters")
    assert set(lines[start + 1]) == {"-"}
    names = []
    for line in lines[start + 2 :]:
        if line and not line.startswith(" "):
            if re.fullmatch(r"[A-Z][A-Za-z ]+", line):  # next section title
                break
            match = re.fullmatch(r"(\w+) : \S.*", line)
            assert match, f"not a numpydoc parameter line: {line!r}"
            names.append(match.group(1))
    return names


def accepted_by_cluster(cluster_cls: type) -> set[str]:
    own = set(inspect.signature(JobQueueCluster.__init__).parameters) - {"self", "job_kwargs"}
    # underscored: internal (a pool's link to its cluster), not a user keyword
    return {k for k in own if not k.startswith("_")} | accepted_keywords(cluster_cls.job_cls)


def accepted_by_job(job_cls: type) -> set[str]:
    return accepted_keywords(job_cls) | {"scheduler", "name"}


@pytest.mark.parametrize("cls", CLUSTER_CLASSES)
def test_every_cluster_keyword_is_documented(cls):
    documented = documented_parameters(cls)
    assert len(documented) == len(set(documented))
    assert accepted_by_cluster(cls) <= set(documented), accepted_by_cluster(cls) - set(documented)
    assert "cores : int" in inspect.getdoc(cls)
    assert "memory : str" in inspect.getdoc(cls)


@pytest.mark.parametrize("cls", JOB_CLASSES)
def test_every_job_keyword_is_documented(cls):
    documented = set(documented_parameters(cls))
    assert accepted_by_job(cls) <= documented, accepted_by_job(cls) - documented


def test_dialect_specific_keywords_are_documented_only_where_accepted():
    assert "job_mem" in documented_parameters(SLURMCluster)
    assert "job_mem" not in documented_parameters(PBSCluster)
    assert "disk" in documented_parameters(HTCondorCluster)
    assert "queue" not in documented_parameters(HTCondorCluster)
    assert "use_stdin" in documented_parameters(LSFJob)


def undeclared_option_attributes(job_cls: type) -> list[str]:
    """Attributes of ``job_cls``'s options with no instance annotation along its MRO."""
    annotated = {
        name
        for klass in job_cls.__mro__
        for name, annotation in inspect.get_annotations(klass).items()
        if not str(annotation).startswith("ClassVar")
    }
    options = declared_options(job_cls).values()
    return sorted(o.attribute for o in options if o.attribute not in annotated)


def stale_attribute_declarations(job_cls: type) -> list[str]:
    """Annotations without a value in the job classes of ``job_cls``'s MRO that no option
    of ``job_cls`` sets."""
    attributes = {o.attribute for o in declared_options(job_cls).values()}
    return sorted(
        name
        for klass in job_cls.__mro__
        if issubclass(klass, Job)
        for name in inspect.get_annotations(klass)
        if name not in klass.__dict__ and name not in attributes
    )


@pytest.mark.parametrize("cls", [Job, *JOB_CLASSES])
def test_option_attributes_are_declared_for_the_type_checker(cls):
    # the options are set with setattr: these annotations are all mypy knows of them
    assert undeclared_option_attributes(cls) == []
    assert stale_attribute_declarations(cls) == []


def test_an_undeclared_or_stale_option_attribute_is_found():
    class WithGpus(SLURMJob):
        options = (Option("gpus", "int", "GPUs per job.", attr="job_gpus"),)

    class Declared(WithGpus):
        job_gpus: int | None

    class Stale(SLURMJob):
        job_gpus: int | None

    assert undeclared_option_attributes(WithGpus) == ["job_gpus"]
    assert undeclared_option_attributes(Declared) == []
    assert stale_attribute_declarations(Stale) == ["job_gpus"]


@pytest.mark.parametrize("cls", [Job, JobQueueCluster, *JOB_CLASSES, *CLUSTER_CLASSES])
def test_docstrings_are_valid_rst(cls):
    # Sphinx builds with -W over these; docutils reports any markup problem as a system message.
    doc = inspect.getdoc(cls)
    messages = []
    for role in ("class", "mod", "meth", "func", "attr", "exc", "obj", "data"):
        docutils.parsers.rst.roles.register_generic_role(role, docutils.nodes.literal)

    class Collect:
        def write(self, text):
            messages.append(text)

    docutils.core.publish_doctree(
        doc, settings_overrides={"warning_stream": Collect(), "report_level": 2, "halt_level": 5}
    )
    assert not messages, "".join(messages)


def test_parameters_come_before_examples():
    doc = inspect.getdoc(SLURMCluster)
    assert doc.index("Parameters\n----------") < doc.index("Examples\n--------")


def test_resolution_keyword_then_config_then_default():
    options = [
        Option("alpha", "int", "A.", default=1),
        Option("beta_key", "int", "B.", default=2),
        Option("gamma", "int", "C.", key=None, default=3),
        Option("delta", "int", "D.", default_factory=lambda values, owner: values["alpha"] * 10),
    ]
    with dask.config.set({"jobqueue.test-opts": {"alpha": 5, "beta-key": 6, "gamma": 7}}):
        values = resolve_options(options, "test-opts", {"beta_key": 9}, object)
    # alpha from config; beta_key from the keyword; gamma is not configurable; delta computed
    assert values == {"alpha": 5, "beta_key": 9, "gamma": 3, "delta": 50}


def test_deprecated_alias_is_used_only_when_new_is_empty():
    opt = Option("new_name", "list of str", "N.", default=(), renamed_from="old_name")
    with dask.config.set({"jobqueue.test-opts": {}}):
        with pytest.warns(FutureWarning, match="^old_name has been renamed to new_name"):
            assert resolve_options([opt], "test-opts", {"old_name": ["x"]}, object) == {
                "new_name": ["x"]
            }
        with pytest.warns(FutureWarning):
            values = resolve_options(
                [opt], "test-opts", {"old_name": ["x"], "new_name": ["y"]}, object
            )
        assert values == {"new_name": ["y"]}


@pytest.mark.parametrize(
    "old, new, kwargs",
    [
        ("job_extra", "job_extra_directives", {"job_extra": ["--exclusive"]}),
        ("extra", "worker_extra_args", {"extra": ["--lifetime", "1h"]}),
        ("env_extra", "job_script_prologue", {"env_extra": ["echo hi"]}),
        ("header_skip", "job_directives_skip", {"header_skip": ["-J"]}),
        ("project", "account", {"project": "proj"}),
    ],
)
def test_deprecation_warnings_use_upstream_wording(old, new, kwargs):
    # warning filters written against 0.9 match on "<old> has been renamed to <new>"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings(
            "ignore", message=f"{old} has been renamed to {new}", category=FutureWarning
        )
        SLURMJob(cores=1, memory="1GB", **kwargs)


def test_oar_memory_warning_uses_upstream_wording():
    with pytest.warns(
        UserWarning,
        match="OAR Job memory reserved resources will not be set according to Dask Worker memory limit",
    ):
        OARJob(cores=1, memory="1GB")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        OARJob(cores=1, memory="1GB", memory_per_core_property_name="not_applicable")


def test_upstream_style_construction():
    # keyword style of 0.9's dialect constructors
    job = SLURMJob(
        scheduler=None, name=None, queue="debug", config_name=None, cores=2, memory="2GB"
    )
    assert (job.queue, job.config_name, job.name) == ("debug", "slurm", "dummy-name")
    # positional scheduler and name
    job = PBSJob("tcp://10.0.0.1:8786", "worker-3", cores=4, memory="8GB", walltime="01:00:00")
    assert (job.scheduler, job.name, job.walltime) == (
        "tcp://10.0.0.1:8786",
        "worker-3",
        "01:00:00",
    )
    assert "--name worker-3" in job.job_script()
    # the attributes users read
    job = SLURMJob(cores=8, memory="28GB", processes=4, job_extra_directives=["--exclusive"])
    assert (job.worker_cores, job.worker_processes, job.worker_process_threads) == (8, 4, 2)
    assert job.job_extra_directives == ["--exclusive"]
    assert job.walltime == "00:30:00" and job.queue is None


def test_worker_process_memory_is_the_memory_limit_string():
    # 0.9: a string (format_bytes of memory / processes), the value given to --memory-limit
    job = SLURMJob(cores=8, memory="28GB", processes=4)
    assert isinstance(job.worker_process_memory, str)
    assert f"--memory-limit {job.worker_process_memory} " in job.job_script()
    assert job.worker_process_memory == "6675MiB"
    job = SLURMJob(cores=2, memory="4GiB", processes=2)
    assert job.worker_process_memory == "2GiB"


def test_user_subclass_with_its_own_keywords():
    class GPUJob(SLURMJob):
        def __init__(self, *args, gpus=1, gpu_type="a100", **kwargs):
            super().__init__(*args, **kwargs)
            self.job_extra_directives = [
                *self.job_extra_directives,
                f"--gres=gpu:{gpu_type}:{gpus}",
            ]

    class GPUCluster(SLURMCluster):
        job_cls = GPUJob

    with GPUCluster(
        cores=2, memory="2GB", gpus=2, queue="gpu", scheduler_options={"dashboard_address": ":0"}
    ) as cluster:
        script = cluster.job_script()
        assert "#SBATCH --gres=gpu:a100:2" in script
        assert "#SBATCH -p gpu" in script
    with pytest.raises(ValueError, match="unexpected keyword argument 'gpu'"):
        GPUCluster(cores=2, memory="2GB", gpu=2)


def test_upstream_style_subclass_of_job():
    # 0.9 subclasses call super().__init__ with explicit arguments and assign job_header
    class MyJob(Job):
        submit_command = "sbatch"
        cancel_command = "scancel"
        config_name = "slurm"

        def __init__(
            self,
            scheduler=None,
            name=None,
            my_partition=None,
            config_name=None,
            **base_class_kwargs,
        ):
            super().__init__(
                scheduler=scheduler, name=name, config_name=config_name, **base_class_kwargs
            )
            self.job_header = f"#SBATCH -p {my_partition}"

    job = MyJob(cores=1, memory="1GB", my_partition="short")
    assert "#SBATCH -p short\n" in job.job_script()
    assert "my_partition" in accepted_keywords(MyJob)
    with JobQueueCluster(
        job_cls=MyJob,
        cores=1,
        memory="1GB",
        my_partition="long",
        scheduler_options={"dashboard_address": ":0"},
    ) as cluster:
        assert "#SBATCH -p long\n" in cluster.job_script()


def test_job_file_writes_the_script_to_a_temporary_file():
    job = SLURMJob(cores=1, memory="1GB")
    with job.job_file() as path:
        assert os.path.isfile(path)
        with open(path) as f:
            assert f.read() == job.job_script()
    assert not os.path.exists(path)


def test_default_config_name_and_executable():
    assert [cls.default_config_name() for cls in (SLURMJob, MoabJob, LocalJob)] == [
        "slurm",
        "moab",
        "local",
    ]
    assert HTCondorJob.executable == "/bin/sh"
    job = HTCondorJob(cores=1, memory="1GB", disk="1GB")
    job.executable = "/usr/bin/env"
    assert "Executable = /usr/bin/env\n" in job.job_script()


def test_shared_temp_directory_attribute(tmp_path):
    with LocalCluster(
        cores=1,
        memory="1GB",
        shared_temp_directory=str(tmp_path),
        scheduler_options={"dashboard_address": ":0"},
    ) as cluster:
        assert cluster.shared_temp_directory == str(tmp_path)
    with dask.config.set({"jobqueue.local.shared-temp-directory": "/from/config"}):
        with LocalCluster(
            cores=1, memory="1GB", scheduler_options={"dashboard_address": ":0"}
        ) as cluster:
            assert cluster.shared_temp_directory == "/from/config"
    with LocalCluster(
        cores=1, memory="1GB", scheduler_options={"dashboard_address": ":0"}
    ) as cluster:
        assert cluster.shared_temp_directory is None


# ---------------------------------------------------------------------------- YAML


@pytest.mark.parametrize("section, job_cls", sorted(SECTIONS.items()))
def test_packaged_yaml_has_only_known_keys(section, job_cls):
    with open(DEFAULTS_FILE) as f:
        keys = set(yaml.safe_load(f)["jobqueue"][section])
    assert keys <= known_config_keys(job_cls), keys - known_config_keys(job_cls)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_config_section(section, known_config_keys(job_cls)) == []


def test_unknown_yaml_key_warns_with_the_closest_key():
    with dask.config.set(
        {"jobqueue.slurm.wallclock": "01:00:00", "jobqueue.slurm.job-extra-directive": []}
    ):
        with pytest.warns(UserWarning) as record:
            with LocalCluster(
                cores=1,
                memory="1GB",
                config_name="slurm",
                scheduler_options={"dashboard_address": ":0"},
            ):
                pass
    messages = [str(w.message) for w in record if "not a known setting" in str(w.message)]
    assert any(
        "jobqueue.slurm.wallclock" in m and "Did you mean 'walltime'?" in m for m in messages
    )
    assert any("job-extra-directive " in m and "'job-extra-directives'" in m for m in messages)


def test_underscored_yaml_keys_are_known():
    with dask.config.set({"jobqueue.slurm.job_mem": "4G"}):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert check_config_section("slurm", known_config_keys(SLURMJob)) == []
        assert SLURMJob(cores=1, memory="1GB").job_mem == "4G"


def test_unquoted_sexagesimal_walltime_from_yaml_is_refused(tmp_path):
    text = "jobqueue:\n  slurm:\n    walltime: 12:00:00\n"
    loaded = yaml.safe_load(text)
    assert loaded["jobqueue"]["slurm"]["walltime"] == 43200  # what YAML does
    with dask.config.set(loaded):
        with pytest.raises(ValueError, match="walltime is the integer 43200") as info:
            SLURMJob(cores=1, memory="1GB")
    assert "Quote it in the YAML file: walltime: '12:00:00'" in str(info.value)
    # quoted, or given as a keyword, it works
    with dask.config.set(yaml.safe_load("jobqueue:\n  slurm:\n    walltime: '12:00:00'\n")):
        assert SLURMJob(cores=1, memory="1GB").walltime == "12:00:00"


# ---------------------------------------------------------------------------- engine settings


def test_engine_settings_defaults_and_config():
    assert resolve_engine_settings("slurm") == EngineSettings()
    with dask.config.set(
        {"jobqueue.slurm.poll-interval": "500ms", "jobqueue.slurm.submit-concurrency": 2}
    ):
        settings = resolve_engine_settings("slurm")
    assert (settings.poll_interval, settings.submit_concurrency) == (0.5, 2)
    settings = resolve_engine_settings(
        "slurm", {"status-timeout": "1m", "max_consecutive_failures": 5}
    )
    assert (settings.status_timeout, settings.max_consecutive_failures) == (60.0, 5)
    # a poll-interval above the maximum raises the maximum
    assert resolve_engine_settings("slurm", {"poll_interval": "1m"}).poll_interval_max == 60.0


@pytest.mark.parametrize(
    "key, value",
    [
        ("max-consecutive-failures", 0),
        ("max-consecutive-failures", -2),
        ("status-timeout", 0),
        ("status-timeout", "-5s"),
        ("poll-interval", 0),
        ("poll-interval", -1),
        ("submit-timeout", "soon"),
        ("submit-concurrency", 0),
        ("resubmit-backoff", "0s"),
        ("max-jobs", 0),
        ("command-rate-limit", 0),
        ("command-rate-limit", "fast"),
        ("command-burst", 0),
    ],
)
def test_engine_settings_refuse_non_positive_values(key, value):
    name = key.replace("-", "_")
    with dask.config.set({f"jobqueue.slurm.{key}": value}):
        with pytest.raises(ValueError, match=f"jobqueue.slurm: {name}="):
            resolve_engine_settings("slurm")
        with pytest.raises(ValueError, match=name):
            LocalCluster(cores=1, memory="1GB", config_name="slurm")


def test_engine_options_match_settings_fields():
    assert {o.name for o in ENGINE_OPTIONS} == set(EngineSettings.__dataclass_fields__)


def test_engine_settings_reject_unknown_override():
    with pytest.raises(ValueError, match="unexpected keyword argument 'poll_intervall'"):
        resolve_engine_settings("slurm", {"poll_intervall": 1})
