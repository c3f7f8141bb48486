"""The README's first command: `python -m dask_jobqueue demo`."""

from __future__ import annotations

import os
import subprocess
import sys

NO_NUMPY = """\
import importlib.abc
import sys


class _NoNumpy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "numpy" or name.startswith("numpy."):
            raise ModuleNotFoundError("No module named 'numpy'", name="numpy")
        return None


sys.meta_path.insert(0, _NoNumpy())
"""


def test_demo_computes_on_local_jobs(no_stray_processes):
    result = subprocess.run(
        [sys.executable, "-m", "dask_jobqueue", "demo", "--jobs", "2"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert "#!/usr/bin/env bash" in result.stdout  # the job script is shown
    assert "= 332833500 (OK" in result.stdout
    assert "on 2 workers in 2 jobs" in result.stdout


def test_demo_runs_without_numpy(tmp_path, no_stray_processes):
    """A plain `pip install .` does not bring numpy: the demo (and its workers) must not
    need it."""
    (tmp_path / "sitecustomize.py").write_text(NO_NUMPY)
    path = os.pathsep.join(p for p in [str(tmp_path), os.environ.get("PYTHONPATH")] if p)
    env = {**os.environ, "PYTHONPATH": path}
    probe = subprocess.run(
        [sys.executable, "-c", "import numpy"], capture_output=True, text=True, env=env
    )
    assert "No module named 'numpy'" in probe.stderr  # the blocker works
    result = subprocess.run(
        [sys.executable, "-m", "dask_jobqueue", "demo", "--jobs", "1", "--processes", "2"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "on 2 workers in 1 jobs = 332833500 (OK" in result.stdout


def test_cli_usage_error():
    result = subprocess.run(
        [sys.executable, "-m", "dask_jobqueue", "bogus"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
