"""IBM Spectrum LSF front end: ``bsub``, ``bjobs``, ``bkill``, ``bresume``."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import sys
import time
from typing import Any

from .common import (
    UsageError,
    apply_cancel_faults,
    apply_status_faults,
    apply_submit_faults,
    base_job,
    directive_lines,
    enqueue,
    format_time,
    is_visible,
    killpg,
    parse_size,
    release,
    request_cancel,
    wait_finished,
)
from .store import DONE, EXITING, HELD, QUEUED, RUNNING, Job, Store

EXIT = 255
ARG_OPTS = {
    "J",
    "q",
    "P",
    "n",
    "R",
    "M",
    "W",
    "e",
    "o",
    "eo",
    "oo",
    "cwd",
    "u",
    "m",
    "G",
    "g",
    "app",
    "env",
    "w",
    "E",
    "Ep",
    "sla",
    "U",
    "i",
    "c",
    "D",
    "S",
    "v",
    "We",
    "Lp",
    "L",
    "C",
    "F",
    "k",
    "hl",
    "jsdl",
    "s",
    "p",
    "b",
    "t",
    "ti",
    "a",
    "gpu",
    "Jd",
    "ptl",
}
FLAGS = {"B", "N", "x", "H", "r", "rn", "K", "Ne", "hl", "I", "Ip", "Is", "IS", "ISp", "ISs", "IX"}
RES_SECTIONS = {"select", "order", "rusage", "span", "same", "cu", "affinity"}
CLEAN_PERIOD = 3600.0


def _parse(tool: str, tokens: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    opts: list[tuple[str, str]] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == "--":
            return opts, tokens[i + 1 :]
        if not tok.startswith("-") or tok == "-":
            return opts, tokens[i:]
        name = tok[1:]
        if name in FLAGS and name not in ARG_OPTS:
            opts.append((name, ""))
        elif name in ARG_OPTS:
            i += 1
            if i >= len(tokens):
                raise UsageError(
                    f"{tool}: option requires an argument -- {name}\n"
                    f"Usage: {tool} [options] command [arguments]",
                    EXIT,
                )
            opts.append((name, tokens[i]))
        else:
            raise UsageError(
                f"{tool}: illegal option -- {name}\nUsage: {tool} [options] command [arguments]",
                EXIT,
            )
        i += 1
    return opts, []


def _check_resreq(value: str) -> None:
    depth = 0
    for ch in value:
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if depth < 0:
            break
    sections = re.findall(r"(\w+)\s*\[", value)
    rest = re.sub(r"\w+\s*\[[^\[\]]*\]", "", value).strip()
    if (
        depth != 0
        or any(s not in RES_SECTIONS for s in sections)
        or (rest and not sections and not re.fullmatch(r"[\w\s=<>!.&|()-]+", rest))
    ):
        raise UsageError("Bad resource requirement syntax. Job not submitted.", EXIT)


def _runlimit(value: str) -> int | None:
    value = value.split("/", 1)[0]
    m = re.fullmatch(r"(?:(\d+):)?(\d+)", value)
    if not m:
        return None
    hours, minutes = m.groups()
    return (int(hours or 0) * 60 + int(minutes)) * 60


def _subst(path: str, seq: int, index: int = 0) -> str:
    return path.replace("%J", str(seq)).replace("%I", str(index))


_ARRAY_NAME = re.compile(r"(?P<name>[^\[\]]*)\[(?P<spec>[^\[\]]*)\](?:%(?P<limit>\d+))?")


def array_indices(spec: str) -> list[int]:
    """``1-5,8,10-20:5`` -> the indices of a job array (``ValueError`` if malformed)."""
    indices: list[int] = []
    for item in spec.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:-(\d+)(?::(\d+))?)?\s*", item)
        if not m:
            raise ValueError(item)
        start = int(m.group(1))
        stop = int(m.group(2)) if m.group(2) else start
        step = int(m.group(3)) if m.group(3) else 1
        if start < 1 or stop < start or step < 1:
            raise ValueError(item)
        indices.extend(range(start, stop + 1, step))
    if len(set(indices)) != len(indices):
        raise ValueError(spec)
    return indices


def max_job_array_size(store: Store) -> int:
    """``MAX_JOB_ARRAY_SIZE`` of lsb.params (config ``max_job_array_size``, LSF's default 1000)."""
    return int(store.config.get("max_job_array_size", 1000))


def bsub(store: Store, argv: list[str]) -> int:
    """``bsub [options] [script|command]``; ``bsub < script`` reads the script from stdin.

    ``-J "name[1-N]"`` (index lists ``start[-end[:step]],...``) submits a job array: one job
    id, one job per element (key ``12[3]``, ``LSB_JOBINDEX`` set, ``%I`` in ``-o/-e``).
    """
    opts, operands = _parse("bsub", argv)
    cwd = os.getcwd()
    if operands and len(operands) == 1 and os.path.isfile(operands[0]):
        with open(operands[0]) as fh:
            script_text = fh.read()
        default_name = operands[0]
        command_line = None
    elif operands:
        script_text, default_name, command_line = "", shlex.join(operands), operands
    else:
        if sys.stdin.isatty():
            raise UsageError(
                "bsub: interactive job description is not supported by the emulator", EXIT
            )
        script_text = sys.stdin.read()
        default_name, command_line = None, None
        first = next(
            (
                ln
                for ln in script_text.splitlines()
                if ln.strip() and not ln.lstrip().startswith("#")
            ),
            "",
        )
        default_name = first.strip() or "sh"
    directive_opts: list[tuple[str, str]] = []
    for tokens in directive_lines(script_text, "#BSUB"):
        more, extra = _parse("bsub", tokens)
        if extra:
            raise UsageError(f"bsub: Bad #BSUB line: {' '.join(tokens)}. Job not submitted.", EXIT)
        directive_opts.extend(more)
    apply_submit_faults(store)
    values: dict[str, str] = {}
    flags: set[str] = set()
    resreqs: list[str] = []
    for source in (directive_opts, opts):
        for opt, value in source:
            if opt == "R":
                resreqs.append(value)
            elif opt in FLAGS and opt not in ARG_OPTS:
                flags.add(opt)
            else:
                values[opt] = value
    if flags & {"I", "Ip", "Is", "IS", "ISp", "ISs", "IX", "K"}:
        raise UsageError("bsub: interactive/blocking jobs are not supported by the emulator", EXIT)
    queue = values.get("q", store.config.get("default_queue") or "normal")
    if queue not in store.config.get("queues", []):
        raise UsageError(f"{queue}: No such queue. Job not submitted.", EXIT)
    cores = 1
    if "n" in values:
        m = re.fullmatch(r"(\d+)(?:,(\d+))?", values["n"])
        if not m or int(m.group(1)) < 1 or (m.group(2) and int(m.group(2)) < int(m.group(1))):
            raise UsageError(f"{values['n']}: Bad argument for option -n. Job not submitted.", EXIT)
        cores = int(m.group(1))
    for req in resreqs:
        _check_resreq(req)
    walltime = None
    if "W" in values:
        walltime = _runlimit(values["W"])
        if walltime is None or walltime <= 0:
            raise UsageError(f"{values['W']}: Bad RUNLIMIT specification. Job not submitted.", EXIT)
    mem = None
    if "M" in values:
        unit = str(store.config.get("lsf_unit_for_limits", "KB"))
        mem = parse_size(values["M"], unit)
        if mem is None:
            raise UsageError(f"{values['M']}: Bad argument for option -M. Job not submitted.", EXIT)
    name = values.get("J", default_name or "sh")
    indices: list[int] | None = None
    if "[" in name or "]" in name:
        m = _ARRAY_NAME.fullmatch(name)
        try:
            if m is None or len(name) > 255 or not re.fullmatch(r"[\w.-]*", m.group("name")):
                raise ValueError(name)
            indices = array_indices(m.group("spec"))
        except ValueError:
            raise UsageError("Bad job name. Job not submitted.", EXIT) from None
        if max(indices) > max_job_array_size(store):
            raise UsageError("Job array index too large. Job not submitted.", EXIT)
        name = m.group("name")
    if len(name) > 4094:
        raise UsageError("Job name too long. Job not submitted.", EXIT)

    seq = store.next_seq()
    host = store.config.get("hostname", "localhost")
    workdir = os.path.join(cwd, values["cwd"]) if "cwd" in values else cwd
    spool = store.spool / str(seq)
    spool.mkdir(parents=True, exist_ok=True)
    if command_line is None:
        script_path = str(spool / f"{int(time.time())}.{seq}")
        with open(script_path, "w") as fh:
            fh.write(script_text)
        os.chmod(script_path, 0o700)
        command = ["/bin/bash", script_path]
    else:
        script_path = ""
        command = ["/bin/bash", "-c", shlex.join(command_line)]

    def resolve(raw: str, suffix: str, index: int) -> str:
        path = _subst(os.path.expanduser(raw), seq, index)
        path = path if os.path.isabs(path) else os.path.join(workdir, path)
        file = f"{seq}.{suffix}" if not index else f"{seq}.{index}.{suffix}"
        return os.path.join(path, file) if os.path.isdir(path) else path

    out_raw = values.get("o", values.get("oo"))
    err_raw = values.get("e", values.get("eo"))
    env_mode = values.get("env", "all")
    if env_mode.strip().lower() == "none":
        base_env = {
            k: os.environ[k]
            for k in ("HOME", "USER", "LOGNAME", "SHELL", "PATH", "DJQ_EMULATOR_HOME")
            if k in os.environ
        }
    else:
        base_env = dict(os.environ)
    jobs = []
    for index in indices or [0]:
        key = f"{seq}[{index}]" if indices else str(seq)
        job_name = f"{name}[{index}]" if indices else name
        stdout = resolve(out_raw, "out", index) if out_raw is not None else None
        stderr = resolve(err_raw, "err", index) if err_raw is not None else None
        if stdout and not stderr:
            stderr = "join"
        hostfile = str(store.spool / "aux" / f"{seq}_{index}.hostfile")
        env = dict(base_env)
        env.update(
            {
                "LSB_JOBID": str(seq),
                "LSB_JOBNAME": job_name,
                "LSB_QUEUE": queue,
                "LSB_JOBINDEX": str(index),
                "LSB_DJOB_NUMPROC": str(cores),
                "LSB_MAX_NUM_PROCESSORS": str(cores),
                "LSB_HOSTS": " ".join([host] * cores),
                "LSB_MCPU_HOSTS": f"{host} {cores}",
                "LSB_DJOB_HOSTFILE": hostfile,
                "LSB_SUB_HOST": host,
                "LSB_EXEC_CLUSTER": "cluster1",
                "LSB_JOBFILENAME": script_path,
                "LS_SUBCWD": cwd,
                "LS_EXECCWD": workdir,
                "LSFUSER": os.environ.get("USER", ""),
                "LSB_JOBEXIT_STAT": "0",
            }
        )
        if stdout:
            env["LSB_OUTPUTFILE"] = stdout
        if stderr and stderr != "join":
            env["LSB_ERRORFILE"] = stderr
        job = base_job(
            store,
            key=key,
            seq=seq,
            name=job_name,
            queue=queue,
            command=command,
            cwd=workdir,
            env=env,
            cores=cores,
            walltime=walltime,
            stdout=stdout,
            stderr=stderr,
        )
        job["proc"] = index
        job["stdout_mode"] = "w" if "oo" in values else "a"
        job["stderr_mode"] = "w" if "eo" in values else "a"
        job["mem_bytes"] = mem
        job["setup_files"] = {hostfile: f"{host}\n" * cores}
        if "H" in flags:
            job.update(
                state=HELD,
                hold_by="user",
                hold_reason="The job was suspended by the user while pending;",
            )
        job["extra"] = {
            "project": values.get("P", "default"),
            "description": values.get("Jd", ""),
            "resreq": " ".join(resreqs),
            "memlimit": mem,
            "command_text": default_name or "",
            "sub_cwd": cwd,
            "output_file": values.get("o") or values.get("oo"),
            "error_file": values.get("e") or values.get("eo"),
            "array_index": index,
            "array_name": name if indices else None,
        }
        jobs.append(job)
    enqueue(store, jobs)
    accepted_then_fail = store.take_fault("submit_accept_then_fail")
    if accepted_then_fail is not None:
        # the batch system took the job(s), but bsub reports a failure and no id
        raise UsageError(
            accepted_then_fail.get("stderr", "LSF is processing your request. Please wait ..."),
            int(accepted_then_fail.get("exit_code", 1)),
        )
    print(f"Job <{seq}> is submitted to queue <{queue}>.")
    return 0


# --------------------------------------------------------------------------- bjobs
def stat(job: Job) -> str:
    """LSF job status word."""
    state = job["state"]
    if state == QUEUED:
        return "PEND"
    if state == HELD:
        return "PSUSP"
    if state in (RUNNING, EXITING):
        return "RUN"
    return "DONE" if job.get("returncode") == 0 and not job.get("term_reason") else "EXIT"


def exit_code(job: Job) -> int | None:
    """Exit code bjobs reports for an ``EXIT`` job."""
    if stat(job) != "EXIT":
        return None
    if job.get("term_reason") == "walltime":
        return 140
    rc = job.get("returncode")
    if rc is None:
        return 130 if job.get("term_reason") else None
    return rc if rc >= 0 else 128 - rc


def pend_reason(job: Job) -> str:
    """``pend_reason`` text of a PEND/PSUSP job."""
    if job["state"] == HELD:
        return job.get("hold_reason") or "The job was suspended by user;"
    if job["state"] != QUEUED:
        return ""
    reason = job.get("pend_reason")
    if not reason:
        return "New job is waiting for scheduling;"
    if reason["kind"] == "never":
        return "Not enough processors to meet the job's spanning requirement: 1 host;"
    return "Not enough job slot(s): 1 host;"


def exit_reason(job: Job) -> str:
    """``exit_reason`` text (TERM_* explanation)."""
    if stat(job) != "EXIT":
        return ""
    if job.get("term_reason") == "walltime":
        return "TERM_RUNLIMIT: job killed after reaching LSF run time limit"
    if job.get("term_reason"):
        return "TERM_OWNER: job killed by owner"
    return ""


def _time(ts: float | None) -> str:
    return format_time(ts, "%b %d %H:%M") if ts else ""


def field_values(store: Store, job: Job) -> dict[str, str]:
    """Every supported ``bjobs -o`` field of ``job`` (empty string = ``-``)."""
    host = store.config.get("hostname", "localhost")
    started = job.get("start_time")
    now = time.time()
    run_time = int((job.get("end_time") or now) - started) if started else 0
    code = exit_code(job)
    ran = started is not None and job["state"] in (RUNNING, EXITING, DONE)
    return {
        "jobid": job["key"] if store.config.get("lsb_bjobs_display_enh") else str(job["seq"]),
        "jobindex": str(job["extra"].get("array_index") or 0),
        "stat": stat(job),
        "user": job["owner"],
        "user_group": "",
        "queue": job["queue"],
        "job_name": job["name"],
        "name": job["name"],
        "job_description": job["extra"].get("description", ""),
        "proj_name": job["extra"].get("project", "default"),
        "project": job["extra"].get("project", "default"),
        "application": "",
        "service_class": "",
        "job_group": "",
        "job_priority": "",
        "dependency": "",
        "command": job["extra"].get("command_text", ""),
        "pend_reason": pend_reason(job),
        "exit_code": "" if code is None else str(code),
        "exit_reason": exit_reason(job),
        "from_host": host,
        "first_host": host if ran else "",
        "exec_host": (host if job["cores"] == 1 else f"{job['cores']}*{host}") if ran else "",
        "nexec_host": "1" if ran else "",
        "nreq_slot": str(job["cores"]),
        "slots": str(job["cores"]),
        "nalloc_slot": str(job["cores"]) if ran else "",
        "submit_time": _time(job["submit_time"]),
        "start_time": _time(started),
        "finish_time": _time(job.get("end_time")) if job["state"] == DONE else "",
        "run_time": f"{run_time} second(s)",
        "cpu_used": "0.0 second(s)",
        "time_left": "",
        "runtimelimit": f"{job['walltime'] / 60:.1f}/{host}" if job.get("walltime") else "",
        "memlimit": f"{job['mem_bytes'] // 1024} K" if job.get("mem_bytes") else "",
        "max_mem": "",
        "mem": "",
        "effective_resreq": job["extra"].get("resreq", ""),
        "combined_resreq": job["extra"].get("resreq", ""),
        "output_file": job["extra"].get("output_file") or "",
        "error_file": job["extra"].get("error_file") or "",
        "input_file": "",
        "sub_cwd": job["extra"].get("sub_cwd", ""),
        "exec_cwd": job["cwd"] if ran else "",
        "exec_home": os.path.expanduser("~") if ran else "",
        "pids": str(job["pid"]) if job.get("pid") else "",
        "hold_reason": (job.get("hold_reason") or "") if job["state"] == HELD else "",
    }


DEFAULT_FIELDS = [
    "jobid",
    "user",
    "stat",
    "queue",
    "from_host",
    "exec_host",
    "job_name",
    "submit_time",
]
WIDTHS = {
    "jobid": 7,
    "user": 7,
    "stat": 5,
    "queue": 10,
    "from_host": 11,
    "exec_host": 11,
    "job_name": 10,
    "submit_time": 12,
    "exit_code": 9,
    "pend_reason": 11,
}


def _parse_format(spec: str) -> tuple[list[tuple[str, int | None]], str | None]:
    delimiter = None
    m = re.search(r"delimiter\s*=\s*'([^']*)'|delimiter\s*=\s*\"([^\"]*)\"", spec)
    if m:
        delimiter = m.group(1) if m.group(1) is not None else m.group(2)
        spec = spec[: m.start()] + spec[m.end() :]
    fields: list[tuple[str, int | None]] = []
    for item in spec.replace(",", " ").split():
        name, _, width = item.partition(":")
        name = name.lower()
        if name not in field_values_keys():
            raise UsageError(
                f"{name}: Illegal field name in output format. Specify a valid field name.", EXIT
            )
        w = re.match(r"-?(\d+)", width)
        fields.append((name, int(w.group(1)) if w else None))
    if not fields:
        raise UsageError("bjobs: no valid field in the output format.", EXIT)
    return fields, delimiter


def field_values_keys() -> set[str]:
    """Names accepted in ``bjobs -o``."""
    dummy = {
        "seq": 0,
        "owner": "",
        "queue": "",
        "name": "",
        "extra": {},
        "state": DONE,
        "submit_time": 0.0,
        "cores": 1,
        "cwd": "",
        "walltime": None,
        "mem_bytes": None,
    }
    return set(field_values(Store("/nonexistent"), dummy))


def named_jobs(store: Store, text: str) -> list[tuple[str, Job | None]]:
    """The jobs an id argument names, with the id each is reported under: ``12`` (a job, or
    every element of array 12), ``12[3]``, ``12[1-3,5]``; ``None`` for what does not exist."""
    m = re.fullmatch(r"(\d+)(?:\[([^\[\]]*)\])?", text.strip())
    if m is None:
        return [(text, None)]
    seq, spec = m.groups()
    if spec is None:
        job = store.load_job(seq)
        if job is not None:
            return [(text, job)]
        elements = [
            j
            for j in store.all_jobs()
            if j["seq"] == int(seq) and j["extra"].get("array_name") is not None
        ]
        return [(j["key"], j) for j in elements] or [(text, None)]
    try:
        indices = array_indices(spec)
    except ValueError:
        return [(text, None)]
    return [(f"{seq}[{i}]", store.load_job(f"{seq}[{i}]")) for i in indices]


def bjobs(store: Store, argv: list[str]) -> int:
    """``bjobs [-a|-d|-p|-r] [-noheader] [-w] [-json] [-o "fields [delimiter='c']"] [ids]``."""
    opts: dict[str, str] = {}
    ids: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok in ("-o", "-u", "-q", "-J", "-m", "-P", "-G", "-g", "-sla", "-app", "-Lp"):
            if i + 1 >= len(argv):
                raise UsageError(f"bjobs: option requires an argument -- {tok[1:]}", EXIT)
            opts[tok] = argv[i + 1]
            i += 2
            continue
        if tok in (
            "-noheader",
            "-json",
            "-a",
            "-d",
            "-p",
            "-r",
            "-s",
            "-w",
            "-W",
            "-l",
            "-X",
            "-hms",
            "-UF",
            "-A",
            "-x",
        ):
            opts[tok] = ""
        elif tok.startswith("-"):
            raise UsageError(
                f"bjobs: illegal option -- {tok[1:]}\nUsage: bjobs [options] [jobId ...]", EXIT
            )
        else:
            ids.append(tok)
        i += 1
    apply_status_faults(store, "LSF is down. Please wait ...", EXIT)
    fields, delimiter = (
        _parse_format(opts["-o"]) if "-o" in opts else ([(f, None) for f in DEFAULT_FIELDS], None)
    )
    records: list[dict[str, Any]] = []
    errors: list[str] = []
    rc = 0
    if ids:
        for text in ids:
            named = [
                (label, job)
                for label, job in named_jobs(store, text)
                if job is not None and is_visible(store, job, CLEAN_PERIOD)
            ]
            if not named:
                errors.append(f"Job <{text}> is not found")
                records.append({"__error__": f"Job <{text}> is not found", "jobid": text})
                rc = EXIT
            records.extend(field_values(store, job) for _, job in named)
    else:
        for job in store.all_jobs():
            if not is_visible(store, job, CLEAN_PERIOD):
                continue
            done = job["state"] == DONE
            if ("-d" in opts and not done) or (
                not done and "-p" in opts and job["state"] not in (QUEUED, HELD)
            ):
                continue
            if "-r" in opts and job["state"] not in (RUNNING, EXITING):
                continue
            if done and not ("-a" in opts or "-d" in opts):
                continue
            if "-q" in opts and job["queue"] != opts["-q"]:
                continue
            if "-J" in opts and opts["-J"] not in (job["name"], job["extra"].get("array_name")):
                continue
            records.append(field_values(store, job))
    good = [r for r in records if "__error__" not in r]
    if "-json" in opts:
        out_records = []
        for r in records:
            if "__error__" in r:
                out_records.append({"JOBID": r["jobid"], "ERROR": r["__error__"]})
            else:
                out_records.append({name.upper(): r[name] for name, _ in fields})
        doc = {"COMMAND": "bjobs", "JOBS": len(out_records), "RECORDS": out_records}
        print(json.dumps(doc, indent=2))
    elif "-l" in opts:
        for r in good:
            print(
                f"\nJob <{r['jobid']}>, Job Name <{r['job_name']}>, User <{r['user']}>, "
                f"Project <{r['proj_name']}>, Status <{r['stat']}>, Queue <{r['queue']}>, "
                f"Command <{r['command']}>"
            )
            if r["pend_reason"]:
                print(f" PENDING REASONS:\n {r['pend_reason']}")
            if r["exit_code"]:
                print(f" Exited with exit code {r['exit_code']}.")
            elif r["stat"] == "DONE":
                print(" Done successfully.")
    elif good:
        lines = []
        if "-noheader" not in opts:
            lines.append({name: name.upper() for name, _ in fields})
        lines.extend(good)
        for row in lines:
            cells = []
            for name, width in fields:
                value = row[name] if row[name] != "" else "-"
                if delimiter is None:
                    value = value.ljust(width or WIDTHS.get(name, len(name)))
                cells.append(value)
            print((delimiter if delimiter is not None else " ").join(cells).rstrip())
    for err in errors:
        print(err, file=sys.stderr)
    if not records:
        print(
            "No job found" if ("-a" in opts or "-d" in opts) else "No unfinished job found",
            file=sys.stderr,
        )
    return rc


def bkill(store: Store, argv: list[str]) -> int:
    """``bkill [-s SIG] [-r] job ids`` (``0`` = all of the user's jobs)."""
    sig_name = None
    ids: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "-s" and i + 1 < len(argv):
            sig_name = argv[i + 1]
            i += 2
            continue
        if argv[i] in ("-r", "-b", "-C", "-d", "-stat"):
            i += 2 if argv[i] in ("-C", "-stat") else 1
            continue
        ids.append(argv[i])
        i += 1
    if not ids:
        raise UsageError("Usage: bkill [-s signal_value] jobId ...", EXIT)
    apply_cancel_faults(store, "LSF is down. Please wait ...", EXIT)
    if ids == ["0"]:
        ids = [j["key"] for j in store.all_jobs() if j["state"] != DONE]
    rc = 0
    waits = []
    for text in ids:
        named = named_jobs(store, text)
        whole_array = len(named) > 1 and "[" not in text
        if whole_array:  # bkill 12: the elements still active, reported as the array
            active = [
                (label, job) for label, job in named if job is not None and job["state"] != DONE
            ]
            if not active:
                print(f"Job <{text}>: Job has already finished", file=sys.stderr)
                rc = EXIT
                continue
            named = active
        for label, job in named:
            if job is None or not is_visible(store, job, CLEAN_PERIOD):
                print(f"Job <{label}>: No matching job found", file=sys.stderr)
                rc = EXIT
                continue
            if job["state"] == DONE:
                print(f"Job <{label}>: Job has already finished", file=sys.stderr)
                rc = EXIT
                continue
            if sig_name is not None:
                name = sig_name.upper().removeprefix("SIG")
                sig = int(name) if name.isdigit() else getattr(signal, "SIG" + name, None)
                if sig is None:
                    print(f"{sig_name}: Illegal signal value", file=sys.stderr)
                    return EXIT
                killpg(job.get("pid"), int(sig))
                if not whole_array:
                    print(f"Job <{label}> is being signaled")
                continue
            before = request_cancel(store, job["key"], sig=signal.SIGINT)
            if before in (RUNNING, EXITING):
                waits.append(job["key"])
            if not whole_array:
                print(f"Job <{label}> is being terminated")
        if whole_array:
            print(f"Job <{text}> is being {'signaled' if sig_name is not None else 'terminated'}")
    for key in waits:
        wait_finished(store, key)
    return rc


def bresume(store: Store, argv: list[str]) -> int:
    """``bresume job ids``: release a PSUSP job."""
    rc = 0
    for text in argv:
        for label, job in named_jobs(store, text):
            if job is None:
                print(f"Job <{label}>: No matching job found", file=sys.stderr)
                rc = EXIT
                continue
            if release(store, job["key"]) == HELD:
                print(f"Job <{label}> is being resumed")
            else:
                print(f"Job <{label}>: The job was not suspended", file=sys.stderr)
                rc = EXIT
    return rc


def bparams(store: Store, argv: list[str]) -> int:
    """``bparams [-a|-l]``: lsb.params. ``-a`` lists every parameter as ``NAME = value`` (the
    emulator knows a handful); ``-l`` the same under a description each; bare, a summary."""
    for tok in argv:
        if tok not in ("-a", "-l"):
            raise UsageError(
                f"bparams: illegal option -- {tok.lstrip('-')}\nUsage: bparams [-h] [-V] [-a] [-l]",
                EXIT,
            )
    queue = store.config.get("default_queue") or "normal"
    params = [
        ("Default Queues", "DEFAULT_QUEUE", queue),
        ("The interval for dispatching jobs by master batch daemon", "MBD_SLEEP_TIME", "10"),
        ("The interval for checking jobs by slave batch daemon", "SBD_SLEEP_TIME", "7"),
        ("The interval for a host to accept two batch jobs", "JOB_ACCEPT_INTERVAL", "0"),
        (
            "The amount of time during which finished jobs are kept in core",
            "CLEAN_PERIOD",
            str(int(CLEAN_PERIOD)),
        ),
        (
            "The maximum number of jobs in a job array",
            "MAX_JOB_ARRAY_SIZE",
            str(max_job_array_size(store)),
        ),
        ("The maximum number of finished jobs that are logged", "MAX_JOB_NUM", "1000"),
    ]
    if "-a" in argv:
        for _, key, value in params:
            print(f"    {key} = {value}")
    elif "-l" in argv:
        print("\nSystem default queue for jobs:  " + queue + "\n")
        for text, key, value in params:
            print(f"{text}:\n    {key} = {value}\n")
    else:
        print(f"Default Queues:  {queue}")
        print("Job Dispatch Interval:  20 seconds")
        print("Job Checking Interval:  7 seconds")
        print("Job Accepting Interval:  0 seconds")
    return 0


def job_report(store: Store, job: Job) -> str:
    """The report LSF appends to the ``-o`` file at job end (``LSB_STDOUT_DIRECT=Y`` style)."""
    host = store.config.get("hostname", "localhost")
    fmt = "%a %b %d %H:%M:%S %Y"
    code = exit_code(job)
    if stat(job) == "DONE":
        result = "Successfully completed."
    elif job.get("term_reason") == "walltime":
        result = f"TERM_RUNLIMIT: job killed after reaching LSF run time limit.\nExited with exit code {code}."
    elif job.get("term_reason"):
        result = f"TERM_OWNER: job killed by owner.\nExited with exit code {code}."
    else:
        result = f"Exited with exit code {code}."
    status = "Done" if stat(job) == "DONE" else "Exited"
    execs = host if job["cores"] == 1 else f"{job['cores']}*{host}"
    return (
        "\n------------------------------------------------------------\n"
        f"Sender: LSF System <lsfadmin@{host}>\n"
        f"Subject: Job {job['key']}: <{job['name']}> in cluster <cluster1> {status}\n\n"
        f"Job <{job['name']}> was submitted from host <{host}> by user <{job['owner']}> in cluster "
        f"<cluster1> at {format_time(job['submit_time'], fmt)}\n"
        f"Job was executed on host(s) <{execs}>, in queue <{job['queue']}>, as user <{job['owner']}> "
        f"in cluster <cluster1> at {format_time(job.get('start_time'), fmt)}\n"
        f"<{job['cwd']}> was used as the working directory.\n"
        f"Started at {format_time(job.get('start_time'), fmt)}\n"
        f"Terminated at {format_time(job.get('end_time'), fmt)}\n"
        f"Results reported at {format_time(job.get('end_time'), fmt)}\n\n"
        "------------------------------------------------------------\n\n"
        f"{result}\n\n"
    )
