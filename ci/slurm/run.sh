#!/usr/bin/env bash
# Single-node Slurm cluster on this machine (Debian 12, no systemd), for CI and tests.
#
#   ci/slurm/run.sh start    install the packages if missing, write slurm.conf, start munged,
#                            slurmctld and slurmd, wait until the node is ready and a probe job
#                            has completed. Safe to run again while the cluster is up.
#   ci/slurm/run.sh stop     cancel all jobs, stop the daemons, check that nothing is left.
#   ci/slurm/run.sh status   print daemons, sinfo and squeue; exit 0 if ready, 1 otherwise.
#
# Environment:
#   SLURM_CLEAN_STATE  1 = wipe the controller/slurmd state before starting daemons
#                      (default: 1 when CI is set, 0 otherwise)
#   SLURM_PROBE        1 = run a probe job at the end of `start` (default 1)
#   SLURM_CPUS         CPUs advertised by the node (default 16)
#   SLURM_MIN_JOB_AGE  seconds a finished job stays visible in squeue (default 300)
#   SLURM_TIMEOUT      seconds for each wait (default 60)
#
# Everything is started directly (no systemd) and stopped by PID.
set -Eeuo pipefail
trap 'rc=$?; echo "run.sh: line $LINENO: \"$BASH_COMMAND\" failed (exit $rc)" >&2' ERR

export LC_ALL=C
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH

CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
CTLD_STATE=/var/spool/slurmctld
SLURMD_STATE=/var/spool/slurmd
LOG_DIR=/var/log/slurm
JOBCOMP_LOG=$LOG_DIR/jobcomp.log
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_RUN=/run/munge
MUNGE_PID=$MUNGE_RUN/munged.pid
MUNGE_KEY=/etc/munge/munge.key

PACKAGES=(slurmctld slurmd slurm-client munge)
NODE=$(hostname -s)
CPUS=${SLURM_CPUS:-16}
MIN_JOB_AGE=${SLURM_MIN_JOB_AGE:-300}
TIMEOUT=${SLURM_TIMEOUT:-60}
PROBE=${SLURM_PROBE:-1}
if [[ -n ${CI:-} ]]; then CLEAN_STATE=${SLURM_CLEAN_STATE:-1}; else CLEAN_STATE=${SLURM_CLEAN_STATE:-0}; fi

T_SCRIPT=$(date +%s.%N)

# ---------------------------------------------------------------- helpers
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2fs", b - a }'; }
log() { echo "[slurm $(since "$T_SCRIPT")] $*"; }
die() { echo "[slurm $(since "$T_SCRIPT")] ERROR: $*" >&2; exit 1; }

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.1 s until it succeeds.
wait_for() {
    local limit=$1 what=$2; shift 2
    local t0; t0=$(now)
    local deadline=$(( $(date +%s) + limit ))
    while ! "$@"; do
        if (( $(date +%s) >= deadline )); then
            echo "[slurm] timed out after ${limit}s waiting for: $what" >&2
            return 1
        fi
        sleep 0.1
    done
    log "  $what ($(since "$t0"))"
}

quiet() { "$@" >/dev/null 2>&1; }

