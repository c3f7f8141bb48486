"""A job's walltime in seconds: from its keyword, else from the batch system's default.

A dialect declares how to read its scheduler's default (:class:`WalltimeDefault`: one command
and a pure parser); :func:`job_walltime` runs it at most once per engine, with the status time
limit, and keeps the answer in the engine's ``facts`` (``facts["default_walltime"]``). Any
failure means "unknown": the cluster then does no walltime handling.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from ._shell import CommandError
from ._values import parse_walltime
from .dialect import WalltimeDefault, hms_seconds

if TYPE_CHECKING:
    from .engine import BatchSystem
    from .job import Job

logger = logging.getLogger(__name__)

__all__ = [
    "WalltimeDefault",
    "job_walltime",
]

_FACT = "default_walltime"


def keyword_walltime(job: Job) -> float | None:
    """The walltime the job's own options give, in seconds (None: not given)."""
    value = getattr(job, "walltime", None)
    if value is not None:
        return float(parse_walltime(value, type(job).walltime_forms))
    # Grid Engine and PBS sites often ask for it in the resource list: h_rt=..., walltime=...
    spec = getattr(job, "resource_spec", None) or ""
    match = re.search(r"(?:^|[,\s:])(?:h_rt|walltime)=([\d:-]+)", spec)
    if match:
        return hms_seconds(match.group(1))
    return None


async def job_walltime(engine: BatchSystem) -> float | None:
    """Seconds each job of this engine may run, or None when unknown.

    The keyword (or config) wins; else the scheduler's default, read once (cached in
    ``engine.facts``)."""
    job = engine.template
    given = keyword_walltime(job)
    if given is not None:
        return given
    if _FACT in engine.facts:
        return engine.facts[_FACT]
    step: WalltimeDefault | None = getattr(type(job), "walltime_default", None)
    argv = step.argv(job) if step is not None else None
    value = None
    if step is not None and argv is not None:
        try:
            stdout = (await engine.run("status", argv, engine.status_timeout)).stdout
            value = step.parse(stdout, job)
        except (CommandError, ValueError) as exc:
            logger.info("Could not read the default walltime (%s): %s", " ".join(argv), exc)
    engine.facts[_FACT] = value
    if value is not None:
        logger.debug("Default walltime of this batch system: %gs", value)
    return value
