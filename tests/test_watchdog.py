"""The watchdog: state and journal, per-id cancel results and retries, cleanup passes, its
command runner, and the real process with fake batch commands (an owner process SIGKILLed,
a normal stop)."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dask_jobqueue import _shell
from dask_jobqueue._shell import CommandError, CommandResult
from dask_jobqueue.tags import JobTag
from dask_jobqueue.watchdog import (
    Watchdog,
    WatchdogState,
    apply_journal,
    cancel_with_retries,
    clean_up,
    owner_alive,
    pid_alive,
    remove_owned_files,
    run,
)

from .fakecmd import fake_commands  # noqa: F401  (the fixture)

TAG = JobTag("0a1b2c3d", 1, 4242, "vm")
OTHER = JobTag("ffffffff", 1, 4242, "vm")
DENIED = "scancel: error: Kill job error on job id {}: Access/permission denied"
DOWN = "scancel: error: Unable to contact slurm controller (connect failure)"


def make_state(**kwargs) -> WatchdogState:
    values = {
        "owner_pid": 1,
        "cluster_id": TAG.cluster_id,
        "cancel_argv": ["scancel"],
        "cancel_gone": "Invalid job id",
        "list_argvs": [["squeue", "-h", "-o", "%i|%k"]],
        "parser": "dask_jobqueue.dialects.slurm:parse_slurm_tags",
        "job_ids": ["1", "2"],
    }
    values.update(kwargs)
    return WatchdogState(**values)


class FakeCommands:
    """A fake Slurm: ``squeue`` prints ``listing`` (one per call); ``scancel`` cancels its
    ids (recorded in :attr:`cancelled`) unless ``cancel`` (called with the ids) says how it
    fails: it returns the ids to cancel anyway and the stderr lines, or raises."""

    def __init__(self, listings=(), cancel=None):
        self.calls: list[list[str]] = []
        self.listings = list(listings)
        self.cancel = cancel
        self.cancelled: list[str] = []

    def __call__(self, argv):
        argv = list(argv)
        self.calls.append(argv)
        if argv[0] == "squeue":
            return CommandResult(argv, self.listings.pop(0) if self.listings else "", "")
        ids = argv[1:]
        if self.cancel is None:
            self.cancelled += ids
            return CommandResult(argv, "", "")
        done, complaints = self.cancel(ids)
        self.cancelled += done
        if complaints:
            raise CommandError(argv, 1, "", "".join(f"{line}\n" for line in complaints))
        return CommandResult(argv, "", "")

    @property
    def cancels(self):
        return [c for c in self.calls if c[0] == "scancel"]


def per_id_failure(bad, message=DENIED, times=None):
    """scancel's own behaviour: cancels the others, one complaint per id it cannot cancel
    (the first ``times`` calls naming a bad id, or always)."""
    seen = {"n": 0}

    def cancel(ids):
        hit = [i for i in ids if i in bad]
        if hit and (times is None or seen["n"] < times):
            seen["n"] += 1
            return [i for i in ids if i not in bad], [message.format(i) for i in hit]
        return ids, []

    return cancel


def whole_command_failure(bad, message=DOWN):
    """A command that fails as a whole, naming nothing, when one of its ids is bad."""
    return lambda ids: ([], [message]) if set(ids) & set(bad) else (ids, [])


def logged(capsys) -> list[str]:
    """The watchdog's log lines since the last call, without time stamp and pid."""
    err = capsys.readouterr().err
    return [
        re.sub(r"^\S+ \S+ dask-jobqueue watchdog\[\d+\]: ", "", line) for line in err.splitlines()
    ]


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


def test_journal_lines_apply_in_order_and_a_torn_last_line_is_ignored():
    text = "+ 3\n+ 4\n- 1\n+ 1\n- 3\n+ 9"  # "+ 9": its writer was killed mid-line
    assert apply_journal(["1", "2"], text) == ["2", "4", "1"]
    assert apply_journal(["1"], "") == ["1"]


def test_owner_checks():
    assert pid_alive(os.getpid())
    assert owner_alive(os.getpid(), os.getpid())
    # the watchdog's parent changed: the owner died even if its pid was reused
    assert not owner_alive(os.getpid(), 1)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not pid_alive(proc.pid)


