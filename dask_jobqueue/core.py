"""Compatibility module: ``dask_jobqueue.core`` is where users import ``Job`` and
``JobQueueCluster`` from. The job lives in :mod:`dask_jobqueue.job`, the cluster in
:mod:`dask_jobqueue.cluster`.
"""

from ._shell import CommandError
from .cluster import JobQueueCluster
from .job import Job, JobFailedError, default_processes

__all__ = ["Job", "JobQueueCluster", "JobFailedError", "CommandError", "default_processes"]
