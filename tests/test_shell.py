"""Quoting for the job's shell and running batch commands."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess

import pytest

from dask_jobqueue._shell import CommandError, join_command, quote_keep_env, run_command


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


async def test_timeout_of_a_command_we_may_not_signal(monkeypatch):
    """OAR's clients are setuid: an ordinary user cannot kill them on timeout."""
    started = []
    original = asyncio.create_subprocess_exec

    async def spawn(*args, **kwargs):
        proc = await original(*args, **kwargs)
        started.append(proc)

        def refuse():
            raise PermissionError(1, "Operation not permitted")

        proc.kill = refuse
        return proc

    monkeypatch.setattr(asyncio, "create_subprocess_exec", spawn)
    try:
        with pytest.raises(CommandError, match="timed out"):
            await run_command(["sleep", "30"], timeout=0.3)
    finally:
        for proc in started:
            os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()


def test_command_error_pickles():
    import pickle

    err = CommandError(["qsub", "x"], 2, "o", "e")
    again = pickle.loads(pickle.dumps(err))
    assert (again.argv, again.returncode, again.stderr) == (["qsub", "x"], 2, "e")
