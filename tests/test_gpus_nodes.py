"""``gpus=``, ``mem_per_gpu=`` and ``nodes=``: the header form of every scheduler, the worker
layout of the job script (run for real on the local backend), worker names and job counting,
and bad input refused with a ``ValueError`` naming the keyword."""

from __future__ import annotations

import os
import shlex
import subprocess
import warnings

import dask
import pytest
from distributed import Client

from dask_jobqueue import (
    HTCondorCluster,
    LSFCluster,
    MoabCluster,
    OARCluster,
    PBSCluster,
    SGECluster,
    SLURMCluster,
)
from dask_jobqueue.layout import one_line, worker_suffixes
from dask_jobqueue.local import LocalCluster
from dask_jobqueue.slurm import SLURMJob

from .scheduler_suite import NO_DASHBOARD
from .waiting import quick_polling, wait_until

EXTRA = {HTCondorCluster: {"disk": "1GB"}}


def header(cls, **kwargs) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        job = cls.job_cls(**{"cores": 2, "memory": "2GB", **EXTRA.get(cls, {}), **kwargs})
    return job.job_header.splitlines()


@pytest.mark.parametrize(
    ("cls", "line"),
    [
        (SLURMCluster, "#SBATCH --gpus=2"),
        (PBSCluster, "#PBS -l select=1:ncpus=2:mem=1908MB:ngpus=2"),
        (MoabCluster, "#PBS -l select=1:ncpus=2:mem=1908MB:ngpus=2"),
        (SGECluster, "#$ -l gpu=2"),
        (LSFCluster, '#BSUB -gpu "num=2"'),
        (HTCondorCluster, "request_gpus = 2"),
        (OARCluster, "#OAR -l /nodes=1/gpu=2,walltime=00:30:00"),
    ],
)
def test_gpus_header_form_of_every_scheduler(cls, line):
    assert line in header(cls, gpus=2)
    assert not [x for x in header(cls) if "gpu" in x.lower()]


@pytest.mark.parametrize(
    ("cls", "kwargs", "lines"),
    [
        (SLURMCluster, {}, ["#SBATCH --gpus=a100:2"]),
        (SLURMCluster, {"nodes": 2}, ["#SBATCH --gpus-per-node=a100:2"]),
        (
            SLURMCluster,
            {"mem_per_gpu": "1GB", "memory": None},
            ["#SBATCH --gpus=a100:2", "#SBATCH --mem-per-gpu=954M"],
        ),
        (LSFCluster, {}, ['#BSUB -gpu "num=2:gmodel=a100"']),
        (LSFCluster, {"nodes": 2}, ['#BSUB -gpu "num=2:gmodel=a100"']),
        (
            HTCondorCluster,
            {},
            ["request_gpus = 2", 'require_gpus = regexp("a100", DeviceName, "i")'],
        ),
    ],
)
def test_gpu_type_header_forms(cls, kwargs, lines):
    written = header(cls, gpus=2, gpu_type="a100", **kwargs)
    for line in lines:
        assert line in written
    # one GPU line each (the typed one replaces the untyped one)
    gpu_lines = [x for x in written if "gpu" in x.lower() and "mem-per-gpu" not in x]
    assert len(gpu_lines) == len([x for x in lines if "mem-per-gpu" not in x]), written


def test_gpu_type_dot_is_literal_in_htcondor_regexp():
    lines = header(HTCondorCluster, gpus=1, gpu_type="A100-SXM4-40GB.x")
    assert 'require_gpus = regexp("A100-SXM4-40GB[.]x", DeviceName, "i")' in lines


def test_gpu_type_from_yaml():
    with dask.config.set({"jobqueue.slurm.gpus": 1, "jobqueue.slurm.gpu-type": "h100"}):
        assert "#SBATCH --gpus=h100:1" in header(SLURMCluster)
    with dask.config.set({"jobqueue.lsf.gpus": 1, "jobqueue.lsf.gpu-type": "TeslaV100"}):
        assert '#BSUB -gpu "num=1:gmodel=TeslaV100"' in header(LSFCluster)


