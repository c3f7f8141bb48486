#!/usr/bin/env bash
# Two Slurm clusters on one machine: starting and stopping one must leave the other running and
# its job untouched (issue 19: ci/ scripts stop only what they started).
#
#   ci/test-side-by-side.sh [CYCLED]
#
# KEPT (SIDE_BY_SIDE_KEPT, default "sbskept") is a named instance of ci/slurm/run.sh that holds a
# running job for the whole test. CYCLED is started and stopped beside it, twice:
#   1. start, submit a job, `stop`;
#   2. start, submit a job, SIGKILL its slurmctld and slurmd (a crash: the job step outlives
#      them), `stop`.
# CYCLED is "default" for the cluster of /etc/slurm (what .ci/run uses on a fresh machine; the
# test refuses to run when that cluster is already up, since it would stop it), else the name
# of an instance (default "sbscycled").
# Checked after each stop: every process of CYCLED (daemons, job) is gone; KEPT's daemons run
# with the same pids, its job is RUNNING with the same process, not restarted, and still
# writing its heartbeat. Any other Slurm found running at the start (e.g. a shared default
# cluster) must still run with the same daemon pids at the end. KEPT is stopped at the end.
set -Eeuo pipefail
trap 'rc=$?; echo "test-side-by-side.sh: line $LINENO: \"$BASH_COMMAND\" failed (exit $rc)" >&2' ERR
export LC_ALL=C
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RUN=$HERE/slurm/run.sh
KEPT=${SIDE_BY_SIDE_KEPT:-sbskept}
CYCLED=${1:-sbscycled}
[[ $KEPT != "$CYCLED" && $KEPT != default ]] || { echo "KEPT must be a named instance other than CYCLED" >&2; exit 2; }
WORK=$(mktemp -d /tmp/ci-side-by-side.XXXXXX)
chmod 0755 "$WORK"
T0=$EPOCHREALTIME
FAILURES=0

since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
log() { echo "[side-by-side $(since "$T0")s] $*" >&2; }
check() {   # check DESCRIPTION COMMAND...: record a failure instead of stopping at the first one
    local what=$1; shift
    if "$@"; then log "ok: $what"; else log "FAILED: $what"; FAILURES=$((FAILURES + 1)); fi
}

# instance_env NAME: the environment that selects instance NAME ("default": none).
instance_env() { if [[ $1 == default ]]; then echo SLURM_CI_INSTANCE=; else echo "SLURM_CI_INSTANCE=$1"; fi; }
run_sh() { local name=$1; shift; env "$(instance_env "$name")" SLURM_CLEAN_STATE=1 bash "$RUN" "$@"; }
conf_of() { run_sh "$1" config | sed -n '1s/^# //p'; }
in_instance() { local name=$1; shift; SLURM_CONF=$(conf_of "$name") "$@"; }

alive() {   # alive PID: exists and is not a zombie
    local stat
    [[ $1 =~ ^[0-9]+$ ]] || return 1
    read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != [ZXx] ]]
}
all_dead() { local p; for p in "$@"; do alive "$p" && return 1; done; return 0; }
all_alive() { local p; for p in "$@"; do alive "$p" || return 1; done; return 0; }

# daemon_pids NAME: "slurmctld slurmd munged" pids from the instance's own pid files.
daemon_pids() {
    local conf ctld slurmd munge
    conf=$(conf_of "$1")
    ctld=$(sed -n 's/^SlurmctldPidFile=//p' "$conf")
    slurmd=$(sed -n 's/^SlurmdPidFile=//p' "$conf")
    munge=$(sed -n 's/^AuthInfo=socket=//p' "$conf")
    munge=$(dirname "${munge:-/run/munge/x}")/munged.pid
    echo "$(tr -dc 0-9 <"$ctld") $(tr -dc 0-9 <"$slurmd") $(tr -dc 0-9 <"$munge")"
}

# submit NAME TAG: a job that records its pid and rewrites a heartbeat file every 0.2 s.
submit() {
    local name=$1 dir=$WORK/$2 id
    mkdir -p "$dir"
    id=$(cd "$dir" && in_instance "$name" sbatch --parsable -J "sbs-$2" -o /dev/null -e /dev/null -t 10 \
        --wrap "echo \$\$ >$dir/pid; n=0; while :; do n=\$((n+1)); echo \$n >$dir/beat.tmp; mv $dir/beat.tmp $dir/beat; sleep 0.2; done")
    echo "${id%%;*}"
}
job_state() { in_instance "$1" squeue -h -t all -j "$2" -o %T 2>/dev/null || true; }
beating() { [[ -s $WORK/$1/pid && -s $WORK/$1/beat ]]; }
wait_until() {   # wait_until SECONDS COMMAND...
    local deadline=$(( $(date +%s) + $1 )); shift
    until "$@"; do (( $(date +%s) < deadline )) || return 1; sleep 0.2; done
}
running() { [[ $(job_state "$1" "$2") == RUNNING ]]; }
start_job() {   # start_job NAME TAG: submit, wait until it runs and beats; prints the job id
    local id
    id=$(submit "$1" "$2")
    wait_until 60 running "$1" "$id" || { log "job $id of $1 not RUNNING: $(job_state "$1" "$id")"; return 1; }
    wait_until 30 beating "$2" || { log "job $id of $1 wrote no heartbeat"; return 1; }
    echo "$id"
}
restarts() { in_instance "$1" scontrol show job "$2" | tr ' ' '\n' | sed -n 's/^Restarts=//p'; }
beat() { cat "$WORK/$1/beat" 2>/dev/null || echo 0; }
beat_advances() { local b; b=$(beat "$1"); sleep 1; (( $(beat "$1") > b )); }

