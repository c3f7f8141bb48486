"""PBS Pro / OpenPBS / Torque: ``qsub`` / ``qstat`` / ``qdel`` and ``#PBS`` directives.

Job states come from ONE ``qstat`` call per poll for all live jobs:

* PBS Pro / OpenPBS: ``qstat -f -F json -x <ids...>`` (``-x`` keeps finished jobs, state ``F``
  with ``Exit_status``). Unknown ids make qstat exit 153 with ``qstat: Unknown Job Id X`` on
  stderr, but the other jobs are still printed: that partial output is used.
* Torque has no JSON output (its ``qstat`` rejects ``-F``, or ignores it): the job then
  switches, for good, to ``qstat -f <ids...>`` text, where finished jobs show state ``C`` with
  ``exit_status`` for ``keep_completed`` seconds.

Exit status conventions: ``-29`` (PBS Pro) / ``-11`` (Torque) is a walltime kill, ``256 + S``
a kill by signal ``S`` (``qdel`` gives 271, SIGTERM). The public job and cluster classes are
in :mod:`dask_jobqueue.pbs`.

The two flavours are two dialects, :data:`PBS_PRO` and :data:`TORQUE` (PBS Pro's with its own
status step and arrays), chosen in one place, :func:`pbs_flavour`, from the ``pbs_flavour``
fact (``qstat --version`` before the first array, or Torque refusing the JSON query).
:data:`DIALECT`, what ``PBSJob`` speaks, runs the status steps of the flavour chosen (PBS Pro
while none is) and submits arrays once one is.
"""

from __future__ import annotations

import bisect
import json
import logging
import re
import signal
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from .._shell import CommandError
from .._values import GIB, KIB, MIB, ceil_to_unit, directive_value
from ..dialect import (
    STATUS_MAX_IDS,
    ArraySupport,
    Dialect,
    Directive,
    HeaderTable,
    LimitsProbe,
    StatusStep,
    WalltimeDefault,
    group_tasks,
    hms_seconds,
    index_spans,
)
from ..tags import TAG_PATTERN, TagSpec, only_tagged
from ..tracking import Interruption, JobState, JobStatus

logger = logging.getLogger(__name__)

__all__ = [
    "DIALECT",
    "FLAVOURS",
    "HEADER",
    "PBS_PATH_REFUSED",
    "PBS_REFUSED",
    "JOB_NAME_PATTERN",
    "PBS_MAX_JOB_NAME",
    "PBS_PRO",
    "PBS_PRO_ARRAYS",
    "TORQUE",
    "TORQUE_ARRAYS",
    "learn_flavour",
    "match_job_ids",
    "name_with_tag",
    "parse_pbs_limits",
    "parse_pbs_queue_walltime",
    "parse_pbs_tags",
    "parse_pbs_version",
    "parse_qstat_json",
    "parse_qstat_json_step",
    "parse_qstat_text",
    "parse_qstat_text_step",
    "pbs_adopt",
    "pbs_array_task_ids",
    "pbs_cancel_args",
    "pbs_flavour",
    "pbs_format_bytes_ceil",
    "pbs_job_status",
    "pbs_log_path",
    "pbs_value",
    "qstat_error_is_harmless",
    "qstat_failure_is_usable",
    "qstat_json_argv",
    "qstat_text_argv",
    "tag_in_name",
    "text_this_poll",
    "torque_qstat_argv",
]


def pbs_format_bytes_ceil(nbytes: int) -> str:
    """Memory for ``-l mem=``, rounded up: ``GB`` from 10 GiB, ``MB`` from 10 MiB, ``kB``
    from 10 KiB, else ``B`` (PBS reads these units as powers of 1024).

    >>> pbs_format_bytes_ceil(28_000_000_000)
    '27GB'
    """
    return ceil_to_unit(
        int(nbytes), [("GB", GIB, 10 * GIB), ("MB", MIB, 10 * MIB), ("kB", KIB, 10 * KIB)], "B"
    )


# ---------------------------------------------------------------------------- job states

# PBS job_state letters (PBS Pro and Torque) that are not final.
_STATES: dict[str, JobState] = {
    "Q": JobState.QUEUED,  # queued
    "W": JobState.QUEUED,  # waiting for its start time (qsub -a) or a stage-in
    "T": JobState.QUEUED,  # being moved between servers/queues
    "H": JobState.HELD,  # held
    "S": JobState.HELD,  # suspended (like Slurm's SUSPENDED: not running, not gone)
    "U": JobState.HELD,  # PBS Pro: suspended because the workstation is busy
    "R": JobState.RUNNING,
    "E": JobState.RUNNING,  # exiting: processes being cleaned up
    "B": JobState.RUNNING,  # PBS Pro: job array begun
}
# Final letters: PBS Pro history F (finished) / X (subjob finished), Torque C (completed).
_FINAL_LETTERS = frozenset("FXC")
_HOLD_TYPES = {"u": "user", "o": "operator", "s": "system", "p": "bad password"}
_WALLTIME_EXIT = {"pro": -29, "torque": -11}  # JOB_EXEC_KILL_WALLTIME on each flavour
_CANCEL_SIGNALS = (signal.SIGTERM, signal.SIGKILL)  # what qdel (-W force) sends


