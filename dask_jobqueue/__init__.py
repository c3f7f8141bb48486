"""Deploy Dask on job-queuing systems: PBS, Slurm, SGE, LSF, Moab, OAR and HTCondor."""

from . import config  # noqa: F401  (registers the configuration defaults)
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

__version__ = "0.1.0"

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
]