@pytest.mark.parametrize(
    ("cls", "advice"),
    [
        (PBSCluster, "resource_spec='select=1:ncpus=8:ngpus=2:gpu_model=a100'"),
        (MoabCluster, "PBS has no standard GPU-model resource"),
        (SGECluster, "Grid Engine GPU consumables are site-defined"),
        (OARCluster, "OAR has no standard GPU-model property"),
        (LocalCluster, "CUDA_VISIBLE_DEVICES"),
    ],
)
def test_gpu_type_refused_where_no_standard_form(cls, advice):
    """Refused by the cluster's constructor, before anything is submitted."""
    kwargs = {"cores": 2, "memory": "2GB", "gpus": 2, "gpu_type": "a100", **EXTRA.get(cls, {})}
    with pytest.raises(ValueError, match=r"^gpu_type='a100': \w+Job cannot request") as info:
        cls(**kwargs)
    assert advice in str(info.value)


@pytest.mark.parametrize(
    "cls", [SLURMCluster, LSFCluster, HTCondorCluster, PBSCluster, SGECluster, OARCluster]
)
def test_gpu_type_without_gpus_is_refused(cls):
    with pytest.raises(ValueError, match=r"gpu_type='a100' needs gpus="):
        cls.job_cls(cores=2, memory="2GB", gpu_type="a100", **EXTRA.get(cls, {}))


@pytest.mark.parametrize(
    "value",
    ["a100 -l x", 'a100"', "a100:2", "-x", "", "a$HOME", "a100\n#SBATCH -p x", 100, ["a100"]],
)
@pytest.mark.parametrize("cls", [SLURMCluster, LSFCluster, HTCondorCluster])
def test_gpu_type_value_is_checked(cls, value):
    with pytest.raises(ValueError, match=r"gpu_type=.* must be a GPU model name"):
        cls.job_cls(cores=2, memory="2GB", gpus=1, gpu_type=value, **EXTRA.get(cls, {}))


def test_sge_gpu_resource_name_is_configurable():
    assert "#$ -l gpus_total=2" in header(SGECluster, gpus=2, gpu_resource_name="gpus_total")
    with dask.config.set({"jobqueue.sge.gpu-resource-name": "ngpu"}):
        assert "#$ -l ngpu=1" in header(SGECluster, gpus=1)
    with pytest.raises(ValueError, match="gpu_resource_name"):
        header(SGECluster, gpus=1, gpu_resource_name="gpu -l h_rt=1")


def test_gpus_from_yaml():
    with dask.config.set({"jobqueue.slurm.gpus": 1}):
        assert "#SBATCH --gpus=1" in header(SLURMCluster)


def test_slurm_mem_per_gpu_replaces_mem():
    lines = header(SLURMCluster, gpus=2, mem_per_gpu="1GB", memory=None)
    assert "#SBATCH --mem-per-gpu=954M" in lines
    assert not [x for x in lines if x.startswith("#SBATCH --mem=")]


def test_mem_per_gpu_elsewhere_is_the_job_memory():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        job = PBSCluster.job_cls(cores=2, gpus=2, mem_per_gpu="1GB")
    assert job.worker_memory == 2_000_000_000
    assert "#PBS -l select=1:ncpus=2:mem=1908MB:ngpus=2" in job.job_header.splitlines()
    assert job.worker_process_memory_bytes == 1_000_000_000  # one GPU's memory per worker


def test_slurm_nodes_header_and_srun_line():
    job = SLURMJob(cores=4, memory="4GB", processes=2, nodes=3, name="job-7")
    lines = job.job_header.splitlines()
    assert "#SBATCH -N 3" in lines and "#SBATCH --ntasks-per-node=1" in lines
    assert "#SBATCH -n 1" not in lines
    script = job.job_script()
    srun = script[script.index("\nsrun ") + 1 :]
    assert srun.startswith(
        "srun --nodes=3 --ntasks=3 --ntasks-per-node=1 --cpus-per-task=4 --kill-on-bad-exit=1"
    )
    assert srun.endswith('\' dask-jobqueue-node "$dask_jobqueue_job"\n')
    assert "\ndask_jobqueue_job=job-7\nsrun " in script
    assert '--name "${dask_jobqueue_name}-${dask_jobqueue_node}"' in srun
    assert "--nworkers 2" in srun
    with_gpus = SLURMJob(cores=2, memory="4GB", gpus=2, nodes=2).job_header.splitlines()
    assert "#SBATCH --gpus-per-node=2" in with_gpus
    assert "#SBATCH --gpus=2" not in with_gpus