STARTED=()
cleanup() {
    local name
    for name in "${STARTED[@]}"; do run_sh "$name" stop >/dev/null 2>&1 || log "cleanup: stop of $name failed"; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# Other Slurm clusters already running (pids of their daemons): they must survive untouched.
OTHERS=()
for name in default "$KEPT" "$CYCLED"; do
    pids=$(daemon_pids "$name" 2>/dev/null) || true
    read -r a b c _ <<<"$pids"
    if [[ -n ${c:-} ]] && all_alive "$a" "$b" "$c"; then
        [[ $name == default && $CYCLED != default ]] || { echo "instance $name already runs: not ours to stop" >&2; exit 2; }
        OTHERS+=("$pids")
        log "a default Slurm runs already (daemons $pids): it must survive"
    fi
done

log "starting kept instance $KEPT"
STARTED+=("$KEPT")
run_sh "$KEPT" start 2>&1 | sed 's/^/    /' >&2
kept_job=$(start_job "$KEPT" kept)
kept_pid=$(cat "$WORK/kept/pid")
kept_daemons=$(daemon_pids "$KEPT")
log "kept job $kept_job runs (process $kept_pid), daemons $kept_daemons"

kept_untouched() {
    # shellcheck disable=SC2086  # one argument per pid
    check "$KEPT daemons still run with the same pids ($kept_daemons)" all_alive $kept_daemons
    check "$KEPT job $kept_job still RUNNING" running "$KEPT" "$kept_job"
    check "$KEPT job process $kept_pid still alive" alive "$kept_pid"
    check "$KEPT job not restarted (Restarts=0)" test "$(restarts "$KEPT" "$kept_job")" = 0
    check "$KEPT job still writes its heartbeat" beat_advances kept
    local pids
    for pids in "${OTHERS[@]}"; do
        # shellcheck disable=SC2086
        check "the Slurm that ran before the test still runs ($pids)" all_alive $pids
    done
}

for round in stop crash; do
    log "round '$round': starting $CYCLED beside $KEPT"
    STARTED+=("$CYCLED")
    t=$EPOCHREALTIME
    run_sh "$CYCLED" start 2>&1 | sed 's/^/    /' >&2
    log "$CYCLED started in $(since "$t")s"
    cyc_job=$(start_job "$CYCLED" "cycled-$round")
    cyc_pid=$(cat "$WORK/cycled-$round/pid")
    cyc_daemons=$(daemon_pids "$CYCLED")
    log "$CYCLED job $cyc_job runs (process $cyc_pid), daemons $cyc_daemons"
    if [[ $round == crash ]]; then
        read -r ctld slurmd _ <<<"$cyc_daemons"
        log "SIGKILL to $CYCLED slurmctld $ctld and slurmd $slurmd: job $cyc_job's step outlives them"
        kill -KILL "$ctld" "$slurmd"
        wait_until 10 all_dead "$ctld" "$slurmd"
        check "$CYCLED job process $cyc_pid survived its daemons (so stop has work to do)" alive "$cyc_pid"
    fi
    t=$EPOCHREALTIME
    run_sh "$CYCLED" stop 2>&1 | sed 's/^/    /' >&2
    unset 'STARTED[-1]'
    log "$CYCLED stopped in $(since "$t")s"
    # shellcheck disable=SC2086
    check "$CYCLED daemons are gone ($cyc_daemons)" all_dead $cyc_daemons
    check "$CYCLED job process $cyc_pid is gone" all_dead "$cyc_pid"
    kept_untouched
done

log "stopping kept instance $KEPT"
run_sh "$KEPT" stop 2>&1 | sed 's/^/    /' >&2
STARTED=()
# shellcheck disable=SC2086
check "$KEPT daemons are gone" all_dead $kept_daemons
check "$KEPT job process is gone" all_dead "$kept_pid"
for pids in "${OTHERS[@]}"; do
    # shellcheck disable=SC2086
    check "the Slurm that ran before the test still runs ($pids)" all_alive $pids
done
if (( FAILURES )); then log "$FAILURES check(s) FAILED"; exit 1; fi
log "all checks passed in $(since "$T0")s"