def test_the_watchdog_runs_its_commands_with_the_engines_runner():
    assert CommandResult is _shell.CommandResult and CommandError is _shell.CommandError
    assert run(["echo", "hi"]).stdout == "hi\n"
    with pytest.raises(CommandError, match="exit code 3"):
        run(["sh", "-c", "exit 3"])


# ---------------------------------------------------------------------- cancel results


def test_cancel_retries_then_reports_what_is_left():
    sleeps = []
    fake = FakeCommands(cancel=lambda ids: ([], ["slurm down"]))
    report = cancel_with_retries(
        ["scancel"], ["1"], "Invalid job id", fake, attempts=3, sleep=sleeps.append
    )
    assert report.failed == {"1": "slurm down"} and report.cancelled == []
    assert len(fake.cancels) == 3 and sleeps == [1.0, 2.0]


def test_cancel_of_gone_jobs_is_told_apart_from_cancelled_ones():
    fake = FakeCommands(
        cancel=per_id_failure(
            {"1"}, "scancel: error: Kill job error on job id {}: Invalid job id specified"
        )
    )
    report = cancel_with_retries(
        ["scancel"], ["1", "2"], "Invalid job id", fake, sleep=lambda s: None
    )
    assert (report.cancelled, report.gone, report.failed) == (["2"], ["1"], {})
    assert len(fake.cancels) == 1


def test_a_hung_cancel_is_retried_whole():
    answers = [([], None), (["1", "2"], [])]

    def cancel(ids):
        done, complaints = answers.pop(0)
        if complaints is None:
            raise CommandError(["scancel", *ids], None, reason="timed out after 60s")
        return done, complaints

    fake = FakeCommands(cancel=cancel)
    report = cancel_with_retries(["scancel"], ["1", "2"], None, fake, sleep=lambda s: None)
    assert report.cancelled == ["1", "2"] and not report.failed
    assert fake.cancels == [["scancel", "1", "2"]] * 2


def test_time_outs_are_retried_whole_never_split():
    """A batch system that does not answer: a bounded number of commands, all whole."""

    def cancel(ids):
        raise CommandError(["scancel", *ids], None, reason="timed out after 60s")

    fake = FakeCommands(cancel=cancel)
    ids = [str(i) for i in range(600)]
    report = cancel_with_retries(["scancel"], ids, None, fake, attempts=4, sleep=lambda s: None)
    assert len(fake.cancels) == 2 * 4  # two batches of at most 500 ids, 4 attempts each
    assert report.failed == dict.fromkeys(ids, "timed out after 60s")


def test_one_failing_id_does_not_fail_its_batch(capsys):
    """scancel names the id it cannot cancel: the others are reported cancelled at once, the
    failing one is retried alone, and the log says exactly what happened."""
    fake = FakeCommands(cancel=per_id_failure({"4"}))
    state = make_state(job_ids=[str(i) for i in range(1, 7)], list_argvs=[])
    sleeps = []
    assert clean_up(state, fake, sleep=sleeps.append, relist_delay=5.0, attempts=2, passes=2) == [
        "4"
    ]
    assert sorted(fake.cancelled) == ["1", "2", "3", "5", "6"]
    assert fake.cancels == [
        ["scancel", "1", "2", "3", "4", "5", "6"],
        ["scancel", "4"],
        ["scancel", "4"],
        ["scancel", "4"],
    ]
    assert sleeps == [1.0, 5.0, 1.0]
    reason = DENIED.format(4)
    assert logged(capsys) == [
        f"could not cancel 4 (attempt 1): {reason}",
        "cancelled 5 job(s): 1 2 3 5 6",
        f"could not cancel 1 job(s): 4: {reason}",
        f"could not cancel 4 (attempt 1): {reason}",
        f"could not cancel 1 job(s): 4: {reason}",
    ]