def test_slurm_nodes_script_runs_every_node_worker_named_by_node(tmp_path):
    """The srun line as bash runs it, with a fake srun that starts the node script once per
    node (SLURM_NODEID 0..2) and a fake python printing its worker's name and device."""
    job = SLURMJob(
        cores=2,
        memory="4GB",
        gpus=2,
        nodes=3,
        name="job-7",
        scheduler_check=False,
        python=str(tmp_path / "python"),
    )
    (tmp_path / "srun").write_text(
        '#!/bin/bash\nwhile [[ "$1" == -* ]]; do shift; done\n'
        'for n in 0 1 2; do SLURM_NODEID=$n CUDA_VISIBLE_DEVICES=4,5 "$@" & done; wait\n'
    )
    # each fake worker records itself, then waits for all six (when one worker ends, its
    # node's others are ended)
    out = tmp_path / "workers.txt"
    (tmp_path / "python").write_text(
        '#!/bin/bash\nwhile [ "$1" != --name ]; do shift; done\n'
        f'echo "$2 $CUDA_VISIBLE_DEVICES" >> {out}\n'
        f"for i in $(seq 100); do [ $(wc -l < {out}) -ge 6 ] && exit 0; sleep 0.1; done\n"
        "exit 1\n"
    )
    for name in ("srun", "python"):
        os.chmod(tmp_path / name, 0o755)
    script = tmp_path / "job.sh"
    script.write_text(job.job_script())
    done = subprocess.run(
        ["bash", str(script)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"},
        check=False,
    )
    assert sorted(out.read_text().splitlines()) == sorted(
        f"job-7-{n}-{i} {d}" for n in range(3) for i, d in ((0, "4"), (1, "5"))
    ), done.stderr


def test_gpu_workers_refuse_a_short_allocation(tmp_path):
    job = SLURMJob(cores=2, memory="4GB", gpus=2, scheduler_check=False, python="true")
    script = tmp_path / "job.sh"
    script.write_text(job.job_script())
    done = subprocess.run(
        ["bash", str(script)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "3"},
        check=False,
    )
    assert done.returncode == 1
    assert "gpus=2 but CUDA_VISIBLE_DEVICES=3 lists fewer devices" in done.stderr


def test_one_line_form_is_valid_bash():
    job = HTCondorCluster.job_cls(cores=2, memory="2GB", disk="1GB", gpus=2)
    command = job.worker_shell_command()
    assert "\n" not in command and command.startswith("bash -c ")
    done = subprocess.run(["bash", "-n", "-c", command], capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert one_line(["# c", "a &", "b &", "if x; then", "  y", "fi"]) == "a & b & if x; then y; fi"


def test_worker_suffixes_and_job_counting():
    assert worker_suffixes(1, 1) == []
    assert worker_suffixes(2, 1) == ["-0", "-1"]
    assert worker_suffixes(1, 3) == ["-0", "-1", "-2"]
    assert worker_suffixes(2, 2) == ["-0-0", "-0-1", "-1-0", "-1-1"]
    with SLURMCluster(
        cores=2, memory="2GB", processes=2, nodes=3, scheduler_options=NO_DASHBOARD
    ) as cluster:
        assert cluster.processes == 6  # workers per job
        cluster.scale(7)
        assert len(cluster.worker_spec) == 2  # whole jobs
        (name, *_) = cluster.worker_spec
        assert cluster.member_of_worker(f"{name}-2-1") is cluster
        cluster.scale(0)


def test_gpu_pool_shape_advertises_gpu():
    with SLURMCluster(cores=2, memory="2GB", scheduler_options=NO_DASHBOARD) as cluster:
        pool = cluster.add_pool("gpu", gpus=2, queue="gpu")
        assert pool.pool_shape().resources == {"GPU": 1.0}
        assert pool.pool_shape().threads_per_worker == 1
        assert cluster.pool_shape().resources == {}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"gpus": -1}, "gpus"),
        ({"gpus": 0}, "gpus"),
        ({"gpus": "two"}, "gpus"),
        ({"gpus": 2, "processes": 1}, "processes=1 with gpus=2"),
        ({"mem_per_gpu": "1GB", "gpus": 2}, "mem_per_gpu='1GB' together with memory"),
        ({"mem_per_gpu": "1GB", "memory": None}, "mem_per_gpu='1GB' needs gpus"),
        ({"nodes": 0}, "nodes"),
        ({"nodes": 2, "launcher": "mpiexec"}, "launcher='mpiexec'"),
        ({"job_mem": "2G", "gpus": 1, "mem_per_gpu": "1GB", "memory": None}, "job_mem"),
    ],
)
def test_bad_input_slurm(kwargs, match):
    kwargs = {"cores": 2, "memory": "2GB", **kwargs}
    with pytest.raises(ValueError, match=match):
        SLURMCluster(**kwargs)


