"""Moab front end (on top of Torque): ``msub``, ``showq``, ``checkjob``, ``canceljob``, ``releasehold``.

Moab accepts ``#PBS`` directives; ``qsub``/``qstat``/``qdel`` behave like Torque.
"""

from __future__ import annotations

import re
import sys
import time
import xml.etree.ElementTree as ET

from . import pbs
from .common import (
    UsageError,
    apply_cancel_faults,
    apply_status_faults,
    enqueue,
    format_time,
    hms,
    is_visible,
    release,
    request_cancel,
    wait_finished,
)
from .store import DONE, EXITING, HELD, QUEUED, RUNNING, Job, Store

DATE = "%a %b %d %H:%M:%S"


def _queue_directive(script_path: str) -> str:
    """The queue named by a ``#PBS -q`` line of the script, if any."""
    try:
        with open(script_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                match = re.match(r"#PBS\s+-q\s+(\S+)", line)
                if match:
                    return match.group(1)
    except OSError:
        pass
    return ""


def msub(store: Store, argv: list[str]) -> int:
    """``msub [PBS-style options] [script]``; prints a blank line then the job id."""
    try:
        job = pbs.build_job(store, "msub", argv, None)
    except UsageError as exc:
        if exc.code == 2 or exc.message.startswith("ERROR") or not exc.message.startswith("msub:"):
            raise
        text = exc.message.split(": ", 1)[1]
        if "Unknown queue" in text:
            queue = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "-q"), "")
            queue = queue or _queue_directive(argv[-1] if argv else "")
            text = f"invalid class specified '{queue}'" if queue else "invalid class specified"
        raise UsageError(f"ERROR:  cannot submit job - {text}", 1) from None
    enqueue(store, [job])
    print(f"\n{job['seq']}")
    return 0


def moab_id(job: Job) -> str:
    """Moab's id of a job: its sequence number, ``12[3]`` for a Torque subjob."""
    if job.get("array_index") is not None:
        return f"{job['seq']}[{job['array_index']}]"
    return str(job["seq"])


def moab_state(job: Job) -> str:
    """Moab job state word."""
    state = job["state"]
    if state == QUEUED:
        return "Idle"
    if state == HELD:
        return "UserHold" if job.get("hold_by") == "user" else "SystemHold"
    if state == RUNNING:
        return "Running"
    if state == EXITING:
        return "Canceling"
    return "Removed" if job.get("term_reason") in ("cancelled", "killed") else "Completed"


def _status_fault(store: Store) -> None:
    server = store.config.get("server_name", "server")
    apply_status_faults(
        store,
        f"ERROR:    cannot request service (status)\n"
        f"ERROR:    lost connection to server '{server}'",
        1,
    )


