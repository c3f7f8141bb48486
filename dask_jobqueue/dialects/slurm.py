"""Slurm: ``sbatch`` / ``squeue`` + ``sacct`` / ``scancel``, ``#SBATCH`` directives.

Everything this package knows about Slurm as data and pure functions: its states, the status,
tag, limits and partition parsers, the argument builders, arrays and the dialect value. The
public job and cluster classes are in :mod:`dask_jobqueue.slurm`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

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
    adopt_one_array,
    decode_wait_status,
    group_tasks,
    hms_seconds,
    index_spans,
    log_file,
    missing_ids,
    simple_parser,
    single_array_id,
)
from ..layout import Launcher
from ..tags import TagSpec, only_tagged
from ..tracker import Vanish
from ..tracking import Interruption, JobState, JobStatus

__all__ = [
    "DIALECT",
    "HEADER",
    "SLURM_ARRAYS",
    "SLURM_LAUNCHERS",
    "SLURM_PATH_REFUSED",
    "decode_wait_status",
    "parse_sacct",
    "parse_scontrol_partitions",
    "parse_slurm_limits",
    "parse_slurm_tags",
    "parse_squeue",
    "sbatch_value",
    "slurm_array_task_ids",
    "slurm_cancel_args",
    "slurm_format_bytes_ceil",
    "slurm_log_file",
]

# "Submitted batch job 12", or "12" / "12;cluster" with --parsable; never a banner line
JOB_ID_REGEXP = r"^(?:Submitted batch job )?(?P<job_id>\d+)(?:;\S+)?\s*$"


def slurm_format_bytes_ceil(nbytes: int) -> str:
    """Memory for ``--mem``, rounded up: whole ``G`` from 1 GiB, ``M`` from 1 MiB, else ``K``.

    >>> slurm_format_bytes_ceil(28_000_000_000)
    '27G'
    """
    if nbytes < KIB:
        return "1K"
    return ceil_to_unit(int(nbytes), [("G", GIB, GIB), ("M", MIB, MIB), ("K", KIB, KIB)], "K")


# Slurm job states (squeue %T / sacct State) in our state model.
_STATES: dict[str, JobState] = {
    "PENDING": JobState.QUEUED,
    "REQUEUED": JobState.QUEUED,
    "REQUEUE_FED": JobState.QUEUED,
    "CONFIGURING": JobState.RUNNING,
    "RUNNING": JobState.RUNNING,
    "COMPLETING": JobState.RUNNING,
    "RESIZING": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,
    "SUSPENDED": JobState.HELD,
    "STOPPED": JobState.HELD,
    "REQUEUE_HOLD": JobState.HELD,
    "RESV_DEL_HOLD": JobState.HELD,
    "COMPLETED": JobState.FINISHED,
    "FAILED": JobState.FAILED,
    "BOOT_FAIL": JobState.FAILED,
    "NODE_FAIL": JobState.FAILED,
    "OUT_OF_MEMORY": JobState.FAILED,
    "SPECIAL_EXIT": JobState.FAILED,
    "CANCELLED": JobState.CANCELLED,
    "REVOKED": JobState.CANCELLED,
    "PREEMPTED": JobState.CANCELLED,
    "TIMEOUT": JobState.TIMED_OUT,
    "DEADLINE": JobState.TIMED_OUT,
}
_HELD_REASONS = ("JobHeldUser", "JobHeldAdmin", "BeginTime")

#: ``PreemptTime`` is the only sign of a job chosen for preemption while its grace period runs
#: (recorded on Slurm 22.05: still ``RUNNING``, reason ``None``; ``N/A`` for other jobs).
SQUEUE_FIELDS = "JobID:|,ArrayJobID:|,ArrayTaskID:|,State:|,Reason:|,exit_code:|,PreemptTime:|"
_NO_TIME = ("", "N/A", "None", "Unknown")


# Shared: 50,000 pending jobs are a handful of distinct statuses, not 50,000 objects per poll
# for the garbage collector to walk (its full passes stall the event loop).
@functools.lru_cache(maxsize=4096)
def _status(
    native: str, reason: str | None, exit_code: int | None = None, preempt_time: str | None = None
) -> JobStatus:
    native = native.strip().split()[0].upper() if native.strip() else "UNKNOWN"
    state = _STATES.get(native, JobState.QUEUED if native == "UNKNOWN" else JobState.RUNNING)
    reason = reason if reason and reason != "None" else None
    if state == JobState.QUEUED and reason in _HELD_REASONS:
        state = JobState.HELD
    if not state.is_final:
        exit_code = None
    preempted = preempt_time is not None and preempt_time.strip() not in _NO_TIME
    interruption = None
    if native == "PREEMPTED" or (preempted and state == JobState.RUNNING):
        interruption = Interruption.PREEMPTED
    elif native in ("SUSPENDED", "STOPPED"):
        interruption = Interruption.SUSPENDED
    elif native in ("REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD"):
        interruption = Interruption.REQUEUED
    return JobStatus(
        state,
        reason,
        exit_code,
        native,
        interruption=interruption,
        interrupted_at=preempt_time.strip() if preempted and preempt_time else None,
    )


def parse_squeue(stdout: str) -> dict[str, JobStatus]:
    """Parse ``squeue -h -t all -r -O 'JobID:|,ArrayJobID:|,ArrayTaskID:|,State:|,Reason:|,exit_code:|,PreemptTime:|'``.

    A ``RUNNING`` job with a ``PreemptTime`` is being preempted (its grace period runs); a
    job ``PENDING`` again after it ran is seen as requeued by the tracker. An array task is reported as ``ARRAYID_INDEX`` (its raw ``JobID`` changes when it
    starts). Also reads the ``JobID:|,State:|,Reason:|,exit_code:|`` form of earlier
    versions and the three-column ``%i|%T|%r`` form (no exit code).
    """
    statuses = {}
    for line in stdout.splitlines():
        parts = [p.strip() for p in line.strip().split("|")]
        if parts and parts[-1] == "" and len(parts) > 1:
            parts = parts[:-1]
        if len(parts) < 2 or not parts[0]:
            continue
        if len(parts) >= 5:  # with ArrayJobID and ArrayTaskID
            job_id, array_id, task, *rest = parts
            if task and task != "N/A" and array_id:
                job_id = f"{array_id}_{task}"
            parts = [job_id, *rest]
        exit_code = None
        if len(parts) > 3 and parts[3].isdigit():
            exit_code = decode_wait_status(int(parts[3]))
        statuses[parts[0]] = _status(
            parts[1],
            parts[2] if len(parts) > 2 else None,
            exit_code,
            parts[4] if len(parts) > 4 else None,
        )
    return statuses


def parse_exit_code(text: str) -> int | None:
    """``3:0`` (exit code:signal) -> 3; a signal-only death ``0:9`` -> 128 + 9."""
    code, _, signal = text.strip().partition(":")
    try:
        code_i = int(code)
        signal_i = int(signal or 0)
    except ValueError:
        return None
    return 128 + signal_i if code_i == 0 and signal_i else code_i


def parse_sacct(
    stdout: str, fields: Sequence[str] = ("JobID", "State", "ExitCode")
) -> dict[str, JobStatus]:
    """Parse ``sacct -P -n -o JobID,State,ExitCode`` (``sacct -c`` works the same way).

    ``fields`` names the columns of ``-o``. Job steps (``123.batch``) are skipped;
    ``CANCELLED by 0`` is read as ``CANCELLED``.
    """
    column = {name: i for i, name in enumerate(fields)}
    statuses = {}
    for line in stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) < len(fields) or not parts[0] or "." in parts[column["JobID"]]:
            continue
        statuses[parts[column["JobID"]]] = _status(
            parts[column["State"]], None, parse_exit_code(parts[column["ExitCode"]])
        )
    return statuses


def squeue_argv(job: Any, job_ids: Sequence[str], facts: dict) -> list[str]:
    """``squeue`` for all ids, every state (finished jobs stay listed until MinJobAge); array
    tasks are asked by their array's id, one line each (``-r``): a task cancelled while
    pending leaves no trace, a missing line is a vanished task."""
    asked = dict.fromkeys(i.split("_", 1)[0] for i in job_ids)
    return ["squeue", "-h", "-t", "all", "-r", "-j", ",".join(asked), "-O", SQUEUE_FIELDS]


def sacct_argv(job: Any, job_ids: Sequence[str], facts: dict) -> list[str]:
    """``sacct`` for ids squeue no longer lists (works only where accounting runs)."""
    return ["sacct", "-X", "-P", "-n", "-j", ",".join(job_ids), "-o", "JobID,State,ExitCode"]


def parse_sacct_final(stdout: str) -> dict[str, JobStatus]:
    """Final states only: a non-final sacct line says nothing squeue did not."""
    return {i: st for i, st in parse_sacct(stdout).items() if st.state.is_final}


def slurm_array_task_ids(stdout: str, indices: Sequence[int]) -> list[str]:
    """``Submitted batch job 12`` for ``--array=0-2`` -> ``["12_0", "12_1", "12_2"]``."""
    array_id = single_array_id(JOB_ID_REGEXP, stdout, "sbatch")
    return [f"{array_id}_{i}" for i in indices]


def _slurm_task(job_id: str) -> tuple[str, int] | None:
    array_id, sep, index = job_id.partition("_")
    return (array_id, int(index)) if sep and index.isdigit() else None


def slurm_cancel_args(job_ids: Sequence[str]) -> list[str]:
    """``scancel`` arguments: tasks of one array as one range (``12_[3-5,7]``), others as is."""
    return [
        arg
        if indices is None
        else f"{arg}_{indices[0]}"
        if len(indices) == 1
        else f"{arg}_[{','.join(index_spans(indices))}]"
        for arg, indices in group_tasks(job_ids, _slurm_task)
    ]


def parse_slurm_limits(stdout: str) -> dict[str, int]:
    """``scontrol show config`` -> ``max_array_size`` (tasks of one array, counted from
    index 0: ``MaxArraySize`` is one more than the highest index) and ``max_job_count``."""
    facts = {}
    for key, fact in (("MaxArraySize", "max_array_size"), ("MaxJobCount", "max_job_count")):
        match = re.search(rf"^{key}\s*=\s*(\d+)\s*$", stdout, re.MULTILINE)
        if match and int(match.group(1)) > 0:
            facts[fact] = int(match.group(1))
    return facts


def _task_log_names(script: str) -> str:
    # one output file per task, named by the task's id (ARRAYID_INDEX), as explain_death looks
    return re.sub(
        r'^(#SBATCH -[eo] .*)-%J\.(err|out)("?)$', r"\1-%A_%a.\2\3", script, flags=re.MULTILINE
    )


SLURM_ARRAYS = ArraySupport(
    index_var="SLURM_ARRAY_TASK_ID",
    submit_args=lambda first, last: [f"--array={first}-{last}"],
    task_ids=slurm_array_task_ids,
    first_index=0,
    cancel_args=slurm_cancel_args,
    adopt=lambda listed, indices: adopt_one_array(listed, indices, lambda a, i: f"{a}_{i}"),
    edit_script=_task_log_names,
    # over MaxArraySize (recorded on Slurm 22.05; a malformed --array reads the same)
    too_large=re.compile(r"Invalid job array specification"),
)


def parse_scontrol_partitions(stdout: str, partition: str | None) -> float | None:
    """``scontrol show partition -o``: ``DefaultTime`` of the partition (the default one when
    ``partition`` is None), else its ``MaxTime``."""
    for line in stdout.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        name = fields.get("PartitionName")
        if name is None:
            continue
        if (partition is not None and name == partition) or (
            partition is None and fields.get("Default") == "YES"
        ):
            default = hms_seconds(fields.get("DefaultTime", ""))
            return default if default is not None else hms_seconds(fields.get("MaxTime", ""))
    return None


# ---------------------------------------------------------------- tags


def parse_slurm_tags(stdout: str, user: str | None = None) -> dict[str, str]:
    """``squeue -h -u USER -o '%i|%k'``: job id and comment per line."""
    found = {}
    for line in stdout.splitlines():
        job_id, sep, comment = line.strip().partition("|")
        if sep and job_id:
            found[job_id] = comment.strip()
    return only_tagged(found)


# ---------------------------------------------------------------- the #SBATCH header


def sbatch_value(
    value: object, keyword: str, refused: Mapping[str, str] | None = None, shown: object = None
) -> str:
    """``value`` as one argument of an ``#SBATCH`` line.

    sbatch reads a double-quoted directive value as one argument, a backslash escaping the
    next character (recorded on Slurm 22.05: ``#SBATCH -o "/t/a -p small -o /t/x.out"`` set
    ``StdOut=/t/a -p small -o /t/x.out`` and left the partition alone; ``\\"`` gave ``"``).
    """
    return directive_value(value, keyword, "Slurm", escaped='\\"', refused=refused, shown=shown)


#: What a Slurm output file name cannot carry, and why.
SLURM_PATH_REFUSED = {
    "\\": "a backslash in a Slurm output file name turns off the %J replacement, so every "
    "job would write the same file",
}


def slurm_log_file(directory: str, job_name: str, suffix: str) -> str:
    """The ``-e``/``-o`` value ``<directory>/<job_name>-%J.<suffix>``, quoted for ``#SBATCH``.
    Slurm reads it as a file-name pattern, where a literal ``%`` is written ``%%``."""
    literal = f"{directory}/{job_name}-".replace("%", "%%")
    return sbatch_value(
        f"{literal}%J.{suffix}", "log_directory", SLURM_PATH_REFUSED, shown=directory
    )


def _gpu_count(job: Any) -> str | None:
    """``--gpus`` value: ``<gpus>`` or ``<gpu_type>:<gpus>`` (gpu_type is a checked name)."""
    if job.gpus is None:
        return None
    return f"{job.gpu_type}:{job.gpus}" if job.gpu_type is not None else str(job.gpus)


def _mem_per_gpu(job: Any) -> str | None:
    return None if job.mem_per_gpu is None else slurm_format_bytes_ceil(job.mem_per_gpu)


def srun_argv(job: Any) -> list[str]:
    """``srun`` running one task on each node of the job (the node's workers), with the
    job's CPUs per task, ending the others when one fails (``--kill-on-bad-exit``) or 10 s
    after one ended (``--wait``): the job never goes on with some of its nodes."""
    return [
        "srun",
        f"--nodes={job.nodes}",
        f"--ntasks={job.nodes}",
        "--ntasks-per-node=1",
        f"--cpus-per-task={job.job_cpu or job.worker_cores}",
        "--kill-on-bad-exit=1",
        "--wait=10",
    ]


#: Slurm starts the workers of each node of a job with srun; SLURM_NODEID is the node's
#: index in the job's allocation (0..nodes-1).
SLURM_LAUNCHERS = (Launcher("srun", srun_argv, "$SLURM_NODEID"),)


#: The ``#SBATCH`` lines of a job script. queue, account, job_name, walltime and job_mem are
#: checked words without blanks or quotes; the log paths are the only free text, quoted.
HEADER = HeaderTable(
    (
        Directive("-J {}", "job_name"),
        Directive("-e {}", log_file(slurm_log_file, "err")),
        Directive("-o {}", log_file(slurm_log_file, "out")),
        Directive("-p {}", "queue"),
        Directive("-A {}", "account"),
        Directive("-n 1", when=lambda job: job.nodes == 1),
        Directive("--ntasks-per-node=1", when=lambda job: job.nodes > 1),
        Directive("-N {}", "nodes"),
        Directive("--cpus-per-task={}", lambda job: job.job_cpu or job.worker_cores),
        Directive(
            "--mem={}",
            lambda job: job.job_mem or slurm_format_bytes_ceil(job.worker_memory),
            when=lambda job: job.mem_per_gpu is None,
        ),
        # [type:]count (sbatch --gpus/--gpus-per-node); an untyped --mem-per-gpu applies to
        # typed GPUs too (checked on Slurm 22.05: MemPerTres=gres:gpu:<MB>)
        Directive("--gpus={}", lambda job: _gpu_count(job), when=lambda job: job.nodes == 1),
        Directive(
            "--gpus-per-node={}", lambda job: _gpu_count(job), when=lambda job: job.nodes > 1
        ),
        Directive("--mem-per-gpu={}", lambda job: _mem_per_gpu(job)),
        Directive("-t {}", "walltime"),
    )
)


DIALECT = Dialect(
    name="slurm",
    submit_command="sbatch",
    cancel_command="scancel",
    directive_prefix="#SBATCH",
    header_table=HEADER,
    job_id_regexp=JOB_ID_REGEXP,
    status_steps=(
        StatusStep(
            "squeue",
            squeue_argv,
            simple_parser(parse_squeue),
            # with a single id squeue fails once that job is purged (after MinJobAge); with
            # several it silently omits purged ones: either way, accounting is asked next
            usable_failure=lambda exc: "Invalid job id" in exc.stderr,
            max_ids=STATUS_MAX_IDS,
        ),
        StatusStep(
            "sacct",
            sacct_argv,
            simple_parser(parse_sacct_final),
            select=missing_ids,
            required=False,
            max_ids=STATUS_MAX_IDS,
        ),
    ),
    cancel_gone_pattern=re.compile(r"already completing or completed|Invalid job id"),
    array_support=SLURM_ARRAYS,
    site_probes=(LimitsProbe(lambda job: ["scontrol", "show", "config"], parse_slurm_limits),),
    # "Slurm temporarily unable to accept job" blocks sbatch up to 120 s at MaxJobCount
    transient_submit_errors=re.compile(
        r"Socket timed out|Resource temporarily unavailable|try again later|"
        r"temporarily unable to accept job|Unable to contact slurm controller|"
        r"Connection refused|Zero Bytes were transmitted",
        re.IGNORECASE,
    ),
    # the tag is Slurm's job comment (kept until the job is purged, listed by squeue %k)
    tagging=TagSpec(
        submit_args=lambda text: [f"--comment={text}"],
        list_argvs=lambda user: [["squeue", "-h", "-u", user, "-o", "%i|%k"]],
        parse=parse_slurm_tags,
    ),
    # sbatch registers a job before it returns and `squeue -t all` lists it until MinJobAge
    # after it ended: an id neither squeue nor sacct knows has ended and been purged.
    vanish=Vanish(state=JobState.FINISHED, reason="purged from Slurm's queue; final state unknown"),
    walltime_forms=("minutes", "mm:ss", "hh:mm:ss", "d-hh", "d-hh:mm", "d-hh:mm:ss"),
    # the partition's DefaultTime (else MaxTime) applies to a job without -t
    walltime_default=WalltimeDefault(
        lambda job: ["scontrol", "show", "partition", "-o", *([job.queue] if job.queue else [])],
        lambda stdout, job: parse_scontrol_partitions(stdout, job.queue),
    ),
)
