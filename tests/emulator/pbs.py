"""PBS front ends: PBS Pro/OpenPBS (``pbs``) and Torque (``torque``, also under Moab).

Commands: ``qsub``, ``qstat``, ``qdel``, ``qhold``, ``qrls``.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import xml.etree.ElementTree as ET
from typing import Any

from .common import (
    UsageError,
    apply_cancel_faults,
    apply_status_faults,
    apply_submit_faults,
    base_job,
    current_user,
    directive_lines,
    format_time,
    hms,
    hold,
    is_visible,
    parse_hms,
    parse_size,
    release,
    request_cancel,
    wait_finished,
)
from .store import DONE, EXITING, HELD, QUEUED, RUNNING, Job, Store

# Exit codes are PBS error numbers modulo 256, as the real clients return them (recorded on
# OpenPBS 23.06.06, tests/data/pbs/openpbs-23.06.06).
EXIT_UNKNOWN_JOB = 153
EXIT_UNKNOWN_QUEUE = 170
EXIT_BAD_VALUE = 166
EXIT_UNKNOWN_RESOURCE = 187
EXIT_BAD_STATE = 168
EXIT_HISTORY_JOB = 35
EXIT_BAD_REQUEST = 156  # qdel of an index the array never had
EXIT_FINISHED_SUBJOB = 55  # qdel of a finished subjob of a running array

QSUB_ARG_OPTS = set("NqAleojmMvWSrPakpdwCcuJt")  # -J: PBS Pro arrays only, -t: Torque only
QSUB_FLAGS = set("VhzIXnf")

KNOWN_RESOURCES = {
    "select",
    "ncpus",
    "mem",
    "vmem",
    "walltime",
    "nodes",
    "place",
    "host",
    "cput",
    "pcput",
    "pmem",
    "pvmem",
    "mpiprocs",
    "ompthreads",
    "ngpus",
    "naccelerators",
    "software",
    "file",
    "arch",
    "nodect",
    "procs",
    "feature",
    "gres",
    "qos",
    "tpn",
    "advres",
    "signal",
    "preempt_targets",
}
CHUNK_RESOURCES = {
    "ncpus",
    "mem",
    "vmem",
    "mpiprocs",
    "ompthreads",
    "ngpus",
    "naccelerators",
    "host",
    "vnode",
    "arch",
    "accelerator",
    "accelerator_model",
    "aoe",
}


def parse_options(
    tool: str, tokens: list[str], arg_opts: set[str], flags: set[str]
) -> tuple[list[tuple[str, str]], list[str], bool]:
    """Parse single-letter PBS style options; returns (options, operands, saw ``--``)."""
    opts: list[tuple[str, str]] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == "--":
            return opts, tokens[i + 1 :], True
        if not tok.startswith("-") or tok == "-":
            return opts, tokens[i:], False
        j = 1
        while j < len(tok):
            c = tok[j]
            if c in arg_opts:
                if j + 1 < len(tok):
                    value = tok[j + 1 :]
                else:
                    i += 1
                    if i >= len(tokens):
                        raise UsageError(
                            f"{tool}: option requires an argument -- '{c}'\n"
                            f"usage: {tool} [options] [script]",
                            2,
                        )
                    value = tokens[i]
                opts.append((c, value))
                break
            if c in flags:
                opts.append((c, ""))
                j += 1
                continue
            raise UsageError(
                f"{tool}: invalid option -- '{c}'\nusage: {tool} [options] [script]", 2
            )
        i += 1
    return opts, [], False


def _parse_resources(spec: str, resources: dict[str, str], tool: str) -> None:
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise UsageError(f"{tool}: illegal -l value", 2)
        name, value = item.split("=", 1)
        name = name.strip()
        if name not in KNOWN_RESOURCES:
            raise UsageError(
                f"{tool}: Unknown resource Resource_List.{name}", EXIT_UNKNOWN_RESOURCE
            )
        resources[name] = value.strip()


def _bad(tool: str, attr: str, prefix: str = "Resource_List.") -> UsageError:
    return UsageError(f"{tool}: Illegal attribute or resource value {prefix}{attr}", EXIT_BAD_VALUE)


def _normalise_size(value: str, tool: str, attr: str) -> tuple[str, int]:
    size = parse_size(value)
    if size is None:
        raise _bad(tool, attr)
    return value.lower(), size


def resolve_resources(
    resources: dict[str, str], tool: str
) -> tuple[dict[str, Any], int, int | None]:
    """Validate a ``-l`` resource set; returns (Resource_List, cores, memory bytes)."""
    out: dict[str, Any] = {}
    cores = 1
    mem: int | None = None
    nodect = 1
    if "select" in resources:
        cores = 0
        nodect = 0
        mem_total = 0
        for chunk in resources["select"].split("+"):
            parts = [p for p in chunk.split(":") if p]
            count = 1
            if parts and "=" not in parts[0]:
                if not parts[0].isdigit() or int(parts[0]) < 1:
                    raise _bad(tool, "select")
                count = int(parts.pop(0))
            chunk_cpus = 1
            for part in parts:
                if "=" not in part:
                    raise _bad(tool, "select")
                name, value = part.split("=", 1)
                if name not in CHUNK_RESOURCES:
                    raise UsageError(f"{tool}: Unknown resource: {name}", EXIT_UNKNOWN_RESOURCE)
                if name == "ncpus":
                    if not value.isdigit():
                        raise _bad(tool, "select.ncpus", prefix="")
                    chunk_cpus = int(value)
                elif name == "mem":
                    mem_total += count * _normalise_size(value, tool, "select")[1]
            cores += count * chunk_cpus
            nodect += count
        out["select"] = resources["select"]
        if mem_total:
            mem = mem_total
    elif "nodes" in resources:
        parts = resources["nodes"].split(":")
        count = int(parts[0]) if parts[0].isdigit() else 1
        ppn = 1
        for part in parts[1:]:
            if part.startswith("ppn="):
                if not part[4:].isdigit():
                    raise _bad(tool, "nodes")
                ppn = int(part[4:])
        cores = count * ppn
        nodect = count
        out["nodes"] = resources["nodes"]
    elif "ncpus" in resources:
        if not resources["ncpus"].isdigit():
            raise _bad(tool, "ncpus")
        cores = int(resources["ncpus"])
    if "procs" in resources:
        if not resources["procs"].isdigit():
            raise _bad(tool, "procs")
        cores = max(cores, int(resources["procs"]))
    if "mem" in resources:
        text, mem = _normalise_size(resources["mem"], tool, "mem")
        out["mem"] = text
    elif mem is not None:
        out["mem"] = format_size(mem)
    for name in ("vmem", "pmem", "pvmem"):
        if name in resources:
            out[name] = _normalise_size(resources[name], tool, name)[0]
    out["ncpus"] = cores
    out["nodect"] = nodect
    walltime = None
    if "walltime" in resources:
        walltime = parse_hms(resources["walltime"])
        if walltime is None:
            raise _bad(tool, "walltime")
        out["walltime"] = hms(walltime)
    for name, value in resources.items():
        out.setdefault(name, value)
    return out, cores, walltime


def format_size(size: int) -> str:
    """Bytes to the largest exact PBS size unit (``1gb``, ``512mb``...)."""
    for unit, factor in (("tb", 2**40), ("gb", 2**30), ("mb", 2**20), ("kb", 2**10)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}b"


def _path_option(value: str, submit_dir: str) -> str:
    if ":" in value and not value.startswith("/"):
        value = value.split(":", 1)[1]
    path = os.path.expanduser(value)
    return path if os.path.isabs(path) else os.path.join(submit_dir, path)


def job_display_id(store: Store, job: Job) -> str:
    """``<seq>.<server>`` as printed by qsub; ``<seq>[<index>].<server>`` for a subjob."""
    server = store.config.get("server_name", "server")
    if job.get("summary"):
        return f"{job['seq']}[].{server}"
    if job.get("array_index") is not None:
        return f"{job['seq']}[{job['array_index']}].{server}"
    return f"{job['seq']}.{server}"


def parse_job_id(text: str) -> str | None:
    """Job key of a PBS job id: ``12`` for ``12`` / ``12.server``, ``12[3]`` for a subjob
    ``12[3].server``, ``12[]`` for a whole array, ``12[3-5]`` for a range of subjobs."""
    m = re.fullmatch(r"(\d+(?:\[[\d,-]*\])?)(\.[\w.-]+)?", text.strip())
    return m.group(1) if m else None


# ---------------------------------------------------------------------------- job arrays
# Subjobs are job records of their own (key ``12[3]``, ``array_index`` 3); an array has no
# record: its summary (``12[].server``) is made from its subjobs.


def array_limit(store: Store) -> int | None:
    """The server's ``max_array_size`` (PBS Pro, default 10000) / ``max_job_array_size``
    (Torque, unset by default: no limit); config key ``max_array_size``."""
    default = 10000 if store.config["flavour"] == "pbs" else None
    value = store.config.get("max_array_size", default)
    return int(value) if value else None


def parse_array_request(flavour: str, tool: str, value: str) -> list[int]:
    """Indices of ``-J X-Y[:Z]`` (PBS Pro: a range of at least two, as OpenPBS 23.06 checks)
    or ``-t 0-3,7`` (Torque: ranges and single indices); a ``%N`` slot limit is accepted and
    ignored."""
    spec = value.split("%", 1)[0]
    if flavour == "pbs":
        m = re.fullmatch(r"(\d+)-(\d+)(?::(\d+))?", spec)
        if not m or int(m.group(2)) <= int(m.group(1)) or (m.group(3) and int(m.group(3)) < 1):
            raise UsageError(f"{tool}: illegal -J value", 2)
        return list(range(int(m.group(1)), int(m.group(2)) + 1, int(m.group(3) or 1)))
    indices: set[int] = set()
    for item in spec.split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", item.strip())
        if not m or (m.group(2) and int(m.group(2)) < int(m.group(1))):
            raise UsageError(f"{tool}: illegal -t value", 2)  # message: a guess
        indices.update(range(int(m.group(1)), int(m.group(2) or m.group(1)) + 1))
    return sorted(indices)


def subjobs(store: Store, seq: int | str) -> list[Job]:
    """The subjob records of array ``seq``, by index."""
    jobs = []
    for path in store.jobs_dir.glob(f"{seq}[[]*[]].json"):
        job = store.load_job(path.name[: -len(".json")])
        if job is not None:
            jobs.append(job)
    return sorted(jobs, key=lambda j: j["array_index"])


def _array_spans(indices: list[int]) -> str:
    spans, start = [], None
    for k, i in enumerate(indices):
        if start is None:
            start = i
        if k + 1 == len(indices) or indices[k + 1] != i + 1:
            spans.append(str(start) if start == i else f"{start}-{i}")
            start = None
    return ",".join(spans)


def expand_array(store: Store, job: Job, indices: list[int]) -> list[Job]:
    """The subjob records of an array submitted as ``job`` (whose record is not kept)."""
    flavour = store.config["flavour"]
    server = store.config.get("server_name", "server")
    host = store.config.get("hostname", "localhost")
    seq = job["seq"]
    parent = f"{seq}[].{server}"
    extra_base = job["extra"]
    tasks = []
    for index in indices:
        task = json.loads(json.dumps(job))
        jobid = f"{seq}[{index}].{server}"
        task.update(key=f"{seq}[{index}]", proc=index + 1, array_index=index, array_id=parent)
        env = task["env"]
        env["PBS_JOBID"] = jobid
        if flavour == "pbs":
            env.update(PBS_ARRAY_INDEX=str(index), PBS_ARRAY_ID=parent)
        else:  # Torque: the subjob's name is NAME-INDEX (its PBS_JOBNAME)
            env.update(PBS_ARRAYID=str(index), PBS_JOBNAME=f"{job['name']}-{index}")
        nodefile = str(store.spool / "aux" / jobid)
        tmpdir = str(store.spool / "tmp" / f"pbs.{jobid}")
        env.update(PBS_NODEFILE=nodefile, TMPDIR=tmpdir)
        task["setup_files"] = {nodefile: f"{host}\n" * task["cores"]}
        task["setup_dirs"] = task["cleanup_dirs"] = [tmpdir]
        paths = extra_base["array_paths"]

        # OpenPBS: NAME.o12.3 (recorded), dir/12[3].server.OU; Torque: NAME.o12-3 (a guess)
        def fill(path: str, index: int = index, jobid: str = jobid) -> str:
            return path.replace("{index}", str(index)).replace("{jobid}", jobid)

        task["stdout"] = fill(paths["run_stdout"])
        task["stderr"] = fill(paths["run_stderr"])
        task["extra"]["Output_Path"] = f"{host}:{fill(paths['stdout'])}"
        task["extra"]["Error_Path"] = f"{host}:{fill(paths['stderr'])}"
        task["extra"]["jobid"] = jobid
        task["extra"]["array_request"] = _array_spans(indices)
        tasks.append(task)
    return tasks


def build_job(store: Store, tool: str, argv: list[str], stdin_text: str | None) -> Job:
    """Parse a qsub/msub command line plus script directives into a job record."""
    flavour = store.config["flavour"]
    opts, operands, dashdash = parse_options(tool, argv, QSUB_ARG_OPTS, QSUB_FLAGS)
    prefix = next((v for o, v in opts if o == "C"), "#PBS")
    submit_dir = os.getcwd()
    command_args: list[str] | None = None
    if dashdash:
        if not operands:
            raise UsageError(f"{tool}: no executable specified after --", 2)
        script_text, script_name, command_args = "", os.path.basename(operands[0]), operands
    elif operands:
        if len(operands) > 1:
            raise UsageError(f"usage: {tool} [options] [script]", 2)
        try:
            with open(operands[0]) as fh:
                script_text = fh.read()
        except OSError:
            raise UsageError(f"{tool}: script file:: No such file or directory", 2) from None
        script_name = os.path.basename(operands[0])
    else:
        script_text = stdin_text if stdin_text is not None else sys.stdin.read()
        script_name = "STDIN"
    directive_opts: list[tuple[str, str]] = []
    for tokens in directive_lines(script_text, prefix):
        more, extra_operands, _ = parse_options(tool, tokens, QSUB_ARG_OPTS, QSUB_FLAGS)
        if extra_operands:
            raise UsageError(f"{tool}: directive error: {' '.join(tokens)}", 2)
        directive_opts.extend(more)
    apply_submit_faults(store)

    values: dict[str, str] = {}
    resources: dict[str, str] = {}
    flags: set[str] = set()
    variables: list[str] = []
    for source in (directive_opts, opts):  # the command line wins over directives
        for opt, value in source:
            if opt == "l":
                _parse_resources(value, resources, tool)
            elif opt == "v":
                variables.extend(v for v in value.split(",") if v)
            elif opt in QSUB_FLAGS:
                flags.add(opt)
            else:
                values[opt] = value
    if "I" in flags:
        raise UsageError(f"{tool}: interactive jobs are not supported by the emulator", 2)
    for opt in ("t", "J"):  # each flavour knows only its own array option
        if opt in values and (opt == "J") != (flavour == "pbs"):
            raise UsageError(
                f"{tool}: invalid option -- '{opt}'\nusage: {tool} [options] [script]", 2
            )
    array_value = values.get("J") or values.get("t")
    if array_value is not None and tool == "msub":
        raise UsageError("ERROR:  cannot submit job - job arrays through msub are not emulated", 1)
    indices = parse_array_request(flavour, tool, array_value) if array_value is not None else None
    name = values.get("N", script_name)
    if not name or re.search(r"[\s/:@]", name) or len(name) > 236:
        raise UsageError(f"{tool}: illegal -N value", 2)
    join = values.get("j", "n")
    if join not in ("oe", "eo", "n"):
        raise UsageError(f"{tool}: illegal -j value", 2)
    mail = values.get("m", "a")
    if not re.fullmatch(r"n|[abej]+", mail):
        raise UsageError(f"{tool}: illegal -m value", 2)
    if values.get("r", "y") not in ("y", "n"):
        raise UsageError(f"{tool}: illegal -r value", 2)
    queue = values.get("q", store.config.get("default_queue") or "")
    queue = queue.split("@", 1)[0] or store.config.get("default_queue") or ""
    if queue not in store.config.get("queues", []):
        if flavour == "pbs":
            raise UsageError(f"{tool}: Unknown queue", EXIT_UNKNOWN_QUEUE)
        raise UsageError(
            f"{tool}: submit error (Unknown queue MSG=requested queue not found)",
            EXIT_UNKNOWN_QUEUE,
        )
    try:
        resource_list, cores, walltime = resolve_resources(resources, tool)
    except UsageError as exc:
        if flavour != "pbs" and exc.code != 2:
            exc.message = exc.message.replace(f"{tool}: ", f"{tool}: submit error (", 1) + ")"
        raise
    limit = array_limit(store)
    if indices is not None and limit is not None and len(indices) > limit:
        if flavour == "pbs":  # as recorded on OpenPBS 23.06.06 (max_array_size = 10)
            raise UsageError(f"{tool}: Array job exceeds server or queue size limit", 3)
        # Torque rejects with PBSE_BAD_ARRAY_REQ; the MSG text and exit status are guesses
        raise UsageError(
            f"{tool}: submit error (Bad Job Array Request MSG=Requested array "
            f"size too large, limit is {limit})",
            1,
        )

    seq = store.next_seq()
    key = str(seq)
    server = store.config.get("server_name", "server")
    jobid = f"{seq}.{server}"
    host = store.config.get("hostname", "localhost")
    spool = store.spool / key
    spool.mkdir(parents=True, exist_ok=True)
    home = os.path.expanduser("~")
    if command_args is None:
        script_path = str(spool / f"{jobid}.SC")
        with open(script_path, "w") as fh:
            fh.write(script_text)
        os.chmod(script_path, 0o700)
        command = [values.get("S", "/bin/bash").split(",")[0].split("@")[0], script_path]
    else:
        command = command_args

    stdout = _path_option(values["o"], submit_dir) if "o" in values else None
    stderr = _path_option(values["e"], submit_dir) if "e" in values else None
    # "-o dir/": OpenPBS writes dir/<job id>.OU and .ER, Torque dir/NAME.o<seq> and .e<seq>
    if stdout and os.path.isdir(stdout):
        stdout = os.path.join(
            stdout, f"{seq}.{server}.OU" if flavour == "pbs" else f"{name}.o{seq}"
        )
    if stderr and os.path.isdir(stderr):
        stderr = os.path.join(
            stderr, f"{seq}.{server}.ER" if flavour == "pbs" else f"{name}.e{seq}"
        )
    # the same paths for the subjobs of an array ({index}, {jobid} filled in per subjob)
    sub = "{index}" if flavour == "pbs" else "-{index}"
    array_out = _path_option(values["o"], submit_dir) if "o" in values else None
    array_err = _path_option(values["e"], submit_dir) if "e" in values else None
    if array_out and os.path.isdir(array_out):
        array_out = os.path.join(
            array_out, "{jobid}.OU" if flavour == "pbs" else f"{name}.o{seq}{sub}"
        )
    if array_err and os.path.isdir(array_err):
        array_err = os.path.join(
            array_err, "{jobid}.ER" if flavour == "pbs" else f"{name}.e{seq}{sub}"
        )
    if flavour == "pbs":
        sub = "." + sub
    array_out = array_out or os.path.join(submit_dir, f"{name}.o{seq}{sub}")
    array_err = array_err or os.path.join(submit_dir, f"{name}.e{seq}{sub}")
    stdout = stdout or os.path.join(submit_dir, f"{name}.o{seq}")
    stderr = stderr or os.path.join(submit_dir, f"{name}.e{seq}")
    run_stdout, run_stderr = stdout, stderr
    array_run = {"run_stdout": array_out, "run_stderr": array_err}
    if join == "oe":
        run_stderr = "join"
        array_run["run_stderr"] = "join"
    elif join == "eo":
        run_stdout, run_stderr = stderr, "join"
        array_run = {"run_stdout": array_err, "run_stderr": "join"}

    origin = {
        "PBS_O_HOME": os.environ.get("HOME", home),
        "PBS_O_LANG": os.environ.get("LANG", "C"),
        "PBS_O_LOGNAME": os.environ.get("LOGNAME", current_user()),
        "PBS_O_PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PBS_O_MAIL": os.environ.get("MAIL", f"/var/spool/mail/{current_user()}"),
        "PBS_O_SHELL": os.environ.get("SHELL", "/bin/bash"),
        "PBS_O_WORKDIR": submit_dir,
        "PBS_O_HOST": host,
        "PBS_O_SYSTEM": os.uname().sysname,
        "PBS_O_QUEUE": queue,
    }
    if "V" in flags or store.config.get("inherit_env"):
        env = dict(os.environ)
    else:
        env = {
            k: os.environ[k]
            for k in ("HOME", "USER", "LOGNAME", "SHELL", "PATH", "LANG", "DJQ_EMULATOR_HOME")
            if k in os.environ
        }
    exported: dict[str, str] = {}  # -v variables: in the job's Variable_List too, as PBS keeps them
    for var in variables:
        if "=" in var:
            k, v = var.split("=", 1)
            exported[k] = v
        elif var in os.environ:
            exported[var] = os.environ[var]
    env.update(exported)
    nodefile = str(store.spool / "aux" / jobid)
    tmpdir = str(store.spool / "tmp" / f"pbs.{jobid}")
    env.update(origin)
    env.update(
        {
            "PBS_JOBID": jobid,
            "PBS_JOBNAME": name,
            "PBS_QUEUE": queue,
            "PBS_NODEFILE": nodefile,
            "PBS_ENVIRONMENT": "PBS_BATCH",
            "PBS_JOBDIR": home,
            "PBS_TASKNUM": "1",
            "PBS_NODENUM": "0",
            "PBS_MOMPORT": "15003",
            "NCPUS": str(cores),
            "OMP_NUM_THREADS": str(cores),
            "TMPDIR": tmpdir,
        }
    )
    if flavour != "pbs":
        env.update(
            {
                "PBS_NUM_NODES": str(resource_list["nodect"]),
                "PBS_NP": str(cores),
                "PBS_NUM_PPN": str(cores // max(1, resource_list["nodect"])),
                "PBS_SERVER": server,
                "ENVIRONMENT": "BATCH",
                "PBS_VNODENUM": "0",
            }
        )
    workdir = values.get("d") or values.get("w") or home
    job = base_job(
        store,
        key=key,
        seq=seq,
        name=name,
        queue=queue,
        command=command,
        cwd=_path_option(workdir, submit_dir),
        env=env,
        cores=cores,
        walltime=walltime,
        stdout=run_stdout,
        stderr=run_stderr,
    )
    job["mem_bytes"] = parse_size(resource_list["mem"]) if "mem" in resource_list else None
    job["setup_files"] = {nodefile: f"{host}\n" * cores}
    job["setup_dirs"] = [tmpdir]
    job["cleanup_dirs"] = [tmpdir]
    if "h" in flags:
        job.update(state=HELD, hold_by="user", hold_reason="Job held by user")
    limit_word = "=>> PBS: job killed" if flavour == "pbs" else "PBS: job killed"
    job["extra"] = {
        "Resource_List": resource_list,
        "Output_Path": f"{host}:{stdout}",
        "Error_Path": f"{host}:{stderr}",
        "Join_Path": join,
        "Mail_Points": mail,
        "Mail_Users": values.get("M"),
        "Account_Name": values.get("A"),
        "project": values.get("P", "_pbs_project_default"),
        "Rerunable": "False" if values.get("r") == "n" else "True",
        # qsub -V sends the whole environment, kept in Variable_List as -v variables are
        "Variable_List": {**(dict(os.environ) if "V" in flags else {}), **origin, **exported},
        "Submit_arguments": " ".join(argv),
        "walltime_message": limit_word + ": walltime {used} exceeded limit {limit}",
        "jobid": jobid,
        "array_indices": indices,
        "array_paths": {**array_run, "stdout": array_out, "stderr": array_err},
    }
    return job


# --------------------------------------------------------------------------- status
STATE_LETTER = {QUEUED: "Q", HELD: "H", RUNNING: "R", EXITING: "E"}
SUBSTATE = {QUEUED: 10, HELD: 20, RUNNING: 42, EXITING: 50}


def state_letter(job: Job, flavour: str) -> str:
    """PBS single-letter job state (``F`` in PBS Pro history, ``C`` in Torque); a finished
    subjob of a PBS Pro array still running is ``X``; an array's summary has its own."""
    if job.get("summary_letter"):
        return job["summary_letter"]
    if job["state"] == DONE:
        if flavour == "pbs" and job.get("array_live"):
            return "X"
        return "F" if flavour == "pbs" else "C"
    return STATE_LETTER[job["state"]]


