"""``dask-jobqueue list``, ``attach NAME`` and ``close NAME``: this user's clusters started
with ``scheduler_in_job=True``, from their records (:mod:`dask_jobqueue.detached`)."""

from __future__ import annotations

import time
from collections.abc import Callable

from .detached import (
    ClusterRecord,
    RecordError,
    list_records,
    probe_record,
    read_record,
    record_root,
    remove_record,
)

__all__ = ["list_clusters", "attach_help", "close_cluster"]


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def list_clusters(record_directory: str | None, out: Callable[[str], None] = print) -> int:
    """Print this user's live clusters; report dead records and remove them (a dead
    cluster's name is free again, its record never reused). Returns the exit status."""
    root = record_root(record_directory)
    rows = [("NAME", "SCHEDULER", "AGE", "WORKERS", "JOBS", "KEEP-ALIVE")]
    notes = []
    now = time.time()
    for name, entry in list_records(root):
        if isinstance(entry, RecordError):
            notes.append(f"{name}: {entry}")
            continue
        state = probe_record(entry)
        if state is None:
            assert entry.directory is not None
            remove_record(entry.directory)
            notes.append(
                f"{name}: dead (scheduler {entry.address} does not answer); record removed"
            )
            continue
        jobs = len(state.get("jobs", {})) + 1  # and the scheduler's job
        keep = "-" if entry.keep_alive is None else f"{entry.keep_alive:g}s"
        rows.append(
            (
                name,
                entry.address,
                _age(now - entry.created),
                str(state.get("workers", "?")),
                str(jobs),
                keep,
            )
        )
    if len(rows) == 1:
        out(f"No live cluster in {root}")
    else:
        widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
        for row in rows:
            out("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    for note in notes:
        out(note)
    return 0


def _live_record(name: str, record_directory: str | None) -> ClusterRecord:
    record = read_record(name, record_root(record_directory))
    if probe_record(record) is None:
        assert record.directory is not None
        remove_record(record.directory)
        raise RecordError(
            f"Cluster {name!r} is gone: its scheduler {record.address} does not answer; "
            "its record was removed"
        )
    return record


def attach_help(name: str, record_directory: str | None, out: Callable[[str], None] = print) -> int:
    """Print how to connect to the cluster ``name``."""
    record = _live_record(name, record_directory)
    from .registry import get

    cluster_cls = get(record.scheduler).cluster
    out(f"Cluster {name!r} ({cluster_cls}), scheduler job {record.scheduler_job_id}")
    out(f"  scheduler: {record.address}")
    if record.dashboard:
        out(f"  dashboard: {record.dashboard}")
    out("To own it (scale, adapt, close) from Python:")
    out(f"  cluster = dask_jobqueue.attach({name!r})")
    out("To compute only:")
    if record.tls:
        out(
            "  client = distributed.Client(cluster)  # TLS: attach, or a Security with "
            f"{record.tls.get('ca_file')}, {record.tls.get('cert')}, {record.tls.get('key')}"
        )
    else:
        out(f"  client = distributed.Client({record.address!r})")
    host_port = record.address.split("://", 1)[-1]
    port = host_port.rsplit(":", 1)[-1]
    out("From a laptop, through SSH (then connect to the scheduler at localhost):")
    out(f"  ssh -N -L {port}:{host_port} <login node>")
    return 0


def close_cluster(
    name: str, record_directory: str | None, out: Callable[[str], None] = print
) -> int:
    """End the cluster ``name``: attach (its owner must be gone) and close."""
    record = _live_record(name, record_directory)
    from .cluster import JobQueueCluster

    cluster = JobQueueCluster.attach(name, record_directory=record_directory)
    jobs = len(cluster.worker_spec)
    cluster.close()
    out(f"Closed cluster {name!r}: scheduler {record.address}, {jobs} worker job(s) cancelled")
    return 0
