"""Job tags: every job a cluster submits names its owner and its submission.

A tag is a short text, e.g. ``djq1.3f9a0c1e.12.4242.login01``, carried by a field the batch
system keeps with the job (Slurm's comment, an SGE job context variable, a PBS environment
variable, LSF's job description, an HTCondor job attribute, an OAR job name suffix). It lets
``dask-jobqueue status``/``cleanup`` and the watchdog find the jobs of a cluster whose owner
is gone, also jobs that owner never heard back about (submitted just before it died).

Each dialect declares a :class:`TagSpec`: the submit-command arguments carrying the tag, the
commands listing this user's jobs, and a pure parser of their output. The parsers live here
because the watchdog (``watchdog.py``) loads this module by its path, without importing dask:
this module uses the standard library only.
"""

from __future__ import annotations

import json
import re
import socket
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "JobTag",
    "TagSpec",
    "TAG_VARIABLE",
    "new_cluster_id",
    "safe_host",
    "parse_slurm_tags",
    "parse_sge_tags",
    "parse_pbs_tags",
    "parse_moab_tags",
    "parse_lsf_tags",
    "parse_htcondor_tags",
    "parse_oar_tags",
    "PARSERS",
]

#: Version prefix of the tag text.
TAG_PREFIX = "djq1"
#: Name of the environment / context variable carrying the tag (SGE, PBS, Torque, Moab).
TAG_VARIABLE = "DASK_JOBQUEUE_TAG"
#: Name of the HTCondor job attribute carrying the tag.
HTCONDOR_ATTRIBUTE = "DaskJobqueueTag"
#: HTCondor ``JobStatus`` of jobs on their way out of the queue: removed, completed.
HTCONDOR_LEAVING = (3, 4)

_TAG_RE = re.compile(
    rf"{TAG_PREFIX}\.(?P<cluster_id>[0-9a-f]{{8}})\.(?P<serial>\d+)\.(?P<pid>\d+)\."
    r"(?P<host>[A-Za-z0-9][A-Za-z0-9-]*(?:\.[A-Za-z0-9-]+)*)"
)


def new_cluster_id() -> str:
    """A fresh cluster id: 8 random hex digits."""
    return uuid.uuid4().hex[:8]


def safe_host(host: str | None = None) -> str:
    """``host`` (default: this machine's short host name) reduced to letters, digits, ``-``
    and ``.``, so that the tag is safe in every scheduler's field (no spaces, commas, quotes)."""
    name = host if host is not None else socket.gethostname()
    cleaned = re.sub(r"[^A-Za-z0-9.-]", "-", name).strip(".-")
    cleaned = re.sub(r"\.{2,}", ".", cleaned)
    return cleaned or "unknown"


@dataclass(frozen=True)
class JobTag:
    """Who submitted a job: the cluster object, the submission, the owner process and host.

    Parameters
    ----------
    cluster_id : str
        8 hex digits, one per cluster object.
    serial : int
        Unique per submission within the cluster.
    pid : int
        Process id of the owner (the process holding the cluster).
    host : str
        Host name of the owner.
    """

    cluster_id: str
    serial: int
    pid: int
    host: str

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[0-9a-f]{8}", self.cluster_id):
            raise ValueError(f"cluster_id must be 8 lowercase hex digits, got {self.cluster_id!r}")
        if self.serial < 0 or self.pid <= 0:
            raise ValueError(f"serial must be >= 0 and pid > 0, got {self.serial}, {self.pid}")
        if safe_host(self.host) != self.host:
            raise ValueError(f"host {self.host!r} has characters a tag cannot carry")

    def text(self) -> str:
        """The tag as carried by the job, e.g. ``djq1.3f9a0c1e.12.4242.login01``."""
        return f"{TAG_PREFIX}.{self.cluster_id}.{self.serial}.{self.pid}.{self.host}"

    @classmethod
    def parse(cls, text: str | None) -> JobTag | None:
        """The tag in ``text`` (which may hold more, e.g. a job name ending in the tag), or
        ``None`` if there is none."""
        if not text:
            return None
        match = _TAG_RE.search(text)
        if match is None:
            return None
        return cls(
            match["cluster_id"], int(match["serial"]), int(match["pid"]), match["host"]
        )