def array_summary(store: Store, subs: list[Job]) -> Job:
    """The array ``12[].server`` as qstat shows it, made from its subjobs (all but the
    state are the first subjob's); its subjobs are marked with whether it still runs."""
    flavour = store.config["flavour"]
    states = [j["state"] for j in subs]
    live = any(st != DONE for st in states)
    for j in subs:
        j["array_live"] = live
    summary = json.loads(json.dumps(subs[0]))
    summary.update(array_index=None, key=f"{subs[0]['seq']}[]", summary=True, pid=None)
    if not live:
        letter = "F" if flavour == "pbs" else "C"
        summary.update(state=DONE, end_time=max(j.get("end_time") or 0 for j in subs))
    elif all(st == HELD for st in states):
        letter = "H"
    elif any(st in (RUNNING, EXITING) for st in states) or any(st == DONE for st in states):
        letter = "B" if flavour == "pbs" else "R"
        summary["state"] = RUNNING
    else:
        letter = "Q"
    summary["summary_letter"] = letter
    summary["returncode"] = None
    summary["extra"]["jobid"] = f"{subs[0]['seq']}[].{store.config.get('server_name', 'server')}"
    counts = {
        name: sum(1 for st in states if st in group)
        for name, group in (
            ("Queued", (QUEUED, HELD)),
            ("Running", (RUNNING,)),
            ("Exiting", (EXITING,)),
            ("Expired", (DONE,)),
        )
    }
    summary["extra"]["array_state_count"] = " ".join(f"{k}:{v}" for k, v in counts.items())
    remaining = [j["array_index"] for j in subs if j["state"] in (QUEUED, HELD)]
    summary["extra"]["array_indices_remaining"] = _array_spans(remaining) or "-"
    return summary