# OpenPBS ends the comment of a job removed by ``qdel`` with "and terminated" (queued) or
# "and terminated by user@host" (running); the Exit_status of the latter may well be 0.
_DELETED_COMMENT = re.compile(r"\band terminated(?: by \S+)?\s*$")


def _final_status(
    native: str, exit_status: int | None, comment: str | None, flavour: str
) -> JobStatus:
    status = _final_status_from_exit(native, exit_status, comment, flavour)
    if (
        status.state in (JobState.FINISHED, JobState.FAILED)
        and comment is not None
        and _DELETED_COMMENT.search(comment)
    ):
        return JobStatus(JobState.CANCELLED, comment, status.exit_code, native)
    return status


def _final_status_from_exit(
    native: str, exit_status: int | None, comment: str | None, flavour: str
) -> JobStatus:
    if exit_status is None:
        # Never ran (qdel of a queued/held job), or a server that did not record it.
        return JobStatus(JobState.CANCELLED, comment or "deleted before it ran", None, native)
    if exit_status == 0:
        return JobStatus(JobState.FINISHED, None, 0, native)
    if exit_status == _WALLTIME_EXIT[flavour]:
        return JobStatus(JobState.TIMED_OUT, "walltime limit exceeded", exit_status, native)
    if exit_status > 256:
        signum = exit_status - 256
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        state = JobState.CANCELLED if signum in _CANCEL_SIGNALS else JobState.FAILED
        return JobStatus(state, f"killed by {name}", 128 + signum, native)
    if exit_status < 0:
        return JobStatus(
            JobState.FAILED,
            f"the batch system could not run it (Exit_status {exit_status})",
            exit_status,
            native,
        )
    return JobStatus(JobState.FAILED, None, exit_status, native)


def pbs_job_status(
    job_state: str,
    exit_status: int | str | None = None,
    comment: str | None = None,
    hold_types: str | None = None,
    flavour: str = "pro",
    run_count: int | str | None = None,
) -> JobStatus:
    """One job's status from its ``qstat -f`` attributes.

    ``flavour`` (``"pro"`` or ``"torque"``) decides which negative ``Exit_status`` means a
    walltime kill; ``run_count``: how many times it was started (a rerun raises it). The reason of a waiting job is the scheduler's ``comment`` (``Not Running:
    Insufficient amount of resource: ncpus ...``), for held jobs else who holds it.
    """
    native = (job_state or "").strip()[:1].upper()
    comment = comment.strip() if isinstance(comment, str) and comment.strip() else None
    if isinstance(exit_status, str):
        try:
            exit_status = int(exit_status.strip())
        except ValueError:
            exit_status = None
    if native in _FINAL_LETTERS:
        return _final_status(native, exit_status, comment, flavour)
    if native == "M":  # PBS Pro history: moved to another server, no longer ours to watch
        return JobStatus(JobState.LOST, comment or "moved to another server", None, native)
    state = _STATES.get(native, JobState.QUEUED if not native else JobState.RUNNING)
    reason = None
    if native == "S":
        # its comment is still the scheduler's "Job run at ..." of the run it suspends
        reason = "Job suspended"
    elif state.is_waiting:
        reason = comment
        if reason is None and state == JobState.HELD:
            holders = [_HOLD_TYPES[c] for c in (hold_types or "") if c in _HOLD_TYPES]
            reason = f"Job held by {' and '.join(holders)}" if holders else "Job held"
        elif reason is None and native == "W":
            reason = "waiting for its start time"
    # S (qsig -s suspend, or preemption by suspension) and U (PBS Pro: workstation busy)
    interruption = Interruption.SUSPENDED if native in ("S", "U") else None
    try:
        starts = None if run_count is None else int(run_count)
    except ValueError:
        starts = None
    return JobStatus(state, reason, None, native, interruption=interruption, starts=starts)


