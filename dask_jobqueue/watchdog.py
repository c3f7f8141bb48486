"""The watchdog: cancels a cluster's jobs when the process owning the cluster dies.

A cluster starts one watchdog (``python -I -c <run dask_jobqueue.watchdog.main> --owner PID
--cluster-id ID --state FILE``) in its own session, so it outlives its owner whatever kills
the owner (``kill -9``, the OOM killer, a closed terminal). The cluster keeps a private
directory (mode 0700) with the state: ``state.json`` (replaced atomically: the cancel command,
the command listing tagged jobs, the live job ids and how the engine would cancel them, the
owner's files to remove) and a journal of the ids added and removed since, one line per
change, folded into a new ``state.json`` (by a thread) about every N/2 changes for N live
jobs; so each change costs O(1) and an id is on disk before its submission returns. About every second the
watchdog checks its owner; once the owner is gone it removes the owner's files (the TLS
credentials written for the workers), cancels the ids of the state plus every job tagged with
its cluster id, finds out per job whether it was cancelled, already gone, or could not be
cancelled (and why), lists the tagged jobs again a few seconds later for submissions still in
flight, retries what failed in up to :data:`CLEANUP_PASSES` passes, logs what happened, and
exits. On a normal ``close()`` the cluster stops the watchdog (SIGTERM) and it cancels nothing.

The watchdog process imports this package normally (the command runner the engine uses, the
tags, the dialect's tag parser): importing the package registers its configuration defaults
and nothing else, so it starts without distributed, the engine or the cluster (0.26 s to
``--help`` on the CI machine, most of it importing dask's configuration). It is started with the package's own directory first on ``sys.path``, in
isolated mode, so it runs the very code of the cluster that started it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._shell import CommandError, CommandResult, complaint_lines, run_command_sync
from .tags import JobTag, tag_parser

__all__ = [
    "CancelReport",
    "CommandError",
    "CommandResult",
    "WatchdogState",
    "Watchdog",
    "state_for",
    "owner_alive",
    "pid_alive",
    "cancel_with_retries",
    "clean_up",
    "remove_owned_files",
    "main",
]

STATE_VERSION = 2
#: Seconds between two checks of the owner.
CHECK_INTERVAL = 1.0
#: Seconds before listing tagged jobs a second time (submissions in flight at the kill); the
#: pass after that waits twice as long.
RELIST_DELAY = 5.0
#: Passes over the jobs: the first cancels everything, the second lists again and retries
#: what failed, later ones only run while something failed.
CLEANUP_PASSES = 3
#: Commands per cancel batch and pass: a lone id is tried this often; a batch that fails as a
#: whole is tried twice, then in halves.
CANCEL_ATTEMPTS = 4
COMMAND_TIMEOUT = 60.0
#: The journal is folded into the state once it has more lines than half the live jobs (and
#: at least this many): amortised O(log N) per change, in a thread.
COMPACT_MIN_LINES = 256


#: How a command is run: returns its result, raises ``CommandError`` if it failed.
Runner = Callable[[Sequence[str]], "CommandResult"]


@dataclass
class WatchdogState:
    """What the watchdog needs to clean up after its owner (``state.json``'s content).

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
        The parser of their output, ``module:function`` (the dialect's tag parser).
    job_ids : list of str
        Live job ids of the cluster (after :meth:`load`: with the journal applied).
    cancel_max_ids : int
        Most ids one cancel command may name (PBS: 1).
    cancel_plan : list of [arguments, ids]
        The cancel commands for ``job_ids`` as the cluster's engine would run them: the
        arguments of each (tasks of one array joined into ranges where the batch system takes
        them, ``65[0-199].server``) and the ids they cancel. Empty: ``job_ids``,
        ``cancel_max_ids`` per command.
    owned_files : list of str
        Files of the owner to remove once it is gone (the workers' TLS credentials).
    journal : str or None
        Name, in the state's directory, of the journal of changes since this state.
    """

    owner_pid: int
    cluster_id: str
    cancel_argv: list[str]
    cancel_gone: str | None = None
    list_argvs: list[list[str]] = field(default_factory=list)
    parser: str | None = None
    job_ids: list[str] = field(default_factory=list)
    cancel_max_ids: int = 500
    cancel_plan: list[list[list[str]]] = field(default_factory=list)
    owned_files: list[str] = field(default_factory=list)
    journal: str | None = None

    def to_json(self) -> str:
        """The state file's text."""
        return json.dumps({"version": STATE_VERSION, **self.__dict__}, separators=(",", ":"))

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
        write_private(path, self.to_json())

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> WatchdogState:
        """The state at ``path`` as written (``OSError``/``ValueError`` if missing or
        unreadable); its journal is not applied."""
        return cls.from_json(Path(path).read_text(encoding="utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike[str], attempts: int = 5) -> WatchdogState:
        """The state at ``path`` with its journal applied: ``job_ids`` are the live ids.

        A live owner replaces the state and then removes the journal the old state named:
        a journal found missing while the state names another one by now is read again
        from the new state (up to ``attempts`` times), never taken as empty."""
        for _ in range(attempts):
            state = cls.read(path)
            if not state.journal:
                return state
            try:
                text = Path(path).with_name(state.journal).read_text(encoding="utf-8")
            except FileNotFoundError:
                if cls.read(path).journal != state.journal:
                    continue  # folded meanwhile: the new state holds these ids
                text = ""  # the owner died between creating the state and its journal
            state.job_ids = apply_journal(state.job_ids, text)
            return state
        raise OSError(f"{path}: the state kept changing while it was read")


def write_private(path: str | os.PathLike[str], text: str) -> None:
    """Replace the file at ``path`` atomically with ``text`` (mode 0600)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".state-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def apply_journal(job_ids: Iterable[str], text: str) -> list[str]:
    """``job_ids`` changed by the journal ``text`` (``+ ID``/``- ID`` lines); a last line
    without its newline (its writer was killed mid-write) is ignored."""
    live = dict.fromkeys(job_ids)
    lines = text.split("\n")
    for line in lines[:-1]:
        op, _, job_id = line.partition(" ")
        if op == "+" and job_id:
            live[job_id] = None
        elif op == "-":
            live.pop(job_id, None)
    return list(live)


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


def run(argv: Sequence[str], timeout: float = COMMAND_TIMEOUT) -> CommandResult:
    """Run ``argv`` with the engine's runner (own process group, killed as a whole after
    ``timeout``, every wait bounded); ``CommandError`` if it fails."""
    return run_command_sync(argv, timeout)


# ---------------------------------------------------------------------- cancelling


@dataclass
class CancelReport:
    """What became of each cancel argument (a job id, or a range of array tasks)."""

    cancelled: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    #: argument -> why it could not be cancelled
    failed: dict[str, str] = field(default_factory=dict)
    commands: int = 0

    def merge(self, other: CancelReport) -> None:
        self.cancelled += other.cancelled
        self.gone += other.gone
        self.failed.update(other.failed)
        self.commands += other.commands


_TOKEN = re.compile(r"[\w.\[\]\-]+")


def _reason(exc: CommandError) -> str:
    lines = complaint_lines(exc)
    if exc.returncode is None or not lines:
        text = exc.reason or (lines[0] if lines else f"exit code {exc.returncode}")
    else:
        text = lines[0]
    return " ".join(text.split())[:200]


def _attribute(
    exc: CommandError, args: Sequence[str], gone: re.Pattern[str] | None
) -> tuple[list[str], list[str], dict[str, str]] | None:
    """(cancelled, gone, failing with reasons) from a failed cancel of ``args`` whose every
    complaint names the arguments it is about; ``None`` if the failure is not per argument
    (a time-out, or a complaint naming none of them: a failure of the whole command)."""
    if exc.returncode is None:
        return None
    lines = complaint_lines(exc)
    if not lines:
        return None
    named: dict[str, list[str]] = {}
    if len(args) == 1:
        named[args[0]] = lines
    else:
        wanted = set(args)
        for line in lines:
            hits = {t.rstrip(".") for t in _TOKEN.findall(line)} & wanted
            if not hits:
                return None
            for arg in hits:
                named.setdefault(arg, []).append(line)
    # Batch cancel commands (scancel, qdel, bkill, condor_rm, oardel) go on after an id they
    # cannot cancel and name each one: the ids they do not name were cancelled.
    cancelled = [a for a in args if a not in named]
    gone_args: list[str] = []
    failing: dict[str, str] = {}
    for arg in args:
        complaints = named.get(arg)
        if complaints is None:
            continue
        bad = [line for line in complaints if gone is None or not gone.search(line)]
        if bad:
            failing[arg] = " ".join(bad[0].split())[:200]
        else:
            gone_args.append(arg)
    return cancelled, gone_args, failing


def _short(args: Sequence[str], limit: int = 10) -> str:
    if len(args) <= limit:
        return " ".join(args)
    return f"{' '.join(args[:limit])} ... ({len(args)} arguments)"


def _cancel_batch(
    cancel_argv: Sequence[str],
    batch: Sequence[str],
    gone: re.Pattern[str] | None,
    runner: Runner,
    attempts: int,
    sleep: Callable[[float], None],
) -> CancelReport:
    """Cancel ``batch`` (the arguments of one command) and find out what became of each.

    A failure naming its arguments is read per argument (those failing are retried alone,
    ``attempts`` times in all, pausing 1 s, 2 s, 4 s...). A time-out (the batch system does
    not answer) is retried whole, as often. Any other failure of the whole command (a
    complaint naming no argument) is retried once after 1 s, then the batch is tried in
    halves, and halves of those, without pauses: a single bad id is found in about
    2·log2(n) commands. At most ``attempts + 4·log2(n)`` commands in all: past that (the
    batch system refuses everything) the rest is reported failed with the last reason.
    """
    report = CancelReport()
    budget = attempts + 4 * len(batch).bit_length()
    # (arguments, retries so far, came from splitting a batch)
    work: list[tuple[list[str], int, bool]] = [(list(batch), 0, False)]
    last_reason = "not tried"
    while work:
        args, retry, split = work.pop()
        if report.commands >= budget:
            for arg in args:
                report.failed[arg] = f"{last_reason} (gave up after {budget} cancel commands)"
            continue
        if retry and not split:
            sleep(2.0 ** (retry - 1))
        report.commands += 1
        try:
            runner([*cancel_argv, *args])
        except CommandError as exc:
            error = exc
        else:
            report.cancelled += args
            continue
        last_reason = _reason(error)
        attributed = _attribute(error, args, gone)
        if attributed is not None:
            cancelled, gone_args, failing = attributed
            report.cancelled += cancelled
            report.gone += gone_args
            for arg, why in failing.items():
                if retry + 1 < attempts and not split:
                    log(f"could not cancel {arg} (attempt {retry + 1}): {why}")
                    work.append(([arg], retry + 1, False))
                else:
                    report.failed[arg] = why
        elif len(args) > 1 and error.returncode is not None and (retry >= 1 or attempts <= 1):
            log(f"cancel of {_short(args)} failed again ({last_reason}); trying it in halves")
            half = len(args) // 2
            work.append((args[half:], retry, True))
            work.append((args[:half], retry, True))
        elif not split and retry + 1 < attempts:
            log(f"cancel of {_short(args)} failed (attempt {retry + 1}): {last_reason}")
            work.append((args, retry + 1, False))
        else:
            for arg in args:
                report.failed[arg] = last_reason
    return report


def cancel_with_retries(
    cancel_argv: Sequence[str],
    job_ids: Iterable[str],
    gone: str | None,
    runner: Runner = run,
    attempts: int = CANCEL_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
    chunk: int = 500,
    groups: Sequence[Sequence[str]] = (),
) -> CancelReport:
    """Cancel ``job_ids`` (``chunk`` per command), then run one cancel command per argument
    list of ``groups`` (ids or ranges), and report what became of each argument: cancelled,
    already gone (the command's complaint matches the regular expression ``gone``), or
    failed, with the reason. See :func:`_cancel_batch` for the retries, all bounded."""
    pattern = re.compile(gone) if gone else None
    ids = sorted(set(job_ids))
    batches = [ids[start : start + chunk] for start in range(0, len(ids), chunk)]
    report = CancelReport()
    for batch in [*batches, *(list(g) for g in groups if g)]:
        report.merge(_cancel_batch(cancel_argv, batch, pattern, runner, attempts, sleep))
    return report


def tagged_ids(state: WatchdogState, runner: Runner = run) -> set[str] | None:
    """Ids of the jobs tagged with the state's cluster id, or ``None`` if no listing
    command worked."""
    if not state.list_argvs or state.parser is None:
        return set()
    parse = tag_parser(state.parser)
    for argv in state.list_argvs:
        try:
            result = runner(argv)
        except CommandError as exc:
            log(f"{' '.join(argv)} failed: {_reason(exc)}")
            continue
        try:
            texts = parse(result.stdout)
        except ValueError as exc:
            log(f"{' '.join(argv)}: unreadable output: {exc}")
            continue
        found = set()
        for job_id, text in texts.items():
            tag = JobTag.parse(text)
            if tag is not None and tag.cluster_id == state.cluster_id:
                found.add(job_id)
        return found
    return None


def _count(args: Iterable[str], covers: dict[str, list[str]]) -> int:
    return sum(len(covers.get(a, (a,))) for a in args)


def _log_report(report: CancelReport, covers: dict[str, list[str]]) -> None:
    if report.cancelled:
        log(
            f"cancelled {_count(report.cancelled, covers)} job(s): "
            f"{' '.join(sorted(report.cancelled))}"
        )
    if report.gone:
        log(f"{_count(report.gone, covers)} job(s) already gone: {' '.join(sorted(report.gone))}")
    by_reason: dict[str, list[str]] = {}
    for arg, why in report.failed.items():
        by_reason.setdefault(why, []).append(arg)
    for why, args in sorted(by_reason.items()):
        log(f"could not cancel {_count(args, covers)} job(s): {' '.join(sorted(args))}: {why}")


def clean_up(
    state: WatchdogState,
    runner: Runner = run,
    sleep: Callable[[float], None] = time.sleep,
    relist_delay: float = RELIST_DELAY,
    passes: int = CLEANUP_PASSES,
    attempts: int = CANCEL_ATTEMPTS,
) -> list[str]:
    """Cancel every job of the cluster and return the cancel arguments left behind.

    The first pass cancels the state's ids (as the engine would: array ranges) and the tagged
    ones; after ``relist_delay`` the second lists tagged jobs again (submissions in flight at
    the owner's death) and retries what failed; further passes (each waiting longer) run
    while something failed, ``passes`` in all. Each pass logs what became of its jobs.
    """
    chunk = max(1, state.cancel_max_ids)
    live = set(state.job_ids)
    covers: dict[str, list[str]] = {}  # cancel argument -> the ids it cancels
    resolved: set[str] = set()  # ids cancelled or gone
    failed: dict[str, str] = {}
    listing_failed = False
    for pass_ in range(passes):
        if pass_ > 1 and not failed:
            break
        if pass_ > 0:
            sleep(relist_delay * pass_)
        found = tagged_ids(state, runner)
        listing_failed = found is None
        pending = {i for a in failed for i in covers.get(a, (a,))}
        groups: list[list[str]] = []
        singles = (found or set()) - resolved - pending
        if pass_ == 0:
            singles |= live
            for args, ids in state.cancel_plan:
                if ids and live.issuperset(ids):
                    groups.append(list(args))
                    covers.update(_covers(args, ids))
                    singles -= set(ids)
        retry = sorted(failed)
        failed = {}
        report = cancel_with_retries(
            state.cancel_argv,
            sorted(singles),
            state.cancel_gone,
            runner,
            attempts=attempts,
            sleep=sleep,
            chunk=chunk,
            groups=[*groups, *_chunked(retry, chunk)],
        )
        _log_report(report, covers)
        for arg in [*report.cancelled, *report.gone]:
            resolved.update(covers.get(arg, (arg,)))
        failed = report.failed
    if listing_failed:
        log("could not list tagged jobs; jobs submitted at the owner's death may remain")
    return sorted(failed)


def _covers(args: Sequence[str], ids: Sequence[str]) -> dict[str, list[str]]:
    """Which of ``ids`` each argument of one cancel command cancels: an id itself, or (an
    array range) the ids sharing its longest prefix."""
    covers: dict[str, list[str]] = {a: [] for a in args}
    known = set(ids)
    ranges = [a for a in args if a not in known]
    for job_id in ids:
        if job_id in covers:
            covers[job_id].append(job_id)
        elif ranges:
            covers[max(ranges, key=lambda r: len(os.path.commonprefix([r, job_id])))].append(job_id)
    return covers


def _chunked(args: Sequence[str], size: int) -> list[list[str]]:
    return [list(args[start : start + size]) for start in range(0, len(args), size)]


def remove_owned_files(paths: Iterable[str]) -> list[str]:
    """Remove the owner's files ``paths`` that are still regular files of this user (a path
    now holding something else, say a symbolic link, is left alone); returns those removed."""
    removed = []
    for path in paths:
        try:
            info = os.lstat(path)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
                log(f"left {path} alone: not a regular file of this user")
                continue
            os.unlink(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            log(f"could not remove {path}: {exc}")
            continue
        removed.append(path)
    return removed


def log(message: str) -> None:
    print(
        f"{time.strftime('%Y-%m-%d %H:%M:%S')} dask-jobqueue watchdog[{os.getpid()}]: {message}",
        file=sys.stderr,
        flush=True,
    )


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
        state = WatchdogState.load(args.state)
    except (OSError, ValueError) as exc:
        log(f"cannot read {args.state}: {exc}")
        return 1
    removed = remove_owned_files(state.owned_files)
    if removed:
        log(f"removed {len(removed)} file(s) of the owner: {' '.join(removed)}")
    left = clean_up(state)
    if left:
        log(f"gave up on {' '.join(left)} after {CLEANUP_PASSES} passes; keeping {args.state}")
        return 1
    shutil.rmtree(os.path.dirname(args.state), ignore_errors=True)
    return 0


def state_for(
    engine: Any, owner_pid: int | None = None, owned_files: Iterable[str] = ()
) -> WatchdogState | None:
    """The initial state for a cluster's engine (``BatchSystem``), or ``None`` if its
    dialect has no cancel command. ``owned_files`` are removed when the owner dies."""
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
        owned_files=[os.path.abspath(f) for f in owned_files],
    )


#: How the cluster's engine would cancel some ids: (arguments, ids) per command.
CancelPlanner = Callable[[Sequence[str]], Sequence[tuple[Sequence[str], Sequence[str]]]]


#: What tells a watchdog process by its command line (``dask-jobqueue status`` looks for it).
PROGRAM_MARK = "from dask_jobqueue.watchdog import main"
#: The watchdog's program: this package (from the directory given first) runs :func:`main`.
_LAUNCH = f"import sys; sys.path.insert(0, sys.argv.pop(1)); {PROGRAM_MARK}; sys.exit(main())"


def is_watchdog_command(argv: Sequence[str]) -> bool:
    """Whether ``argv`` (a process's command line) is a watchdog's: as started now, or by
    path as versions before 2026-12 started it."""
    return any(PROGRAM_MARK in a or a.endswith("watchdog.py") for a in argv)


class Watchdog:
    """The cluster's side: a private state directory, the state and its journal, the process.

    Each change of the live ids is one journal line, written before :meth:`record` returns.
    Once the journal holds more lines than half the live jobs, a thread folds it into a new
    state (every live id and how the engine would cancel them) while the changes go on being
    written to the old journal and to the new one: whenever the owner dies, the state file
    and the journal it names hold every id.

    Parameters
    ----------
    state : WatchdogState
        Initial state.
    python : str
        The Python running the watchdog.
    planner : callable, optional
        ``planner(ids)``: how the engine would cancel ``ids`` (see :class:`WatchdogState`'s
        ``cancel_plan``), asked when the journal is folded into the state.
    """

    def __init__(
        self,
        state: WatchdogState,
        python: str = sys.executable,
        planner: CancelPlanner | None = None,
    ):
        self.state = state
        self.python = python
        self.planner = planner
        self.directory: str | None = None
        self.process: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._live: dict[str, None] = dict.fromkeys(state.job_ids)  # an ordered set
        #: journals written to: the one the state file names, and during a fold the next one
        self._journals: list[tuple[int, str]] = []
        self._journal_lines = 0
        self._generation = 0
        self._fold_thread: threading.Thread | None = None

    @property
    def state_path(self) -> str | None:
        return None if self.directory is None else os.path.join(self.directory, "state.json")

    def start(self) -> None:
        """Write the state and start the watchdog (in its own session)."""
        self.directory = tempfile.mkdtemp(prefix=f"dask-jobqueue-watchdog-{self.state.cluster_id}-")
        os.chmod(self.directory, 0o700)
        with self._lock:
            self._fold_now()
        state_path = self.state_path
        assert state_path is not None  # the directory was made above
        log_file = open(os.path.join(self.directory, "watchdog.log"), "ab")  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                [
                    self.python,
                    "-I",
                    "-c",
                    _LAUNCH,
                    str(Path(__file__).resolve().parent.parent),
                    "--owner",
                    str(self.state.owner_pid),
                    "--cluster-id",
                    self.state.cluster_id,
                    "--state",
                    state_path,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                start_new_session=True,
                close_fds=True,
            )
        finally:
            log_file.close()

    def record(self, added: Iterable[str] = (), removed: Iterable[str] = ()) -> None:
        """Record live job ids ``added`` and ids ``removed`` (ended or cancelled); from any
        thread, in O(change). One journal line per id, written before this returns: an id is
        on disk before its submission returns, whatever kills this process next."""
        added, removed = list(added), list(removed)
        with self._lock:
            for job_id in added:
                self._live[job_id] = None
            for job_id in removed:
                self._live.pop(job_id, None)
            if not self._journals:
                return  # not started (or stopped): start() writes everything
            data = (
                "".join(f"+ {i}\n" for i in added) + "".join(f"- {i}\n" for i in removed)
            ).encode()
            for fd, _ in self._journals:
                try:
                    os.write(fd, data)
                except OSError as exc:
                    log(f"cannot append to the watchdog's journal: {exc}")
            self._journal_lines += len(added) + len(removed)
            if (
                self._journal_lines > max(COMPACT_MIN_LINES, len(self._live) // 2)
                and self._fold_thread is None
            ):
                self._fold_later()

    def update(self, job_ids: Iterable[str]) -> None:
        """Replace the live job ids by ``job_ids`` and write the whole state now; from any
        thread (O(jobs): :meth:`record` is the per-change call)."""
        self._wait_for_fold()
        with self._lock:
            self._live = dict.fromkeys(job_ids)
            if self._journals:
                self._fold_now()

    def _new_journal(self) -> tuple[int, str] | None:
        self._generation += 1
        name = f"journal-{self._generation}"
        assert self.directory is not None
        try:
            fd = os.open(
                os.path.join(self.directory, name),
                os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC,
                0o600,
            )
        except OSError as exc:
            log(f"cannot create the watchdog's journal: {exc}")
            return None
        return fd, name

    def _state_text(self, ids: list[str], journal: str) -> str:
        ids.sort()
        plan = []
        if self.planner is not None:
            plan = [[list(args), list(covered)] for args, covered in self.planner(ids)]
        state = dataclasses.replace(self.state, job_ids=[], cancel_plan=[], journal=journal)
        text = state.to_json()
        # The long lists are encoded a slice at a time: one json.dumps of 50,000 ids would
        # hold the GIL (and stall the event loop) for tens of milliseconds.
        for key, items in (("job_ids", ids), ("cancel_plan", plan)):
            parts = [json.dumps(items[i : i + 1000])[1:-1] for i in range(0, len(items), 1000)]
            empty = f'"{key}":[]'
            assert text.count(empty) == 1
            text = text.replace(empty, f'"{key}":[{",".join(parts)}]')
        return text

    def _fold_now(self) -> None:
        """Write a state with every live id and a new, empty journal (lock held)."""
        if self.directory is None:
            return
        journal = self._new_journal()
        if journal is None:
            return
        self._journals.append(journal)
        self._install(self._state_text(list(self._live), journal[1]), journal)

    def _fold_later(self) -> None:
        """Start folding the journal in a thread (lock held): a new journal starts now and
        gets every change from now on, as the old one does until the new state replaces the
        old."""
        journal = self._new_journal()
        if journal is None:
            return
        self._journals.append(journal)
        self._journal_lines = 0
        ids = list(self._live)
        self._fold_thread = threading.Thread(
            target=self._fold_in_thread,
            args=(ids, journal),
            name="dask-jobqueue-watchdog-state",
            daemon=True,
        )
        self._fold_thread.start()

    def _fold_in_thread(self, ids: list[str], journal: tuple[int, str]) -> None:
        try:
            text = self._state_text(ids, journal[1])
        except Exception as exc:  # the engine's planner: log it, keep the old state
            log(f"cannot fold the watchdog's journal: {exc!r}")
            text = None
        with self._lock:
            self._fold_thread = None
            if journal not in self._journals:
                return  # stopped meanwhile
            if text is None:
                self._drop_journal(journal)
                return
            self._install(text, journal)

    def _install(self, text: str, journal: tuple[int, str]) -> None:
        """Make ``text`` the state (atomically) and ``journal`` the only journal (lock
        held); on failure the old state and journal stay in use."""
        assert self.state_path is not None
        try:
            write_private(self.state_path, text)
        except OSError as exc:
            log(f"cannot update {self.state_path}: {exc}")
            self._drop_journal(journal)
            return
        self.state.journal = journal[1]
        for old in [j for j in self._journals if j != journal]:
            self._drop_journal(old)

    def _drop_journal(self, journal: tuple[int, str]) -> None:
        self._journals.remove(journal)
        os.close(journal[0])
        if self.directory is not None:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.directory, journal[1]))

    def _wait_for_fold(self) -> None:
        thread = self._fold_thread
        if thread is not None:
            thread.join()

    def stop(self) -> None:
        """Stop the watchdog without it cancelling anything, and remove the state."""
        self._wait_for_fold()
        with self._lock:
            process, self.process = self.process, None
            journals, self._journals = self._journals, []
        for fd, _ in journals:
            os.close(fd)
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
