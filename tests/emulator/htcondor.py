"""HTCondor front end: ``condor_submit``, ``condor_q``, ``condor_history``,
``condor_rm``, ``condor_hold``, ``condor_release``."""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import time
from typing import Any

from .classad import UNDEFINED, ClassAdError, Expr, autoformat, evaluate, literal, to_json, unparse
from .common import (
    UsageError,
    apply_cancel_faults,
    apply_status_faults,
    apply_submit_faults,
    base_job,
    enqueue,
    format_time,
    hold,
    parse_size,
    release,
    request_cancel,
)
from .store import DONE, EXITING, HELD, QUEUED, RUNNING, Job, Store

STATUS_LETTER = {1: "I", 2: "R", 3: "X", 4: "C", 5: "H"}
#: The schedd's default ``MAX_JOBS_PER_SUBMISSION`` (config key ``max_jobs_per_submission``).
MAX_JOBS_PER_SUBMISSION = 20000


# --------------------------------------------------------------------------- quoting
def split_new_syntax(text: str) -> list[str]:
    """Split new-style (double-quoted) Arguments/Environment contents.

    Whitespace separates items, ``'...'`` groups (``''`` inside is a literal
    quote) and ``""`` is a literal double quote.
    """
    text = text.replace('""', '"')
    args: list[str] = []
    cur: list[str] = []
    have = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "'":
            have = True
            i += 1
            while True:
                if i >= len(text):
                    raise UsageError("ERROR: Unterminated single quote in arguments", 1)
                if text[i] == "'":
                    if i + 1 < len(text) and text[i + 1] == "'":
                        cur.append("'")
                        i += 2
                        continue
                    i += 1
                    break
                cur.append(text[i])
                i += 1
            continue
        if ch.isspace():
            if have:
                args.append("".join(cur))
                cur, have = [], False
        else:
            cur.append(ch)
            have = True
        i += 1
    if have:
        args.append("".join(cur))
    return args


def parse_arguments(value: str) -> list[str]:
    """Parse an ``Arguments`` value in the new (quoted) or old syntax."""
    value = value.strip()
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return split_new_syntax(value[1:-1])
    if '"' in value.replace('\\"', ""):
        raise UsageError("ERROR: Found illegal unescaped double-quote: " + value, 1)
    return [a.replace('\\"', '"') for a in value.split()]


def parse_environment(value: str) -> dict[str, str]:
    """Parse an ``Environment`` value (new quoted syntax or old ``;``-separated)."""
    value = value.strip()
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        items = split_new_syntax(value[1:-1])
    else:
        items = [i.strip() for i in value.split(";") if i.strip()]
    env = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"ERROR: Missing '=' after environment variable '{item}'.", 1)
        k, v = item.split("=", 1)
        env[k] = v
    return env


def quote_arguments(args: list[str]) -> str:
    """Arguments list back to the new syntax (as stored in the job ad)."""

    def q(a: str) -> str:
        a = a.replace('"', '""')
        return "'" + a.replace("'", "''") + "'" if (not a or re.search(r"[\s']", a)) else a

    return " ".join(q(a) for a in args)


# --------------------------------------------------------------------------- submit
def _read_description(text: str) -> list[tuple[int, str]]:
    lines: list[tuple[int, str]] = []
    buf, start = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        stripped = buf.strip()
        buf = ""
        if stripped and not stripped.startswith("#"):
            lines.append((start, stripped))
    if buf.strip():
        lines.append((start, buf.strip()))
    return lines


def _norm(key: str) -> str:
    return key.strip().lower().replace("_", "")


def _choice(args: str, macros: dict[str, str], cluster: int, proc: int, depth: int) -> str:
    """``$CHOICE(index, listname)`` / ``$CHOICE(index, item0, item1, ...)``: the item at
    ``index`` (a number or a macro such as ``Process``), counted from 0; items are separated
    by commas and trimmed (white space inside an item stays, as in HTCondor 25)."""
    index_text, _, rest = args.partition(",")
    index_text = index_text.strip()
    if index_text.isdigit():
        index = int(index_text)
    else:
        value = _expand(f"$({index_text})", macros, cluster, proc, depth + 1).strip()
        if not value.isdigit():
            raise UsageError(f"ERROR: $CHOICE() index '{index_text}' is not a number", 1)
        index = int(value)
    items = [i.strip() for i in rest.split(",")]
    if len(items) == 1:  # the name of a list variable
        items = _list_items(
            _expand(macros.get(_norm(items[0]), ""), macros, cluster, proc, depth + 1)
        )
    if not 0 <= index < len(items):
        raise UsageError(f"ERROR: $CHOICE() index {index} is out of range", 1)
    return items[index]


