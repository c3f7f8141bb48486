#!/usr/bin/env bash
# Single-node Slurm cluster on this machine (Debian 12, no systemd), for CI and tests.
#
#   ci/slurm/run.sh start    install the packages if missing, write slurm.conf, start munged,
#                            slurmctld and slurmd, wait until the node is ready and a probe job
#                            has completed. Safe to run again while the cluster is up.
#   ci/slurm/run.sh stop     cancel this cluster's jobs, stop its daemons by their pid files, then
#                            stop what is left in their sessions (job steps); nothing else.
#   ci/slurm/run.sh status   print daemons, sinfo and squeue; exit 0 if ready, 1 otherwise.
#   ci/slurm/run.sh config   print the slurm.conf that `start` would write (changes nothing).
#   ci/slurm/run.sh pids     print "DAEMON PID" for each running daemon of this instance.
#
# Environment:
#   SLURM_CI_INSTANCE  name of a second, independent cluster on the same machine ([a-z0-9]{1,16}).
#                      Empty (default): the cluster of /etc/slurm, ports 6817/6818, /run/munge.
#                      Set: everything lives under $SLURM_CI_ROOT (default
#                      /var/lib/ci-slurm/NAME): slurm.conf, state, spool, logs, pid files and
#                      its own munged (socket and key); cluster name localci-NAME. Commands reach
#                      it with SLURM_CONF=$SLURM_CI_ROOT/etc/slurm.conf (`config` prints its path
#                      in the first line).
#   SLURM_CI_PORT      slurmctld port of a named instance (slurmd uses the next one); default
#                      derived from the name, between 7100 and 7898.
#   SLURM_CLEAN_STATE  1 = wipe the controller/slurmd state before starting daemons
#                      (default: 1 when CI is set, 0 otherwise)
#   SLURM_PROBE        1 = run a probe job at the end of `start` (default 1)
#   SLURM_CPUS         CPUs advertised by the node (default 16)
#   SLURM_MIN_JOB_AGE  seconds a finished job stays visible in squeue (default 300)
#   SLURM_TIMEOUT      seconds for each wait (default 60)
#
# Everything is started directly (no systemd) and stopped by PID: the daemons' own pid files and
# the sessions they run in. Nothing is ever found or stopped by process name, so another Slurm
# (a site's, or a second instance of this script) keeps running.
set -Eeuo pipefail
trap 'rc=$?; echo "run.sh: line $LINENO: \"$BASH_COMMAND\" failed (exit $rc)" >&2' ERR

export LC_ALL=C
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH

INSTANCE=${SLURM_CI_INSTANCE:-}
if [[ -z $INSTANCE ]]; then
    CONF_DIR=/etc/slurm
    CTLD_STATE=/var/spool/slurmctld
    SLURMD_STATE=/var/spool/slurmd
    LOG_DIR=/var/log/slurm
    CTLD_PID=/run/slurmctld.pid
    SLURMD_PID=/run/slurmd.pid
    MUNGE_RUN=/run/munge
    MUNGE_KEY=/etc/munge/munge.key
    MUNGE_SOCKET=$MUNGE_RUN/munge.socket.2
    MUNGED_ARGS=()
    CTLD_PORT=6817
    CLUSTER=localci
