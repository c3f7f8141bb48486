"""A client process for the orphan tests: ``python -m tests.orphan_client MODULE CLASS JOBS
KWARGS_JSON [CONFIG_JSON [CHILD_JSON]]``.

It builds the cluster, scales to ``JOBS`` jobs, waits until all are submitted, prints one line
``READY <cluster_id> <watchdog pid or 0> <job ids...>`` and sleeps until it is killed. With
``CHILD_JSON`` (``{"argv": [...], "input": "..."}``) it first waits for a worker and runs that
command there (e.g. a ``qsub -V`` submitting a job of the worker's own), then prints a second
line ``CHILD <exit status> <stdout or stderr>``.
"""

from __future__ import annotations

import importlib
import json
import sys
import time


def main() -> None:
    module, name, jobs, kwargs = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    config = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
    child = json.loads(sys.argv[6]) if len(sys.argv) > 6 else None
    import dask.config

    dask.config.set(config)
    cls = getattr(importlib.import_module(module), name)
    cluster = cls(**json.loads(kwargs))
    cluster.scale(jobs=jobs)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ids = [r.job_id for r in cluster.jobs if r.job_id]
        if len(ids) >= jobs:
            break
        time.sleep(0.2)
    else:
        print("TIMEOUT", flush=True)
        sys.exit(1)
    dog = cluster._watchdog.process.pid if cluster._watchdog is not None else 0
    print("READY", cluster._engine.cluster_id, dog, *ids, flush=True)
    if child is not None:
        print("CHILD", *run_in_a_worker(cluster, child), flush=True)
    while True:
        time.sleep(60)


def run_in_a_worker(cluster, child: dict) -> tuple[int, str]:
    """Run ``child["argv"]`` in one of the cluster's workers: its exit status and output."""
    import subprocess

    from distributed import Client

    with Client(cluster) as client:
        client.wait_for_workers(1, timeout=120)
        done = client.submit(
            subprocess.run,
            child["argv"],
            input=child.get("input"),
            capture_output=True,
            text=True,
            timeout=60,
            pure=False,
        ).result(timeout=90)
    return done.returncode, (done.stdout.strip() or done.stderr.strip()).replace("\n", " ")


if __name__ == "__main__":
    main()