@functools.lru_cache(maxsize=16)
def _list_items(text: str) -> list[str]:
    # cached: a cluster of N procs picks from the same N-item list N times
    return [i.strip() for i in text.split(",")]


def _expand(value: str, macros: dict[str, str], cluster: int, proc: int, depth: int = 0) -> str:
    if "$CHOICE(" in value.upper():
        value = re.sub(
            r"\$CHOICE\(([^()]*)\)",
            lambda m: _choice(m.group(1), macros, cluster, proc, depth),
            value,
            flags=re.I,
        )

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        low = _norm(name)
        if low in ("cluster", "clusterid"):
            return str(cluster)
        if low in ("process", "procid"):
            return str(proc)
        if low == "dollar":
            return "$"
        env = re.fullmatch(r"ENV\((\w+)\)", name, flags=re.I)
        if env:
            return os.environ.get(env.group(1), "")
        raw = macros.get(low, "")
        return _expand(raw, macros, cluster, proc, depth + 1) if depth < 10 else raw

    return re.sub(r"\$\(([^()]*(?:\([^()]*\))?)\)", sub, value)


def _resource(
    value: str, ad: dict[str, Any], default_unit: str, what: str
) -> tuple[Any, float | None]:
    """Returns (ad value, evaluated number in the default unit)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|[kmgt]i?b?)?\s*", value)
    if m:
        if not m.group(2):
            number = float(m.group(1))
        else:
            size = parse_size(m.group(1) + m.group(2)[0])
            number = (size or 0) / (parse_size("1" + default_unit) or 1)
        number = int(number) if number == int(number) else number
        return number, float(number)
    try:
        result = evaluate(value, ad)
    except ClassAdError:
        raise UsageError(f"ERROR: Parse error in expression: {what} = {value}", 1) from None
    return Expr(value), (float(result) if isinstance(result, (int, float)) else None)


def condor_submit(store: Store, argv: list[str]) -> int:
    """``condor_submit [-terse] [-batch-name N] [-a "k = v"]... [file]`` (stdin when absent)."""
    appends: list[str] = []
    terse = False
    batch_name = None
    files: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-a", "-append") and i + 1 < len(argv):
            appends.append(argv[i + 1])
            i += 2
            continue
        if a in ("-batch-name", "-batch_name") and i + 1 < len(argv):
            batch_name = argv[i + 1]
            i += 2
            continue
        if a == "-terse":
            terse = True
        elif a in ("-verbose", "-v", "-disable", "-d", "-unused", "-allow-crlf-script"):
            pass
        elif a.startswith("-") and a != "-":
            raise UsageError(
                f"ERROR: Unknown option {a}\nUsage: condor_submit [options] [cmdfile]", 1
            )
        elif "=" in a and not os.path.exists(a):
            appends.append(a)
        else:
            files.append(a)
        i += 1
    if files and files[0] != "-":
        try:
            with open(files[0]) as fh:
                text = fh.read()
        except OSError:
            raise UsageError(f"ERROR: Failed to open command file ({files[0]})", 1) from None
    else:
        text = sys.stdin.read()
    apply_submit_faults(store)
    lines = _read_description(text)
    # ``-a`` lines go just before the first queue statement, as the real tool does.
    qpos = next(
        (k for k, (_, ln) in enumerate(lines) if re.match(r"queue\b", ln, re.I)), len(lines)
    )
    lines[qpos:qpos] = [(0, a) for a in appends]
    macros: dict[str, str] = {}
    custom: dict[str, str] = {}
    queued: list[tuple[dict[str, str], dict[str, str]]] = []
    for lineno, line in lines:
        m = re.match(r"queue\b\s*(.*)$", line, re.I)
        if m:
            count_text = m.group(1).strip()
            if count_text and not count_text.isdigit():
                raise UsageError(
                    f"ERROR: on Line {lineno} of submit file: \n"
                    f"ERROR: queue statement '{line}' is not supported by the emulator",
                    1,
                )
            for _ in range(int(count_text or 1)):
                queued.append((dict(macros), dict(custom)))
            continue
        m = re.match(r"(\+|MY\.)?([A-Za-z_][\w.]*)\s*=\s*(.*)$", line, re.I)
        if not m:
            raise UsageError(
                f"\nERROR: on Line {lineno} of submit file: \n"
                f'submit: Missing "=" in expression: {line}',
                1,
            )
        if m.group(1):
            custom[m.group(2)] = m.group(3)
        else:
            macros[_norm(m.group(2))] = m.group(3).strip()
    if not queued:
        raise UsageError("\nERROR: no 'queue' statement in the submit description", 1)
    cluster = store.next_seq()
    limit = int(store.config.get("max_jobs_per_submission", MAX_JOBS_PER_SUBMISSION))
    if len(queued) > limit:
        # the schedd refuses the proc after the limit; the whole transaction is dropped
        raise UsageError(
            "\nERROR: Failed to create proc\n"
            "Number of submitted jobs would exceed MAX_JOBS_PER_SUBMISSION",
            1,
            stdout="" if terse else "Submitting job(s)" + "." * limit,
        )
    jobs = [
        _build(store, cluster, proc, mac, cus, batch_name) for proc, (mac, cus) in enumerate(queued)
    ]
    enqueue(store, jobs)
    late = store.take_fault("submit_accept_then_fail")
    if late is not None:
        # the schedd committed the jobs, but condor_submit fails before it says so
        sys.stdout.write("" if terse else "Submitting job(s)" + "." * len(jobs) + "\n")
        sys.stdout.flush()
        time.sleep(float(late.get("seconds", 0)))
        raise UsageError(
            late.get("stderr", "\nERROR: Failed to commit job submission into the queue."),
            int(late.get("exit_code", 1)),
        )
    if terse:
        print(f"{cluster}.0 - {cluster}.{len(jobs) - 1}")
    else:
        print("Submitting job(s)" + "." * len(jobs))
        print(f"{len(jobs)} job(s) submitted to cluster {cluster}.")
    return 0


def _build(
    store: Store,
    cluster: int,
    proc: int,
    macros: dict[str, str],
    custom: dict[str, str],
    batch_name: str | None,
) -> Job:
    def get(name: str, default: str | None = None) -> str | None:
        raw = macros.get(_norm(name))
        return default if raw is None else _expand(raw, macros, cluster, proc)

    universe = (get("universe", "vanilla") or "vanilla").lower()
    if universe not in ("vanilla", "local", "scheduler"):
        raise UsageError(f"ERROR: I don't know about the '{universe}' universe.", 1)
    executable = get("executable")
    if not executable:
        raise UsageError("\nERROR: No 'executable' parameter was provided", 1)
    iwd = os.path.abspath(
        os.path.expanduser(get("initialdir", get("iwd", os.getcwd())) or os.getcwd())
    )
    exe = executable if os.path.isabs(executable) else os.path.join(iwd, executable)
    if (get("transferexecutable", "true") or "true").lower() != "false" and not os.path.exists(exe):
        raise UsageError(f"\nERROR: Executable file {exe} does not exist", 1)
    args = parse_arguments(get("arguments", get("args", "")) or "")
    env_extra = parse_environment(get("environment", get("env", "")) or "")
    host = store.config.get("hostname", "localhost")

    def path_of(name: str) -> str | None:
        value = get(name)
        if not value:
            return None
        value = os.path.expanduser(value)
        return value if os.path.isabs(value) else os.path.join(iwd, value)

    out, err, log = path_of("output"), path_of("error"), path_of("log")
    ad: dict[str, Any] = {}
    for name, raw in custom.items():
        ad[name] = literal(_expand(raw, macros, cluster, proc))
    cpus_ad, cpus = _resource(get("requestcpus", "1") or "1", ad, "", "request_cpus")
    mem_ad, mem_mb = (
        _resource(get("requestmemory", "") or "0", ad, "MB", "request_memory")
        if get("requestmemory")
        else (UNDEFINED, None)
    )
    disk_ad, _disk = (
        _resource(get("requestdisk", "") or "0", ad, "KB", "request_disk")
        if get("requestdisk")
        else (UNDEFINED, None)
    )
    cores = int(cpus) if cpus else 1
    duration = get("allowedjobduration")
    walltime = None
    if duration:
        try:
            walltime = int(evaluate(duration, ad))
        except (ClassAdError, TypeError, ValueError):
            raise UsageError(
                f"ERROR: Parse error in expression: allowed_job_duration = {duration}", 1
            ) from None
    key = f"{cluster}.{proc}"
    scratch = str(store.spool / "execute" / f"dir_{cluster}_{proc}")
    getenv = (get("getenv", "false") or "false").strip()
    if getenv.lower() == "true":
        env = dict(os.environ)
    elif getenv.lower() == "false":
        env = {}
    else:
        wanted = [w.strip() for w in getenv.split(",") if w.strip()]
        env = {
            k: v
            for k, v in os.environ.items()
            if any(re.fullmatch(w.replace("*", ".*"), k) for w in wanted)
        }
    env.update(env_extra)
    env.update(
        {
            "_CONDOR_SCRATCH_DIR": scratch,
            "_CONDOR_SLOT": "slot1_1",
            "_CONDOR_JOB_AD": os.path.join(scratch, ".job.ad"),
            "_CONDOR_MACHINE_AD": os.path.join(scratch, ".machine.ad"),
            "_CONDOR_JOB_IWD": iwd,
            "_CONDOR_JOB_PIDS": "",
            "_CONDOR_AssignedCpus": ",".join(str(c) for c in range(cores)),
            "BATCH_SYSTEM": "HTCondor",
            "OMP_NUM_THREADS": str(cores),
            "TMPDIR": scratch,
            "TMP": scratch,
            "TEMP": scratch,
        }
    )
    if "DJQ_EMULATOR_HOME" in os.environ:
        env.setdefault("DJQ_EMULATOR_HOME", os.environ["DJQ_EMULATOR_HOME"])
    transfer = (get("shouldtransferfiles", "IF_NEEDED") or "").upper() == "YES"
    job = base_job(
        store,
        key=key,
        seq=cluster,
        name=os.path.basename(exe),
        queue=None,
        command=[exe, *args],
        cwd=scratch if transfer else iwd,
        env=env,
        cores=cores,
        walltime=walltime,
        stdout=out,
        stderr=err,
    )
    job["proc"] = proc
    if (get("hold", "false") or "false").strip().lower() == "true":
        # `hold = True`: the job waits in the queue, held by its owner, until condor_release.
        job["state"] = HELD
        job["hold_by"] = "user"
        job["hold_code"] = 15
        job["hold_reason"] = "submitted on hold"
    job["mem_bytes"] = int(mem_mb * 2**20) if mem_mb else None
    job["setup_dirs"] = [scratch]
    job["cleanup_dirs"] = [scratch]
    job["walltime_action"] = "hold"
    job["extra"] = {
        "custom": {k: unparse(v) for k, v in ad.items()},
        "Cmd": exe,
        "Arguments": quote_arguments(args),
        "Environment": " ".join(f"{k}={v}" for k, v in env_extra.items()),
        "Iwd": iwd,
        "Out": out or "/dev/null",
        "Err": err or "/dev/null",
        "user_log": log,
        "RequestCpus": unparse(cpus_ad),
        "RequestMemory": unparse(mem_ad),
        "RequestDisk": unparse(disk_ad),
        "JobBatchName": batch_name or get("batchname"),
        "AllowedJobDuration": walltime,
        "walltime_hold_reason": f"The job exceeded allowed job duration of {walltime}",
        "host": host,
    }
    job["setup_files"] = {
        os.path.join(scratch, ".job.ad"): "".join(
            f"{k} = {unparse(v)}\n" for k, v in job_ad(job).items()
        ),
        os.path.join(
            scratch, ".machine.ad"
        ): f'Machine = "{host}"\nCpus = {cores}\nName = "slot1_1@{host}"\n',
    }
    write_user_log(job, "submit")
    return job


# --------------------------------------------------------------------------- ads
def job_status(job: Job) -> int:
    """HTCondor ``JobStatus``: 1 idle, 2 running, 3 removed, 4 completed, 5 held."""
    state = job["state"]
    if state == QUEUED:
        return 1
    if state == HELD:
        return 5
    if state == RUNNING:
        return 2
    if state == EXITING:
        return 3 if job.get("term_reason") in ("cancelled", "killed") else 2
    return 3 if job.get("term_reason") in ("cancelled", "killed") else 4


def in_queue(job: Job) -> bool:
    """Whether the job is still in the schedd queue (else it is in the history)."""
    return job["state"] != DONE


def job_ad(job: Job) -> dict[str, Any]:
    """The job ClassAd (Python values; expressions as :class:`Expr`)."""
    extra = job["extra"]
    host = extra.get("host", "localhost")
    status = job_status(job)
    ad: dict[str, Any] = {
        "ClusterId": job["seq"],
        "ProcId": job.get("proc", 0),
        "GlobalJobId": f"{host}#{job['seq']}.{job.get('proc', 0)}#{int(job['submit_time'])}",
        "Owner": job["owner"],
        "User": f"{job['owner']}@{host}",
        "JobUniverse": 5,
        "JobStatus": status,
        "EnteredCurrentStatus": int(job.get("state_time") or job["submit_time"]),
        "QDate": int(job["submit_time"]),
        "Cmd": extra["Cmd"],
        "Arguments": extra["Arguments"],
        "Environment": extra["Environment"],
        "Iwd": extra["Iwd"],
        "Out": extra["Out"],
        "Err": extra["Err"],
        "RequestCpus": literal(extra["RequestCpus"]),
        "RequestMemory": literal(extra["RequestMemory"]),
        "RequestDisk": literal(extra["RequestDisk"]),
        "NumJobStarts": job.get("num_starts", 0),
    }
    if extra.get("user_log"):
        ad["UserLog"] = extra["user_log"]
    if extra.get("JobBatchName"):
        ad["JobBatchName"] = extra["JobBatchName"]
    if extra.get("AllowedJobDuration") is not None:
        ad["AllowedJobDuration"] = extra["AllowedJobDuration"]
    if job.get("start_time"):
        ad["JobStartDate"] = int(job["start_time"])
        ad["JobCurrentStartDate"] = int(job["start_time"])
    if status == 2:
        ad["RemoteHost"] = f"slot1_1@{host}"
    if status == 5:
        ad["HoldReason"] = job.get("hold_reason") or "via condor_hold (by user)"
        ad["HoldReasonCode"] = (
            46
            if job.get("term_reason") == "walltime"
            else job.get("hold_code", 1 if job.get("hold_by") == "user" else 6)
        )
        ad["HoldReasonSubCode"] = 0
    if status == 3:
        ad["RemoveReason"] = "via condor_rm (by user " + job["owner"] + ")"
    if job["state"] == DONE:
        ad["CompletionDate"] = int(job.get("end_time") or 0)
        rc = job.get("returncode")
        if status == 4 and rc is not None:
            ad["ExitBySignal"] = rc < 0
            if rc >= 0:
                ad["ExitCode"] = rc
            else:
                ad["ExitSignal"] = -rc
    for name, raw in extra.get("custom", {}).items():
        ad[name] = literal(raw)
    return ad


def _value(ad: dict[str, Any], attr: str) -> Any:
    try:
        return evaluate(attr, ad)
    except ClassAdError:
        return UNDEFINED


def write_user_log(job: Job, event: str, **kw: Any) -> None:
    """Append an event (submit/execute/terminated/aborted/held) to the job's ``Log``."""
    path = job["extra"].get("user_log")
    if not path:
        return
    host = job["extra"].get("host", "localhost")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    jid = f"({job['seq']:03d}.{job.get('proc', 0):03d}.000)"
    addr = f"<127.0.0.1:9618?addrs=127.0.0.1-9618&alias={host}>"
    if event == "submit":
        body = f"000 {jid} {stamp} Job submitted from host: {addr}\n"
    elif event == "execute":
        body = f"001 {jid} {stamp} Job executing on host: {addr}\n"
    elif event == "terminated":
        rc = kw.get("returncode", 0)
        how = (
            f"\t(1) Normal termination (return value {rc})\n"
            if rc >= 0
            else f"\t(0) Abnormal termination (signal {-rc})\n"
        )
        body = f"005 {jid} {stamp} Job terminated.\n{how}"
    elif event == "aborted":
        body = f"009 {jid} {stamp} Job was aborted.\n\tvia condor_rm (by user {job['owner']})\n"
    elif event == "held":
        body = f"012 {jid} {stamp} Job was held.\n\t{kw.get('reason', '')}\n\tCode 46 Subcode 0\n"
    else:
        return
    try:
        with open(path, "a") as fh:
            fh.write(body + "...\n")
    except OSError:
        pass


