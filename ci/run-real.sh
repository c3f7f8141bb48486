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
#
# slurm and sge (without USER): the stage's longest test files, which mostly wait on wall-clock
# time (walltimes, outages; see SIDE_FILES below), run at the same time as the rest of the stage
# in a second pytest process, against a second, independent instance of the same batch system
# (SLURM_CI_INSTANCE / SGE_CI_CELL "djqside": own daemons, ports, queue). No test sees the other
# process's jobs, so checks on the whole queue stay valid. The two selections are complementary
# by construction: the main process --ignores exactly the files the side process is given.
# SIDE=0 (or a PYTEST_ADDOPTS selection) runs everything in one process against the default
# instance, as before.
set -uo pipefail
name=${1:?usage: ci/run-real.sh NAME [USER]}
user=${2:-}
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3)}
PY=$("$PY" -c 'import sys; print(sys.executable)')
if [ "$name" = pbs ]; then
    export PATH="/opt/pbs/bin:$PATH"
fi

# The side process's files, measured on the 2-core machine under other load: Slurm 1,280 s in
# one process (these files 650 s of it), 675 s split; SGE 1,001 s (these 527 s), 552 s split.
side_files=()
side_env=()
side_instance=djqside
# A caller's own test selection (PYTEST_ADDOPTS, as ci/docker sets it) runs in one process.
if [ "${SIDE:-1}" = 1 ] && [ -z "$user" ] && [ -z "${PYTEST_ADDOPTS:-}" ]; then
    case $name in
        slurm)
            side_files=(tests/test_real_lifetime.py tests/test_real_outages.py)
            side_env=(SLURM_CI_INSTANCE="$side_instance")
            ;;
        sge)
            side_files=(tests/test_real_lifetime.py)
            side_env=(SGE_CI_CELL="$side_instance")
            ;;
    esac
fi
# A side process still running when this script ends early (killed, interrupted) is stopped.
side_pid=""
kill_side() {
    if [ -n "$side_pid" ] && kill -0 "$side_pid" 2>/dev/null; then kill "$side_pid"; fi
}
trap kill_side EXIT
trap 'kill_side; exit 143' TERM
trap 'kill_side; exit 130' INT
stop_side() {
    if [ ${#side_files[@]} -gt 0 ]; then
        env "${side_env[@]}" bash "ci/$name/run.sh" stop
    fi
}

if ! OAR_PYTHON=$PY bash "ci/$name/run.sh" start; then
    echo "ci/run-real.sh: $name did not start" >&2
    bash "ci/$name/run.sh" stop || true
    exit 1
fi
if [ ${#side_files[@]} -gt 0 ] && ! env "${side_env[@]}" bash "ci/$name/run.sh" start; then
    echo "ci/run-real.sh: the second $name instance ($side_instance) did not start" >&2
    stop_side || true
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
elif [ ${#side_files[@]} -gt 0 ]; then
    # What selects the second instance for the side process's commands (and its jobs, which
    # inherit the environment).
    case $name in
        slurm) side_select=("SLURM_CONF=/var/lib/ci-slurm/$side_instance/etc/slurm.conf") ;;
        sge) read -r -a side_select <<<"$(env "${side_env[@]}" bash ci/sge/run.sh env | sed 's/^export //')" ;;
    esac
    side_log=$(mktemp /tmp/run-real-side.XXXXXX)
    side_tmp=$(mktemp -d /tmp/run-real-side-tmp.XXXXXX)
    env "${side_select[@]}" "$PY" -m pytest "${PYTEST_ARGS[@]}" --basetemp="$side_tmp" \
        -E "$name" "${side_files[@]}" >"$side_log" 2>&1 &
    side_pid=$!
    ignore=()
    for f in "${side_files[@]}"; do ignore+=("--ignore=$f"); done
    echo "=== $name: ${side_files[*]} run beside this process, on instance $side_instance ==="
    "$PY" -m pytest "${PYTEST_ARGS[@]}" -E "$name" "${ignore[@]}" || rc=$?
    side_rc=0
    wait "$side_pid" || side_rc=$?
    side_pid=""
    echo "=== $name, instance $side_instance: ${side_files[*]} (exit $side_rc) ==="
    cat "$side_log"
    rm -rf "$side_log" "$side_tmp"
    [ "$side_rc" = 0 ] || rc=$side_rc
else
    "$PY" -m pytest "${PYTEST_ARGS[@]}" -E "$name" || rc=$?
fi
stop_side || rc=1
bash "ci/$name/run.sh" stop || rc=1
exit $rc
