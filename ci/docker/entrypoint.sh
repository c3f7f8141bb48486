#!/usr/bin/env bash
# Container entry point: run the real batch system's suite exactly as .ci/run does.
set -uo pipefail
cd /src
case "$SCHEDULER" in
    oar) exec bash ci/run-real.sh oar oartest ;;
    slurm|sge) exec bash ci/run-real.sh "$SCHEDULER" ;;
    *) echo "unknown SCHEDULER=$SCHEDULER (slurm, sge or oar)" >&2; exit 2 ;;
esac
