#!/usr/bin/env bash
# Start a real batch system, run its `pytest -E NAME` suite, stop it again.
#
#   ci/run-real.sh NAME [USER]
#
# NAME is slurm, slurm-multi, sge, oar or pbs (ci/NAME/run.sh does the install/start/stop). With USER, the
# tests run as that user from a copy of the checkout it can read (OAR refuses jobs from root).
# For pbs, /opt/pbs/bin comes first on PATH here only: Grid Engine's /usr/bin/qsub, qstat and
# qdel would shadow PBS's.
# Used by .ci/run and by the Docker images in ci/docker, so both test the same path.
# PYTHON selects the interpreter (default: python3 on PATH).
set -uo pipefail
name=${1:?usage: ci/run-real.sh NAME [USER]}
user=${2:-}
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3)}
PY=$("$PY" -c 'import sys; print(sys.executable)')
if [ "$name" = pbs ]; then
    export PATH="/opt/pbs/bin:$PATH"
fi

if ! OAR_PYTHON=$PY bash "ci/$name/run.sh" start; then
    echo "ci/run-real.sh: $name did not start" >&2
    bash "ci/$name/run.sh" stop || true
    exit 1
fi
# --durations=15: the CI log names the slowest tests (setup, call, teardown) of each stage;
# -rfE: failures and errors are listed again at the end, next to those durations.
PYTEST_ARGS=(-p no:cacheprovider --durations=15 -rfE)
rc=0
if [ -n "$user" ]; then
    home=$(getent passwd "$user" | cut -d: -f6)
    work="$home/dask_jobqueue-ci"
    rm -rf "$work" && mkdir -p "$work"
    cp -r dask_jobqueue tests docs setup.py pyproject.toml README.rst "$work/"
    chown -R "$user" "$work"
    (cd "$work" && runuser -u "$user" -- env HOME="$home" PYTHONPATH="$work" \
        "$PY" -m pytest "${PYTEST_ARGS[@]}" --basetemp="$work/tmp" -E "$name") || rc=$?
else
    "$PY" -m pytest "${PYTEST_ARGS[@]}" -E "$name" || rc=$?
fi
bash "ci/$name/run.sh" stop || rc=1
exit $rc