def test_a_batch_failing_as_a_whole_is_tried_in_halves(capsys):
    """A failure naming no id: the batch is tried again, then in halves, so every id but the
    bad one is cancelled; the bad one is tried again in the next pass."""
    fake = FakeCommands(cancel=whole_command_failure({"5"}))
    state = make_state(job_ids=[str(i) for i in range(1, 9)], list_argvs=[])
    assert clean_up(state, fake, sleep=lambda s: None, attempts=2, passes=2) == ["5"]
    assert sorted(fake.cancelled) == ["1", "2", "3", "4", "6", "7", "8"]
    everything = "1 2 3 4 5 6 7 8"
    assert [" ".join(c[1:]) for c in fake.cancels] == [
        everything,
        everything,
        "1 2 3 4",
        "5 6 7 8",
        "5 6",
        "5",
        "6",
        "7 8",
        "5",
        "5",
    ]
    assert logged(capsys) == [
        f"cancel of {everything} failed (attempt 1): {DOWN}",
        f"cancel of {everything} failed again ({DOWN}); trying it in halves",
        f"cancel of 5 6 7 8 failed again ({DOWN}); trying it in halves",
        f"cancel of 5 6 failed again ({DOWN}); trying it in halves",
        "cancelled 7 job(s): 1 2 3 4 6 7 8",
        f"could not cancel 1 job(s): 5: {DOWN}",
        f"could not cancel 5 (attempt 1): {DOWN}",
        f"could not cancel 1 job(s): 5: {DOWN}",
    ]


def test_a_cancel_failing_always_is_bounded_and_logged_as_failed(capsys):
    fake = FakeCommands(cancel=lambda ids: ([], [DOWN]))
    ids = [str(i) for i in range(500)]
    state = make_state(job_ids=ids, list_argvs=[])
    sleeps = []
    assert clean_up(state, fake, sleep=sleeps.append, relist_delay=5.0) == sorted(ids)
    assert fake.cancelled == []
    # per pass and batch: attempts + 4 * log2(batch) commands at most; 3 passes
    assert len(fake.cancels) <= 3 * (4 + 4 * 9)
    assert sum(sleeps) <= 3 * 1.0 + 5.0 + 10.0
    lines = logged(capsys)
    assert not any(line.startswith("cancelled") or "already gone" in line for line in lines)
    summaries = [
        m
        for m in map(re.compile(r"could not cancel (\d+) job\(s\): [^:]*: (.*)").match, lines)
        if m
    ]
    assert sum(int(m.group(1)) for m in summaries) == 3 * 500  # every id, in every pass
    assert {m.group(2) for m in summaries} <= {DOWN, f"{DOWN} (gave up after 40 cancel commands)"}


def test_a_failed_id_is_cancelled_in_the_next_pass(capsys):
    fake = FakeCommands(cancel=per_id_failure({"2"}, times=2))
    state = make_state(job_ids=["1", "2", "3"], list_argvs=[])
    assert clean_up(state, fake, sleep=lambda s: None, attempts=2) == []
    assert sorted(fake.cancelled) == ["1", "2", "3"]
    lines = logged(capsys)
    assert lines[-3:] == [
        "cancelled 2 job(s): 1 3",
        f"could not cancel 1 job(s): 2: {DENIED.format(2)}",
        "cancelled 1 job(s): 2",
    ]


def test_a_hung_cancel_whose_grandchild_left_its_group_does_not_hold_the_watchdog(
    fake_commands,  # noqa: F811
    capsys,
):
    """The old runner waited for the pipes without limit; this one returns in bounded time."""
    fake_commands.hang("scancel", seconds=120, escape=True)
    state = make_state(list_argvs=[])
    started = time.monotonic()
    left = clean_up(
        state, lambda argv: run(argv, timeout=1), sleep=lambda s: None, attempts=1, passes=1
    )
    elapsed = time.monotonic() - started
    assert left == ["1", "2"]
    assert elapsed < 1 + _shell.KILL_GRACE + 2 * _shell.FINAL_WAIT, elapsed
    assert logged(capsys) == ["could not cancel 2 job(s): 1 2: timed out after 1s"]
    assert fake_commands.calls("scancel") == 1


# ---------------------------------------------------------------------- cleanup passes


