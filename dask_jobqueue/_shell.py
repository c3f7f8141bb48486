"""Shell quoting and asynchronous execution of batch-system commands."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

logger = logging.getLogger(__name__)

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

    Raise :class:`CommandError` if the program is missing, exits non-zero or runs longer than
    ``timeout`` seconds (it is then killed).
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
        )
    except FileNotFoundError:
        raise CommandError(argv, None, reason="could not be run: program not found") from None
    except PermissionError as exc:
        raise CommandError(argv, None, reason=f"could not be run: {exc}") from None
    try:
        stdout_b, stderr_b = await asyncio.wait_for(
            proc.communicate(stdin.encode() if stdin is not None else None), timeout
        )
    except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
        if proc.returncode is None:
            try:
                proc.kill()
            except (ProcessLookupError, PermissionError):
                # Gone already, or a setuid client (OAR's) that we may not signal: give it a
                # moment to end by itself so its pipes are not left to a closed event loop.
                with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(proc.wait(), 5)
            else:
                await proc.wait()
        if isinstance(exc, asyncio.CancelledError):
            raise
        raise CommandError(argv, None, reason=f"timed out after {timeout:g}s") from None
    stdout = stdout_b.decode(errors="replace")
    stderr = stderr_b.decode(errors="replace")
    if proc.returncode != 0:
        raise CommandError(argv, proc.returncode, stdout, stderr)
    return CommandResult(argv, stdout, stderr)


def run_command_sync(
    argv: Sequence[str], *, stdin: str | None = None, timeout: float | None = None
) -> CommandResult:
    """Blocking :func:`run_command`, for threads and interpreter exit.

    The command runs in a session of its own; on timeout the whole session is killed and the
    wait for its output is bounded, even if a grandchild holds the pipes open.
    """
    import os
    import signal
    import subprocess

    argv = [str(a) for a in argv]
    logger.debug("Running command: %s", shlex.join(argv))
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise CommandError(argv, None, reason="could not be run: program not found") from None
    except PermissionError as exc:
        raise CommandError(argv, None, reason=f"could not be run: {exc}") from None
    try:
        stdout_b, stderr_b = proc.communicate(
            stdin.encode() if stdin is not None else None, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=2)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=2)
        raise CommandError(argv, None, reason=f"timed out after {timeout:g}s") from None
    stdout = stdout_b.decode(errors="replace")
    stderr = stderr_b.decode(errors="replace")
    if proc.returncode != 0:
        raise CommandError(argv, proc.returncode, stdout, stderr)
    return CommandResult(argv, stdout, stderr)
