"""The README's first command: `python -m dask_jobqueue demo`."""

from __future__ import annotations

import subprocess
import sys


def test_demo_computes_on_local_jobs(no_stray_processes):
    result = subprocess.run(
        [sys.executable, "-m", "dask_jobqueue", "demo", "--jobs", "2"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert "#!/usr/bin/env bash" in result.stdout  # the job script is shown
    assert "= 16000000 (OK" in result.stdout
    assert "on 2 workers in 2 jobs" in result.stdout


def test_cli_usage_error():
    result = subprocess.run(
        [sys.executable, "-m", "dask_jobqueue", "bogus"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