else
    if [[ ! $INSTANCE =~ ^[a-z0-9]{1,16}$ ]]; then
        echo "run.sh: SLURM_CI_INSTANCE must be 1-16 characters a-z 0-9, not '$INSTANCE'" >&2
        exit 2
    fi
    ROOT=${SLURM_CI_ROOT:-/var/lib/ci-slurm/$INSTANCE}
    [[ $ROOT == /* ]] || { echo "run.sh: SLURM_CI_ROOT must be an absolute path" >&2; exit 2; }
    CONF_DIR=$ROOT/etc
    CTLD_STATE=$ROOT/ctld
    SLURMD_STATE=$ROOT/slurmd
    LOG_DIR=$ROOT/log
    CTLD_PID=$ROOT/run/slurmctld.pid
    SLURMD_PID=$ROOT/run/slurmd.pid
    MUNGE_RUN=$ROOT/munge-run             # socket and pid file: readable by every user
    MUNGE_PRIVATE=$ROOT/munge             # key, seed and log: munge only
    MUNGE_KEY=$MUNGE_PRIVATE/munge.key
    MUNGE_SOCKET=$MUNGE_RUN/munge.socket
    MUNGED_ARGS=(--socket="$MUNGE_SOCKET" --key-file="$MUNGE_KEY" --pid-file="$MUNGE_RUN/munged.pid"
                 --log-file="$MUNGE_PRIVATE/munged.log" --seed-file="$MUNGE_PRIVATE/munged.seed")
    # A port pair per name, so that two named instances rarely collide; SLURM_CI_PORT overrides.
    CTLD_PORT=${SLURM_CI_PORT:-$(( 7100 + 2 * ($(cksum <<<"$INSTANCE" | cut -d' ' -f1) % 400) ))}
    [[ $CTLD_PORT =~ ^[0-9]+$ ]] && (( CTLD_PORT >= 1024 && CTLD_PORT < 65535 )) \
        || { echo "run.sh: SLURM_CI_PORT must be a port number 1024-65534" >&2; exit 2; }
    CLUSTER=localci-$INSTANCE
fi
SLURMD_PORT=$(( CTLD_PORT + 1 ))
CONF=$CONF_DIR/slurm.conf
JOBCOMP_LOG=$LOG_DIR/jobcomp.log
MUNGE_PID=$MUNGE_RUN/munged.pid
# Every command below (scontrol, squeue, scancel, sbatch) and the daemons use this cluster only,
# whatever SLURM_CONF the caller had.
export SLURM_CONF=$CONF MUNGE_SOCKET

PACKAGES=(slurmctld slurmd slurm-client munge)
NODE=$(hostname -s)
CPUS=${SLURM_CPUS:-16}
MIN_JOB_AGE=${SLURM_MIN_JOB_AGE:-300}
TIMEOUT=${SLURM_TIMEOUT:-60}
PROBE=${SLURM_PROBE:-1}
if [[ -n ${CI:-} ]]; then CLEAN_STATE=${SLURM_CLEAN_STATE:-1}; else CLEAN_STATE=${SLURM_CLEAN_STATE:-0}; fi

T_SCRIPT=$(date +%s.%N)

# ---------------------------------------------------------------- helpers
TAG=slurm${INSTANCE:+ $INSTANCE}
# shellcheck source=../lib/procs.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/procs.sh"

# pid_from_file FILE COMM: print the PID if the file names a live process called COMM.
pid_from_file() {
    local file=$1 comm=$2 pid
    [[ -r $file ]] || return 1
    pid=$(tr -dc '0-9' <"$file")
    pid_alive "$pid" "$comm" || return 1
    echo "$pid"
}

# our_sessions: the sessions of this instance's daemons and job steps. Each daemon detaches into
# a session of its own; each slurmstepd makes one for itself and its job.
our_sessions() {
    local pid sid
    for pid in $(ctld_pid || true) $(slurmd_pid || true) $(munged_pid || true) $(step_pids); do
        sid=$(session_of "$pid") || continue
        (( sid > 1 )) && echo "$sid"
    done
    return 0
}

# step_pids: this instance's slurmstepd processes. Each listens on a socket NODE_JOB.STEP in our
# SlurmdSpoolDir (a path no other Slurm uses) and runs in a session of its own, with its job.
step_pids() { socket_pids "$SLURMD_STATE"; }

# ours PID OPTION VALUE: the process was not started for another instance: its command line has
# OPTION VALUE; for the default instance it may also have no OPTION at all (daemons started by
# an earlier version of this script, or by hand).
ours() {
    local arg next=0 found=""
    while IFS= read -r -d '' arg; do
        if (( next )); then found=$arg; break; fi
        case $arg in
            "$2") next=1 ;;
            "$2"=*) found=${arg#*=}; break ;;
        esac
    done 2>/dev/null <"/proc/$1/cmdline"
    [[ $found == "$3" || ( -z $found && -z $INSTANCE ) ]]
}
# The daemons' own pid files, checked: a live process with the daemon's name, of this instance.
ctld_pid() { local p; p=$(pid_from_file "$CTLD_PID" slurmctld) && ours "$p" -f "$CONF" && echo "$p"; }
slurmd_pid() { local p; p=$(pid_from_file "$SLURMD_PID" slurmd) && ours "$p" -f "$CONF" && echo "$p"; }
munged_pid() {
    local p; p=$(pid_from_file "$MUNGE_PID" munged) && ours "$p" --socket "$MUNGE_SOCKET" && echo "$p"
}

# node_field KEY: value of KEY=... in `scontrol show node`.
node_field() {
    scontrol show node "$NODE" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$1=//p" | head -n1
}

# node_usable: node state is IDLE/MIXED/ALLOCATED/COMPLETING without a bad flag.
node_usable() {
    local st; st=$(node_field State)
    [[ $st =~ ^(IDLE|MIXED|ALLOCATED|COMPLETING) ]] || return 1
    [[ $st =~ DRAIN|DOWN|FAIL|NOT_RESPONDING|INVAL|POWER|REBOOT ]] && return 1
    return 0
}

# node_fresh EPOCH: node usable and slurmd registered at or after EPOCH (whole seconds).
node_fresh() {
    local since_epoch=$1 t
    node_usable || return 1
    t=$(node_field SlurmdStartTime)
    [[ -n $t && $t != None && $t != Unknown ]] || return 1
    t=$(date -d "$t" +%s 2>/dev/null) || return 1
    (( t >= since_epoch ))
}

node_idle_fresh() {
    [[ $(node_field State) == IDLE ]] && node_fresh "$1"
}

# stop_pid NAME PID: SIGTERM, wait, then SIGKILL.
stop_pid() {
    local name=$1 pid=$2 t0 i
    t0=$(now)
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        pid_alive "$pid" || { log "  stopped $name (pid $pid, $(since "$t0"))"; return 0; }
        sleep 0.1
    done
    log "  $name (pid $pid) ignored SIGTERM for 15s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        pid_alive "$pid" || { log "  killed $name (pid $pid, $(since "$t0"))"; return 0; }
        sleep 0.1
    done
    die "$name (pid $pid) survived SIGKILL"
}

# ---------------------------------------------------------------- install
install_packages() {
    local missing=() p t0
    for p in "${PACKAGES[@]}"; do
        if [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) != "install ok installed" ]]; then
            missing+=("$p")
        fi
    done
    if ((${#missing[@]} == 0)); then
        log "packages already installed: ${PACKAGES[*]}"
        return 0
    fi
    t0=$(now)
    log "installing packages: ${missing[*]}"
    local apt=(apt-get -o DPkg::Lock::Timeout=300 -q)
    if ! apt-cache policy "${missing[@]}" 2>/dev/null | grep -c 'Candidate: [0-9]' >/dev/null; then
        log "  no package candidate known, running apt-get update"
        "${apt[@]}" update >/dev/null
    fi
    if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends \
            "${PACKAGES[@]}" >/tmp/slurm-apt-install.log 2>&1; then
        log "  install failed, retrying after apt-get update"
        "${apt[@]}" update >/dev/null
        DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends \
            "${PACKAGES[@]}" >/tmp/slurm-apt-install.log 2>&1 \
            || { tail -n 30 /tmp/slurm-apt-install.log >&2; die "apt-get install failed"; }
    fi
    log "  installed in $(since "$t0")"
}

# ---------------------------------------------------------------- config
# config_text: the slurm.conf of this instance on stdout.
config_text() {
    local mem_kb real_mem
    mem_kb=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
    real_mem=$(( mem_kb / 1024 - 512 ))
    (( real_mem > 0 )) || real_mem=1
    # Quoted heredoc: nothing in the text below is expanded; placeholders are filled by sed.
    sed -e "s|@NODE@|$NODE|g" -e "s|@CTLD_STATE@|$CTLD_STATE|g" \
        -e "s|@SLURMD_STATE@|$SLURMD_STATE|g" -e "s|@CTLD_PID@|$CTLD_PID|g" \
        -e "s|@SLURMD_PID@|$SLURMD_PID|g" -e "s|@LOG_DIR@|$LOG_DIR|g" \
        -e "s|@JOBCOMP_LOG@|$JOBCOMP_LOG|g" -e "s|@MIN_JOB_AGE@|$MIN_JOB_AGE|g" \
        -e "s|@CPUS@|$CPUS|g" -e "s|@REAL_MEM@|$real_mem|g" -e "s|@CLUSTER@|$CLUSTER|g" <<'EOF'
# Written by ci/slurm/run.sh: a single-node cluster on localhost for tests.
ClusterName=@CLUSTER@
SlurmctldHost=@NODE@(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=@CTLD_STATE@
SlurmdSpoolDir=@SLURMD_STATE@
SlurmctldPidFile=@CTLD_PID@
SlurmdPidFile=@SLURMD_PID@
SlurmctldLogFile=@LOG_DIR@/slurmctld.log
SlurmdLogFile=@LOG_DIR@/slurmd.log
# No cgroups, no systemd.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# Finished jobs are appended here, so that "sacct -c" works without slurmdbd.
JobCompType=jobcomp/filetxt
JobCompLoc=@JOBCOMP_LOG@
MpiDefault=none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=2
# Reject impossible requests at submit time instead of leaving them pending forever.
EnforcePartLimits=ALL
ReturnToService=2
# Lets the node advertise more CPUs than the hardware has.
SlurmdParameters=config_overrides
KillWait=5
MinJobAge=@MIN_JOB_AGE@
InactiveLimit=0
SlurmdTimeout=300
NodeName=@NODE@ NodeAddr=127.0.0.1 CPUs=@CPUS@ RealMemory=@REAL_MEM@ State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=small Nodes=ALL MaxNodes=1 MaxTime=INFINITE State=UP
EOF
    if [[ -n $INSTANCE ]]; then
        # A second cluster on this machine: its own ports and its own munged (the controller,
        # slurmd, slurmstepd and every client command read AuthInfo from this file).
        echo "# Instance $INSTANCE (SLURM_CI_INSTANCE): own ports and munge socket."
        echo "SlurmctldPort=$CTLD_PORT"
        echo "SlurmdPort=$SLURMD_PORT"
        echo "AuthInfo=socket=$MUNGE_SOCKET"
    fi
}

write_config() {
    local tmp
    mkdir -p "$CONF_DIR"
    tmp=$(mktemp)
    config_text >"$tmp"
    if [[ -f $CONF ]] && cmp -s "$tmp" "$CONF"; then
        rm -f "$tmp"
        CONF_CHANGED=0
        log "slurm.conf unchanged ($CONF)"
    else
        install -m 0644 "$tmp" "$CONF"
        rm -f "$tmp"
        CONF_CHANGED=1
        log "wrote $CONF (cluster $CLUSTER, node $NODE, ports $CTLD_PORT/$SLURMD_PORT, CPUs=$CPUS, MinJobAge=$MIN_JOB_AGE)"
    fi
}

prepare_dirs() {
    [[ -z $INSTANCE ]] || install -d -m 0755 "$ROOT" "$ROOT/run"
    mkdir -p "$CTLD_STATE" "$SLURMD_STATE" "$LOG_DIR"
    chown slurm:slurm "$CTLD_STATE" "$LOG_DIR"
    chmod 0755 "$CTLD_STATE" "$SLURMD_STATE" "$LOG_DIR"
    touch "$JOBCOMP_LOG"
    chown slurm:slurm "$JOBCOMP_LOG"
    chmod 0644 "$JOBCOMP_LOG"
    install -d -o munge -g munge -m 0755 "$MUNGE_RUN"
    if [[ -n $INSTANCE ]]; then
        install -d -o munge -g munge -m 0700 "$MUNGE_PRIVATE"
    fi
}

clean_state() {
    log "wiping state: $CTLD_STATE/* $SLURMD_STATE/* $JOBCOMP_LOG"
    rm -rf "${CTLD_STATE:?}"/* "${SLURMD_STATE:?}"/*
    : >"$JOBCOMP_LOG"
}

# ---------------------------------------------------------------- daemons
# port_free PORT: nothing listens on the TCP port.
port_free() { [[ -z $(ss -Hltn "sport = :$1" 2>/dev/null) ]]; }
port_user() { ss -Hltnp "sport = :$1" 2>/dev/null | tr -s ' ' | tr '\n' ' '; }

start_munged() {
    local pid t0
    if pid=$(munged_pid); then
        log "munged already running (pid $pid)"
        return 0
    fi
    t0=$(now)
    if [[ ! -s $MUNGE_KEY ]]; then
        log "creating $MUNGE_KEY"
        install -d -o munge -g munge -m 0700 "$(dirname "$MUNGE_KEY")"
        dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
        chown munge:munge "$MUNGE_KEY"
        chmod 0400 "$MUNGE_KEY"
    fi
    # Stale files from a killed munged would make it refuse to start.
    rm -f "$MUNGE_PID" "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    runuser -u munge -- /usr/sbin/munged "${MUNGED_ARGS[@]}"
    wait_for "$TIMEOUT" "munged answers on $MUNGE_SOCKET" bash -c \
        'munge -S "$MUNGE_SOCKET" -n </dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1'
    pid=$(munged_pid) || die "munged answers but $MUNGE_PID names no live munged"
    log "started munged (pid $pid, $(since "$t0"))"
}

start_slurmctld() {
    local pid t0
    if pid=$(ctld_pid); then
        log "slurmctld already running (pid $pid)"
        return 0
    fi
    t0=$(now)
    port_free "$CTLD_PORT" || die "port $CTLD_PORT (SlurmctldPort) is in use: $(port_user "$CTLD_PORT")"
    rm -f "$CTLD_PID"
    /usr/sbin/slurmctld -f "$CONF"
    wait_for "$TIMEOUT" "slurmctld pid file" quiet ctld_pid
    wait_for "$TIMEOUT" "slurmctld answers" bash -c 'scontrol ping 2>/dev/null | grep -q UP'
    log "started slurmctld (pid $(ctld_pid || echo '?'), $(since "$t0"))"
}

start_slurmd() {
    local pid t0
    if pid=$(slurmd_pid); then
        log "slurmd already running (pid $pid)"
        return 0
    fi
    t0=$(now)
    SLURMD_STARTED_AT=$(date +%s)
    port_free "$SLURMD_PORT" || die "port $SLURMD_PORT (SlurmdPort) is in use: $(port_user "$SLURMD_PORT")"
    rm -f "$SLURMD_PID"
    /usr/sbin/slurmd -f "$CONF"
    wait_for "$TIMEOUT" "slurmd pid file" quiet slurmd_pid
    log "started slurmd (pid $(slurmd_pid || echo '?'), $(since "$t0"))"
}

wait_node_ready() {
    local t0; t0=$(now)
    if [[ -n ${SLURMD_STARTED_AT:-} ]]; then
        if [[ $CLEAN_STATE == 1 ]]; then
            wait_for "$TIMEOUT" "node $NODE IDLE, registered after slurmd start" \
                node_idle_fresh "$SLURMD_STARTED_AT" && return 0
        else
            # Recovered jobs may keep the node MIXED/ALLOCATED.
            wait_for "$TIMEOUT" "node $NODE usable, registered after slurmd start" \
                node_fresh "$SLURMD_STARTED_AT" && return 0
        fi
    else
        wait_for "$TIMEOUT" "node $NODE usable" node_usable && return 0
    fi
    # A node left DOWN/DRAIN by an earlier run: resume it once, then wait again.
    log "node state is '$(node_field State)' (reason: $(node_field Reason)); trying to resume it"
    scontrol update NodeName="$NODE" State=RESUME || true
    wait_for "$TIMEOUT" "node $NODE usable after resume" node_usable \
        || die "node $NODE is not usable: $(scontrol show node "$NODE" 2>&1 | tr '\n' ' ')"
}

run_probe() {
    local t0 id st deadline
    t0=$(now)
    id=$(cd /tmp && sbatch --parsable -J ci-probe -o /dev/null -e /dev/null -t 00:01:00 --wrap 'true')
    id=${id%%;*}
    deadline=$(( $(date +%s) + TIMEOUT ))
    while :; do
        st=$(squeue -h -t all -j "$id" -o %T 2>/dev/null || true)
        case $st in
            COMPLETED) break ;;
            FAILED|CANCELLED*|TIMEOUT|NODE_FAIL|BOOT_FAIL|OUT_OF_MEMORY|PREEMPTED|DEADLINE)
                die "probe job $id ended in state $st" ;;
        esac
        if (( $(date +%s) >= deadline )); then
            scancel "$id" 2>/dev/null || true
            die "probe job $id not COMPLETED after ${TIMEOUT}s (last state: ${st:-none})"
        fi
        sleep 0.1
    done
    log "probe job $id COMPLETED ($(since "$t0") from submit)"
}

# ---------------------------------------------------------------- commands
cmd_start() {
    log "start: node=$NODE clean_state=$CLEAN_STATE probe=$PROBE"
    install_packages
    CONF_CHANGED=0
    write_config
    if [[ $CONF_CHANGED == 1 ]] && { ctld_pid >/dev/null || slurmd_pid >/dev/null; }; then
        log "configuration changed while daemons run: restarting them"
        stop_daemons
    fi
    prepare_dirs
    if [[ $CLEAN_STATE == 1 ]]; then
        if ctld_pid >/dev/null || slurmd_pid >/dev/null; then
            log "daemons already running: keeping their state (SLURM_CLEAN_STATE ignored)"
        else
            clean_state
        fi
    fi
    start_munged
    start_slurmctld
    start_slurmd
    wait_node_ready
    if [[ $PROBE == 1 ]]; then run_probe; fi
    log "start done in $(since "$T_SCRIPT"): slurmctld $(ctld_pid), slurmd $(slurmd_pid), munged $(munged_pid)"
}

cancel_all_jobs() {
    local users u t0
    ctld_pid >/dev/null || return 0
    command -v squeue >/dev/null || return 0
    users=$(squeue -h -o %u 2>/dev/null | sort -u || true)
    [[ -n $users ]] || { log "no jobs to cancel"; return 0; }
    t0=$(now)
    for u in $users; do
        scancel --user="$u" 2>/dev/null || true
    done
    # Wait for the jobs to leave RUNNING/COMPLETING, so no step is orphaned.
    wait_for 30 "jobs of $(echo $users | tr ' ' ',') cancelled" \
        bash -c '[[ -z $(squeue -h -t pending,running,suspended,completing -o %i 2>/dev/null) ]]' \
        || log "  some jobs are still listed; continuing"
    log "cancelled jobs ($(since "$t0"))"
}

stop_daemons() {
    local pid
    if pid=$(slurmd_pid); then stop_pid slurmd "$pid"; fi
    if pid=$(ctld_pid); then stop_pid slurmctld "$pid"; fi
}


cmd_stop() {
    local pid left sessions i
    log "stop"
    cancel_all_jobs
    # Sessions before the daemons go: afterwards the pid files name nothing.
    mapfile -t sessions < <(our_sessions | sort -un)
    stop_daemons
    if pid=$(munged_pid); then stop_pid munged "$pid"; fi
    mapfile -t sessions < <({ printf '%s\n' "${sessions[@]}"; our_sessions; } | sed '/^$/d' | sort -un)
    # What is left are job steps whose slurmd is gone (an orphaned slurmstepd ignores SIGTERM):
    # as long a grace as the KillWait of slurm.conf.
    # shellcheck disable=SC2046  # one argument per pid
    stop_pids 5 $(pids_in_sessions "${sessions[@]}")
    for ((i = 0; i < 50; i++)); do
        left=$(pids_in_sessions "${sessions[@]}" | tr '\n' ' ')
        [[ -n ${left// /} ]] || break
        sleep 0.1
    done
    [[ -z ${left// /} ]] || die "processes still running in sessions ${sessions[*]}: $left"
    rm -f "$CTLD_PID" "$SLURMD_PID"
    log "stop done in $(since "$T_SCRIPT"); nothing left in our sessions (${sessions[*]:-none})"
}

cmd_status() {
    local ok=0 pid
    if pid=$(munged_pid); then echo "munged: running (pid $pid)"; else echo "munged: not running"; ok=1; fi
    if pid=$(ctld_pid); then echo "slurmctld: running (pid $pid)"; else echo "slurmctld: not running"; ok=1; fi
    if pid=$(slurmd_pid); then echo "slurmd: running (pid $pid)"; else echo "slurmd: not running"; ok=1; fi
    if ctld_pid >/dev/null && command -v sinfo >/dev/null; then
        echo "--- sinfo"; sinfo 2>&1 || ok=1
        echo "--- squeue"; squeue 2>&1 || ok=1
        node_usable || { echo "node $NODE not usable: state $(node_field State)"; ok=1; }
    fi
    if ((ok == 0)); then echo "status: ready"; else echo "status: NOT ready"; fi
    exit "$ok"
}

case ${1:-} in
    start) cmd_start ;;
    install) install_packages ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    config) echo "# $CONF"; config_text ;;
    pids) for d in ctld slurmd munged; do p=$("${d}_pid") && echo "${d/ctld/slurmctld} $p"; done; true ;;
    *) echo "usage: $0 start|stop|status|config|pids|install" >&2; exit 2 ;;
esac
