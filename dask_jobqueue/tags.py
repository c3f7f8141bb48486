"""Job tags: every job a cluster submits names its owner and its submission.

A tag is a short text, e.g. ``djq1.3f9a0c1e.12.4242.login01``, carried by a field the batch
system keeps with the job and that a job submitted from inside it does not inherit: Slurm's
comment, an SGE job context variable (``qsub -ac``; ``qsub -V`` copies the environment, not
the context), the job name on PBS, Torque and Moab (``<job_name>-<tag>``), LSF's job
description, an HTCondor job attribute, and on OAR the first line of the job's command
(``DASK_JOBQUEUE_TAG=<tag>``, a shell variable that is not exported). It lets
``dask-jobqueue status``/``cleanup`` and the watchdog find the jobs of a cluster whose owner
is gone, also jobs that owner never heard back about (submitted just before it died).

A field matches only if it holds exactly the tag, or exactly the form we write (the PBS name,
the OAR line): a field that merely mentions a tag (a comment quoting one, a job named after
one with more text around it) is not ours.

Each dialect declares a :class:`TagSpec`: the submit-command arguments carrying the tag, the
commands listing this user's jobs, and a pure parser of their output. The parsers live here
because the watchdog (``watchdog.py``) loads this module by its path, without importing dask:
this module uses the standard library only.
"""

from __future__ import annotations

import bisect
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
    "name_with_tag",
    "tag_in_name",
    "oar_tag_line",
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
#: Name of the variable carrying the tag: SGE's job context variable, OAR's shell variable.
TAG_VARIABLE = "DASK_JOBQUEUE_TAG"
#: Name of the HTCondor job attribute carrying the tag.
HTCONDOR_ATTRIBUTE = "DaskJobqueueTag"
#: HTCondor ``JobStatus`` of jobs on their way out of the queue: removed, completed.
HTCONDOR_LEAVING = (3, 4)

_TAG_PATTERN = (
    rf"{TAG_PREFIX}\.(?P<cluster_id>[0-9a-f]{{8}})\.(?P<serial>\d+)\.(?P<pid>\d+)\."
    r"(?P<host>[A-Za-z0-9][A-Za-z0-9-]*(?:\.[A-Za-z0-9-]+)*)"
)
_TAG_RE = re.compile(_TAG_PATTERN)

#: A PBS / Torque / Moab ``job_name``: what all three accept at the start of a job name
#: (Torque and PBS Pro want a letter first) and that needs no quoting.
JOB_NAME_PATTERN = r"[A-Za-z][A-Za-z0-9_.+-]*"
#: The longest job name PBS Pro / OpenPBS accept (``qsub -N``).
PBS_MAX_JOB_NAME = 236
_NAME_RE = re.compile(rf"(?P<job_name>{JOB_NAME_PATTERN})-(?P<tag>{_TAG_PATTERN})")


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
        """The tag ``text`` is, or ``None``: ``text`` must be exactly a tag (surrounding
        white space aside); a text that merely contains one (``"see djq1...."``) is not."""
        if not text:
            return None
        match = _TAG_RE.fullmatch(text.strip())
        if match is None:
            return None
        try:
            return cls(
                match["cluster_id"], int(match["serial"]), int(match["pid"]), match["host"]
            )
        except ValueError:  # a form no tag of ours has (pid 0, a host ending in "-")
            return None


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
    """The pairs whose field is exactly a tag (see :meth:`JobTag.parse`)."""
    return {
        job_id: text.strip() for job_id, text in pairs.items() if JobTag.parse(text) is not None
    }


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
        return _only_tagged(found)
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
    return _only_tagged(found)


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


#: The first line of a tagged OAR job's command: a shell variable that is not exported, so
#: neither the workers nor the jobs they submit see it (``export`` first: as written by
#: dask_jobqueue before 2026-12, whose jobs are still ours).
_OAR_TAG_LINE = re.compile(rf"(?:export )?{TAG_VARIABLE}=(?P<tag>{_TAG_PATTERN})")


def oar_tag_line(text: str) -> str:
    """The first line of the command of an OAR job tagged ``text``."""
    return f"{TAG_VARIABLE}={text}"


def parse_oar_tags(stdout: str, user: str | None = None) -> dict[str, str]:
    """``oarstat -J -u USER`` (JSON keyed by job id): OAR keeps no free field for the tag, so
    it travels in the job's command, whose first line must be exactly
    :func:`oar_tag_line` (``DASK_JOBQUEUE_TAG=<tag>``)."""
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
        first_line = str(job.get("command") or "").split("\n", 1)[0]
        match = _OAR_TAG_LINE.fullmatch(first_line.strip())
        if job_id is not None and match:
            found[str(job_id)] = match["tag"]
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