@pytest.mark.parametrize("cls", [HTCondorCluster, LocalCluster])
def test_nodes_refused_where_no_launcher(cls):
    with pytest.raises(ValueError, match=r"nodes=2: .* cannot start workers on several nodes"):
        cls(cores=2, memory="2GB", nodes=2, **EXTRA.get(cls, {}))


def test_mem_per_gpu_with_memory_from_yaml_is_refused():
    with dask.config.set({"jobqueue.slurm.memory": "8GB"}):
        with pytest.raises(ValueError, match="jobqueue.slurm.memory='8GB'"):
            SLURMCluster(cores=2, gpus=1, mem_per_gpu="1GB")


def test_pbs_resource_spec_without_gpus_is_refused():
    with pytest.raises(ValueError, match="gpus=2 with resource_spec"):
        PBSCluster(cores=2, memory="2GB", gpus=2, resource_spec="select=1:ncpus=2")
    job = PBSCluster.job_cls(
        cores=2, memory="2GB", gpus=2, resource_spec="select=1:ncpus=2:ngpus=2"
    )
    assert "#PBS -l select=1:ncpus=2:ngpus=2" in job.job_header.splitlines()


def test_local_gpus_two_workers_one_device_each(no_stray_processes, tmp_path):
    """The job script's GPU layout run for real (local backend: no batch system sets
    CUDA_VISIBLE_DEVICES, so devices 0..gpus-1)."""
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    with (
        dask.config.set(quick_polling("local", "200ms", "1s")),
        pytest.MonkeyPatch.context() as mp,
    ):
        mp.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        assert "CUDA_VISIBLE_DEVICES" not in env
        with (
            LocalCluster(
                cores=2,
                memory="2GiB",
                gpus=2,
                log_directory=str(tmp_path),
                scheduler_options=NO_DASHBOARD,
            ) as cluster,
            Client(cluster) as client,
        ):
            cluster.scale(jobs=1)
            client.wait_for_workers(2, timeout=60)
            devices = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
            assert sorted(devices.values()) == ["0", "1"]
            workers = client.scheduler_info()["workers"].values()
            assert [w["resources"] for w in workers] == [{"GPU": 1}, {"GPU": 1}]
            (job,) = cluster.worker_spec
            assert sorted(str(w["name"]) for w in workers) == [f"{job}-0", f"{job}-1"]
            # a worker that dies ends the job whole: the other one is stopped too
            first = next(iter(devices))
            client.run(lambda: os._exit(1), workers=[first], nanny=True, on_error="ignore")

            def names() -> list[str]:
                return sorted(str(w["name"]) for w in client.scheduler_info()["workers"].values())

            # the replacement job's two workers, and none of the old job's
            assert wait_until(lambda: len(names()) == 2 and job not in names()[0], 90), names()
            (job2,) = cluster.worker_spec
            assert job2 != job
            assert names() == [f"{job2}-0", f"{job2}-1"]
            assert cluster.command_counts["submit"] == 2