@dataclass(frozen=True)
class TagSpec:
    """How a dialect's jobs carry their tag and how to list this user's tagged jobs.

    Parameters
    ----------
    submit_args : callable
        ``submit_args(text)``: arguments added to the submit command (right after the
        command's own words) so that the job carries the tag ``text``.
    list_argvs : callable
        ``list_argvs(user)``: command lines listing ``user``'s jobs with their tags, tried in
        order until one succeeds (e.g. ``qstat -f -F json``, then plain ``qstat -f``).
    parse : callable
        ``parse(stdout, user=None)``: ``{job_id: tag text}`` of the tagged jobs listed
        (untagged jobs are left out; with ``user``, other users' jobs too where the listing
        shows every user's). A function of this module (the watchdog finds it by name).
    """

    submit_args: Callable[[str], list[str]]
    list_argvs: Callable[[str], Sequence[Sequence[str]]]
    parse: Callable[..., dict[str, str]]

    @property
    def parser_name(self) -> str:
        """The parser's name in this module (stored in the watchdog's state file)."""
        name = self.parse.__name__
        if PARSERS.get(name) is not self.parse:
            raise ValueError(f"tag parser {name!r} is not one of dask_jobqueue.tags.PARSERS")
        return name


# ---------------------------------------------------------------------------- parsers


def _only_tagged(pairs: dict[str, str]) -> dict[str, str]:
    return {job_id: text for job_id, text in pairs.items() if JobTag.parse(text) is not None}


def parse_slurm_tags(stdout: str, user: str | None = None) -> dict[str, str]:
    """``squeue -h -u USER -o '%i|%k'``: job id and comment per line."""
    found = {}
    for line in stdout.splitlines():
        job_id, sep, comment = line.strip().partition("|")
        if sep and job_id:
            found[job_id] = comment.strip()
    return _only_tagged(found)


def parse_sge_tags(stdout: str, user: str | None = None) -> dict[str, str]:
    """``qstat -xml -j '*'``: ``JB_job_number`` and the ``DASK_JOBQUEUE_TAG`` entry of
    ``JB_context`` of every job (of ``user``'s jobs only, if given: ``JB_owner``)."""
    text = stdout.strip()
    if not text:
        return {}
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ValueError(f"qstat -xml printed invalid XML: {exc}") from None
    found = {}
    for job in root.iter():
        number = job.find("JB_job_number")
        if number is None or not (number.text or "").strip():
            continue
        if user is not None and (job.findtext("JB_owner") or "").strip() not in ("", user):
            continue
        # the job context (qsub -ac), not the job's environment (same element names)
        for context in job.iter("JB_context"):
            for entry in context:
                if (entry.findtext("VA_variable") or "").strip() == TAG_VARIABLE:
                    found[number.text.strip()] = (entry.findtext("VA_value") or "").strip()
    return _only_tagged(found)


_PBS_JOB_KEY = re.compile(r'"(?P<id>[^"\\]+)"\s*:\s*\{\s*"Job_Name"')
_PBS_TAG_VALUE = re.compile(rf'"{TAG_VARIABLE}"\s*:\s*"(?P<tag>[^"\\]*)"')