def parse_qstat_json(stdout: str) -> dict[str, JobStatus]:
    """Parse ``qstat -f -F json [-x]`` (PBS Pro / OpenPBS): a status per job id it lists.

    Some PBS Pro versions write invalid JSON when an exported variable holds quotes or
    backslashes; the ``Variable_List`` blocks are dropped and bad escapes repaired before
    giving up with ``ValueError``.
    """
    document = _load_lenient_json(stdout)
    jobs = document.get("Jobs") or {}
    statuses = {}
    for job_id, attrs in jobs.items():
        if not isinstance(attrs, dict):
            continue
        statuses[str(job_id)] = pbs_job_status(
            str(attrs.get("job_state", "")),
            attrs.get("Exit_status", attrs.get("exit_status")),
            attrs.get("comment"),
            attrs.get("Hold_Types"),
            "pro",
            # qrerun (or preemption by requeue) reruns it at once: run_count is the only trace
            attrs.get("run_count"),
        )
    return statuses


def _load_lenient_json(text: str) -> dict[str, Any]:
    attempts = [
        text,
        re.sub(r'"Variable_List"\s*:\s*\{.*?\n\s*\},?', "", text, flags=re.S),
    ]
    attempts.append(re.sub(r'\\(?!["\\/bfnrtu])', r"\\\\", attempts[1]))
    for attempt in attempts:
        try:
            document = json.loads(attempt, strict=False)
        except ValueError:
            continue
        if isinstance(document, dict):
            return document
    raise ValueError(f"qstat printed invalid JSON:\n{text[:500]}")


def parse_qstat_text(stdout: str) -> dict[str, JobStatus]:
    """Parse ``qstat -f`` text (Torque, or PBS Pro without ``-F``): ``Job Id: 12.server``
    blocks of ``    attribute = value`` lines; qstat wraps long values by inserting a newline
    and a tab, which are removed again.

    Torque is recognised by its lower-case ``exit_status`` (or state ``C``).
    """
    blocks: dict[str, dict[str, str]] = {}
    attrs: dict[str, str] | None = None
    last: str | None = None
    for line in stdout.splitlines():
        if line.startswith("Job Id:"):
            attrs = blocks.setdefault(line.split(":", 1)[1].strip(), {})
            last = None
        elif attrs is None or not line.strip():
            continue
        elif line.startswith("\t") or " = " not in line:
            # qstat wraps long values by inserting "\n\t": drop exactly that, keep the rest
            if last is not None:
                attrs[last] += line[1:] if line.startswith("\t") else line.strip()
        else:
            key, value = line.lstrip(" ").split(" = ", 1)
            last = key.strip()
            attrs[last] = value
    blocks = {
        job_id: {key: value.strip() for key, value in attrs.items()}
        for job_id, attrs in blocks.items()
    }
    statuses = {}
    for job_id, attrs in blocks.items():
        torque = "exit_status" in attrs or attrs.get("job_state", "")[:1] == "C"
        statuses[job_id] = pbs_job_status(
            attrs.get("job_state", ""),
            attrs.get("Exit_status", attrs.get("exit_status")),
            attrs.get("comment"),
            attrs.get("Hold_Types"),
            "torque" if torque else "pro",
            attrs.get("run_count"),
        )
    return statuses


def match_job_ids(
    job_ids: Sequence[str], statuses: Mapping[str, JobStatus]
) -> dict[str, JobStatus]:
    """Statuses keyed by our ``job_ids``; qstat may print the server name shorter or longer
    than qsub did (``12.pbs01`` for ``12.pbs01.example.org``): ids then match by sequence
    number when the server names agree as far as both go."""
    result = {}
    by_seq: dict[str, list[str]] = {}
    for key in statuses:
        by_seq.setdefault(key.split(".", 1)[0], []).append(key)
    for job_id in job_ids:
        if job_id in statuses:
            result[job_id] = statuses[job_id]
            continue
        seq, _, server = job_id.partition(".")
        candidates = [
            key for key in by_seq.get(seq, []) if _same_server(server, key.partition(".")[2])
        ]
        if len(candidates) == 1:
            result[job_id] = statuses[candidates[0]]
    return result


def _same_server(a: str, b: str) -> bool:
    if not a or not b:
        return True
    short, long = sorted((a.split("."), b.split(".")), key=len)
    return long[: len(short)] == short


# What qstat prints on stderr for an id it does not list (or no longer lists without -x):
# "Unknown Job Id X" (rc 153), "X Job has finished, use -x or -H ..." (rc 35), Torque's
# "Unknown Job Id Error X" and "Invalid state for job - COMPLETE X".
_NOT_A_FAILURE = re.compile(
    r"Unknown Job Id|Job has finished|use -x or -H|Invalid state for job", re.IGNORECASE
)
_REJECTS_OPTION = re.compile(r"invalid option|illegal option|unknown option|usage:", re.IGNORECASE)


