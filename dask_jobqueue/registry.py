"""The one list of the schedulers this package drives.

Everything that needs "every scheduler" — the package's exports, the command line, the
watchdog, the documentation checks and the tests — reads :data:`SCHEDULERS` instead of
writing the list out again. This module uses the standard library only (the watchdog imports
it without importing dask); the classes are imported when asked for.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .cluster import JobQueueCluster
    from .job import Job

__all__ = ["Scheduler", "SCHEDULERS", "BATCH_SCHEDULERS", "get", "names"]


@dataclass(frozen=True)
class Scheduler:
    """One scheduler: its name, where its public classes live, how to recognise it.

    Parameters
    ----------
    name : str
        Its name on the command line and its section in ``jobqueue.yaml``.
    module : str
        The public module users import its classes from.
    cluster : str
        Name of its cluster class in ``module``.
    job : str
        Name of its job class in ``module``.
    probe : str or None
        A command only this batch system installs, to tell which one a machine has
        (``None`` for the local backend, which is always there).
    """

    name: str
    module: str
    cluster: str
    job: str
    probe: str | None

    @property
    def is_batch_system(self) -> bool:
        """Whether jobs go to a batch system (every scheduler but the local backend)."""
        return self.probe is not None

    def cluster_class(self) -> type[JobQueueCluster]:
        """The cluster class (imports its module)."""
        return getattr(importlib.import_module(self.module), self.cluster)

    def job_class(self) -> type[Job]:
        """The job class (imports its module)."""
        return getattr(importlib.import_module(self.module), self.job)


#: Every scheduler, in the order the documentation and the command line present them.
SCHEDULERS: tuple[Scheduler, ...] = (
    Scheduler("pbs", "dask_jobqueue.pbs", "PBSCluster", "PBSJob", probe="pbsnodes"),
    Scheduler("moab", "dask_jobqueue.moab", "MoabCluster", "MoabJob", probe="msub"),
    Scheduler("slurm", "dask_jobqueue.slurm", "SLURMCluster", "SLURMJob", probe="sbatch"),
    Scheduler("sge", "dask_jobqueue.sge", "SGECluster", "SGEJob", probe="qconf"),
    Scheduler("lsf", "dask_jobqueue.lsf", "LSFCluster", "LSFJob", probe="bsub"),
    Scheduler("oar", "dask_jobqueue.oar", "OARCluster", "OARJob", probe="oarsub"),
    Scheduler(
        "htcondor",
        "dask_jobqueue.htcondor",
        "HTCondorCluster",
        "HTCondorJob",
        probe="condor_submit",
    ),
    Scheduler("local", "dask_jobqueue.local", "LocalCluster", "LocalJob", probe=None),
)

#: The schedulers that are batch systems (all but ``local``).
BATCH_SCHEDULERS: tuple[Scheduler, ...] = tuple(s for s in SCHEDULERS if s.is_batch_system)


def names() -> list[str]:
    """The names of every scheduler, in :data:`SCHEDULERS` order."""
    return [s.name for s in SCHEDULERS]


def get(name: str) -> Scheduler:
    """The scheduler called ``name``.

    Raises
    ------
    ValueError
        If there is none of that name (the message lists the names there are).
    """
    for scheduler in SCHEDULERS:
        if scheduler.name == name:
            return scheduler
    raise ValueError(f"unknown scheduler {name!r}; choose from {', '.join(names())}")