@pytest.mark.parametrize(
    ("flavour", "cls", "kwargs", "form"),
    [
        pytest.param("lsf", LSFCluster, {}, '-gpu "num=2"', marks=pytest.mark.env("lsf")),
        pytest.param(
            "lsf",
            LSFCluster,
            {"gpu_type": "TeslaA100"},
            '-gpu "num=2:gmodel=TeslaA100"',
            marks=pytest.mark.env("lsf"),
        ),
        pytest.param(
            "htcondor",
            HTCondorCluster,
            {"disk": "1GB"},
            "request_gpus = 2",
            marks=pytest.mark.env("htcondor"),
        ),
        pytest.param(
            "htcondor",
            HTCondorCluster,
            {"disk": "1GB", "gpu_type": "a100"},
            'require_gpus = regexp("a100", DeviceName, "i")',
            marks=pytest.mark.env("htcondor"),
        ),
        pytest.param("torque", PBSCluster, {}, ":ngpus=2", marks=pytest.mark.env("torque")),
        pytest.param("moab", MoabCluster, {}, ":ngpus=2", marks=pytest.mark.env("moab")),
    ],
)
def test_gpus_on_emulators(flavour, cls, kwargs, form, tmp_path, monkeypatch):
    """The emulated batch systems accept each header form, and run one worker per GPU,
    each seeing one device (they set no CUDA_VISIBLE_DEVICES: devices 0..gpus-1)."""
    from .emulator import emulated_scheduler

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with emulated_scheduler(flavour, tmp_path / "home", kill_delay=1.0) as env:
        for key in ("PATH", "DJQ_EMULATOR_HOME"):
            monkeypatch.setenv(key, env[key])
        with (
            dask.config.set(quick_polling(cls.job_cls.config_name, "300ms", "1s")),
            cls(
                cores=2,
                memory="2GB",
                gpus=2,
                scheduler_options=NO_DASHBOARD,
                log_directory=str(tmp_path),
                **kwargs,
            ) as cluster,
            Client(cluster) as client,
        ):
            assert form in cluster.job_script()
            cluster.scale(jobs=1)
            client.wait_for_workers(2, timeout=60)
            devices = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
            assert sorted(devices.values()) == ["0", "1"]
            workers = client.scheduler_info()["workers"].values()
            assert [w["resources"] for w in workers] == [{"GPU": 1}, {"GPU": 1}]
            assert cluster.command_counts["submit"] == 1


FAKE_LAUNCHERS = {
    # pbsdsh -n I -- program args: runs the program (as tm_spawn does, no shell)
    PBSCluster: (
        "pbsdsh",
        'while [ "$1" != -- ]; do shift; done; shift; exec "$@"',
        lambda d: {"PBS_NODEFILE": str(d / "nodefile")},
        "h1\nh2\nh3\n",
    ),
    # blaunch -no-shell HOST program args: runs the program on HOST
    LSFCluster: (
        "blaunch",
        '[ "$1" = -no-shell ] || exit 9; FAKE_HOST=$2 exec "${@:3}"',
        lambda d: {"LSB_MCPU_HOSTS": "h1 2 h2 2 h3 2"},
        "",
    ),
    # qrsh -inherit -nostdin HOST COMMAND-LINE: the remote login shell reads the line
    SGECluster: (
        "qrsh",
        '[ "$1 $2" = "-inherit -nostdin" ] || exit 9; FAKE_HOST=$3 exec bash -c "$4"',
        lambda d: {"PE_HOSTFILE": str(d / "nodefile")},
        "h1 2 all.q@h1 UNDEFINED\nh2 2 all.q@h2 UNDEFINED\nh3 2 all.q@h3 UNDEFINED\n",
    ),
    # oarsh HOST COMMAND-LINE: ssh-like, the remote shell reads the command line
    OARCluster: (
        "oarsh",
        'FAKE_HOST=$1 exec bash -c "$2"',
        lambda d: {"OAR_NODEFILE": str(d / "nodefile")},
        "h1\nh1\nh2\nh2\nh3\nh3\n",
    ),
}


