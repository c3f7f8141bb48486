"""Shell quoting and execution of batch-system commands: the one command runner.

Standard library only: the watchdog runs its commands through :func:`run_command_sync`, as
the engine runs its own through :func:`run_command`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import select
import selectors
import shlex
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# After the command exits, how long its output pipes may stay open (held by a descendant that
# inherited them) before we stop reading and end the rest of its process group.
EOF_GRACE = 1.0
# Between SIGTERM and SIGKILL to the command's process group.
KILL_GRACE = 2.0
# How long a command we may not signal (a setuid client) gets to end by itself.
UNSIGNALLABLE_GRACE = 5.0
# Upper bound of every wait after the group was killed (exit status, last output).
FINAL_WAIT = 2.0

_ENV_REF = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*|\{[A-Za-z_][A-Za-z0-9_]*\})")
_SAFE = re.compile(r"^[A-Za-z0-9_./:=@%+,-]+$")


def quote(token: object) -> str:
    """Quote ``token`` for a POSIX shell so it reaches the program as one literal word."""
    return shlex.quote(str(token))


def quote_keep_env(token: object) -> str:
    """Quote ``token`` as one shell word, but let ``$NAME``/``${NAME}`` references expand.

    Users rely on values such as ``local_directory="$TMPDIR"`` or a worker name containing
    ``$SLURM_ARRAY_TASK_ID`` being expanded by the job's shell. Everything else (spaces,
    quotes, backticks, ``$(...)``, ``;``) stays literal.
    """
    text = str(token)
    if _SAFE.match(text):
        return text
    if not _ENV_REF.search(text):
        return shlex.quote(text)
    out = []
    pos = 0
    for match in _ENV_REF.finditer(text):
        out.append(_escape_in_double_quotes(text[pos : match.start()]))
        out.append(match.group(0))
        pos = match.end()
    out.append(_escape_in_double_quotes(text[pos:]))
    return '"' + "".join(out) + '"'


def _escape_in_double_quotes(text: str) -> str:
    return re.sub(r'([\\"`$])', r"\\\1", text)


def join_command(tokens: Sequence[object], keep_env: bool = True) -> str:
    """Join tokens into one shell command line, each token quoted."""
    quote_fn = quote_keep_env if keep_env else quote
    return " ".join(quote_fn(t) for t in tokens)


class CommandError(RuntimeError):
    """A batch-system command failed: it exited non-zero, timed out or does not exist."""

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int | None,
        stdout: str = "",
        stderr: str = "",
        reason: str | None = None,
    ):
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.reason = reason
        super().__init__(self._message())

    def _message(self) -> str:
        command = shlex.join(self.argv)
        if self.reason:
            head = f"Command `{command}` {self.reason}"
        else:
            head = f"Command `{command}` failed with exit code {self.returncode}"
        parts = [head]
        if self.stderr.strip():
            parts.append("stderr:\n" + self.stderr.strip())
        if self.stdout.strip():
            parts.append("stdout:\n" + self.stdout.strip())
        return "\n".join(parts)

    def __reduce__(self):
        return (
            type(self),
            (self.argv, self.returncode, self.stdout, self.stderr, self.reason),
        )


@dataclass(frozen=True)
class CommandResult:
    """Captured output of a command that exited with status 0."""

    argv: list[str]
    stdout: str
    stderr: str


async def run_command(
    argv: Sequence[str],
    *,
    stdin: str | None = None,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> CommandResult:
    """Run ``argv`` without a shell and return its output.

    The command runs in a session (and process group) of its own. If it runs longer than
    ``timeout`` seconds, or the awaiting task is cancelled, the whole group is sent SIGTERM,
    then SIGKILL after :data:`KILL_GRACE` seconds; the waits that follow are bounded, so a
    descendant that keeps the output pipes open (and perhaps left the group) cannot hold the
    caller. When the command itself exits but its pipes stay open longer than
    :data:`EOF_GRACE` seconds, the rest of its group is ended the same way and the output read
    so far is used. A command we may not signal (a setuid client such as OAR's ``oarsub``)
    gets :data:`UNSIGNALLABLE_GRACE` seconds to end by itself, then it is left running.

    Parameters
    ----------
    argv
        Program and arguments.
    stdin
        Text written to the command's standard input (``None``: no input).
    timeout
        Seconds before the command is killed (``None``: no limit).
    env, cwd
        Environment and working directory of the command.

    Returns
    -------
    CommandResult
        Output of a command that exited with status 0.

    Raises
    ------
    CommandError
        If the program is missing, exits non-zero or runs longer than ``timeout``.
    """
    argv = [str(a) for a in argv]
    logger.debug("Running command: %s", shlex.join(argv))
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise CommandError(argv, None, reason="could not be run: program not found") from None
    except (PermissionError, NotADirectoryError) as exc:
        raise CommandError(argv, None, reason=f"could not be run: {exc}") from None

    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    out, err = bytearray(), bytearray()
    assert proc.stdout is not None and proc.stderr is not None
    pipes = [
        asyncio.ensure_future(_drain(proc.stdout, out)),
        asyncio.ensure_future(_drain(proc.stderr, err)),
    ]
    if stdin is not None:
        pipes.append(asyncio.ensure_future(_feed(proc, stdin.encode())))
    exited = asyncio.ensure_future(_exit_of(proc))
    timed_out = False
    try:
        await asyncio.wait([exited], timeout=_left(loop, deadline))
        if exited.done():
            left = _left(loop, deadline)
            grace = EOF_GRACE if left is None else min(EOF_GRACE, left)
            await asyncio.wait(pipes, timeout=grace)
            if not all(p.done() for p in pipes):
                logger.debug("Command %s exited but its output pipes stay open", argv[0])
                await _end_group(proc, exited)
        else:
            timed_out = True
            await _end_group(proc, exited)
    except asyncio.CancelledError:
        await _end_group(proc, exited)
        raise
    finally:
        await _release(proc, pipes, exited)
    if timed_out:
        raise CommandError(argv, None, reason=f"timed out after {timeout:g}s")
    stdout = out.decode(errors="replace")
    stderr = err.decode(errors="replace")
    if proc.returncode != 0:
        raise CommandError(argv, proc.returncode, stdout, stderr)
    return CommandResult(argv, stdout, stderr)


class CommandRunner:
    """How an engine runs its commands and waits between tries: real processes (through
    :func:`run_command` and :func:`run_command_sync`) and real clocks.

    An engine takes one as its ``runner``; tests give it a stand-in that answers from
    recorded outputs and does not wait.
    """

    async def run(
        self, argv: Sequence[str], *, stdin: str | None = None, timeout: float | None = None
    ) -> CommandResult:
        """Run ``argv`` on the event loop (:func:`run_command`)."""
        return await run_command(argv, stdin=stdin, timeout=timeout)

    def run_sync(
        self, argv: Sequence[str], *, stdin: str | None = None, timeout: float
    ) -> CommandResult:
        """Run ``argv``, blocking (:func:`run_command_sync`): in threads and at exit."""
        return run_command_sync(argv, timeout, stdin=stdin)

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on the event loop (the pause before a retry)."""
        await asyncio.sleep(seconds)

    def sleep_sync(self, seconds: float) -> None:
        """Wait ``seconds``, blocking (the pause before a retry, in a thread)."""
        time.sleep(seconds)


def _left(loop: asyncio.AbstractEventLoop, deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - loop.time())


async def _exit_of(proc: asyncio.subprocess.Process) -> int:
    # Not ``proc.wait()``: before Python 3.12 it also waits for the pipes to close, which a
    # descendant holding them can delay forever.
    delay = 0.001
    while proc.returncode is None:
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)
    return proc.returncode


