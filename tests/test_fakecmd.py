"""The fault-test harness of ``tests/fakecmd.py``, against harmless real commands."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time

import pytest

from dask_jobqueue._shell import CommandError, run_command

from . import fakecmd
from .fakecmd import FakeCommands

fake_commands = fakecmd.fake_commands  # the fixture the fault tests use


def run(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=30)


def test_fake_comes_first_on_path_and_counts_calls(fake_commands):
    fake_commands.wrap("echo")
    assert os.environ["PATH"].split(os.pathsep)[0] == str(fake_commands.bin_dir)
    assert run("echo", "a b", "c\nd").stdout == "a b c\nd\n"
    assert run("echo").stdout == "\n"
    assert fake_commands.calls("echo") == 2
    assert fake_commands.argv("echo") == [["a b", "c\\nd"], []]
    assert fake_commands.calls("cat") == 0


def test_path_is_restored_after_the_test(tmp_path):
    before = os.environ["PATH"]
    with pytest.MonkeyPatch.context() as mp:
        FakeCommands(tmp_path, mp)
        assert os.environ["PATH"] != before
    assert os.environ["PATH"] == before


def test_fail_times_then_the_real_command(fake_commands):
    fake_commands.fail_times("echo", 2, stderr="echo: error: Socket timed out", rc=7)
    first, second, third = (run("echo", "hi") for _ in range(3))
    assert (first.returncode, first.stdout, first.stderr) == (
        7,
        "",
        "echo: error: Socket timed out\n",
    )
    assert second.returncode == 7
    assert (third.returncode, third.stdout, third.stderr) == (0, "hi\n", "")
    assert fake_commands.calls("echo") == 3


def test_fail_matching_fails_only_calls_with_a_matching_argument(fake_commands):
    fake_commands.fail_matching(
        "echo", "^--array=0-([2-9]|[1-9][0-9]+)$", stderr="sbatch: error: too large", rc=1
    )
    refused = run("echo", "--array=0-12", "x y")
    small = run("echo", "--array=0-1", "x y")
    unrelated = run("echo", "--array=0-12x")
    assert (refused.returncode, refused.stdout, refused.stderr) == (
        1,
        "",
        "sbatch: error: too large\n",
    )
    assert (small.returncode, small.stdout) == (0, "--array=0-1 x y\n")
    assert (unrelated.returncode, unrelated.stdout) == (0, "--array=0-12x\n")
    assert [a[0] for a in fake_commands.argv("echo")] == [
        "--array=0-12",
        "--array=0-1",
        "--array=0-12x",
    ]


def test_counts_from_now_when_a_behaviour_is_installed(fake_commands):
    fake_commands.wrap("true")
    run("true")
    run("true")
    fake_commands.unknown_job("true", 1, stderr="qstat: Unknown Job Id 12.server", rc=153)
    assert run("true").returncode == 153
    assert run("true").returncode == 0
    assert fake_commands.calls("true") == 4


def test_fail_always(fake_commands):
    fake_commands.fail_always("cat", stderr="cat: permission denied", rc=2, stdout="partial")
    for _ in range(3):
        done = run("cat", stdin="never read")
        assert (done.returncode, done.stdout, done.stderr) == (
            2,
            "partial\n",
            "cat: permission denied\n",
        )


def test_banner_before_and_after(fake_commands):
    fake_commands.banner("echo", "*** Welcome to site 2024, 3 nodes down ***")
    assert run("echo", "Submitted batch job 42").stdout == (
        "*** Welcome to site 2024, 3 nodes down ***\nSubmitted batch job 42\n"
    )
    fake_commands.banner("cat", "motd", where="after", stream="stderr")
    done = run("cat", stdin="body\n")
    assert (done.stdout, done.stderr) == ("body\n", "motd\n")
    fake_commands.banner("false", "after", where="after")
    assert run("false").returncode == 1  # the real exit status is kept


def test_hang_without_running_the_real_command(fake_commands):
    fake_commands.hang("echo", seconds=30)
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run(["echo", "never"], capture_output=True, timeout=0.5)
    assert fake_commands.calls("echo") == 1


async def test_hanging_fake_is_ended_by_run_command_timeout(fake_commands):
    fake_commands.hang("echo", seconds=30, grandchild=True)
    start = time.monotonic()
    with pytest.raises(CommandError, match="timed out after 0.5s"):
        await run_command(["echo", "x"], timeout=0.5)
    assert time.monotonic() - start < 3
    pids = (fake_commands.state_dir / "hung.pids").read_text().split()
    await asyncio.sleep(0.2)
    for pid in pids:
        state = _state(int(pid))
        assert state in (None, "Z"), (pid, state)


async def test_run_then_hang_runs_the_real_command_and_holds_stdout(fake_commands, tmp_path):
    marker = tmp_path / "ran"
    fake_commands.run_then_hang("touch", seconds=30)
    with pytest.raises(CommandError, match="timed out"):
        await run_command(["touch", str(marker)], timeout=1)
    assert marker.exists()  # the real command ran
    fake_commands.run_then_hang("echo", seconds=30)
    proc = subprocess.Popen(["echo", "Submitted batch job 7"], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"Submitted batch job 7\n"
        time.sleep(0.3)
        assert proc.poll() is None  # still holding stdout
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert fake_commands.real_outputs("echo") == ["Submitted batch job 7\n"]


def test_run_then_fail_runs_the_real_command_and_reports_failure(fake_commands, tmp_path):
    marker = tmp_path / "accepted"
    fake_commands.run_then_fail("touch", stderr="touch: error: Socket timed out", rc=1)
    done = run("touch", str(marker))
    assert (done.returncode, done.stderr) == (1, "touch: error: Socket timed out\n")
    assert marker.exists()
    fake_commands.run_then_fail("echo", stderr="lost", rc=3)
    done = run("echo", "Submitted batch job 9")
    assert (done.returncode, done.stdout) == (3, "")
    assert fake_commands.real_outputs("echo") == ["Submitted batch job 9\n"]
    fake_commands.run_then_fail("cat", stderr="lost", rc=3, keep_output=True)
    assert run("cat", stdin="kept\n").stdout == "kept\n"


def test_fakes_apply_in_subprocesses_and_to_run_command(fake_commands):
    fake_commands.fail_times("echo", 1, stderr="first call fails", rc=5)
    code = "import subprocess; print(subprocess.run(['echo', 'x']).returncode)"
    child = run(sys.executable, "-c", code)
    assert child.stdout.strip() == "5"
    assert asyncio.run(run_command(["echo", "ok"])).stdout == "ok\n"
    assert fake_commands.calls("echo") == 2


def test_concurrent_calls_are_counted_exactly(fake_commands):
    fake_commands.fail_times("true", 5, stderr="busy", rc=1)
    procs = [subprocess.Popen(["true"], stderr=subprocess.DEVNULL) for _ in range(20)]
    codes = sorted(p.wait(timeout=30) for p in procs)
    assert codes == [0] * 15 + [1] * 5
    assert fake_commands.calls("true") == 20


def test_missing_real_command_is_refused(fake_commands):
    with pytest.raises(FileNotFoundError, match="no real 'no-such-tool-xyz'"):
        fake_commands.wrap("no-such-tool-xyz")
    fake_commands.fail_always("no-such-tool-xyz", stderr="gone", rc=127)
    assert run("no-such-tool-xyz").returncode == 127
    with pytest.raises(ValueError, match="where"):
        fake_commands.banner("echo", "x", where="middle")


@pytest.mark.env("slurm")
async def test_fakes_in_front_of_real_slurm(fake_commands):
    """Banner, accepted-then-failed submit and "unknown job" answers, on the real Slurm."""
    notice = "Cluster notice: maintenance on 2026-12-01, 3 nodes down"
    submit = ["sbatch", "-J", "djq-fakecmd-harness", "--hold", "--wrap", "sleep 60"]
    job_ids: list[str] = []
    try:
        fake_commands.banner("sbatch", notice)
        first = (await run_command(submit, timeout=30)).stdout.splitlines()
        assert first[0] == notice
        job_ids.append(re.fullmatch(r"Submitted batch job (\d+)", first[1]).group(1))

        fake_commands.run_then_fail(
            "sbatch", stderr="sbatch: error: Socket timed out on send/recv operation", rc=1
        )
        with pytest.raises(CommandError, match="Socket timed out") as info:
            await run_command(submit, timeout=30)
        assert info.value.stdout == ""
        (real,) = fake_commands.real_outputs("sbatch")
        job_ids.append(re.fullmatch(r"Submitted batch job (\d+)\n", real).group(1))

        fake_commands.unknown_job(
            "squeue", 1, stderr="slurm_load_jobs error: Invalid job id specified", rc=1
        )
        query = ["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i %T"]
        with pytest.raises(CommandError, match="Invalid job id"):
            await run_command(query, timeout=30)
        rows = (await run_command(query, timeout=30)).stdout.split()
        assert sorted(rows[0::2]) == sorted(job_ids)  # both jobs really exist
        assert (fake_commands.calls("sbatch"), fake_commands.calls("squeue")) == (2, 2)
    finally:
        if job_ids:
            subprocess.run(["scancel", *job_ids], check=False, timeout=30)


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None
