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
commands listing this user's jobs, and a pure parser of their output, in the dialect's own
module (``dialects/<name>.py``); the watchdog imports it by its ``module:name``. This module
uses the standard library only.
"""

from __future__ import annotations

import importlib
import re
import socket
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "JobTag",
    "TagSpec",
    "TAG_PATTERN",
    "TAG_PREFIX",
    "TAG_VARIABLE",
    "new_cluster_id",
    "only_tagged",
    "safe_host",
    "tag_parser",
]

#: Version prefix of the tag text.
TAG_PREFIX = "djq1"
#: Name of the variable carrying the tag: SGE's job context variable, OAR's shell variable.
TAG_VARIABLE = "DASK_JOBQUEUE_TAG"

TAG_PATTERN = (
    rf"{TAG_PREFIX}\.(?P<cluster_id>[0-9a-f]{{8}})\.(?P<serial>\d+)\.(?P<pid>\d+)\."
    r"(?P<host>[A-Za-z0-9][A-Za-z0-9-]*(?:\.[A-Za-z0-9-]+)*)"
)
_TAG_RE = re.compile(TAG_PATTERN)


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
            return cls(match["cluster_id"], int(match["serial"]), int(match["pid"]), match["host"])
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
        shows every user's). A module-level function (the watchdog imports it by name).
    """

    submit_args: Callable[[str], list[str]]
    list_argvs: Callable[[str], Sequence[Sequence[str]]]
    parse: Callable[..., dict[str, str]]

    @property
    def parser_name(self) -> str:
        """Where the parser lives, ``module:name`` (stored in the watchdog's state file,
        which imports it from there)."""
        module, name = self.parse.__module__, self.parse.__qualname__
        if (
            "<" in name
            or sys.modules.get(module) is None
            or getattr(sys.modules[module], name, None) is not self.parse
        ):
            raise ValueError(
                f"tag parser {module}.{name} is not a module-level function: the watchdog "
                "could not import it"
            )
        return f"{module}:{name}"


def tag_parser(name: str) -> Callable[..., dict[str, str]]:
    """The tag parser a :attr:`TagSpec.parser_name` names (imports its module)."""
    module, _, attribute = name.partition(":")
    return getattr(importlib.import_module(module), attribute)


# ---------------------------------------------------------------------------- parsers


def only_tagged(pairs: dict[str, str]) -> dict[str, str]:
    """The pairs whose field is exactly a tag (see :meth:`JobTag.parse`)."""
    return {
        job_id: text.strip() for job_id, text in pairs.items() if JobTag.parse(text) is not None
    }