def showq(store: Store, argv: list[str]) -> int:
    """``showq [-r|-i|-b|-c] [--xml]``: active / eligible / blocked job sections."""
    _status_fault(store)
    opts = set(argv)
    jobs = [j for j in store.all_jobs() if is_visible(store, j)]
    active = [j for j in jobs if j["state"] in (RUNNING, EXITING)]
    eligible = [j for j in jobs if j["state"] == QUEUED]
    blocked = [j for j in jobs if j["state"] == HELD]
    completed = [j for j in jobs if j["state"] == DONE]
    slots = int(store.config.get("slots", 4))
    used = sum(j["cores"] for j in active)
    now = time.time()
    if "--xml" in opts:
        root = ET.Element("Data")
        ET.SubElement(root, "Object").text = "queue"
        ET.SubElement(
            root,
            "cluster",
            LocalAllocProcs=str(used),
            LocalUpProcs=str(slots),
            LocalIdleProcs=str(slots - used),
            LocalActiveNodes="1" if active else "0",
            LocalUpNodes="1",
            time=str(int(now)),
        )
        for option, group in (
            ("active", active),
            ("eligible", eligible),
            ("blocked", blocked),
            ("completed", completed if "-c" in opts else []),
        ):
            q = ET.SubElement(root, "queue", count=str(len(group)), option=option)
            for j in group:
                attrs = {
                    "JobID": moab_id(j),
                    "JobName": j["name"],
                    "Class": j["queue"],
                    "User": j["owner"],
                    "State": moab_state(j),
                    "ReqProcs": str(j["cores"]),
                    "SubmissionTime": str(int(j["submit_time"])),
                    "ReqAWDuration": str(j.get("walltime") or 0),
                    "DRMJID": pbs.job_display_id(store, j),
                }
                if j.get("start_time"):
                    attrs["StartTime"] = str(int(j["start_time"]))
                    attrs["AWDuration"] = str(int((j.get("end_time") or now) - j["start_time"]))
                if j["state"] == DONE:
                    attrs["CompletionCode"] = str(pbs.exit_status(j, "moab"))
                ET.SubElement(q, "job", attrs)
        print(ET.tostring(root, encoding="unicode"))
        return 0
    out = []
    if "-c" in opts:
        out.append("\ncompleted jobs------------------------")
        out.append(
            f"{'JOBID':<18} {'S':>1} {'CCODE':>5} {'CLASS':>10} {'WALLTIME':>10} {'USERNAME':>10} {'STARTTIME':>21}\n"
        )
        for j in completed:
            out.append(
                f"{moab_id(j):<18} {moab_state(j)[0]:>1} {pbs.exit_status(j, 'moab') or 0:>5} "
                f"{j['queue']:>10} {hms((j.get('end_time') or now) - (j.get('start_time') or now)):>10} "
                f"{j['owner']:>10} {format_time(j.get('start_time'), DATE):>21}"
            )
        out.append(f"\n{len(completed)} completed job{'s' if len(completed) != 1 else ''}\n")
        print("\n".join(out))
        return 0
    show_all = not (opts & {"-r", "-i", "-b"})
    if show_all or "-r" in opts:
        out.append("\nactive jobs------------------------")
        out.append(
            f"{'JOBID':<18} {'USERNAME':>10} {'STATE':>10} {'PROCS':>5} {'REMAINING':>11}  {'STARTTIME':>20}\n"
        )
        for j in active:
            remaining = (j["walltime"] - (now - j["start_time"])) if j.get("walltime") else None
            out.append(
                f"{moab_id(j):<18} {j['owner']:>10} {moab_state(j):>10} {j['cores']:>5} "
                f"{hms(remaining) if remaining is not None else 'INFINITY':>11}  "
                f"{format_time(j['start_time'], DATE):>20}"
            )
        out.append(
            f"\n{len(active)} active job{'s' if len(active) != 1 else ''}"
            f"{used:>14} of {slots} processors in use by local jobs ({100.0 * used / max(slots, 1):.2f}%)\n"
        )
    for title, group, show in (
        ("eligible", eligible, show_all or "-i" in opts),
        ("blocked", blocked, show_all or "-b" in opts),
    ):
        if not show:
            continue
        out.append(f"{title} jobs----------------------")
        out.append(
            f"{'JOBID':<18} {'USERNAME':>10} {'STATE':>10} {'PROCS':>5} {'WCLIMIT':>11}  {'QUEUETIME':>20}\n"
        )
        for j in group:
            out.append(
                f"{moab_id(j):<18} {j['owner']:>10} {moab_state(j):>10} {j['cores']:>5} "
                f"{hms(j.get('walltime')) if j.get('walltime') else 'INFINITY':>11}  "
                f"{format_time(j['submit_time'], DATE):>20}"
            )
        out.append(f"\n{len(group)} {title} job{'s' if len(group) != 1 else ''}\n")
    if show_all:
        out.append(f"Total jobs:  {len(active) + len(eligible) + len(blocked)}\n")
    print("\n".join(out))
    return 0


def _job(store: Store, text: str) -> Job | None:
    key = pbs.parse_job_id(text.removeprefix("Moab."))
    job = store.load_job(key) if key else None
    return job if job is not None and is_visible(store, job) else None


