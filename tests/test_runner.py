"""SLURMRunner: roles from the srun environment, and whole runs (fake ranks and real srun)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from dask_jobqueue.runner import BaseRunner, Role, SLURMRunner, WorldTooSmallException

SCRIPT = textwrap.dedent(
    """\
    import sys

    from distributed import Client

    from dask_jobqueue.slurm import SLURMRunner


    def square(x):
        return x * x


    with SLURMRunner(scheduler_file=sys.argv[1]) as runner:
        with Client(runner) as client:
            client.wait_for_workers(runner.n_workers, timeout=60)
            total = client.submit(sum, client.map(square, range(100))).result()
            info = client.scheduler_info()["workers"].values()
            names = sorted(str(w["name"]) for w in info)
            print(f"RESULT {total} workers={','.join(names)}", flush=True)
    print(f"AFTER-BLOCK rank {runner.proc_id}", flush=True)
    """
)
ASYNC_SCRIPT = textwrap.dedent(
    """\
    import asyncio
    import sys

    from distributed import Client

    from dask_jobqueue.runner import SLURMRunner


    def square(x):
        return x * x


    async def main():
        async with SLURMRunner(scheduler_file=sys.argv[1], asynchronous=True) as runner:
            async with Client(runner, asynchronous=True) as client:
                await client.wait_for_workers(runner.n_workers, timeout=60)
                total = await client.submit(sum, client.map(square, range(100)))
                info = client.scheduler_info()["workers"].values()
                names = sorted(str(w["name"]) for w in info)
                print(f"RESULT {total} workers={','.join(names)}", flush=True)
        print(f"AFTER-BLOCK rank {runner.proc_id}", flush=True)


    asyncio.run(main())
    """
)
EXPECTED_TOTAL = sum(i * i for i in range(100))


def env(rank: int, ntasks: int, job_id: str = "77") -> dict[str, str]:
    return {"SLURM_PROCID": str(rank), "SLURM_NTASKS": str(ntasks), "SLURM_JOB_ID": job_id}


def role(runner: BaseRunner) -> Role:
    return asyncio.run(runner.get_role())


def test_roles_by_rank():
    roles = [role(SLURMRunner(environ=env(rank, 5))) for rank in range(5)]
    assert roles == [Role.scheduler, Role.client, Role.worker, Role.worker, Role.worker]
    runner = SLURMRunner(environ=env(3, 5))
    assert runner.n_workers == 3
    assert asyncio.run(runner.get_worker_name()) == 3


def test_roles_without_client():
    roles = [role(SLURMRunner(environ=env(rank, 2), client=False)) for rank in range(2)]
    assert roles == [Role.scheduler, Role.worker]


def test_world_too_small():
    with pytest.raises(WorldTooSmallException, match=r"at least 3 tasks .* has 2: .*srun -n 3"):
        SLURMRunner(environ=env(0, 2))
    with pytest.raises(WorldTooSmallException, match="at least 2 tasks"):
        SLURMRunner(environ=env(0, 1), client=False)
    assert issubclass(WorldTooSmallException, RuntimeError)


def test_needs_the_srun_environment():
    with pytest.raises(RuntimeError, match="SLURM_PROCID is not set"):
        SLURMRunner(environ={"SLURM_NTASKS": "4", "SLURM_JOB_ID": "1"})
    with pytest.raises(RuntimeError, match="must be integers"):
        SLURMRunner(environ=env(0, 4) | {"SLURM_NTASKS": "four"})


def test_scheduler_file_gets_the_job_id_and_is_shared():
    runner = SLURMRunner(environ=env(0, 4, "1234"), scheduler_file="/shared/s-{job_id}.json")
    assert runner.scheduler_file == "/shared/s-1234.json"
    assert runner.scheduler_options["scheduler_file"] == "/shared/s-1234.json"
    assert runner.worker_options["scheduler_file"] == "/shared/s-1234.json"
    default = SLURMRunner(environ=env(0, 4, "99"))
    assert default.scheduler_file == "scheduler-99.json"


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="client=True needs scheduler=True"):
        SLURMRunner(environ=env(0, 4), scheduler=False)
    with pytest.raises(ValueError, match="scheduler_options"):
        SLURMRunner(environ=env(0, 4), scheduler_options="x")
    with pytest.raises(ValueError, match="worker_class"):
        SLURMRunner(environ=env(0, 4), worker_class=5)


def test_client_reads_the_scheduler_address(tmp_path):
    path = tmp_path / "scheduler-5.json"
    runner = SLURMRunner(
        environ=env(1, 4, "5"), scheduler_file=str(tmp_path / "scheduler-{job_id}.json")
    )

    async def main() -> str:
        waiting = asyncio.ensure_future(runner.get_scheduler_address())
        await asyncio.sleep(0.3)
        assert not waiting.done()  # no file yet: keeps waiting
        path.write_text(json.dumps({"address": "tcp://10.0.0.1:8786"}))
        return await asyncio.wait_for(waiting, 5)

    assert asyncio.run(main()) == "tcp://10.0.0.1:8786"


def test_importable_where_dask_jobqueue_0_9_has_them():
    import dask_jobqueue.runner
    import dask_jobqueue.slurm

    assert dask_jobqueue.slurm.SLURMRunner is SLURMRunner
    assert dask_jobqueue.slurm.WorldTooSmallException is WorldTooSmallException
    assert issubclass(SLURMRunner, dask_jobqueue.runner.BaseRunner)
    assert {r.value for r in Role} == {"scheduler", "client", "worker"}


def _check_outputs(outputs: list[str], n_workers: int) -> None:
    client_lines = [line for out in outputs for line in out.splitlines() if "RESULT" in line]
    expected_names = ",".join(str(rank) for rank in range(2, 2 + n_workers))
    assert client_lines == [f"RESULT {EXPECTED_TOTAL} workers={expected_names}"]
    after = [line for out in outputs for line in out.splitlines() if "AFTER-BLOCK" in line]
    assert after == ["AFTER-BLOCK rank 1"]  # the block's code ran on the client rank only


@pytest.mark.parametrize("source", [SCRIPT, ASYNC_SCRIPT], ids=["with", "async-with"])
def test_four_fake_ranks_compute_and_all_exit(tmp_path, source):
    script = tmp_path / "run.py"
    script.write_text(source)
    job_id = uuid.uuid4().hex[:8]
    scheduler_file = tmp_path / "scheduler-{job_id}.json"
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(scheduler_file)],
            env={**os.environ, **env(rank, 4, job_id)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(4)
    ]
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err[-3000:]
            outputs.append(out)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    _check_outputs(outputs, n_workers=2)
    assert not Path(str(scheduler_file).format(job_id=job_id)).exists()


@pytest.mark.env("slurm")
def test_srun_four_tasks(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    name = f"runner-{uuid.uuid4().hex[:6]}"
    result = subprocess.run(
        ["srun", "-n", "4", "-J", name, "-t", "5", sys.executable, str(script),
         str(tmp_path / "scheduler-{job_id}.json")],
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    _check_outputs([result.stdout], n_workers=2)
    assert not list(tmp_path.glob("scheduler-*.json"))  # the scheduler removed its file
    # Every task has exited: the allocation leaves the queue (after a moment in COMPLETING).
    deadline = time.monotonic() + 60
    while True:
        queue = subprocess.run(
            ["squeue", "-h", "-n", name, "-o", "%T"], capture_output=True, text=True
        ).stdout.split()
        if not queue or time.monotonic() > deadline:
            break
        assert set(queue) <= {"COMPLETING"}, queue
        time.sleep(1)
    assert queue == []


async def test_async_comm_world_runs_a_runner_cluster_in_one_event_loop():
    """Four AsyncRunners sharing an AsyncCommWorld: the first is the scheduler, the second
    the client (which computes on the two workers), the others workers; leaving the client's
    block ends every rank, servers by SystemExit(0) as their process would."""
    from distributed import Client

    from dask_jobqueue.runner import AsyncCommWorld, AsyncRunner

    world = AsyncCommWorld()
    computed = []

    async def rank() -> tuple[str, object]:
        runner = AsyncRunner(world)
        try:
            async with runner:
                async with Client(runner, asynchronous=True) as client:
                    await client.wait_for_workers(2)
                    names = await client.run(lambda dask_worker: dask_worker.name)
                    computed.append(sorted(names.values()))
                    computed.append(await client.submit(lambda x: x + 1, 41))
        except SystemExit as exc:
            return runner.role.value, exc.code
        return runner.role.value, "left the block"

    # asyncio.wait_for only turns a hang into a failure; nothing here is timed
    outcomes = await asyncio.wait_for(asyncio.gather(*(rank() for _ in range(4))), 120)
    assert sorted(outcomes) == [
        ("client", "left the block"),
        ("scheduler", 0),
        ("worker", 0),
        ("worker", 0),
    ]
    assert computed == [[2, 3], 42]
    assert world.scheduler_address is not None and world.ranks == 4


def test_async_runner_needs_a_comm_world_and_an_event_loop():
    from dask_jobqueue.runner import AsyncCommWorld, AsyncRunner

    with pytest.raises(ValueError, match="commworld must be an AsyncCommWorld"):
        AsyncRunner(None)
    with pytest.raises(ValueError, match="use `async with`"):
        AsyncRunner(AsyncCommWorld(), asynchronous=False)
