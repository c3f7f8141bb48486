#!/usr/bin/env bash
# Single-host Son of Grid Engine (Debian's gridengine 8.1.9) for CI.
#
#   ci/sge/run.sh start    install (when missing), configure and start qmaster + execd,
#                          then prove that a job really runs
#   ci/sge/run.sh stop     delete this cell's jobs, stop its execd and qmaster by their PID files
#                          and the job processes (shepherds) below its execd; nothing else
#   ci/sge/run.sh status   print the state; exit 0 when ready, 1 otherwise
#   ci/sge/run.sh env      print the environment that selects this cell (for `eval`)
#   ci/sge/run.sh pids     print "DAEMON PID" for each running daemon of this cell
#
# No systemd is needed: the daemons are started directly and tracked by their PID files. Nothing
# is found or stopped by process name, so another Grid Engine on the machine keeps running.
#   ci/sge/run.sh gpus     (also part of start) add the gpu complex and the PE djq_pe to a
#                          running cell: additive and idempotent, no daemon is restarted
#
# Tunables (environment): SGE_GPUS (fake GPUs of the exec host, default 2), SGE_SLOTS (slots of all.q, default 8), SGE_TIMEOUT (seconds for
# every wait, default 60), SGE_ACCOUNTING_FLUSH (accounting_flush_time, default 00:00:00).
# SGE_CI_CELL=NAME ([a-z0-9]{1,16}) runs a second, independent cluster beside the default one:
# its own cell $SGE_ROOT/NAME, spool /var/lib/ci-sge/NAME, ports SGE_CI_PORT and the next one
# (default derived from the name, 7500-8298). Its commands need SGE_CELL=NAME and the ports
# (`eval "$(SGE_CI_CELL=NAME ci/sge/run.sh env)"`).
set -euo pipefail
# shellcheck disable=SC2154  # rc is assigned inside the trap string
trap 'rc=$?; echo "run.sh: line $LINENO: \"$BASH_COMMAND\" failed (rc=$rc)" >&2' ERR

export SGE_ROOT=/var/lib/gridengine
CELL_NAME="${SGE_CI_CELL:-}"
if [[ -z "$CELL_NAME" ]]; then
    export SGE_CELL=default
    SPOOL=/var/spool/gridengine
    WORK=/var/tmp/ci-sge                  # scratch files (qconf input, probe job output)
    # the ports of /etc/services (sge_qmaster 6444, sge_execd 6445), whatever a caller exported
    # to reach a named cell
    unset SGE_QMASTER_PORT SGE_EXECD_PORT
else
    [[ "$CELL_NAME" =~ ^[a-z0-9]{1,16}$ && "$CELL_NAME" != default ]] \
        || { echo "run.sh: SGE_CI_CELL must be 1-16 characters a-z 0-9 (not 'default'), not '$CELL_NAME'" >&2; exit 2; }
    export SGE_CELL="$CELL_NAME"
    SPOOL="/var/lib/ci-sge/$CELL_NAME"
    WORK="/var/tmp/ci-sge-$CELL_NAME"
    port="${SGE_CI_PORT:-$(( 7500 + 2 * ($(cksum <<<"$CELL_NAME" | cut -d' ' -f1) % 400) ))}"
    [[ "$port" =~ ^[0-9]+$ ]] && (( port >= 1024 && port < 65535 )) \
        || { echo "run.sh: SGE_CI_PORT must be a port number 1024-65534" >&2; exit 2; }
    export SGE_QMASTER_PORT="$port" SGE_EXECD_PORT="$(( port + 1 ))"
fi
COMMON="$SGE_ROOT/$SGE_CELL/common"
QMASTER_PIDFILE="$SPOOL/qmaster/qmaster.pid"
HOST="$(hostname)"
SLOTS="${SGE_SLOTS:-8}"
GPUS="${SGE_GPUS:-2}"
[[ "$GPUS" =~ ^[0-9]+$ ]] || { echo "run.sh: SGE_GPUS must be a number" >&2; exit 2; }
TIMEOUT="${SGE_TIMEOUT:-60}"
ACCT_FLUSH="${SGE_ACCOUNTING_FLUSH:-00:00:00}"
PACKAGES=(gridengine-master gridengine-exec gridengine-client)
T0="$EPOCHREALTIME"

