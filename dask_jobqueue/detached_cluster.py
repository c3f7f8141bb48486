"""The scheduler-in-a-job half of :class:`~dask_jobqueue.cluster.JobQueueCluster`.

With ``scheduler_in_job=True`` the Dask scheduler runs outside the client process (in a small
batch job of the cluster's own class; a detached process on the local backend), the cluster has
a name and a record (:mod:`dask_jobqueue.detached`: files, lease, keep-alive), and another
process can :meth:`~DetachedClusterMixin.attach` to it by that name, adopting its jobs by their
tags. The cluster class takes these methods from :class:`DetachedClusterMixin`; they run only
when the cluster was built with ``scheduler_in_job=True`` or by ``attach``.
"""

from __future__ import annotations

import logging
import os
import re
import time
import warnings
import weakref
from typing import TYPE_CHECKING, Any

from distributed.core import Status
from distributed.security import Security

from . import registry
from ._values import parse_memory, parse_positive_int
from .detached import (
    START_GRACE,
    ClusterRecord,
    DetachedControl,
    RecordError,
    check_cluster_name,
    client_security,
    generated_name,
    owner_gone,
    probe_record,
    read_record,
    record_root,
    remove_record,
    scheduler_state,
    wait_for_scheduler_file,
)
from .job import PLACEHOLDER_SCHEDULER, Job
from .walltime import keyword_walltime

if TYPE_CHECKING:
    from .cluster import JobQueueCluster, PoolOf
    from .supervisor import JobSupervisor

logger = logging.getLogger(__name__)

__all__ = ["DetachedClusterMixin"]


def _job_number(job_id: str) -> str:
    """The leading number of a batch job id (``1726`` of ``1726.1``, ``330`` of ``330_0``,
    ``65`` of ``65[1].server``); the whole id if it has none."""
    match = re.match(r"\d+", job_id)
    return match.group(0) if match else job_id


def _scheduler_job_class(job_cls: type[Job]) -> type[Job]:
    """``job_cls`` running the detached scheduler instead of workers (same header, prologue
    and submission; no scheduler check)."""

    class SchedulerJob(job_cls):  # type: ignore[valid-type,misc]
        scheduler_tokens: list[str] = []

        def worker_command_tokens(self) -> list[str]:
            return [self.python, "-m", "dask_jobqueue.scheduler_job", *self.scheduler_tokens]

    SchedulerJob.__name__ = SchedulerJob.__qualname__ = f"{job_cls.__name__}Scheduler"
    return SchedulerJob