def qstat_error_is_harmless(returncode: int | None, stderr: str) -> bool:
    """Whether a failed ``qstat`` only complained about ids it does not (or no longer) list.

    qstat still prints every other job it was asked about, so such an exit status is not a
    failure of the query. A command that did not exit (``returncode`` None: killed on timeout)
    or printed any other complaint (``cannot connect to server``...) is a failure.

    >>> qstat_error_is_harmless(153, "qstat: Unknown Job Id 7.pbs01\\n")
    True
    >>> qstat_error_is_harmless(1, "qstat: cannot connect to server pbs01 (errno=111)\\n")
    False
    """
    if returncode is None or returncode == 0:
        return False
    lines = [line for line in stderr.splitlines() if line.strip()]
    return bool(lines) and all(_NOT_A_FAILURE.search(line) for line in lines)


def qstat_failure_is_usable(exc: CommandError) -> bool:
    """qstat exits non-zero when some ids are unknown or finished, yet prints the others."""
    return qstat_error_is_harmless(exc.returncode, exc.stderr)


def qstat_json_argv(job: Any, job_ids: Sequence[str], facts: dict) -> list[str]:
    """``qstat -f -F json -x ids`` (PBS Pro / OpenPBS; -x includes finished jobs; -t for
    subjobs of arrays, ``12[3].server``)."""
    subjobs = ["-t"] if any("[" in i for i in job_ids) else []
    return ["qstat", "-f", "-F", "json", "-x", *subjobs, *job_ids]


def parse_qstat_json_step(
    stdout: str, job_ids: Sequence[str], known: Mapping[str, JobStatus]
) -> dict[str, JobStatus]:
    """Statuses from the JSON form; ``ValueError`` if the output is not JSON at all (Torque
    ignores ``-F`` and reads ``-x`` as "XML") or is invalid JSON."""
    text = stdout.lstrip()
    if not text:
        return {}
    if not text.startswith("{"):
        raise _NotJSON("qstat -F json did not print JSON")
    return match_job_ids(job_ids, parse_qstat_json(text))


class _NotJSON(ValueError):
    pass


def text_this_poll(exc: Exception, facts: dict) -> bool:
    """After a failed JSON query on PBS Pro: invalid JSON is read in the text form this poll
    (PBS Pro writes some exported variables unescaped); a failed command is a failure."""
    if isinstance(exc, ValueError) and not isinstance(exc, _NotJSON):
        logger.warning("qstat -F json printed invalid JSON; reading qstat -f text this time")
        return True
    return False


def learn_flavour(exc: Exception, facts: dict) -> bool:
    """After a failed JSON query while the flavour is not known to be Torque: Torque if qstat
    refused the options or printed something else than JSON (then for good: see
    :func:`pbs_flavour`), else as :func:`text_this_poll`."""
    if isinstance(exc, _NotJSON):
        facts["pbs_flavour"] = "torque"
        return True
    if isinstance(exc, CommandError):
        refused = exc.returncode is not None and not exc.stdout.strip()
        if refused and _REJECTS_OPTION.search(exc.stderr):
            facts["pbs_flavour"] = "torque"
            return True
        return False
    return text_this_poll(exc, facts)


def _subjobs(job_ids: Sequence[str]) -> list[str]:
    # array subjobs (12[3].server) are listed only with -t
    return ["-t"] if any("[" in i for i in job_ids) else []


def qstat_text_argv(job: Any, job_ids: Sequence[str], facts: dict) -> list[str]:
    """``qstat -f -x ids`` text on PBS Pro / OpenPBS (``-x`` keeps finished jobs), with
    ``-t`` when some ids are array subjobs."""
    return ["qstat", "-f", "-x", *_subjobs(job_ids), *job_ids]


def torque_qstat_argv(job: Any, job_ids: Sequence[str], facts: dict) -> list[str]:
    """``qstat -f ids`` text on Torque (no ``-x``: completed jobs stay listed for
    ``keep_completed`` seconds), with ``-t`` when some ids are array subjobs."""
    return ["qstat", "-f", *_subjobs(job_ids), *job_ids]


def parse_qstat_text_step(
    stdout: str, job_ids: Sequence[str], known: Mapping[str, JobStatus]
) -> dict[str, JobStatus]:
    """Statuses from the ``qstat -f`` text form."""
    return match_job_ids(job_ids, parse_qstat_text(stdout))


def parse_pbs_version(stdout: str) -> dict[str, Any]:
    """``qstat --version``: ``pbs_version = 23.06.06`` is PBS Pro / OpenPBS (arrays with
    ``-J``), ``Version: 6.1.3`` is Torque (arrays with ``-t``): the ``pbs_flavour`` fact
    :func:`pbs_flavour` reads."""
    if re.search(r"^pbs_version\s*=", stdout, re.MULTILINE):
        return {"pbs_flavour": "pro"}
    if re.search(r"^Version:", stdout, re.MULTILINE | re.IGNORECASE):
        return {"pbs_flavour": "torque"}
    return {}