@pytest.mark.parametrize("cls", list(FAKE_LAUNCHERS))
def test_per_node_launchers_start_every_node_worker_named_by_node(cls, tmp_path):
    """The job script as bash runs it, with a fake launcher of the same calling convention
    as the real one and a fake python printing the worker's name and host: one worker
    command per node, named by the node's index, quoting intact."""
    tool, body, env_for, nodefile = FAKE_LAUNCHERS[cls]
    (tmp_path / "nodefile").write_text(nodefile)
    (tmp_path / tool).write_text(f"#!/bin/bash\n{body}\n")
    # each fake worker records itself, then waits for all three (the job script ends the
    # others when one worker ends)
    out = tmp_path / "workers.txt"
    (tmp_path / "python").write_text(
        '#!/bin/bash\nwhile [ "$1" != --name ]; do shift; done\n'
        f'echo "$2 ${{FAKE_HOST:-}}" >> {out}\n'
        f"for i in $(seq 100); do [ $(wc -l < {out}) -ge 3 ] && exit 0; sleep 0.1; done\n"
        "exit 1\n"
    )
    for name in (tool, "python"):
        os.chmod(tmp_path / name, 0o755)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        job = cls.job_cls(
            cores=2,
            memory="2GB",
            processes=1,
            nodes=3,
            name="it's job-7",
            scheduler_check=False,
            python=str(tmp_path / "python"),
            **({"parallel_environment": "mpi"} if cls is SGECluster else {}),
        )
    script = job._body() if cls is OARCluster else job.job_script()
    done = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **env_for(tmp_path), "PATH": f"{tmp_path}:{os.environ['PATH']}"},
        check=False,
    )
    hosts = [""] * 3 if cls is PBSCluster else ["h1", "h2", "h3"]
    expected = sorted(f"it's job-7-{n} {h}".rstrip() for n, h in enumerate(hosts))
    seen = out.read_text().splitlines() if out.exists() else []
    assert sorted(line.rstrip() for line in seen) == expected, done.stderr


@pytest.mark.parametrize(
    ("cls", "lines"),
    [
        (PBSCluster, ["#PBS -l select=3:ncpus=2:mem=1908MB", "#PBS -l place=scatter"]),
        (LSFCluster, ["#BSUB -n 6", '#BSUB -R "span[ptile=2]"']),
        (OARCluster, ["#OAR -l /nodes=3/core=2,walltime=00:30:00"]),
        (SGECluster, ["#$ -pe mpi 6"]),
    ],
)
def test_nodes_header_forms(cls, lines):
    got = header(cls, nodes=3, **({"parallel_environment": "mpi"} if cls is SGECluster else {}))
    assert all(line in got for line in lines), got
    assert "span[hosts=1]" not in " ".join(got)


def test_pbs_nodes_with_resource_spec_of_one_chunk_is_refused():
    with pytest.raises(ValueError, match="nodes=3 with resource_spec"):
        PBSCluster(cores=2, memory="2GB", nodes=3, resource_spec="select=1:ncpus=2")


def test_gpus_page_examples_are_what_the_code_writes():
    """Every ``XCluster(...)`` line of docs/gpus.rst followed by ``# <header line>`` comments:
    those lines are in that cluster's header."""
    import re
    from pathlib import Path

    import dask_jobqueue

    text = (Path(__file__).parent.parent / "docs" / "gpus.rst").read_text()
    examples = re.findall(r"^    ((\w+Cluster)\((.*)\))\n((?:    # .*\n)+)", text, re.MULTILINE)
    assert len(examples) == 7
    for _, name, arguments, comments in examples:
        cls = getattr(dask_jobqueue, name)
        kwargs = eval(f"dict({arguments})")  # the page's own literal keywords
        lines = header(cls, **kwargs)
        for comment in comments.splitlines():
            assert comment.strip()[2:] in lines, (name, comment, lines)


