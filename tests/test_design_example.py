"""The worked example of docs/design.rst: a new batch system in one file really runs.

``docs/examples/acme.py`` declares the imaginary Acme scheduler; here three small shell
programs play Acme (jobs run as local process groups) and a cluster of it starts workers,
computes and leaves nothing behind.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import stat
from pathlib import Path

import dask.config
import pytest
from distributed import Client

from dask_jobqueue.dialect import Dialect

from .waiting import wait_until

EXAMPLE = Path(__file__).parent.parent / "docs" / "examples" / "acme.py"

ACME_SUBMIT = """#!/bin/bash
set -e
exec 9>>"$ACME_STATE/lock"
flock 9  # submissions run concurrently: one id each
n=$(( $(cat "$ACME_STATE/counter" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$ACME_STATE/counter"
cp "$1" "$ACME_STATE/$n.sh"
setsid bash "$ACME_STATE/$n.sh" > "$ACME_STATE/$n.out" 2>&1 < /dev/null 9>&- &
echo $! > "$ACME_STATE/$n.pid"
echo "job $n"
"""
ACME_STAT = """#!/bin/bash
for id in "$@"; do
    [ -f "$ACME_STATE/$id.pid" ] || continue
    if kill -0 "$(cat "$ACME_STATE/$id.pid")" 2>/dev/null; then echo "$id R"; else echo "$id D"; fi
done
"""
ACME_CANCEL = """#!/bin/bash
for id in "$@"; do
    echo "$id" >> "$ACME_STATE/cancelled"
    kill -TERM -- "-$(cat "$ACME_STATE/$id.pid")" 2>/dev/null || true
done
"""


def _load_example():
    spec = importlib.util.spec_from_file_location("acme_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def acme(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (
        ("acme-submit", ACME_SUBMIT),
        ("acme-stat", ACME_STAT),
        ("acme-cancel", ACME_CANCEL),
    ):
        path = bin_dir / name
        path.write_text(body)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("ACME_STATE", str(state))
    yield state
    for pid_file in state.glob("*.pid"):  # never leave a job behind, even on failure
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)
        except (ProcessLookupError, PermissionError, ValueError):
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_example_is_a_dialect():
    example = _load_example()
    assert isinstance(example.DIALECT, Dialect)
    assert example.AcmeJob.submit_command == "acme-submit"
    assert example.parse_acme_stat("12 R\n13 Q\njunk\n")["12"].state.name == "RUNNING"


def test_the_examples_header_table_is_rendered_with_skips_and_extras():
    example = _load_example()
    with dask.config.set({"jobqueue.acme": {}}):
        plain = example.AcmeJob(cores=2, memory="1GB")
        assert plain.job_header == "#ACME --name=dask-worker\n#ACME --cores=2"
        job = example.AcmeJob(
            cores=2,
            memory="1GB",
            queue="fast",
            job_directives_skip=["--cores"],
            job_extra_directives=["--mail=none"],
        )
        assert job.job_header == "#ACME --name=dask-worker\n#ACME --queue=fast\n#ACME --mail=none"
        with pytest.raises(ValueError, match="queue"):
            example.AcmeJob(cores=2, memory="1GB", queue="two words")


def test_a_scheduler_in_one_file_runs_a_cluster(acme, no_stray_processes):
    example = _load_example()
    with dask.config.set({"jobqueue.acme": {"death-timeout": 30}}):
        with example.AcmeCluster(cores=1, memory="1GB", processes=1) as cluster:
            assert "#ACME --name=dask-worker" in cluster.job_script()
            cluster.scale(2)
            with Client(cluster) as client:
                client.wait_for_workers(2, timeout=60)
                assert client.submit(lambda x: x + 1, 41).result(timeout=30) == 42
            assert wait_until(lambda: all(r.state.name == "CONNECTED" for r in cluster.jobs), 10)
            ids = sorted(r.job_id for r in cluster.jobs)
            assert ids == ["1", "2"]
    pids = [int((acme / f"{i}.pid").read_text()) for i in ids]
    assert wait_until(lambda: not any(_alive(p) for p in pids), 15)
    assert sorted((acme / "cancelled").read_text().split()) == ids
