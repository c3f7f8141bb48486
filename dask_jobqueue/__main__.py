"""Command line: ``python -m dask_jobqueue demo`` runs a small computation end to end."""

from __future__ import annotations

import argparse
import sys
import time


def demo(jobs: int, processes: int) -> int:
    """Start a LocalCluster, compute a dask.array sum on its workers, close everything."""
    import dask.array as da
    from distributed import Client

    from .local import LocalCluster

    started = time.perf_counter()
    cores = processes
    with LocalCluster(cores=cores, memory=f"{cores}GiB", processes=processes) as cluster:
        print(cluster.job_script())
        cluster.scale(jobs=jobs)
        with Client(cluster) as client:
            cluster.wait_for_workers(jobs * processes, timeout=120)
            x = da.ones((4000, 4000), chunks=(500, 500))
            total = int(client.compute(x.sum()).result())
            workers = len(client.scheduler_info()["workers"])
        print(cluster.jobs)
    expected = 4000 * 4000
    print(
        f"sum of ones((4000, 4000)) on {workers} workers in {jobs} jobs = {total} "
        f"({'OK' if total == expected else 'WRONG'}, {time.perf_counter() - started:.1f}s)"
    )
    return 0 if total == expected else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dask_jobqueue")
    sub = parser.add_subparsers(dest="command", required=True)
    demo_parser = sub.add_parser("demo", help="run a small computation on local job processes")
    demo_parser.add_argument("--jobs", type=int, default=2)
    demo_parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args.jobs, args.processes)
    return 2


if __name__ == "__main__":
    sys.exit(main())