def parse_pbs_limits(stdout: str) -> dict[str, int]:
    """``qmgr -c 'list server'`` -> ``max_array_size`` (subjobs of one array): PBS Pro's
    ``max_array_size``, Torque's ``max_job_array_size`` (also in ``print server`` form,
    ``set server max_job_array_size = 1000``). Unset on Torque: no limit."""
    match = re.search(
        r"^\s*(?:set server\s+)?max_(?:job_)?array_size\s*=\s*(\d+)\s*$", stdout, re.MULTILINE
    )
    return {"max_array_size": int(match.group(1))} if match and int(match.group(1)) else {}


def pbs_array_task_ids(stdout: str, indices: Sequence[int]) -> list[str]:
    """``65[].server`` -> ``["65[0].server", "65[1].server", ...]``."""
    found = re.findall(r"^(\d+)\[\](\.[\w.-]+)?\s*$", stdout, re.MULTILINE)
    if len(found) != 1:
        raise ValueError(f"Could not read one array job id from qsub's output:\n{stdout}")
    sequence, server = found[0]
    return [f"{sequence}[{i}]{server}" for i in indices]


def _pbs_task(job_id: str) -> tuple[str, int] | None:
    match = re.fullmatch(r"(\d+)\[(\d+)\](.*)", job_id)
    # the array key keeps the server suffix: 65[...].server
    return (f"{match.group(1)}\0{match.group(3)}", int(match.group(2))) if match else None


def pbs_cancel_args(job_ids: Sequence[str]) -> list[str]:
    """``qdel`` arguments: plain ids, then consecutive subjobs of one array as
    ``65[3-5].server``."""
    groups = group_tasks(job_ids, _pbs_task)
    ranges = [
        f"{sequence}[{span}]{server}"
        for arg, indices in groups
        if indices is not None
        for sequence, server in [arg.split("\0")]
        for span in index_spans(indices)
    ]
    return [arg for arg, indices in groups if indices is None] + ranges


def pbs_adopt(listed: Sequence[str], indices: Sequence[int]) -> list[str]:
    """Subjob ids of the one array (``65[].server``) a failed submission created."""
    arrays = {m.groups() for m in (re.fullmatch(r"(\d+)\[\d*\](.*)", i) for i in listed) if m}
    if len(arrays) != 1:
        raise ValueError(f"expected one array, found {', '.join(listed)}")
    sequence, server = arrays.pop()
    return [f"{sequence}[{i}]{server}" for i in indices]


# over max_array_size (recorded on OpenPBS 23.06.06, rc 3)
_ARRAY_TOO_LARGE = re.compile(r"Array job exceeds server or queue size limit")

PBS_PRO_ARRAYS = ArraySupport(
    index_var="PBS_ARRAY_INDEX",
    submit_args=lambda first, last: ["-J", f"{first}-{last}"],
    task_ids=pbs_array_task_ids,
    first_index=0,
    min_size=2,  # "qsub: illegal -J value" for -J 1-1
    cancel_args=pbs_cancel_args,
    adopt=pbs_adopt,
    too_large=_ARRAY_TOO_LARGE,
)


# Torque: ``qsub -t 0-3`` prints ``12[].server``, its subjobs are ``12[3].server`` with the index
# in $PBS_ARRAYID; ``qdel 12[3].server`` deletes one (one id per qdel, as for PBS Pro).
TORQUE_ARRAYS = ArraySupport(
    index_var="PBS_ARRAYID",
    submit_args=lambda first, last: ["-t", f"{first}-{last}"],
    task_ids=pbs_array_task_ids,
    first_index=0,
    min_size=2,
    cancel_args=list,
    adopt=pbs_adopt,
    # the emulator's guess at Torque's wording (no real Torque recorded), or PBS Pro's
    too_large=re.compile(r"Requested array size too large|" + _ARRAY_TOO_LARGE.pattern),
)


def parse_pbs_queue_walltime(stdout: str) -> float | None:
    """``qstat -Qf QUEUE`` / ``qstat -Bf``: ``resources_default.walltime``, else
    ``resources_max.walltime``."""
    found = {}
    for line in stdout.splitlines():
        key, sep, value = line.strip().partition(" = ")
        if sep and key in ("resources_default.walltime", "resources_max.walltime"):
            found[key] = hms_seconds(value)
    default = found.get("resources_default.walltime")
    return default if default is not None else found.get("resources_max.walltime")


# ---------------------------------------------------------------- tags