def test_clean_up_cancels_known_and_tagged_jobs_of_its_cluster_only():
    listing1 = f"1|{TAG.text()}\n7|{TAG.text()}\n8|{OTHER.text()}\n9|plain comment\n"
    listing2 = f"7|{TAG.text()}\n10|{TAG.text()}\n"  # 10 was submitted while the owner died
    fake = FakeCommands(listings=[listing1, listing2])
    sleeps = []
    assert clean_up(make_state(), fake, sleep=sleeps.append, relist_delay=3.0) == []
    assert fake.cancels == [["scancel", "1", "2", "7"], ["scancel", "10"]]
    assert sleeps == [3.0]


def test_clean_up_without_listing_still_cancels_known_ids(capsys):
    fake = FakeCommands()

    def fake_fail(argv):
        if argv[0] == "squeue":
            raise CommandError(argv, 1, "", "squeue: error: down\n")
        return fake(argv)

    assert clean_up(make_state(), fake_fail, sleep=lambda s: None) == []
    assert fake.cancels == [["scancel", "1", "2"]]
    assert logged(capsys)[-1] == (
        "could not list tagged jobs; jobs submitted at the owner's death may remain"
    )


def test_clean_up_cancels_the_known_ids_as_the_engine_would():
    # a PBS cluster (one argument per qdel) with 200 subjobs of one array and a plain job;
    # its tag listing also shows a subjob of an array submitted while the owner died
    tasks = [f"65[{i}].server" for i in range(200)]
    listing = "".join(f"{i}|{TAG.text()}\n" for i in [*tasks, "66[0].server"])
    fake = FakeCommands(listings=[listing, listing])
    state = make_state(
        cancel_argv=["qdel"],
        job_ids=[*tasks, "70.server"],
        cancel_max_ids=1,
        cancel_plan=[[["70.server"], ["70.server"]], [["65[0-199].server"], tasks]],
    )
    assert clean_up(state, fake, sleep=lambda s: None) == []
    # the second listing still shows them all: cancelled already, not cancelled again
    assert [c for c in fake.calls if c[0] == "qdel"] == [
        ["qdel", "66[0].server"],
        ["qdel", "70.server"],
        ["qdel", "65[0-199].server"],
    ]


def test_a_range_whose_tasks_changed_since_the_plan_is_cancelled_by_id():
    tasks = [f"65[{i}].s" for i in range(3)]
    state = make_state(
        cancel_argv=["qdel"],
        cancel_max_ids=1,
        list_argvs=[],
        job_ids=apply_journal(tasks, "- 65[1].s\n"),
        cancel_plan=[[["65[0-2].s"], tasks]],
    )
    fake = FakeCommands()
    assert clean_up(state, fake, sleep=lambda s: None) == []
    assert [c for c in fake.calls if c[0] == "qdel"] == [["qdel", "65[0].s"], ["qdel", "65[2].s"]]


def test_a_range_that_could_not_be_cancelled_is_reported():
    fake = FakeCommands(cancel=lambda ids: (ids, []) if ids == ["70.s"] else ([], ["down"]))
    tasks = ["65[0].s", "65[1].s"]
    state = make_state(
        cancel_argv=["qdel"],
        job_ids=[*tasks, "70.s"],
        cancel_max_ids=1,
        cancel_plan=[[["70.s"], ["70.s"]], [["65[0-1].s"], tasks]],
        list_argvs=[],
    )
    assert clean_up(state, fake, sleep=lambda s: None) == ["65[0-1].s"]


def test_only_regular_files_of_this_user_are_removed(tmp_path):
    key = tmp_path / ".dask-jobqueue.worker.key.x"
    key.write_text("secret")
    target = tmp_path / "precious"
    target.write_text("keep")
    link = tmp_path / ".dask-jobqueue.worker.cert.y"
    link.symlink_to(target)
    gone = str(tmp_path / "never-there")
    assert remove_owned_files([str(key), str(link), gone]) == [str(key)]
    assert not key.exists() and link.is_symlink() and target.read_text() == "keep"


# ---------------------------------------------------------------------- the journal


