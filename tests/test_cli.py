"""The `dask-jobqueue` command line: help, errors, job-script, config provenance, check."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from dask_jobqueue.cli import effective_settings

SUBCOMMANDS = ["demo", "job-script", "config", "check", "status", "cleanup"]


def run_cli(*args: str, env: dict | None = None, timeout: float = 180, cwd=None):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "dask_jobqueue", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=cwd,
    )


def test_top_level_help_names_the_command_and_subcommands():
    result = run_cli("--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: dask-jobqueue ")
    for name in SUBCOMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_each_subcommand_has_help(name):
    result = run_cli(name, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: dask-jobqueue {name}")


@pytest.mark.parametrize(
    "args, expected",
    [
        (["demo", "--jobs", "0"], "--jobs: '0' must be at least 1"),
        (["demo", "--processes", "two"], "--processes: 'two' is not a whole number"),
        (["job-script", "nosuch"], "invalid choice: 'nosuch'"),
        # Messages from the cluster classes: only the keyword and value are relied upon here.
        (["job-script", "slurm", "--cores", "2", "--memory", "lots"], "'lots'"),
        (["job-script", "slurm", "--cores", "-2"], "--cores: '-2' must be at least 1"),
        (
            ["job-script", "slurm", "--cores", "2", "--memory", "2GB", "--config-name", "nosuch"],
            "nosuch",
        ),
        (["job-script", "sge", "--cores", "2", "--memory", "2GB", "--account", "a1"], "account"),
        (["check", "slurm", "--timeout", "soon"], "--timeout: 'soon' is not a duration"),
        (["check", "slurm", "--timeout", "0"], "--timeout: '0' must be a positive duration"),
        (["config", "nosuch"], "no section 'jobqueue.nosuch'"),
        (["check", "slurm", "--config-name", "nosuch"], "no section 'jobqueue.nosuch'"),
        (["bogus"], "invalid choice: 'bogus'"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, expected):
    result = run_cli(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert expected in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("dask-jobqueue"), last
    assert expected in last


def test_bad_interface_is_bad_input_exit_2():
    # docs/cli.rst: bad input exits with status 2 (it was 1, as if the scheduler had failed)
    result = run_cli(
        "job-script", "slurm", "--cores", "1", "--memory", "1GB", "--interface", "nosuch9"
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "dask-jobqueue job-script: error: --interface nosuch9: 'nosuch9' is not a valid "
            "network interface"
        )
    )


def test_cli_page_says_bad_input_exits_2():
    text = (Path(__file__).parents[1] / "docs" / "cli.rst").read_text()
    assert "Bad input is reported on one line and exits with\nstatus 2" in text


@pytest.mark.parametrize(
    "args, expected",
    [
        # was: "for example: cluster = SLURMCluster(cores=8, memory='24GB')"
        (
            ["check", "slurm"],
            "no cores or memory per job: give --cores 8 --memory 24GB (your values), or set "
            "jobqueue.slurm.cores, jobqueue.slurm.memory in jobqueue.yaml",
        ),
        (
            ["check", "htcondor", "--cores", "1", "--memory", "1GB"],
            "no disk per job: give --disk 10GB (your values), or set jobqueue.htcondor.disk",
        ),
        (
            ["job-script", "slurm", "--cores", "2", "--memory", "1"],
            "--memory '1' (1 bytes) is below the minimum of 1 MiB",
        ),
        (
            ["job-script", "slurm", "--cores", "2", "--memory", "2GB", "--job-name", "a b"],
            "--job-name 'a b' is not a valid name",
        ),
        (["job-script", "slurm", "--disk", "1GB"], "--disk is for htcondor only"),
    ],
)
def test_errors_speak_in_flags(args, expected, tmp_path):
    result = run_cli(*args, env={"DASK_CONFIG": str(tmp_path)})
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"dask-jobqueue {args[0]}: error: {expected}"), last
    assert "Cluster(" not in result.stderr


def test_bare_job_script_works_on_a_fresh_install(tmp_path):
    # the README shows `dask-jobqueue job-script slurm` without flags
    readme = " ".join((Path(__file__).parents[1] / "README.rst").read_text().split())
    assert (
        "``dask-jobqueue job-script slurm`` prints the job script your settings give (with no "
        "size set anywhere yet, that of a 1-core, 2 GB job, and a line on stderr saying so)"
    ) in readme
    result = run_cli("job-script", "slurm", env={"DASK_CONFIG": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert (
        "dask-jobqueue job-script: no cores or memory set (flags or jobqueue.yaml): showing "
        "--cores 1 --memory 2GB"
    ) in result.stderr.splitlines()
    assert "#SBATCH --cpus-per-task=1" in result.stdout.splitlines()
    assert "--death-timeout 60" in result.stdout
    # a size from the configuration is used, and only the missing one is filled in
    (tmp_path / "site.yaml").write_text("jobqueue:\n  slurm:\n    cores: 4\n")
    result = run_cli("job-script", "slurm", env={"DASK_CONFIG": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "showing --memory 2GB" in result.stderr
    assert "#SBATCH --cpus-per-task=4" in result.stdout.splitlines()


def test_config_of_a_custom_section_says_where_the_other_keys_come_from(tmp_path):
    (tmp_path / "site.yaml").write_text("jobqueue:\n  mysite:\n    cores: 4\n")
    result = run_cli("config", "mysite", env={"DASK_CONFIG": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert (
        "fills in the keys it does not set from its built-in section, e.g. "
        "SLURMCluster(config_name='mysite') from `dask-jobqueue config slurm`'s defaults"
        in " ".join(result.stdout.split())
    )
    built_in = run_cli("config", "slurm", env={"DASK_CONFIG": str(tmp_path)})
    assert "a section of your own" not in built_in.stdout


def test_htcondor_disk_flag(tmp_path):
    result = run_cli(
        "job-script", "htcondor", "--cores", "1", "--memory", "1GB", "--disk", "3GB",
        env={"DASK_CONFIG": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "no disk" not in result.stderr
    assert "MY.DaskWorkerDisk = 3000000000" in result.stdout.splitlines()


def test_job_script_combines_flags_and_config(tmp_path):
    (tmp_path / "site.yaml").write_text(
        textwrap.dedent(
            """\
            jobqueue:
              gpu:
                cores: 8
                memory: 64GB
                processes: 2
                queue: gpu
                walltime: "04:00:00"
                job-extra-directives: ["--gres=gpu:1"]
            """
        )
    )
    result = run_cli(
        "job-script", "slurm", "--config-name", "gpu", "--account", "proj42",
        "--job-extra-directive=--constraint=a100",
        env={"DASK_CONFIG": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    script = result.stdout
    assert script.startswith("#!")
    for line in [
        "#SBATCH -p gpu",
        "#SBATCH -A proj42",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH -t 04:00:00",
        "#SBATCH --constraint=a100",
    ]:
        assert line in script.splitlines(), script
    # A flag replaces the YAML list, as a keyword does.
    assert "--gres=gpu:1" not in script
    assert "--nworkers 2" in script and "--nthreads 4" in script


def test_job_script_for_every_scheduler():
    prefixes = {
        "pbs": "#PBS",
        "moab": "#PBS",
        "slurm": "#SBATCH",
        "sge": "#$",
        "lsf": "#BSUB",
        "oar": "#OAR",
    }
    for scheduler, prefix in prefixes.items():
        result = run_cli("job-script", scheduler, "--cores", "2", "--memory", "4GB")
        assert result.returncode == 0, (scheduler, result.stderr)
        assert any(line.startswith(prefix) for line in result.stdout.splitlines()), scheduler
        assert "distributed.cli.dask_worker" in result.stdout


def test_effective_settings_reports_each_source(tmp_path):
    first = tmp_path / "a-site.yaml"
    second = tmp_path / "b-user.yaml"
    first.write_text("jobqueue:\n  slurm:\n    cores: 8\n    queue: batch\n")
    second.write_text("jobqueue:\n  slurm:\n    queue: short\n")
    settings = effective_settings(
        "slurm", paths=[str(tmp_path)], environ={"DASK_JOBQUEUE__SLURM__MEMORY": "16GB"}
    )
    assert settings["cores"] == (8, str(first))
    assert settings["queue"] == ("short", str(second))  # the later file wins, as in dask
    assert settings["memory"] == ("16GB", "environment variable DASK_JOBQUEUE__SLURM__MEMORY")
    value, source = settings["walltime"]
    assert value == "00:30:00" and source.startswith("built-in default (")
    assert source.endswith("jobqueue.yaml)")


def test_config_command_shows_value_and_origin(tmp_path):
    (tmp_path / "jobqueue.yaml").write_text("jobqueue:\n  pbs:\n    queue: regular\n")
    result = run_cli(
        "config", "pbs",
        env={"DASK_CONFIG": str(tmp_path), "DASK_JOBQUEUE__PBS__CORES": "24"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert "regular" in lines["queue"] and str(tmp_path / "jobqueue.yaml") in lines["queue"]
    assert "24" in lines["cores"] and "DASK_JOBQUEUE__PBS__CORES" in lines["cores"]
    assert lines["walltime"].rstrip().endswith("# default")
    summary = run_cli("config", env={"DASK_CONFIG": str(tmp_path)})
    assert summary.returncode == 0
    assert "pbs: set here: queue" in summary.stdout
    assert str(tmp_path) in summary.stdout


# ---------------------------------------------------------------------- check, local backend


def test_check_succeeds_on_local_backend(no_stray_processes):
    result = run_cli("check", "local", "--cores", "1", "--memory", "1GB", "--timeout", "60")
    assert result.returncode == 0, result.stderr
    assert "OK: job " in result.stdout
    assert "queue wait " in result.stdout and "after the job started" in result.stdout


def test_check_explains_a_job_that_dies(tmp_path, no_stray_processes):
    result = run_cli(
        "check", "local", "--cores", "1", "--memory", "1GB", "--timeout", "60",
        "--python", "/nonexistent/python", "--log-directory", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 1
    assert "FAILED: the job ended before its worker connected" in result.stderr
    assert "exit code 127" in result.stderr
    assert "/nonexistent/python: No such file or directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_explains_a_worker_that_never_connects(tmp_path, no_stray_processes):
    fake_python = tmp_path / "python"
    fake_python.write_text("#!/bin/sh\nsleep 60\n")
    fake_python.chmod(0o755)
    result = run_cli(
        "check", "local", "--cores", "1", "--memory", "1GB", "--timeout", "4",
        "--python", str(fake_python), "--interface", "lo",
    )  # fmt: skip
    assert result.returncode == 1
    assert "has been running for" in result.stderr
    assert "did not connect within 4s" in result.stderr
    assert "interface 'lo'" in result.stderr
    assert "scheduler at tcp://127.0.0.1:" in result.stderr


# ---------------------------------------------------------------------- check, real Slurm


def _squeue_names() -> set[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True).stdout
    return set(out.split())


@pytest.mark.env("slurm")
def test_check_on_slurm_succeeds_and_cancels(tmp_path):
    name = f"cli-ok-{uuid.uuid4().hex[:6]}"
    result = run_cli(
        "check", "slurm", "--cores", "1", "--memory", "1GB", "--job-name", name,
        "--timeout", "120", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "OK: job " in result.stdout
    assert name not in _squeue_names()


@pytest.mark.env("slurm")
def test_check_on_slurm_reports_a_rejected_job(tmp_path):
    result = run_cli(
        "check", "slurm", "--cores", "1", "--memory", "1GB", "--queue", "no-such-partition",
        "--job-name", "cli-rejected", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    assert "FAILED: the batch system rejected the job" in result.stderr
    assert "invalid partition specified: no-such-partition" in result.stderr


@pytest.mark.env("slurm")
def test_check_on_slurm_reports_a_job_that_dies(tmp_path):
    name = f"cli-dies-{uuid.uuid4().hex[:6]}"
    result = run_cli(
        "check", "slurm", "--cores", "1", "--memory", "1GB", "--job-name", name,
        "--python", "/nonexistent/python", "--log-directory", str(tmp_path), "--timeout", "120",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    assert "FAILED: the job ended before its worker connected" in result.stderr
    assert "exit code 127" in result.stderr
    assert "/nonexistent/python: No such file or directory" in result.stderr


@pytest.mark.env("slurm")
def test_check_on_slurm_reports_the_pending_reason(tmp_path):
    name = f"cli-held-{uuid.uuid4().hex[:6]}"
    result = run_cli(
        "check", "slurm", "--cores", "1", "--memory", "1GB", "--job-name", name,
        "--job-extra-directive=--hold", "--timeout", "8", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    assert "is still held after 8s" in result.stderr
    assert "JobHeldUser" in result.stderr
    assert name not in _squeue_names()


@pytest.mark.env("slurm")
def test_check_on_slurm_diagnoses_an_unreachable_scheduler(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"  # nobody listens there
    (tmp_path / "site.yaml").write_text(
        f"jobqueue:\n  slurm:\n    scheduler-options:\n      contact_address: {address!r}\n"
    )
    name = f"cli-unreach-{uuid.uuid4().hex[:6]}"
    result = run_cli(
        "check", "slurm", "--cores", "1", "--memory", "1GB", "--job-name", name,
        "--timeout", "120", env={"DASK_CONFIG": str(tmp_path)}, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "FAILED: the job could not reach the scheduler" in result.stderr
    assert f"cannot reach the Dask scheduler at {address} from node " in result.stderr
    assert "set interface (e.g. ib0)" in result.stderr
    assert "scheduler_options contact_address or host" in result.stderr
    assert name not in _squeue_names()


def test_console_script_entry_point_is_the_cli():
    setup_py = Path(__file__).parents[1] / "setup.py"
    assert '"dask-jobqueue=dask_jobqueue.cli:main"' in setup_py.read_text()


def test_check_without_the_batch_commands(tmp_path):
    """On a machine without bsub: the check says so instead of blaming the job's settings."""
    result = run_cli(
        "check", "lsf", "--cores", "1", "--memory", "1GB",
        env={"PATH": str(tmp_path)}, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    # the submit command carries the job's tag (bsub -Jd djq1....)
    assert re.search(
        r"FAILED: could not submit: `bsub -Jd djq1\.\S+` could not be run: program not found\.",
        result.stderr,
    )
    assert "Traceback" not in result.stderr