# --------------------------------------------------------------------------- queries
def _select(
    store: Store, ids: list[str], history: bool, constraint: str | None
) -> tuple[list[Job], list[str]]:
    jobs = [
        j for j in store.all_jobs() if j.get("flavour") == "htcondor" and in_queue(j) != history
    ]
    if history:
        jobs.sort(key=lambda j: j.get("end_time") or 0, reverse=True)
    missing = []
    if ids:
        chosen = []
        for text in ids:
            if re.fullmatch(r"\d+", text):
                hit = [j for j in jobs if j["seq"] == int(text)]
            elif re.fullmatch(r"\d+\.\d+", text):
                hit = [j for j in jobs if j["key"] == text]
            else:
                hit = [j for j in jobs if j["owner"] == text]
            if not hit:
                missing.append(text)
            chosen.extend(h for h in hit if h not in chosen)
        jobs = chosen
    if constraint:
        try:
            jobs = [j for j in jobs if evaluate(constraint, job_ad(j)) is True]
        except ClassAdError:
            raise UsageError(f"Error: Parse error of: {constraint}", 1) from None
    return jobs, missing


def condor_q(store: Store, argv: list[str], history: bool) -> int:
    """``condor_q``/``condor_history`` [ids|owner] [-af[:jhlt,] attrs] [-json] [-long] [-constraint e]."""
    tool = "condor_history" if history else "condor_q"
    ids: list[str] = []
    af: list[str] | None = None
    af_mods = ""
    formats: list[tuple[str, str]] = []
    constraint = None
    mode = "table"
    limit = None
    attributes: list[str] | None = None
    i = 0
    while i < len(argv):
        a = argv[i]
        low = a.lower()
        if low.startswith(("-af", "-autoformat")):
            af, mode = [], "af"
            af_mods = a.split(":", 1)[1] if ":" in a else ""
            i += 1
            while i < len(argv) and not argv[i].startswith("-"):
                af.append(argv[i])
                i += 1
            continue
        if low in ("-constraint", "-const") and i + 1 < len(argv):
            constraint = argv[i + 1]
            i += 2
            continue
        if low == "-format" and i + 2 < len(argv):
            formats.append((argv[i + 1], argv[i + 2]))
            mode = "format"
            i += 3
            continue
        if low in ("-limit", "-match") and i + 1 < len(argv):
            limit = int(argv[i + 1])
            i += 2
            continue
        if low in ("-attributes", "-attrs") and i + 1 < len(argv):
            attributes = [x.strip() for x in argv[i + 1].split(",") if x.strip()]
            i += 2
            continue
        if low == "-json":
            mode = "json"
        elif low in ("-long", "-l"):
            mode = "long"
        elif low in (
            "-nobatch",
            "-allusers",
            "-totals",
            "-global",
            "-wide",
            "-w",
            "-hold",
            "-run",
            "-idle",
            "-batch",
            "-forwards",
            "-backwards",
        ):
            if low in ("-hold", "-run", "-idle"):
                extra = {
                    "-hold": "JobStatus == 5",
                    "-run": "JobStatus == 2",
                    "-idle": "JobStatus == 1",
                }[low]
                constraint = f"({constraint}) && {extra}" if constraint else extra
        elif a.startswith("-"):
            raise UsageError(
                f"Error: unrecognized argument {a}\nUsage: {tool} [options] [restrictions]", 1
            )
        else:
            ids.append(a)
        i += 1
    host = store.config.get("hostname", "localhost")
    apply_status_faults(
        store,
        f"\n-- Failed to fetch ads from: <127.0.0.1:9618?addrs=127.0.0.1-9618> : {host}\n"
        "SECMAN:2007:Failed to end classad message.",
        1,
    )
    jobs, _missing = _select(store, ids, history, constraint)
    if limit is not None:
        jobs = jobs[:limit]
    ads = [job_ad(j) for j in jobs]
    out: list[str] = []
    if mode == "af":
        sep = ", " if "," in af_mods else ("\t" if "t" in af_mods else " ")
        if "h" in af_mods and ads:
            out.append(sep.join(af or []))
        for ad in ads:
            cells = [
                (f"{a} = " if "l" in af_mods else "")
                + (unparse(_value(ad, a)) if "V" in af_mods else autoformat(_value(ad, a)))
                for a in af or []
            ]
            prefix = f"{ad['ClusterId']}.{ad['ProcId']} " if "j" in af_mods else ""
            out.append(prefix + sep.join(cells))
        if out:
            print("\n".join(out))
    elif mode == "format":
        text = ""
        for ad in ads:
            for fmt, attr in formats:
                value = _value(ad, attr)
                try:
                    text += fmt.replace("\\n", "\n") % (autoformat(value) if "%s" in fmt else value)
                except TypeError:
                    text += fmt.replace("\\n", "\n") % autoformat(value)
        sys.stdout.write(text)
    elif mode == "json":
        if ads:
            docs = [
                {k: to_json(v) for k, v in ad.items() if attributes is None or k in attributes}
                for ad in ads
            ]
            print(json.dumps(docs, indent=2))
    elif mode == "long":
        for ad in ads:
            print(
                "\n".join(
                    f"{k} = {unparse(v)}"
                    for k, v in sorted(ad.items())
                    if attributes is None or k in attributes
                )
            )
            print()
    else:
        _table(store, jobs, ads, history)
    return 0


