#!/usr/bin/env bash
# Two clusters of one batch system on one machine: starting and stopping one must leave the
# other running and its job untouched (issue 19: ci/ scripts stop only what they started).
#
#   ci/test-side-by-side.sh SYSTEM [CYCLED]
#
# SYSTEM is slurm (second instance: SLURM_CI_INSTANCE) or sge (second cell: SGE_CI_CELL).
# KEPT (SIDE_BY_SIDE_KEPT, default "sbskept") is a named instance of ci/SYSTEM/run.sh that holds
# a running job for the whole test. CYCLED is started and stopped beside it, twice:
#   1. start, submit a job, `stop`;
#   2. start, submit a job, SIGKILL its daemons but munged (a crash: the job outlives them),
#      `stop`.
# CYCLED is "default" for the system's default cluster (what .ci/run uses on a fresh machine;
# the test refuses to run when that cluster is already up, since it would stop it), else the
# name of an instance (default "sbscycled").
# Checked after each stop: every process of CYCLED (daemons, job) is gone; KEPT's daemons run
# with the same pids, its job is running with the same process (Slurm: not restarted) and still
# writing its heartbeat. A default cluster found running at the start must still run with the
# same daemon pids at the end. KEPT is stopped at the end.
set -Eeuo pipefail
trap 'rc=$?; echo "test-side-by-side.sh: line $LINENO: \"$BASH_COMMAND\" failed (exit $rc)" >&2' ERR
export LC_ALL=C
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SYSTEM=${1:?usage: ci/test-side-by-side.sh slurm|sge [CYCLED]}
[[ $SYSTEM == slurm || $SYSTEM == sge ]] || { echo "SYSTEM must be slurm or sge" >&2; exit 2; }
RUN=$HERE/$SYSTEM/run.sh
KEPT=${SIDE_BY_SIDE_KEPT:-sbskept}
CYCLED=${2:-sbscycled}
[[ $KEPT != "$CYCLED" && $KEPT != default ]] || { echo "KEPT must be a named instance other than CYCLED" >&2; exit 2; }
WORK=$(mktemp -d /tmp/ci-side-by-side.XXXXXX)
chmod 0755 "$WORK"
T0=$EPOCHREALTIME
FAILURES=0

since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
log() { echo "[side-by-side $SYSTEM $(since "$T0")s] $*" >&2; }
check() {   # check DESCRIPTION COMMAND...: record a failure instead of stopping at the first one
    local what=$1; shift
    if "$@"; then log "ok: $what"; else log "FAILED: $what"; FAILURES=$((FAILURES + 1)); fi
}

# ---------------------------------------------------------------- the two batch systems
# instance_env NAME: the variable that selects instance NAME for run.sh ("default": empty).
instance_env() {
    local var=SLURM_CI_INSTANCE
    [[ $SYSTEM == sge ]] && var=SGE_CI_CELL
    if [[ $1 == default ]]; then echo "$var="; else echo "$var=$1"; fi
}
run_sh() { local name=$1; shift; env "$(instance_env "$name")" SLURM_CLEAN_STATE=1 bash "$RUN" "$@"; }
# in_instance NAME COMMAND...: run a client command against instance NAME.
in_instance() {
    local name=$1; shift
    if [[ $SYSTEM == slurm ]]; then
        SLURM_CONF=$(run_sh "$name" config | sed -n '1s/^# //p') "$@"
    else
        local assignments
        assignments=$(run_sh "$name" env | sed 's/^export //')
        # shellcheck disable=SC2086  # NAME=VALUE words without spaces (printf %q)
        env -u SGE_QMASTER_PORT -u SGE_EXECD_PORT $assignments "$@"
    fi
}
# daemon_pids NAME: the pids of the running daemons, from run.sh's own pid files.
daemon_pids() { run_sh "$1" pids | awk '{ printf "%s ", $2 }'; }
submit() {   # submit NAME DIR: the heartbeat job; prints its id
    local name=$1 dir=$2 id
    if [[ $SYSTEM == slurm ]]; then
        id=$(cd "$dir" && in_instance "$name" sbatch --parsable -J "sbs-${dir##*/}" -o /dev/null -e /dev/null -t 10 "$dir/job.sh")
        echo "${id%%;*}"
    else
        (cd "$dir" && in_instance "$name" qsub -terse -N "sbs-${dir##*/}" -o /dev/null -j y -S /bin/sh "$dir/job.sh")
    fi
}
running() {   # running NAME ID: the job is in the running state
    if [[ $SYSTEM == slurm ]]; then
        [[ $(in_instance "$1" squeue -h -t all -j "$2" -o %T 2>/dev/null) == RUNNING ]]
    else
        in_instance "$1" qstat -u '*' 2>/dev/null | awk -v id="$2" '$1 == id && $5 == "r" { ok = 1 } END { exit !ok }'
    fi
}
not_restarted() {   # Slurm counts requeues; an SGE job that restarted has a new process (checked too)
    [[ $SYSTEM != slurm ]] && return 0
    [[ $(in_instance "$1" scontrol show job "$2" | tr ' ' '\n' | sed -n 's/^Restarts=//p') == 0 ]]
}

