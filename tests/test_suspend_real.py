"""Suspended jobs on the real Grid Engine (``-E sge``) and OpenPBS (``-E pbs``, with
``/opt/pbs/bin`` first on PATH): shown as suspended in ``cluster.jobs``, neither a failure nor
replaced, and working again when resumed."""

from __future__ import annotations

import dask
import pytest
from distributed import Client

from dask_jobqueue.tracking import Interruption, JobState

from .scheduler_suite import NO_DASHBOARD, run
from .test_pbs import OPENPBS, real_pbs  # noqa: F401  (fixture)
from .test_sge import SGE
from .waiting import quick_polling, wait_until

SUSPEND = {
    "sge": (["qmod", "-sj"], ["qmod", "-usj"]),
    "pbs": (["qsig", "-s", "suspend"], ["qsig", "-s", "resume"]),
}


def _suspend_and_resume(backend, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    suspend, resume = SUSPEND[backend.name]
    with (
        dask.config.set(quick_polling(backend.name, "500ms", "2s")),
        backend.cluster_cls(**backend.kwargs, scheduler_options=NO_DASHBOARD) as cluster,
        Client(cluster) as client,
    ):
        cluster.scale(1)
        client.wait_for_workers(1, timeout=120)
        (record,) = cluster.jobs
        submits = cluster.command_counts["submit"]
        run([*suspend, record.job_id])
        try:
            assert wait_until(lambda: record.interruption == Interruption.SUSPENDED, 30), (
                cluster.jobs
            )
            assert record.state == JobState.HELD
            assert "suspended" in repr(cluster.jobs)
        finally:
            run([*resume, record.job_id])
        assert wait_until(lambda: record.state == JobState.CONNECTED, 30), cluster.jobs
        assert record.interruption is None and record.requeues == 0
        assert client.submit(lambda x: x + 1, 1, pure=False).result(timeout=30) == 2
        # neither replaced nor cancelled: the same job, one submission
        assert [r.job_id for r in cluster.jobs] == [record.job_id]
        assert cluster.command_counts["submit"] == submits
        assert cluster.command_counts.get("cancel", 0) == 0


@pytest.mark.env("sge")
def test_sge_suspended_job_is_shown_and_kept(tmp_path, monkeypatch):
    _suspend_and_resume(SGE, tmp_path, monkeypatch)


@pytest.mark.env("pbs")
def test_pbs_suspended_job_is_shown_and_kept(real_pbs, tmp_path, monkeypatch):  # noqa: F811
    _suspend_and_resume(OPENPBS, tmp_path, monkeypatch)