def _table(store: Store, jobs: list[Job], ads: list[dict[str, Any]], history: bool) -> None:
    host = store.config.get("hostname", "localhost")
    now = time.time()

    def runtime(job: Job) -> str:
        secs = (
            int(
                ((job.get("end_time") if job["state"] == DONE else None) or now) - job["start_time"]
            )
            if job.get("start_time")
            else 0
        )
        return f"{secs // 86400}+{secs % 86400 // 3600:02d}:{secs % 3600 // 60:02d}:{secs % 60:02d}"

    if history:
        print(" ID     OWNER          SUBMITTED   RUN_TIME     ST COMPLETED   CMD")
        for job, ad in zip(jobs, ads, strict=False):
            print(
                f"{job['key']:>7} {job['owner']:<14} {format_time(job['submit_time'], '%m/%d %H:%M')} "
                f"{runtime(job):>12} {STATUS_LETTER[ad['JobStatus']]}  "
                f"{format_time(job.get('end_time'), '%m/%d %H:%M')} {ad['Cmd']} {ad['Arguments']}"
            )
        return
    stamp = time.strftime("%m/%d/%y %H:%M:%S")
    print(f"\n\n-- Schedd: {host} : <127.0.0.1:9618?... @ {stamp}")
    print(" ID      OWNER            SUBMITTED     RUN_TIME ST PRI SIZE CMD")
    counts = dict.fromkeys(STATUS_LETTER.values(), 0)
    for job, ad in zip(jobs, ads, strict=False):
        letter = STATUS_LETTER[ad["JobStatus"]]
        counts[letter] += 1
        print(
            f"{job['key']:>6}   {job['owner']:<14} {format_time(job['submit_time'], '%m/%d %H:%M')} "
            f"{runtime(job):>12} {letter}  0    0.0 {os.path.basename(ad['Cmd'])} {ad['Arguments']}"[
                :200
            ]
        )
    print(
        f"\nTotal for query: {len(jobs)} jobs; {counts['C']} completed, {counts['X']} removed, "
        f"{counts['I']} idle, {counts['R']} running, {counts['H']} held, 0 suspended"
    )


