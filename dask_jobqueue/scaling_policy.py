"""When ``adapt()`` submits batch jobs and when it releases them: a pure policy.

No commands, no sleeps, no clock of its own: :meth:`JobScalingPolicy.decide` is given the time,
the demand and one :class:`JobView` per planned job, and answers with a :class:`ScalingDecision`.
:mod:`dask_jobqueue.adaptive` feeds it from the scheduler and carries its decisions out.

The rules, for batch queues where a job is expensive to get back:

* whole jobs only: a demand in workers is rounded up to whole jobs, limits too;
* a job without connected workers (queued, starting, or between its workers leaving and the
  batch system reporting its end) is capacity that is coming: nothing more is submitted for it;
* nothing is released before a surplus of jobs has lasted ``idle_timeout``, and a job with
  connected workers only once none of them has run a task for ``idle_timeout`` (keep-warm);
* of the jobs that may go, those without connected workers go first (newest first: the oldest
  are nearest the head of the queue), then running ones, idle longest first;
* one decision never both submits and releases.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["JobScalingPolicy", "JobView", "ScalingDecision", "jobs_for_workers"]


def jobs_for_workers(workers: float, workers_per_job: int) -> int | float:
    """Whole jobs holding ``workers`` workers (rounded up); ``inf`` stays ``inf``."""
    if math.isinf(workers):
        return math.inf
    return math.ceil(max(workers, 0) / workers_per_job)


@dataclass(frozen=True)
class JobView:
    """What the policy knows of one planned job.

    Parameters
    ----------
    name : str
        The job's name in the cluster's plan (``worker_spec``).
    workers_connected : int
        Its workers connected to the scheduler now; 0 while queued or starting.
    busy : bool
        Whether any of its workers is processing a task now.
    """

    name: str
    workers_connected: int = 0
    busy: bool = False

    @property
    def running(self) -> bool:
        return self.workers_connected > 0


@dataclass(frozen=True)
class ScalingDecision:
    """What to do now: submit ``submit`` new jobs, or release the jobs named in ``release``
    (queued ones cancelled, running ones retired gracefully then cancelled).

    ``wanted`` is the number of jobs the demand asked for, within the limits.
    """

    wanted: int
    submit: int = 0
    release: tuple[str, ...] = field(default=())

    @property
    def same(self) -> bool:
        return not self.submit and not self.release


class JobScalingPolicy:
    """Adaptive scaling decisions in whole jobs, with a keep-warm time before releasing.

    Parameters
    ----------
    minimum_jobs : int
        Jobs kept whatever the demand.
    maximum_jobs : int or float
        Most jobs asked for (``math.inf``: no limit).
    idle_timeout : float
        Seconds a surplus must last, and a running job must have been idle, before it is
        released.

    Examples
    --------
    >>> policy = JobScalingPolicy(minimum_jobs=0, maximum_jobs=4, idle_timeout=60)
    >>> policy.decide(0.0, wanted_workers=3, workers_per_job=1, jobs=[]).submit
    3
    """

    def __init__(self, minimum_jobs: int, maximum_jobs: int | float, idle_timeout: float):
        if minimum_jobs < 0 or maximum_jobs < minimum_jobs:
            raise ValueError(
                f"minimum_jobs={minimum_jobs!r}, maximum_jobs={maximum_jobs!r}: need "
                "0 <= minimum_jobs <= maximum_jobs"
            )
        if not idle_timeout > 0:
            raise ValueError(f"idle_timeout={idle_timeout!r} must be a positive duration")
        self.minimum_jobs = minimum_jobs
        self.maximum_jobs = maximum_jobs
        self.idle_timeout = idle_timeout
        self._idle_since: dict[str, float] = {}
        self._surplus_since: float | None = None

    def decide(
        self,
        now: float,
        wanted_workers: float,
        workers_per_job: int,
        jobs: Sequence[JobView],
    ) -> ScalingDecision:
        """The decision at time ``now`` (seconds, any monotonic origin).

        Parameters
        ----------
        now : float
            The current time; calls must come with non-decreasing times.
        wanted_workers : float
            Workers the task demand asks for (e.g. distributed's ``adaptive_target``).
        workers_per_job : int
            Worker processes in one job.
        jobs : sequence of JobView
            Every planned job, oldest first, queued ones included.
        """
        self._update_idle(now, jobs)
        wanted = jobs_for_workers(wanted_workers, workers_per_job)
        wanted = int(min(max(wanted, self.minimum_jobs), self.maximum_jobs))
        have = len(jobs)
        if wanted >= have:
            self._surplus_since = None
            return ScalingDecision(wanted=wanted, submit=wanted - have)
        if self._surplus_since is None:
            self._surplus_since = now
        if now - self._surplus_since < self.idle_timeout:
            return ScalingDecision(wanted=wanted)
        coming = [job.name for job in reversed(jobs) if not job.running]
        order = {job.name: k for k, job in enumerate(jobs)}
        idle = sorted(
            (
                job.name
                for job in jobs
                if job.running
                and job.name in self._idle_since
                and now - self._idle_since[job.name] >= self.idle_timeout
            ),
            # idle longest first; then the oldest job, which has the least walltime left
            key=lambda name: (self._idle_since[name], order[name]),
        )
        release = tuple((coming + idle)[: have - wanted])
        return ScalingDecision(wanted=wanted, release=release)

    def idle_for(self, name: str, now: float) -> float:
        """Seconds job ``name`` has been running without a task (0 if busy or not running)."""
        since = self._idle_since.get(name)
        return 0.0 if since is None else max(now - since, 0.0)

    def _update_idle(self, now: float, jobs: Sequence[JobView]) -> None:
        idle_since = {}
        for job in jobs:
            if job.running and not job.busy:
                idle_since[job.name] = self._idle_since.get(job.name, now)
        self._idle_since = idle_since