def exit_status(job: Job, flavour: str) -> int | None:
    """PBS ``Exit_status`` of a finished job (``None`` when it never ran)."""
    if job["state"] not in (DONE, EXITING) or job.get("returncode") is None:
        return None
    if job.get("term_reason") == "walltime":
        return -29 if flavour == "pbs" else -11
    rc = int(job["returncode"])
    return rc if rc >= 0 else 256 - rc


def pending_comment(job: Job) -> str | None:
    """PBS Pro scheduler comment for a queued/held job.

    As on OpenPBS 23.06.06: a job held at submission (``qsub -h``) has no comment (its
    ``Hold_Types`` says who holds it), ``qhold`` sets ``Job held by USER on DATE``.
    """
    if job["state"] == HELD:
        if job.get("hold_by") == "user":
            return job.get("hold_comment")
        return job.get("hold_reason")
    return _queued_comment(job) if job["state"] == QUEUED else None


def _queued_comment(job: Job) -> str | None:
    reason = job.get("pend_reason")
    if not reason:
        return None
    prefix = "Can Never Run" if reason["kind"] == "never" else "Not Running"
    return (
        f"{prefix}: Insufficient amount of resource: ncpus "
        f"(R: {reason['requested']} A: {reason['available']} T: {reason['total']})"
    )


