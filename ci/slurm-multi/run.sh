#!/usr/bin/env bash
# A second Slurm cluster on this machine: 3 nodes (one slurmd each: n1, n2, n3), 2 fake GPUs per
# node (of type "fakegpu": gres.conf Type=, so --gpus=fakegpu:2 and --gpus=2 both run),
# partitions cpu (default), gpu, low (preemptible by requeue) and high. Independent of the
# single-node cluster of ci/slurm/run.sh: its own slurm.conf, ports, munged, state, logs and pid
# files, all under $SLURM_MULTI_ROOT. Both can run at the same time.
#
#   ci/slurm-multi/run.sh install  the Debian packages (the same as ci/slurm/run.sh install)
#   ci/slurm-multi/run.sh start    write the config, start munged, slurmctld and the 3 slurmd,
#                                  wait until n1..n3 are IDLE and a probe job over the 3 nodes
#                                  has COMPLETED. Safe to run again while the cluster is up.
#   ci/slurm-multi/run.sh stop     cancel this cluster's jobs, stop its daemons by their pid
#                                  files, then what is left in their sessions (job steps).
#   ci/slurm-multi/run.sh status   daemons, sinfo, squeue; exit 0 if all 3 nodes are usable.
#   ci/slurm-multi/run.sh config   print slurm.conf and gres.conf (changes nothing).
#   ci/slurm-multi/run.sh conf     print the path of slurm.conf (for SLURM_CONF=...).
#
# Commands reach this cluster with SLURM_CONF=$SLURM_MULTI_ROOT/etc/slurm.conf.
#
# Environment:
#   SLURM_MULTI_ROOT   where everything lives (default /var/lib/ci-slurm-multi)
#   SLURM_MULTI_PORT   slurmctld port (default 6850); the slurmd of n1..n3 use the next three
#   SLURM_TIMEOUT      seconds for each wait (default 60)
#   SLURM_MULTI_GPU_FILES  the 2 devices behind each node's fake GPUs (gres.conf File=;
#                      default /dev/tty[0-1]; e.g. /dev/zero,/dev/full where there is no tty0)
#
# Why a munged of its own: ci/slurm/run.sh stop ends the machine's munged (/run/munge), which
# would cut this cluster off in the middle of a CI lane running beside it. A second munged on
# its own socket and key costs nothing; slurm.conf names the socket (AuthInfo), so the daemons,
# slurmstepd and every client command given this SLURM_CONF use it.
#
# Nothing is found or stopped by process name: only by the pid files of this cluster and the
# sessions of those processes, so the other Slurm keeps running.
set -Eeuo pipefail
trap 'rc=$?; echo "slurm-multi/run.sh: line $LINENO: \"$BASH_COMMAND\" failed (exit $rc)" >&2' ERR

export LC_ALL=C
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