#: A PBS / Torque / Moab ``job_name``: what all three accept at the start of a job name
#: (Torque and PBS Pro want a letter first) and that needs no quoting.
JOB_NAME_PATTERN = r"[A-Za-z][A-Za-z0-9_.+-]*"
#: The longest job name PBS Pro / OpenPBS accept (``qsub -N``).
PBS_MAX_JOB_NAME = 236
_NAME_RE = re.compile(rf"(?P<job_name>{JOB_NAME_PATTERN})-(?P<tag>{TAG_PATTERN})")


def name_with_tag(job_name: str, text: str) -> str:
    """The job name carrying the tag ``text`` on PBS, Torque and Moab: ``<job_name>-<tag>``.

    A job submitted from inside a worker gets a name of its own (``qsub -V`` copies the
    environment, never the name), so it never carries the tag.
    """
    if not re.fullmatch(JOB_NAME_PATTERN, job_name):
        raise ValueError(f"job_name {job_name!r} cannot carry a tag")
    return f"{job_name}-{text}"


def tag_in_name(name: str | None, index: str | None = None) -> str | None:
    """The tag text of a job name written by :func:`name_with_tag`, else ``None``. The name
    must be exactly of that form; a Torque subjob ``N[index]`` may also be named
    ``<name>-<index>``."""
    if not name:
        return None
    name = name.strip()
    if index is not None and name.endswith(f"-{index}"):
        match = _NAME_RE.fullmatch(name[: -len(index) - 1])
        if match is not None:
            return match["tag"]
    match = _NAME_RE.fullmatch(name)
    return match["tag"] if match is not None else None


_PBS_JOB_NAME = re.compile(
    r'"(?P<id>[^"\\]+)"\s*:\s*\{\s*"Job_Name"\s*:\s*(?:"(?P<name>[^"\\]*)"|(?P<number>\d+))'
)
_PBS_SUBJOB = re.compile(r"\d+\[(?P<index>\d+)\].*")


def parse_pbs_tags(stdout: str, user: str | None = None) -> dict[str, str]:
    """``qstat -f -F json`` (OpenPBS, PBS Pro) or ``qstat -f`` text (Torque, Moab): the tag
    of each job whose ``Job_Name`` is exactly ``<job_name>-<tag>`` (:func:`tag_in_name`).

    The job's environment (``Variable_List``) is not read: a job submitted with ``qsub -V``
    from inside a worker copies it. PBS Pro writes invalid JSON when a submit argument holds
    a backslash: then job keys, names and owners are read in document order instead. With
    ``user``, only jobs whose ``Job_Owner`` is ``user@...`` are kept (JSON and text forms).
    Exiting and ended jobs (state ``E``, ``C``, ``F``, ``X``: Torque lists ended ones for a
    while) are left out. A job array listed with its subjobs (``qstat -t``) is reported by
    its subjobs only (``12[0].server``, not ``12[]``).
    """
    return _subjobs_over_arrays(_pbs_tags(stdout, user))


def _subjobs_over_arrays(found: dict[str, str]) -> dict[str, str]:
    listed = {job_id.split("[", 1)[0] for job_id in found if re.search(r"\[\d+\]", job_id)}
    return {
        job_id: text
        for job_id, text in found.items()
        if not ("[]" in job_id and job_id.split("[", 1)[0] in listed)
    }


def _pbs_tags(stdout: str, user: str | None) -> dict[str, str]:
    text = stdout.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:
            return _pbs_json_by_order(text, user)
        found = {}
        for job_id, attrs in (doc.get("Jobs") or {}).items():
            if not isinstance(attrs, dict):
                continue
            if user is not None and not _owned_by(str(attrs.get("Job_Owner", "")), user):
                continue
            if str(attrs.get("job_state", "")) in _PBS_LEAVING:
                continue
            tag = tag_in_name(str(attrs.get("Job_Name", "")))
            if tag is not None:
                found[job_id] = tag
        return only_tagged(found)
    return _pbs_text(text, user)


#: Job states of jobs on their way out: exiting (``E``, also after a ``qdel``), and ended
#: (Torque keeps ``C`` jobs listed for ``keep_completed``; PBS Pro ``F`` and ``X``).
_PBS_LEAVING = {"E", "C", "F", "X"}


def _owned_by(job_owner: str, user: str) -> bool:
    return job_owner.strip().split("@", 1)[0] == user


_PBS_OWNER_VALUE = re.compile(r'"Job_Owner"\s*:\s*"(?P<owner>[^"\\]*)"')
_PBS_STATE_VALUE = re.compile(r'"job_state"\s*:\s*"(?P<state>[^"\\]*)"')


