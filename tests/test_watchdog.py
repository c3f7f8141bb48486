"""The watchdog: state file, cancel retries, cleanup rounds, and the real process with fake
batch commands (an owner process SIGKILLed, a normal stop)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dask_jobqueue.tags import JobTag
from dask_jobqueue.watchdog import (
    CommandResult,
    WatchdogState,
    cancel_with_retries,
    clean_up,
    owner_alive,
    pid_alive,
)

TAG = JobTag("0a1b2c3d", 1, 4242, "vm")
OTHER = JobTag("ffffffff", 1, 4242, "vm")


def make_state(**kwargs) -> WatchdogState:
    values = {
        "owner_pid": 1,
        "cluster_id": TAG.cluster_id,
        "cancel_argv": ["scancel"],
        "cancel_gone": "Invalid job id",
        "list_argvs": [["squeue", "-h", "-o", "%i|%k"]],
        "parser": "parse_slurm_tags",
        "job_ids": ["1", "2"],
    }
    values.update(kwargs)
    return WatchdogState(**values)


class FakeCommands:
    """Records every command; answers listing commands with ``listing`` (one per call)."""

    def __init__(self, listings=(), cancel_results=()):
        self.calls: list[list[str]] = []
        self.listings = list(listings)
        self.cancel_results = list(cancel_results)

    def __call__(self, argv):
        self.calls.append(list(argv))
        if argv[0] == "squeue":
            return CommandResult(0, self.listings.pop(0) if self.listings else "")
        if self.cancel_results:
            return self.cancel_results.pop(0)
        return CommandResult(0)

    @property
    def cancels(self):
        return [c for c in self.calls if c[0] == "scancel"]


def test_state_file_is_private_atomic_and_round_trips(tmp_path):
    state = make_state()
    path = tmp_path / "state.json"
    state.write(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert WatchdogState.read(path) == state
    state.job_ids = ["3"]
    state.write(path)
    assert WatchdogState.read(path).job_ids == ["3"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]  # no temp files left
    path.write_text('{"version": 99}')
    with pytest.raises(ValueError, match="unknown version"):
        WatchdogState.read(path)


def test_owner_checks():
    assert pid_alive(os.getpid())
    assert owner_alive(os.getpid(), os.getpid())
    # the watchdog's parent changed: the owner died even if its pid was reused
    assert not owner_alive(os.getpid(), 1)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not pid_alive(proc.pid)


def test_cancel_retries_then_reports_what_is_left():
    sleeps = []
    fake = FakeCommands(cancel_results=[CommandResult(1, "", "slurm down")] * 10)
    left = cancel_with_retries(["scancel"], ["2", "1"], "Invalid job id", fake, attempts=3,
                               sleep=sleeps.append)
    assert left == ["1", "2"] and len(fake.cancels) == 3 and sleeps == [1.0, 2.0]


def test_cancel_of_gone_jobs_is_success():
    fake = FakeCommands(cancel_results=[CommandResult(1, "", "scancel: error: Invalid job id 1")])
    assert cancel_with_retries(["scancel"], ["1"], "Invalid job id", fake, sleep=lambda s: None) == []
    assert len(fake.cancels) == 1


def test_a_hung_cancel_is_retried():
    fake = FakeCommands(cancel_results=[CommandResult(None, "", "timed out"), CommandResult(0)])
    assert cancel_with_retries(["scancel"], ["1"], None, fake, sleep=lambda s: None) == []
    assert len(fake.cancels) == 2


def test_clean_up_cancels_known_and_tagged_jobs_of_its_cluster_only():
    listing1 = f"1|{TAG.text()}\n7|{TAG.text()}\n8|{OTHER.text()}\n9|plain comment\n"
    listing2 = f"7|{TAG.text()}\n10|{TAG.text()}\n"  # 10 was submitted while the owner died
    fake = FakeCommands(listings=[listing1, listing2])
    sleeps = []
    assert clean_up(make_state(), fake, sleep=sleeps.append, relist_delay=3.0) == []
    assert fake.cancels == [["scancel", "1", "2", "7"], ["scancel", "10"]]
    assert sleeps == [3.0]


def test_clean_up_without_listing_still_cancels_known_ids():
    fake = FakeCommands()
    fake_fail = lambda argv: (  # noqa: E731
        CommandResult(1, "", "squeue: error") if argv[0] == "squeue" else fake(argv)
    )
    assert clean_up(make_state(), fake_fail, sleep=lambda s: None) == []
    assert fake.cancels == [["scancel", "1", "2"]]


def test_clean_up_cancels_the_known_ids_as_the_engine_would():
    # a PBS cluster (one argument per qdel) with 200 subjobs of one array and a plain job;
    # its tag listing also shows a subjob of an array submitted while the owner died
    tasks = [f"65[{i}].server" for i in range(200)]
    listing = "".join(f"{i}|{TAG.text()}\n" for i in [*tasks, "66[0].server"])
    fake = FakeCommands(listings=[listing])
    state = make_state(
        cancel_argv=["qdel"],
        job_ids=[*tasks, "70.server"],
        cancel_max_ids=1,
        cancel_groups=[["70.server"], ["65[0-199].server"]],
    )
    assert clean_up(state, fake, sleep=lambda s: None) == []
    assert [c for c in fake.calls if c[0] == "qdel"] == [
        ["qdel", "66[0].server"], ["qdel", "70.server"], ["qdel", "65[0-199].server"],
    ]


def test_a_range_that_could_not_be_cancelled_is_reported():
    fake = FakeCommands(cancel_results=[CommandResult(0)] + [CommandResult(1, "", "down")] * 9)
    state = make_state(cancel_argv=["qdel"], job_ids=["65[0].s", "65[1].s", "70.s"],
                       cancel_max_ids=1, cancel_groups=[["70.s"], ["65[0-1].s"]],
                       list_argvs=[])
    assert clean_up(state, fake, sleep=lambda s: None) == ["65[0-1].s"]


# ---------------------------------------------------------------------- the real process


def _fake_batch_system(tmp_path: Path) -> tuple[Path, Path]:
    """A `scancel` that logs its arguments and a `squeue` printing a file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "cancelled.log"
    listing = tmp_path / "listing.txt"
    listing.write_text(f"5|{TAG.text()}\n6|{OTHER.text()}\n")
    (bin_dir / "scancel").write_text(f"#!/bin/sh\necho \"$@\" >> {log}\n")
    (bin_dir / "squeue").write_text(f"#!/bin/sh\ncat {listing}\n")
    for tool in ("scancel", "squeue"):
        (bin_dir / tool).chmod(0o755)
    return bin_dir, log