# pid_alive PID [COMM]: the process exists, is not a zombie/dead, and (if given) has that name.
pid_alive() {
    local pid=$1 comm=${2:-} stat state
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    state=${stat##*) }
    state=${state%% *}
    [[ $state == Z || $state == X || $state == x ]] && return 1
    if [[ -n $comm ]]; then
        [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$comm" ]] || return 1
    fi
    return 0
}

# pid_from_file FILE COMM: print the PID if the file names a live process called COMM.
pid_from_file() {
    local file=$1 comm=$2 pid
    [[ -r $file ]] || return 1
    pid=$(tr -dc '0-9' <"$file")
    pid_alive "$pid" "$comm" || return 1
    echo "$pid"
}

# pids_by_comm NAME...: live (non-zombie) PIDs whose /proc/PID/comm is one of the names.
pids_by_comm() {
    local d pid comm name
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        comm=$(cat "$d/comm" 2>/dev/null) || continue
        for name in "$@"; do
            if [[ $comm == "$name" ]] && pid_alive "$pid"; then echo "$pid"; fi
        done
    done
}

ctld_pid() { pid_from_file "$CTLD_PID" slurmctld; }
slurmd_pid() { pid_from_file "$SLURMD_PID" slurmd; }
munged_pid() { pid_from_file "$MUNGE_PID" munged; }

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
write_config() {
    local mem_kb real_mem tmp
    mem_kb=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
    real_mem=$(( mem_kb / 1024 - 512 ))
    (( real_mem > 0 )) || real_mem=1
    mkdir -p "$CONF_DIR"
    tmp=$(mktemp)
    # Quoted heredoc: nothing in the text below is expanded; placeholders are filled by sed.
    cat >"$tmp" <<'EOF'
# Written by ci/slurm/run.sh: a single-node cluster on localhost for tests.
ClusterName=localci
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
    sed -i -e "s|@NODE@|$NODE|g" -e "s|@CTLD_STATE@|$CTLD_STATE|g" \
        -e "s|@SLURMD_STATE@|$SLURMD_STATE|g" -e "s|@CTLD_PID@|$CTLD_PID|g" \
        -e "s|@SLURMD_PID@|$SLURMD_PID|g" -e "s|@LOG_DIR@|$LOG_DIR|g" \
        -e "s|@JOBCOMP_LOG@|$JOBCOMP_LOG|g" -e "s|@MIN_JOB_AGE@|$MIN_JOB_AGE|g" \
        -e "s|@CPUS@|$CPUS|g" -e "s|@REAL_MEM@|$real_mem|g" "$tmp"
    if [[ -f $CONF ]] && cmp -s "$tmp" "$CONF"; then
        rm -f "$tmp"
        CONF_CHANGED=0
        log "slurm.conf unchanged ($CONF)"
    else
        install -m 0644 "$tmp" "$CONF"
        rm -f "$tmp"
        CONF_CHANGED=1
        log "wrote $CONF (node $NODE, CPUs=$CPUS, RealMemory=${real_mem}MB, MinJobAge=$MIN_JOB_AGE)"
    fi
}

prepare_dirs() {
    mkdir -p "$CTLD_STATE" "$SLURMD_STATE" "$LOG_DIR"
    chown slurm:slurm "$CTLD_STATE" "$LOG_DIR"
    chmod 0755 "$CTLD_STATE" "$SLURMD_STATE" "$LOG_DIR"
    touch "$JOBCOMP_LOG"
    chown slurm:slurm "$JOBCOMP_LOG"
    chmod 0644 "$JOBCOMP_LOG"
    install -d -o munge -g munge -m 0755 "$MUNGE_RUN"
}

clean_state() {
    log "wiping state: $CTLD_STATE/* $SLURMD_STATE/* $JOBCOMP_LOG"
    rm -rf "${CTLD_STATE:?}"/* "${SLURMD_STATE:?}"/*
    : >"$JOBCOMP_LOG"
}

# ---------------------------------------------------------------- daemons
start_munged() {
    local pid t0
    if pid=$(munged_pid); then
        log "munged already running (pid $pid)"
        return 0
    fi
    t0=$(now)
    if [[ ! -s $MUNGE_KEY ]]; then
        log "creating $MUNGE_KEY"
        install -d -o munge -g munge -m 0700 /etc/munge
        dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
        chown munge:munge "$MUNGE_KEY"
        chmod 0400 "$MUNGE_KEY"
    fi
    # Stale files from a killed munged would make it refuse to start.
    rm -f "$MUNGE_PID" "$MUNGE_RUN"/munge.socket.2 "$MUNGE_RUN"/munge.socket.2.lock
    runuser -u munge -- /usr/sbin/munged
    wait_for "$TIMEOUT" "munged answers" bash -c 'munge -n </dev/null | unmunge >/dev/null 2>&1'
    log "started munged (pid $(munged_pid || echo '?'), $(since "$t0"))"
}

start_slurmctld() {
    local pid t0
    if pid=$(ctld_pid); then
        log "slurmctld already running (pid $pid)"
        return 0
    fi
    t0=$(now)
    rm -f "$CTLD_PID"
    /usr/sbin/slurmctld
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
    rm -f "$SLURMD_PID"
    /usr/sbin/slurmd
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
    local pid left t0
    log "stop"
    cancel_all_jobs
    stop_daemons
    if pid=$(munged_pid); then stop_pid munged "$pid"; fi
    # Job steps are not children of slurmd; give them a moment, then stop leftovers.
    for pid in $(pids_by_comm slurmstepd slurmscriptd slurmctld slurmd munged); do
        log "  leftover $(cat "/proc/$pid/comm" 2>/dev/null || echo process) pid $pid"
        stop_pid "$(cat "/proc/$pid/comm" 2>/dev/null || echo process)" "$pid"
    done
    t0=$(now)
    left=$(pids_by_comm slurmstepd slurmscriptd slurmctld slurmd munged | tr '\n' ' ')
    [[ -z ${left// /} ]] || die "processes still running: $left"
    rm -f "$CTLD_PID" "$SLURMD_PID"
    log "stop done in $(since "$T_SCRIPT"); no slurm/munge processes left"
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
    *) echo "usage: $0 start|stop|status|install" >&2; exit 2 ;;
esac
