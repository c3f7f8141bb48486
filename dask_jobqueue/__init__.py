"""Deploy Dask on job-queuing systems: PBS, Slurm, SGE, LSF, Moab, OAR and HTCondor.

Importing the package registers its configuration defaults and nothing else: the cluster
classes (and distributed with them) are imported on first use, so the watchdog and the
command line can read the dialects (``dask_jobqueue.dialects``) without starting Dask.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from . import config  # (registers the configuration defaults)
from .registry import BATCH_SCHEDULERS

if TYPE_CHECKING:
    from ._shell import CommandError
    from .cluster import JobQueueCluster
    from .htcondor import HTCondorCluster
    from .job import JobFailedError
    from .lsf import LSFCluster
    from .moab import MoabCluster
    from .oar import OARCluster
    from .pbs import PBSCluster
    from .sge import SGECluster
    from .slurm import SLURMCluster
    from .tracking import JobState

    attach = JobQueueCluster.attach

#: The one version of the package (setup.py reads it from here). Above every 0.x release of
#: the original dask-jobqueue, so a ``dask-jobqueue>=0.8`` pin or ``pip install -U`` keeps
#: this implementation instead of replacing it with 0.9 (README: "Version").
__version__ = "1.0.0"

#: Where each public name lives (the batch systems' cluster classes come from the registry).
_PUBLIC = {
    "JobQueueCluster": "dask_jobqueue.cluster",
    **{s.cluster: s.module for s in BATCH_SCHEDULERS},
    "CommandError": "dask_jobqueue._shell",
    "JobFailedError": "dask_jobqueue.job",
    "JobState": "dask_jobqueue.tracking",
    "attach": "dask_jobqueue.cluster",
}

__all__ = [
    "JobQueueCluster",
    "PBSCluster",
    "MoabCluster",
    "SLURMCluster",
    "SGECluster",
    "LSFCluster",
    "OARCluster",
    "HTCondorCluster",
    "CommandError",
    "JobFailedError",
    "JobState",
    "attach",
]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is not None or not name.startswith("_"):
        # a dask config file that is not valid YAML: one line naming it, not dask's traceback
        config.dask_config()
    if module is not None:
        value = getattr(importlib.import_module(module), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        # ``import dask_jobqueue`` then ``dask_jobqueue.slurm...``: once imported eagerly
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