def checkjob(store: Store, argv: list[str]) -> int:
    """``checkjob [-v] [--xml] <id>``: Moab job diagnosis text."""
    _status_fault(store)
    ids = [a for a in argv if not a.startswith("-")]
    if not ids:
        raise UsageError("ERROR:  no job specified", 1)
    job = _job(store, ids[0])
    if job is None:
        raise UsageError(f"ERROR:  cannot locate job '{ids[0]}'", 1)
    now = time.time()
    state = moab_state(job)
    code = pbs.exit_status(job, "moab")
    if "--xml" in argv:
        attrs = {
            "JobID": moab_id(job),
            "JobName": job["name"],
            "State": state,
            "EState": state,
            "Class": job["queue"],
            "User": job["owner"],
            "ReqProcs": str(job["cores"]),
            "SubmissionTime": str(int(job["submit_time"])),
            "DRMJID": pbs.job_display_id(store, job),
        }
        if code is not None:
            attrs["CompletionCode"] = str(code)
        if job.get("start_time"):
            attrs["StartTime"] = str(int(job["start_time"]))
        root = ET.Element("Data")
        ET.SubElement(root, "job", attrs)
        print(ET.tostring(root, encoding="unicode"))
        return 0
    walltime = hms(job.get("walltime")) if job.get("walltime") else "INFINITY"
    used = (job.get("end_time") or now) - job["start_time"] if job.get("start_time") else 0
    lines = [
        f"job {moab_id(job)} (RM job '{pbs.job_display_id(store, job)}')",
        "",
        f"AName: {job['name']}",
        f"State: {state} ",
    ]
    if code is not None:
        lines.append(f"Completion Code: {code}  Time: {format_time(job.get('end_time'), DATE)}")
    lines += [
        f"Creds:  user:{job['owner']}  group:{job['owner']}  class:{job['queue']}",
        f"WallTime:   {hms(used)} of {walltime}",
        f"SubmitTime: {format_time(job['submit_time'], DATE)}",
        f"  (Time Queued  Total: {hms((job.get('start_time') or now) - job['submit_time'])}"
        f"  Eligible: {hms((job.get('start_time') or now) - job['submit_time'])})",
        "",
    ]
    if job.get("start_time"):
        lines.append(f"StartTime: {format_time(job['start_time'], DATE)}")
    lines += [
        f"Total Requested Tasks: {job['cores']}",
        "",
        f"Req[0]  TaskCount: {job['cores']}  Partition: ALL",
        "",
        f"IWD:            {job['submit_dir']}",
        f"SubmitDir:      {job['submit_dir']}",
        f"Executable:     {job['command'][-1]}",
        "",
    ]
    if job["state"] == QUEUED and job.get("pend_reason"):
        reason = job["pend_reason"]
        if reason["kind"] == "never":
            lines.append(
                f"BLOCK MSG: job {job['seq']} violates active HARD MAXPROC limit of "
                f"{reason['total']} (R: {reason['requested']})"
            )
        else:
            lines.append(
                f"NOTE:  job cannot run  (insufficient available procs:  {reason['available']} available)"
            )
    if job["state"] == HELD:
        lines.append(f"Holds:    {'User' if job.get('hold_by') == 'user' else 'System'}")
        lines.append(f"Message[0] {job.get('hold_reason')}")
    print("\n".join(lines))
    return 0


def canceljob(store: Store, argv: list[str]) -> int:
    """``canceljob <id>...``: prints ``job '<id>' cancelled``."""
    ids = [a for a in argv if not a.startswith("-")]
    if not ids:
        raise UsageError("ERROR:  no job specified", 1)
    apply_cancel_faults(store, "ERROR:    cannot request service (status)", 1)
    rc = 0
    waits = []
    for text in ids:
        job = _job(store, text)
        if job is None:
            print(f"ERROR:  invalid job specified ({text})", file=sys.stderr)
            rc = 1
            continue
        before = request_cancel(store, job["key"])
        if before == DONE:
            print(f"ERROR:  job '{text}' is not active (state: {moab_state(job)})", file=sys.stderr)
            rc = 1
            continue
        if before in (RUNNING, EXITING):
            waits.append(job["key"])
        print(f"\njob '{text}' cancelled\n")
    for key in waits:
        wait_finished(store, key)
    return rc


def releasehold(store: Store, argv: list[str]) -> int:
    """``releasehold [-a] <id>``: release a held job."""
    ids = [a for a in argv if not a.startswith("-")]
    rc = 0
    for text in ids:
        job = _job(store, text)
        if job is None:
            print(f"ERROR:  invalid job specified ({text})", file=sys.stderr)
            rc = 1
        elif release(store, job["key"]) == HELD:
            print(f"\nholds modified for job {text}\n")
        else:
            print(f"ERROR:  job '{text}' has no holds", file=sys.stderr)
            rc = 1
    return rc
