"""The owning process of the scheduler-in-a-job tests: ``python -m tests.detached_owner
MODULE CLASS KWARGS_JSON JOBS [CONFIG_JSON]``.

It builds a ``scheduler_in_job`` cluster from ``KWARGS_JSON``, scales to ``JOBS`` jobs, waits
for their workers, publishes the dataset ``x = [1, 2, 3]``, waits until the scheduler holds
its job table, prints ``READY <scheduler address> <cluster id> <job ids...>`` and sleeps
until it is killed (the tests SIGKILL it).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def spawn(
    module: str, cluster_cls: str, kwargs: dict[str, Any], jobs: int
) -> tuple[subprocess.Popen, list[str]]:
    """Start an owner process (from the checkout) and wait for its READY line; returns it and
    the line's fields after READY: scheduler address, cluster id, job ids. A test fails
    (and the owner is killed) if it prints anything else."""
    import pytest

    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    owner = subprocess.Popen(
        [sys.executable, "-m", "tests.detached_owner", module, cluster_cls, json.dumps(kwargs)]
        + [str(jobs)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert owner.stdout is not None
    line = owner.stdout.readline().split()
    if not line or line[0] != "READY":
        owner.kill()
        pytest.fail(f"the owner did not get ready: {line}")
    return owner, line[1:]


def main() -> None:
    module, name, kwargs, jobs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
    import dask.config

    dask.config.set(json.loads(sys.argv[5]) if len(sys.argv) > 5 else {})
    from distributed import Client

    cluster = getattr(importlib.import_module(module), name)(**kwargs)
    cluster.scale(jobs=jobs)
    cluster.wait_for_workers(jobs * cluster.processes, timeout=180, progress=False)
    client = Client(cluster)
    client.publish_dataset(x=[1, 2, 3])
    ids = sorted(r.job_id for r in cluster._supervisor.tracker.live)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = client.sync(client.scheduler.djq_state)
        if sorted(state["jobs"]) == ids:
            break
        time.sleep(0.2)
    else:
        print("TIMEOUT", flush=True)
        sys.exit(1)
    print("READY", cluster.scheduler_address, cluster._engine.cluster_id, *ids, flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main()