async def _drain(stream: asyncio.StreamReader, into: bytearray) -> None:
    while chunk := await stream.read(65536):
        into += chunk


async def _feed(proc: asyncio.subprocess.Process, data: bytes) -> None:
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        proc.stdin.write(data)
        await proc.stdin.drain()
        proc.stdin.close()


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies awaiting their reaper don't)."""
    if _signal_group(pgid, 0) is False:
        return False
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True  # no procfs: the signal test above is all we have
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        # fields: state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def _signal_group(pgid: int, sig: int) -> bool | None:
    """Send ``sig`` to the group: True if sent, False if nobody is left, None if refused."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return None
    return True


async def _end_group(proc: asyncio.subprocess.Process, exited: asyncio.Future) -> None:
    """SIGTERM the command's process group, SIGKILL it after a grace; every wait bounded."""
    pgid = proc.pid  # the command leads its own session, so its group id is its pid
    sent = _signal_group(pgid, signal.SIGTERM)
    if sent is None:
        # Not ours to signal (setuid client): let it end by itself, for a bounded time.
        await asyncio.wait([exited], timeout=UNSIGNALLABLE_GRACE)
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + KILL_GRACE
    while sent and loop.time() < deadline:
        if exited.done() and not _group_alive(pgid):
            return
        await asyncio.sleep(0.05)
    _signal_group(pgid, signal.SIGKILL)
    await asyncio.wait([exited], timeout=FINAL_WAIT)