def test_every_change_is_on_disk_at_once_and_the_journal_is_folded(tmp_path):
    state = make_state(owner_pid=os.getpid(), job_ids=[])
    planned = []

    def planner(ids):
        planned.append(len(ids))
        return [([f"r{len(ids)}"], list(ids))]

    dog = Watchdog(state, planner=planner)
    dog.start()
    try:
        path = dog.state_path
        live: list[str] = []
        for i in range(3000):
            dog.record(added=[str(i)])
            live.append(str(i))
            if i % 2 == 1:
                dog.record(removed=[str(i - 1)])
                live.remove(str(i - 1))
            if i % 250 == 0:
                assert sorted(WatchdogState.load(path).job_ids) == sorted(live)
        loaded = WatchdogState.load(path)
        assert sorted(loaded.job_ids) == sorted(live)
        # folded every N/2 changes for N live jobs (at least 256): 4,500 changes, <= 1,500 jobs
        assert len(planned) <= 1 + 4500 // 256, planned
        written = WatchdogState.read(path)
        assert written.cancel_plan == [[[f"r{len(written.job_ids)}"], written.job_ids]]
    finally:
        dog.stop()
    assert not os.path.exists(path)


def test_a_state_replaced_while_it_is_read_is_read_again(tmp_path, monkeypatch):
    """The owner folds while someone loads: the old state names a journal that is already
    removed; the load reads the new state and its journal, it does not drop their ids."""
    path = tmp_path / "state.json"
    make_state(job_ids=["1"], journal="journal-1").write(path)  # journal-1 never written
    reads = []
    real_read = WatchdogState.read.__func__

    def read(cls, at):
        reads.append(at)
        if len(reads) == 2:  # the fold lands between the load's first two reads
            make_state(job_ids=["1", "2"], journal="journal-2").write(path)
            (tmp_path / "journal-2").write_text("+ 3\n")
        return real_read(cls, at)

    monkeypatch.setattr(WatchdogState, "read", classmethod(read))
    assert sorted(WatchdogState.load(path).job_ids) == ["1", "2", "3"]
    assert len(reads) == 3


def test_a_journal_missing_for_good_is_empty(tmp_path):
    """The owner died between writing the state and creating its journal."""
    path = tmp_path / "state.json"
    make_state(job_ids=["1"], journal="journal-1").write(path)
    assert WatchdogState.load(path).job_ids == ["1"]


def test_changes_during_a_fold_are_on_disk_whenever_the_owner_dies(tmp_path):
    """The fold runs in a thread; held there, every change is still in what a watchdog
    would read, before and after the fold ends."""
    import threading

    release = threading.Event()
    calls = []

    def planner(ids):
        calls.append(len(ids))
        if len(calls) == 2:  # the first fold after start(): held until released
            assert release.wait(30)
        return [(list(ids), list(ids))]

    dog = Watchdog(make_state(owner_pid=os.getpid(), job_ids=["0"]), planner=planner)
    dog.start()
    try:
        path = dog.state_path
        dog.record(added=[str(i) for i in range(1, 300)])  # starts a fold (held)
        assert _wait(lambda: len(calls) == 2, 10)
        dog.record(added=["a", "b"], removed=["5"])
        expected = sorted({str(i) for i in range(300)} - {"5"} | {"a", "b"})
        assert sorted(WatchdogState.load(path).job_ids) == expected
        release.set()
        assert _wait(lambda: WatchdogState.read(path).journal != "journal-1", 10)
        dog.record(removed=["a"])
        expected.remove("a")
        assert sorted(WatchdogState.load(path).job_ids) == expected
        assert sorted(name for name in os.listdir(dog.directory) if name.startswith("journal")) == [
            WatchdogState.read(path).journal
        ]  # the old journal is gone
    finally:
        release.set()
        dog.stop()


# ---------------------------------------------------------------------- the real process