def _targets(
    store: Store, tool: str, argv: list[str]
) -> tuple[list[tuple[str, list[Job]]], bool, str | None]:
    forcex = False
    constraint = None
    ids = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "-forcex":
            forcex = True
        elif a in ("-constraint", "-const") and i + 1 < len(argv):
            constraint = argv[i + 1]
            i += 1
        elif a == "-all":
            constraint = "true"
        elif a in ("-reason",) and i + 1 < len(argv):
            i += 1
        elif a.startswith("-"):
            raise UsageError(f"{tool}: unknown option {a}", 1)
        else:
            ids.append(a)
        i += 1
    if not ids and constraint is None:
        raise UsageError(
            f"Usage: {tool} [options] [constraints]\n {tool}: you must specify a job", 1
        )
    active = [j for j in store.all_jobs() if j.get("flavour") == "htcondor" and in_queue(j)]
    groups: list[tuple[str, list[Job]]] = []
    for text in ids:
        if re.fullmatch(r"\d+", text):
            groups.append((text, [j for j in active if j["seq"] == int(text)]))
        elif re.fullmatch(r"\d+\.\d+", text):
            groups.append((text, [j for j in active if j["key"] == text]))
        else:
            groups.append((text, [j for j in active if j["owner"] == text]))
    if constraint is not None:
        try:
            groups.append(("", [j for j in active if evaluate(constraint, job_ad(j)) is True]))
        except ClassAdError:
            raise UsageError(f"Error: Parse error of: {constraint}", 1) from None
    return groups, forcex, constraint


