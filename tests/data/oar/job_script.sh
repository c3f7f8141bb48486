#!/bin/bash
#OAR -n dask-worker
#OAR -l /nodes=1/core=1,walltime=0:05:00
#OAR -O dask-worker.%jobid%.out
#OAR -E dask-worker.%jobid%.err
echo "job running in $PWD as $(id -un)"
echo "OAR_JOB_NAME=$OAR_JOB_NAME"
echo "to stderr" >&2
