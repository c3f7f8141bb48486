"""Tests of the batch-system emulators in ``tests.emulator``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from .emulator import (
    EmulatorEnv,
    emulated_scheduler,
    inject_fault,
    job_record,
    kill_all,
    list_jobs,
    surviving_processes,
    wait_for_job,
)
from .emulator.common import pid_alive
from .emulator.htcondor import parse_arguments, parse_environment


class Emu:
    """An emulated scheduler plus helpers to run its commands in ``cwd``."""

    def __init__(self, env: EmulatorEnv, cwd: Path) -> None:
        self.env = env
        self.cwd = cwd
        self.home = env.home

    def run(
        self, *args: str, input: str | None = None, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            list(args),
            env=self.env,
            cwd=self.cwd,
            input=input,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if check:
            assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        return proc

    def write(self, name: str, text: str) -> str:
        path = self.cwd / name
        path.write_text(text)
        return str(path)


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Callable[..., Emu]]:
    homes: list[Path] = []

    def make(flavour: str, **kwargs: Any) -> Emu:
        kwargs.setdefault(
            "kill_delay", 3.0
        )  # a job ends on TERM well within this, also on a loaded machine
        kwargs.setdefault("poll_interval", 0.05)
        home = tmp_path / f"home-{flavour}-{len(homes)}"
        env = emulated_scheduler(flavour, home, **kwargs)
        homes.append(home)
        work = tmp_path / f"work-{len(homes)}"
        work.mkdir()
        return Emu(env, work)

    yield make
    for home in homes:
        kill_all(home)
        assert surviving_processes(home) == []


def until(predicate: Callable[[], Any], timeout: float = 8.0) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached")


PBS_SCRIPT = """#!/usr/bin/env bash
#PBS -N {name}
#PBS -l select=1:ncpus={cores}:mem=1GB
#PBS -l walltime={walltime}
{body}
"""
TORQUE_SCRIPT = """#!/usr/bin/env bash
#PBS -N {name}
#PBS -l nodes=1:ppn={cores}
#PBS -l walltime={walltime}
{body}
"""
LSF_SCRIPT = """#!/usr/bin/env bash
#BSUB -J {name}
#BSUB -n {cores}
#BSUB -R "span[hosts=1]"
#BSUB -M 1000
#BSUB -W {walltime}
#BSUB -o {name}.%J.out
{body}
"""
CONDOR_SUBMIT = """universe = vanilla
executable = /bin/sh
arguments = "-c '{body}'"
environment = "FOO=bar"
output = {name}.$(Cluster).out
error = {name}.$(Cluster).err
log = {name}.log
MY.DaskWorkerCores = {cores}
MY.DaskWorkerMemory = 1073741824
request_cpus = MY.DaskWorkerCores
request_memory = floor(MY.DaskWorkerMemory / 1048576)
{extra}
queue
"""


def submit(
    emu: Emu,
    body: str = "sleep 30",
    cores: int = 1,
    walltime: str | None = None,
    name: str = "job",
    extra: str = "",
    args: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    flavour = emu.env.flavour
    if flavour == "htcondor":
        path = emu.write(
            f"{name}.sub", CONDOR_SUBMIT.format(body=body, cores=cores, name=name, extra=extra)
        )
        return emu.run("condor_submit", *args, path)
    if flavour == "lsf":
        text = LSF_SCRIPT.format(name=name, cores=cores, walltime=walltime or "01:00", body=body)
        return emu.run("bsub", *args, input=text)
    template = PBS_SCRIPT if flavour == "pbs" else TORQUE_SCRIPT
    path = emu.write(
        f"{name}.sh",
        template.format(name=name, cores=cores, walltime=walltime or "01:00:00", body=body),
    )
    return emu.run("msub" if flavour == "moab" else "qsub", *args, path)


def job_key(emu: Emu, proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr
    return re.findall(r"\d+", proc.stdout)[-1 if emu.env.flavour != "lsf" else 0] + (
        ".0" if emu.env.flavour == "htcondor" else ""
    )


# --------------------------------------------------------------------------- submission
@pytest.mark.parametrize(
    "flavour, pattern",
    [
        ("pbs", r"\d+\.server\n"),
        ("torque", r"\d+\.server\n"),
        ("moab", r"\n\d+\n"),
        ("lsf", r"Job <\d+> is submitted to queue <normal>\.\n"),
        ("htcondor", r"Submitting job\(s\)\.\n1 job\(s\) submitted to cluster \d+\.\n"),
    ],
)
def test_submit_prints_real_format(
    emulator: Callable[..., Emu], flavour: str, pattern: str
) -> None:
    emu = emulator(flavour)
    start = time.time()
    proc = submit(emu)
    assert time.time() - start < 3
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(pattern, proc.stdout), proc.stdout
    assert proc.stderr == ""


def test_lsf_bsub_script_argument(emulator: Callable[..., Emu]) -> None:
    emu = emulator("lsf")
    path = emu.write("s.sh", LSF_SCRIPT.format(name="arg", cores=1, walltime="10", body="echo ok"))
    proc = emu.run("bsub", path, check=True)
    key = re.findall(r"\d+", proc.stdout)[0]
    job = wait_for_job(emu.home, key)
    assert job["name"] == "arg" and job["walltime"] == 600
    assert "ok" in (emu.cwd / f"arg.{key}.out").read_text()


@pytest.mark.parametrize(
    "flavour, tool, code, message",
    [
        ("pbs", "qsub", 170, "qsub: Unknown queue"),
        ("torque", "qsub", 170, "qsub: submit error (Unknown queue MSG=requested queue not found)"),
        ("moab", "msub", 1, "ERROR:  cannot submit job - invalid class specified 'nope'"),
        ("lsf", "bsub", 255, "nope: No such queue. Job not submitted."),
    ],
)
def test_bad_queue_rejected(
    emulator: Callable[..., Emu], flavour: str, tool: str, code: int, message: str
) -> None:
    emu = emulator(flavour)
    proc = submit(emu, args=("-q", "nope"))
    assert (proc.returncode, proc.stderr.strip(), proc.stdout) == (code, message, "")
    assert list_jobs(emu.home) == []


@pytest.mark.parametrize(
    "flavour, code, message",
    [
        ("pbs", 166, "qsub: Illegal attribute or resource value Resource_List.walltime"),
        (
            "torque",
            166,
            "qsub: submit error (Illegal attribute or resource value Resource_List.walltime)",
        ),
        ("lsf", 255, "1:xx: Bad RUNLIMIT specification. Job not submitted."),
    ],
)
def test_bad_walltime_rejected(
    emulator: Callable[..., Emu], flavour: str, code: int, message: str
) -> None:
    emu = emulator(flavour)
    proc = submit(emu, walltime="1:xx")
    assert (proc.returncode, proc.stderr.strip()) == (code, message)


def test_pbs_other_validation(emulator: Callable[..., Emu]) -> None:
    emu = emulator("pbs")
    path = emu.write("j.sh", "#PBS -l foo=1\necho\n")
    proc = emu.run("qsub", path)
    assert (
        proc.returncode == 187 and proc.stderr.strip() == "qsub: Unknown resource Resource_List.foo"
    )
    proc = emu.run("qsub", "-l", "select=1:ncpus=x", path.replace("j.sh", "missing.sh"))
    assert proc.returncode == 2
    proc = emu.run("qsub", "-l", "select=1:ncpus=x", "-", input="echo\n")
    assert proc.returncode == 2  # '-' is not a script file
    proc = emu.run("qsub", "-l", "select=1:ncpus=x", input="echo\n")
    assert (proc.returncode, proc.stderr.strip()) == (
        166,
        "qsub: Illegal attribute or resource value select.ncpus",
    )
    proc = emu.run("qsub", "-Z", input="echo\n")
    assert proc.returncode == 2 and "invalid option -- 'Z'" in proc.stderr
    proc = emu.run("qsub", "-j", "xx", input="echo\n")
    assert proc.returncode == 2 and proc.stderr.startswith("qsub: illegal -j value")


def test_lsf_other_validation(emulator: Callable[..., Emu]) -> None:
    emu = emulator("lsf")
    assert emu.run("bsub", "-n", "0", input="echo\n").returncode == 255
    proc = emu.run("bsub", "-R", "spam[hosts=1]", input="echo\n")
    assert (proc.returncode, proc.stderr.strip()) == (
        255,
        "Bad resource requirement syntax. Job not submitted.",
    )
    proc = emu.run("bsub", "-M", "lots", input="echo\n")
    assert proc.returncode == 255 and "Job not submitted." in proc.stderr


def test_htcondor_validation(emulator: Callable[..., Emu]) -> None:
    emu = emulator("htcondor")
    path = emu.write("a.sub", "executable = /no/such/exe\nqueue\n")
    proc = emu.run("condor_submit", path)
    assert (
        proc.returncode == 1 and "ERROR: Executable file /no/such/exe does not exist" in proc.stderr
    )
    path = emu.write("b.sub", "arguments = x\nqueue\n")
    proc = emu.run("condor_submit", path)
    assert proc.returncode == 1 and "No 'executable' parameter was provided" in proc.stderr
    path = emu.write("c.sub", "executable = /bin/true\nthis is not valid\nqueue\n")
    assert emu.run("condor_submit", path).returncode == 1


def test_htcondor_quoting() -> None:
    assert parse_arguments('"-c \'echo ""hi"" it\'\'s\' two"') == ["-c", 'echo "hi" it\'s', "two"]
    assert parse_arguments('a b\\"c') == ["a", 'b"c']
    assert parse_environment("\"A=1 B='x y'\"") == {"A": "1", "B": "x y"}
    assert parse_environment("A=1;B=2") == {"A": "1", "B": "2"}


# --------------------------------------------------------------------------- running
def test_pbs_job_environment(emulator: Callable[..., Emu]) -> None:
    emu = emulator("pbs")
    emu.env["DJQ_SUBMIT_ONLY"] = "1"  # not exported without -V
    body = 'env > "$PBS_O_WORKDIR/env.txt"; pwd > "$PBS_O_WORKDIR/pwd.txt"; cat "$PBS_NODEFILE" > "$PBS_O_WORKDIR/nodes.txt"'
    key = job_key(emu, submit(emu, body=body, cores=2, name="envjob"))
    job = wait_for_job(emu.home, key)
    env = dict(
        line.split("=", 1) for line in (emu.cwd / "env.txt").read_text().splitlines() if "=" in line
    )
    assert env["PBS_JOBID"] == f"{key}.server"
    assert env["PBS_JOBNAME"] == "envjob"
    assert env["PBS_QUEUE"] == "workq"
    assert env["PBS_O_WORKDIR"] == str(emu.cwd)
    assert env["NCPUS"] == "2"
    assert env["PBS_ENVIRONMENT"] == "PBS_BATCH"
    assert "DJQ_SUBMIT_ONLY" not in env and env["PBS_O_PATH"]
    assert (emu.cwd / "pwd.txt").read_text().strip() == os.path.expanduser("~")
    assert (emu.cwd / "nodes.txt").read_text().count("\n") == 2
    assert (emu.cwd / f"envjob.o{key}").exists() and (emu.cwd / f"envjob.e{key}").exists()
    assert job["returncode"] == 0


def test_pbs_export_all_and_join(emulator: Callable[..., Emu]) -> None:
    emu = emulator("pbs")
    env_marker = "DJQ_TEST_MARKER"
    emu.env[env_marker] = "yes"
    path = emu.write(
        "j.sh", f"#PBS -V\n#PBS -j oe\n#PBS -o out.txt\necho ${env_marker}; echo err >&2\n"
    )
    key = job_key(emu, emu.run("qsub", path))
    wait_for_job(emu.home, key)
    assert (emu.cwd / "out.txt").read_text().split() == ["yes", "err"]


def test_lsf_job_environment(emulator: Callable[..., Emu]) -> None:
    emu = emulator("lsf")
    body = "env > env.txt; pwd > pwd.txt"
    key = job_key(emu, submit(emu, body=body, cores=2, name="lenv"))
    wait_for_job(emu.home, key)
    env = dict(
        line.split("=", 1) for line in (emu.cwd / "env.txt").read_text().splitlines() if "=" in line
    )
    assert env["LSB_JOBID"] == key and env["LSB_JOBNAME"] == "lenv" and env["LSB_QUEUE"] == "normal"
    assert env["LSB_DJOB_NUMPROC"] == "2" and len(env["LSB_HOSTS"].split()) == 2
    assert (emu.cwd / "pwd.txt").read_text().strip() == str(emu.cwd)
    report = (emu.cwd / f"lenv.{key}.out").read_text()
    assert "Successfully completed." in report and f"Subject: Job {key}: <lenv>" in report


def test_htcondor_job_environment(emulator: Callable[..., Emu]) -> None:
    emu = emulator("htcondor")
    body = "env > env.txt; pwd > pwd.txt; cat $_CONDOR_JOB_AD > ad.txt"
    key = job_key(emu, submit(emu, body=body, cores=2, name="cenv"))
    wait_for_job(emu.home, key)
    env = dict(
        line.split("=", 1) for line in (emu.cwd / "env.txt").read_text().splitlines() if "=" in line
    )
    assert env["FOO"] == "bar" and env["_CONDOR_SCRATCH_DIR"] and env["OMP_NUM_THREADS"] == "2"
    assert "HOME" not in env  # getenv defaults to false
    assert (emu.cwd / "pwd.txt").read_text().strip() == str(emu.cwd)
    ad = (emu.cwd / "ad.txt").read_text()
    assert "ClusterId = " in ad and "RequestMemory = floor(MY.DaskWorkerMemory / 1048576)" in ad
    log = (emu.cwd / "cenv.log").read_text()
    assert (
        log.startswith("000 (") and "001 (" in log and "Normal termination (return value 0)" in log
    )
    assert not Path(env["_CONDOR_SCRATCH_DIR"]).exists()


@pytest.mark.parametrize("flavour", ["pbs", "lsf", "htcondor"])
def test_exit_code_recorded(emulator: Callable[..., Emu], flavour: str) -> None:
    emu = emulator(flavour)
    key = job_key(emu, submit(emu, body="exit 3"))
    wait_for_job(emu.home, key)
    if flavour == "pbs":
        doc = json.loads(emu.run("qstat", "-f", "-F", "json", "-x", key, check=True).stdout)
        assert doc["Jobs"][f"{key}.server"]["Exit_status"] == 3
        assert doc["Jobs"][f"{key}.server"]["job_state"] == "F"
    elif flavour == "lsf":
        out = emu.run(
            "bjobs", "-noheader", "-o", "jobid stat exit_code delimiter='|'", key, check=True
        ).stdout
        assert out.strip() == f"{key}|EXIT|3"
    else:
        out = emu.run("condor_history", key, "-af", "JobStatus", "ExitCode", check=True).stdout
        assert out.strip() == "4 3"
        assert emu.run("condor_q", key, "-af", "JobStatus", check=True).stdout == ""


# --------------------------------------------------------------------------- queueing
def test_pbs_slots_full_keeps_job_queued(emulator: Callable[..., Emu]) -> None:
    emu = emulator("pbs", slots=2)
    first = job_key(emu, submit(emu, cores=2))
    second = job_key(emu, submit(emu, cores=2))
    wait_for_job(emu.home, first, ("running",))

    def comment() -> str:
        doc = json.loads(emu.run("qstat", "-f", "-F", "json", second, check=True).stdout)
        return doc["Jobs"][f"{second}.server"].get("comment", "")

    assert until(comment) == "Not Running: Insufficient amount of resource: ncpus (R: 2 A: 0 T: 2)"
    table = emu.run("qstat", check=True).stdout.splitlines()
    assert table[0].split() == ["Job", "id", "Name", "User", "Time", "Use", "S", "Queue"]
    states = {line.split()[0]: line.split()[-2] for line in table[2:]}
    assert states == {f"{first}.server": "R", f"{second}.server": "Q"}
    emu.run("qdel", first, check=True)
    wait_for_job(emu.home, second, ("running",))


def test_pbs_job_that_can_never_run(emulator: Callable[..., Emu]) -> None:
    emu = emulator("pbs", slots=2)
    big = job_key(emu, submit(emu, cores=8))
    small = job_key(emu, submit(emu, cores=1))
    wait_for_job(emu.home, small, ("running",))
    assert until(lambda: (job_record(emu.home, big) or {}).get("pend_reason"))["kind"] == "never"
    out = emu.run("qstat", "-f", big, check=True).stdout
    assert "comment = Can Never Run: Insufficient amount of resource: ncpus (R: 8 A: 1 T: 2)" in out


def test_lsf_slots_full_pend_reason(emulator: Callable[..., Emu]) -> None:
    emu = emulator("lsf", slots=1)
    first = job_key(emu, submit(emu))
    second = job_key(emu, submit(emu))
    wait_for_job(emu.home, first, ("running",))
    until(lambda: (job_record(emu.home, second) or {}).get("pend_reason"))
    doc = json.loads(
        emu.run("bjobs", "-json", "-o", "jobid stat exit_code pend_reason", first, second).stdout
    )
    assert doc["COMMAND"] == "bjobs" and doc["JOBS"] == 2
    assert doc["RECORDS"] == [
        {"JOBID": first, "STAT": "RUN", "EXIT_CODE": "", "PEND_REASON": ""},
        {
            "JOBID": second,
            "STAT": "PEND",
            "EXIT_CODE": "",
            "PEND_REASON": "Not enough job slot(s): 1 host;",
        },
    ]
    out = emu.run("bjobs", "-o", "jobid stat pend_reason", check=True).stdout.splitlines()
    assert out[0].split() == ["JOBID", "STAT", "PEND_REASON"]
    assert out[2].startswith(f"{second}") and "PEND" in out[2]


def test_moab_slots_full_showq_and_checkjob(emulator: Callable[..., Emu]) -> None:
    emu = emulator("moab", slots=1)
    first = job_key(emu, submit(emu))
    second = job_key(emu, submit(emu))
    wait_for_job(emu.home, first, ("running",))
    until(lambda: (job_record(emu.home, second) or {}).get("pend_reason"))
    out = emu.run("checkjob", "-v", second, check=True).stdout
    assert (
        "State: Idle" in out
        and "NOTE:  job cannot run  (insufficient available procs:  0 available)" in out
    )
    showq = emu.run("showq", check=True).stdout
    assert re.search(rf"^{first}\s+\S+\s+Running\s+1\s", showq, re.M)
    assert re.search(rf"^{second}\s+\S+\s+Idle\s+1\s", showq, re.M)
    root = ET.fromstring(emu.run("showq", "--xml", check=True).stdout)
    by_option = {q.get("option"): [j.get("JobID") for j in q] for q in root.iter("queue")}
    assert by_option["active"] == [first] and by_option["eligible"] == [second]
    assert emu.run("qstat", "-f", first, check=True).stdout.startswith(f"Job Id: {first}.server\n")


def test_htcondor_slots_full_idle(emulator: Callable[..., Emu]) -> None:
    emu = emulator("htcondor", slots=1)
    first = job_key(emu, submit(emu, cores=1))
    second = job_key(emu, submit(emu, cores=1))
    wait_for_job(emu.home, first, ("running",))
    out = emu.run(
        "condor_q",
        first.split(".")[0],
        second,
        "-af",
        "ClusterId",
        "ProcId",
        "JobStatus",
        check=True,
    )
    assert out.stdout.splitlines() == [
        f"{first.replace('.', ' ')} 2",
        f"{second.replace('.', ' ')} 1",
    ]
    docs = json.loads(emu.run("condor_q", "-json", check=True).stdout)
    assert [d["JobStatus"] for d in docs] == [2, 1]
    assert docs[0]["RequestCpus"] == "/Expr(MY.DaskWorkerCores)/"


# --------------------------------------------------------------------------- walltime
def test_pbs_walltime_kill(emulator: Callable[..., Emu]) -> None:
    emu = emulator("pbs")
    key = job_key(emu, submit(emu, walltime="00:00:01", name="wt"))
    wait_for_job(emu.home, key, timeout=10)
    attrs = json.loads(emu.run("qstat", "-fxF", "json", key, check=True).stdout)["Jobs"][
        f"{key}.server"
    ]
    assert attrs["job_state"] == "F" and attrs["Exit_status"] == -29
    assert (
        "=>> PBS: job killed: walltime 2 exceeded limit 1" in (emu.cwd / f"wt.e{key}").read_text()
    )


def test_torque_walltime_kill_and_completed_state(emulator: Callable[..., Emu]) -> None:
    emu = emulator("torque")
    key = job_key(emu, submit(emu, walltime="00:00:01"))
    wait_for_job(emu.home, key, timeout=10)
    out = emu.run("qstat", "-f", key, check=True).stdout
    assert "    job_state = C\n" in out and "    exit_status = -11\n" in out
    root = ET.fromstring(emu.run("qstat", "-x", key, check=True).stdout)
    assert root.find("Job/job_state").text == "C"
    proc = emu.run("qstat", "99")
    assert (proc.returncode, proc.stderr.strip()) == (153, "qstat: Unknown Job Id Error 99.server")


def test_torque_completed_jobs_expire(emulator: Callable[..., Emu]) -> None:
    emu = emulator("torque", keep_completed=0.5)
    key = job_key(emu, submit(emu, body="true"))
    wait_for_job(emu.home, key)
    time.sleep(0.7)
    assert emu.run("qstat", key).returncode == 153


def test_lsf_walltime_kill(emulator: Callable[..., Emu]) -> None:
    emu = emulator("lsf", walltime_scale=1 / 60)  # -W is in minutes: make a minute last 1s
    key = job_key(emu, submit(emu, walltime="1"))
    assert job_record(emu.home, key)["walltime"] == 60
    wait_for_job(emu.home, key, timeout=10)
    out = emu.run(
        "bjobs", "-noheader", "-o", "stat exit_code exit_reason delimiter='|'", key, check=True
    ).stdout
    assert out.strip() == "EXIT|140|TERM_RUNLIMIT: job killed after reaching LSF run time limit"
    assert "TERM_RUNLIMIT" in (emu.cwd / f"job.{key}.out").read_text()


def test_htcondor_allowed_job_duration_holds(emulator: Callable[..., Emu]) -> None:
    emu = emulator("htcondor")
    key = job_key(emu, submit(emu, extra="allowed_job_duration = 1"))
    wait_for_job(emu.home, key, ("held",), timeout=10)
    out = emu.run(
        "condor_q", key, "-af", "JobStatus", "HoldReasonCode", "HoldReason", check=True
    ).stdout
    assert out.strip() == "5 46 The job exceeded allowed job duration of 1"
    assert "Job was held." in (emu.cwd / "job.log").read_text()
    assert emu.run("condor_rm", key, check=True).stdout.strip() == f"Job {key} marked for removal"
    wait_for_job(emu.home, key)
    assert emu.run("condor_history", key, "-af", "JobStatus", check=True).stdout.strip() == "3"


# --------------------------------------------------------------------------- cancel
def _running_pid(emu: Emu, key: str) -> int:
    return until(lambda: (job_record(emu.home, key) or {}).get("pid"))


def test_pbs_cancel(emulator: Callable[..., Emu]) -> None:
    emu = emulator("pbs")
    key = job_key(emu, submit(emu))
    pid = _running_pid(emu, key)
    proc = emu.run("qdel", key)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    wait_for_job(emu.home, key)
    assert not pid_alive(pid)
    attrs = json.loads(emu.run("qstat", "-f", "-F", "json", "-x", key).stdout)["Jobs"][
        f"{key}.server"
    ]
    assert attrs["job_state"] == "F" and attrs["Exit_status"] == 271
    proc = emu.run("qstat", key)
    assert proc.returncode == 35 and "Job has finished, use -x or -H" in proc.stderr
    proc = emu.run("qdel", "99")
    assert (proc.returncode, proc.stderr.strip()) == (153, "qdel: Unknown Job Id 99.server")
    proc = emu.run("qstat", "-f", "-F", "json", "99.server")
    assert (proc.returncode, proc.stderr.strip()) == (153, "qstat: Unknown Job Id 99.server")
    assert "Jobs" not in json.loads(proc.stdout)


def test_pbs_cancel_queued(emulator: Callable[..., Emu]) -> None:
    emu = emulator("pbs", slots=1)
    job_key(emu, submit(emu))
    queued = job_key(emu, submit(emu))
    emu.run("qdel", queued, check=True)
    job = wait_for_job(emu.home, queued)
    assert job["start_time"] is None
    attrs = json.loads(emu.run("qstat", "-fxF", "json", queued).stdout)["Jobs"][f"{queued}.server"]
    assert attrs["job_state"] == "F" and "Exit_status" not in attrs


def test_lsf_cancel(emulator: Callable[..., Emu]) -> None:
    emu = emulator("lsf")
    key = job_key(emu, submit(emu))
    pid = _running_pid(emu, key)
    proc = emu.run("bkill", key)
    assert (proc.returncode, proc.stdout.strip()) == (0, f"Job <{key}> is being terminated")
    wait_for_job(emu.home, key)
    assert not pid_alive(pid)
    out = emu.run(
        "bjobs", "-noheader", "-o", "stat exit_code delimiter='|'", key, check=True
    ).stdout
    assert out.strip() == "EXIT|130"
    proc = emu.run("bkill", key)
    assert (proc.returncode, proc.stderr.strip()) == (255, f"Job <{key}>: Job has already finished")
    proc = emu.run("bkill", "99")
    assert (proc.returncode, proc.stderr.strip()) == (255, "Job <99>: No matching job found")
    proc = emu.run("bjobs", "99")
    assert (proc.returncode, proc.stderr.strip()) == (255, "Job <99> is not found")


def test_htcondor_cancel(emulator: Callable[..., Emu]) -> None:
    emu = emulator("htcondor")
    key = job_key(emu, submit(emu))
    pid = _running_pid(emu, key)
    cluster = key.split(".")[0]
    proc = emu.run("condor_rm", cluster)
    assert (proc.returncode, proc.stdout.strip()) == (
        0,
        f"All jobs in cluster {cluster} have been marked for removal",
    )
    wait_for_job(emu.home, key)
    assert not pid_alive(pid)
    assert emu.run("condor_q", key, "-af", "JobStatus").stdout == ""
    assert (
        emu.run("condor_history", key, "-af", "JobStatus", "ExitCode").stdout.strip()
        == "3 undefined"
    )
    proc = emu.run("condor_rm", "99.0")
    assert proc.returncode == 1
    assert (
        proc.stderr.strip()
        == "Couldn't find/remove all jobs matching constraint (ClusterId == 99 && ProcId == 0)"
    )
    assert "aborted" in (emu.cwd / "job.log").read_text()


def test_moab_cancel(emulator: Callable[..., Emu]) -> None:
    emu = emulator("moab")
    key = job_key(emu, submit(emu))
    pid = _running_pid(emu, key)
    proc = emu.run("canceljob", key)
    assert (proc.returncode, proc.stdout.strip()) == (0, f"job '{key}' cancelled")
    wait_for_job(emu.home, key)
    assert not pid_alive(pid)
    assert "State: Removed" in emu.run("checkjob", key, check=True).stdout
    proc = emu.run("canceljob", "99")
    assert (proc.returncode, proc.stderr.strip()) == (1, "ERROR:  invalid job specified (99)")
    proc = emu.run("checkjob", "99")
    assert (proc.returncode, proc.stderr.strip()) == (1, "ERROR:  cannot locate job '99'")


def test_user_hold_and_release(emulator: Callable[..., Emu]) -> None:
    emu = emulator("pbs")
    key = job_key(emu, submit(emu, args=("-h",)))
    assert emu.run("qstat", key, check=True).stdout.splitlines()[2].split()[-2] == "H"
    emu.run("qrls", key, check=True)
    wait_for_job(emu.home, key, ("running",))


# --------------------------------------------------------------------------- faults
@pytest.mark.parametrize("flavour", ["pbs", "lsf", "htcondor", "moab"])
def test_fault_submit_fail(emulator: Callable[..., Emu], flavour: str) -> None:
    emu = emulator(flavour)
    inject_fault(emu.home, "submit_fail", count=2, stderr="qsub: Error: server busy", exit_code=15)
    for _ in range(2):
        proc = submit(emu)
        assert (proc.returncode, proc.stderr.strip(), proc.stdout) == (
            15,
            "qsub: Error: server busy",
            "",
        )
    assert submit(emu).returncode == 0
    assert len(list_jobs(emu.home)) == 1


def test_fault_submit_hang(emulator: Callable[..., Emu]) -> None:
    emu = emulator("lsf")
    inject_fault(emu.home, "submit_hang", seconds=1.0)
    start = time.time()
    assert submit(emu).returncode == 0
    assert time.time() - start >= 1.0
    start = time.time()
    assert submit(emu).returncode == 0
    assert time.time() - start < 1.0


@pytest.mark.parametrize(
    "flavour, command, code, stderr",
    [
        (
            "pbs",
            ("qstat", "-f", "-F", "json", "-x", "1"),
            1,
            "qstat: cannot connect to server server (errno=111)",
        ),
        ("lsf", ("bjobs", "1"), 255, "LSF is down. Please wait ..."),
        (
            "htcondor",
            ("condor_q", "1", "-af", "JobStatus"),
            1,
            "SECMAN:2007:Failed to end classad message.",
        ),
        ("moab", ("showq",), 1, "ERROR:    lost connection to server 'server'"),
    ],
)
def test_fault_status_fail(
    emulator: Callable[..., Emu], flavour: str, command: tuple[str, ...], code: int, stderr: str
) -> None:
    emu = emulator(flavour)
    submit(emu)
    inject_fault(emu.home, "status_fail")
    proc = emu.run(*command)
    assert proc.returncode == code and proc.stderr.strip().endswith(stderr)
    assert emu.run(*command).returncode == 0


def test_fault_status_fail_custom_and_forever(emulator: Callable[..., Emu]) -> None:
    emu = emulator("pbs")
    inject_fault(emu.home, "status_fail", count=-1, stderr="boom", exit_code=7)
    for _ in range(3):
        proc = emu.run("qstat")
        assert (proc.returncode, proc.stderr.strip()) == (7, "boom")


def test_fault_cancel_fail(emulator: Callable[..., Emu]) -> None:
    emu = emulator("lsf")
    key = job_key(emu, submit(emu))
    inject_fault(emu.home, "cancel_fail")
    proc = emu.run("bkill", key)
    assert (proc.returncode, proc.stderr.strip()) == (255, "LSF is down. Please wait ...")
    emu.run("bkill", key, check=True)


@pytest.mark.parametrize("flavour", ["pbs", "lsf", "htcondor"])
def test_fault_job_dies_at_start(emulator: Callable[..., Emu], flavour: str) -> None:
    emu = emulator(flavour)
    inject_fault(emu.home, "job_dies_at_start", exit_code=42, stderr="segfault in prologue")
    key = job_key(emu, submit(emu, name="dies"))
    job = wait_for_job(emu.home, key)
    assert job["returncode"] == 42
    if flavour == "pbs":
        assert "segfault in prologue" in (emu.cwd / f"dies.e{key}").read_text()
        attrs = json.loads(emu.run("qstat", "-fxF", "json", key).stdout)["Jobs"][f"{key}.server"]
        assert attrs["Exit_status"] == 42
    elif flavour == "lsf":
        assert "segfault in prologue" in (emu.cwd / f"dies.{key}.out").read_text()
        assert emu.run("bjobs", "-noheader", "-o", "stat exit_code", key).stdout.split() == [
            "EXIT",
            "42",
        ]
    else:
        assert "segfault in prologue" in (emu.cwd / f"dies.{key.split('.')[0]}.err").read_text()
        assert emu.run("condor_history", key, "-af", "ExitCode").stdout.strip() == "42"
    second = job_key(emu, submit(emu, body="true"))
    assert wait_for_job(emu.home, second)["returncode"] == 0


@pytest.mark.parametrize("flavour", ["pbs", "lsf", "htcondor", "moab"])
def test_fault_hold_next(emulator: Callable[..., Emu], flavour: str) -> None:
    emu = emulator(flavour)
    inject_fault(emu.home, "hold_next", reason="Job held: no licence")
    key = job_key(emu, submit(emu))
    time.sleep(0.3)
    assert job_record(emu.home, key)["state"] == "held"
    if flavour == "pbs":
        attrs = json.loads(emu.run("qstat", "-f", "-F", "json", key).stdout)["Jobs"][
            f"{key}.server"
        ]
        assert attrs["job_state"] == "H" and attrs["comment"] == "Job held: no licence"
        emu.run("qrls", key, check=True)
    elif flavour == "lsf":
        out = emu.run("bjobs", "-noheader", "-o", "stat pend_reason delimiter='|'", key).stdout
        assert out.strip() == "PSUSP|Job held: no licence"
        emu.run("bresume", key, check=True)
    elif flavour == "htcondor":
        out = emu.run("condor_q", key, "-af", "JobStatus", "HoldReason").stdout
        assert out.strip() == "5 Job held: no licence"
        assert emu.run("condor_release", key, check=True).stdout.strip() == f"Job {key} released"
    else:
        out = emu.run("checkjob", key).stdout
        assert "State: SystemHold" in out and "Job held: no licence" in out
        emu.run("releasehold", key, check=True)
    wait_for_job(emu.home, key, ("running",))


# --------------------------------------------------------------------------- robustness
@pytest.mark.parametrize("flavour", ["pbs", "htcondor"])
def test_concurrent_submits_get_unique_ids(emulator: Callable[..., Emu], flavour: str) -> None:
    emu = emulator(flavour, slots=64)
    with ThreadPoolExecutor(max_workers=20) as pool:
        procs = list(pool.map(lambda i: submit(emu, body="true", name=f"c{i}"), range(20)))
    keys = [job_key(emu, p) for p in procs]
    assert len(set(keys)) == 20
    assert sorted(j["key"] for j in list_jobs(emu.home)) == sorted(keys)
    for key in keys:
        wait_for_job(emu.home, key)


def test_kill_all_leaves_no_process(emulator: Callable[..., Emu]) -> None:
    emu = emulator("pbs", slots=2)
    keys = [job_key(emu, submit(emu, body="sleep 60 & sleep 60 & wait")) for _ in range(3)]
    pids = [_running_pid(emu, k) for k in keys[:2]]
    until(lambda: len(surviving_processes(emu.home)) >= 6)
    assert kill_all(emu.home) == 3
    assert surviving_processes(emu.home) == []
    assert not any(pid_alive(p) for p in pids)
    assert all(j["state"] == "done" for j in list_jobs(emu.home))


def test_context_manager_kills_jobs(tmp_path: Path) -> None:
    with emulated_scheduler("lsf", tmp_path / "h", kill_delay=0.2) as env:
        proc = subprocess.run(
            ["bsub"], input="sleep 60\n", env=env, capture_output=True, text=True, cwd=tmp_path
        )
        key = re.findall(r"\d+", proc.stdout)[0]
        wait_for_job(env.home, key, ("running",))
    assert surviving_processes(env.home) == []
    assert job_record(env.home, key)["state"] == "done"