def _not_found(tool: str, verb: str, text: str, constraint: str | None) -> str:
    if not text:
        return f"Couldn't find/{verb} all jobs matching constraint {constraint}"
    if "." in text:
        c, p = text.split(".")
        return (
            f"Couldn't find/{verb} all jobs matching constraint (ClusterId == {c} && ProcId == {p})"
        )
    if text.isdigit():
        return f"Couldn't find/{verb} all jobs in cluster {text}"
    return f"Couldn't find/{verb} all of user {text}'s job(s)"


def condor_rm(store: Store, argv: list[str]) -> int:
    """``condor_rm <cluster>|<cluster.proc>|<owner>|-all|-constraint e [-forcex]``."""
    groups, forcex, constraint = _targets(store, "condor_rm", argv)
    apply_cancel_faults(
        store,
        "\nERROR: Failed to connect to local queue manager\n"
        "AUTHENTICATE:1003:Failed to authenticate with any method",
        1,
    )
    rc = 0
    for text, jobs in groups:
        if not jobs:
            print(_not_found("condor_rm", "remove", text, constraint), file=sys.stderr)
            rc = 1
            continue
        for job in jobs:
            if forcex and job["state"] == EXITING:
                with store.update_job(job["key"]) as rec:
                    if rec is not None:
                        rec["state"] = DONE
            else:
                request_cancel(store, job["key"])
        if not text:
            print(f"All jobs matching constraint {constraint} have been marked for removal")
        elif "." in text:
            print(f"Job {text} marked for removal")
        elif text.isdigit():
            print(f"All jobs in cluster {text} have been marked for removal")
        else:
            print(f'All jobs of user "{text}" have been marked for removal')
    return rc