async def _release(
    proc: asyncio.subprocess.Process, pipes: Sequence[asyncio.Future], exited: asyncio.Future
) -> None:
    """Stop reading and close the pipes, so nothing is left to the event loop."""
    pending = [p for p in pipes if not p.done()]
    if pending:
        # Our own grandchildren are gone by now unless they left the group: then give up.
        await asyncio.wait(pending, timeout=FINAL_WAIT if proc.returncode is not None else 0)
    for task in pipes:
        task.cancel()
    if not exited.done():
        exited.cancel()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        transport = getattr(pipe, "_transport", None) or getattr(pipe, "transport", None)
        if transport is not None:
            transport.close()
    await asyncio.gather(*pipes, exited, return_exceptions=True)
    if proc.returncode is None:
        # Still running (a command we may not signal): close the transport without the kill
        # it would attempt, so the loop does not keep it.
        transport = getattr(proc, "_transport", None)
        if transport is not None:
            with contextlib.suppress(PermissionError, ProcessLookupError):
                transport.close()


def run_command_sync(
    argv: Sequence[str],
    timeout: float,
    *,
    stdin: str | None = None,
    env: Mapping[str, str] | None = None,
) -> CommandResult:
    """Blocking :func:`run_command`, for interpreter exit (no event loop).

    Same semantics: own session, the whole group killed on timeout (SIGTERM, SIGKILL after
    :data:`KILL_GRACE`), the rest of the group ended when the command exited but its pipes
    stay open longer than :data:`EOF_GRACE`, every wait bounded, so this returns or raises
    within about ``timeout + KILL_GRACE + 2 * FINAL_WAIT`` seconds.

    Raises
    ------
    CommandError
        If the program is missing, exits non-zero or runs longer than ``timeout``.
    """
    argv = [str(a) for a in argv]
    logger.debug("Running command: %s", shlex.join(argv))
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise CommandError(argv, None, reason="could not be run: program not found") from None
    except (PermissionError, NotADirectoryError) as exc:
        raise CommandError(argv, None, reason=f"could not be run: {exc}") from None
    pipes = _SyncPipes(proc, stdin.encode() if stdin is not None else None)
    deadline = time.monotonic() + timeout
    timed_out = False
    try:
        exited = pipes.read_until(deadline, exit_grace=EOF_GRACE)
        if pipes.open:
            timed_out = not exited
            if exited:
                logger.debug("Command %s exited but its output pipes stay open", argv[0])
            _end_group_sync(proc)
            # Bounded: a descendant that left the group may hold the pipes forever.
            pipes.read_until(time.monotonic() + FINAL_WAIT)
        else:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True  # closed its output but runs on
                _end_group_sync(proc)
    finally:
        pipes.close()
    stdout = pipes.stdout.decode(errors="replace")
    stderr = pipes.stderr.decode(errors="replace")
    if timed_out or proc.returncode is None:
        # What it printed before hanging is kept: a submit command may have named its job.
        raise CommandError(argv, None, stdout, stderr, reason=f"timed out after {timeout:g}s")
    if proc.returncode != 0:
        raise CommandError(argv, proc.returncode, stdout, stderr)
    return CommandResult(argv, stdout, stderr)


