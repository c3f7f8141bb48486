"""Moab: ``msub`` / ``checkjob`` / ``canceljob`` with PBS-style ``#PBS`` directives."""

from __future__ import annotations

from .pbs import PBSCluster, PBSJob

__all__ = ["MoabJob", "MoabCluster"]


class MoabJob(PBSJob):
    """A Moab job: PBS directives, Moab commands."""

    config_name = "moab"
    submit_command = "msub"
    cancel_command = "canceljob"


class MoabCluster(PBSCluster):
    """Launch Dask workers on a Moab-managed cluster (same keywords as :class:`PBSCluster`)."""

    job_cls = MoabJob