def condor_hold_release(store: Store, argv: list[str], release_jobs: bool) -> int:
    """``condor_hold`` / ``condor_release`` of clusters, jobs or owners."""
    tool = "condor_release" if release_jobs else "condor_hold"
    verb = "release" if release_jobs else "hold"
    groups, _forcex, constraint = _targets(store, tool, argv)
    rc = 0
    for text, jobs in groups:
        done = [
            j
            for j in jobs
            if (
                release(store, j["key"])
                if release_jobs
                else hold(store, j["key"], "via condor_hold (by user " + j["owner"] + ")")
            )
            == (HELD if release_jobs else QUEUED)
        ]
        if not done:
            print(_not_found(tool, verb, text, constraint), file=sys.stderr)
            rc = 1
            continue
        word = "released" if release_jobs else "held"
        if "." in text:
            print(f"Job {text} {word}")
        elif text.isdigit():
            print(f"All jobs in cluster {text} have been {word}")
        else:
            print(f"All jobs matching the request have been {word}")
    return rc


def condor_config_val(store: Store, argv: list[str]) -> int:
    """``condor_config_val NAME...``: the value of each (only the settings emulated here)."""
    known = {
        "MAX_JOBS_PER_SUBMISSION": str(
            store.config.get("max_jobs_per_submission", MAX_JOBS_PER_SUBMISSION)
        ),
        "SCHEDD_HOST": store.config.get("hostname", "localhost"),
    }
    names = [a for a in argv if not a.startswith("-")]
    if not names:
        raise UsageError("Usage: condor_config_val [options] variable [variable] ...", 1)
    rc = 0
    for name in names:
        if name.upper() in known:
            print(known[name.upper()])
        else:
            print(f"Not defined: {name}", file=sys.stderr)
            rc = 1
    return rc


__all__ = [
    "condor_submit",
    "condor_config_val",
    "condor_q",
    "condor_rm",
    "condor_hold_release",
    "job_ad",
    "job_status",
    "write_user_log",
    "RUNNING",
]