def _pbs_json_by_order(text: str, user: str | None) -> dict[str, str]:
    # OpenPBS writes "Job_Name" first in each job's object: the key and the name together
    names = [(m.start(), m["id"], m["name"] or m["number"]) for m in _PBS_JOB_NAME.finditer(text)]
    starts = [start for start, _, _ in names]

    def job_at(position: int) -> str | None:
        k = bisect.bisect_left(starts, position) - 1
        return names[k][1] if k >= 0 else None

    owners = {job_at(m.start()): m["owner"] for m in _PBS_OWNER_VALUE.finditer(text)}
    states = {job_at(m.start()): m["state"] for m in _PBS_STATE_VALUE.finditer(text)}
    found = {}
    for _, job_id, name in names:
        if user is not None and not _owned_by(owners.get(job_id, ""), user):
            continue
        if states.get(job_id) in _PBS_LEAVING:
            continue
        tag = tag_in_name(name)
        if tag is not None:
            found[job_id] = tag
    return only_tagged(found)


def _pbs_text(text: str, user: str | None) -> dict[str, str]:
    # qstat -f wraps long values onto lines starting with a tab: join them first
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith("\t") and lines:
            lines[-1] += line[1:]
        else:
            lines.append(line)
    names: dict[str, str] = {}
    owners: dict[str, str] = {}
    torque_subjobs: set[str] = set()
    leaving = set()
    job_id = None
    for line in lines:
        if line.startswith("Job Id:"):
            job_id = line.split(":", 1)[1].strip()
            continue
        name, sep, value = line.strip().partition(" = ")
        if not sep or job_id is None:
            continue
        if name == "Job_Name":
            names[job_id] = value
        elif name == "Job_Owner":
            owners[job_id] = value
        elif name == "job_state" and value.strip() in _PBS_LEAVING:
            leaving.add(job_id)
        elif name == "job_array_id":  # Torque's subjob attribute (OpenPBS: array_index)
            torque_subjobs.add(job_id)
    found = {}
    for job_id, name in names.items():
        if job_id in leaving:
            continue
        if user is not None and not _owned_by(owners.get(job_id, ""), user):
            continue
        # Torque names its subjob N[i] "<name>-<i>" (its PBS_JOBNAME)
        subjob = _PBS_SUBJOB.fullmatch(job_id) if job_id in torque_subjobs else None
        tag = tag_in_name(name, subjob["index"] if subjob else None)
        if tag is not None:
            found[job_id] = tag
    return only_tagged(found)


# ---------------------------------------------------------------- the #PBS header

#: What a ``#PBS`` value cannot carry, and why.
PBS_REFUSED = {
    '"\\': "OpenPBS's qsub copies a quoted part of a '#PBS' line without escapes, so it "
    "cannot hold a double quote, and the PBS flavours read backslashes differently",
}
#: ... and in an ``-e``/``-o`` path, ``[host:]path``.
PBS_PATH_REFUSED = {**PBS_REFUSED, ":": "qsub reads the part before ':' in -e/-o as a host name"}


def pbs_value(
    value: object, keyword: str, refused: Mapping[str, str] = PBS_REFUSED, shown: object = None
) -> str:
    """``value`` as one argument of a ``#PBS`` line (OpenPBS, Torque, Moab's msub).

    OpenPBS's qsub splits a directive line at blanks outside quotes and copies a double- or
    single-quoted part as it is (its ``make_argv``, OpenPBS 23.06), so a value in double
    quotes stays one argument.
    """
    return directive_value(value, keyword, "PBS", refused=refused, shown=shown)


def pbs_log_path(directory: str) -> str:
    """The ``-e``/``-o`` value ``<directory>/``, quoted for ``#PBS``."""
    return pbs_value(f"{directory}/", "log_directory", PBS_PATH_REFUSED, shown=directory)


#: The ``#PBS`` lines of a job script (PBS Pro, Torque and Moab alike).
HEADER = HeaderTable(
    (
        Directive("-N {}", "job_name"),
        Directive("-q {}", "queue"),
        Directive("-A {}", "account"),
        Directive("-l {}", "resource_spec"),
        # one chunk per node: without it PBS may put several chunks on one host
        Directive("-l place=scatter", when=lambda job: job.nodes > 1),
        Directive("-l walltime={}", "walltime"),
        Directive("-e {}", "log_directory", write=pbs_log_path),
        Directive("-o {}", "log_directory", write=pbs_log_path),
    )
)


#: Commands telling a PBS site's limits (``max_array_size``), either flavour.
_LIMITS = LimitsProbe(lambda job: ["qmgr", "-c", "list server"], parse_pbs_limits)

