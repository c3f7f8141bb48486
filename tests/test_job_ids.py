"""Job ids are read from the submit command's own line, never from a banner around it."""

from __future__ import annotations

import pytest

from dask_jobqueue.htcondor import HTCondorJob
from dask_jobqueue.lsf import LSFJob
from dask_jobqueue.moab import MoabJob
from dask_jobqueue.oar import OARJob
from dask_jobqueue.pbs import PBSJob
from dask_jobqueue.sge import SGEJob
from dask_jobqueue.slurm import SLURMJob

BANNER = "Welcome to cluster42 - maintenance on 2026-12-03 from 08:00, 3 nodes down\n"

# (job class, submit output as the tool prints it, expected id); outputs from tests/data where
# recorded, otherwise in the tool's documented format.
CASES = [
    (SLURMJob, "Submitted batch job 654321\n", "654321"),
    (SLURMJob, "654321;cluster\n", "654321"),
    (PBSJob, "12.pbs-server\n", "12.pbs-server"),
    (PBSJob, "12.pbs01.example.org\n", "12.pbs01.example.org"),
    (SGEJob, 'Your job 138 ("job") has been submitted\n', "138"),
    (SGEJob, 'Your job 4 ("dask-worker-12") has been submitted\n', "4"),
    (SGEJob, "140\n", "140"),
    (LSFJob, "Job <4242> is submitted to default queue <normal>.\n", "4242"),
    (OARJob, "[ADMISSION RULE] Set default walltime to 7200.\nOAR_JOB_ID=17\n", "17"),
    (HTCondorJob, "Submitting job(s).\n1 job(s) submitted to cluster 31.\n", "31.0"),
    (MoabJob, "\nMoab.12\n", "Moab.12"),
]


def _job(cls):
    extra = {"disk": "1GB"} if cls is HTCondorJob else {}
    extra.update({"memory_per_core_property_name": "not_applicable"} if cls is OARJob else {})
    return cls(cores=1, memory="1GB", processes=1, **extra)


@pytest.mark.parametrize("cls, output, expected", CASES)
def test_submit_output_parsed(cls, output, expected):
    assert _job(cls).job_id_from_submit_output(output) == expected


@pytest.mark.parametrize("cls, output, expected", CASES)
def test_banner_lines_with_numbers_are_ignored(cls, output, expected):
    job = _job(cls)
    assert job.job_id_from_submit_output(BANNER + output) == expected
    assert job.job_id_from_submit_output(output + BANNER) == expected


@pytest.mark.parametrize("cls", [SLURMJob, PBSJob, SGEJob, LSFJob, OARJob, HTCondorJob, MoabJob])
def test_output_without_the_id_line_is_refused(cls):
    with pytest.raises(ValueError, match="Could not parse the job id"):
        _job(cls).job_id_from_submit_output(BANNER)


def test_two_id_lines_are_refused_not_guessed():
    with pytest.raises(ValueError, match="several job ids"):
        _job(SLURMJob).job_id_from_submit_output(
            "Submitted batch job 11\nSubmitted batch job 12\n"
        )
