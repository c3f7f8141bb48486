"""Fake commands in front of real ones, for fault tests.

:class:`FakeCommands` makes a directory of small bash scripts and puts it first on ``PATH``
(through pytest's ``monkeypatch``, so it is undone after the test). Each script stands in for
one program (``sbatch``, ``qstat``, ...), wraps the REAL program — the one found on ``PATH``
without the fake directory when the behaviour is installed, called by absolute path — and adds
a behaviour::

    from .fakecmd import fake_commands  # noqa: F401  (the fixture)

    def test_submit_banner(fake_commands):
        fake_commands.banner("sbatch", "Welcome to cluster 2024: 3 nodes down")
        fake_commands.fail_times("squeue", 2, stderr="squeue: error: Socket timed out", rc=1)
        ...  # run the library: its run_command finds the fakes on PATH
        assert fake_commands.calls("sbatch") == 1

Behaviours (each replaces the previous one of that program; counts of calls "from now" start
when the behaviour is installed):

``wrap(name)``
    only count calls, then run the real program.
``fail_times(name, n, stderr, rc=1, stdout="")``
    the next ``n`` calls print ``stdout``/``stderr`` and exit ``rc`` without running the real
    program; later calls run it.
``fail_always(name, stderr, rc=1, stdout="")``
    every call fails that way.
``fail_matching(name, pattern, stderr, rc=1, stdout="")``
    calls with an argument matching the bash regular expression ``pattern`` fail that way (a
    submit refusing arrays over a site limit); the others run the real program.
``unknown_job(name, n, stderr, rc=1, stdout="")``
    what a scheduler answers for ids it does not know (after a controller restart, say), for
    the next ``n`` calls; the caller supplies the scheduler's exact text and exit code.
``banner(name, text, where="before", stream="stdout")``
    an extra line (e.g. a site's message of the day) ``before`` or ``after`` the real output.
``hang(name, seconds=3600, grandchild=False, escape=False)``
    hang without running the real program; with ``grandchild=True`` the script starts a
    hanging child that inherits the pipes and waits for it (a client whose helper hangs);
    with ``escape=True`` too, that child runs in a session of its own (``setsid``): killing
    the command's process group leaves it running, holding the pipes.
``run_then_hang(name, seconds=3600, grandchild=False)``
    run the real program (e.g. really submit), print its output, then hang holding stdout.
``run_then_fail(name, stderr, rc=1, keep_output=False)``
    run the real program (e.g. the job is accepted), then exit ``rc`` with ``stderr`` (such as
    ``"sbatch: error: Socket timed out"``); its real stdout is dropped unless ``keep_output``.

Read back: ``calls(name)`` (number of invocations since the fake directory was made),
``argv(name)`` (their arguments) and ``real_outputs(name)`` (the real stdout of each
``run_then_*`` call, e.g. to learn and cancel the job a failed submit created). ``kill_hung()``
ends every process a ``hang`` behaviour left (the fixture does it at teardown).

The fakes work for commands run by the library in the test process and in any subprocess
that inherits ``PATH``; they need ``bash`` and ``flock``. Create the fakes after any emulator
environment is in place: the "real" program is whatever ``PATH`` names at that moment (an
emulated ``qsub`` is fine). Arguments are recorded one call per line, fields separated by
``\\x1f``, newlines inside arguments written as ``\\n``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

_SEP = "\x1f"

_PROLOGUE = """#!/bin/bash
# fakecmd: {behaviour} in front of {real}
REAL={real_q}
STATE={state_q}
NAME={name_q}
BASE={base}
{helpers}
exec 9>>"$STATE/$NAME.lock"
"$FLOCK" 9
fields=()
for a in "$@"; do fields+=("${{a//$'\\n'/\\\\n}}"); done
(IFS=$'\\037'; printf '%s\\n' "${{fields[*]}}") >> "$STATE/$NAME.calls"
n=$(( $("$WC" -l < "$STATE/$NAME.calls") - BASE ))
"$FLOCK" -u 9
exec 9>&-
"""


class FakeCommands:
    """A directory of fake commands put first on ``PATH`` for one test.

    Parameters
    ----------
    directory
        Where the scripts (``directory/bin``) and their counters (``directory/state``) go.
    monkeypatch
        The test's ``monkeypatch``: ``PATH`` is changed through it.
    """

    def __init__(self, directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.bin_dir = Path(directory) / "bin"
        self.state_dir = Path(directory) / "state"
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.real_path = os.environ.get("PATH", os.defpath)
        monkeypatch.setenv("PATH", f"{self.bin_dir}{os.pathsep}{self.real_path}")

    # ------------------------------------------------------------------ behaviours

    def wrap(self, name: str) -> Path:
        """Count the calls of ``name``; each runs the real program."""
        return self._install(name, "wrap", 'exec "$REAL" "$@"\n')

    def fail_times(self, name: str, n: int, stderr: str, rc: int = 1, stdout: str = "") -> Path:
        """The next ``n`` calls fail (``stdout``, ``stderr``, exit ``rc``); then the real one."""
        body = (
            f'if [ "$n" -le {int(n)} ]; then\n'
            f"{_print(stdout)}{_print(stderr, err=True)}"
            f"  exit {int(rc)}\nfi\n"
            'exec "$REAL" "$@"\n'
        )
        return self._install(name, f"fail_times({n})", body)

    def fail_always(self, name: str, stderr: str, rc: int = 1, stdout: str = "") -> Path:
        """Every call fails (``stdout``, ``stderr``, exit ``rc``); the real one never runs."""
        body = f"{_print(stdout)}{_print(stderr, err=True)}exit {int(rc)}\n"
        return self._install(name, "fail_always", body, need_real=False)

    def fail_matching(
        self, name: str, pattern: str, stderr: str, rc: int = 1, stdout: str = ""
    ) -> Path:
        """Calls with an argument matching the bash regular expression ``pattern`` fail
        (``stdout``, ``stderr``, exit ``rc``); the others run the real program."""
        body = (
            f"RE={shlex.quote(pattern)}\n"
            'for a in "$@"; do\n'
            "if [[ $a =~ $RE ]]; then\n"
            f"{_print(stdout)}{_print(stderr, err=True)}"
            f"exit {int(rc)}\nfi\ndone\n"
            'exec "$REAL" "$@"\n'
        )
        return self._install(name, "fail_matching", body)

    def unknown_job(self, name: str, n: int, stderr: str, rc: int = 1, stdout: str = "") -> Path:
        """Answer the next ``n`` calls as the scheduler does for unknown job ids."""
        return self.fail_times(name, n, stderr=stderr, rc=rc, stdout=stdout)

    def banner(self, name: str, text: str, where: str = "before", stream: str = "stdout") -> Path:
        """Print ``text`` as an extra line ``before`` or ``after`` the real program's output."""
        if where not in ("before", "after"):
            raise ValueError(f"where must be 'before' or 'after', not {where!r}")
        if stream not in ("stdout", "stderr"):
            raise ValueError(f"stream must be 'stdout' or 'stderr', not {stream!r}")
        line = _print(text, err=stream == "stderr")
        if where == "before":
            body = f'{line}exec "$REAL" "$@"\n'
        else:
            body = f'"$REAL" "$@"\nrc=$?\n{line}exit $rc\n'
        return self._install(name, f"banner({where})", body)

    def hang(
        self, name: str, seconds: float = 3600, grandchild: bool = False, escape: bool = False
    ) -> Path:
        """Hang for ``seconds`` without running the real program (``escape``: through a
        grandchild in a session of its own)."""
        body = _hang(seconds, grandchild or escape, "$SETSID " if escape else "")
        return self._install(name, "hang", body, need_real=False)

    def run_then_hang(self, name: str, seconds: float = 3600, grandchild: bool = False) -> Path:
        """Run the real program, print its output, then hang holding stdout open."""
        body = (
            'out="$STATE/$NAME.out.$n"\n'
            # whole or not at all: the file appears once the real command has finished
            '"$REAL" "$@" > "$STATE/$NAME.partial.$n"\n'
            '"$MV" "$STATE/$NAME.partial.$n" "$out"\n'
            '"$CAT" "$out"\n'
            f"{_hang(seconds, grandchild)}"
        )
        return self._install(name, "run_then_hang", body)

    def run_then_fail(self, name: str, stderr: str, rc: int = 1, keep_output: bool = False) -> Path:
        """Run the real program, then exit ``rc`` with ``stderr`` (real stdout dropped)."""
        body = (
            'out="$STATE/$NAME.out.$n"\n'
            # whole or not at all: the file appears once the real command has finished
            '"$REAL" "$@" > "$STATE/$NAME.partial.$n"\n'
            '"$MV" "$STATE/$NAME.partial.$n" "$out"\n'
            + ('"$CAT" "$out"\n' if keep_output else "")
            + f"{_print(stderr, err=True)}exit {int(rc)}\n"
        )
        return self._install(name, "run_then_fail", body)

    # ------------------------------------------------------------------ reading back

    def calls(self, name: str) -> int:
        """How many times ``name`` was called since this fake directory was made."""
        return len(self.argv(name))

    def argv(self, name: str) -> list[list[str]]:
        """The arguments of every call of ``name``, in order."""
        path = self.state_dir / f"{name}.calls"
        if not path.exists():
            return []
        lines = path.read_text().splitlines()
        return [line.split(_SEP) if line else [] for line in lines]

    def real_outputs(self, name: str) -> list[str]:
        """Real stdout of each ``run_then_hang``/``run_then_fail`` call of ``name``, in order."""
        outs = sorted(
            self.state_dir.glob(f"{name}.out.*"), key=lambda p: int(p.name.rsplit(".", 1)[1])
        )
        return [p.read_text() for p in outs]

    def kill_hung(self) -> None:
        """SIGKILL every process a ``hang`` behaviour started that still runs."""
        path = self.state_dir / "hung.pids"
        if not path.exists():
            return
        for pid in {int(p) for p in path.read_text().split()}:
            if _is_ours(pid, self.bin_dir):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    # ------------------------------------------------------------------ internals

    def _helpers(self) -> str:
        # The scripts call their helpers by absolute path: any of them may be faked too.
        lines = []
        tools = (
            ("CAT", "cat"),
            ("SLEEP", "sleep"),
            ("WC", "wc"),
            ("FLOCK", "flock"),
            ("MV", "mv"),
            ("SETSID", "setsid"),
        )
        for var, tool in tools:
            found = shutil.which(tool, path=self.real_path)
            if found is None:
                raise FileNotFoundError(f"fake commands need {tool!r} on PATH")
            lines.append(f"{var}={shlex.quote(found)}")
        return "\n".join(lines)

    def _install(self, name: str, behaviour: str, body: str, need_real: bool = True) -> Path:
        if os.sep in name:
            raise ValueError(f"name must be a program name, not a path: {name!r}")
        real = shutil.which(name, path=self.real_path)
        if real is None and need_real:
            raise FileNotFoundError(f"no real {name!r} on PATH={self.real_path!r} to wrap")
        calls = self.state_dir / f"{name}.calls"
        base = len(calls.read_text().splitlines()) if calls.exists() else 0
        script = (
            _PROLOGUE.format(
                behaviour=behaviour,
                real=real,
                real_q=shlex.quote(real or f"/nonexistent/{name}"),
                state_q=shlex.quote(str(self.state_dir)),
                name_q=shlex.quote(name),
                base=base,
                helpers=self._helpers(),
            )
            + body
        )
        path = self.bin_dir / name
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(script)
        tmp.chmod(0o755)
        os.replace(tmp, path)  # a call running concurrently sees the old or the new script
        return path