class DetachedClusterMixin:
    """The name, record, scheduler job, lease and attach of a ``scheduler_in_job`` cluster
    (a part of :class:`~dask_jobqueue.cluster.JobQueueCluster`, not used on its own)."""

    # set by JobQueueCluster.__init__ (and SpecCluster's)
    job_cls: type[Job] | None
    config_name: str
    security: Security
    workers: dict[str, Any]
    worker_spec: dict[str, Any]
    new_spec: dict[str, Any]
    _created: Any
    _i: int
    _name: str
    _detached: DetachedControl | None
    _detached_settings: dict[str, Any]
    _pool_of: PoolOf | None
    _protocol: str | None
    _interface: str | None
    _template_job: Job
    _job_kwargs: dict[str, Any]
    _user_job_kwargs: dict[str, Any]
    _supervisor: JobSupervisor
    _scheduler_job_template: Job | None

    def _detached_control(
        self,
        resolved: dict[str, Any],
        cluster_name: str | None,
        scheduler_memory: str | None,
        attach: ClusterRecord | None,
        pools: Any,
    ) -> DetachedControl:
        """The name, record directory and keep-alive of a ``scheduler_in_job`` cluster
        (checked; nothing created yet)."""
        if self._pool_of is not None:
            raise ValueError("a pool shares its cluster's scheduler: no scheduler_in_job")
        if resolved["pools"] or pools:
            raise ValueError(
                "pools=... together with scheduler_in_job=True is not supported yet: a cluster "
                "attached by name would not find its pools' jobs"
            )
        name = (
            generated_name()
            if cluster_name is None
            else check_cluster_name(cluster_name, "cluster_name")
        )
        keep_alive = resolved["keep_alive"]
        if keep_alive is not None and keep_alive <= 0:
            raise ValueError(f"keep_alive={keep_alive!r} must be a positive duration")
        if scheduler_memory is not None:
            parse_memory(scheduler_memory, "scheduler_memory")
        if resolved["scheduler_cores"] == 0:
            raise ValueError("scheduler_cores=0: the scheduler's job needs a core")
        root = record_root(resolved["record_directory"])
        control = DetachedControl(name, root, keep_alive, attach=attach)
        control.check_name_free()
        return control

    def _detached_security(
        self, security: Any, protocol: str | None, attach: ClusterRecord | None
    ) -> tuple[Security | None, Security | None, str | None]:
        """Security of a ``scheduler_in_job`` cluster: credentials in files of its record
        directory (the scheduler's job and attaching processes read them there)."""
        detached = self._detached
        assert detached is not None
        if attach is not None:
            client = client_security(attach)
            if client is None:
                return None, None, protocol or attach.address.split("://")[0] + "://"
            worker = Security(
                require_encryption=True,
                tls_ca_file=attach.tls.get("ca_file"),
                tls_worker_cert=attach.tls.get("cert"),
                tls_worker_key=attach.tls.get("key"),
            )
            return client, worker, "tls://"
        self._tls_to_write: dict[str, str] = {}
        if security is True:
            try:
                security = Security.temporary()
            except ImportError:
                raise ImportError(
                    "security=True needs the 'cryptography' package: pip install cryptography"
                ) from None
        if not isinstance(security, Security):
            return None, None, protocol
        tls = security.get_tls_config_for_role("worker")
        paths = {}
        for key in ("ca_file", "cert", "key"):
            value = tls.get(key)
            if value and "\n" in str(value):
                path = str(detached.directory / f"tls-{key.replace('_', '-')}.pem")
                self._tls_to_write[path] = value
                paths[key] = path
            elif value:
                paths[key] = str(value)
        self._detached_tls = paths
        worker = Security(
            require_encryption=True,
            tls_ca_file=paths.get("ca_file"),
            tls_worker_cert=paths.get("cert"),
            tls_worker_key=paths.get("key"),
        )
        return security, worker, protocol or "tls://"

    def _scheduler_job(
        self,
        cores: int | None,
        memory: str | None,
        walltime: str | None,
        queue: str | None,
        scheduler_options: dict,
        cluster_id: str,
    ) -> Job:
        """The scheduler's job: a job of this cluster's class running
        :mod:`dask_jobqueue.scheduler_job` (every value checked here, before any submission)."""
        detached = self._detached
        job_cls = self.job_cls
        assert detached is not None and job_cls is not None
        tokens = [
            "--record",
            str(detached.directory),
            "--cluster-id",
            cluster_id,
            "--keep-alive",
            f"{detached.lease_seconds:g}",
            "--start-grace",
            f"{START_GRACE:g}",
        ]
        options = dict(scheduler_options)
        if self._protocol:
            tokens += ["--protocol", self._protocol]
        host = options.pop("host", None)
        interface = options.pop("interface", None) or (None if host else self._interface)
        if host:
            tokens += ["--host", str(host)]
        if interface:
            tokens += ["--interface", str(interface)]
        if options.get("port") is not None:
            tokens += [
                "--port",
                str(parse_positive_int(options.pop("port"), "port", allow_zero=True)),
            ]
        dashboard = options.pop("dashboard_address", None)
        if dashboard is not None:
            tokens += ["--dashboard-address", str(dashboard)]
        options.pop("protocol", None)
        options.pop("security", None)
        if options:
            raise ValueError(
                f"scheduler_options={scheduler_options!r}: with scheduler_in_job only host, "
                "interface, port and dashboard_address are passed to the scheduler's job"
            )
        tls = getattr(self, "_detached_tls", {})
        for key, option in (
            ("ca_file", "--tls-ca-file"),
            ("cert", "--tls-cert"),
            ("key", "--tls-key"),
        ):
            if tls.get(key):
                tokens += [option, tls[key]]
        template = self._template_job
        kwargs = dict(self._job_kwargs)
        kwargs.pop("security", None)
        kwargs.update(
            cores=cores or 1,
            memory=memory or min(template.worker_memory, 4 * 2**30),
            processes=1,
            scheduler_check=False,
        )
        accepted = job_cls.accepted_keywords()
        for keyword, value, option in (
            ("scheduler_walltime", walltime, "walltime"),
            ("scheduler_queue", queue, "queue"),
        ):
            if value is None:
                continue
            if option not in accepted:
                raise ValueError(f"{keyword}={value!r}: {job_cls.__name__} has no {option} keyword")
            kwargs[option] = value
        if "job_name" in accepted:
            kwargs["job_name"] = f"{template.job_name}-scheduler"
        scheduler_job_cls = _scheduler_job_class(job_cls)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                job = scheduler_job_cls(
                    PLACEHOLDER_SCHEDULER, name=f"{self._name_hint()}-scheduler", **kwargs
                )
        except ValueError as exc:
            raise ValueError(f"The scheduler's job (scheduler_* keywords): {exc}") from None
        seconds = keyword_walltime(job)
        if seconds is not None:
            tokens += ["--walltime", f"{seconds:g}"]  # the scheduler reports when it ends
        job.scheduler_tokens = tokens  # type: ignore[attr-defined]
        return job

    def _scheduler_note(self) -> str | None:
        """A line about the scheduler's own job for ``cluster.jobs`` (its id, and when its
        walltime ends), or None without a scheduler job."""
        detached = self._detached
        if detached is None or detached.record is None:
            return None
        job_id = detached.record.scheduler_job_id
        text = f"Scheduler: job {job_id}" if job_id else "Scheduler: a process of its own"
        ends_at = detached.ends_at
        if ends_at is None:
            return f"{text}, no walltime known"
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ends_at))
        return f"{text}, its walltime ends at {when} (the scheduler and every worker end then)"

    def _name_hint(self) -> str:
        detached = self._detached
        return detached.name if detached is not None else "dask"

    @property
    def cluster_name(self) -> str | None:
        """The name another process attaches with (``scheduler_in_job`` clusters only)."""
        return self._detached.name if self._detached is not None else None

    def _connection_args(self) -> dict:
        return self.security.get_connection_args("client")

    async def _start_scheduler(self) -> str:
        """Start (or, when attaching, find) the scheduler; take its lease; return its
        address. Runs as ``RemoteScheduler.start``."""
        detached = self._detached
        assert detached is not None
        if detached.attached is not None:
            record = detached.attached
            state = await scheduler_state(record.address, self._connection_args())
            if state.get("cluster_id") != record.cluster_id:
                raise RecordError(
                    f"Cluster {detached.name!r}: {record.address} is another cluster's "
                    "scheduler now; its record is stale"
                )
            await detached.take_lease(
                record.address, self._connection_args(), force=owner_gone(state.get("owner"))
            )
            return record.address
        directory = detached.create_directory()
        for path, text in getattr(self, "_tls_to_write", {}).items():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
        job = self._scheduler_job_template
        assert job is not None
        engine = self._supervisor.engine
        job_id = await engine.submit(job)
        logger.info("Submitted the scheduler's job %s (cluster %s)", job_id, detached.name)

        async def ended() -> str | None:
            answer = await engine.poll([job_id])
            status = answer.statuses.get(job_id)
            if status is not None and status.state.is_final:
                return f"job {job_id} {status.state} ({status.reason or status.native_state})"
            if job_id in answer.denied:
                return f"job {job_id} is not known to the batch system any more"
            return None

        found = await wait_for_scheduler_file(
            directory, engine.cluster_id, detached.start_timeout, ended
        )
        address = str(found["address"])
        await detached.take_lease(address, self._connection_args(), force=False)
        detached.record = ClusterRecord(
            name=detached.name,
            scheduler=self._registry_name(),
            spec_name=self._name,
            cluster_id=engine.cluster_id,
            address=address,
            dashboard=found.get("dashboard"),
            scheduler_job_id=job_id,
            keep_alive=detached.keep_alive,
            settings=self._record_settings(),
            tls=getattr(self, "_detached_tls", {}),
            created=time.time(),
            directory=directory,
        )
        detached.record.write()
        return address

    def _registry_name(self) -> str:
        """The batch system of this cluster's class, as :mod:`~dask_jobqueue.registry` names
        it (the class an attaching process builds)."""
        for entry in registry.SCHEDULERS:
            if isinstance(self, entry.cluster_class()):
                return entry.name
        raise ValueError(
            f"scheduler_in_job=True needs a cluster class of dask_jobqueue (or a subclass), "
            f"not {type(self).__name__}"
        )

    def _record_settings(self) -> dict[str, Any]:
        """The keywords an attaching process builds its cluster object with (JSON values)."""
        import json

        settings = {"config_name": self.config_name, **self._user_job_kwargs}
        settings.update(self._detached_settings)
        for keyword, value in settings.items():
            try:
                json.dumps(value)
            except TypeError:
                raise ValueError(
                    f"{keyword}={value!r} cannot be kept in the cluster's record (not a JSON "
                    "value): a process attaching later could not use it"
                ) from None
        return settings

    async def _adopt_jobs(self) -> None:
        """Attaching: take over the cluster's jobs, found by their tags (those the owner's
        job table names; a tagged job it does not name was submitted as the owner died and
        is cancelled, since its worker name is unknown)."""
        detached = self._detached
        assert detached is not None and detached.attached is not None
        record = detached.attached
        engine = self._supervisor.engine
        table = {str(k): str(v) for k, v in detached.state.get("jobs", {}).items()}
        tagged = await engine.list_tagged()
        ours = {i for i, tag in tagged.items() if tag.cluster_id == record.cluster_id}
        scheduler_ids = {record.scheduler_job_id, str(detached.state.get("scheduler_job_id"))}
        scheduler_ids.discard("")
        from .engine import BatchSystem

        if engine.dialect.tagging is None and type(engine).list_tagged is BatchSystem.list_tagged:
            # no listing by tag here: the table's jobs that the batch system still runs
            answer = await engine.poll(list(table))
            ours = {i for i, st in answer.statuses.items() if not st.state.is_final}
        if record.scheduler_job_id:
            # cancelled at close (or by the watchdog), like the rest
            engine.adopt([record.scheduler_job_id])
        # A listing may show an array once, under its own number (SGE ``1726`` for the
        # tasks ``1726.1``, Slurm ``330_[0-1]`` while pending): a job of the table whose
        # number is listed is asked about by its own id, and a listed id sharing a number
        # with the table is never taken for an unknown job (cancelling it would end them all).
        table_numbers = {_job_number(i) for i in table}
        listed_numbers = {_job_number(i) for i in ours}
        unknown = sorted(
            i
            for i in ours - set(table) - scheduler_ids
            if _job_number(i) not in table_numbers | {_job_number(j) for j in scheduler_ids}
        )
        live = set(table) & ours
        ask = [i for i in table if i not in ours and _job_number(i) in listed_numbers]
        if ask:
            answer = await engine.poll(ask)
            live |= {i for i, st in answer.statuses.items() if not st.state.is_final}
        if unknown:
            logger.warning(
                "Cluster %s: job(s) %s carry its tag but no name: cancelling them",
                detached.name,
                " ".join(unknown),
            )
            await engine.cancel(unknown)
        address = record.address
        job_cls = self.job_cls
        assert job_cls is not None
        highest = -1
        for job_id, name in sorted(table.items()):
            if job_id not in live:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                job = job_cls(address, name=name, **self._job_kwargs)
            job.job_id = job_id
            job.status = Status.running
            job._cluster = weakref.ref(self)  # type: ignore[attr-defined]
            self._created.add(job)
            self.workers[name] = job
            self.worker_spec[name] = self.new_spec
            self._supervisor.adopt(name, job_id)
            suffix = name.rsplit("-", 1)[-1]
            if suffix.isdigit():
                highest = max(highest, int(suffix))
        self._i = max(self._i, highest + 1)
        logger.info(
            "Attached to cluster %s: %d job(s) adopted", detached.name, len(self.worker_spec)
        )

    def _live_job_table(self) -> dict[str, str]:
        return {r.job_id: r.name for r in self._supervisor.tracker.live}

    @classmethod
    def attach(
        cls,
        name: str,
        record_directory: str | None = None,
        asynchronous: bool = False,
        loop: Any = None,
    ) -> JobQueueCluster:
        """The cluster ``name`` (started with ``scheduler_in_job=True``), from any process
        of its user: same scheduler, its jobs adopted by their tags, scaling from here.

        One process owns a cluster at a time: attaching while the owner still runs is
        refused; once the owner has died (also by ``kill -9``) the lease is taken over.

        Parameters
        ----------
        name : str
            The cluster's ``cluster_name``.
        record_directory : str, optional
            Where the cluster records are (default as for ``record_directory``).
        asynchronous : bool
            Return a cluster to ``await`` (in a running event loop).
        loop : IOLoop, optional
            Event loop to run on.

        Returns
        -------
        JobQueueCluster
            A cluster object of the class that created the cluster.

        Raises
        ------
        ValueError
            No such cluster, a record refused (wrong permissions or owner), a cluster of
            another class, a scheduler that is gone (its record is removed), or a live owner.
        """
        root = record_root(record_directory)
        record = read_record(name, root)
        try:
            entry = registry.get(record.scheduler)
        except ValueError:
            raise RecordError(
                f"Cluster {name!r}: its record names no known batch system ({record.scheduler!r})"
            ) from None
        cluster_cls = entry.cluster_class()
        if cls.job_cls is not None and not issubclass(cluster_cls, cls):  # not the base class
            raise ValueError(
                f"Cluster {name!r} is a {cluster_cls.__name__}, not a {cls.__name__}: use "
                f"{cluster_cls.__name__}.attach({name!r}) or dask_jobqueue.attach({name!r})"
            )
        state = probe_record(record)
        if state is None:
            assert record.directory is not None
            remove_record(record.directory)
            raise RecordError(
                f"Cluster {name!r} is gone: its scheduler {record.address} does not answer "
                "(its keep-alive ran out, or it was closed); its record was removed"
            )
        owner = state.get("owner") or {}
        if state.get("owner_alive") and not owner_gone(owner):
            raise RecordError(
                f"Cluster {name!r} is owned by process {owner.get('pid')} on "
                f"{owner.get('host')}, which is alive: one process scales a cluster at a "
                "time. Close it there, or attach once that process has ended."
            )
        return cluster_cls(
            **record.settings,
            name=record.spec_name,
            scheduler_in_job=True,
            cluster_name=name,
            keep_alive=record.keep_alive,
            record_directory=str(root),
            asynchronous=asynchronous,
            loop=loop,
            _attach=record,
        )

    def __repr__(self) -> str:
        text = super().__repr__()
        if self._detached is not None and text.endswith(")"):
            text = f"{text[:-1]}, cluster_name={self._detached.name!r})"
        return text