since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.2f", b - a}'; }   # seconds since $1
log() { printf '[sge%s %6ss] %s\n' "${CELL_NAME:+ $CELL_NAME}" "$(since "$T0")" "$*"; }
die() { echo "run.sh: ERROR: $*" >&2; exit 1; }

# wait_for DESCRIPTION SECONDS COMMAND...: poll COMMAND every 0.2 s until it succeeds.
wait_for() {
    local what="$1" limit="$2"; shift 2
    local start; start="$EPOCHREALTIME"
    local deadline=$(( $(date +%s) + limit ))
    until "$@" >/dev/null 2>&1; do
        if (( $(date +%s) >= deadline )); then
            echo "run.sh: timeout after ${limit}s waiting for: $what" >&2
            return 1
        fi
        sleep 0.2
    done
    log "$what (waited $(since "$start")s)"
}

# ---------------------------------------------------------------------------------------------
# process helpers: a daemon is alive when its PID file names a process that exists, is not a
# zombie and runs the expected program.
pid_alive() {   # pid_alive PID [COMM]
    local pid="$1" comm="${2:-}" stat state
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    read -r stat 2>/dev/null < "/proc/$pid/stat" || return 1
    state="${stat##*) }"; state="${state%% *}"
    [[ "$state" != Z && "$state" != X ]] || return 1
    if [[ -n "$comm" ]]; then
        local c=""
        read -r c 2>/dev/null < "/proc/$pid/comm" || return 1
        [[ "$c" == "$comm" ]] || return 1
    fi
}
pid_from() { [[ -r "$1" ]] && tr -dc '0-9' < "$1" || true; }
execd_pidfile() {
    local f
    for f in "$SPOOL"/execd/*/execd.pid; do
        [[ -e "$f" ]] && { echo "$f"; return 0; }
    done
    echo "$SPOOL/execd/$HOST/execd.pid"
}
qmaster_pid() { pid_from "$QMASTER_PIDFILE"; }
execd_pid() { pid_from "$(execd_pidfile)"; }
qmaster_running() { local p; p="$(qmaster_pid)"; pid_alive "$p" sge_qmaster; }
execd_running() { local p; p="$(execd_pid)"; pid_alive "$p" sge_execd; }

# children (recursively) of a PID
descendants() {
    local parent="$1" d stat ppid
    for d in /proc/[0-9]*; do
        read -r stat 2>/dev/null < "$d/stat" || continue
        stat="${stat##*) }"               # "STATE PPID PGRP ..."
        stat="${stat#* }"; ppid="${stat%% *}"
        if [[ "$ppid" == "$parent" && "${d#/proc/}" != "$parent" ]]; then
            echo "${d#/proc/}"
            descendants "${d#/proc/}"
        fi
    done
    return 0
}

# shepherds: this cell's sge_shepherd processes, also after their execd died: each runs in its
# job's directory below this cell's execd spool directory (execd_spool_dir), which no other
# cell uses.
shepherds() {
    { find /proc/[0-9]*/cwd -maxdepth 0 -lname "$SPOOL/execd/*/active_jobs/*" 2>/dev/null || true; } \
        | cut -d/ -f3
}
# job_processes: the shepherds and every process below them or below this cell's execd
job_processes() {
    local p epid
    epid="$(execd_pid)"
    { pid_alive "$epid" sge_execd && descendants "$epid"
      for p in $(shepherds); do echo "$p"; descendants "$p"; done
    } | sort -un
}

