"""A client killed with ``kill -9`` on the REAL Slurm and Grid Engine (``-E slurm``/``-E sge``),
and OAR for the watchdog and cleanup checks (``-E oar``).

The node is filled by blocker jobs submitted first so that of the client's three jobs one runs
and two wait. The client is SIGKILLed, then the blockers are cancelled (the node frees up);
we measure the time from the kill until no job of that client is left in the queue: with the
watchdog, and without it (then only the scheduler check of the job scripts, or nothing, ends
the jobs). Numbers are printed (``pytest -s``) and bounded by the assertions.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from dask_jobqueue.watchdog import pid_alive

from .fakecmd import fake_commands  # noqa: F401  (the fixture)
from .test_cleanup import Client, cli
from .waiting import wait_until

ROOT = Path(__file__).parents[1]


def sh(argv: list[str], check: bool = True) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"{argv}: {result.returncode} {result.stderr}")
    return result.stdout


@dataclass(frozen=True)
class Real:
    name: str
    module: str
    cluster: str
    free_slots: Callable[[], int]
    submit_blocker: Callable[[str], str]
    states: Callable[[list[str]], dict[str, str]]  # id -> "R"/"Q" for ids still queued
    cancel: Callable[[list[str]], None]


def _slurm_free() -> int:
    # %C: allocated/idle/other/total CPUs; a node is listed once per partition
    nodes = dict(line.split() for line in sh(["sinfo", "-h", "-N", "-o", "%N %C"]).splitlines())
    return sum(int(cpus.split("/")[1]) for cpus in nodes.values())


def _slurm_blocker(name: str) -> str:
    out = sh(
        [
            "sbatch",
            "--parsable",
            "-J",
            name,
            "-c",
            "1",
            "--mem=50M",
            "-t",
            "00:10:00",
            "--wrap",
            "sleep 600",
        ]
    )
    return out.strip().split(";")[0]


def _slurm_states(ids: list[str]) -> dict[str, str]:
    out = sh(["squeue", "-h", "-t", "all", "-j", ",".join(ids), "-o", "%i %t"], check=False)
    states = {}
    for line in out.splitlines():
        job_id, state = line.split()
        if state in ("R", "CG", "CF"):
            states[job_id] = "R"
        elif state in ("PD",):
            states[job_id] = "Q"
    return states


# The client's jobs (30 min walltime) fit only all.q (short.q has h_rt 10 minutes): fill it.
SGE_QUEUE = "all.q"


def _sge_free() -> int:
    # qstat -g c: CLUSTER QUEUE  CQLOAD  USED  RES  AVAIL  TOTAL aoACDS  cdsuE
    for line in sh(["qstat", "-g", "c"]).splitlines()[2:]:
        parts = line.split()
        if parts and parts[0] == SGE_QUEUE:
            return int(parts[5])
    return 0


def _sge_blocker(name: str) -> str:
    out = sh(
        [
            "qsub",
            "-terse",
            "-q",
            SGE_QUEUE,
            "-b",
            "y",
            "-N",
            name,
            "-o",
            "/dev/null",
            "-e",
            "/dev/null",
            "sleep",
            "600",
        ]
    )
    return out.strip()


def _sge_states(ids: list[str]) -> dict[str, str]:
    states = {}
    for line in sh(["qstat"], check=False).splitlines()[2:]:
        parts = line.split()
        if parts and parts[0] in ids:
            state = parts[4]
            states[parts[0]] = "R" if ("r" in state or "t" in state) else "Q"
    return states


def _oar_jobs() -> dict:
    out = sh(["oarstat", "-J"], check=False).strip()  # every user's unfinished jobs
    return json.loads(out) if out else {}


def _oar_free() -> int:
    out = sh(["oarnodes", "-J"]).strip()
    alive = sum(1 for r in json.loads(out).values() if r.get("state") == "Alive")
    busy = sum(
        len(j.get("assigned_resources") or [])
        for j in _oar_jobs().values()
        if j.get("state") in ("Running", "Launching", "toLaunch", "Finishing")
    )
    return alive - busy


def _oar_blocker(name: str) -> str:
    out = sh(["oarsub", "-n", name, "-l", "/nodes=1/core=1,walltime=0:10:00", "sleep 600"])
    return re.search(r"^OAR_JOB_ID=(\d+)", out, re.M).group(1)


def _oar_states(ids: list[str]) -> dict[str, str]:
    states = {}
    for job_id, job in _oar_jobs().items():
        if job_id in ids and job.get("state") not in ("Terminated", "Error"):
            running = job.get("state") in ("Running", "Launching", "toLaunch", "Finishing")
            states[job_id] = "R" if running else "Q"
    return states


SLURM = Real(
    "slurm",
    "dask_jobqueue.slurm",
    "SLURMCluster",
    _slurm_free,
    _slurm_blocker,
    _slurm_states,
    lambda ids: sh(["scancel", *ids], check=False) and None,
)
SGE = Real(
    "sge",
    "dask_jobqueue.sge",
    "SGECluster",
    _sge_free,
    _sge_blocker,
    _sge_states,
    lambda ids: sh(["qdel", *ids], check=False) and None,
)
OAR = Real(
    "oar",
    "dask_jobqueue.oar",
    "OARCluster",
    _oar_free,
    _oar_blocker,
    _oar_states,
    lambda ids: sh(["oardel", *ids], check=False) and None,
)
REAL = [
    pytest.param(SLURM, marks=pytest.mark.env("slurm"), id="slurm"),
    pytest.param(SGE, marks=pytest.mark.env("sge"), id="sge"),
]
# OAR (its tag travels in the job's command): the watchdog and cleanup checks
WITH_OAR = [*REAL, pytest.param(OAR, marks=pytest.mark.env("oar"), id="oar")]


class Scenario:
    """Blockers leaving one free slot, then a client with three jobs (one runs)."""

    def __init__(self, real: Real):
        self.real = real
        self.tag = f"djq-orph-{uuid.uuid4().hex[:6]}"
        self.blockers: list[str] = []
        self.client: Client | None = None
        self.ids: list[str] = []

    def start(self, watchdog: bool, check: bool, jobs: int = 3) -> Scenario:
        real = self.real
        if real.name == "oar":
            # OAR may need ~30 s to really stop a cancelled job (an earlier test's): wait
            # until no job holds cores, so the blockers leave exactly one free
            wait_until(
                lambda: not any(s == "R" for s in _oar_states(list(_oar_jobs())).values()), 90
            )
        free = real.free_slots()
        assert free >= 1, "no free slot on the node"
        for _ in range(free - 1):
            self.blockers.append(real.submit_blocker(self.tag + "-blk"))
        assert wait_until(
            lambda: (
                len([s for s in real.states(self.blockers).values() if s == "R"])
                == len(self.blockers)
            ),
            60,
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        kwargs = {
            "cores": 1,
            "memory": "1GB",
            "processes": 1,
            "job_name": self.tag,
            "scheduler_check": check,
            "log_directory": f"/tmp/{self.tag}",
            "scheduler_options": {"dashboard_address": ":0"},
        }
        if real.name == "slurm":
            kwargs["walltime"] = "00:10:00"
        if real.name == "oar":
            kwargs.update(walltime="00:10:00", memory_per_core_property_name="not_applicable")
        # one job id per job (no array tasks collapsed in the listings read below)
        config = {
            f"jobqueue.{real.name}.owner-watchdog": watchdog,
            f"jobqueue.{real.name}.job-arrays": "never",
        }
        self.client = Client(env, real.module, real.cluster, jobs, kwargs, config)
        self.ids = self.client.job_ids
        return self

    def running_and_queued(self) -> tuple[int, int]:
        states = self.real.states(self.ids)
        return (sum(s == "R" for s in states.values()), sum(s == "Q" for s in states.values()))

    def close(self) -> None:
        if self.client is not None and self.client.process.poll() is None:
            self.client.kill()
        if self.client is not None and self.client.watchdog_pid:
            try:
                os.kill(self.client.watchdog_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.blockers or self.ids:
            self.real.cancel(self.blockers + self.ids)


def _kill_and_measure(real: Real, watchdog: bool, check: bool) -> dict[str, float]:
    scenario = Scenario(real)
    try:
        scenario.start(watchdog, check)
        assert wait_until(lambda: scenario.running_and_queued() == (1, 2), 90), (
            scenario.running_and_queued()
        )
        queued_at_kill = [i for i, st in real.states(scenario.ids).items() if st == "Q"]
        killed = scenario.client.kill()
        real.cancel(scenario.blockers)  # the node frees up
        started: dict[str, float] = {}
        left_at: dict[str, float] = {}
        while len(left_at) < len(scenario.ids) and time.monotonic() - killed < 240:
            states = real.states(scenario.ids)
            now = time.monotonic()
            for job_id in scenario.ids:
                if states.get(job_id) == "R":
                    started.setdefault(job_id, now)
                if job_id not in states:
                    left_at.setdefault(job_id, now)
            time.sleep(0.2)
        result = {"kill_to_empty_queue": max(left_at.values(), default=float("inf")) - killed}
        # how long each job queued at the kill ran once it started (its scheduler was gone)
        late = [left_at[i] - started[i] for i in queued_at_kill if i in started and i in left_at]
        if late:
            result["queued_job_running_after_start"] = max(late)
        print(
            f"\n[{real.name}] watchdog={watchdog} scheduler_check={check}: "
            f"{json.dumps({k: round(v, 1) for k, v in result.items()})}"
        )
        return result
    finally:
        scenario.close()


@pytest.mark.parametrize("real", WITH_OAR)
def test_killed_client_with_watchdog_leaves_no_job(real):
    result = _kill_and_measure(real, watchdog=True, check=True)
    assert result["kill_to_empty_queue"] < 15


@pytest.mark.parametrize("real", REAL)
def test_without_watchdog_late_jobs_exit_at_once_thanks_to_the_check(real):
    result = _kill_and_measure(real, watchdog=False, check=True)
    # each queued job starts once the node is free, finds no scheduler within 5 s, exits 0
    assert result["kill_to_empty_queue"] < 45
    assert result.get("queued_job_running_after_start", 0) < 20


@pytest.mark.parametrize("real", REAL)
def test_before_without_watchdog_nor_check(real):
    """The "before" number: only the workers' own death timeout ends the late jobs."""
    result = _kill_and_measure(real, watchdog=False, check=False)
    assert result["kill_to_empty_queue"] > 10


