"""scheduler_in_job, cluster names and records, attach, keep_alive (issue 17) on the local
backend: the scheduler is a detached local process, the jobs local process sessions."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from distributed import Client

import dask_jobqueue
from dask_jobqueue.cli import main as cli_main
from dask_jobqueue.detached import RECORD_FILE, RecordError, read_record
from dask_jobqueue.local import LocalCluster, LocalJob, LocalProcesses
from dask_jobqueue.scheduler_job import HEARTBEAT_TIMEOUT, Lease

from .detached_owner import spawn
from .waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
KWARGS = {"cores": 1, "memory": "2GB", "scheduler_in_job": True}


def tagged(cluster_id: str) -> set[str]:
    """Live local job sessions carrying a tag of ``cluster_id`` (workers and scheduler)."""
    engine = LocalProcesses(LocalJob(cores=1, memory="2GB"))
    found = asyncio.run(engine.list_tagged())
    return {pid for pid, tag in found.items() if tag.cluster_id == cluster_id}


def start_owner(records: Path, name: str, keep_alive: str | None, jobs: int = 2, **extra):
    """A process owning a new cluster ``name``; returns it and its READY fields."""
    kwargs = {**KWARGS, "cluster_name": name, "record_directory": str(records), **extra}
    if keep_alive is not None:
        kwargs["keep_alive"] = keep_alive
    owner, fields = spawn("dask_jobqueue.local", "LocalCluster", kwargs, jobs)
    return owner, fields[0], fields[1], fields[2:]


def kill(owner: subprocess.Popen) -> None:
    owner.send_signal(signal.SIGKILL)
    owner.wait(10)


# ---------------------------------------------------------------------------- the lease


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lease_one_owner_at_a_time_and_keep_alive():
    clock = Clock()
    lease = Lease("0123abcd", keep_alive=60.0, start_grace=30.0, clock=clock)
    clock.now += 29
    assert not lease.expired()
    assert lease.acquire("a", {"pid": 1, "host": "h"})
    assert not lease.acquire("b", {"pid": 2, "host": "h"}), "a renews: b must not take over"
    assert lease.update_jobs("a", {"11": "c-0"}, [])
    assert not lease.update_jobs("b", {"12": "c-1"}, []), "only the owner changes the table"
    clock.now += HEARTBEAT_TIMEOUT - 1
    assert lease.renew("a") and not lease.renew("b")
    assert lease.acquire("b", {"pid": 2, "host": "h"}, force=True), "a known-dead owner"
    assert not lease.renew("a"), "a lost the lease"
    clock.now += HEARTBEAT_TIMEOUT + 1
    assert not lease.owner_alive() and not lease.expired()
    assert lease.acquire("c", {"pid": 3, "host": "h"}), "b stopped renewing: c takes over"
    clock.now += 60.5
    assert lease.expired()
    assert lease.state()["jobs"] == {"11": "c-0"}
    assert "token" not in lease.state()["owner"]


def test_released_lease_is_free_at_once_and_keeps_its_keep_alive():
    clock = Clock()
    lease = Lease("0123abcd", keep_alive=60.0, clock=clock)
    assert lease.acquire("a", {"pid": 1, "host": "h"})
    clock.now += 1
    lease.release("b")  # not the owner: nothing happens
    assert lease.owner_alive()
    lease.release("a")
    assert not lease.owner_alive() and not lease.renew("a")
    assert lease.acquire("b", {"pid": 2, "host": "h"})
    clock.now += 59
    assert not lease.expired()
    lease.release("b")
    clock.now += 2
    assert lease.expired(), "keep_alive counts from the last renewal"


def test_lease_expires_when_no_owner_ever_comes():
    clock = Clock()
    lease = Lease("0123abcd", keep_alive=600.0, start_grace=30.0, clock=clock)
    clock.now += 30.5
    assert lease.expired()


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"keep_alive": "1 minute"}, "keep_alive='1 minute'.*scheduler_in_job=True"),
        ({"cluster_name": "a"}, "cluster_name='a'.*scheduler_in_job=True"),
        ({"scheduler_cores": 2}, "scheduler_cores=2.*scheduler_in_job=True"),
        ({"scheduler_in_job": True, "cluster_name": "a b"}, "cluster_name='a b'"),
        ({"scheduler_in_job": True, "cluster_name": "../x"}, "cluster_name='../x'"),
        ({"scheduler_in_job": True, "keep_alive": "soon"}, "keep_alive"),
        ({"scheduler_in_job": True, "scheduler_memory": "lots"}, "scheduler_memory"),
        ({"scheduler_in_job": True, "scheduler_cores": 0}, "scheduler_cores=0"),
        ({"scheduler_in_job": True, "pools": {"big": {"cores": 2}}}, "pools"),
        (
            {"scheduler_in_job": True, "scheduler_options": {"idle_timeout": "1h"}},
            "scheduler_options",
        ),
        ({"scheduler_in_job": True, "job_script_prologue": [object()]}, "job_script_prologue"),
    ],
)
def test_bad_keywords_refused_before_anything_runs(tmp_path, kwargs, match):
    records = tmp_path / "records"
    with pytest.raises(ValueError, match=match):
        LocalCluster(cores=1, memory="2GB", record_directory=str(records), **kwargs)
    assert not records.exists() or not any(records.iterdir())


def test_attach_unknown_name_names_it(tmp_path):
    with pytest.raises(ValueError, match="No cluster named 'nope'"):
        dask_jobqueue.attach("nope", record_directory=str(tmp_path))
    with pytest.raises(ValueError, match="name='x/y'"):
        LocalCluster.attach("x/y", record_directory=str(tmp_path))


def _fake_record(directory: Path, **changes) -> None:
    directory.parent.mkdir(mode=0o700, exist_ok=True)
    directory.mkdir(mode=0o700)
    record = {
        "name": directory.name,
        "scheduler": "local",
        "spec_name": "s",
        "cluster_id": "0123abcd",
        "address": "tcp://127.0.0.1:9",
        **changes,
    }
    path = directory / RECORD_FILE
    path.write_text(json.dumps(record))
    path.chmod(0o600)


@pytest.mark.parametrize("what", ["file mode", "directory mode", "file owner", "root mode"])
def test_records_readable_by_others_or_not_ours_are_refused(tmp_path, what):
    root = tmp_path / "records"
    root.mkdir(mode=0o700)
    _fake_record(root / "r")
    target = {
        "file mode": root / "r" / RECORD_FILE,
        "directory mode": root / "r",
        "file owner": root / "r" / RECORD_FILE,
        "root mode": root,
    }[what]
    if what == "file owner":
        if os.getuid() != 0:
            pytest.skip("changing a file's owner needs root")
        os.chown(target, 65534, 65534)
        match = "belongs to user id 65534"
    else:
        target.chmod(0o644 if target.is_file() else 0o755)
        match = "refused"
    with pytest.raises(RecordError, match=match):
        read_record("r", root)
    with pytest.raises(ValueError, match=match):
        LocalCluster.attach("r", record_directory=str(root))


def test_dead_record_is_reported_removed_and_never_reused(tmp_path, capsys):
    root = tmp_path / "records"
    _fake_record(root / "old")
    assert cli_main(["list", "--record-directory", str(root)]) == 0
    out = capsys.readouterr().out
    assert "old: dead (scheduler tcp://127.0.0.1:9 does not answer); record removed" in out
    assert not (root / "old").exists()
    _fake_record(root / "old2")
    with pytest.raises(ValueError, match="Cluster 'old2' is gone"):
        LocalCluster.attach("old2", record_directory=str(root))
    assert not (root / "old2").exists()


# ---------------------------------------------------------------------------- in one process


def test_scheduler_runs_outside_and_close_leaves_nothing(tmp_path, capsys):
    root = tmp_path / "records"
    with LocalCluster(**KWARGS, record_directory=str(root)) as cluster:
        name = cluster.cluster_name
        assert name is not None and name.startswith("dask-")
        assert f"cluster_name={name!r}" in repr(cluster)
        assert f"Cluster name: <code>{name}</code>" in cluster._repr_html_()
        record = read_record(name, root)
        assert record.address == cluster.scheduler_address
        cluster_id = cluster._engine.cluster_id
        assert tagged(cluster_id) == {record.scheduler_job_id}, "the scheduler's own job"
        assert oct((root / name).stat().st_mode & 0o777) == "0o700"
        assert oct((root / name / RECORD_FILE).stat().st_mode & 0o777) == "0o600"
        cluster.scale(2)
        cluster.wait_for_workers(2, timeout=60, progress=False)
        with Client(cluster) as client:
            assert client.submit(sum, [1, 2]).result() == 3
        assert len(tagged(cluster_id)) == 3
        assert cli_main(["list", "--record-directory", str(root)]) == 0
        listed = capsys.readouterr().out.splitlines()
        assert listed[1].split()[:5][0] == name and listed[1].split()[3:5] == ["2", "3"]
        with pytest.raises(ValueError, match=f"cluster_name={name!r}: a cluster of that name"):
            LocalCluster(**{**KWARGS, "cluster_name": name}, record_directory=str(root))
        with pytest.raises(ValueError, match=f"Cluster {name!r} is owned by process {os.getpid()}"):
            LocalCluster.attach(name, record_directory=str(root))
    wait_until(lambda: not tagged(cluster_id), timeout=15)
    assert not (root / name).exists()


def test_record_reaching_another_clusters_scheduler_is_dead_not_reused(tmp_path, capsys):
    root = tmp_path / "records"
    with LocalCluster(**KWARGS, cluster_name="live", record_directory=str(root)) as cluster:
        # a stale record whose address is now another cluster's scheduler (same port)
        _fake_record(root / "stale", address=cluster.scheduler_address)
        with pytest.raises(ValueError, match="Cluster 'stale' is gone"):
            LocalCluster.attach("stale", record_directory=str(root))
        _fake_record(root / "stale", address=cluster.scheduler_address)
        assert cli_main(["list", "--record-directory", str(root)]) == 0
        out = capsys.readouterr().out
        assert "stale: dead" in out and out.splitlines()[1].startswith("live ")
        assert not (root / "stale").exists() and (root / "live").exists()


def test_tls_credentials_travel_through_the_record(tmp_path):
    pytest.importorskip("cryptography")
    root = tmp_path / "records"
    with LocalCluster(**KWARGS, security=True, record_directory=str(root)) as cluster:
        assert cluster.scheduler_address.startswith("tls://")
        cluster.scale(1)
        cluster.wait_for_workers(1, timeout=60, progress=False)
        record = read_record(cluster.cluster_name, root)
        assert set(record.tls) == {"ca_file", "cert", "key"}
        for path in record.tls.values():
            assert Path(path).parent == root / cluster.cluster_name
            assert Path(path).stat().st_mode & 0o077 == 0
        with Client(cluster) as client:
            assert client.submit(sum, [1, 2]).result() == 3


def test_scheduler_job_that_dies_gives_its_reason_and_leaves_nothing(tmp_path):
    root = tmp_path / "records"
    with pytest.raises(RuntimeError, match="scheduler's job ended before it started"):
        LocalCluster(
            **KWARGS,
            cluster_name="broken",
            record_directory=str(root),
            python="/nonexistent/python",
        )
    assert not (root / "broken").exists()


# ---------------------------------------------------------------------------- across processes


def test_owner_killed_another_process_attaches_and_owns_it(tmp_path):
    root = tmp_path / "records"
    owner, address, cluster_id, job_ids = start_owner(root, "a", keep_alive="3 minutes")
    assert len(job_ids) == 2
    before = tagged(cluster_id)
    kill(owner)
    started = time.monotonic()
    cluster = dask_jobqueue.attach("a", record_directory=str(root))
    try:
        assert time.monotonic() - started < 10
        assert isinstance(cluster, LocalCluster)
        assert cluster.scheduler_address == address
        assert sorted(cluster.worker_spec) == sorted(r.name for r in cluster.jobs)
        assert sorted(r.job_id for r in cluster.jobs) == job_ids
        with Client(cluster) as client:
            assert client.get_dataset("x") == [1, 2, 3]
            assert len(client.scheduler_info()["workers"]) == 2
        cluster.scale(3)
        cluster.wait_for_workers(3, timeout=60, progress=False)
        now = tagged(cluster_id)
        assert before <= now and len(now) == 4, "3 worker jobs + the scheduler's, none twice"
        assert len({r.name for r in cluster.jobs}) == 3
    finally:
        cluster.close()
    wait_until(lambda: not tagged(cluster_id), timeout=15)
    assert not (root / "a").exists()


def test_keep_alive_runs_out_and_everything_ends_by_itself(tmp_path):
    root = tmp_path / "records"
    owner, address, cluster_id, job_ids = start_owner(root, "k", keep_alive="8 seconds")
    kill(owner)
    killed = time.monotonic()
    alive_counts = []
    while time.monotonic() - killed < 4:
        alive_counts.append(len(tagged(cluster_id)))
        time.sleep(0.5)
    assert min(alive_counts) == 3, alive_counts  # 2 worker jobs and the scheduler's
    wait_until(lambda: not tagged(cluster_id), timeout=8 + 20)
    with pytest.raises(ValueError, match="Cluster 'k' is gone"):
        LocalCluster.attach("k", record_directory=str(root))
    assert not (root / "k").exists()


def test_cli_close_ends_a_cluster_whose_owner_died(tmp_path, capsys):
    root = tmp_path / "records"
    owner, address, cluster_id, job_ids = start_owner(root, "c", keep_alive="2 minutes", jobs=1)
    assert cli_main(["attach", "c", "--record-directory", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"scheduler: {address}" in out and "dask_jobqueue.attach('c')" in out
    with pytest.raises(SystemExit) as refused:
        cli_main(["close", "c", "--record-directory", str(root)])
    assert refused.value.code == 1
    assert "is owned by process" in capsys.readouterr().err
    kill(owner)
    assert cli_main(["close", "c", "--record-directory", str(root)]) == 0
    assert "Closed cluster 'c'" in capsys.readouterr().out
    wait_until(lambda: not tagged(cluster_id), timeout=15)
    assert not (root / "c").exists()


def test_interpreter_exit_without_close_keeps_a_keep_alive_cluster(tmp_path):
    root = tmp_path / "records"
    code = (
        "from dask_jobqueue.local import LocalCluster\n"
        f"c = LocalCluster(cores=1, memory='2GB', scheduler_in_job=True, cluster_name='e', "
        f"keep_alive='60s', record_directory={str(root)!r})\n"
        "c.scale(1)\n"
        "c.wait_for_workers(1, timeout=60, progress=False)\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=120)
    cluster = LocalCluster.attach("e", record_directory=str(root))
    try:
        assert [r.state.value for r in cluster.jobs] == ["connected"]
        cluster_id = cluster._engine.cluster_id
    finally:
        cluster.close()
    wait_until(lambda: not tagged(cluster_id), timeout=15)


def test_attached_cluster_adapts_from_its_adopted_jobs(tmp_path):
    root = tmp_path / "records"
    owner, address, cluster_id, job_ids = start_owner(root, "ad", keep_alive="2 minutes")
    kill(owner)
    cluster = LocalCluster.attach("ad", record_directory=str(root))
    try:
        cluster.adapt(minimum_jobs=3, maximum_jobs=3)
        cluster.wait_for_workers(3, timeout=60, progress=False)
        live = [r.job_id for r in cluster.jobs if not r.state.is_final]
        assert len(live) == 3 and set(job_ids) < set(live), live
        assert len(tagged(cluster_id)) == 4  # 3 worker jobs and the scheduler's
    finally:
        cluster.close()
    wait_until(lambda: not tagged(cluster_id), timeout=15)


def test_attach_over_tls_with_the_credentials_of_the_record(tmp_path):
    pytest.importorskip("cryptography")
    root = tmp_path / "records"
    owner, address, cluster_id, job_ids = start_owner(root, "t", "2 minutes", 1, security=True)
    assert address.startswith("tls://")
    kill(owner)
    cluster = LocalCluster.attach("t", record_directory=str(root))
    try:
        assert cluster.scheduler_address == address
        with Client(cluster) as client:
            assert client.get_dataset("x") == [1, 2, 3]
        cluster.scale(2)
        cluster.wait_for_workers(2, timeout=60, progress=False)
    finally:
        cluster.close()
    wait_until(lambda: not tagged(cluster_id), timeout=15)
    assert not (root / "t").exists()


# ---------------------------------------------------------------------------- its walltime


def test_walltime_warning_comes_within_ten_minutes_of_the_end_and_says_what_ends():
    from dask_jobqueue.detached import WALLTIME_WARNING, walltime_warning

    assert walltime_warning("a", None, 1000.0) is None  # no limit known
    assert walltime_warning("a", 1000.0 + WALLTIME_WARNING + 1, 1000.0) is None
    message = walltime_warning("a", 1000.0 + 300, 1000.0)
    assert message is not None
    assert "Cluster 'a': the scheduler's job reaches its walltime" in message
    assert "(in 5 min)" in message and "cannot move to another job" in message
    assert "(in 0 min)" in str(walltime_warning("a", 990.0, 1000.0))  # already past: now


def test_lease_reports_when_the_scheduler_job_ends():
    lease = Lease("c1", keep_alive=60)
    assert lease.state()["ends_at"] is None
    lease.ends_at = 1234.5
    assert lease.state()["ends_at"] == 1234.5


def test_jobs_say_when_the_schedulers_walltime_ends_and_the_owner_is_warned(tmp_path, caplog):
    root = tmp_path / "records"
    with caplog.at_level("WARNING", logger="dask_jobqueue.detached"):
        with LocalCluster(**KWARGS, walltime="00:05:00", record_directory=str(root)) as cluster:
            started = time.time()
            note = cluster.jobs.note
            assert note is not None and note.startswith("Scheduler: job ")
            assert "its walltime ends at" in note
            ends = time.mktime(time.strptime(note.split("ends at ")[1][:19], "%Y-%m-%d %H:%M:%S"))
            assert 280 <= ends - started <= 305  # 5 minutes after the scheduler started
            assert repr(cluster.jobs).splitlines()[0] == note
            assert note in cluster.jobs._repr_html_()
            # 5 minutes is within the warning's 10: the owner is warned at once, and once
            assert wait_until(lambda: "reaches its walltime" in caplog.text, timeout=15)
            time.sleep(2.5)  # a heartbeat later: still a single warning
            assert caplog.text.count("reaches its walltime") == 1
    without = LocalCluster(cores=1, memory="2GB", scheduler_options={"dashboard_address": None})
    with without:
        assert without.jobs.note is None