def _fake_batch_system(tmp_path: Path) -> tuple[Path, Path]:
    """A `scancel` that logs its arguments and a `squeue` printing a file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "cancelled.log"
    listing = tmp_path / "listing.txt"
    listing.write_text(f"5|{TAG.text()}\n6|{OTHER.text()}\n")
    (bin_dir / "scancel").write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
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
                          parser="dask_jobqueue.dialects.slurm:parse_slurm_tags", owned_files=sys.argv[4:])
    dog = Watchdog(state)
    dog.start()
    dog.update(["1", "2"])
    dog.record(added=["3"], removed=["2"])  # in the journal only
    print(dog.process.pid, dog.directory, flush=True)
    if sys.argv[3] == "stop":
        dog.stop()
        print("stopped", flush=True)
    time.sleep(60)
    """
)


def _start_owner(
    tmp_path: Path, mode: str, owned: tuple[Path, ...] = ()
) -> tuple[subprocess.Popen, int, str]:
    bin_dir, _ = _fake_batch_system(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            OWNER,
            str(bin_dir / "scancel"),
            str(bin_dir / "squeue"),
            mode,
            *map(str, owned),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
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
    keys = tuple(tmp_path / f".dask-jobqueue.worker.{k}.x" for k in ("key", "cert"))
    for key in keys:
        key.write_text("secret")
    owner, dog_pid, directory = _start_owner(tmp_path, "run", keys)
    log = tmp_path / "cancelled.log"
    try:
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        time.sleep(1.5)
        assert not log.exists(), "cancelled while the owner was alive"
        assert all(key.exists() for key in keys)
        killed = time.monotonic()
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        # the ids of the state and of its journal ("2" ended, "3" came), and the tagged "5"
        assert _wait(lambda: log.exists() and "1 3 5" in log.read_text(), 10)
        first_cancel = time.monotonic() - killed
        assert first_cancel < 4, first_cancel
        assert not any(key.exists() for key in keys)  # the owner's TLS files are gone
        # the second listing round (5 s later) finds nothing new; then the watchdog exits
        assert _wait(lambda: not pid_alive(dog_pid), 15)
        assert log.read_text().split("\n")[0] == "1 3 5"
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


def test_watchdog_program_imports_neither_distributed_nor_the_cluster(tmp_path):
    """The watchdog, started as the cluster starts it (isolated mode, the package's own
    directory first), imports the package's config, runner, tags and dialects only."""
    from dask_jobqueue import watchdog

    probe = watchdog._LAUNCH.replace(
        "sys.exit(main())",
        "code = 0\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "import dask_jobqueue.dialects.slurm\n"
        "print(sorted(m for m in ('distributed', 'dask_jobqueue.cluster', "
        "'dask_jobqueue.engine', 'dask_jobqueue.job') if m in sys.modules))",
    ).replace("; from dask_jobqueue", "\nfrom dask_jobqueue")
    package_parent = str(Path(watchdog.__file__).resolve().parent.parent)
    out = subprocess.run(
        [sys.executable, "-I", "-c", probe, package_parent],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_the_cluster_wiring_journals_each_submission_and_ending(tmp_path):
    """The engine's submissions and endings reach the state as they happen, with the files
    the watchdog removes and the engine's own way of cancelling (array ranges)."""
    import asyncio

    from dask_jobqueue.slurm import SLURMJob
    from dask_jobqueue.supervisor import _watchdog_for

    from .fakes import engine_with

    job = SLURMJob("tcp://127.0.0.1:9", cores=1, memory="1GB")
    engine, runner = engine_with(job, lambda argv: "")
    key = tmp_path / ".dask-jobqueue.worker.key.x"
    key.write_text("secret")
    dog = _watchdog_for(engine, [str(key)])
    dog.start()
    try:
        outputs = iter(["11\n", "12\n", "13\n"])
        runner.answer = lambda argv: next(outputs)
        for _ in range(3):
            asyncio.run(engine.submit(job))
        loaded = WatchdogState.load(dog.state_path)
        assert sorted(loaded.job_ids) == ["11", "12", "13"]
        assert loaded.owned_files == [str(key)]
        engine.release(["12"])
        assert sorted(WatchdogState.load(dog.state_path).job_ids) == ["11", "13"]
        dog.update(engine.live_ids)  # a full write carries the engine's cancel commands
        assert WatchdogState.read(dog.state_path).cancel_plan == [[["11", "13"], ["11", "13"]]]
    finally:
        dog.stop()