OWNER = textwrap.dedent(
    """
    import sys, time
    from dask_jobqueue.watchdog import Watchdog, WatchdogState
    state = WatchdogState(owner_pid=__import__("os").getpid(), cluster_id="0a1b2c3d",
                          cancel_argv=[sys.argv[1]], list_argvs=[[sys.argv[2]]],
                          parser="parse_slurm_tags")
    dog = Watchdog(state)
    dog.start()
    dog.update(["1", "2"])
    print(dog.process.pid, dog.directory, flush=True)
    if sys.argv[3] == "stop":
        dog.stop()
        print("stopped", flush=True)
    time.sleep(60)
    """
)


def _start_owner(tmp_path: Path, mode: str) -> tuple[subprocess.Popen, int, str]:
    bin_dir, _ = _fake_batch_system(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(bin_dir / "scancel"), str(bin_dir / "squeue"), mode],
        stdout=subprocess.PIPE, text=True, env=env,
    )
    pid, directory = owner.stdout.readline().split()
    return owner, int(pid), directory


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_watchdog_cancels_everything_when_its_owner_is_killed(tmp_path):
    owner, dog_pid, directory = _start_owner(tmp_path, "run")
    log = tmp_path / "cancelled.log"
    try:
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        time.sleep(1.5)
        assert not log.exists(), "cancelled while the owner was alive"
        killed = time.monotonic()
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        assert _wait(lambda: log.exists() and "1 2 5" in log.read_text(), 10)
        first_cancel = time.monotonic() - killed
        assert first_cancel < 4, first_cancel
        # the second listing round (5 s later) finds nothing new; then the watchdog exits
        assert _wait(lambda: not pid_alive(dog_pid), 15)
        assert log.read_text().split("\n")[0] == "1 2 5"
        assert not os.path.exists(directory)
    finally:
        if owner.poll() is None:
            owner.kill()
        if pid_alive(dog_pid):
            os.kill(dog_pid, signal.SIGKILL)


def test_a_stopped_watchdog_cancels_nothing(tmp_path):
    owner, dog_pid, directory = _start_owner(tmp_path, "stop")
    try:
        assert owner.stdout.readline().strip() == "stopped"
        assert not pid_alive(dog_pid)
        assert not os.path.exists(directory)
        owner.kill()
        owner.wait()
        time.sleep(2)
        assert not (tmp_path / "cancelled.log").exists()
    finally:
        if owner.poll() is None:
            owner.kill()


def test_watchdog_starts_fast_without_dask(tmp_path):
    """The watchdog imports no dask: it starts in well under a second."""
    code = (
        "import sys, runpy; sys.argv=['w', '--help']\n"
        "try:\n    runpy.run_path(sys.argv_path, run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('dask' in sys.modules, 'distributed' in sys.modules)"
    )
    from dask_jobqueue import watchdog

    path = watchdog.__file__
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-I", "-c", code.replace("sys.argv_path", repr(path))],
        capture_output=True, text=True, check=True,
    ).stdout
    assert out.strip().splitlines()[-1] == "False False"
    assert time.monotonic() - started < 3