def test_nodes_job_array_task_names_its_workers(tmp_path):
    """A job array of nodes jobs: each task's script picks its job's name (set on a line of
    its own, before the launcher's command that spans several lines)."""
    from dask_jobqueue.engine import array_script
    from dask_jobqueue.slurm import SLURM_ARRAYS

    job = SLURMJob(
        cores=1,
        memory="1GB",
        processes=1,
        nodes=2,
        name="x",
        scheduler_check=False,
        python=str(tmp_path / "python"),
    )
    out = tmp_path / "workers.txt"
    (tmp_path / "srun").write_text(
        '#!/bin/bash\nwhile [[ "$1" == -* ]]; do shift; done\n'
        'for n in 0 1; do SLURM_NODEID=$n "$@" & done; wait\n'
    )
    (tmp_path / "python").write_text(
        '#!/bin/bash\nwhile [ "$1" != --name ]; do shift; done\n'
        f'echo "$2" >> {out}\n'
        f"for i in $(seq 100); do [ $(wc -l < {out}) -ge 2 ] && exit 0; sleep 0.1; done\n"
        "exit 1\n"
    )
    for name in ("srun", "python"):
        os.chmod(tmp_path / name, 0o755)
    script = array_script(job, ["job-a", "job-b"], SLURM_ARRAYS)
    done = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        env={
            **os.environ,
            "SLURM_ARRAY_TASK_ID": "1",
            "PATH": f"{tmp_path}:{os.environ['PATH']}",
        },
        check=False,
    )
    assert sorted(out.read_text().splitlines()) == ["job-b-0", "job-b-1"], done.stderr


def test_sge_gpus_with_nodes_ask_one_gpu_per_slot():
    # the job is a parallel job of cores x nodes slots, and Grid Engine books a consumable
    # per slot: -l gpu=2 -pe mpi 4 would ask for 8 GPUs
    got = header(SGECluster, gpus=2, nodes=2, parallel_environment="mpi")
    assert "#$ -l gpu=1" in got and "#$ -pe mpi 4" in got
    assert "#$ -l gpu=2" in header(SGECluster, gpus=2)  # no PE: booked once
    with pytest.raises(ValueError, match=r"gpus=1 with nodes=2 and cores=2: .*set cores=1"):
        header(SGECluster, gpus=1, nodes=2, parallel_environment="mpi")


def test_sge_nodes_need_a_parallel_environment():
    with pytest.raises(ValueError, match="nodes=2 needs parallel_environment="):
        SGECluster(cores=2, memory="2GB", nodes=2)
    with pytest.raises(ValueError, match="parallel_environment"):
        SGECluster(cores=2, memory="2GB", nodes=2, parallel_environment="mpi -l x=1")


@pytest.mark.parametrize(
    ("extra", "advertised"),
    [
        ([], "GPU=1"),
        (["--resources", "MEM=2e9"], "MEM=2e9 GPU=1"),
        (["--resources=MEM=2e9,SSD=1", "--lifetime", "1h"], "MEM=2e9 SSD=1 GPU=1"),
        (["--resources", "GPU=2 MEM=1"], "GPU=2 MEM=1"),  # the user's own GPU count stays
    ],
)
def test_gpu_workers_keep_the_resources_the_user_gave(extra, advertised):
    """A worker takes only its last ``--resources``: GPU=1 joins the user's, never replaces
    them; the pool's shape (what adapt places demand by) is what the worker advertises."""
    with SLURMCluster(
        cores=2, memory="2GB", gpus=2, worker_extra_args=extra, scheduler_options=NO_DASHBOARD
    ) as cluster:
        workers = [
            shlex.split(line) for line in cluster.job_script().splitlines() if " -m " in line
        ]
        assert len(workers) == 2  # one per GPU
        for tokens in workers:
            assert tokens.count("--resources") == 1
            assert not any(t.startswith("--resources=") for t in tokens)
            assert tokens[tokens.index("--resources") + 1] == advertised
            assert ("--lifetime" in tokens) == ("--lifetime" in extra)
        expected = dict(item.split("=") for item in advertised.split())
        assert cluster.pool_shape().resources == {k: float(v) for k, v in expected.items()}
