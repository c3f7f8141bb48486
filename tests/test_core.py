"""Options, config precedence, deprecations, validation and quoting shared by all schedulers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import warnings

import dask.config
import pytest

from dask_jobqueue import (
    HTCondorCluster,
    JobQueueCluster,
    SLURMCluster,
    registry,
)
from dask_jobqueue.core import Job, default_processes
from dask_jobqueue.htcondor import HTCondorJob
from dask_jobqueue.local import LocalCluster, LocalJob
from dask_jobqueue.lsf import LSFJob
from dask_jobqueue.oar import OARJob
from dask_jobqueue.pbs import PBSJob
from dask_jobqueue.sge import SGEJob
from dask_jobqueue.slurm import SLURMJob

JOB_CLASSES = [s.job_class() for s in registry.SCHEDULERS]
CLUSTER_CLASSES = [s.cluster_class() for s in registry.SCHEDULERS]


def make_job(cls, **kwargs):
    kwargs.setdefault("cores", 8)
    kwargs.setdefault("memory", "28GB")
    if cls is HTCondorJob:
        kwargs.setdefault("disk", "1GB")
    if cls is OARJob:
        kwargs.setdefault("memory_per_core_property_name", "not_applicable")
    return cls("tcp://127.0.0.1:8786", name="worker-0", **kwargs)


def bash_syntax_ok(script: str) -> None:
    result = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("cls", JOB_CLASSES)
def test_worker_command_contents(cls):
    job = make_job(cls, processes=4, python="/opt/py/bin/python", death_timeout=30)
    script = job.job_script()
    assert "/opt/py/bin/python -m distributed.cli.dask_worker tcp://127.0.0.1:8786" in script
    assert "--name worker-0" in script
    assert "--nthreads 2" in script
    assert "--nworkers 4" in script
    assert "--memory-limit 6675MiB" in script
    assert "--nanny" in script
    assert "--death-timeout 30" in script


@pytest.mark.parametrize("cls", [c for c in JOB_CLASSES if c is not HTCondorJob])
def test_script_is_valid_bash_and_quotes_everything(cls):
    job = make_job(
        cls,
        processes=2,
        local_directory="/scratch/my dir; rm -rf ~",
        worker_extra_args=["--resources", "GPU=1 $(touch /tmp/pwned)"],
        job_script_prologue=["export A=1", ""],
        job_script_epilogue=["echo done"],
    )
    script = job.job_script()
    bash_syntax_ok(script)
    assert "'/scratch/my dir; rm -rf ~'" in script
    assert "'GPU=1 $(touch /tmp/pwned)'" in script
    assert script.index("export A=1") < script.index("dask_worker") < script.index("echo done")


def test_environment_references_are_expanded_by_the_job_shell(tmp_path):
    job = make_job(
        LocalJob,
        processes=1,
        local_directory="$TMPDIR/dask",
        job_script_prologue=["TMPDIR=/x"],
    )
    job.name = "test-$MY_VAR"
    line = job.worker_command_line()
    assert '"$TMPDIR/dask"' in line or "$TMPDIR/dask" in line
    out = subprocess.run(
        ["bash", "-c", f"MY_VAR=42; TMPDIR=/x; printf '%s\\n' {line}"],
        capture_output=True,
        text=True,
    ).stdout.split("\n")
    assert "test-42" in out
    assert "/x/dask" in out


@pytest.mark.parametrize("cls", JOB_CLASSES)
def test_missing_cores_or_memory(cls):
    cluster = cls.__name__.replace("Job", "Cluster")
    expected = (
        "You must specify how much cores and memory per job you want to use, for example:\n"
        f"cluster = {cluster}(cores=4, memory='24GB')"
    )
    with pytest.raises(ValueError) as info:
        cls("tcp://a:1", cores=4) if cls is not HTCondorJob else cls(
            "tcp://a:1", cores=4, disk="1GB"
        )
    assert str(info.value).startswith(expected)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"memory": "lots"}, "memory='lots' is not a size"),
        ({"memory": -5}, "must be a positive size"),
        ({"cores": 2, "processes": 4}, "processes=4 is more than cores=2"),
        ({"cores": 0}, "cores=0 must be >= 1"),
        ({"cores": "many"}, "cores='many' must be a whole number"),
        ({"processes": -1}, "processes=-1 must be >= 1"),
        ({"job_name": "a\nb"}, "job_name='a\\\\nb' is not a valid name"),
        ({"job_name": "x; rm -rf /"}, "is not a valid name"),
        ({"walltime": "forever"}, "walltime='forever' is not a walltime"),
        ({"job_extra_directives": ["--exclusive\n#SBATCH --x"]}, "must be a single line"),
        ({"job_extra_directives": "--exclusive"}, "must be a list of strings"),
        ({"worker_command": "dask worker; rm"}, "must be a Python module name"),
        ({"queue": "debug\nevil"}, "queue='debug\\\\nevil' must be a single line"),
    ],
)
def test_bad_input_is_rejected_with_the_keyword(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_job(SLURMJob, **kwargs)


def test_bad_input_is_rejected_before_anything_runs(tmp_path, monkeypatch):
    # A submit command that records being called: it must never run.
    marker = tmp_path / "called"
    fake = tmp_path / "sbatch"
    fake.write_text(f"#!/bin/sh\ntouch {marker}\necho 'Submitted batch job 1'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    with pytest.raises(ValueError, match="walltime"):
        SLURMCluster(cores=1, memory="1GB", walltime="1 day", n_workers=2)
    assert not marker.exists()


@pytest.mark.parametrize(
    "cls, walltime",
    [
        (SLURMJob, "90"),
        (SLURMJob, "1-12:00:00"),
        (SLURMJob, "10:00"),
        (PBSJob, "3600"),
        (PBSJob, "01:00:00"),
        (SGEJob, "01:00:00"),
        (LSFJob, "01:30"),
        (LSFJob, "90"),
        (OARJob, "2:00"),
        (OARJob, "1:30:00"),
    ],
)
def test_walltime_forms_the_scheduler_accepts(cls, walltime):
    assert walltime in make_job(cls, walltime=walltime).job_script()


@pytest.mark.parametrize(
    "cls, walltime",
    [(SLURMJob, "1:75:00"), (LSFJob, "01:00:00"), (PBSJob, "1-00:00"), (SGEJob, "2h")],
)
def test_walltime_forms_the_scheduler_rejects(cls, walltime):
    with pytest.raises(ValueError, match="is not a walltime this scheduler accepts: use"):
        make_job(cls, walltime=walltime)


def test_unknown_keyword_names_it():
    # 0.9's tests match "unexpected keyword argument.+<name>"
    with pytest.raises(ValueError, match=r"unexpected keyword argument.+'bogus'") as info:
        LocalCluster(cores=1, memory="1GB", bogus=1)
    assert "Accepted keywords:" in str(info.value) and "walltime" in str(info.value)
    with pytest.raises(ValueError, match=r"unexpected keyword argument 'queue'"):
        HTCondorCluster(cores=1, memory="1GB", disk="1GB", queue="q")
    # a job class given a wrong keyword directly: ValueError, and TypeError as Python's own
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'bogus': SLURMJob was"):
        make_job(SLURMJob, bogus=1)


def test_dashboard_address_and_host_are_redirected():
    with pytest.raises(ValueError, match="scheduler_options"):
        LocalCluster(cores=1, memory="1GB", dashboard_address=":1234")
    with pytest.raises(ValueError, match="scheduler_options"):
        LocalCluster(cores=1, memory="1GB", host="127.0.0.1")


def test_job_cls_is_required():
    with pytest.raises(ValueError, match="You need to specify a Job type. Two cases:") as info:
        JobQueueCluster(cores=1, memory="1GB")
    assert "'job_cls' class variable" in str(info.value)
    assert "through the 'job_cls' parameter" in str(info.value)


def test_job_without_config_name():
    class NoConfigJob(Job):
        submit_command = "true"

    phrase = "looks like you are trying to create a class that inherits from dask_jobqueue.core.Job"
    with pytest.raises(ValueError, match=phrase):
        NoConfigJob(cores=1, memory="1GB")
    with pytest.raises(ValueError, match=phrase):
        JobQueueCluster(job_cls=NoConfigJob, cores=1, memory="1GB")
    with pytest.raises(ValueError, match="config_name is not set for NoConfigJob"):
        NoConfigJob.default_config_name()
    assert SLURMJob.default_config_name() == "slurm"
    # config_name= makes such a class usable
    job = NoConfigJob(cores=1, memory="1GB", config_name="slurm")
    assert job.config_name == "slurm"


def test_unknown_config_name():
    with pytest.raises(ValueError, match="no section 'jobqueue.nope'"):
        make_job(SLURMJob, config_name="nope")


def test_default_processes():
    assert [default_processes(c) for c in (1, 2, 4, 6, 8, 24, 32, 7)] == [1, 2, 4, 3, 4, 6, 8, 7]
    job = make_job(SLURMJob, cores=6, memory="6GB")
    assert (job.worker_processes, job.worker_process_threads) == (3, 2)


def test_uneven_cores_keep_whole_threads_and_say_so():
    with pytest.warns(
        UserWarning, match="cores=5 is not a multiple of processes=2: each worker gets 2 thread"
    ):
        job = make_job(SLURMJob, cores=5, processes=2)
    assert job.worker_process_threads == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_job(SLURMJob, cores=6, processes=2)


def test_config_precedence_kwarg_over_yaml_over_default():
    with dask.config.set(
        {
            "jobqueue.slurm.cores": 4,
            "jobqueue.slurm.memory": "8GB",
            "jobqueue.slurm.queue": "fromyaml",
        }
    ):
        job = SLURMJob("tcp://a:1")
        assert (job.worker_cores, job.queue, job.walltime) == (4, "fromyaml", "00:30:00")
        job = SLURMJob("tcp://a:1", queue="fromkwarg", walltime="01:00:00")
        assert (job.queue, job.walltime) == ("fromkwarg", "01:00:00")


def test_named_config_profile():
    profile = {
        "cores": 2,
        "memory": "4GB",
        "queue": "gpu",
        "job-extra-directives": ["--gres=gpu:1"],
        "name": "gpu-worker",
    }
    with dask.config.set({"jobqueue.slurm-gpu": profile}):
        job = SLURMJob("tcp://a:1", config_name="slurm-gpu")
    script = job.job_script()
    assert "#SBATCH -p gpu" in script
    assert "#SBATCH --gres=gpu:1" in script
    assert "#SBATCH -J gpu-worker" in script


@pytest.mark.parametrize(
    "old, new, value",
    [
        ("extra", "worker_extra_args", ["--lifetime", "55m"]),
        ("env_extra", "job_script_prologue", ["module load python"]),
        ("job_extra", "job_extra_directives", ["--exclusive"]),
        ("header_skip", "job_directives_skip", ["--mem"]),
    ],
)
def test_deprecated_aliases_warn_once_and_apply(old, new, value):
    with pytest.warns(FutureWarning) as record:
        job = make_job(SLURMJob, **{old: value})
    assert len([w for w in record if issubclass(w.category, FutureWarning)]) == 1
    assert str(record[0].message).startswith(f"{old} has been renamed to {new}.")
    assert getattr(job, new) == value
    # the new name wins when both are given
    with pytest.warns(FutureWarning):
        job = make_job(SLURMJob, **{old: value, new: ["other"]})
    assert getattr(job, new) == ["other"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_job(SLURMJob, **{new: value})


def test_deprecated_alias_from_yaml_warns():
    with dask.config.set({"jobqueue.slurm.env-extra": ["module load x"]}):
        with pytest.warns(FutureWarning, match="env_extra has been renamed to job_script_prologue"):
            job = make_job(SLURMJob)
    assert job.job_script_prologue == ["module load x"]


@pytest.mark.parametrize("cls", [PBSJob, SLURMJob])
def test_project_becomes_account(cls):
    with pytest.warns(FutureWarning, match="project has been renamed to account"):
        job = make_job(cls, project="proj")
    assert job.account == "proj"
    assert "-A proj" in job.job_script()


def test_cluster_warns_once_per_construction():
    with pytest.warns(FutureWarning) as record:
        with LocalCluster(cores=1, memory="1GB", env_extra=["export A=1"]) as cluster:
            cluster.job_script()
            cluster.job_script()
    assert len([w for w in record if issubclass(w.category, FutureWarning)]) == 1


def test_directives_skip_and_extra():
    job = make_job(
        SLURMJob,
        job_directives_skip=["--mem", "-J "],
        job_extra_directives=["--mem-per-cpu=2G", "-J custom"],
    )
    header = job.job_header
    assert "--mem=" not in header
    assert "#SBATCH --mem-per-cpu=2G" in header
    assert "#SBATCH -J custom" in header
    assert "#SBATCH -J dask-worker" not in header


def test_custom_worker_command_drops_nworkers_and_nanny():
    job = make_job(SLURMJob, processes=2, worker_command="dask_cuda.cli")
    line = job.worker_command_line()
    assert "-m dask_cuda.cli" in line
    assert "--nworkers" not in line and "--nanny" not in line
    assert "--nthreads 4" in line


def test_no_nanny_and_interface_protocol():
    job = make_job(SLURMJob, nanny=False, interface="ib0", protocol="tcp://")
    line = job.worker_command_line()
    assert "--no-nanny" in line and "--interface ib0" in line and "--protocol tcp://" in line


def test_shebang_override():
    assert make_job(SLURMJob, shebang="#!/bin/sh").job_script().startswith("#!/bin/sh\n")


def test_log_directory_is_created_when_the_cluster_is_built(tmp_path, monkeypatch):
    """As in 0.9: ``log_directory`` exists once the cluster (or job) is built; removed
    meanwhile, it is created again at submission; nothing is created without it."""
    target = tmp_path / "logs" / "deeper"
    fake = tmp_path / "bin" / "sbatch"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\ntest -d {target} || exit 3\necho 'Submitted batch job 7'\n")
    fake.chmod(0o755)
    cancels = tmp_path / "cancelled"
    fake_scancel = fake.parent / "scancel"  # the job is closed below: never the real scancel
    fake_scancel.write_text(f'#!/bin/sh\necho "$@" >> {cancels}\n')
    fake_scancel.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:/usr/bin:/bin")
    local_logs = tmp_path / "local-logs"
    with LocalCluster(cores=1, memory="1GB", log_directory=str(local_logs)):
        assert local_logs.is_dir()
    cluster = SLURMCluster(cores=1, memory="1GB", log_directory=str(target))
    assert target.is_dir()
    cluster.close()
    target.rmdir()
    job = make_job(SLURMJob, log_directory=str(target))
    assert target.is_dir()
    assert f"#SBATCH -e {target}/dask-worker-%J.err" in job.job_script()
    target.rmdir()
    # the fake sbatch fails unless the directory exists when it runs
    assert asyncio.run(job.submit()) == "7"
    assert target.is_dir()
    asyncio.run(job.close())  # else the job's engine cancels it at interpreter exit
    assert cancels.read_text() == "7\n"
    # without log_directory nothing is created (here: in the current directory)
    monkeypatch.chdir(tmp_path / "bin")
    make_job(SLURMJob).job_script()
    with LocalCluster(cores=1, memory="1GB"):
        pass
    assert sorted(p.name for p in (tmp_path / "bin").iterdir()) == ["sbatch", "scancel"]


def test_log_directory_that_cannot_be_created_is_a_value_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match=r"log_directory='.*/file/logs' cannot be created"):
        make_job(SLURMJob, log_directory=str(blocker / "logs"))
    with pytest.raises(ValueError, match="log_directory='/proc/x' cannot be created"):
        LocalCluster(cores=1, memory="1GB", log_directory="/proc/x")


def test_job_id_parsing():
    job = make_job(SLURMJob)
    job.job_id_regexp = r"(?P<job_id>\d+)"  # the generic pattern of a user's own Job class
    for output, expected in [
        ("654321.admin01", "654321"),
        ("Request 654321.asdf was submitted to queue: standard.", "654321"),
        ("sbatch: Submitted batch job 654321", "654321"),
        ("654321;cluster", "654321"),
        ("Job <654321> is submitted to default queue <normal>.", "654321"),
        ("654321", "654321"),
    ]:
        assert job.job_id_from_submit_output(output) == expected
    with pytest.raises(ValueError, match="Could not parse the job id"):
        job.job_id_from_submit_output("no digits here")
    job.job_id_regexp = r"(\d+)"
    with pytest.raises(ValueError, match="'job_id' named group"):
        job.job_id_from_submit_output("123")


def test_scheduler_options_and_interface_precedence():
    with LocalCluster(
        cores=1, memory="1GB", scheduler_options={"dashboard_address": ":0", "host": "127.0.0.1"}
    ) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
    with dask.config.set(
        {"jobqueue.local.scheduler-options": {"host": "127.0.0.1", "dashboard_address": ":0"}}
    ):
        with LocalCluster(cores=1, memory="1GB") as cluster:
            assert "127.0.0.1" in cluster.scheduler_address


def test_interface_from_config_reaches_workers_and_scheduler():
    with dask.config.set({"jobqueue.local.interface": "lo"}):
        with LocalCluster(
            cores=1, memory="1GB", scheduler_options={"dashboard_address": ":0"}
        ) as cluster:
            assert "--interface lo" in cluster.job_script()
            assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")


def test_job_script_has_the_scheduler_address():
    with LocalCluster(
        cores=2, memory="2GB", scheduler_options={"dashboard_address": ":0"}
    ) as cluster:
        assert cluster.scheduler_address in cluster.job_script()
        assert cluster.job_name == "dask-worker"


def test_tls_temporary_credentials_are_written_privately(tmp_path):
    pytest.importorskip("cryptography")
    with LocalCluster(
        cores=1,
        memory="1GB",
        security=True,
        shared_temp_directory=str(tmp_path),
        scheduler_options={"dashboard_address": ":0"},
    ) as cluster:
        script = cluster.job_script()
        assert cluster.scheduler_address.startswith("tls://")
        files = sorted(tmp_path.iterdir())
        assert len(files) == 3
        for f in files:
            assert f.stat().st_mode & 0o077 == 0
            assert str(f) in script
        assert "--protocol tls://" in script
    assert not list(tmp_path.iterdir())


def test_import_has_no_side_effects_beyond_config(tmp_path):
    code = (
        "import signal, os\n"
        "before = signal.getsignal(signal.SIGINT)\n"
        "import dask_jobqueue, dask.config\n"
        "assert signal.getsignal(signal.SIGINT) is before\n"
        "assert dask.config.get('jobqueue.slurm.walltime') == '00:30:00'\n"
        "print(sorted(os.listdir(os.environ['DASK_CONFIG'])))\n"
    )
    cfg = tmp_path / "cfg"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"DASK_CONFIG": str(cfg), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "jobqueue.yaml" in out.stdout
    text = (cfg / "jobqueue.yaml").read_text()
    assert all(not line.strip() or line.startswith("#") for line in text.splitlines())
    # a config directory that cannot be created (even by root: its parent is a file)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", "import dask_jobqueue"],
        env={"DASK_CONFIG": str(blocker / "sub"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr


def test_registry_is_the_package_list():
    """Every scheduler of the registry is exported under its class name, and the package
    exports no cluster class the registry does not list."""
    import dask_jobqueue

    for scheduler in registry.SCHEDULERS:
        cls = scheduler.cluster_class()
        assert scheduler.job_class() is cls.job_cls
        assert cls.job_cls.config_name == scheduler.name
        if scheduler.is_batch_system:
            assert getattr(dask_jobqueue, scheduler.cluster) is cls
    exported = {name for name in dask_jobqueue.__all__ if name.endswith("Cluster")}
    listed = {s.cluster for s in registry.BATCH_SCHEDULERS}
    assert exported - {"JobQueueCluster"} == listed
    for name in dask_jobqueue.__all__:
        assert getattr(dask_jobqueue, name) is not None
    with pytest.raises(ValueError, match="unknown scheduler 'nope'; choose from pbs, moab"):
        registry.get("nope")


def test_import_registers_defaults_without_starting_dask():
    """``import dask_jobqueue`` registers the configuration defaults and imports neither
    distributed nor a cluster module; the dialects import without them too."""
    code = (
        "import sys, dask, dask_jobqueue\n"
        "import dask_jobqueue.dialects.slurm, dask_jobqueue.dialects.lsf\n"
        "assert dask.config.get('jobqueue.slurm.interface', 'missing') != 'missing'\n"
        "heavy = [m for m in ('distributed', 'dask_jobqueue.cluster', 'dask_jobqueue.engine')\n"
        "         if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