def _print(text: str, err: bool = False) -> str:
    if not text:
        return ""
    if not text.endswith("\n"):
        text += "\n"
    return f"printf '%s' {shlex.quote(text)}{' >&2' if err else ''}\n"


def _hang(seconds: float, grandchild: bool, prefix: str = "") -> str:
    if grandchild:
        # (setsid execs the sleep: not a group leader, it needs no fork; $! is the sleep)
        return (
            f'{prefix}"$SLEEP" {float(seconds):g} &\necho $! >> "$STATE/hung.pids"\n'
            'echo $$ >> "$STATE/hung.pids"\nwait\nexit 0\n'
        )
    return f'echo $$ >> "$STATE/hung.pids"\nexec "$SLEEP" {float(seconds):g}\n'


def _is_ours(pid: int, bin_dir: Path) -> bool:
    """Whether ``pid`` is still one of our hung processes (not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(cmdline) and (
        cmdline[0].endswith(b"sleep") or any(str(bin_dir).encode() in part for part in cmdline)
    )


@pytest.fixture
def fake_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCommands]:
    """A :class:`FakeCommands` in ``tmp_path``; kills whatever its fakes left hanging."""
    fake = FakeCommands(tmp_path / "fakecmd", monkeypatch)
    yield fake
    fake.kill_hung()
