#!/usr/bin/env bash
# Two batch systems on one host at once, for pools of two kinds under one Dask scheduler:
# the multi-node Slurm of ci/slurm-multi and a Grid Engine cell of its own ("cross", beside
# the default cell: own ports, spool and daemons), so this never touches the default Slurm
# or Grid Engine that other stages start and stop.
#
#   ci/slurm-sge/run.sh install|start|stop|status
#
# `pytest -E slurm-sge` runs the tests that need both (tests/test_pools_two_systems_real.py);
# `ci/run-real.sh slurm-sge` starts both, runs them and stops both.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export SGE_CI_CELL=cross

case "${1:-}" in
    install)
        bash "$here/slurm-multi/run.sh" install && bash "$here/sge/run.sh" install ;;
    start)
        bash "$here/slurm-multi/run.sh" start && bash "$here/sge/run.sh" start ;;
    stop)
        rc=0
        bash "$here/sge/run.sh" stop || rc=1
        bash "$here/slurm-multi/run.sh" stop || rc=1
        exit $rc ;;
    status)
        rc=0
        bash "$here/slurm-multi/run.sh" status || rc=1
        bash "$here/sge/run.sh" status || rc=1
        exit $rc ;;
    *)
        echo "usage: ci/slurm-sge/run.sh install|start|stop|status" >&2
        exit 2 ;;
esac
