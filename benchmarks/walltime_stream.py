"""Workers through walltimes: a stream of one-second tasks on a real batch system.

``scale(2)`` (or ``adapt``) with a 2-minute walltime and a steady stream of one-second tasks
for several walltimes; prints the longest time without any connected worker and the longest
gap between two task completions, as JSON. Usage (Slurm or SGE running)::

    python benchmarks/walltime_stream.py --backend slurm --seconds 300
    PYTHONPATH=/path/to/other/version python benchmarks/walltime_stream.py --backend sge

Only public API is used, so it measures other versions of the library too.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time

from distributed import Client

# loaded by path: the library measured is whichever one PYTHONPATH selects, not this tree's
_HELPER = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "tests", "lifetime_stream.py"
)
_spec = importlib.util.spec_from_file_location("lifetime_stream", _HELPER)
lifetime_stream = importlib.util.module_from_spec(_spec)
sys.modules["lifetime_stream"] = lifetime_stream
_spec.loader.exec_module(lifetime_stream)
run_stream = lifetime_stream.run_stream


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["slurm", "sge"], default="slurm")
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--walltime", default="00:02:00")
    parser.add_argument("--adapt", action="store_true", help="adapt(minimum=2, maximum=4)")
    args = parser.parse_args()
    if args.backend == "slurm":
        from dask_jobqueue import SLURMCluster as Cluster
    else:
        from dask_jobqueue import SGECluster as Cluster
    os.chdir(tempfile.mkdtemp(prefix="walltime-stream-"))  # job output files land here
    started = time.monotonic()
    with (
        Cluster(
            cores=1,
            memory="1GB",
            processes=1,
            walltime=args.walltime,
            job_name="wt-stream",
            scheduler_options={"dashboard_address": ":0"},
        ) as cluster,
        Client(cluster) as client,
    ):
        if args.adapt:
            cluster.adapt(minimum=2, maximum=4, interval="1s")
        else:
            cluster.scale(2)
        client.wait_for_workers(2, timeout=120)
        result = run_stream(client, args.seconds)
        jobs = getattr(cluster, "jobs", None)
        summary = {
            "library": os.path.dirname(sys.modules[Cluster.__module__].__file__),
            "backend": args.backend,
            "walltime": args.walltime,
            "mode": "adapt(2, 4)" if args.adapt else "scale(2)",
            **result.as_dict(),
            "jobs_submitted": len(jobs) if jobs is not None else None,
            "total_s": round(time.monotonic() - started, 1),
        }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