def parse_pbs_tags(stdout: str, user: str | None = None) -> dict[str, str]:
    """``qstat -f -F json`` (OpenPBS, PBS Pro) or ``qstat -f`` text (Torque, Moab): the
    ``DASK_JOBQUEUE_TAG`` entry of each job's ``Variable_List``.

    PBS Pro writes invalid JSON when a variable holds quotes or backslashes: then job keys
    and tags are read in document order instead. With ``user``, only jobs whose
    ``Job_Owner`` is ``user@...`` are kept (JSON and text forms). Exiting and ended jobs
    (state ``E``, ``C``, ``F``, ``X``: Torque lists ended ones for a while) are left out.
    A job array listed with its subjobs (``qstat -t``) is reported by its subjobs only
    (``12[0].server``, not ``12[]``).
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
            variables = attrs.get("Variable_List") if isinstance(attrs, dict) else None
            if not isinstance(variables, dict) or TAG_VARIABLE not in variables:
                continue
            if user is not None and not _owned_by(str(attrs.get("Job_Owner", "")), user):
                continue
            if str(attrs.get("job_state", "")) in _PBS_LEAVING:
                continue
            found[job_id] = str(variables[TAG_VARIABLE])
        return _only_tagged(found)
    return _pbs_text(text, user)


#: Job states of jobs on their way out: exiting (``E``, also after a ``qdel``), and ended
#: (Torque keeps ``C`` jobs listed for ``keep_completed``; PBS Pro ``F`` and ``X``).
_PBS_LEAVING = {"E", "C", "F", "X"}


def _owned_by(job_owner: str, user: str) -> bool:
    return job_owner.strip().split("@", 1)[0] == user


_PBS_OWNER_VALUE = re.compile(r'"Job_Owner"\s*:\s*"(?P<owner>[^"\\]*)"')


def _pbs_json_by_order(text: str, user: str | None) -> dict[str, str]:
    keys = [(m.start(), m["id"]) for m in _PBS_JOB_KEY.finditer(text)]

    def job_at(position: int) -> str | None:
        before = [job_id for start, job_id in keys if start < position]
        return before[-1] if before else None

    owners = {job_at(m.start()): m["owner"] for m in _PBS_OWNER_VALUE.finditer(text)}
    found = {}
    for match in _PBS_TAG_VALUE.finditer(text):
        job_id = job_at(match.start())
        if job_id is None:
            continue
        if user is not None and not _owned_by(owners.get(job_id, ""), user):
            continue
        found[job_id] = match["tag"]
    return _only_tagged(found)


def _pbs_text(text: str, user: str | None) -> dict[str, str]:
    # qstat -f wraps long values onto lines starting with a tab: join them first
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith("\t") and lines:
            lines[-1] += line[1:]
        else:
            lines.append(line)
    found = {}
    owners = {}
    leaving = set()
    job_id = None
    for line in lines:
        if line.startswith("Job Id:"):
            job_id = line.split(":", 1)[1].strip()
            continue
        name, sep, value = line.strip().partition(" = ")
        if not sep or job_id is None:
            continue
        if name == "Job_Owner":
            owners[job_id] = value
        elif name == "job_state" and value.strip() in _PBS_LEAVING:
            leaving.add(job_id)
        elif name == "Variable_List":
            for item in value.split(","):
                key, _, val = item.partition("=")
                if key.strip() == TAG_VARIABLE:
                    found[job_id] = val.strip()
    found = {i: t for i, t in found.items() if i not in leaving}
    if user is not None:
        found = {i: t for i, t in found.items() if _owned_by(owners.get(i, ""), user)}
    return _only_tagged(found)


def parse_moab_tags(stdout: str, user: str | None = None) -> dict[str, str]:
    """Torque's ``qstat -f`` under Moab: as :func:`parse_pbs_tags`, with Moab's job ids
    (``12``, where Torque says ``12.server``)."""
    return {job_id.split(".", 1)[0]: text for job_id, text in parse_pbs_tags(stdout, user).items()}


def parse_lsf_tags(stdout: str, user: str | None = None) -> dict[str, str]:
    """``bjobs -u USER -o 'jobid jobindex job_description delimiter="|"' -noheader``: array
    elements (``jobindex`` > 0) as ``12[3]``; also the form without ``jobindex``, and ids
    printed as ``12[3]`` already (``LSB_BJOBS_DISPLAY_ENH=Y``)."""
    found = {}
    for line in stdout.splitlines():
        parts = [part.strip() for part in line.strip().split("|", 2)]
        if len(parts) == 3 and parts[1].isdigit():
            job_id, index, description = parts
        elif len(parts) >= 2:
            job_id, index, description = parts[0], "0", "|".join(parts[1:])
        else:
            continue
        if re.fullmatch(r"\d+", job_id) and int(index) > 0:
            job_id = f"{job_id}[{int(index)}]"
        if re.fullmatch(r"\d+(?:\[\d+\])?", job_id):
            found[job_id] = description
    return _only_tagged(found)


def parse_htcondor_tags(stdout: str, user: str | None = None) -> dict[str, str]:
    """``condor_q USER -af ClusterId ProcId JobStatus DaskJobqueueTag``: ``12 0 2 djq1....``
    per job (``undefined`` for jobs without the attribute). Removed (3) and completed (4)
    jobs are left out: ``condor_q`` lists a removed job until its shadow exits, and it needs
    no cancel."""
    found = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and all(part.isdigit() for part in parts[:3]):
            if int(parts[2]) not in HTCONDOR_LEAVING:
                found[f"{parts[0]}.{parts[1]}"] = parts[3]
    return _only_tagged(found)


_OAR_TAG = re.compile(r"DASK_JOBQUEUE_TAG=(\S+)")


def parse_oar_tags(stdout: str, user: str | None = None) -> dict[str, str]:
    """``oarstat -J -u USER`` (JSON keyed by job id): OAR keeps no free field for the tag, so
    it travels in the job's command (``export DASK_JOBQUEUE_TAG=...`` on its first line)."""
    text = stdout.strip()
    if not text:
        return {}
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"oarstat -J printed invalid JSON: {exc}") from None
    items = doc.items() if isinstance(doc, dict) else ((None, job) for job in doc)
    found = {}
    for key, job in items:
        if not isinstance(job, dict):
            continue
        job_id = job.get("Job_Id", job.get("id", key))
        match = _OAR_TAG.search(str(job.get("command") or ""))
        if job_id is not None and match:
            found[str(job_id)] = match.group(1).strip("'\"")
    return _only_tagged(found)


#: Every tag parser by name (the watchdog's state file names one).
PARSERS: dict[str, Callable[..., dict[str, str]]] = {
    f.__name__: f
    for f in (
        parse_slurm_tags,
        parse_sge_tags,
        parse_pbs_tags,
        parse_moab_tags,
        parse_lsf_tags,
        parse_htcondor_tags,
        parse_oar_tags,
    )
}