# stop_pid NAME PID SECONDS: TERM, wait, KILL fallback
stop_pid() {
    local name="$1" pid="$2" limit="$3" start
    start="$EPOCHREALTIME"
    pid_alive "$pid" || { log "$name (pid $pid) is not running"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$(( $(date +%s) + limit ))
    while pid_alive "$pid"; do
        if (( $(date +%s) >= deadline )); then
            log "$name (pid $pid) ignored TERM for ${limit}s: sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
            pid_alive "$pid" && die "$name (pid $pid) survived KILL"
            break
        fi
        sleep 0.2
    done
    log "stopped $name (pid $pid) in $(since "$start")s"
}

# ---------------------------------------------------------------------------------------------
installed() {
    local p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed' || return 1
    done
}

install_packages() {
    if installed; then
        log "packages already installed"
        return 0
    fi
    log "installing ${PACKAGES[*]}"
    # The debconf questions live in the shared/ namespace and each package registers them.
    local p sel=""
    for p in gridengine-common "${PACKAGES[@]}"; do
        sel+="$p shared/gridengineconfig boolean true"$'\n'
        sel+="$p shared/gridenginecell string $SGE_CELL"$'\n'
        sel+="$p shared/gridenginemaster string $HOST"$'\n'
    done
    printf '%s' "$sel" | debconf-set-selections
    local apt=(apt-get -q -y -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef
               -o Dpkg::Options::=--force-confold)
    if ! apt-cache show gridengine-master >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive "${apt[@]}" update
    fi
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" install --no-install-recommends "${PACKAGES[@]}" \
        > "$WORK/apt.log" 2>&1 || { tail -n 30 "$WORK/apt.log" >&2; die "apt-get install failed"; }
    installed || die "packages still not installed (see $WORK/apt.log)"
    [[ -d "$COMMON" ]] || die "$COMMON missing: the cell was not created by the postinst"
    log "packages installed"
}

# ---------------------------------------------------------------------------------------------
# Host name: 127.0.0.1 reverse-resolves to "localhost" (first /etc/hosts entry), which the
# qmaster refuses to match with clients calling themselves $HOST. An SGE host alias fixes it
# without touching /etc/hosts. The qmaster also rewrites act_qmaster, so reset it.
fix_host_names() {
    if ! getent hosts "$HOST" >/dev/null; then
        echo "127.0.0.1 $HOST" >> /etc/hosts
        log "added $HOST to /etc/hosts"
    fi
    local want="$HOST localhost"
    if [[ "$HOST" != localhost ]] && [[ "$(cat "$COMMON/host_aliases" 2>/dev/null)" != "$want" ]]; then
        echo "$want" > "$COMMON/host_aliases"
        log "wrote host_aliases: $want"
    fi
    if [[ "$(cat "$COMMON/act_qmaster" 2>/dev/null)" != "$HOST" ]]; then
        echo "$HOST" > "$COMMON/act_qmaster"
        log "reset act_qmaster to $HOST"
    fi
}

qmaster_answers() { timeout 10 qconf -sh >/dev/null 2>&1; }

# A named cell (SGE_CI_CELL) is made the way Debian's init_cluster makes the default one, with
# its own spool directories (classic berkeleydb spooling under $SPOOL) and execd_spool_dir.
create_cell() {
    [[ -n "$CELL_NAME" && ! -s "$COMMON/bootstrap" ]] || return 0
    log "creating cell $SGE_CELL (spool $SPOOL)"
    local admin
    admin="$(awk '$1 == "admin_user" {print $2}' "$SGE_ROOT/default/common/bootstrap")"
    [[ -n "$admin" ]] || die "no admin_user in $SGE_ROOT/default/common/bootstrap"
    # the qmaster (running as the admin user) rewrites act_qmaster and appends to accounting
    install -d -o "$admin" -g "$admin" -m 0755 "$SGE_ROOT/$SGE_CELL" "$COMMON"
    install -o "$admin" -g "$admin" -m 0644 /dev/null "$COMMON/act_qmaster"
    install -d -o "$admin" -g "$admin" -m 0755 "$SPOOL" "$SPOOL/qmaster" "$SPOOL/execd" "$SPOOL/spooldb"
    sed -e "s|^spooling_params .*|spooling_params         $SPOOL/spooldb|" \
        -e "s|^qmaster_spool_dir .*|qmaster_spool_dir       $SPOOL/qmaster|" \
        "$SGE_ROOT/default/common/bootstrap" > "$COMMON/bootstrap"
    chown "$admin:$admin" "$COMMON/bootstrap"
    sed "s|^execd_spool_dir .*|execd_spool_dir        $SPOOL/execd|" \
        /usr/share/gridengine/default-configuration > "$SPOOL/global.conf"
    chmod 0644 "$SPOOL/global.conf"
    local as_admin=(runuser -u "$admin" --) lib=/usr/lib/gridengine
    # spooldefaults finds the spool through $SGE_ROOT/$SGE_CELL/common/bootstrap
    ( cd "$SPOOL" \
      && "${as_admin[@]}" "$lib/spoolinit" berkeleydb libspoolb "$SPOOL/spooldb" init \
      && "${as_admin[@]}" "$lib/spooldefaults" configuration "$SPOOL/global.conf" \
      && "${as_admin[@]}" "$lib/spooldefaults" complexes /usr/share/gridengine/util/resources/centry \
      && "${as_admin[@]}" "$lib/spooldefaults" usersets /usr/share/gridengine/util/resources/usersets \
      && "${as_admin[@]}" "$lib/spooldefaults" managers "$admin" ) > "$WORK/cell.log" 2>&1 \
        || { rm -f "$COMMON/bootstrap"; cat "$WORK/cell.log" >&2; die "could not initialise the spool of cell $SGE_CELL"; }
    log "cell $SGE_CELL created (ports $SGE_QMASTER_PORT/$SGE_EXECD_PORT)"
}

# port_free PORT: nothing listens on the TCP port (a named cell's ports are checked before its
# daemons start: a daemon that cannot bind would only say so in its messages file)
port_free() { [[ -z "${1:-}" || -z "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]]; }

start_qmaster() {
    if qmaster_running; then
        log "sge_qmaster already running (pid $(qmaster_pid))"
    else
        fix_host_names
        port_free "${SGE_QMASTER_PORT:-}" || die "port $SGE_QMASTER_PORT (qmaster) is in use"
        local out
        out="$(/usr/sbin/sge_qmaster 2>&1)" || { echo "$out" >&2; die "sge_qmaster failed to start"; }
        wait_for "sge_qmaster pid file" "$TIMEOUT" qmaster_running
        log "started sge_qmaster (pid $(qmaster_pid))"
    fi
    wait_for "qmaster answers qconf" "$TIMEOUT" qmaster_answers
}

# unfold FILE...: join continuation lines ("... \\" + indented rest), one attribute a line
unfold() { sed -i -e ':a' -e '/\\$/N; s/[[:space:]]*\\\n[[:space:]]*/ /; ta' "$@"; }
# same FILE1 FILE2: equal up to continuation lines and amounts of white space
same() { unfold "$1" "$2"; diff -bq "$1" "$2" >/dev/null; }
# qc ARGS...: qconf with its chatter hidden unless it fails
qc() {
    local out
    out="$(timeout 20 qconf "$@" 2>&1)" || { echo "$out" >&2; echo "qconf $* failed" >&2; return 1; }
}

# set_params FILE KEY VALUE...: replace "KEY <anything>" lines of an SGE config file
set_params() {
    local file="$1"; shift
    unfold "$file"
    while (( $# >= 2 )); do
        if grep -qE "^$1[[:space:]]" "$file"; then
            sed -i -E "s|^($1)[[:space:]].*|\\1 $2|" "$file"
        else
            echo "$1 $2" >> "$file"
        fi
        shift 2
    done
}

# a template for a new object: qconf -a* opens $EDITOR on it; this editor copies it out and
# leaves it unchanged, so qconf adds nothing.
qconf_template() {   # qconf_template OPTION NAME OUTFILE
    local editor="$WORK/copy-editor.sh"
    printf '#!/bin/sh\ncp "$1" %q\n' "$3" > "$editor"
    chmod +x "$editor"
    EDITOR="$editor" timeout 20 qconf "$1" "$2" >/dev/null 2>&1 || true
    [[ -s "$3" ]] || die "could not get a template from qconf $1"
}

configure_global() {
    local f="$WORK/global"
    qconf -sconf global > "$f"
    cp "$f" "$f.orig"
    # min_uid/min_gid 0: CI runs as root. Must be in place before execd starts: an execd with
    # the old values rejects root's job and puts the queue in error state.
    # accounting_flush_time (SGE_ACCOUNTING_FLUSH, default 00:00:00): qacct sees a finished
    # job at once instead of after the default flush_time of 15 s.
    # login_shells without bash/sh: job shells are then not login shells and do not source the
    # submitting user's ~/.profile (on CI machines root's profile runs "pyenv init", whose
    # rehash lock, left behind by a killed job, made every later job hang for 60 s).
    set_params "$f" min_uid 0 min_gid 0 login_shells csh,tcsh \
        reporting_params "accounting=true reporting=false flush_time=00:00:15 joblog=false sharelog=00:00:00 accounting_flush_time=$ACCT_FLUSH"
    if ! same "$f" "$f.orig"; then
        qc -Mconf "$f"
        log "global config: min_uid 0, min_gid 0, login_shells csh,tcsh, accounting_flush_time $ACCT_FLUSH"
    fi
}

configure_scheduler() {
    local f="$WORK/sched"
    qconf -ssconf > "$f"
    cp "$f" "$f.orig"
    # one scheduling run per second (default 15 s); keep the reasons why jobs are pending
    # (schedd_job_info true) so that qstat -j shows them
    set_params "$f" schedule_interval 0:0:1 flush_submit_sec 1 flush_finish_sec 1 schedd_job_info true
    if ! same "$f" "$f.orig"; then
        qc -Msconf "$f"
        log "scheduler config: schedule_interval 0:0:1, schedd_job_info true"
    fi
}

configure_hosts() {
    if ! qconf -ss 2>/dev/null | grep -qx "$HOST"; then
        qc -as "$HOST"
        log "added submit host $HOST"
    fi
    if ! qconf -sh 2>/dev/null | grep -qx "$HOST"; then
        qc -ah "$HOST"
        log "added admin host $HOST"
    fi
}

configure_pe() {
    local f="$WORK/smp"
    if qconf -sp smp > "$f" 2>/dev/null; then cp "$f" "$f.orig"; else
        printf 'pe_name smp\n' > "$f"; : > "$f.orig"
        cat >> "$f" <<'EOF'
slots 999
user_lists NONE
xuser_lists NONE
start_proc_args NONE
stop_proc_args NONE
allocation_rule $pe_slots
control_slaves FALSE
job_is_first_task TRUE
urgency_slots min
accounting_summary FALSE
qsort_args NONE
EOF
    fi
    set_params "$f" slots 999 allocation_rule '$pe_slots'
    if [[ ! -s "$f.orig" ]]; then
        qc -Ap "$f"; log "added PE smp"
    elif ! same "$f" "$f.orig"; then
        qc -Mp "$f"; log "modified PE smp"
    fi
}

configure_queue() {   # configure_queue NAME SLOTS [h_rt]
    local q="$1" slots="$2" hrt="${3:-INFINITY}" f="$WORK/$1"
    local exists=1
    if ! qconf -sq "$q" > "$f" 2>/dev/null; then
        exists=0
        rm -f "$f"
        qconf_template -aq "$q" "$f"
    fi
    cp "$f" "$f.orig"
    set_params "$f" qname "$q" hostlist "$HOST" slots "$slots" pe_list "smp $NODES_PE" \
        load_thresholds NONE suspend_thresholds NONE shell /bin/bash \
        shell_start_mode posix_compliant h_rt "$hrt"
    if (( exists == 0 )); then
        qc -Aq "$f"; log "added queue $q (slots $slots, h_rt $hrt)"
    elif ! same "$f" "$f.orig"; then
        qc -Mq "$f"; log "modified queue $q (slots $slots, h_rt $hrt)"
    fi
}

# --------------------------------------------------------------------- GPUs and nodes
# Grid Engine has no GPU resource of its own: sites count GPUs with an integer consumable
# complex (here "gpu", requestable, consumable, default 0) and give each exec host its number
# in complex_values. The exec host gets GPUS fake GPUs; SGE sets no CUDA_VISIBLE_DEVICES, so the
# job script numbers the devices itself (0..gpus-1).
configure_gpu_complex() {
    local f="$WORK/complexes"
    if ! qconf -sc | awk '$1 == "gpu" {found = 1} END {exit !found}'; then
        qconf -sc > "$f"
        echo "gpu gpu INT <= YES YES 0 0" >> "$f"
        qc -Mc "$f"; log "added consumable complex gpu (INT, default 0)"
    fi
    if ! qconf -se "$HOST" | grep -Eq "complex_values.*([ ,])gpu=$GPUS(,| |\$)"; then
        # -mattr changes this one entry of the host's complex_values, keeping the others
        qc -mattr exechost complex_values "gpu=$GPUS" "$HOST"; log "exec host $HOST: complex_values gpu=$GPUS"
    fi
}

# nodes= jobs: a tightly integrated parallel environment (control_slaves TRUE: the job starts
# its tasks with `qrsh -inherit HOST`, which the execd runs, accounts and kills with the job;
# job_is_first_task FALSE: the job script itself takes no slot, each qrsh -inherit task does).
# This bed has ONE exec host, and $PE_HOSTFILE lists each host once with its slot count
# ("vm 2 all.q@vm UNDEFINED"), so a job of 2 "nodes" would see one host and stop. The PE's
# start_proc_args (run before the job script, as its owner) rewrites $PE_HOSTFILE to one line
# per slot, so each slot stands for a host: the library's launcher (read the host list, one
# `qrsh -inherit` per host) then runs unchanged, and the execd still allows at most one task
# per granted slot. Only the bed does this; a site's PE lists real hosts.
NODES_PE=djq_pe
configure_nodes_pe() {
    local script="$COMMON/djq_pe_slots_as_hosts.sh" f="$WORK/$NODES_PE"
    cat > "$WORK/pe_start.sh" <<'EOF'
#!/bin/sh
# start_proc_args of the CI parallel environment djq_pe (ci/sge/run.sh): on this one-host test
# bed, list each slot of $PE_HOSTFILE as a host line of its own ("host 1 queue processors")
awk '{for (i = 0; i < $2; i++) print $1, 1, $3, $4}' "$1" > "$1.djq" && mv "$1.djq" "$1"
EOF
    if ! cmp -s "$WORK/pe_start.sh" "$script"; then
        install -m 755 "$WORK/pe_start.sh" "$script"; log "wrote $script"
    fi
    if qconf -sp "$NODES_PE" > "$f" 2>/dev/null; then cp "$f" "$f.orig"; else
        printf 'pe_name %s\n' "$NODES_PE" > "$f"; : > "$f.orig"
        cat >> "$f" <<'EOF'
user_lists NONE
xuser_lists NONE
stop_proc_args NONE
urgency_slots min
accounting_summary FALSE
qsort_args NONE
EOF
    fi
    # shellcheck disable=SC2016  # $pe_hostfile is expanded by Grid Engine
    set_params "$f" slots 999 start_proc_args "$script \$pe_hostfile" allocation_rule '$fill_up' \
        control_slaves TRUE job_is_first_task FALSE
    if [[ ! -s "$f.orig" ]]; then
        qc -Ap "$f"; log "added PE $NODES_PE (control_slaves TRUE, job_is_first_task FALSE)"
    elif ! same "$f" "$f.orig"; then
        qc -Mp "$f"; log "modified PE $NODES_PE"
    fi
}
# a running cell: attach the PE to the queues without rewriting them (start's configure_queue
# writes the whole pe_list)
attach_nodes_pe() {
    local q
    for q in all.q short.q; do
        qconf -sq "$q" >/dev/null 2>&1 || continue
        if ! qconf -sq "$q" | awk -v pe="$NODES_PE" '$1 == "pe_list" {for (i = 2; i <= NF; i++) if ($i == pe) found = 1} END {exit !found}'; then
            qc -aattr queue pe_list "$NODES_PE" "$q"; log "attached PE $NODES_PE to $q"
        fi
    done
}

gpu_probe_done() { grep -q "^gpu-probe" "$1" 2>/dev/null; }
# two jobs: a consumable of consumable YES is counted per slot, so "-l gpu=2 -pe djq_pe 2"
# would ask for 4 GPUs
gpu_probe_job() {
    local out="$WORK/gpu-probe.out" script="$WORK/gpu-probe.sh" id start
    rm -f "$out" "$out.pe"
    cat > "$script" <<'EOF'
#!/bin/bash
if [[ -n ${PE_HOSTFILE:-} ]]; then
  mapfile -t hosts < <(awk '{print $1}' "$PE_HOSTFILE")
  echo "gpu-probe ${#hosts[@]} $(qrsh -inherit -nostdin "${hosts[1]}" echo inherit-ok)"
else
  echo "gpu-probe ok"
fi
EOF
    start="$EPOCHREALTIME"
    id="$(qsub -terse -N ci-gpu-probe -j y -o "$out" -l "gpu=$GPUS" "$script")"
    wait_for "gpu probe job $id ran" "$TIMEOUT" gpu_probe_done "$out" \
        || { qstat -j "$id" >&2 || true; die "a job asking for gpu=$GPUS did not run"; }
    id="$(qsub -terse -N ci-pe-probe -j y -o "$out.pe" -pe "$NODES_PE" 2 "$script")"
    wait_for "PE probe job $id ran" "$TIMEOUT" gpu_probe_done "$out.pe" \
        || { qstat -j "$id" >&2 || true; die "a job asking for -pe $NODES_PE 2 did not run"; }
    grep -qx "gpu-probe 2 inherit-ok" "$out.pe" || die "PE probe printed: $(cat "$out.pe")"
    log "probes: -l gpu=$GPUS ran; -pe $NODES_PE 2 saw two host lines and qrsh -inherit ran ($(since "$start")s)"
}

exec_host_known() { qconf -sel 2>/dev/null | grep -qx "$HOST"; }
# execd reports load: qhost shows a number instead of "-" in the LOAD column
exec_host_reporting() {
    qhost -h "$HOST" 2>/dev/null | awk -v h="$HOST" '$1==h && $4!="-" {ok=1} END {exit !ok}'
}
queue_ok() {   # the queue instance has no state flags (u = unknown, E = error, a = alarm ...)
    local q="$1"
    qstat -f -q "$q" 2>/dev/null | awk -v qi="$q@$HOST" '$1==qi {found=1; if (NF>=6) bad=1} END {exit !(found && !bad)}'
}

start_execd() {
    if execd_running; then
        log "sge_execd already running (pid $(execd_pid))"
    else
        port_free "${SGE_EXECD_PORT:-}" || die "port $SGE_EXECD_PORT (execd) is in use"
        local out
        out="$(/usr/sbin/sge_execd 2>&1)" || { echo "$out" >&2; die "sge_execd failed to start"; }
        wait_for "sge_execd pid file" "$TIMEOUT" execd_running
        log "started sge_execd (pid $(execd_pid))"
    fi
    wait_for "exec host $HOST registered" "$TIMEOUT" exec_host_known
    wait_for "exec host $HOST reports load" "$TIMEOUT" exec_host_reporting
}

probe_done() { grep -q "^probe-ok " "$1" 2>/dev/null; }
probe_job() {
    local out="$WORK/probe.out" script="$WORK/probe.sh" id start
    rm -f "$out"
    cat > "$script" <<'EOF'
#!/bin/bash
#$ -N ci-probe
#$ -j y
echo "probe-ok JOB_ID=$JOB_ID QUEUE=$QUEUE HOST=$(hostname) USER=$(id -un)"
EOF
    start="$EPOCHREALTIME"
    id="$(qsub -terse -o "$out" "$script")"
    log "submitted probe job $id"
    if ! wait_for "probe job $id ran" "$TIMEOUT" probe_done "$out"; then
        qstat -j "$id" >&2 || true
        die "probe job $id did not run"
    fi
    log "probe: $(cat "$out") (submit to output $(since "$start")s)"
}

cmd_start() {
    mkdir -p "$WORK"; chmod 755 "$WORK"
    install_packages
    create_cell
    [[ -d "$COMMON" ]] || die "$COMMON missing: reconfigure with shared/gridengineconfig true (dpkg-reconfigure gridengine-master)"
    start_qmaster
    configure_global
    configure_scheduler
    configure_hosts
    start_execd
    configure_pe
    configure_nodes_pe
    configure_gpu_complex
    configure_queue all.q "$SLOTS"
    configure_queue short.q 2 0:10:0
    # a queue that is in error state from an earlier failure is cleared
    qmod -c '*' >/dev/null 2>&1 || true
    wait_for "queue all.q@$HOST usable" "$TIMEOUT" queue_ok all.q
    probe_job
    gpu_probe_job
    log "SGE ready (SGE_ROOT=$SGE_ROOT SGE_CELL=$SGE_CELL, all.q $SLOTS slots, PEs smp and $NODES_PE, complex gpu=$GPUS)"
}

no_jobs() { [[ -z "$(qstat -u '*' 2>/dev/null)" ]]; }

cmd_stop() {
    mkdir -p "$WORK"
    local qpid epid shepherds=() p
    qpid="$(qmaster_pid)"; epid="$(execd_pid)"
    if pid_alive "$qpid" sge_qmaster; then
        if ! no_jobs; then
            qdel -f -u '*' >/dev/null 2>&1 || true
            wait_for "all jobs deleted" 20 no_jobs || log "jobs remain; stopping anyway"
        fi
    fi
    mapfile -t shepherds < <(job_processes)
    if pid_alive "$epid" sge_execd; then
        stop_pid sge_execd "$epid" "$TIMEOUT"
    else
        log "sge_execd not running"
    fi
    if pid_alive "$qpid" sge_qmaster; then
        # a TERM makes a controlled shutdown that takes about 10 s
        stop_pid sge_qmaster "$qpid" "$TIMEOUT"
    else
        log "sge_qmaster not running"
    fi
    # job processes that outlived their execd (also one that died before this stop)
    mapfile -t shepherds < <({ printf '%s\n' "${shepherds[@]}"; job_processes; } | sed '/^$/d' | sort -un)
    for p in "${shepherds[@]}"; do
        if pid_alive "$p"; then log "killing leftover job process $p"; kill -KILL "$p" 2>/dev/null || true; fi
    done
    local left=() i
    for (( i = 0; i < 25; i++ )); do
        left=()
        for p in "$qpid" "$epid" "${shepherds[@]}"; do pid_alive "$p" && left+=("$p"); done
        (( ${#left[@]} )) || break
        sleep 0.2
    done
    (( ${#left[@]} == 0 )) || die "processes of this cell remain: ${left[*]}"
    log "SGE cell $SGE_CELL stopped; its daemons and job processes are gone"
}

cmd_status() {
    local ready=0 qp ep
    qp="$(qmaster_pid)"; ep="$(execd_pid)"
    if ! installed; then echo "packages: not installed"; ready=1; fi
    if qmaster_running; then echo "sge_qmaster: running (pid $qp)"; else echo "sge_qmaster: stopped"; ready=1; fi
    if execd_running; then echo "sge_execd:   running (pid $ep)"; else echo "sge_execd:   stopped"; ready=1; fi
    if (( ready == 0 )); then
        if qmaster_answers; then echo "qmaster:     answers"; else echo "qmaster:     not answering"; ready=1; fi
        qhost 2>&1 | sed 's/^/  /' || true
        qstat -f 2>&1 | sed 's/^/  /' || true
        if queue_ok all.q; then echo "all.q@$HOST: ok"; else echo "all.q@$HOST: not usable"; ready=1; fi
        echo "jobs (all users): $(qstat -u '*' 2>/dev/null | tail -n +3 | wc -l)"
    fi
    local jobs=""
    execd_running && jobs="$(descendants "$ep" | tr '\n' ' ')"
    echo "processes below sge_execd: ${jobs:-none}"
    if (( ready == 0 )); then echo "state: READY"; else echo "state: NOT READY"; fi
    STATUS_RC="$ready"
}

case "${1:-}" in
    start) cmd_start ;;
    install) mkdir -p "$WORK"; chmod 755 "$WORK"; install_packages ;;
    gpus) mkdir -p "$WORK"; chmod 755 "$WORK"
          configure_nodes_pe; configure_gpu_complex; attach_nodes_pe; gpu_probe_job ;;
    stop) cmd_stop ;;
    status) STATUS_RC=1; cmd_status; exit "$STATUS_RC" ;;
    pids) if qmaster_running; then echo "sge_qmaster $(qmaster_pid)"; fi
          if execd_running; then echo "sge_execd $(execd_pid)"; fi ;;
    env) printf 'export SGE_ROOT=%q SGE_CELL=%q' "$SGE_ROOT" "$SGE_CELL"
         [[ -z "$CELL_NAME" ]] || printf ' SGE_QMASTER_PORT=%q SGE_EXECD_PORT=%q' "$SGE_QMASTER_PORT" "$SGE_EXECD_PORT"
         echo ;;
    *) echo "usage: $0 start|gpus|stop|status|env|pids|install" >&2; exit 2 ;;
esac