# ---------------------------------------------------------------- helpers
alive() {   # alive PID: exists and is not a zombie
    local stat
    [[ $1 =~ ^[0-9]+$ ]] || return 1
    read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != [ZXx] ]]
}
all_dead() { local p; for p in "$@"; do alive "$p" && return 1; done; return 0; }
all_alive() { local p; (( $# )) || return 1; for p in "$@"; do alive "$p" || return 1; done; return 0; }
wait_until() {   # wait_until SECONDS COMMAND...
    local deadline=$(( $(date +%s) + $1 )); shift
    until "$@"; do (( $(date +%s) < deadline )) || return 1; sleep 0.2; done
}
beating() { [[ -s $1/pid && -s $1/beat ]]; }
beat() { cat "$1/beat" 2>/dev/null || echo 0; }
beat_advances() { local b; b=$(beat "$1"); sleep 1; (( $(beat "$1") > b )); }
# start_job NAME TAG: a job that records its pid and rewrites a heartbeat file every 0.2 s;
# waits until it runs and beats, prints its id.
start_job() {
    local name=$1 dir=$WORK/$2 id
    mkdir -p "$dir"; chmod 0755 "$dir"
    cat >"$dir/job.sh" <<EOF
#!/bin/sh
echo \$\$ >$dir/pid
n=0
while :; do n=\$((n + 1)); echo \$n >$dir/beat.tmp; mv $dir/beat.tmp $dir/beat; sleep 0.2; done
EOF
    chmod 0755 "$dir/job.sh"
    id=$(submit "$name" "$dir")
    wait_until 60 running "$name" "$id" || { log "job $id of $name is not running"; return 1; }
    wait_until 30 beating "$dir" || { log "job $id of $name wrote no heartbeat"; return 1; }
    echo "$id"
}

STARTED=()
cleanup() {
    local name
    for name in "${STARTED[@]}"; do run_sh "$name" stop >/dev/null 2>&1 || log "cleanup: stop of $name failed"; done
    rm -rf "$WORK"
}
trap cleanup EXIT

OTHER=""
for name in default "$KEPT" "$CYCLED"; do
    pids=$(daemon_pids "$name")
    [[ -n ${pids// /} ]] || continue
    [[ $name == default && $CYCLED != default ]] || { echo "$SYSTEM instance $name already runs: not ours to stop" >&2; exit 2; }
    OTHER=$pids
    log "a default $SYSTEM runs already (daemons $pids): it must survive"
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
    check "$KEPT job $kept_job still running" running "$KEPT" "$kept_job"
    check "$KEPT job process $kept_pid still alive" alive "$kept_pid"
    check "$KEPT job not restarted" not_restarted "$KEPT" "$kept_job"
    check "$KEPT job still writes its heartbeat" beat_advances "$WORK/kept"
    if [[ -n $OTHER ]]; then
        # shellcheck disable=SC2086
        check "the $SYSTEM that ran before the test still runs ($OTHER)" all_alive $OTHER
    fi
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
        # shellcheck disable=SC2046  # one argument per pid
        set -- $(run_sh "$CYCLED" pids | awk '$1 != "munged" { print $2 }')
        log "SIGKILL to the daemons of $CYCLED ($*): job $cyc_job outlives them"
        kill -KILL "$@"
        wait_until 10 all_dead "$@"
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
if [[ -n $OTHER ]]; then
    # shellcheck disable=SC2086
    check "the $SYSTEM that ran before the test still runs ($OTHER)" all_alive $OTHER
fi
if (( FAILURES )); then log "$FAILURES check(s) FAILED"; exit 1; fi
log "all checks passed in $(since "$T0")s"
