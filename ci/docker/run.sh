#!/usr/bin/env bash
# One compose suite end to end, on our own dockerd, and clean up afterwards (even on failure):
#
#   ci/docker/run.sh slurm|sge|oar|pbs
#
# 1. installs docker.io, docker-compose and debootstrap if missing (dockerd.sh install);
# 2. starts our dockerd unless it runs already (dockerd.sh start);
# 3. builds the Debian 12 base image unless it exists (base.sh);
# 4. for pbs, copies the OpenPBS tarball into ci/pbs/ (the build context) from $OPENPBS_TARBALL
#    or ../shared/openpbs/ beside the checkout; the image never clones it from the network;
# 5. docker-compose -f ci/docker/compose.NAME.yml build, then up --exit-code-from tests (the two
#    halves of `up --build --exit-code-from tests`, timed apart);
# 6. removes the container (down), and stops dockerd if step 2 started it, which checks that
#    none of its processes, mounts, interfaces, iptables rules or cgroups is left.
# Prints the time of each step. The images stay in dockerd's data root, so a second run only
# rebuilds the layer with the checkout.
#
# Environment: DJQ_DOCKER_TESTS (test selection, see compose.*.yml), DJQ_DOCKER_TIMEOUT
# (seconds for the tests, default 1800).
set -uo pipefail
name=${1:?usage: ci/docker/run.sh slurm|sge|oar|pbs}
case $name in slurm|sge|oar|pbs) ;; *) echo "run.sh: unknown suite '$name'" >&2; exit 2 ;; esac
cd "$(dirname "$0")/../.."
here=ci/docker
compose=(docker-compose --ansi never -p "dask-jobqueue-ci-$name" -f "$here/compose.$name.yml")
timeout_s=${DJQ_DOCKER_TIMEOUT:-1800}

timings=()
current=""
step() {
    local what=$1 t0=$SECONDS rc=0
    shift
    echo "--- $what"
    # In the background and waited for: a signal (CI timeout, ^C) runs the EXIT trap at once,
    # not only when the step ends by itself.
    "$@" &
    current=$!
    wait "$current" || rc=$?
    current=""
    timings+=("$(printf '%-34s %5ds  %s' "$what" $((SECONDS - t0)) "$([ $rc -eq 0 ] && echo ok || echo "FAILED ($rc)")")")
    return $rc
}

started_dockerd=0
copied_tarball=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$current" ] && kill -0 "$current" 2>/dev/null; then
        echo "--- interrupted: stopping the running step (pid $current)"
        kill -TERM "$current" 2>/dev/null || true
        wait "$current" 2>/dev/null || true
        current=""
    fi
    if bash "$here/dockerd.sh" status; then
        step "compose down" "${compose[@]}" down --remove-orphans --timeout 10 || rc=1
    fi
    if [ $started_dockerd -eq 1 ]; then
        step "dockerd stop + leftover check" bash "$here/dockerd.sh" stop || rc=1
    fi
    [ -z "$copied_tarball" ] || rm -f "$copied_tarball"
    [ -z "${build_log:-}" ] || rm -f "$build_log"
    echo "--- times ($name)"
    printf '%s\n' "${timings[@]}"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "packages (docker.io, compose, debootstrap)" bash "$here/dockerd.sh" install || exit 1
eval "$(bash "$here/dockerd.sh" env)"
if ! bash "$here/dockerd.sh" status; then
    started_dockerd=1
    step "dockerd start" bash "$here/dockerd.sh" start || exit 1
fi
step "base image (debootstrap, cached)" bash "$here/base.sh" || exit 1

if [ "$name" = pbs ]; then
    version=$(sed -n 's/^PBS_TAG=\${PBS_TAG:-v\([^}]*\)}$/\1/p' ci/pbs/run.sh)
    [ -n "$version" ] || { echo "run.sh: no PBS_TAG in ci/pbs/run.sh" >&2; exit 1; }
    dest=ci/pbs/openpbs-$version.tar.gz
    if [ ! -f "$dest" ]; then
        src=${OPENPBS_TARBALL:-../shared/openpbs/openpbs-$version.tar.gz}
        [ -f "$src" ] || { echo "run.sh: no OpenPBS tarball: $src (set OPENPBS_TARBALL)" >&2; exit 1; }
        cp "$src" "$dest" && copied_tarball=$dest
    fi
fi

# The build's output (apt, pip, compiler) goes to a file: its steps are shown, all of it on failure.
build_log=$(mktemp /tmp/dask-jobqueue-docker-build.XXXXXX)
build() {
    local rc=0
    "${compose[@]}" build >"$build_log" 2>&1 || rc=$?
    grep -E '^(Step [0-9]+/|Successfully|Removing intermediate)' "$build_log" | grep -v '^Removing' | cut -c1-110
    if [ $rc -ne 0 ]; then
        echo "compose build failed (rc=$rc); its output:"
        tail -n 60 "$build_log"
    fi
    return $rc
}
step "image build (compose build)" build || exit 1
# The images this one replaced (older checkouts): dangling, and this daemon serves nobody else.
docker image prune -f >/dev/null || true
# The tests' container, with the image just built (`up --build` would print the whole cached
# build again); it returns the tests' status.
step "tests (compose up)" timeout "$timeout_s" "${compose[@]}" up --exit-code-from tests