#: PBS Pro / OpenPBS: ``qstat -f -F json -x`` (its text form for a poll whose JSON is
#: invalid), arrays with ``-J``.
PBS_PRO = Dialect(
    name="pbs",
    submit_command="qsub",
    cancel_command="qdel",
    directive_prefix="#PBS",
    header_table=HEADER,
    # Full ids (``12.server``): on multi-server sites ``qdel 12`` alone may not find the job.
    # "12.server" alone on its line; job arrays print "12[].server"
    job_id_regexp=r"^(?P<job_id>\d+(?:\[\d*\])?(?:\.[\w-]+)*)\s*$",
    walltime_forms=("hh:mm:ss", "mm:ss", "seconds"),
    # the queue's (else the server's) resources_default.walltime, else resources_max.walltime
    walltime_default=WalltimeDefault(
        lambda job: ["qstat", "-Qf", job.queue] if job.queue else ["qstat", "-Bf"],
        lambda stdout, job: parse_pbs_queue_walltime(stdout),
    ),
    status_steps=(
        StatusStep(
            "qstat -F json",
            qstat_json_argv,
            parse_qstat_json_step,
            usable_failure=qstat_failure_is_usable,
            fallback=text_this_poll,
            max_ids=STATUS_MAX_IDS,
        ),
        StatusStep(
            "qstat -f",
            qstat_text_argv,
            parse_qstat_text_step,
            usable_failure=qstat_failure_is_usable,
            when=lambda facts, fell_back: fell_back,
            max_ids=STATUS_MAX_IDS,
        ),
    ),
    # qdel of a job that ended meanwhile: "Unknown Job Id", "Job has finished"; of a subjob
    # that ended while its array still runs (OpenPBS): "Request invalid for finished array
    # subjob 65[1].vm-pbs"
    cancel_gone_pattern=re.compile(
        _NOT_A_FAILURE.pattern + "|Request invalid for finished array subjob", re.IGNORECASE
    ),
    # One id per qdel: OpenPBS 23.06.06's server crashes on a qdel naming a live job and an
    # id it no longer knows (seen here: `qdel 2004.vm-pbs 99999.vm-pbs` killed pbs_server),
    # and a job we cancel may have ended meanwhile.
    cancel_max_ids=1,
    array_support=PBS_PRO_ARRAYS,
    site_probes=(_LIMITS,),
    # the tag is in the job's name, <job_name>-<tag>, given by submit_argv (qsub -V copies
    # the environment, never the name: a job a worker submits does not carry the tag);
    # -t lists the subjobs of arrays; the text form where qstat has no JSON (Torque)
    tagging=TagSpec(
        submit_args=lambda text: [],
        list_argvs=lambda user: [["qstat", "-f", "-F", "json", "-t"], ["qstat", "-f", "-t"]],
        parse=parse_pbs_tags,
    ),
)

#: Torque: PBS Pro's directives, commands and parsers, but no JSON (``qstat -f`` text, where
#: finished jobs stay as ``C`` for ``keep_completed``) and arrays with ``-t``.
TORQUE = replace(
    PBS_PRO,
    status_steps=(
        StatusStep(
            "qstat -f",
            torque_qstat_argv,
            parse_qstat_text_step,
            usable_failure=qstat_failure_is_usable,
            max_ids=STATUS_MAX_IDS,
        ),
    ),
    array_support=TORQUE_ARRAYS,
)

#: The flavours by the ``pbs_flavour`` fact (``qstat --version``, or a JSON query refused).
FLAVOURS: Mapping[str, Dialect] = {"pro": PBS_PRO, "torque": TORQUE}


def pbs_flavour(facts: Mapping[str, Any]) -> Dialect | None:
    """The flavour of this site, chosen here only: :data:`TORQUE` or :data:`PBS_PRO` once
    ``qstat --version`` told it (or a JSON query was refused: Torque), ``None`` before."""
    return FLAVOURS.get(facts.get("pbs_flavour", ""))


def _in_flavour(flavour: Dialect, step: StatusStep) -> StatusStep:
    # the step of one flavour, run while the site is of that flavour (PBS Pro until known);
    # the first PBS Pro step learns Torque from a refused JSON query
    def when(facts: dict, fell_back: bool) -> bool:
        if (pbs_flavour(facts) or PBS_PRO) is not flavour:
            return False
        return step.when is None or step.when(facts, fell_back)

    fallback = learn_flavour if step.fallback is text_this_poll else step.fallback
    return replace(step, when=when, fallback=fallback)


#: PBS as the job classes speak it before they know the flavour: each flavour's status
#: steps, run while the site is of that flavour (PBS Pro until ``qstat --version`` or a
#: refused JSON query says Torque); arrays once the flavour is known (``PBSJob``).
DIALECT = replace(
    PBS_PRO,
    status_steps=tuple(
        _in_flavour(flavour, step) for flavour in FLAVOURS.values() for step in flavour.status_steps
    ),
    array_support=None,
    site_probes=(LimitsProbe(lambda job: ["qstat", "--version"], parse_pbs_version), _LIMITS),
)