def attributes(store: Store, job: Job) -> dict[str, Any]:
    """Ordered job attributes as ``qstat -f`` shows them (nested dicts for lists)."""
    flavour = store.config["flavour"]
    host = store.config.get("hostname", "localhost")
    extra = job["extra"]
    now = time.time()
    attrs: dict[str, Any] = {"Job_Name": job["name"], "Job_Owner": f"{job['owner']}@{host}"}
    if job.get("start_time"):
        used = (job.get("end_time") or now) - job["start_time"]
        if job["state"] in (QUEUED, HELD) and job.get("end_time"):
            used = 0
        attrs["resources_used"] = {
            "cput": hms(0),
            "ncpus": job["cores"],
            "walltime": hms(used),
            "mem": "0kb",
            "vmem": "0kb",
            "cpupercent": 0,
        }
    attrs["job_state"] = state_letter(job, flavour)
    attrs["queue"] = job["queue"]
    attrs["server"] = store.config.get("server_name", "server")
    attrs["Checkpoint"] = "u"
    attrs["ctime"] = format_time(job["submit_time"])
    attrs["Error_Path"] = extra["Error_Path"]
    if job["state"] in (RUNNING, EXITING) or (job["state"] == DONE and job.get("start_time")):
        attrs["exec_host"] = (
            f"{host}/0*{job['cores']}" if flavour == "pbs" else f"{host}/0-{job['cores'] - 1}"
        )
        attrs["exec_vnode"] = f"({host}:ncpus={job['cores']})"
    attrs["Hold_Types"] = (
        "u" if job.get("hold_by") == "user" else ("s" if job["state"] == HELD else "n")
    )
    attrs["Join_Path"] = extra["Join_Path"]
    attrs["Keep_Files"] = "n"
    attrs["Mail_Points"] = extra["Mail_Points"]
    if extra.get("Mail_Users"):
        attrs["Mail_Users"] = extra["Mail_Users"]
    attrs["mtime"] = format_time(job.get("state_time"))
    attrs["Output_Path"] = extra["Output_Path"]
    attrs["Priority"] = 0
    attrs["qtime"] = format_time(job["submit_time"])
    attrs["Rerunable"] = extra["Rerunable"]
    attrs["Resource_List"] = extra["Resource_List"]
    if job.get("start_time"):
        attrs["stime"] = format_time(job["start_time"])
    if job.get("pid"):
        attrs["session_id"] = job["pid"]
    attrs["jobdir"] = job["cwd"]
    attrs["substate"] = SUBSTATE.get(job["state"], 92)
    attrs["Variable_List"] = extra["Variable_List"]
    comment = pending_comment(job)
    deleted = job.get("term_reason") in ("cancelled", "killed")
    if comment is None and job.get("start_time"):
        comment = f"Job run at {format_time(job['start_time'], '%a %b %d at %H:%M')} on ({host}:ncpus={job['cores']})"
        if job["state"] == DONE:
            # as recorded on OpenPBS 23.06.06 (qdel of a running job: "terminated by root@vm-pbs")
            if deleted:
                comment += f" and terminated by {current_user()}@{host}"
            elif job.get("term_reason") == "walltime":
                comment += " and exceeded resource walltime"
            else:
                comment += " and finished"
    if comment is None and job["state"] == DONE:
        # qdel of a job that never ran: its last scheduler comment + " and terminated"
        comment = (
            _queued_comment(job) or "Not Running: Not enough free nodes available"
        ) + " and terminated"
    if comment and flavour == "pbs":
        attrs["comment"] = comment
    attrs["etime"] = format_time(job["submit_time"])
    if extra.get("Account_Name"):
        attrs["Account_Name"] = extra["Account_Name"]
    status = exit_status(job, flavour)
    if status is not None:
        attrs["Exit_status" if flavour == "pbs" else "exit_status"] = status
    attrs["Submit_arguments" if flavour == "pbs" else "submit_args"] = extra["Submit_arguments"]
    if job.get("summary"):
        if flavour == "pbs":
            attrs.update(
                array="True",
                array_state_count=extra["array_state_count"],
                array_indices_submitted=extra["array_request"],
                array_indices_remaining=extra["array_indices_remaining"],
            )
        else:
            attrs["job_array_request"] = extra["array_request"]
    elif job.get("array_index") is not None:
        if flavour == "pbs":
            attrs.update(array_id=job["array_id"], array_index=job["array_index"])
        else:
            attrs.update(job_array_id=job["array_index"], job_array_request=extra["array_request"])
    if flavour == "pbs":
        if job["state"] == DONE:
            attrs["history_timestamp"] = int(job.get("end_time") or now)
        attrs["project"] = extra["project"]
    else:
        attrs["euser"] = job["owner"]
        attrs["queue_type"] = "E"
        if job.get("start_time"):
            attrs["start_time"] = int(job["start_time"])
            attrs["start_count"] = job.get("num_starts", 1)
        if job["state"] == DONE:
            attrs["comp_time"] = int(job.get("end_time") or now)
    return attrs


