"""Quoting for the job's shell and running batch commands."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dask_jobqueue import _shell
from dask_jobqueue._shell import (
    CommandError,
    join_command,
    quote_keep_env,
    run_command,
    run_command_sync,
)


@pytest.mark.parametrize(
    "token",
    [
        "plain",
        "with space",
        "it's",
        'dou"ble',
        "$(touch /tmp/x)",
        "`id`",
        "a;b|c&d>e<f",
        "back\\slash",
        "new\nline",
        "$HOME/literal-dollar-$(",
        "",
    ],
)
def test_tokens_reach_the_program_unchanged(token):
    if "$HOME" in token:
        expected = token.replace("$HOME", os.environ.get("HOME", ""))
    else:
        expected = token
    out = subprocess.run(
        ["bash", "-c", f"printf '%s\\0' {quote_keep_env(token)}"], capture_output=True, text=True
    ).stdout
    assert out == expected + "\0"


def test_environment_references_expand():
    line = join_command(["echo", "$A", "${B}-x", "pre $A post"])
    out = subprocess.run(["bash", "-c", f"A=1; B=2; {line}"], capture_output=True, text=True).stdout
    assert out == "1 2-x pre 1 post\n"


async def test_run_command_reports_exit_code_and_stderr():
    with pytest.raises(CommandError) as info:
        await run_command(["bash", "-c", "echo out; echo 'bad thing' >&2; exit 3"])
    err = info.value
    assert (err.returncode, err.stdout.strip(), err.stderr.strip()) == (3, "out", "bad thing")
    assert "failed with exit code 3" in str(err) and "bad thing" in str(err)


async def test_run_command_missing_program():
    with pytest.raises(CommandError, match="program not found"):
        await run_command(["/nonexistent/qsub", "x"])


async def test_run_command_timeout_kills():
    with pytest.raises(CommandError, match="timed out after 0.3s"):
        await run_command(["sleep", "30"], timeout=0.3)


def test_command_error_pickles():
    import pickle

    err = CommandError(["qsub", "x"], 2, "o", "e")
    again = pickle.loads(pickle.dumps(err))
    assert (again.argv, again.returncode, again.stderr) == (["qsub", "x"], 2, "e")


def pid_dead(pid: int, wait: float = 2.0) -> bool:
    """Whether ``pid`` is gone (a zombie counts as gone), polling up to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def read_pid(path: Path, wait: float = 5.0) -> int:
    deadline = time.monotonic() + wait
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.02)
    return int(path.read_text())


def hang_with_grandchild(pidfile: Path, escape: bool = False) -> list[str]:
    """bash that starts a hanging grandchild holding stdout/stderr, records its pid, waits."""
    sleeper = "setsid sleep 60" if escape else "sleep 60"
    return ["bash", "-c", f"{sleeper} & echo $! > {pidfile}; echo started; wait"]


async def test_timeout_kills_a_grandchild_that_holds_the_pipes(tmp_path):
    pidfile = tmp_path / "pid"
    start = time.monotonic()
    with pytest.raises(CommandError, match=r"timed out after 1s"):
        await run_command(hang_with_grandchild(pidfile), timeout=1)
    elapsed = time.monotonic() - start
    assert elapsed < 1 + 3, elapsed
    assert pid_dead(read_pid(pidfile))


async def test_timeout_is_bounded_when_a_descendant_left_the_group(tmp_path):
    """A grandchild in a session of its own survives the group kill; we still return."""
    pidfile = tmp_path / "pid"
    start = time.monotonic()
    try:
        with pytest.raises(CommandError, match="timed out"):
            await run_command(hang_with_grandchild(pidfile, escape=True), timeout=1)
        elapsed = time.monotonic() - start
        bound = 1 + _shell.KILL_GRACE + 2 * _shell.FINAL_WAIT
        assert elapsed < bound, elapsed
    finally:
        os.kill(read_pid(pidfile), signal.SIGKILL)


async def test_command_that_exits_while_a_child_holds_its_output(tmp_path):
    """The command's own exit status and output count; the lingering child is ended."""
    pidfile = tmp_path / "pid"
    argv = ["bash", "-c", f"sleep 60 & echo $! > {pidfile}; echo 'Submitted 42'; exit 0"]
    start = time.monotonic()
    result = await run_command(argv, timeout=30)
    assert result.stdout == "Submitted 42\n"
    assert time.monotonic() - start < _shell.EOF_GRACE + _shell.KILL_GRACE + 2
    assert pid_dead(read_pid(pidfile))


async def test_cancelling_the_awaiting_task_kills_the_group(tmp_path):
    pidfile = tmp_path / "pid"
    task = asyncio.ensure_future(run_command(hang_with_grandchild(pidfile), timeout=60))
    grandchild = await asyncio.to_thread(read_pid, pidfile)
    task.cancel()
    start = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - start < 3
    assert pid_dead(grandchild)


async def test_sigterm_first_then_sigkill(tmp_path):
    """A command ignoring SIGTERM is killed after the grace; one honouring it ends at once."""
    marker = tmp_path / "term"
    argv = ["bash", "-c", f"trap 'echo term > {marker}; exit 1' TERM; sleep 60 & wait"]
    with pytest.raises(CommandError, match="timed out"):
        await run_command(argv, timeout=0.5)
    assert marker.read_text() == "term\n"

    start = time.monotonic()
    argv = ["bash", "-c", "trap '' TERM; sleep 60 & wait; sleep 60"]
    with pytest.raises(CommandError, match="timed out"):
        await run_command(argv, timeout=0.5)
    elapsed = time.monotonic() - start
    assert _shell.KILL_GRACE <= elapsed < 0.5 + _shell.KILL_GRACE + 2, elapsed


