"""A broad set of job configurations per scheduler, for the job-script header golden file.

``python -m tests.header_cases`` prints the headers these configurations give (``--scripts``:
the whole job scripts); ``tests/test_header_golden.py`` compares the code's headers with
``tests/data/headers/golden.txt``.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any

#: The log directory of the cases, relative to the working directory (a temporary one), and
#: how the golden file writes it. Its name holds none of the cases' ``job_directives_skip``
#: strings (a path under ``pytest-of-...`` would hold ``-o``).
LOGDIR = "hdrlogdir"
LOGDIR_PLACEHOLDER = "<LOGDIR>"

#: Keywords every job of a scheduler gets.
BASE: dict[str, dict[str, Any]] = {
    "slurm": {"cores": 8, "memory": "24GB"},
    "pbs": {"cores": 8, "memory": "24GB"},
    "moab": {"cores": 8, "memory": "24GB"},
    "sge": {"cores": 8, "memory": "24GB"},
    "lsf": {"cores": 8, "memory": "24GB", "lsf_units": "MB"},
    "oar": {"cores": 8, "memory": "24GB", "memory_per_core_property_name": "not_applicable"},
    "htcondor": {"cores": 8, "memory": "24GB", "disk": "4GB"},
    "local": {"cores": 8, "memory": "24GB"},
}

#: Variants applied on top of ``BASE``; a keyword a scheduler does not take drops the variant
#: for that scheduler. ``LOGDIR`` stands for a fresh directory (a sub-directory ``"x y"`` of it
#: with ``LOGDIR_SPACE``).
VARIANTS: list[dict[str, Any]] = [
    {},
    {"queue": "regular"},
    {"account": "acct1"},
    {"project": "proj1"},
    {"project": "Dask On LSF"},
    {"walltime": "01:30:00"},
    {"walltime": "90"},
    {"walltime": "10:00"},
    {"processes": 2},
    {"processes": 1, "cores": 1, "memory": "100MB"},
    {"cores": 1},
    {"memory": "500MB"},
    {"memory": "3TB"},
    {"job_name": "myjob"},
    {"log_directory": "LOGDIR"},
    {"log_directory": "LOGDIR_SPACE"},
    {"job_extra_directives": ["--exclusive", "-l nodes=1"]},
    {"job_extra_directives": {"+Extra": "True", "request_gpus": "1"}},
    {"job_directives_skip": ["-p"]},
    {"job_directives_skip": ["--mem", "-A"]},
    {"job_directives_skip": ["walltime", "-q"]},
    {"job_directives_skip": ["-n", "-N"]},
    {"job_directives_skip": ["-l"]},
    {"job_directives_skip": ["span"]},
    {"job_directives_skip": ["Request", "MY."]},
    {"job_directives_skip": ["-e", "Stream"], "log_directory": "LOGDIR"},
    {"job_directives_skip": ["-J"], "job_extra_directives": ["-J other"]},
    {"job_directives_skip": ["#"]},
    {"job_directives_skip": ["dask-worker"], "log_directory": "LOGDIR"},
    {"job_directives_skip": ["batch_name"], "job_extra_directives": {"batch_name": "mine"}},
    {"job_extra_directives": {"RequestCpus": "4", "LogDirectory": "/x"}},
    {"job_directives_skip": ["-p"], "memory_per_core_property_name": "memcore"},
    {"resource_spec": "select=2:ncpus=4"},
    {"resource_spec": "h_vmem=4G,mem_req=4G"},
    {"resource_spec": "/nodes=2/core=4"},
    {"job_cpu": 4},
    {"job_cpu": 4, "job_mem": "100M", "cores": 2},
    {"job_mem": "16G"},
    {"ncpus": 1},
    {"ncpus": 4, "mem": "8GB"},
    {"ncpus": 2, "mem": 1000000, "lsf_units": "KB"},
    {"log_directory": "LOGDIR_PERCENT"},
    {"memory_per_core_property_name": "memcore"},
    {"memory_per_core_property_name": "memcore", "job_extra_directives": ["-p 'gpu=YES'"]},
    {"memory_per_core_property_name": "memcore", "job_extra_directives": ["-p host=a"]},
    {
        "queue": "debug",
        "account": "acct2",
        "project": "proj2",
        "walltime": "02:00:00",
        "processes": 4,
        "log_directory": "LOGDIR",
        "job_extra_directives": ["--qos=high"],
        "job_directives_skip": ["-o"],
        "resource_spec": "select=1:ncpus=8:mem=24GB",
        "job_name": "all-of-it",
    },
]


def job_classes() -> dict[str, type]:
    from dask_jobqueue.htcondor import HTCondorJob
    from dask_jobqueue.local import LocalJob
    from dask_jobqueue.lsf import LSFJob
    from dask_jobqueue.moab import MoabJob
    from dask_jobqueue.oar import OARJob
    from dask_jobqueue.pbs import PBSJob
    from dask_jobqueue.sge import SGEJob
    from dask_jobqueue.slurm import SLURMJob

    return {
        "slurm": SLURMJob,
        "pbs": PBSJob,
        "moab": MoabJob,
        "sge": SGEJob,
        "lsf": LSFJob,
        "oar": OARJob,
        "htcondor": HTCondorJob,
        "local": LocalJob,
    }


def cases(logdir: str) -> Iterator[tuple[str, str, Any]]:
    """``(scheduler, label, job)`` for every case a scheduler takes, or ``(scheduler, label,
    error text)`` when the keywords are refused. ``$PBS_ACCOUNT`` must be unset."""
    for scheduler, job_cls in job_classes().items():
        accepted = job_cls.accepted_keywords()
        for variant in VARIANTS:
            if set(variant) - accepted:
                continue
            if scheduler == "htcondor" and isinstance(variant.get("job_extra_directives"), list):
                continue
            if scheduler != "htcondor" and isinstance(variant.get("job_extra_directives"), dict):
                continue
            kwargs = {**BASE[scheduler], **variant}
            label = repr(variant)
            if kwargs.get("log_directory") == "LOGDIR":
                kwargs["log_directory"] = logdir
            elif kwargs.get("log_directory") == "LOGDIR_SPACE":
                kwargs["log_directory"] = os.path.join(logdir, "x y")
            elif kwargs.get("log_directory") == "LOGDIR_PERCENT":
                kwargs["log_directory"] = os.path.join(logdir, "50%")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    job = job_cls(**kwargs)
                except ValueError as exc:
                    yield scheduler, label, f"ValueError: {exc}"
                    continue
            yield scheduler, label, job


def render(full_scripts: bool = False) -> str:
    """Every case's header (or whole script), the log directory written as a placeholder.
    Run in an empty temporary working directory (the jobs create their log directory)."""
    blocks = []
    for scheduler, label, job in cases(LOGDIR):
        text = (
            job if isinstance(job, str) else (job.job_script() if full_scripts else job.job_header)
        )
        blocks.append(f"### {scheduler} {label}\n{text}\n")
    return "".join(blocks).replace(LOGDIR, LOGDIR_PLACEHOLDER)


if __name__ == "__main__":
    import tempfile

    import dask.config

    from dask_jobqueue.config import reconfigure

    os.environ.pop("PBS_ACCOUNT", None)
    with tempfile.TemporaryDirectory() as tmp, dask.config.set({}):
        reconfigure()
        os.chdir(tmp)
        sys.stdout.write(render(full_scripts="--scripts" in sys.argv))
