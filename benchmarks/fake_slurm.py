"""A file-backed fake Slurm for scale benchmarks: ``sbatch``, ``squeue``, ``scancel``,
``sacct`` and ``scontrol`` in one small program, chosen by the name it is called under.

Jobs never run: every job (or array task) stays ``PENDING`` until it is cancelled, so a
benchmark measures the client's bookkeeping for tens of thousands of tracked jobs without a
machine that could run them. The queue is one text file (``$FAKE_SLURM_DIR/queue``, a line
``ARRAY_ID|TASK`` per job, ``TASK`` empty for a single job) guarded by ``flock``; job ids come
from ``$FAKE_SLURM_DIR/next``. ``$FAKE_SLURM_MAX_ARRAY`` is the ``MaxArraySize`` reported by
``scontrol show config`` (default 1001, Slurm's default).

Usage::

    bin_dir = install(tmp_dir)        # bin_dir/sbatch, squeue, ... (symlinks to this file)
    os.environ["PATH"] = f"{bin_dir}:{os.environ['PATH']}"
    os.environ["FAKE_SLURM_DIR"] = str(tmp_dir)

Only what ``dask_jobqueue``'s Slurm dialect runs is understood; anything else exits 1.
"""

from __future__ import annotations

import fcntl
import os
import re
import sys
from pathlib import Path

COMMANDS = ("sbatch", "squeue", "scancel", "sacct", "scontrol")


def install(directory: str | os.PathLike[str]) -> Path:
    """Create ``directory/bin`` with the fake commands (run with this Python); return it."""
    bin_dir = Path(directory) / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    launcher = bin_dir / "fake_slurm"
    launcher.write_text(f"#!{sys.executable}\n" + Path(__file__).read_text())
    launcher.chmod(0o755)
    for name in COMMANDS:
        link = bin_dir / name
        if not link.exists():
            link.symlink_to(launcher.name)
    return bin_dir


class _Queue:
    """The queue file, locked for the life of the object."""

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = open(directory / "lock", "a")  # noqa: SIM115 (held until close)
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        path = directory / "queue"
        self.lines = path.read_text().splitlines() if path.exists() else []

    def next_id(self) -> int:
        path = self.directory / "next"
        job_id = int(path.read_text()) if path.exists() else 1000
        path.write_text(str(job_id + 1))
        return job_id

    def save(self) -> None:
        tmp = self.directory / "queue.tmp"
        tmp.write_text("".join(line + "\n" for line in self.lines))
        os.replace(tmp, self.directory / "queue")

    def close(self) -> None:
        self._lock.close()


def sbatch(args: list[str], queue: _Queue) -> int:
    array = next((a.split("=", 1)[1] for a in args if a.startswith("--array=")), None)
    job_id = queue.next_id()
    if array is None:
        queue.lines.append(f"{job_id}|")
    else:
        first, _, last = array.partition("-")
        queue.lines += [f"{job_id}|{i}" for i in range(int(first), int(last or first) + 1)]
    queue.save()
    print(f"Submitted batch job {job_id}")
    return 0


def squeue(args: list[str], queue: _Queue) -> int:
    wanted = None
    if "-j" in args:
        wanted = set(args[args.index("-j") + 1].split(","))
    out = []
    if "-O" in args:  # the status listing: JobID|ArrayJobID|ArrayTaskID|State|Reason|exit_code|
        for line in queue.lines:
            array_id, task = line.split("|")
            if wanted is not None and array_id not in wanted:
                continue
            raw = f"{array_id}_{task}" if task else array_id
            out.append(f"{raw}|{array_id}|{task or 'N/A'}|PENDING|Resources|0|")
    else:  # the tag listing (-o %i|%k): these jobs carry no tag
        for line in queue.lines:
            array_id, task = line.split("|")
            out.append(f"{array_id}_{task}|" if task else f"{array_id}|")
    sys.stdout.write("".join(line + "\n" for line in out))
    return 0


def scancel(args: list[str], queue: _Queue) -> int:
    gone: set[str] = set()
    for arg in args:
        match = re.fullmatch(r"(\d+)_\[([\d,\-]+)\]", arg)
        if match:
            for span in match.group(2).split(","):
                first, _, last = span.partition("-")
                gone.update(
                    f"{match.group(1)}|{i}" for i in range(int(first), int(last or first) + 1)
                )
        elif "_" in arg:
            gone.add(arg.replace("_", "|"))
        else:
            gone.add(f"{arg}|")
            gone.update(line for line in queue.lines if line.startswith(f"{arg}|"))
    queue.lines = [line for line in queue.lines if line not in gone]
    queue.save()
    return 0


def scontrol(args: list[str], queue: _Queue) -> int:
    if args[:2] == ["show", "config"]:
        print(f"MaxArraySize = {os.environ.get('FAKE_SLURM_MAX_ARRAY', '1001')}")
        print("MaxJobCount = 1000000")
        return 0
    if args[:2] == ["show", "partition"]:
        print("PartitionName=fake Default=YES DefaultTime=NONE MaxTime=UNLIMITED State=UP")
        return 0
    return 1


def main() -> int:
    name = Path(sys.argv[0]).name
    args = sys.argv[1:]
    if name == "sacct":
        return 0  # no accounting: jobs that left the queue are simply not listed
    commands = {"sbatch": sbatch, "squeue": squeue, "scancel": scancel, "scontrol": scontrol}
    if name not in commands:
        print(f"fake_slurm: unknown command {name}", file=sys.stderr)
        return 1
    queue = _Queue(Path(os.environ["FAKE_SLURM_DIR"]))
    try:
        return commands[name](args, queue)
    finally:
        queue.close()


if __name__ == "__main__":
    sys.exit(main())