async def test_huge_output_on_both_pipes_does_not_deadlock():
    code = "import sys; sys.stdout.write('o' * 8_000_000); sys.stderr.write('e' * 8_000_000)"
    result = await run_command([sys.executable, "-c", code], timeout=60)
    assert (len(result.stdout), len(result.stderr)) == (8_000_000, 8_000_000)


async def test_huge_input_and_output_through_cat():
    text = "line of input\n" * 500_000
    result = await run_command(["cat"], stdin=text, timeout=60)
    assert result.stdout == text


async def test_input_to_a_command_that_does_not_read_it():
    result = await run_command(["true"], stdin="x" * 5_000_000, timeout=30)
    assert result.stdout == ""


async def test_timeout_of_a_command_we_may_not_signal(monkeypatch):
    """OAR's clients are setuid: an ordinary user cannot signal them on timeout."""
    real_killpg = os.killpg
    refused = []

    def refuse(pgid, sig):
        refused.append(pgid)
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "killpg", refuse)
    # asyncio's transport signals the process itself when closed: refused the same way
    monkeypatch.setattr(os, "kill", refuse)
    monkeypatch.setattr(_shell, "UNSIGNALLABLE_GRACE", 0.5)
    start = time.monotonic()
    try:
        with pytest.raises(CommandError, match=r"timed out after 0.3s"):
            await run_command(["sleep", "30"], timeout=0.3)
        assert time.monotonic() - start < 0.3 + 0.5 + 2
        assert refused and not pid_dead(refused[0], wait=0)  # left running, as it must be
    finally:
        monkeypatch.undo()
        for pgid in set(refused):
            real_killpg(pgid, signal.SIGKILL)
        # Let the loop see the exit, so the process is not reported as leaked at teardown.
        await asyncio.sleep(0.5)


async def test_unsignallable_command_that_ends_within_the_grace(monkeypatch):
    def refuse(pgid, sig):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "killpg", refuse)
    with pytest.raises(CommandError, match="timed out"):
        await run_command(["sleep", "1"], timeout=0.2)


def test_sync_timeout_kills_a_grandchild_that_holds_the_pipes(tmp_path):
    pidfile = tmp_path / "pid"
    start = time.monotonic()
    with pytest.raises(CommandError, match=r"timed out after 1s"):
        run_command_sync(hang_with_grandchild(pidfile), timeout=1)
    assert time.monotonic() - start < 1 + 3
    assert pid_dead(read_pid(pidfile))


def test_sync_results_and_errors():
    assert run_command_sync(["bash", "-c", "echo hi; echo e >&2"], 10).stdout == "hi\n"
    assert run_command_sync(["cat"], 10, stdin="abc").stdout == "abc"
    with pytest.raises(CommandError, match="failed with exit code 4") as info:
        run_command_sync(["bash", "-c", "echo oops >&2; exit 4"], 10)
    assert info.value.stderr == "oops\n"
    with pytest.raises(CommandError, match="program not found"):
        run_command_sync(["/nonexistent/qdel", "1"], 10)
    big = run_command_sync([sys.executable, "-c", "print('x' * 5_000_000)"], 30)
    assert len(big.stdout) == 5_000_001


def test_sync_timeout_is_bounded_when_a_descendant_left_the_group(tmp_path):
    """The watchdog's case: a hung command whose grandchild (own session) holds the pipes."""
    pidfile = tmp_path / "pid"
    start = time.monotonic()
    try:
        with pytest.raises(CommandError, match="timed out after 1s") as info:
            run_command_sync(hang_with_grandchild(pidfile, escape=True), timeout=1)
        elapsed = time.monotonic() - start
        assert elapsed < 1 + _shell.KILL_GRACE + 2 * _shell.FINAL_WAIT, elapsed
        assert info.value.stdout == "started\n"  # what it printed before hanging is kept
    finally:
        os.kill(read_pid(pidfile), signal.SIGKILL)


@pytest.mark.parametrize("escape", [False, True], ids=["in-group", "left-group"])
def test_sync_command_that_exits_while_a_descendant_holds_its_output(tmp_path, escape):
    """Its own exit status and output count, within the EOF grace (not the time-out)."""
    pidfile = tmp_path / "pid"
    sleeper = "setsid sleep 60" if escape else "sleep 60"
    argv = ["bash", "-c", f"{sleeper} & echo $! > {pidfile}; echo 'Submitted 42'; exit 0"]
    start = time.monotonic()
    try:
        result = run_command_sync(argv, timeout=30)
        assert result.stdout == "Submitted 42\n"
        bound = _shell.EOF_GRACE + _shell.KILL_GRACE + _shell.FINAL_WAIT + 1
        assert time.monotonic() - start < bound
        if not escape:
            assert pid_dead(read_pid(pidfile))
    finally:
        if escape:
            os.kill(read_pid(pidfile), signal.SIGKILL)


def test_sync_command_that_closes_its_output_and_runs_on():
    with pytest.raises(CommandError, match="timed out after 1s"):
        run_command_sync(["bash", "-c", "echo hi; exec >&- 2>&-; sleep 30"], timeout=1)


def test_sync_input_larger_than_a_pipe_to_a_command_that_stops_reading():
    result = run_command_sync(["head", "-c", "10"], 10, stdin="x" * 1_000_000)
    assert result.stdout == "x" * 10
