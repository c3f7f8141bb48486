"""A cluster under a site's RPC rate limit: a token-bucket shim in front of the REAL Slurm.

Sites rate-limit ``slurmctld`` per user (a bucket of calls that refills over time); a call
beyond it is rejected. The shim put first on ``PATH`` does the same for ``sbatch``,
``squeue``, ``scancel`` and ``scontrol`` together (``--bucket`` calls, ``--refill`` more per
minute, refilled continuously), logs every call and whether it was let through, and runs the
real command. ``sacct`` talks to ``slurmdbd``, not ``slurmctld``: not limited, but counted.

Each run starts with a full bucket: ``scale(jobs=N)`` with one ``sbatch`` per job, until N
workers are connected, then ``close()``; once without the client's own limit and once with
``command-rate-limit`` (per minute) and ``command-burst`` below the site's. Usage (the real
Slurm of ``ci/slurm/run.sh`` must be running)::

    python benchmarks/rpc_budget.py --jobs 8 --bucket 40 --refill 4
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import dask

LIMITED = ("sbatch", "squeue", "scancel", "scontrol")
COUNTED = ("sacct",)

SHIM = """#!{python}
import fcntl, json, os, sys, time
NAME, REAL, STATE = {name!r}, {real!r}, {state!r}
BUCKET, PER_SECOND, LIMITED = {bucket!r}, {per_second!r}, {limited!r}
with open(STATE + ".lock", "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    now = time.time()
    try:
        with open(STATE) as f:
            tokens, stamp = json.load(f)
    except FileNotFoundError:
        tokens, stamp = BUCKET, now
    tokens = min(BUCKET, tokens + (now - stamp) * PER_SECOND)
    allowed = not LIMITED or tokens >= 1
    if allowed and LIMITED:
        tokens -= 1
    with open(STATE, "w") as f:
        json.dump([tokens, now], f)
    with open(STATE + ".log", "a") as f:
        f.write(f"{{now:.3f}} {{NAME}} {{'ok' if allowed else 'REJECTED'}}\\n")
if not allowed:
    sys.stderr.write(NAME + ": error: RPC rate limit exceeded for this user (shim)\\n")
    sys.exit(1)
os.execv(REAL, [REAL] + sys.argv[1:])
"""


def install_shim(directory: Path, bucket: int, per_minute: float) -> Path:
    bin_dir = directory / "bin"
    bin_dir.mkdir(parents=True)
    state = directory / "bucket.json"
    for name in LIMITED + COUNTED:
        real = shutil.which(name)
        if real is None:
            raise SystemExit(f"no real {name} on PATH: is Slurm running?")
        path = bin_dir / name
        path.write_text(
            SHIM.format(
                python=sys.executable,
                name=name,
                real=real,
                state=str(state),
                bucket=bucket,
                per_second=per_minute / 60.0,
                limited=name in LIMITED,
            )
        )
        path.chmod(0o755)
    return state


def run(jobs: int, bucket: int, refill: float, client_limit: float | None, burst: int) -> dict:
    from dask_jobqueue import SLURMCluster

    with tempfile.TemporaryDirectory(prefix="rpc-budget-") as tmp:
        state = install_shim(Path(tmp), bucket, refill)
        old_path = os.environ["PATH"]
        os.environ["PATH"] = f"{Path(tmp) / 'bin'}{os.pathsep}{old_path}"
        settings = {
            "jobqueue.slurm.job-arrays": "never",
            "jobqueue.slurm.command-rate-limit": client_limit,
            "jobqueue.slurm.command-burst": burst,
            "jobqueue.slurm.log-directory": tmp,
        }
        sized = closed = None
        error = None
        try:
            with dask.config.set(settings):
                started = time.monotonic()
                with SLURMCluster(
                    cores=1,
                    memory="500MB",
                    processes=1,
                    scheduler_options={"dashboard_address": ":0"},
                ) as cluster:
                    try:
                        cluster.scale(jobs=jobs)
                        cluster.wait_for_workers(jobs, timeout=900, progress=False)
                        sized = time.monotonic() - started
                    except Exception as exc:  # what the user would see: report it
                        error = str(exc).strip().splitlines()[-1]
                    close_started = time.monotonic()
                closed = time.monotonic() - close_started
        finally:
            os.environ["PATH"] = old_path
        log = Path(str(state) + ".log").read_text().splitlines()
    calls: dict[str, int] = {}
    rejected = 0
    for line in log:
        _, name, verdict = line.split()
        calls[name] = calls.get(name, 0) + 1
        rejected += verdict == "REJECTED"
    return {
        "sized_s": sized,
        "close_s": closed,
        "calls": calls,
        "rejected": rejected,
        "error": error,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--bucket", type=int, default=40, help="site's burst (calls)")
    parser.add_argument("--refill", type=float, default=4, help="site's refill (calls/minute)")
    parser.add_argument("--client-burst", type=int, default=30)
    args = parser.parse_args()
    print(
        f"site bucket {args.bucket} calls, +{args.refill:g}/minute; {args.jobs} jobs, one "
        "sbatch each",
        flush=True,
    )
    for client_limit in (None, args.refill):
        result = run(args.jobs, args.bucket, args.refill, client_limit, args.client_burst)
        how = (
            "no client limit"
            if client_limit is None
            else f"command-rate-limit {client_limit:g}/min, burst {args.client_burst}"
        )
        calls = ", ".join(f"{k} {v}" for k, v in sorted(result["calls"].items()))
        outcome = (
            f"{args.jobs} workers after {result['sized_s']:.1f} s"
            if result["error"] is None
            else f"FAILED ({result['error']})"
        )
        print(
            f"{how}: {outcome}, close {result['close_s']:.1f} s; calls: {calls}; "
            f"rejected: {result['rejected']}",
            flush=True,
        )


if __name__ == "__main__":
    main()
