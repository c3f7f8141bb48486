"""The watchdog: cancels a cluster's jobs when the process owning the cluster dies.

A cluster starts one watchdog (``python .../dask_jobqueue/watchdog.py --owner PID
--cluster-id ID --state FILE``) in its own session, so it outlives its owner whatever kills
the owner (``kill -9``, the OOM killer, a closed terminal). The cluster keeps the state file
(private directory, mode 0600, replaced atomically) up to date with its live job ids, the
cancel command and the command listing tagged jobs. About every second the watchdog checks
its owner; once the owner is gone it cancels the ids of the state file plus every job tagged
with its cluster id (also those submitted just before the owner died), retries a failing
cancel a few times, lists again a few seconds later for submissions still in flight, and
exits. On a normal ``close()`` the cluster stops the watchdog (SIGTERM) and it cancels
nothing.

The watchdog is run by path and imports the standard library only (and ``tags.py`` by path):
it starts in a few tens of milliseconds and never imports dask.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "WatchdogState",
    "Watchdog",
    "state_for",
    "owner_alive",
    "pid_alive",
    "cancel_with_retries",
    "clean_up",
    "main",
]

STATE_VERSION = 1
#: Seconds between two checks of the owner.
CHECK_INTERVAL = 1.0
#: Seconds before listing tagged jobs a second time (submissions in flight at the kill).
RELIST_DELAY = 5.0
CANCEL_ATTEMPTS = 4
COMMAND_TIMEOUT = 60.0


@dataclass
class WatchdogState:
    """What the watchdog needs to clean up after its owner (the state file's content).

    Parameters
    ----------
    owner_pid : int
        The process holding the cluster.
    cluster_id : str
        The cluster id in the jobs' tags.
    cancel_argv : list of str
        The cancel command; job ids are appended.
    cancel_gone : str or None
        Regular expression of the cancel command's complaints that only mean "already gone".
    list_argvs : list of list of str
        Commands listing this user's tagged jobs, tried in order.
    parser : str or None
        Name of the parser of their output in ``dask_jobqueue.tags``.
    job_ids : list of str
        Live job ids of the cluster.
    cancel_max_ids : int
        Most ids one cancel command may name (PBS: 1).
    cancel_groups : list of list of str
        The arguments of each cancel command cancelling ``job_ids``, as the cluster's
        engine would run them: tasks of one array joined into ranges where the batch system
        takes them (``65[0-199].server``). Empty: ``job_ids``, ``cancel_max_ids`` per command.
    """

    owner_pid: int
    cluster_id: str
    cancel_argv: list[str]
    cancel_gone: str | None = None
    list_argvs: list[list[str]] = field(default_factory=list)
    parser: str | None = None
    job_ids: list[str] = field(default_factory=list)
    cancel_max_ids: int = 500
    cancel_groups: list[list[str]] = field(default_factory=list)

    def to_json(self) -> str:
        """The state file's text."""
        return json.dumps({"version": STATE_VERSION, **self.__dict__}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> WatchdogState:
        """Read a state file's text; ``ValueError`` if it is not one."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a watchdog state file: {exc}") from None
        if not isinstance(data, dict) or data.pop("version", None) != STATE_VERSION:
            raise ValueError("not a watchdog state file (unknown version)")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(f"not a watchdog state file: {exc}") from None

    def write(self, path: str | os.PathLike[str]) -> None:
        """Replace the file at ``path`` atomically with this state (mode 0600)."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=".state-", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                os.fchmod(f.fileno(), 0o600)
                f.write(self.to_json())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> WatchdogState:
        """The state at ``path`` (``OSError``/``ValueError`` if missing or unreadable)."""
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


def owner_alive(owner_pid: int, parent_pid: int | None = None) -> bool:
    """Whether the owner still runs. ``parent_pid`` (the watchdog's parent, normally the
    owner) changes as soon as the owner dies, which also covers a reused pid."""
    if parent_pid is not None and parent_pid != owner_pid:
        return False
    return pid_alive(owner_pid)


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (zombies count as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@dataclass
class CommandResult:
    """Exit status and output of a command (``returncode`` ``None``: did not run / hung)."""

    returncode: int | None
    stdout: str = ""
    stderr: str = ""


def run(argv: Sequence[str], timeout: float = COMMAND_TIMEOUT) -> CommandResult:
    """Run ``argv`` in its own process group, killed as a whole after ``timeout``."""
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    except OSError as exc:
        return CommandResult(None, "", str(exc))
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return CommandResult(None, out, f"timed out after {timeout:g}s\n{err}")
    return CommandResult(proc.returncode, out, err)


def cancel_failed(result: CommandResult, gone: str | None) -> bool:
    """True unless the cancel succeeded or every complaint only says a job is gone."""
    if result.returncode == 0:
        return False
    if result.returncode is None or gone is None:
        return True
    pattern = re.compile(gone)
    complaints = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
    return not complaints or not all(pattern.search(line) for line in complaints)


def cancel_with_retries(
    cancel_argv: Sequence[str],
    job_ids: Iterable[str],
    gone: str | None,
    runner: Callable[[Sequence[str]], CommandResult] = run,
    attempts: int = CANCEL_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
    chunk: int = 500,
    groups: Sequence[Sequence[str]] = (),
) -> list[str]:
    """Cancel ``job_ids`` (``chunk`` per command), then run one cancel command per argument
    list of ``groups`` (ids or ranges); a failing command is retried ``attempts`` times in
    all (pausing 1 s, 2 s, 4 s...). Returns the arguments that could not be cancelled."""
    ids = sorted(set(job_ids))
    parts = [ids[start : start + chunk] for start in range(0, len(ids), chunk)]
    left: list[str] = []
    for part in [*parts, *(list(g) for g in groups if g)]:
        for attempt in range(attempts):
            result = runner([*cancel_argv, *part])
            if not cancel_failed(result, gone):
                break
            log(f"cancel of {' '.join(part)} failed (attempt {attempt + 1}): "
                f"{(result.stderr or result.stdout).strip()[:300]}")
            if attempt + 1 < attempts:
                sleep(2.0**attempt)
        else:
            left += part
    return left


def load_tags_module() -> Any:
    """``dask_jobqueue/tags.py`` loaded by path (the package, and dask, stay unimported)."""
    path = Path(__file__).with_name("tags.py")
    spec = importlib.util.spec_from_file_location("_dask_jobqueue_watchdog_tags", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses needs the module registered
    spec.loader.exec_module(module)
    return module


def tagged_ids(
    state: WatchdogState,
    runner: Callable[[Sequence[str]], CommandResult] = run,
    tags: Any = None,
) -> set[str] | None:
    """Ids of the jobs tagged with the state's cluster id, or ``None`` if no listing
    command worked."""
    if not state.list_argvs or state.parser is None:
        return set()
    tags = tags or load_tags_module()
    parse = tags.PARSERS[state.parser]
    for argv in state.list_argvs:
        result = runner(argv)
        if result.returncode != 0:
            log(f"{' '.join(argv)} failed: {result.stderr.strip()[:300]}")
            continue
        try:
            texts = parse(result.stdout)
        except ValueError as exc:
            log(f"{' '.join(argv)}: unreadable output: {exc}")
            continue
        found = set()
        for job_id, text in texts.items():
            tag = tags.JobTag.parse(text)
            if tag is not None and tag.cluster_id == state.cluster_id:
                found.add(job_id)
        return found
    return None


def clean_up(
    state: WatchdogState,
    runner: Callable[[Sequence[str]], CommandResult] = run,
    sleep: Callable[[float], None] = time.sleep,
    relist_delay: float = RELIST_DELAY,
    tags: Any = None,
) -> list[str]:
    """Cancel every job of the cluster: the state's ids and the tagged ones, then, after
    ``relist_delay``, tagged jobs that appeared meanwhile. Returns the ids left behind."""
    done: set[str] = set()
    left: list[str] = []
    for round_ in range(2):
        wanted = set(state.job_ids) if round_ == 0 else set()
        found = tagged_ids(state, runner, tags)
        if found is None:
            left_listing = True
        else:
            left_listing = False
            wanted |= found
        wanted -= done
        if wanted:
            # the state's ids as the engine would cancel them (array ranges), the rest by id
            grouped = round_ == 0 and bool(state.cancel_groups)
            singly = wanted - set(state.job_ids) if grouped else wanted
            left = [i for i in left if i not in wanted]
            left += cancel_with_retries(state.cancel_argv, singly, state.cancel_gone, runner,
                                        sleep=sleep, chunk=max(1, state.cancel_max_ids),
                                        groups=state.cancel_groups if grouped else ())
            done |= wanted
            log(f"cancelled {len(wanted)} job(s): {' '.join(sorted(wanted))}")
        if round_ == 0:
            sleep(relist_delay)
        elif left_listing:
            log("could not list tagged jobs; jobs submitted at the owner's death may remain")
    return left


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} dask-jobqueue watchdog[{os.getpid()}]: "
          f"{message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Watch ``--owner``; when it is gone, cancel the jobs of ``--state`` and exit."""
    parser = argparse.ArgumentParser(prog="dask_jobqueue.watchdog", description=__doc__)
    parser.add_argument("--owner", type=int, required=True)
    parser.add_argument("--cluster-id", required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--interval", type=float, default=CHECK_INTERVAL)
    args = parser.parse_args(argv)
    # SIGTERM (the cluster's close) keeps its default action: exit without cancelling.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    while owner_alive(args.owner, os.getppid()):
        time.sleep(args.interval)
    log(f"owner {args.owner} of cluster {args.cluster_id} is gone; cancelling its jobs")
    try:
        state = WatchdogState.read(args.state)
    except (OSError, ValueError) as exc:
        log(f"cannot read {args.state}: {exc}")
        return 1
    left = clean_up(state)
    if left:
        log(f"could not cancel {' '.join(left)}; keeping {args.state}")
        return 1
    shutil.rmtree(os.path.dirname(args.state), ignore_errors=True)
    return 0


def state_for(engine: Any, owner_pid: int | None = None) -> WatchdogState | None:
    """The initial state for a cluster's engine (``BatchSystem``), or ``None`` if its
    dialect has no cancel command."""
    template = engine.template
    if not getattr(template, "cancel_command", None):
        return None
    pattern = engine.dialect.cancel_gone_pattern
    gone = None
    if pattern is not None:
        gone = ("(?i)" if pattern.flags & re.IGNORECASE else "") + pattern.pattern
    spec = engine.dialect.tagging
    import getpass  # only the cluster's side needs it

    return WatchdogState(
        owner_pid=owner_pid or os.getpid(),
        cluster_id=engine.cluster_id,
        cancel_argv=list(template.cancel_argv([])),
        cancel_gone=gone,
        cancel_max_ids=min(500, engine.dialect.cancel_max_ids),
        list_argvs=[list(a) for a in spec.list_argvs(getpass.getuser())] if spec else [],
        parser=spec.parser_name if spec else None,
    )


class Watchdog:
    """The cluster's side: a private state directory, the state file, the process.

    Parameters
    ----------
    state : WatchdogState
        Initial state (no job ids yet).
    python : str
        The Python running the watchdog.
    """

    def __init__(self, state: WatchdogState, python: str = sys.executable):
        self.state = state
        self.python = python
        self.directory: str | None = None
        self.process: subprocess.Popen | None = None
        self._lock = threading.Lock()

    @property
    def state_path(self) -> str | None:
        return None if self.directory is None else os.path.join(self.directory, "state.json")

    def start(self) -> None:
        """Write the state and start the watchdog (in its own session)."""
        self.directory = tempfile.mkdtemp(prefix=f"dask-jobqueue-watchdog-{self.state.cluster_id}-")
        os.chmod(self.directory, 0o700)
        self.state.write(self.state_path)
        log_file = open(os.path.join(self.directory, "watchdog.log"), "ab")  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                [
                    self.python,
                    *(["-I"] if sys.version_info >= (3, 11) else []),
                    str(Path(__file__).resolve()),
                    "--owner",
                    str(self.state.owner_pid),
                    "--cluster-id",
                    self.state.cluster_id,
                    "--state",
                    self.state_path,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                start_new_session=True,
                close_fds=True,
            )
        finally:
            log_file.close()

    def update(
        self, job_ids: Iterable[str], cancel_groups: Sequence[Sequence[str]] = ()
    ) -> None:
        """Record the cluster's live job ids, and the arguments of the cancel commands
        cancelling them (see :class:`WatchdogState`), atomically; from any thread."""
        with self._lock:
            self.state.job_ids = sorted(job_ids)
            self.state.cancel_groups = [list(g) for g in cancel_groups]
            if self.state_path is not None and self.process is not None:
                try:
                    self.state.write(self.state_path)
                except OSError as exc:
                    log(f"cannot update {self.state_path}: {exc}")

    def stop(self) -> None:
        """Stop the watchdog without it cancelling anything, and remove the state."""
        with self._lock:
            process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


if __name__ == "__main__":
    sys.exit(main())
