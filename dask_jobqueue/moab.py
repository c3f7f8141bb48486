"""Moab: the public job and cluster classes (``MoabJob``, ``MoabCluster``).

Moab runs PBS-style jobs under its own commands: :mod:`dask_jobqueue.dialects.moab` is the
PBS dialect with ``msub`` / ``showq`` / ``canceljob``; the keywords and the ``#PBS`` header
are :class:`~dask_jobqueue.pbs.PBSJob`'s.
"""

from __future__ import annotations

from .dialects.moab import (  # noqa: F401  (re-exported: the public names of 0.9 and tests)
    DIALECT,
    match_moab_ids,
    moab_job_status,
    parse_moab_tags,
    parse_showq_step,
    parse_showq_xml,
    showq_argv,
    showq_completed_argv,
)
from .pbs import PBSCluster, PBSJob

__all__ = ["MoabJob", "MoabCluster", "parse_showq_xml", "moab_job_status"]


class MoabJob(PBSJob):
    """A Moab job: PBS directives, Moab commands."""

    dialect = DIALECT

    def array_support_for(self, facts: dict) -> None:
        """No job arrays through Moab: one ``msub`` per job (see the class comment)."""
        return None


class MoabCluster(PBSCluster):
    """Launch Dask workers on a Moab-managed cluster (same keywords as :class:`PBSCluster`)."""

    job_cls = MoabJob
