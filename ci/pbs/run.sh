#!/usr/bin/env bash
# Single-host OpenPBS 23.06.06 (the open-source PBS Professional) for CI, built from source:
# server, scheduler, comm, one mom and PBS's own PostgreSQL datastore on this host; the mom
# reports PBS_VNODES vnodes (default 3: <host>[0], <host>[1], <host>[2]), each with its own
# resources_available.host, CPUs and fake GPUs, so multi-chunk jobs (place=scatter) spread
# over them as over several hosts.
#
#   ci/pbs/run.sh install  apt build/run dependencies, unpack, build, `make install` into
#                          /opt/pbs (skipped when /opt/pbs already holds the wanted version)
#   ci/pbs/run.sh start    install when missing, configure the host, start the daemons, apply
#                          the server settings and the vnode layout, prove that a job runs
#   ci/pbs/run.sh stop     delete all jobs of this PBS server, stop its daemons by their pid
#                          (lock) files and its datastore by its own pid file; nothing else, never
#                          by process name. One OpenPBS per machine: /etc/pbs.conf, /var/spool/pbs
#                          and the fixed ports 15001-15004/15007/17001 leave no room for a
#                          second instance beside it (a second one would need its own
#                          PBS_CONF_FILE, PBS_HOME, ports, datastore and host name).
#   ci/pbs/run.sh status   print the state; exit 0 when every daemon runs, 1 otherwise
#   ci/pbs/run.sh layout   (also part of start) the ngpus resource and the vnodes on a running
#                          PBS: idempotent, no daemon restarted (the scheduler and, when the
#                          vnode definition changed, the mom are sent SIGHUP), then prove that
#                          a job of one chunk per vnode runs. `gpus` is its former name.
#
# PBS's commands live in /opt/pbs/bin. Debian has no `qsub` of its own, but Grid Engine's
# /usr/bin/qsub may be installed too: put /opt/pbs/bin FIRST on PATH for PBS tests (this
# script always calls /opt/pbs/bin/... by full path and never changes the global PATH).
#
# Source tarball (see ci/pbs/README.md): $OPENPBS_TARBALL, else ci/pbs/openpbs-<version>.tar.gz,
# else ../shared/openpbs/openpbs-<version>.tar.gz beside the checkout, else a `git clone` of
# $OPENPBS_GIT_URL at tag $PBS_TAG.
# Tunables (environment): PBS_TAG (v23.06.06), BUILD_DIR (/var/tmp/ci-pbs-build), PBS_VNODES
# (vnodes of the mom, default 3), PBS_NCPUS (CPUs each vnode advertises, default 16: several
# multi-core test jobs at once), PBS_NGPUS (fake GPUs each vnode advertises as the site
# resource ngpus, default 2), PBS_VNODE_MEM (memory each vnode advertises, default 8gb),
# SCHED_ITERATION (scheduler cycle in seconds, default 2), PBS_HOSTNAME (name PBS uses for
# itself), PBS_TIMEOUT (seconds for each wait, default 90), FORCE_BUILD (1 = rebuild),
# JOBS (make -j).
# OpenPBS is AGPL-3.0: a test dependency built and run on the CI machine, never part of our package.
set -Eeuo pipefail
trap 'rc=$?; echo "run.sh: line $LINENO: \"$BASH_COMMAND\" failed (rc=$rc)" >&2' ERR

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PBS_TAG=${PBS_TAG:-v23.06.06}
PBS_VERSION=${PBS_TAG#v}
PBS_EXEC=/opt/pbs
PBS_HOME=/var/spool/pbs
BUILD_DIR=${BUILD_DIR:-/var/tmp/ci-pbs-build}
SRC_DIR=$BUILD_DIR/src
LOG_DIR=$BUILD_DIR/logs
OPENPBS_GIT_URL=${OPENPBS_GIT_URL:-https://github.com/openpbs/openpbs.git}
SCHED_ITERATION=${SCHED_ITERATION:-2}
PBS_NCPUS=${PBS_NCPUS:-16}
PBS_NGPUS=${PBS_NGPUS:-2}
PBS_VNODES=${PBS_VNODES:-3}
PBS_VNODE_MEM=${PBS_VNODE_MEM:-8gb}
VNODE_DEF=djq_vnodes   # its name among the mom's configuration files (pbs_mom -s list)
TIMEOUT=${PBS_TIMEOUT:-90}
JOBS=${JOBS:-$(nproc)}
HOSTS_MARK="# added for OpenPBS (ci/pbs/run.sh)"
SYSTEM_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

BUILD_DEPS=(gcc g++ make autoconf automake libtool pkg-config git ca-certificates
            libhwloc-dev libx11-dev libxt-dev libedit-dev libical-dev libncurses-dev
            libpq-dev python3-dev tcl-dev tk-dev swig libexpat1-dev libssl-dev
            libxext-dev libxft-dev perl)
RUN_DEPS=(postgresql python3 libpython3.11 libedit2 libical3 libhwloc15 libpq5 libssl3
          zlib1g libtcl8.6 libtk8.6 libexpat1 iproute2 procps)

T0=$EPOCHREALTIME
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}'; }
log() { printf '[pbs %6ss] %s\n' "$(since "$T0")" "$*" >&2; }
die() { echo "run.sh: ERROR: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || die "must run as root"

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.5 s until it succeeds
wait_for() {
    local limit=$1 what=$2; shift 2
    local start=$EPOCHREALTIME deadline=$(( $(date +%s) + limit ))
    until "$@" >/dev/null 2>&1; do
        (( $(date +%s) < deadline )) || { echo "run.sh: timeout after ${limit}s waiting for: $what" >&2; return 1; }
        sleep 0.5
    done
    log "$what (waited $(since "$start")s)"
}

# ------------------------------------------------------------------------------ install
tarball() {
    local candidate
    for candidate in "${OPENPBS_TARBALL:-}" "$HERE/openpbs-$PBS_VERSION.tar.gz" \
                     "$REPO/../shared/openpbs/openpbs-$PBS_VERSION.tar.gz"; do
        [[ -n $candidate && -f $candidate ]] && { echo "$candidate"; return 0; }
    done
    [[ -z ${OPENPBS_TARBALL:-} ]] || die "OPENPBS_TARBALL=$OPENPBS_TARBALL does not exist"
    return 1
}

apt_ensure() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    (( ${#missing[@]} )) || { log "apt: all ${#} packages present"; return 0; }
    log "apt: installing ${missing[*]}"
    apt-get update -qq
    apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing[@]}" \
        > "$LOG_DIR/apt.log" 2>&1 || { tail -n 30 "$LOG_DIR/apt.log" >&2; die "apt-get install failed"; }
}

installed_version() {
    [[ -x $PBS_EXEC/bin/qstat && -x $PBS_EXEC/sbin/pbs_server.bin ]] || return 1
    $PBS_EXEC/bin/qstat --version 2>/dev/null | awk '{print $NF}'
}

fetch_source() {
    local tb
    rm -rf "$SRC_DIR"; mkdir -p "$SRC_DIR"
    if tb=$(tarball); then
        log "source: $tb"
        tar -xzf "$tb" -C "$SRC_DIR" --strip-components=1
    else
        log "source: no tarball found, git clone $OPENPBS_GIT_URL at $PBS_TAG"
        git clone -q --depth 1 --branch "$PBS_TAG" "$OPENPBS_GIT_URL" "$SRC_DIR"
    fi
    # Python 3.11 (Debian 12) has no eval.h any more; upstream's fix (commit 1d17427c0) is not
    # in v23.06.06: include Python.h instead.
    sed -i 's|^#include <eval.h>.*|#include <Python.h>|' \
        "$SRC_DIR/src/lib/Libpython/pbs_python_external.c"
}

step() {  # step NAME COMMAND...: run with output to $LOG_DIR/NAME.log, log its duration
    local name=$1 start=$EPOCHREALTIME; shift
    "$@" > "$LOG_DIR/$name.log" 2>&1 || { tail -n 30 "$LOG_DIR/$name.log" >&2; die "$name failed (log: $LOG_DIR/$name.log)"; }
    log "$name done in $(since "$start")s"
}

build_install() {
    fetch_source
    cd "$SRC_DIR"
    # A pyenv/conda/venv python3 first on PATH would be baked into the build: system PATH only.
    step autogen env PATH=$SYSTEM_PATH ./autogen.sh
    step configure env PATH=$SYSTEM_PATH ./configure --prefix=$PBS_EXEC --with-python=/usr
    step make env PATH=$SYSTEM_PATH make -j"$JOBS"
    step make-install env PATH=$SYSTEM_PATH make install
    # pbs_iff and pbs_rcp must be setuid root; `make install` does not do it.
    chmod 4755 $PBS_EXEC/sbin/pbs_iff $PBS_EXEC/sbin/pbs_rcp
    cd "$REPO"
}

cmd_install() {
    mkdir -p "$LOG_DIR"
    apt_ensure "${BUILD_DEPS[@]}" "${RUN_DEPS[@]}"
    local v; v=$(installed_version || true)
    if [[ $v == "$PBS_VERSION" && ${FORCE_BUILD:-0} != 1 ]]; then
        log "OpenPBS $v already installed in $PBS_EXEC (FORCE_BUILD=1 rebuilds)"
    else
        if daemons_running; then cmd_stop; fi
        build_install
        log "built and installed OpenPBS $(installed_version) in $PBS_EXEC"
    fi
}

# ------------------------------------------------------------------------ host settings
# PBS ignores loopback addresses for server, comm and mom. When the hostname resolves only to
# 127.x (Debian's default /etc/hosts), add an alias "<hostname>-pbs" for the machine's first
# global IPv4 address rather than touching the hostname's line other software relies on.
# Job ids then look like "12.vm-pbs".
pbs_name() {
    if [[ -n ${PBS_HOSTNAME:-} ]]; then echo "$PBS_HOSTNAME"; return; fi
    local h; h=$(hostname -s)
    if getent ahostsv4 "$h" | awk '{print $1}' | grep -qv '^127\.'; then echo "$h"; else echo "$h-pbs"; fi
}

primary_ip() { ip -4 -o addr show scope global 2>/dev/null | awk '{split($4, a, "/"); print a[1]; exit}'; }

ensure_hosts() {
    local name=$1 ip rest
    getent ahostsv4 "$name" | awk '{print $1}' | grep -qv '^127\.' && return 0
    ip=$(primary_ip); [[ -n $ip ]] || die "no non-loopback IPv4 address: PBS cannot run on this host"
    log "adding '$ip $name' to /etc/hosts"
    # rewritten in place (not replaced) so that a bind-mounted /etc/hosts (docker) keeps working
    rest=$(grep -v -F "$HOSTS_MARK" /etc/hosts || true)
    printf '%s\n%s %s %s\n' "$rest" "$ip" "$name" "$HOSTS_MARK" > /etc/hosts
}

write_conf() {
    local name=$1 tmp; tmp=$(mktemp)
    cat > "$tmp" <<EOF
PBS_EXEC=$PBS_EXEC
PBS_HOME=$PBS_HOME
PBS_SERVER=$name
PBS_SERVER_HOST_NAME=$name
PBS_LEAF_NAME=$name
PBS_MOM_NODE_NAME=$name
PBS_START_SERVER=1
PBS_START_SCHED=1
PBS_START_COMM=1
PBS_START_MOM=1
PBS_CORE_LIMIT=unlimited
PBS_SCP=/usr/bin/scp
EOF
    cmp -s "$tmp" /etc/pbs.conf || { log "writing /etc/pbs.conf (server $name)"; install -m 644 "$tmp" /etc/pbs.conf; }
    rm -f "$tmp"
}

configure_host() {
    local name; name=$(pbs_name)
    ensure_hosts "$name"
    write_conf "$name"
    if [[ ! -d $PBS_HOME/server_priv ]]; then
        # "sameconf": only create PBS_HOME; no rewrite of pbs.conf, no systemd/profile.d entries
        log "creating $PBS_HOME (pbs_postinstall)"
        mkdir -p "$BUILD_DIR"
        $PBS_EXEC/libexec/pbs_postinstall server "$PBS_VERSION" $PBS_EXEC $PBS_HOME postgres sameconf \
            > "$BUILD_DIR/postinstall.log" 2>&1 || { cat "$BUILD_DIR/postinstall.log" >&2; die "pbs_postinstall failed"; }
    fi
    # The mom does not take "$name" for itself (gethostname() canonicalises differently), so it
    # would copy job output back with scp, fail, and keep the job in state E for a minute.
    grep -q '^\$usecp' $PBS_HOME/mom_priv/config || echo '$usecp *:/ /' >> $PBS_HOME/mom_priv/config
    mom_not_additive
}

# ------------------------------------------------------------------------------- daemons
qm() { $PBS_EXEC/bin/qmgr -c "$1" >/dev/null; }
pidfiles() {
    echo $PBS_HOME/server_priv/server.lock $PBS_HOME/mom_priv/mom.lock \
         $PBS_HOME/sched_priv/sched.lock $PBS_HOME/server_priv/comm.lock
}
pid_of() { local p; p=$(head -n 1 "$1" 2>/dev/null | tr -dc '0-9' || true); echo "$p"; }
daemons_running() {   # true when any PBS daemon (or PBS's datastore) runs
    local f p
    for f in $(pidfiles) $PBS_HOME/datastore/postmaster.pid; do
        p=$(pid_of "$f"); [[ -n $p ]] && ps -p "$p" >/dev/null 2>&1 && return 0
    done
    return 1
}
node_free() { $PBS_EXEC/bin/pbsnodes -v "$1" 2>/dev/null | grep -Eq 'state = (free|job-busy)'; }

cmd_start() {
    mkdir -p "$BUILD_DIR"
    [[ $(installed_version || true) == "$PBS_VERSION" ]] || cmd_install
    configure_host
    local name start=$EPOCHREALTIME; name=$(pbs_name)
    # the first start runs pbs_habitat: initdb of the datastore, default queue and settings
    $PBS_EXEC/libexec/pbs_init.d start 2>&1 | grep -v -e 'ulimit: ' -e 'OOM killer' >&2 || true
    wait_for "$TIMEOUT" "pbs_server answers" $PBS_EXEC/bin/qstat -B
    qm "set server acl_roots = root"            # else root gets "qsub: Bad UID for job execution"
    qm "set server flatuid = true"
    qm "set server scheduler_iteration = $SCHED_ITERATION"
    qm "set server job_history_enable = true"   # finished jobs stay visible to qstat -x
    if ! $PBS_EXEC/bin/qstat -Q workq >/dev/null 2>&1; then
        qm "create queue workq queue_type = execution"; qm "set server default_queue = workq"
    fi
    qm "set queue workq enabled = true"; qm "set queue workq started = true"
    # ngpus exists before the node: the server refuses the mom's vnode report naming a
    # resource it does not know
    configure_gpus
    $PBS_EXEC/bin/pbsnodes "$name" >/dev/null 2>&1 || qm "create node $name"
    wait_for "$TIMEOUT" "node $name free" node_free "$name"
    log "PBS started in $(since "$start")s (server $name)"
    configure_vnodes
    probe_job
    log "PBS ready: use $PBS_EXEC/bin first on PATH (/usr/bin/qsub may be Grid Engine's)"
}

# ---------------------------------------------------------------------------- GPUs
# OpenPBS has no GPU resource of its own: sites define "ngpus" (type long, flag nh: a
# host-level consumable the server counts per vnode) and list it on the scheduler's
# "resources:" line, else the scheduler ignores it and places a job over the GPUs a node has.
# Each vnode advertises PBS_NGPUS fake GPUs; without PBS's cgroups hook PBS sets no
# CUDA_VISIBLE_DEVICES, so the job script numbers the devices itself (0..gpus-1).
sched_conf() { echo $PBS_HOME/sched_priv/sched_config; }
sched_knows_ngpus() { grep -Eq '^resources:.*[", ]ngpus[", ]' "$(sched_conf)"; }
configure_gpus() {
    local start=$EPOCHREALTIME pid
    if ! $PBS_EXEC/bin/qmgr -c "list resource ngpus" >/dev/null 2>&1; then
        qm "create resource ngpus type = long, flag = nh"; log "created resource ngpus (long, nh)"
    fi
    if ! sched_knows_ngpus; then
        sed -i -E 's/^(resources: *"[^"]*)"/\1, ngpus"/' "$(sched_conf)"
        sched_knows_ngpus || die "could not add ngpus to the resources: line of $(sched_conf)"
        # SIGHUP: the scheduler rereads sched_config at its next cycle, jobs are untouched
        pid=$(daemon_pid $PBS_HOME/sched_priv/sched.lock pbs_sched)
        kill -HUP "$pid"; log "added ngpus to sched_config resources, sent SIGHUP to pbs_sched $pid"
    fi
    log "ngpus configured in $(since "$start")s"
}

# daemon_pid LOCKFILE PROGRAM: the pid in a PBS daemon's lock file, checked to be PROGRAM's
daemon_pid() {
    local pid; pid=$(pid_of "$1")
    [[ -n $pid ]] && ps -p "$pid" -o args= | grep -q "$PBS_EXEC/sbin/$2" \
        || die "$2 is not running (pid file $1)"
    echo "$pid"
}

# ---------------------------------------------------------------------------- vnodes
# Several "nodes" on one host: the mom reports PBS_VNODES vnodes <host>[i] from a version-2
# vnode definition file (inserted with `pbs_mom -s insert`, read at start and on SIGHUP), each
# with PBS_NCPUS CPUs, PBS_VNODE_MEM memory and PBS_NGPUS GPUs. Each carries its own
# resources_available.host (<host>-i, a name only the scheduler uses, never resolved), so
# place=scatter (one chunk per host) puts the chunks of a job on distinct vnodes, as on a
# site with one vnode per host; exec_host still names the one mom (<host>/0+<host>/1+...),
# exec_vnode names the vnodes. The natural vnode <host> stands for the mom and runs nothing:
# its CPUs, memory and GPUs are set to 0 with qmgr (a value set with qmgr wins over the mom's).
vnode_name() { echo "$1[$2]"; }
# $vnodedef_additive is True by default: a mom keeps reporting the vnodes of a definition that
# is gone. False: at a SIGHUP (after the one that read it) the mom drops them and the server
# marks them Stale, so the vnodes follow the current definition.
mom_not_additive() {
    grep -q '^\$vnodedef_additive' $PBS_HOME/mom_priv/config \
        || echo '$vnodedef_additive false' >> $PBS_HOME/mom_priv/config
}
vnode_def() {
    local name=$1 i v
    echo '$configversion 2'
    for (( i = 0; i < PBS_VNODES; i++ )); do
        v=$(vnode_name "$name" "$i")
        echo "$v: resources_available.host=$name-$i"
        echo "$v: resources_available.ncpus=$PBS_NCPUS"
        echo "$v: resources_available.mem=$PBS_VNODE_MEM"
        echo "$v: resources_available.ngpus=$PBS_NGPUS"
    done
}
# install_vnode_def NAME: (re)insert the definition; false when the mom already has this one
install_vnode_def() {
    local tmp; tmp=$(mktemp)
    vnode_def "$1" > "$tmp"
    if $PBS_EXEC/sbin/pbs_mom -s show $VNODE_DEF 2>/dev/null | cmp -s - "$tmp"; then
        rm -f "$tmp"; return 1
    fi
    $PBS_EXEC/sbin/pbs_mom -s remove $VNODE_DEF >/dev/null 2>&1 || true
    $PBS_EXEC/sbin/pbs_mom -s insert $VNODE_DEF "$tmp" || { rm -f "$tmp"; die "pbs_mom -s insert $VNODE_DEF failed"; }
    rm -f "$tmp"
    log "inserted vnode definition $VNODE_DEF ($PBS_VNODES vnodes)"
}
# vnodes_ready NAME: every vnode is up with the resources of the definition, the natural
# vnode has none
vnodes_ready() {
    local name=$1 i out
    # -v: that vnode only (pbsnodes HOST sums the vnodes whose resources_available.host is HOST)
    out=$($PBS_EXEC/bin/pbsnodes -v "$name") || return 1
    grep -q 'resources_available.ncpus = 0$' <<< "$out" || return 1
    grep -q 'resources_available.ngpus = 0$' <<< "$out" || return 1
    for (( i = 0; i < PBS_VNODES; i++ )); do
        out=$($PBS_EXEC/bin/pbsnodes -v "$(vnode_name "$name" "$i")") || return 1  # -v: a vnode, not a host
        grep -Eq 'state = (free|job-busy)$' <<< "$out" \
            && grep -q "resources_available.host = $name-$i\$" <<< "$out" \
            && grep -q "resources_available.ncpus = $PBS_NCPUS\$" <<< "$out" \
            && grep -q "resources_available.ngpus = $PBS_NGPUS\$" <<< "$out" || return 1
    done
}
# vnodes <name>[i] with i >= PBS_VNODES, left from a larger layout: the server keeps a vnode
# the mom no longer reports until it is deleted
stale_vnodes() {
    $PBS_EXEC/bin/pbsnodes -av 2>/dev/null | awk -v n="$1" -v k="$PBS_VNODES" '
        index($0, n "[") == 1 && $0 ~ /\[[0-9]+\]$/ {
            i = substr($0, length(n) + 2); sub(/\]$/, "", i); if (i + 0 >= k) print
        }'
}
vnode_stale() { $PBS_EXEC/bin/pbsnodes -v "$1" 2>/dev/null | grep -q 'state = .*[Ss]tale'; }
natural_vnode_empty() {
    local name=$1 r
    for r in ncpus ngpus mem; do
        $PBS_EXEC/bin/pbsnodes -v "$name" | grep -q "resources_available.$r = 0b\?\$" \
            || qm "set node $name resources_available.$r = 0"
    done
}
configure_vnodes() {
    local name start=$EPOCHREALTIME pid; name=$(pbs_name)
    [[ $PBS_VNODES =~ ^[1-9][0-9]*$ ]] || die "PBS_VNODES=$PBS_VNODES is not a positive integer"
    natural_vnode_empty "$name"
    mom_not_additive
    # a changed definition, or a mom that reported before the server knew ngpus: SIGHUP
    # makes the mom reread its configuration and report its vnodes again
    if install_vnode_def "$name" || ! vnodes_ready "$name"; then
        pid=$(daemon_pid $PBS_HOME/mom_priv/mom.lock pbs_mom)
        kill -HUP "$pid"; log "sent SIGHUP to pbs_mom $pid"
    fi
    wait_for 30 "$PBS_VNODES vnodes $name[0..$(( PBS_VNODES - 1 ))] free" vnodes_ready "$name" \
        || { $PBS_EXEC/bin/pbsnodes -av >&2; die "the vnodes did not come up"; }
    local v stale; stale=$(stale_vnodes "$name")
    if [[ -n $stale ]]; then
        # once more: a mom that read "$vnodedef_additive false" at the last SIGHUP drops them now
        pid=$(daemon_pid $PBS_HOME/mom_priv/mom.lock pbs_mom); kill -HUP "$pid"
        for v in $stale; do
            wait_for 30 "vnode $v Stale (not in the definition any more)" vnode_stale "$v" \
                || die "the mom still reports vnode $v"
            $PBS_EXEC/bin/qmgr -c "delete node $v" >/dev/null || die "could not delete vnode $v"
            log "deleted vnode $v"
        done
    fi
    log "vnodes configured in $(since "$start")s ($PBS_NCPUS CPUs, $PBS_VNODE_MEM, $PBS_NGPUS GPUs each)"
}

# ---------------------------------------------------------------------------- probe
# One job of one chunk per vnode (place=scatter, ngpus in each chunk): it must run, spread over
# every vnode, keep its ngpus, and its output must come back.
probe_done() { $PBS_EXEC/bin/qstat -x -f "$1" 2>/dev/null | grep -q 'job_state = F'; }
probe_job() {
    local id work=/var/tmp/ci-pbs-probe start=$EPOCHREALTIME name info i
    name=$(pbs_name)
    rm -rf "$work"; mkdir -p "$work"
    id=$(cd "$work" && echo 'echo probe-ok $PBS_JOBID $(hostname) $(wc -l < "$PBS_NODEFILE")' \
         | $PBS_EXEC/bin/qsub -N ci-probe -l place=scatter -l walltime=00:01:00 \
             -l select=$PBS_VNODES:ncpus=1:mem=64mb:ngpus=$PBS_NGPUS)
    log "submitted probe job $id"
    wait_for 60 "probe job $id finished" probe_done "$id" || { $PBS_EXEC/bin/qstat -x -f "$id" >&2 || true; die "probe job did not run"; }
    wait_for 20 "probe output copied back" grep -q probe-ok "$work/ci-probe.o${id%%.*}" \
        || die "probe job $id ran but its output is missing"
    # exec_vnode wraps in qstat -f's text: -w keeps it on one line
    info=$($PBS_EXEC/bin/qstat -x -f -w "$id")
    grep -q "Resource_List.ngpus = $(( PBS_VNODES * PBS_NGPUS ))\$" <<< "$info" \
        || die "probe job $id did not keep its ngpus request"
    for (( i = 0; i < PBS_VNODES; i++ )); do
        grep -qF "($(vnode_name "$name" "$i"):ncpus=1:" <<< "$info" \
            || { grep exec_vnode <<< "$info" >&2; die "probe job $id has no chunk on vnode $(vnode_name "$name" "$i")"; }
    done
    log "probe: $(cat "$work/ci-probe.o${id%%.*}") (one chunk on each vnode, ngpus=$PBS_NGPUS each; submit to output $(since "$start")s)"
}

no_jobs() { [[ -z $($PBS_EXEC/bin/qselect 2>/dev/null) ]]; }

cmd_stop() {
    [[ -f /etc/pbs.conf && -x $PBS_EXEC/libexec/pbs_init.d ]] || { log "PBS not installed"; return 0; }
    if $PBS_EXEC/bin/qstat -B >/dev/null 2>&1 && ! no_jobs; then
        # shellcheck disable=SC2046  # one argument per job id
        $PBS_EXEC/bin/qdel -W force $($PBS_EXEC/bin/qselect) >/dev/null 2>&1 || true
        wait_for 30 "all PBS jobs deleted" no_jobs || log "jobs remain; stopping anyway"
    fi
    $PBS_EXEC/libexec/pbs_init.d stop >&2 || true
    local f p
    for f in $(pidfiles); do   # a daemon that did not exit: by its pid file only, never by name
        p=$(pid_of "$f")
        if [[ -n $p ]] && ps -p "$p" -o args= 2>/dev/null | grep -q "$PBS_EXEC/sbin/pbs_"; then
            log "killing leftover pid $p ($f)"; kill "$p" || true
        fi
    done
    [[ ! -f $PBS_HOME/datastore/postmaster.pid ]] || $PBS_EXEC/sbin/pbs_dataservice stop >&2 || true
    if daemons_running; then die "some PBS daemon still runs"; fi
    log "PBS stopped"
}

cmd_status() {
    local f p v ready=0
    if v=$(installed_version); then echo "installed: OpenPBS $v in $PBS_EXEC"; else echo "installed: no"; ready=1; fi
    for f in $(pidfiles) $PBS_HOME/datastore/postmaster.pid; do
        p=$(pid_of "$f")
        if [[ -n $p ]] && ps -p "$p" >/dev/null 2>&1; then
            echo "running: $(basename "$f") pid $p"
        else
            echo "stopped: $(basename "$f")"; ready=1
        fi
    done
    if (( ready == 0 )); then
        $PBS_EXEC/bin/qstat -B 2>&1 | sed 's/^/  /' || true
        $PBS_EXEC/bin/pbsnodes -av 2>&1 | grep -E '^\S|state =|available.(host|ncpus|ngpus) =' \
            | sed 's/^/  /' || true
        echo "jobs: $($PBS_EXEC/bin/qselect 2>/dev/null | wc -l)"
    fi
    if (( ready == 0 )); then echo "state: READY"; else echo "state: NOT READY"; fi
    return $ready
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    layout|gpus) configure_gpus; configure_vnodes; probe_job ;;
    stop) cmd_stop ;;
    status) cmd_status || exit 1 ;;
    *) echo "usage: $0 install|start|layout|stop|status" >&2; exit 2 ;;
esac
