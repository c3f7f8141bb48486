"""Issue 20: what dask-jobqueue 0.9 accepts is accepted (or refused with a clear reason), and
its tests' messages match. Each test names the item of the issue it covers."""

from __future__ import annotations

import re
import warnings

import pytest

from dask_jobqueue import JobQueueCluster, OARCluster, registry
from dask_jobqueue.core import Job
from dask_jobqueue.htcondor import HTCondorCluster

CLUSTER_CLASSES = [s.cluster_class() for s in registry.SCHEDULERS]


def cluster_kwargs(cls, **kwargs):
    kwargs.setdefault("cores", 1)
    kwargs.setdefault("memory", "1GB")
    if cls is HTCondorCluster:
        kwargs.setdefault("disk", "1GB")
    return kwargs


# ---------------------------------------------------------------------------- item 3: messages


@pytest.mark.parametrize("cls", CLUSTER_CLASSES, ids=lambda c: c.__name__)
def test_unknown_keyword_message_names_class_job_kwargs_and_value(cls):
    name = cls.__name__
    pattern = (
        rf"unexpected keyword argument.+wrong_parameter.+{name}.+job_kwargs.+cores.+memory"
        r".+wrong_parameter.+wrong_parameter_value"
    )
    with pytest.raises(ValueError, match=re.compile(pattern, re.DOTALL)) as info:
        cls(**cluster_kwargs(cls), wrong_parameter="wrong_parameter_value")
    # our list of accepted keywords still follows
    assert "Accepted keywords:" in str(info.value).split("wrong_parameter_value")[-1]


def test_job_subclass_without_config_name_is_named():
    class MyJob(Job):
        submit_command = "true"

    with pytest.raises(ValueError, match="config_name.+MyJob"):
        MyJob(cores=1, memory="1GB")

    class MyNoneJob(Job):
        submit_command = "true"
        config_name = None

    with pytest.raises(ValueError, match="config_name.+MyNoneJob"):
        JobQueueCluster(job_cls=MyNoneJob, cores=1, memory="1GB")


def test_cluster_subclass_without_job_cls_is_named():
    class MyCluster(JobQueueCluster):
        pass

    with pytest.raises(ValueError, match="job_cls.+MyCluster"):
        MyCluster(cores=1, memory="1GB")


@pytest.mark.parametrize("cls", CLUSTER_CLASSES, ids=lambda c: c.__name__)
def test_missing_cores_or_memory_shows_an_example(cls):
    extra = {"disk": "1GB"} if cls is HTCondorCluster else {}
    with pytest.raises(ValueError, match=rf"{cls.__name__}.+cores=\d, memory='\d+GB'"):
        cls(**extra)


# ---------------------------------------------------------------------------- item 1: accepted


def test_small_memory_is_accepted_with_a_warning():
    with pytest.warns(UserWarning, match=r"memory='28MiB' is less than 32 MiB per job"):
        cluster = OARCluster(
            cores=1, memory="28MiB", memory_per_core_property_name="not_applicable"
        )
    with cluster:
        assert cluster._dummy_job.worker_memory == 28 * 2**20
    # nothing, zero, negative and a forgotten unit stay refused
    for bad, words in [
        (0, "must be a positive size"),
        (-5, "must be a positive size"),
        ("-1GB", "is not a size|must be a positive size"),
        (24, "below the minimum of 1 MiB: did you forget the unit"),
    ]:
        with pytest.raises(ValueError, match=rf"memory={bad!r} .*({words})"):
            OARCluster(cores=1, memory=bad, memory_per_core_property_name="not_applicable")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 32 MiB and more: no warning
        OARCluster(cores=1, memory="32MiB", memory_per_core_property_name="not_applicable").close()