class _SyncPipes:
    """The pipes of a running command: feeds its input, reads both outputs, with deadlines."""

    def __init__(self, proc: subprocess.Popen, data: bytes | None):
        self.proc = proc
        self.stdout = bytearray()
        self.stderr = bytearray()
        self._data = memoryview(data or b"")
        self._selector = selectors.DefaultSelector()
        self._buffers: dict[int, bytearray] = {}
        for pipe, buffer in ((proc.stdout, self.stdout), (proc.stderr, self.stderr)):
            assert pipe is not None
            self._selector.register(pipe.fileno(), selectors.EVENT_READ)
            self._buffers[pipe.fileno()] = buffer
        self._stdin_fd: int | None = None
        if proc.stdin is not None:
            if self._data:
                self._stdin_fd = proc.stdin.fileno()
                self._selector.register(self._stdin_fd, selectors.EVENT_WRITE)
            else:
                proc.stdin.close()

    @property
    def open(self) -> bool:
        """Whether an output pipe is still open."""
        return any(fd in self._buffers for fd in self._selector.get_map())

    def read_until(self, deadline: float, exit_grace: float | None = None) -> bool:
        """Feed and read until both outputs close or ``deadline`` passes, or ``exit_grace``
        seconds after the command exited; returns whether the command has exited."""
        exited_at: float | None = None
        while self.open:
            now = time.monotonic()
            if exited_at is None and self.proc.poll() is not None:
                exited_at = now
            limit = deadline
            if exit_grace is not None and exited_at is not None:
                limit = min(deadline, exited_at + exit_grace)
            if now >= limit:
                break
            # short waits while the command runs: its exit is noticed even while a
            # descendant that inherited the pipes keeps them open
            wait = limit - now if exited_at is not None else min(limit - now, 0.1)
            for key, _ in self._selector.select(wait):
                if key.fd == self._stdin_fd:
                    self._feed()
                    continue
                chunk = os.read(key.fd, 65536)
                if chunk:
                    self._buffers[key.fd] += chunk
                else:
                    self._selector.unregister(key.fd)
        return self.proc.poll() is not None

    def _feed(self) -> None:
        assert self._stdin_fd is not None and self.proc.stdin is not None
        try:
            written = os.write(self._stdin_fd, self._data[: select.PIPE_BUF])
        except (BrokenPipeError, ConnectionResetError):
            written = len(self._data)  # it does not read its input: drop the rest
        self._data = self._data[written:]
        if not self._data:
            self._selector.unregister(self._stdin_fd)
            self._stdin_fd = None
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    def close(self) -> None:
        self._selector.close()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def _end_group_sync(proc: subprocess.Popen) -> None:
    pgid = proc.pid
    sent = _signal_group(pgid, signal.SIGTERM)
    if sent is None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(UNSIGNALLABLE_GRACE)
        return
    deadline = time.monotonic() + KILL_GRACE
    while sent and time.monotonic() < deadline:
        if proc.poll() is not None and not _group_alive(pgid):
            return
        time.sleep(0.05)
    _signal_group(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(FINAL_WAIT)


_ERROR_WORDS = ("error", "invalid", "unknown", "not ", "cannot", "fail", "denied", "no such")


def complaint_lines(error: CommandError) -> list[str]:
    """The lines in which a failed command complains: its non-empty stderr lines or, when
    stderr is empty, the stdout lines that read like errors (``oardel`` reports on stdout,
    between progress lines)."""
    if error.stderr.strip():
        return [line for line in error.stderr.splitlines() if line.strip()]
    return [line for line in error.stdout.splitlines() if _looks_like_error(line)]


def only_complaints_matching(error: CommandError, pattern: re.Pattern[str] | None) -> bool:
    """Whether ``error`` is a command that ran, exited non-zero and only complained in lines
    matching ``pattern`` (for a cancel command: "this job is already gone").

    A time-out, a missing program, a failure without any complaint, or no ``pattern`` is
    never "only" that.
    """
    if error.returncode is None or pattern is None:
        return False
    complaints = complaint_lines(error)
    return bool(complaints) and all(pattern.search(line) for line in complaints)


def _looks_like_error(line: str) -> bool:
    lower = line.lower()
    return any(word in lower for word in _ERROR_WORDS)
