# Process helpers shared by the CI scripts that start and stop daemons (sourced, not run).
#
# The caller sets TAG (the prefix of its log lines) and T_SCRIPT (its start, `date +%s.%N`)
# before calling log, die or wait_for. Nothing here finds a process by its name alone: callers
# identify their daemons by pid files and arguments, their job steps by sockets under their
# own spool directories (socket_pids), so another instance on the same machine is never hit.

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2fs", b - a }'; }
log() { echo "[$TAG $(since "$T_SCRIPT")] $*"; }
die() { echo "[$TAG $(since "$T_SCRIPT")] ERROR: $*" >&2; exit 1; }
quiet() { "$@" >/dev/null 2>&1; }

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.1 s until it succeeds.
wait_for() {
    local limit=$1 what=$2 t0 deadline
    shift 2
    t0=$(now)
    deadline=$(( $(date +%s) + limit ))
    while ! "$@"; do
        if (( $(date +%s) >= deadline )); then
            echo "[$TAG] timed out after ${limit}s waiting for: $what" >&2
            return 1
        fi
        sleep 0.1
    done
    log "  $what ($(since "$t0"))"
}

# pid_alive PID [COMM]: the process exists, is not a zombie/dead, and (if given) has that name.
pid_alive() {
    local pid=$1 comm=${2:-} stat state
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    state=${stat##*) }
    state=${state%% *}
    [[ $state == Z || $state == X || $state == x ]] && return 1
    [[ -z $comm || $(cat "/proc/$pid/comm" 2>/dev/null) == "$comm" ]]
}

# session_of PID: the session id of a live process.
session_of() {
    local stat
    pid_alive "$1" || return 1
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }                       # "STATE PPID PGRP SESSION ..."
    read -r _ _ _ stat _ <<<"$stat"
    echo "$stat"
}

# socket_pids DIR: processes holding a unix socket whose path starts with DIR/ (a Slurm
# instance's slurmstepd processes listen in its SlurmdSpoolDir, a path no other instance uses).
socket_pids() {
    local inodes=() ino expr=()
    mapfile -t inodes < <(awk -v dir="$1/" 'index($8, dir) == 1 { print $7 }' /proc/net/unix)
    (( ${#inodes[@]} )) || return 0
    for ino in "${inodes[@]}"; do
        (( ${#expr[@]} )) && expr+=(-o)
        expr+=(-lname "socket:\\[$ino\\]")
    done
    # find complains about processes that end while it reads /proc: not an error here.
    { find /proc/[0-9]*/fd -mindepth 1 -maxdepth 1 \( "${expr[@]}" \) 2>/dev/null || true; } \
        | cut -d/ -f3 | sort -un
}

# pids_in_sessions SID...: live processes (not this script) in one of the sessions.
pids_in_sessions() {
    local f line pid rest state sid want
    (( $# )) || return 0
    want=" $* "
    for f in /proc/[0-9]*/stat; do
        read -r line 2>/dev/null <"$f" || continue
        pid=${f#/proc/}; pid=${pid%/stat}
        [[ $pid == "$$" ]] && continue
        rest=${line##*) }                   # "STATE PPID PGRP SESSION ..."
        read -r state _ _ sid _ <<<"$rest"
        [[ $state == Z || $state == X || $state == x ]] && continue
        [[ $want == *" $sid "* ]] && echo "$pid"
    done
    return 0
}

# stop_pids GRACE PID...: SIGTERM to all, wait up to GRACE seconds, then SIGKILL what is left.
stop_pids() {
    local grace=$1 pid alive i t0
    shift
    (( $# )) || return 0
    t0=$(now)
    for pid in "$@"; do
        log "  stopping $(cat "/proc/$pid/comm" 2>/dev/null || echo process) pid $pid"
        kill -TERM "$pid" 2>/dev/null || true
    done
    for ((i = 0; i < grace * 10; i++)); do
        alive=()
        for pid in "$@"; do pid_alive "$pid" && alive+=("$pid"); done
        (( ${#alive[@]} )) || { log "  stopped $# process(es) in $(since "$t0")"; return 0; }
        sleep 0.1
    done
    log "  still alive after SIGTERM for ${grace}s, sending SIGKILL: ${alive[*]}"
    kill -KILL "${alive[@]}" 2>/dev/null || true
}