def _flatten(attrs: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for name, value in attrs.items():
        if name == "Variable_List":
            out.append((name, ",".join(f"{k}={v}" for k, v in value.items())))
        elif isinstance(value, dict):
            out.extend((f"{name}.{k}", str(v)) for k, v in value.items())
        else:
            out.append((name, str(value)))
    return out


def full_text(jobid: str, attrs: dict[str, Any]) -> str:
    """``qstat -f`` text block."""
    lines = [f"Job Id: {jobid}"]
    lines += [f"    {k} = {v}" for k, v in _flatten(attrs)]
    return "\n".join(lines) + "\n\n"


def json_document(store: Store, jobs: list[Job], server: str) -> str:
    """``qstat -f -F json`` as OpenPBS 23.06.06 prints it, with its two bugs: a numeric job name
    is a JSON number, and backslashes in ``Submit_arguments`` are not escaped (invalid JSON)."""
    doc: dict[str, Any] = {
        "timestamp": int(time.time()),
        "pbs_version": "23.06.06",
        "pbs_server": server,
    }
    if jobs:
        doc["Jobs"] = {}
        for job in jobs:
            attrs = attributes(store, job)
            if str(attrs["Job_Name"]).isdigit():
                attrs["Job_Name"] = int(attrs["Job_Name"])
            doc["Jobs"][job_display_id(store, job)] = attrs
    text = json.dumps(doc, indent=4, separators=(",", ":"))
    text = re.sub(
        r'^(\s*"Submit_arguments":".*)$',
        lambda m: m.group(1).replace("\\\\", "\\"),
        text,
        flags=re.M,
    )
    return text + "\n"


def _table(store: Store, jobs: list[Job], flavour: str) -> str:
    if flavour == "pbs":
        head = (
            "Job id            Name             User              Time Use S Queue\n"
            "----------------  ---------------- ----------------  -------- - -----\n"
        )
        row = "{id:<17} {name:<16} {user:<17} {time:>8} {s} {queue:<16}\n"
    else:
        head = (
            "Job ID                    Name             User            Time Use S Queue\n"
            "------------------------- ---------------- --------------- -------- - -----\n"
        )
        row = "{id:<25} {name:<16} {user:<15} {time:>8} {s} {queue:<15}\n"
    body = ""
    for job in jobs:
        used = "0" if not job.get("start_time") else hms(0)
        body += row.format(
            id=job_display_id(store, job)[:25],
            name=job["name"][:16],
            user=job["owner"][:16],
            time=used,
            s=state_letter(job, flavour),
            queue=job["queue"],
        )
    return head + body if body else ""


def qstat(store: Store, argv: list[str]) -> int:
    """``qstat [-f [-F json|dsv]] [-x] [-H] [-w] [-t] [job ids...]`` (Torque: ``-x`` = XML);
    ``qstat --version``."""
    flavour = store.config["flavour"]
    server = store.config.get("server_name", "server")
    if argv == ["--version"]:
        # OpenPBS 23.06.06 as recorded; Torque 6 prints "Version: 6.1.3" (and a commit line)
        print("pbs_version = 23.06.06" if flavour == "pbs" else "Version: 6.1.3")
        return 0
    opts, ids, _ = parse_options("qstat", argv, set("Fuo"), set("fxHwn1taGMisQBTJpe"))
    letters = {o for o, _ in opts}
    fmt = next((v for o, v in opts if o == "F"), None)
    apply_status_faults(store, f"qstat: cannot connect to server {server} (errno=111)", 1)
    pro = flavour == "pbs"
    history = pro and ("x" in letters or "H" in letters)
    xml = not pro and "x" in letters
    rc = 0
    errors: list[str] = []
    selected: list[Job] = []
    expand = "t" in letters or "J" in letters  # subjobs are listed with -t (-J: only them)

    def shown_now(job: Job) -> bool:
        if pro:
            if job["state"] == DONE and not history and not job.get("array_live"):
                return False
            return not ("H" in letters and job["state"] != DONE)
        return is_visible(store, job)

    if ids:
        for text in ids:
            key = parse_job_id(text) or ""
            shown = text if "." in text else f"{text}.{server}"
            if key.endswith("[]"):
                subs = subjobs(store, key[:-2])
                view = [array_summary(store, subs)] if subs else []
                if view and expand:
                    view += subs
            else:
                job = store.load_job(key) if key and "-" not in key and "," not in key else None
                if job is not None and job.get("array_index") is not None:
                    array_summary(store, subjobs(store, job["seq"]))
                    job = store.load_job(key)
                    job["array_live"] = any(j["state"] != DONE for j in subjobs(store, job["seq"]))
                view = [job] if job is not None else []
            if not view or (not pro and not is_visible(store, view[0])):
                errors.append(
                    f"qstat: Unknown Job Id {shown}"
                    if pro
                    else f"qstat: Unknown Job Id Error {shown}"
                )
                rc = EXIT_UNKNOWN_JOB
            elif pro and not shown_now(view[0]):
                errors.append(
                    f"qstat: {shown} Job has finished, use -x or -H to obtain historical job information"
                )
                rc = EXIT_HISTORY_JOB
            else:
                selected += [j for j in view if j is view[0] or shown_now(j)]
    else:
        arrays: dict[int, list[Job]] = {}
        for job in store.all_jobs():
            if job.get("flavour") not in (flavour, "torque", "moab", "pbs"):
                continue
            if job.get("array_index") is not None:
                arrays.setdefault(job["seq"], []).append(job)
                if len(arrays[job["seq"]]) > 1:
                    continue
                job = {"seq_marker": job["seq"]}
            selected.append(job)
        listed: list[Job] = []
        for job in selected:
            if "seq_marker" not in job:
                listed += [job] if shown_now(job) else []
                continue
            subs = arrays[job["seq_marker"]]
            summary = array_summary(store, subs)
            if "J" not in letters and shown_now(summary):
                listed.append(summary)
            if expand:
                listed += [j for j in subs if shown_now(j)]
        selected = listed
    out = ""
    if xml:
        root = ET.Element("Data")
        for job in selected:
            el = ET.SubElement(root, "Job")
            ET.SubElement(el, "Job_Id").text = job_display_id(store, job)
            for name, value in attributes(store, job).items():
                sub = ET.SubElement(el, name)
                if isinstance(value, dict) and name != "Variable_List":
                    for k, v in value.items():
                        ET.SubElement(sub, k).text = str(v)
                elif isinstance(value, dict):
                    sub.text = ",".join(f"{k}={v}" for k, v in value.items())
                else:
                    sub.text = str(value)
        if selected:
            out = ET.tostring(root, encoding="unicode") + "\n"
    elif "f" in letters and fmt == "json" and pro:
        out = json_document(store, selected, server)
    elif "f" in letters and fmt == "dsv" and pro:
        for job in selected:
            pairs = [("Job Id", job_display_id(store, job))] + _flatten(attributes(store, job))
            out += "|".join(f"{k}={v}" for k, v in pairs) + "\n"
    elif "f" in letters:
        out = "".join(full_text(job_display_id(store, j), attributes(store, j)) for j in selected)
    else:
        out = _table(store, selected, flavour)
    sys.stdout.write(out)
    for err in errors:
        print(err, file=sys.stderr)
    return rc


def _each_job(store: Store, tool: str, ids: list[str]) -> list[tuple[str, str, Job | None]]:
    server = store.config.get("server_name", "server")
    if not ids:
        raise UsageError(f"usage: {tool} job_identifier...", 2)
    result = []
    for text in ids:
        key = parse_job_id(text)
        job = store.load_job(key) if key else None
        if job is not None and store.config["flavour"] != "pbs" and not is_visible(store, job):
            job = None
        result.append((text if "." in text else f"{text}.{server}", key or "", job))
    return result


def _qdel_array(
    store: Store, shown: str, key: str, only: list[int] | None, waits: list[str]
) -> int:
    """``qdel 12[].server`` (every subjob; Torque ``-t 3-5``: only those) or ``12[3-5]``
    (PBS Pro: the subjobs of that range that exist); returns the exit status."""
    pro = store.config["flavour"] == "pbs"
    seq, _, spec = key.partition("[")
    subs = subjobs(store, seq)
    if spec.rstrip("]"):
        only = parse_array_request("torque", "qdel", spec.rstrip("]"))
    if not subs or (not pro and not any(is_visible(store, j) for j in subs)):
        print(
            f"qdel: Unknown Job Id {shown}" if pro else f"qdel: Unknown Job Id Error {shown}",
            file=sys.stderr,
        )
        return EXIT_UNKNOWN_JOB
    if all(j["state"] == DONE for j in subs):
        if pro:
            print(f"qdel: Job has finished {shown}", file=sys.stderr)
            return EXIT_HISTORY_JOB
        print(f"qdel: Invalid state for job - COMPLETE {shown}", file=sys.stderr)
        return EXIT_BAD_STATE
    for job in subs:
        if only is None or job["array_index"] in only:
            if request_cancel(store, job["key"]) in (RUNNING, EXITING):
                waits.append(job["key"])
    return 0


def qdel(store: Store, argv: list[str]) -> int:
    """``qdel [-W force] [-x] job ids...``: SIGTERM, then SIGKILL after ``kill_delay``.

    Arrays: ``qdel 12[].server`` (all), ``12[3].server``, PBS Pro ``12[3-5].server``, Torque
    ``qdel -t 3-5 12[].server``.
    """
    pro = store.config["flavour"] == "pbs"
    opts, ids, _ = parse_options("qdel", argv, set("Wm" if pro else "Wmt"), set("xpa"))
    apply_cancel_faults(
        store, f"qdel: cannot connect to server {store.config.get('server_name')} (errno=111)", 1
    )
    only = next((parse_array_request("torque", "qdel", v) for o, v in opts if o == "t"), None)
    rc = 0
    waits: list[str] = []
    for shown, key, job in _each_job(store, "qdel", ids):
        if "[" in key and (job is None or key.endswith("[]")):
            if key.endswith("[]") or "-" in key or "," in key:
                rc = _qdel_array(store, shown, key, only, waits) or rc
                continue
            if pro and subjobs(store, key.split("[")[0]):  # recorded: an index it never had
                print(f"qdel: Invalid request {shown}", file=sys.stderr)
                rc = EXIT_BAD_REQUEST
                continue
        if job is None:
            print(
                f"qdel: Unknown Job Id {shown}" if pro else f"qdel: Unknown Job Id Error {shown}",
                file=sys.stderr,
            )
            rc = EXIT_UNKNOWN_JOB
            continue
        before = request_cancel(store, key)
        if before == DONE:
            live = job.get("array_index") is not None and any(
                j["state"] != DONE for j in subjobs(store, job["seq"])
            )
            if pro and live:  # as recorded on OpenPBS 23.06.06
                print(f"qdel: Request invalid for finished array subjob {shown}", file=sys.stderr)
                rc = EXIT_FINISHED_SUBJOB
            elif pro:
                print(f"qdel: Job has finished {shown}", file=sys.stderr)
                rc = EXIT_HISTORY_JOB
            else:
                print(f"qdel: Invalid state for job - COMPLETE {shown}", file=sys.stderr)
                rc = EXIT_BAD_STATE
        elif before in (RUNNING, EXITING):
            waits.append(key)
    for key in waits:
        wait_finished(store, key)
    return rc


def qhold_qrls(store: Store, tool: str, argv: list[str]) -> int:
    """``qhold`` / ``qrls`` on queued / held jobs."""
    _opts, ids, _ = parse_options(tool, argv, set("h"), set())
    rc = 0
    for shown, key, job in _each_job(store, tool, ids):
        if job is None:
            print(f"{tool}: Unknown Job Id {shown}", file=sys.stderr)
            rc = EXIT_UNKNOWN_JOB
            continue
        before = hold(store, key) if tool == "qhold" else release(store, key)
        if tool == "qhold" and before == QUEUED:
            with store.update_job(key) as held:
                if held is not None:
                    held["hold_comment"] = (
                        f"Job held by {current_user()} on {format_time(time.time())}"
                    )
        ok = before in ((QUEUED, HELD) if tool == "qhold" else (HELD, QUEUED))
        if not ok:
            print(f"{tool}: Request invalid for state of job {shown}", file=sys.stderr)
            rc = EXIT_BAD_STATE
    return rc


def qsub(store: Store, argv: list[str]) -> int:
    """``qsub [options] [script]`` (script read from stdin when absent); prints the job id."""
    from .common import enqueue

    job = build_job(store, "qsub", argv, None)
    indices = job["extra"]["array_indices"]
    if indices is None:
        enqueue(store, [job])
        printed = job["extra"]["jobid"]
    else:
        enqueue(store, expand_array(store, job, indices))
        printed = f"{job['seq']}[].{store.config.get('server_name', 'server')}"
    late = store.take_fault("submit_accept_then_fail")
    if late is not None:  # the server created the job(s), the client never heard back
        raise UsageError(late.get("stderr", "qsub: End of File"), int(late.get("exit_code", 1)))
    if ("z", "") not in parse_options("qsub", argv, QSUB_ARG_OPTS, QSUB_FLAGS)[0]:
        print(printed)
    return 0


def qmgr(store: Store, argv: list[str]) -> int:
    """``qmgr -c 'list server'`` / ``'print server'`` (the array size limit among a few
    attributes) and ``qmgr -c 'set server max_array_size = N'`` (Torque:
    ``max_job_array_size``; ``unset server ...`` removes it)."""
    if len(argv) != 2 or argv[0] != "-c":
        raise UsageError("usage: qmgr -c command", 1)
    flavour = store.config["flavour"]
    server = store.config.get("server_name", "server")
    attr = "max_array_size" if flavour == "pbs" else "max_job_array_size"
    words = argv[1].replace("=", " = ").split()
    if words[:2] in (["list", "server"], ["l", "s"], ["print", "server"], ["p", "s"]):
        limit = array_limit(store)
        values = {
            "server_state": "Active",
            "scheduling": "True",
            "default_queue": store.config.get("default_queue") or "",
        }
        if limit is not None:
            values[attr] = str(limit)
        if words[0] in ("print", "p"):
            print("\n".join(f"set server {k} = {v}" for k, v in values.items()))
        else:
            indent = "    " if flavour == "pbs" else "\t"
            print(f"Server {server}\n" + "\n".join(f"{indent}{k} = {v}" for k, v in values.items()))
        return 0
    if words[:3] in (["set", "server", attr], ["unset", "server", attr]):
        with store.lock():
            config = dict(store.config)
            if words[0] == "set":
                if len(words) != 5 or not words[4].isdigit():
                    raise UsageError(
                        f"qmgr obj={server} svr={server}: Illegal attribute or resource value", 1
                    )
                config["max_array_size"] = int(words[4])
            else:
                config["max_array_size"] = 0
            store.write_config(config)
        return 0
    raise UsageError(f"qmgr: emulator: unsupported command {argv[1]!r}", 1)