ROOT=${SLURM_MULTI_ROOT:-/var/lib/ci-slurm-multi}
[[ $ROOT == /* ]] || { echo "run.sh: SLURM_MULTI_ROOT must be an absolute path" >&2; exit 2; }
CTLD_PORT=${SLURM_MULTI_PORT:-6850}
[[ $CTLD_PORT =~ ^[0-9]+$ ]] && (( CTLD_PORT >= 1024 && CTLD_PORT < 65532 )) \
    || { echo "run.sh: SLURM_MULTI_PORT must be a port number 1024-65531" >&2; exit 2; }
TIMEOUT=${SLURM_TIMEOUT:-60}
# The fake GPUs: two character devices, as a gres.conf File= value (a container may lack
# /dev/tty0: SLURM_MULTI_GPU_FILES=/dev/zero,/dev/full there).
GPU_FILES=${SLURM_MULTI_GPU_FILES:-/dev/tty[0-1]}
[[ $GPU_FILES =~ ^/dev/[A-Za-z0-9/_.,-]+(\[[0-9]-[0-9]\])?$ ]] \
    || { echo "run.sh: SLURM_MULTI_GPU_FILES must be device paths, not '$GPU_FILES'" >&2; exit 2; }
if [[ $GPU_FILES =~ ^(.*)\[([0-9])-([0-9])\]$ ]]; then
    mapfile -t GPU_DEVICES < <(seq -f "${BASH_REMATCH[1]}%g" "${BASH_REMATCH[2]}" "${BASH_REMATCH[3]}")
else
    IFS=, read -r -a GPU_DEVICES <<<"$GPU_FILES"
fi
(( ${#GPU_DEVICES[@]} == 2 )) || { echo "run.sh: SLURM_MULTI_GPU_FILES must name 2 devices" >&2; exit 2; }
# The GPU model of the fake GPUs (gres.conf Type=, slurm.conf Gres=gpu:TYPE:2): typed requests
# (--gpus=fakegpu:2) and untyped ones (--gpus=2, --gres=gpu:2) are both satisfied by them.
GPU_TYPE=fakegpu

NODES=(n1 n2 n3)
NODE_PORTS=($(( CTLD_PORT + 1 )) $(( CTLD_PORT + 2 )) $(( CTLD_PORT + 3 )))
CLUSTER=localci-multi
CONF_DIR=$ROOT/etc
CONF=$CONF_DIR/slurm.conf
GRES_CONF=$CONF_DIR/gres.conf
CTLD_STATE=$ROOT/ctld
SPOOL=$ROOT/spool                    # SlurmdSpoolDir is $SPOOL/<node>
LOG_DIR=$ROOT/log
RUN_DIR=$ROOT/run
CTLD_PID=$RUN_DIR/slurmctld.pid
JOBCOMP_LOG=$LOG_DIR/jobcomp.log
MUNGE_RUN=$ROOT/munge-run            # socket and pid file: readable by every user
MUNGE_PRIVATE=$ROOT/munge            # key, seed and log: munge only
MUNGE_KEY=$MUNGE_PRIVATE/munge.key
MUNGE_SOCKET=$MUNGE_RUN/munge.socket
MUNGE_PID=$MUNGE_RUN/munged.pid
HOST=$(hostname -s)
# Every command below and the daemons use this cluster only, whatever the caller had.
export SLURM_CONF=$CONF MUNGE_SOCKET

T_SCRIPT=$(date +%s.%N)

# ---------------------------------------------------------------- helpers
TAG=slurm-multi
# shellcheck source=../lib/procs.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/procs.sh"

# has_args PID WORD...: the process's command line contains these words in this order.
has_args() {
    local pid=$1 args
    shift
    args=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ $'\n'$args$'\n' == *$'\n'"$(printf '%s\n' "$@")"* ]]
}

# pid_of FILE COMM WORD...: the PID in FILE if it is a live COMM started with these arguments
# (so a pid file naming another cluster's daemon, after a reboot reused the number, is no match).
pid_of() {
    local file=$1 comm=$2 pid
    shift 2
    [[ -r $file ]] || return 1
    pid=$(tr -dc '0-9' <"$file")
    pid_alive "$pid" "$comm" && has_args "$pid" "$@" && echo "$pid"
}
ctld_pid() { pid_of "$CTLD_PID" slurmctld -f "$CONF"; }
slurmd_pid() { pid_of "$RUN_DIR/slurmd.$1.pid" slurmd -f "$CONF" -N "$1"; }
munged_pid() { pid_of "$MUNGE_PID" munged --socket="$MUNGE_SOCKET"; }

# step_pids: this cluster's slurmstepd processes: each listens on a socket in one of our
# SlurmdSpoolDirs (paths no other Slurm uses).
step_pids() { socket_pids "$SPOOL"; }

# our_sessions: sessions of this cluster's daemons and job steps (each detaches into its own).
our_sessions() {
    local pid sid node
    for pid in $(ctld_pid || true) $(munged_pid || true) $(step_pids); do
        sid=$(session_of "$pid") || continue
        (( sid > 1 )) && echo "$sid"
    done
    for node in "${NODES[@]}"; do
        pid=$(slurmd_pid "$node") || continue
        sid=$(session_of "$pid") || continue
        (( sid > 1 )) && echo "$sid"
    done
    return 0
}


port_free() { [[ -z $(ss -Hltn "sport = :$1" 2>/dev/null) ]]; }
port_user() { ss -Hltnp "sport = :$1" 2>/dev/null | tr -s ' ' | tr '\n' ' '; }

# node_states: "NODE STATE" per node, as the controller sees them.
node_states() { sinfo -h -N -o '%N %T' 2>/dev/null | sort -u; }
all_nodes() {
    local want=$1 states
    states=$(node_states) || return 1
    [[ $(grep -cE "^n[123] ($want)\$" <<<"$states") == 3 ]]
}

# ---------------------------------------------------------------- config
config_text() {
    sed -e "s|@HOST@|$HOST|g" -e "s|@CLUSTER@|$CLUSTER|g" -e "s|@CTLD_PORT@|$CTLD_PORT|g" \
        -e "s|@NODE_PORTS@|${NODE_PORTS[0]}-${NODE_PORTS[2]}|g" -e "s|@CTLD_STATE@|$CTLD_STATE|g" \
        -e "s|@SPOOL@|$SPOOL|g" -e "s|@RUN_DIR@|$RUN_DIR|g" -e "s|@LOG_DIR@|$LOG_DIR|g" \
        -e "s|@JOBCOMP_LOG@|$JOBCOMP_LOG|g" -e "s|@MUNGE_SOCKET@|$MUNGE_SOCKET|g" <<'EOF'
# Written by ci/slurm-multi/run.sh: 3 nodes on one host (one slurmd each), 2 fake GPUs per node.
ClusterName=@CLUSTER@
SlurmctldHost=@HOST@(127.0.0.1)
SlurmctldPort=@CTLD_PORT@
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=@MUNGE_SOCKET@
StateSaveLocation=@CTLD_STATE@
SlurmctldPidFile=@RUN_DIR@/slurmctld.pid
SlurmctldLogFile=@LOG_DIR@/slurmctld.log
# per node: %n is the node name (slurmd -N n1)
SlurmdSpoolDir=@SPOOL@/%n
SlurmdPidFile=@RUN_DIR@/slurmd.%n.pid
SlurmdLogFile=@LOG_DIR@/slurmd.%n.log
# No cgroups, no systemd.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=@JOBCOMP_LOG@
MpiDefault=none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=2
EnforcePartLimits=ALL
ReturnToService=2
# The nodes advertise more CPUs and memory than the host has (nothing is enforced here).
SlurmdParameters=config_overrides
KillWait=5
MinJobAge=300
# Job ids far from the single-node cluster's: an id sent to the wrong cluster by mistake
# (a command without this SLURM_CONF) names no job there.
FirstJobId=5000000
InactiveLimit=0
SlurmdTimeout=300
# Preemption: a job of a higher PriorityTier partition requeues jobs of `low`.
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
GresTypes=gpu
NodeName=n[1-3] NodeHostname=@HOST@ NodeAddr=127.0.0.1 Port=[@NODE_PORTS@] CPUs=4 RealMemory=8000 Gres=gpu:fakegpu:2 State=UNKNOWN
PartitionName=cpu Nodes=n[1-3] Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=OFF
PartitionName=gpu Nodes=n[1-3] MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=OFF
PartitionName=low Nodes=n[1-3] MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=20
PartitionName=high Nodes=n[1-3] MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
EOF
}

gres_text() {
    echo '# Written by ci/slurm-multi/run.sh: 2 "GPUs" per node on character devices that exist'
    echo '# here; Slurm schedules them and sets CUDA_VISIBLE_DEVICES, nothing is isolated.'
    echo 'AutoDetect=off'
    echo "NodeName=n[1-3] Name=gpu Type=$GPU_TYPE File=$GPU_FILES"
}

# gpu_devices_exist: the two devices of $GPU_FILES exist (slurmd refuses a missing one).
gpu_devices_exist() {
    local dev
    for dev in "${GPU_DEVICES[@]}"; do [[ -c $dev ]] || return 1; done
}

# write_file PATH FUNCTION: write FUNCTION's output to PATH if it differs; CONF_CHANGED=1 then.
write_file() {
    local tmp
    tmp=$(mktemp)
    "$2" >"$tmp"
    if [[ -f $1 ]] && cmp -s "$tmp" "$1"; then
        rm -f "$tmp"
    else
        install -m 0644 "$tmp" "$1"
        rm -f "$tmp"
        CONF_CHANGED=1
        log "wrote $1"
    fi
}

prepare_dirs() {
    local node
    install -d -m 0755 "$ROOT" "$CONF_DIR" "$RUN_DIR" "$SPOOL"
    install -d -o slurm -g slurm -m 0755 "$CTLD_STATE" "$LOG_DIR"
    for node in "${NODES[@]}"; do install -d -m 0755 "$SPOOL/$node"; done
    touch "$JOBCOMP_LOG"
    chown slurm:slurm "$JOBCOMP_LOG"
    install -d -o munge -g munge -m 0755 "$MUNGE_RUN"
    install -d -o munge -g munge -m 0700 "$MUNGE_PRIVATE"
}

# ---------------------------------------------------------------- daemons
start_munged() {
    local pid t0
    if pid=$(munged_pid); then log "munged already running (pid $pid)"; return 0; fi
    t0=$(now)
    if [[ ! -s $MUNGE_KEY ]]; then
        dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
        chown munge:munge "$MUNGE_KEY"
        chmod 0400 "$MUNGE_KEY"
    fi
    rm -f "$MUNGE_PID" "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    runuser -u munge -- /usr/sbin/munged --socket="$MUNGE_SOCKET" --key-file="$MUNGE_KEY" \
        --pid-file="$MUNGE_PID" --log-file="$MUNGE_PRIVATE/munged.log" \
        --seed-file="$MUNGE_PRIVATE/munged.seed"
    wait_for "$TIMEOUT" "munged answers on $MUNGE_SOCKET" bash -c \
        'munge -S "$MUNGE_SOCKET" -n </dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1'
    pid=$(munged_pid) || die "munged answers but $MUNGE_PID names no live munged"
    log "started munged (pid $pid, $(since "$t0"))"
}

start_slurmctld() {
    local pid t0
    if pid=$(ctld_pid); then log "slurmctld already running (pid $pid)"; return 0; fi
    t0=$(now)
    port_free "$CTLD_PORT" || die "port $CTLD_PORT (SlurmctldPort) is in use: $(port_user "$CTLD_PORT")"
    rm -f "$CTLD_PID"
    /usr/sbin/slurmctld -f "$CONF"
    wait_for "$TIMEOUT" "slurmctld pid file" quiet ctld_pid
    wait_for "$TIMEOUT" "slurmctld answers" bash -c 'scontrol ping 2>/dev/null | grep -q UP'
    log "started slurmctld (pid $(ctld_pid || echo '?'), $(since "$t0"))"
}

start_slurmds() {
    local i node pid t0
    t0=$(now)
    for i in "${!NODES[@]}"; do
        node=${NODES[$i]}
        if pid=$(slurmd_pid "$node"); then log "slurmd $node already running (pid $pid)"; continue; fi
        port_free "${NODE_PORTS[$i]}" \
            || die "port ${NODE_PORTS[$i]} (slurmd $node) is in use: $(port_user "${NODE_PORTS[$i]}")"
        rm -f "$RUN_DIR/slurmd.$node.pid"
        /usr/sbin/slurmd -f "$CONF" -N "$node"
        wait_for "$TIMEOUT" "slurmd $node pid file" quiet slurmd_pid "$node"
    done
    log "slurmd n1..n3 running ($(since "$t0"))"
}

# wait_nodes_ready FRESH: all nodes IDLE (FRESH=1: the state was wiped), or at least usable
# (a cluster that was already running may have jobs).
wait_nodes_ready() {
    local node want='idle|mixed|allocated|completing' what="n1..n3 usable"
    [[ $1 == 1 ]] && { want='idle'; what="n1..n3 IDLE"; }
    if wait_for "$TIMEOUT" "$what" all_nodes "$want"; then return 0; fi
    # Nodes left DOWN/DRAIN by an earlier run: resume them once, then wait again.
    log "node states: $(node_states | tr '\n' ' '); resuming"
    for node in "${NODES[@]}"; do scontrol update NodeName="$node" State=RESUME 2>/dev/null || true; done
    wait_for "$TIMEOUT" "$what after resume" all_nodes "$want" \
        || die "nodes not ready: $(node_states | tr '\n' ' ')"
}

run_probe() {
    local t0 id st deadline out
    t0=$(now)
    out=$(mktemp)
    chmod 0644 "$out"
    id=$(cd /tmp && sbatch --parsable -J ci-multi-probe -N 3 --ntasks-per-node=1 -o "$out" -e /dev/null \
        -t 00:01:00 --wrap 'srun printenv SLURMD_NODENAME')
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
    [[ $(sort "$out" | tr '\n' ' ') == "n1 n2 n3 " ]] \
        || die "probe job $id ran on '$(tr '\n' ' ' <"$out")', not n1 n2 n3"
    rm -f "$out"
    log "probe job $id (-N 3, srun) COMPLETED on n1 n2 n3 ($(since "$t0") from submit)"
}

# ---------------------------------------------------------------- commands
cmd_install() {
    # The same packages as the single-node cluster (nothing new when it is installed).
    bash "$HERE/../slurm/run.sh" install
}

cmd_start() {
    local node
    log "start: root=$ROOT host=$HOST ports $CTLD_PORT (slurmctld), ${NODE_PORTS[*]} (slurmd n1..n3)"
    command -v slurmctld >/dev/null || cmd_install
    gpu_devices_exist || die "the fake GPU devices ${GPU_DEVICES[*]} are not all character" \
        "devices here: set SLURM_MULTI_GPU_FILES to two that are (e.g. /dev/zero,/dev/full)"
    prepare_dirs
    CONF_CHANGED=0
    write_file "$CONF" config_text
    write_file "$GRES_CONF" gres_text
    if [[ $CONF_CHANGED == 1 ]] && ctld_pid >/dev/null; then
        log "configuration changed while daemons run: restarting them"
        stop_daemons
    fi
    local fresh=0
    if ! ctld_pid >/dev/null; then
        fresh=1
        # A fresh cluster each time: no jobs recovered from an earlier run.
        log "wiping state: $CTLD_STATE/* $SPOOL/n*/*"
        rm -rf "${CTLD_STATE:?}"/*
        for node in "${NODES[@]}"; do rm -rf "${SPOOL:?}/$node"/*; done
        : >"$JOBCOMP_LOG"
    fi
    start_munged
    start_slurmctld
    start_slurmds
    wait_nodes_ready "$fresh"
    run_probe
    log "start done in $(since "$T_SCRIPT"): slurmctld $(ctld_pid), slurmd $(for n in "${NODES[@]}"; do slurmd_pid "$n"; done | tr '\n' ' ')munged $(munged_pid)"
}

stop_daemons() {
    local node pids=() pid
    for node in "${NODES[@]}"; do pid=$(slurmd_pid "$node") && pids+=("$pid"); done
    pid=$(ctld_pid) && pids+=("$pid")
    # shellcheck disable=SC2086
    stop_pids 15 "${pids[@]}"
}

cancel_all_jobs() {
    local users u t0
    ctld_pid >/dev/null || return 0
    users=$(squeue -h -o %u 2>/dev/null | sort -u || true)
    [[ -n $users ]] || { log "no jobs to cancel"; return 0; }
    t0=$(now)
    for u in $users; do scancel --user="$u" 2>/dev/null || true; done
    wait_for 30 "jobs of $(echo $users | tr ' ' ',') cancelled" \
        bash -c '[[ -z $(squeue -h -t pending,running,suspended,completing -o %i 2>/dev/null) ]]' \
        || log "  some jobs are still listed; continuing"
}

cmd_stop() {
    local sessions left i pid
    log "stop"
    cancel_all_jobs
    mapfile -t sessions < <(our_sessions | sort -un)
    stop_daemons
    if pid=$(munged_pid); then stop_pids 15 "$pid"; fi
    mapfile -t sessions < <({ printf '%s\n' "${sessions[@]}"; our_sessions; } | sed '/^$/d' | sort -un)
    # shellcheck disable=SC2046  # one argument per pid
    stop_pids 5 $(pids_in_sessions "${sessions[@]}")
    for ((i = 0; i < 50; i++)); do
        left=$(pids_in_sessions "${sessions[@]}" | tr '\n' ' ')
        [[ -n ${left// /} ]] || break
        sleep 0.1
    done
    [[ -z ${left// /} ]] || die "processes still running in sessions ${sessions[*]}: $left"
    rm -f "$CTLD_PID" "$RUN_DIR"/slurmd.*.pid
    log "stop done in $(since "$T_SCRIPT"); nothing left in our sessions (${sessions[*]:-none})"
}

cmd_status() {
    local ok=0 pid node
    if pid=$(munged_pid); then echo "munged: running (pid $pid)"; else echo "munged: not running"; ok=1; fi
    if pid=$(ctld_pid); then echo "slurmctld: running (pid $pid)"; else echo "slurmctld: not running"; ok=1; fi
    for node in "${NODES[@]}"; do
        if pid=$(slurmd_pid "$node"); then echo "slurmd $node: running (pid $pid)"
        else echo "slurmd $node: not running"; ok=1; fi
    done
    if ctld_pid >/dev/null; then
        echo "--- sinfo"; sinfo 2>&1 || ok=1
        echo "--- squeue"; squeue 2>&1 || ok=1
        all_nodes 'idle|mixed|allocated|completing' \
            || { echo "nodes not all usable: $(node_states | tr '\n' ' ')"; ok=1; }
    fi
    if ((ok == 0)); then echo "status: ready (SLURM_CONF=$CONF)"; else echo "status: NOT ready"; fi
    exit "$ok"
}

case ${1:-} in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    config) echo "# $CONF"; config_text; echo "# $GRES_CONF"; gres_text ;;
    conf) echo "$CONF" ;;
    *) echo "usage: $0 install|start|stop|status|config|conf" >&2; exit 2 ;;
esac