@pytest.mark.parametrize("real", WITH_OAR)
def test_cleanup_after_client_and_watchdog_were_killed(real):
    scenario = Scenario(real)
    try:
        scenario.start(watchdog=True, check=True)
        assert wait_until(lambda: scenario.running_and_queued() == (1, 2), 90)
        os.kill(scenario.client.watchdog_pid, signal.SIGKILL)
        scenario.client.kill()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        dry = cli(env, "cleanup", real.name, "--dry-run").stdout
        queued = [i for i, s in real.states(scenario.ids).items() if s == "Q"]
        assert len(queued) == 2
        assert all(re.search(rf"^{i}\s", dry, re.M) for i in queued), dry
        assert "would cancel" in dry
        assert set(real.states(scenario.ids)) >= set(queued)  # nothing cancelled by a dry run
        started = time.monotonic()
        done = cli(env, "cleanup", real.name, "--yes").stdout
        assert "Cancelled" in done
        assert wait_until(lambda: not real.states(scenario.ids), 30)
        print(f"\n[{real.name}] cleanup --yes to empty queue: {time.monotonic() - started:.1f}s")
    finally:
        scenario.close()


@pytest.mark.env("slurm")
def test_watchdog_recovers_from_a_failed_cancel_and_removes_the_tls_files(
    fake_commands,  # noqa: F811
    tmp_path,
):
    """The real Slurm, with a fake ``scancel`` in front of the real one that fails once as
    a whole: after the client's SIGKILL its watchdog still cancels every job (by retrying),
    and the workers' TLS credentials (``security=True``) are removed."""
    fake_commands.fail_times(
        "scancel",
        1,
        rc=1,
        stderr="scancel: error: Unable to contact slurm controller (connect failure)",
    )
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir()
    tag = f"djq-wdfail-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # PATH: the fake scancel first
    kwargs = {
        "cores": 1,
        "memory": "1GB",
        "processes": 1,
        "job_name": tag,
        "walltime": "00:10:00",
        "log_directory": f"/tmp/{tag}",
        "job_extra_directives": ["--hold"],
        "security": True,
        "shared_temp_directory": str(tls_dir),
        "scheduler_options": {"dashboard_address": ":0"},
    }
    client = Client(
        env, SLURM.module, SLURM.cluster, 3, kwargs, {"jobqueue.slurm.job-arrays": "never"}
    )
    try:
        credentials = sorted(p.name for p in tls_dir.iterdir())
        assert len(credentials) >= 2 and all(".dask-jobqueue.worker." in n for n in credentials)
        assert set(SLURM.states(client.job_ids)) == set(client.job_ids)
        assert fake_commands.calls("scancel") == 0
        killed = client.kill()
        assert wait_until(lambda: not SLURM.states(client.job_ids), 30)
        print(
            f"\n[slurm] kill to empty queue with one failed scancel: "
            f"{time.monotonic() - killed:.1f}s"
        )
        assert sorted(tls_dir.iterdir()) == []
        calls = fake_commands.argv("scancel")
        # the failed command and its retry, each naming every job
        assert len(calls) >= 2 and all(sorted(c) == sorted(client.job_ids) for c in calls[:2])
        assert wait_until(lambda: not pid_alive(client.watchdog_pid), 30)
    finally:
        if client.process.poll() is None:
            client.kill()
        if client.watchdog_pid and pid_alive(client.watchdog_pid):
            os.kill(client.watchdog_pid, signal.SIGKILL)
        SLURM.cancel(client.job_ids)


if __name__ == "__main__":  # pragma: no cover - manual measurement helper
    sys.exit(pytest.main([__file__, "-s", *sys.argv[1:]]))
