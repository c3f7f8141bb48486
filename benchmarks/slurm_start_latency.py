"""Slurm's own share of starting jobs, without Dask: seconds from submitting 8 one-CPU
``sleep`` jobs until ``squeue`` shows all 8 running, as one array (``--array=0-7``) and as
8 ``sbatch`` calls, in alternating rounds. Usage (real Slurm running, 8 free CPUs)::

    python benchmarks/slurm_start_latency.py --rounds 6
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time


def until_running(array: bool, name: str, n: int = 8) -> tuple[float, float]:
    """(seconds the submission took, seconds until all ``n`` jobs ran)."""
    started = time.perf_counter()
    common = ["sbatch", "--parsable", "-J", name, "-n1", "--wrap", "sleep 30"]
    if array:
        subprocess.run(
            [*common[:-2], f"--array=0-{n - 1}", *common[-2:]], check=True, capture_output=True
        )
    else:
        for _ in range(n):
            subprocess.run(common, check=True, capture_output=True)
    submitted = time.perf_counter() - started
    while True:
        out = subprocess.run(
            ["squeue", "-h", "-r", "-n", name, "-t", "R", "-o", "%i"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        if len(out.split()) >= n:
            return submitted, time.perf_counter() - started
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    name = f"bench-start-{os.getpid()}"
    print("| round | how | submit | all running |")
    print("|---:|---|---:|---:|")
    for round_ in range(1, args.rounds + 1):
        for array in (True, False):
            try:
                submitted, running = until_running(array, name)
            finally:
                subprocess.run(["scancel", "-n", name], check=False)
            how = "one array of 8" if array else "8 sbatch"
            print(f"| {round_} | {how} | {submitted:.3f} s | {running:.3f} s |", flush=True)
            # let the cancelled jobs finish completing: they hold the CPUs until then
            while subprocess.run(
                ["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True, text=True, check=True
            ).stdout.strip():
                time.sleep(0.1)


if __name__ == "__main__":
    main()
