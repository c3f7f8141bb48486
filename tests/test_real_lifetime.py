"""Walltimes, status outages and close, on the REAL Slurm and Grid Engine.

* ``scale(2)`` with a 2-minute walltime and a stream of one-second tasks for 5 minutes: every
  task completes, no batch stalls, never (more than a moment) without a connected worker;
* ``adapt()`` through a walltime: the replacement is neither counted as extra capacity nor
  cancelled;
* the status command failing for ~40 s: nothing replaced, no worker lost, one warning;
* ``close()`` with connected workers: no error and no traceback in the logs, jobs gone.

The before/after numbers are in ``docs/walltime.rst`` (``benchmarks/walltime_stream.py``).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time

import dask
import pytest
from distributed import Client

from dask_jobqueue import JobState

from .fakecmd import fake_commands  # noqa: F401  (fixture)
from .lifetime_stream import longest_zero_run, run_stream, scheduler_worker_count
from .scheduler_suite import NO_DASHBOARD, wait_until
from .test_real_faults import SGE_COMMANDS, SLURM_COMMANDS, Commands, in_queue

REAL_STATUS = {name: shutil.which(name) or name for name in ("squeue", "qstat")}
OUTAGE_ERRORS = {
    "squeue": "squeue: error: Socket timed out on send/recv operation",
    "qstat": "error: commlib error: got select error (Connection refused)",
}


@pytest.fixture(
    params=[
        pytest.param(SLURM_COMMANDS, marks=pytest.mark.env("slurm"), id="slurm"),
        pytest.param(SGE_COMMANDS, marks=pytest.mark.env("sge"), id="sge"),
    ]
)
def system(request, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # job output files land here
    return request.param


def make_cluster(system: Commands, **kwargs):
    options = {
        **system.backend.kwargs,
        "job_name": "djq-walltime-test",
        "scheduler_options": NO_DASHBOARD,
        **kwargs,
    }
    return system.backend.cluster_cls(**options)


class LogCapture(logging.Handler):
    """Every record of the given loggers, whatever their propagation settings."""

    def __init__(self, names=("distributed", "dask_jobqueue", "tornado", "asyncio")):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.loggers = [logging.getLogger(n) for n in names]

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self):
        self._levels = [logger.level for logger in self.loggers]
        for logger in self.loggers:
            logger.addHandler(self)
            if logger.name == "dask_jobqueue":  # its INFO lines too (distributed's stay as set)
                logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc):
        for logger, level in zip(self.loggers, self._levels, strict=True):
            logger.removeHandler(self)
            logger.setLevel(level)

    def at_least(self, level: int) -> list[logging.LogRecord]:
        return [r for r in self.records if r.levelno >= level]


def test_scale_keeps_workers_through_walltimes(system):
    with make_cluster(system, walltime="00:02:00") as cluster, Client(cluster) as client:
        cluster.scale(2)
        client.wait_for_workers(2, timeout=120)
        result = run_stream(client, seconds=300)
        print("walltime stream", system.backend.name, result.as_dict())
        assert result.errors == []
        assert result.completed == result.submitted > 250
        assert result.longest_zero_workers < 1.0, result.as_dict()
        assert result.longest_gap < 5.0, result.as_dict()
        ended = [r for r in cluster.jobs if r.state.is_final]
        # 5 minutes of 2-minute jobs: each of the first jobs was retired and replaced
        assert len(ended) >= 4, repr(cluster.jobs)
        # retired by the cluster ahead of the walltime: not killed, not failed
        assert all(r.state == JobState.CANCELLED and r.ever_connected for r in ended), repr(
            cluster.jobs
        )
        ids = {r.job_id for r in cluster.jobs}
    assert wait_until(lambda: not in_queue(system, ids), 60), in_queue(system, ids)


def test_adapt_through_a_walltime(system):
    with make_cluster(system, walltime="00:02:00") as cluster, Client(cluster) as client:
        cluster.adapt(minimum=2, maximum=3, interval="1s", wait_count=3)
        client.wait_for_workers(2, timeout=120)
        result = run_stream(client, seconds=150, in_flight=2)
        print("adaptive walltime stream", system.backend.name, result.as_dict())
        assert result.errors == []
        assert result.completed == result.submitted
        assert result.longest_zero_workers < 1.0, result.as_dict()
        ended = [r for r in cluster.jobs if r.state.is_final]
        assert len(ended) >= 2, repr(cluster.jobs)
        # no replacement was cancelled by adapt before its workers came (none counted as
        # spare capacity), and none was killed at its walltime
        assert all(r.ever_connected for r in ended), repr(cluster.jobs)
        assert not [r for r in ended if r.state == JobState.TIMED_OUT], repr(cluster.jobs)
        ids = {r.job_id for r in cluster.jobs}
    assert wait_until(lambda: not in_queue(system, ids), 60), in_queue(system, ids)


def test_status_outage_changes_nothing(system, fake_commands):  # noqa: F811
    name = system.backend.name
    with (
        dask.config.set(
            {f"jobqueue.{name}.poll-interval": "1s", f"jobqueue.{name}.poll-interval-max": "2s"}
        ),
        LogCapture(("dask_jobqueue",)) as logs,
    ):
        fake_commands.wrap(system.submit)
        with make_cluster(system) as cluster, Client(cluster) as client:
            cluster.scale(2)
            client.wait_for_workers(2, timeout=120)
            ids = {r.job_id for r in cluster.jobs}
            submits_before_outage = fake_commands.calls(system.submit)  # 1 (an array) or 2
            samples: list[tuple[float, int]] = []
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    samples.append((time.monotonic(), scheduler_worker_count(client)))
                    stop.wait(0.25)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            before = fake_commands.calls(system.status)
            # ~40 s of failing status commands (1-2 s between polls)
            fake_commands.fail_times(system.status, 25, OUTAGE_ERRORS[system.status], rc=1)
            assert wait_until(lambda: fake_commands.calls(system.status) >= before + 25, 90)
            outage_end = time.monotonic()
            assert wait_until(
                lambda: any("work again after" in r.getMessage() for r in logs.records), 30
            )
            stop.set()
            sampler.join(5)
            assert fake_commands.calls(system.submit) == submits_before_outage
            assert {r.job_id for r in cluster.jobs} == ids
            assert all(r.state == JobState.CONNECTED for r in cluster.jobs), repr(cluster.jobs)
            assert min(n for _, n in samples) == 2, "a worker was lost during the outage"
            assert samples[-1][0] >= outage_end - 1
            assert client.submit(lambda: 41 + 1).result(timeout=30) == 42
    warnings = [r for r in logs.at_least(logging.WARNING) if "status query" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    recovered = [r.getMessage() for r in logs.records if "work again after" in r.getMessage()]
    assert len(recovered) == 1, recovered
    assert wait_until(lambda: not in_queue(system, ids), 60), in_queue(system, ids)


def test_close_with_connected_workers_is_clean(system, capfd):
    with LogCapture() as logs:
        cluster = make_cluster(system)
        client = Client(cluster)
        cluster.scale(2)
        client.wait_for_workers(2, timeout=120)
        ids = {r.job_id for r in cluster.jobs}
        client.close()
        cluster.close()
    errors = logs.at_least(logging.ERROR)
    assert not errors, [r.getMessage() for r in errors]
    tracebacks = [r for r in logs.records if r.exc_info]
    assert not tracebacks, [(r.name, r.getMessage()) for r in tracebacks]
    assert "Traceback" not in capfd.readouterr().err
    assert wait_until(lambda: not in_queue(system, ids), 30), in_queue(system, ids)


def test_longest_zero_run():
    samples = [(0.0, 2), (1.0, 0), (1.25, 0), (1.5, 1), (2.0, 0), (4.0, 0)]
    assert longest_zero_run(samples) == 2.0
