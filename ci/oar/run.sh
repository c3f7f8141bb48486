#!/usr/bin/env bash
# Single-host OAR 2.5 cluster (Debian packages + PostgreSQL) for CI.
#
#   ci/oar/run.sh start     install when missing, configure, start, submit a probe job
#   ci/oar/run.sh stop      delete all jobs, stop Almighty, the oar-node sshd and (when `start`
#                           started it) PostgreSQL
#   ci/oar/run.sh status    exit 0 when the cluster is ready, 1 otherwise
#   ci/oar/run.sh selftest  job run by $OAR_TEST_USER that runs the test python and talks
#                           TCP to a python server on 127.0.0.1 (needs a started cluster)
#
# Written for a throwaway CI machine without systemd (Debian 12, run as root).
# Nothing is found or stopped by process name (nor by user): daemons are found through their PID
# files, their helpers through the sessions `start` recorded in $OAR_CI_STATE. One OAR per machine
# (one /etc/oar/oar.conf, port 6666): no second instance; anything else keeps running.
#
# Environment knobs:
#   OAR_TEST_USER  unprivileged user that submits jobs (default: oartest; root and oar
#                  are refused by OAR's admission rules)
#   OAR_CORES      number of 1-core resources on host "localhost" (default: 8)
#   OAR_PYTHON     python the test suite runs as $OAR_TEST_USER (default: the python3
#                  found on root's PATH, resolved to its real executable)
#   OAR_WORKDIR    directory the test user can read and write (default: ~OAR_TEST_USER/work)
#
# The test suite then runs as the test user, e.g.
#   runuser -u oartest -- "$OAR_PYTHON" -m pytest ... --basetemp "$OAR_WORKDIR/pytest"
# Jobs do not inherit the submitter's environment (PATH is minimal in a job): job
# scripts must call python by absolute path.

set -Eeuo pipefail
trap 'rc=$?; echo "run.sh: FAILED at line $LINENO (exit $rc): $BASH_COMMAND" >&2; exit $rc' ERR

OAR_TEST_USER=${OAR_TEST_USER:-oartest}
OAR_CORES=${OAR_CORES:-8}
OAR_WORKDIR=${OAR_WORKDIR:-}
OAR_PYTHON=${OAR_PYTHON:-}

OAR_CONF=/etc/oar/oar.conf
ALMIGHTY_PIDFILE=/var/run/oar-server.pid
SSHD_PIDFILE=/var/run/oar-node_sshd.pid
OAR_SSHD_CONF=/etc/oar/sshd_config
ALMIGHTY_SCRIPT=/usr/lib/oar/Almighty
SERVER_PORT=6666
NODE_PORT=6667
# Fixed passwords: the database only listens on localhost of a throwaway CI box.
DB_PASS_RW=oar_ci_rw
DB_PASS_RO=oar_ci_ro
PACKAGES=(postgresql oar-server oar-server-pgsql oar-node oar-user oar-user-pgsql
          libjson-perl acl procps)

# What `start` started: "NAME SESSION BOOT_ID" lines (the sessions of Almighty and the node
# sshd) and the postgres-started marker. Under /run: gone with a reboot, like the processes.
OAR_CI_STATE=/run/ci-oar
SESSIONS_FILE=$OAR_CI_STATE/sessions
PG_STARTED_MARK=$OAR_CI_STATE/postgres-started
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
T0=$(date +%s.%N)

# ----------------------------------------------------------------------------- helpers
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
log() { printf '[oar %6ss] %s\n' "$(elapsed "$T0")" "$*"; }
warn() { printf '[oar %6ss] WARNING: %s\n' "$(elapsed "$T0")" "$*" >&2; }
die() { printf '[oar %6ss] ERROR: %s\n' "$(elapsed "$T0")" "$*" >&2; exit 1; }

# step NAME CMD...: run a function and print how long it took.
step() {
    local name=$1 t
    shift
    t=$(date +%s.%N)
    "$@"
    log "done: $name ($(elapsed "$t") s)"
}

# pid_alive PID: the process exists and is neither a zombie nor dead.
pid_alive() {
    local pid=$1 stat rest
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    rest=${stat##*) }          # the command name may contain spaces: skip past ") "
    case ${rest%% *} in
        Z | X | x) return 1 ;;
    esac
    return 0
}

# pidfile_pid FILE: print the PID recorded in FILE when that process is alive.
pidfile_pid() {
    local pid
    [[ -r $1 ]] || return 1
    read -r pid _ <"$1" || [[ -n ${pid:-} ]] || return 1
    pid_alive "$pid" || return 1
    echo "$pid"
}

# wait_until TIMEOUT DESCRIPTION CMD...: poll CMD every 0.2 s.
wait_until() {
    local timeout=$1 desc=$2 deadline
    shift 2
    deadline=$(($(date +%s) + timeout))
    until "$@"; do
        if (($(date +%s) >= deadline)); then
            warn "timed out after ${timeout}s waiting for: $desc"
            return 1
        fi
        sleep 0.2
    done
}

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# descendants PID: print all descendant PIDs of PID (depth first).
descendants() {
    local parent=$1 child
    for child in $(ps -o pid= --ppid "$parent" 2>/dev/null || true); do
        echo "$child"
        descendants "$child"
    done
}

# kill_tree PID NAME: SIGTERM the process and its descendants, SIGKILL what is left.
kill_tree() {
    local root=$1 name=$2 pids p alive
    # Descendants, plus the other members of the daemon's own session: children whose
    # parent died are re-parented to PID 1 but stay in the session.
    local sid
    sid=$(ps -o sid= -p "$root" | tr -d ' ')
    pids=$({
        echo "$root"
        descendants "$root"
        # Both daemons run in a session of their own (setsid), never in ours.
        if [[ -n $sid && $sid -gt 1 && $sid != "$(ps -o sid= -p $$ | tr -d ' ')" ]]; then
            ps -o pid= -s "$sid" 2>/dev/null || true
        fi
    } | tr -d ' ' | awk 'NF && !seen[$0]++' | paste -sd' ' -)
    log "stopping $name: SIGTERM to PIDs $pids"
    # All at once: Almighty would respawn a child killed alone.
    kill -TERM $pids 2>/dev/null || true
    any_alive() { for p in $pids; do pid_alive "$p" && return 0; done; return 1; }
    if wait_until 10 "$name to exit" not any_alive; then return 0; fi
    alive=""
    for p in $pids; do pid_alive "$p" && alive="$alive $p"; done
    warn "$name still alive after SIGTERM, SIGKILL to$alive"
    kill -KILL $alive 2>/dev/null || true
    wait_until 5 "$name to die" not any_alive
}
not() { ! "$@"; }

# session_of PID: the session id of a live process.
session_of() {
    local stat rest
    pid_alive "$1" || return 1
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    rest=${stat##*) }                       # "STATE PPID PGRP SESSION ..."
    read -r _ _ _ rest _ <<<"$rest"
    echo "$rest"
}

boot_id() { cat /proc/sys/kernel/random/boot_id; }

# record_session NAME PID: remember the session of a daemon this script started.
record_session() {
    local sid
    sid=$(session_of "$2") || return 0
    ((sid > 1)) || return 0
    mkdir -p "$OAR_CI_STATE"
    { grep -v "^$1 " "$SESSIONS_FILE" 2>/dev/null || true; echo "$1 $sid $(boot_id)"; } >"$SESSIONS_FILE.tmp"
    mv "$SESSIONS_FILE.tmp" "$SESSIONS_FILE"
}

# recorded_session NAME: the session recorded for NAME during this boot.
recorded_session() {
    local name sid boot
    [[ -r $SESSIONS_FILE ]] || return 1
    while read -r name sid boot; do
        if [[ $name == "$1" && $boot == "$(boot_id)" && $sid =~ ^[0-9]+$ ]] && ((sid > 1)); then
            echo "$sid"
            return 0
        fi
    done <"$SESSIONS_FILE"
    return 1
}

# session_pids SID: live processes in that session.
session_pids() {
    local f line pid rest state sid
    for f in /proc/[0-9]*/stat; do
        read -r line 2>/dev/null <"$f" || continue
        pid=${f#/proc/}
        pid=${pid%/stat}
        rest=${line##*) }
        read -r state _ _ sid _ <<<"$rest"
        [[ $state == Z || $state == X || $state == x ]] && continue
        [[ $sid == "$1" ]] && echo "$pid"
    done
    return 0
}
stale_left() { local p; for p in $1; do pid_alive "$p" && return 0; done; return 1; }

as_user() { runuser -u "$OAR_TEST_USER" -- "$@"; }

# ----------------------------------------------------------------------------- PostgreSQL
pg_cluster() {
    # Prints "VERSION PORT" of the first cluster named main (Debian's default).
    pg_lsclusters -h 2>/dev/null | awk '$2 == "main" { print $1, $3; exit }'
}
pg_version() { local c; c=$(pg_cluster); echo "${c%% *}"; }
pg_port() { local c; c=$(pg_cluster); echo "${c##* }"; }
pg_pidfile() { echo "/var/lib/postgresql/$(pg_version)/main/postmaster.pid"; }
pg_running() { [[ -n $(pg_cluster) ]] && pidfile_pid "$(pg_pidfile)" >/dev/null; }
pg_ready() { pg_isready -q -h 127.0.0.1 -p "$(pg_port)"; }
psql_admin() { timeout 60 runuser -u postgres -- psql -p "$(pg_port)" -X -q -v ON_ERROR_STOP=1 "$@"; }

# ----------------------------------------------------------------------------- start steps
install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if ((${#missing[@]} == 0)); then
        log "packages already installed"
        return 0
    fi
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get update -qq
    timeout 900 apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" >/tmp/oar-ci-apt.log 2>&1 ||
        { tail -n 30 /tmp/oar-ci-apt.log >&2; die "apt-get install failed (log: /tmp/oar-ci-apt.log)"; }
}

# set_conf KEY VALUE: set KEY="VALUE" in oar.conf (replace the line, or append it).
set_conf() {
    local key=$1 value=$2
    if grep -q "^${key}=\"${value}\"\$" "$OAR_CONF"; then return 0; fi
    if grep -q "^${key}=" "$OAR_CONF"; then
        sed -i "s|^${key}=.*|${key}=\"${value}\"|" "$OAR_CONF"
    else
        printf '%s="%s"\n' "$key" "$value" >>"$OAR_CONF"
    fi
    log "oar.conf: $key set"
}

configure_oar() {
    [[ -f $OAR_CONF ]] || die "$OAR_CONF missing: is oar-common installed?"
    set_conf DB_HOSTNAME 127.0.0.1
    set_conf DB_PORT "$(pg_port)"
    set_conf DB_BASE_PASSWD "$DB_PASS_RW"
    set_conf DB_BASE_PASSWD_RO "$DB_PASS_RO"
    set_conf SERVER_HOSTNAME localhost
    # Default 5 s: a submission that arrives sooner after the previous scheduler run waits
    # for the next Almighty timer tick.
    set_conf SCHEDULER_MIN_TIME_BETWEEN_2_CALLS 1
}

create_pg_cluster() {
    if [[ -z $(pg_cluster) ]]; then
        local v
        v=$(find /usr/lib/postgresql -maxdepth 1 -mindepth 1 -printf '%f\n' | sort -V | tail -n 1)
        [[ -n $v ]] || die "no PostgreSQL server installed under /usr/lib/postgresql"
        log "creating PostgreSQL cluster $v/main"
        timeout 120 pg_createcluster "$v" main >/dev/null
    fi
}

start_postgres() {
    create_pg_cluster
    local v
    v=$(pg_version)
    if pg_running; then
        log "PostgreSQL $v/main already running (pid $(pidfile_pid "$(pg_pidfile)"))"
    else
        log "starting PostgreSQL $v/main"
        timeout 120 pg_ctlcluster "$v" main start
        # only a PostgreSQL started here is stopped by `stop`
        mkdir -p "$OAR_CI_STATE"
        boot_id >"$PG_STARTED_MARK"
    fi
    wait_until 60 "PostgreSQL to accept connections" pg_ready
}

create_database() {
    local exists
    exists=$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = 'oar'")
    if [[ $exists != 1 ]]; then
        log "creating the OAR database"
        timeout 120 oar-database --create --db-is-local -y >/tmp/oar-ci-db.log 2>&1 ||
            { cat /tmp/oar-ci-db.log >&2; die "oar-database --create failed"; }
    fi
    # Keep the role passwords in line with oar.conf (also when the database came from
    # an earlier run with other passwords).
    psql_admin -c "ALTER ROLE oar PASSWORD '$DB_PASS_RW'" -c "ALTER ROLE oar_ro PASSWORD '$DB_PASS_RO'" >/dev/null
    timeout 60 oar-database --check >/dev/null 2>&1 ||
        { oar-database --check >&2 || true; die "OAR database is not ready"; }
    log "OAR database ready"
}

# Patches of packaged files (CI-only hacks), all idempotent.
apply_patches() {
    # 1. Almighty blocks up to 10 s reading commands; a job submitted "too early" after a
    #    scheduler run then waits that long. 1 s makes job start latency about 3 s.
    if grep -q '^my \$read_commands_timeout = 10;' "$ALMIGHTY_SCRIPT"; then
        sed -i 's/^my \$read_commands_timeout = 10;/my $read_commands_timeout = 1; # oar-ci patch/' "$ALMIGHTY_SCRIPT"
        log "patched $ALMIGHTY_SCRIPT: read_commands_timeout 10 -> 1"
    fi
    grep -q '^my \$read_commands_timeout = 1;' "$ALMIGHTY_SCRIPT" ||
        die "could not patch read_commands_timeout in $ALMIGHTY_SCRIPT"

    # 2. After the last job of a user ends on a node, OAR deletes every file the user owns
    #    in /tmp, /dev/shm and /var/tmp. That would wipe the test suite's temporary dirs.
    local f
    for f in /etc/oar/job_resource_manager_cgroups.pl /usr/share/oar/oar-server/job_resource_manager_cgroups.pl; do
        [[ -f $f ]] || continue
        if grep -q "^my @Tmp_dir_to_clear = ('" "$f"; then
            sed -i "s|^my @Tmp_dir_to_clear = (.*|my @Tmp_dir_to_clear = (); # oar-ci patch: keep the user's /tmp files|" "$f"
            log "patched $f: @Tmp_dir_to_clear emptied"
        fi
        grep -q '^my @Tmp_dir_to_clear = ();' "$f" || die "could not patch @Tmp_dir_to_clear in $f"
    done
    for f in /etc/oar/job_resource_manager.pl /usr/share/oar/oar-server/job_resource_manager.pl; do
        [[ -f $f ]] || continue
        if grep -Eq '^[[:space:]]*system\("oardodo find /tmp/\. ' "$f"; then
            sed -i -E 's|^([[:space:]]*)system\("oardodo find /tmp/\. |\1\# oar-ci patch: no /tmp cleanup # system("oardodo find /tmp/. |' "$f"
            log "patched $f: /tmp cleanup disabled"
        fi
        if grep -Eq '^[[:space:]]*system\("oardodo find /tmp/\. ' "$f"; then
            die "could not patch the /tmp cleanup in $f"
        fi
    done
}

start_node_sshd() {
    local pid
    if pid=$(pidfile_pid "$SSHD_PIDFILE"); then
        log "oar-node sshd already running (pid $pid)"
    else
        [[ -f $OAR_SSHD_CONF ]] || die "$OAR_SSHD_CONF missing: is oar-node installed?"
        mkdir -p -m 0755 /run/sshd
        log "starting the oar-node sshd on port $NODE_PORT"
        rm -f "$SSHD_PIDFILE"
        # The config has a deprecated option: sshd warns about it on stderr.
        /usr/sbin/sshd -f "$OAR_SSHD_CONF" -o PidFile="$SSHD_PIDFILE" 2> >(grep -v UsePrivilegeSeparation >&2 || true)
        wait_until 20 "oar-node sshd pid file" pidfile_pid "$SSHD_PIDFILE" >/dev/null
        record_session "oar-node-sshd" "$(pidfile_pid "$SSHD_PIDFILE")"
    fi
    wait_until 20 "port $NODE_PORT" port_open "$NODE_PORT"
}

# Processes left by an Almighty (started by this script) whose main process died: its children
# survive it in its session and keep port 6666, so a new Almighty would exit at once.
stale_almighty_pids() {
    local sid
    sid=$(recorded_session Almighty) || return 0
    session_pids "$sid"
}

start_almighty() {
    local pid stale
    if pid=$(pidfile_pid "$ALMIGHTY_PIDFILE"); then
        log "Almighty already running (pid $pid)"
    else
        stale=$(stale_almighty_pids | paste -sd' ' -)
        if [[ -n $stale ]]; then
            warn "killing processes left by a dead Almighty (PIDs $stale)"
            kill -KILL $stale 2>/dev/null || true
            wait_until 10 "stale Almighty processes to exit" not stale_left "$stale"
        fi
        log "starting Almighty"
        rm -f "$ALMIGHTY_PIDFILE"
        # What /etc/init.d/oar-server start runs (its "stop" kills every Almighty by name,
        # so this script does not use the init script at all).
        /usr/sbin/oar-server
        wait_until 20 "Almighty pid file" pidfile_pid "$ALMIGHTY_PIDFILE" >/dev/null
        record_session Almighty "$(pidfile_pid "$ALMIGHTY_PIDFILE")"
    fi
    wait_until 30 "Almighty on port $SERVER_PORT" port_open "$SERVER_PORT"
}

create_resources() {
    local have ncpu i props
    props=$(timeout 60 oarproperty -l)
    grep -qx host <<<"$props" || { timeout 60 oarproperty -c -a host >/dev/null; log "added property host"; }
    grep -qx cpu <<<"$props" || { timeout 60 oarproperty -a cpu >/dev/null; log "added property cpu"; }
    grep -qx core <<<"$props" || { timeout 60 oarproperty -a core >/dev/null; log "added property core"; }
    have=$(psql_admin -d oar -tAc "SELECT core FROM resources WHERE network_address = 'localhost'")
    ncpu=$(nproc)
    for ((i = 1; i <= OAR_CORES; i++)); do
        grep -qx "$i" <<<"$have" && continue
        # Several OAR cores share one real CPU in the job cpuset when OAR_CORES > nproc.
        timeout 60 oarnodesetting -a -h localhost -p host=localhost -p cpu=1 -p core="$i" \
            -p cpuset=$(((i - 1) % ncpu)) >/dev/null
        log "created resource core=$i on localhost"
    done
    # A resource may have been left Suspected/Absent by an earlier run.
    if psql_admin -d oar -tAc "SELECT 1 FROM resources WHERE network_address = 'localhost' AND state <> 'Alive'" | grep -q 1; then
        timeout 60 oarnodesetting -s Alive -h localhost >/dev/null
        log "set the resources of localhost Alive"
    fi
    local n
    n=$(psql_admin -d oar -tAc "SELECT count(*) FROM resources WHERE network_address = 'localhost' AND state = 'Alive'")
    log "$n Alive resources on localhost"
    ((n >= OAR_CORES)) || die "expected $OAR_CORES Alive resources, found $n"
}

create_user() {
    if ! id "$OAR_TEST_USER" >/dev/null 2>&1; then
        useradd --create-home --shell /bin/bash "$OAR_TEST_USER"
        log "created user $OAR_TEST_USER"
    fi
    local home
    home=$(getent passwd "$OAR_TEST_USER" | cut -d: -f6)
    if [[ ! -d $home ]]; then
        mkdir -p "$home"
        chown "$OAR_TEST_USER:" "$home"
    fi
    OAR_WORKDIR=${OAR_WORKDIR:-$home/work}
    if [[ ! -d $OAR_WORKDIR ]]; then
        install -d -o "$OAR_TEST_USER" -g "$(id -gn "$OAR_TEST_USER")" -m 0755 "$OAR_WORKDIR"
        log "created work directory $OAR_WORKDIR"
    fi
    as_user test -w "$OAR_WORKDIR" || die "$OAR_TEST_USER cannot write $OAR_WORKDIR"
}

resolve_python() {
    if [[ -z $OAR_PYTHON ]]; then
        OAR_PYTHON=$(python3 -c 'import os, sys; print(os.path.realpath(sys.executable))' 2>/dev/null || true)
        [[ -n $OAR_PYTHON ]] || OAR_PYTHON=/usr/bin/python3
    fi
    [[ -x $OAR_PYTHON ]] || die "python $OAR_PYTHON not found (set OAR_PYTHON)"
}

# grant_traverse DIR: let the test user reach DIR (search permission on every ancestor).
# An ACL entry for that user only is used; chmod o+x is the fallback without setfacl.
grant_traverse() {
    local d=$1 dirs=()
    while [[ -n $d && $d != / ]]; do
        dirs=("$d" "${dirs[@]}")
        d=$(dirname "$d")
    done
    for d in "${dirs[@]}"; do   # top-down: a check below /root needs /root first
        if [[ -d $d ]] && ! as_user test -x "$d"; then
            if command -v setfacl >/dev/null && setfacl -m "u:$OAR_TEST_USER:x" "$d" 2>/dev/null; then
                log "ACL: gave $OAR_TEST_USER search (x) permission on $d"
            else
                chmod o+x "$d"
                warn "chmod o+x $d so that $OAR_TEST_USER can reach files below it (CI-only)"
            fi
        fi
    done
}

# The test suite runs as the test user with a python that may live under /root (pyenv).
grant_python_access() {
    resolve_python
    local prefixes p import_test
    prefixes=$("$OAR_PYTHON" -c 'import sys; print(sys.prefix); print(sys.base_prefix)' | sort -u)
    for p in $prefixes "$REPO_ROOT"; do
        grant_traverse "$p"
    done
    # Prefer a module that is installed for root: it proves site-packages is readable.
    if "$OAR_PYTHON" -c 'import yaml' 2>/dev/null; then import_test='import yaml'; else import_test='import json'; fi
    if ! as_user "$OAR_PYTHON" -c "$import_test" >/dev/null 2>&1; then
        for p in $prefixes; do
            warn "making $p readable by others (chmod -R o+rX, CI-only)"
            chmod -R o+rX "$p"
        done
        as_user "$OAR_PYTHON" -c "$import_test" || die "$OAR_TEST_USER cannot run $OAR_PYTHON"
    fi
    as_user test -r "$REPO_ROOT/ci/oar/run.sh" || warn "$OAR_TEST_USER cannot read $REPO_ROOT"
    log "$OAR_TEST_USER can run $OAR_PYTHON ($import_test)"
}

# submit_as_user DIR ARGS...: oarsub as the test user in DIR, print the job id.
submit_as_user() {
    local dir=$1 out id
    shift
    out=$(cd "$dir" && timeout 60 runuser -u "$OAR_TEST_USER" -- oarsub "$@") ||
        { echo "$out" >&2; die "oarsub failed"; }
    id=$(sed -n 's/^OAR_JOB_ID=\([0-9][0-9]*\)$/\1/p' <<<"$out")
    [[ -n $id ]] || { echo "$out" >&2; die "no job id in the oarsub output"; }
    echo "$id"
}

job_state() { timeout 20 oarstat -s -j "$1" 2>/dev/null | sed -n "s/^$1: //p"; }
job_finished() { case $(job_state "$1") in Terminated | Error) return 0 ;; esac; return 1; }

probe_job() {
    local dir id state t
    dir=$OAR_WORKDIR/oar-probe
    as_user mkdir -p "$dir"
    rm -f "$dir"/probe.*
    t=$(date +%s.%N)
    id=$(submit_as_user "$dir" -n ci-probe -l /core=1,walltime=0:02:00 \
        -O probe.%jobid%.out -E probe.%jobid%.err \
        "echo probe-ok; $OAR_PYTHON -c 'import sys; print(sys.version_info[:2])'")
    log "probe job $id submitted as $OAR_TEST_USER"
    wait_until 90 "probe job $id to finish" job_finished "$id" ||
        { oarstat -f -j "$id" >&2 || true; die "probe job $id did not finish"; }
    state=$(job_state "$id")
    # The output files are written by the job; give the filesystem a moment.
    wait_until 10 "probe output" test -s "$dir/probe.$id.out" || true
    if [[ $state != Terminated ]] || ! grep -q '^probe-ok$' "$dir/probe.$id.out" 2>/dev/null; then
        oarstat -f -j "$id" >&2 || true
        cat "$dir/probe.$id.out" "$dir/probe.$id.err" >&2 2>/dev/null || true
        tail -n 20 /var/log/oar.log >&2 || true
        die "probe job $id ended in state $state without the expected output"
    fi
    log "probe job $id Terminated in $(elapsed "$t") s, output: $(tr '\n' ' ' <"$dir/probe.$id.out")"
}

cmd_start() {
    log "start (repo $REPO_ROOT)"
    step "packages" install_packages
    step "PostgreSQL" start_postgres
    step "oar.conf" configure_oar
    step "database" create_database
    step "patches" apply_patches
    step "oar-node sshd" start_node_sshd
    step "Almighty" start_almighty
    step "resources" create_resources
    step "test user" create_user
    step "python access" grant_python_access
    step "probe job" probe_job
    log "OAR is ready: submit as '$OAR_TEST_USER', work dir $OAR_WORKDIR, python $OAR_PYTHON"
    log "start took $(elapsed "$T0") s"
}

# ----------------------------------------------------------------------------- stop
# Job ids in a non-final state (plain oarstat lists only those).
active_jobs() { timeout 20 oarstat 2>/dev/null | awk '$1 ~ /^[0-9]+$/ { print $1 }'; }
no_active_jobs() { [[ -z $(active_jobs) ]]; }

delete_jobs() {
    local ids
    if ! pidfile_pid "$ALMIGHTY_PIDFILE" >/dev/null || ! pg_running; then
        log "OAR server or database not running: no jobs to delete"
        return 0
    fi
    ids=$(active_jobs | tr '\n' ' ')
    if [[ -z ${ids// /} ]]; then
        log "no active jobs"
        return 0
    fi
    log "deleting jobs: $ids"
    # root may delete any user's job.
    timeout 60 oardel $ids >/dev/null 2>&1 || true
    wait_until 60 "jobs $ids to end" no_active_jobs || warn "jobs still active: $(active_jobs | tr '\n' ' ')"
}

stop_almighty() {
    local pid
    if pid=$(pidfile_pid "$ALMIGHTY_PIDFILE"); then
        kill_tree "$pid" Almighty
    else
        log "Almighty not running"
    fi
    rm -f "$ALMIGHTY_PIDFILE"
}

stop_node_sshd() {
    local pid
    if pid=$(pidfile_pid "$SSHD_PIDFILE"); then
        kill_tree "$pid" "oar-node sshd"
    else
        log "oar-node sshd not running"
    fi
    rm -f "$SSHD_PIDFILE"
}

pg_started_here() { [[ -r $PG_STARTED_MARK && $(cat "$PG_STARTED_MARK") == "$(boot_id)" ]]; }

stop_postgres() {
    if [[ -z $(pg_cluster 2>/dev/null || true) ]]; then
        log "no PostgreSQL cluster"
        return 0
    fi
    if ! pg_started_here; then
        log "PostgreSQL $(pg_version)/main was not started by this script: left running"
        return 0
    fi
    if pg_running; then
        log "stopping PostgreSQL $(pg_version)/main"
        timeout 120 pg_ctlcluster "$(pg_version)" main stop -m fast
    else
        log "PostgreSQL not running"
    fi
}

# user_processes USER: live processes of USER (zombies are skipped: PID 1 of this VM
# reaps them slowly).
user_processes() {
    local uid pid
    uid=$(id -u "$1" 2>/dev/null) || return 0
    for pid in $(ps -o pid= -u "$uid" 2>/dev/null || true); do
        pid_alive "$pid" && echo "$pid"
    done
    return 0
}

verify_stopped() {
    local bad=0 left pid name sid
    # Helpers (bipbip, oarexec, sarko...) left in the sessions of the daemons this script started.
    for name in Almighty oar-node-sshd; do
        sid=$(recorded_session "$name") || continue
        left=$(session_pids "$sid" | paste -sd' ' -)
        [[ -n ${left// /} ]] || continue
        warn "processes left in the session of $name ($sid), killing them by PID: $left"
        ps -o pid,user,args -p "${left// /,}" >&2 || true
        for pid in $left; do kill -KILL "$pid" 2>/dev/null || true; done
        sleep 0.5
        left=$(session_pids "$sid" | paste -sd' ' -)
        [[ -z ${left// /} ]] || { warn "still alive: $left"; bad=1; }
    done
    left=$(user_processes oar | paste -sd' ' -)
    if [[ -n ${left// /} ]]; then
        warn "other processes of user oar (not started by this script's daemons, not touched): $left"
        ps -o pid,user,args -p "${left// /,}" >&2 || true
    fi
    if id "$OAR_TEST_USER" >/dev/null 2>&1; then
        left=$(user_processes "$OAR_TEST_USER" | paste -sd' ' -)
        if [[ -n ${left// /} ]]; then
            warn "processes of $OAR_TEST_USER still running (not touched): $left"
            ps -o pid,args -p "${left// /,}" >&2 || true
        fi
    fi
    pidfile_pid "$ALMIGHTY_PIDFILE" >/dev/null && { warn "Almighty still running"; bad=1; }
    pidfile_pid "$SSHD_PIDFILE" >/dev/null && { warn "oar-node sshd still running"; bad=1; }
    if pg_started_here && pg_running; then warn "PostgreSQL still running"; bad=1; fi
    ((bad == 0)) || die "some OAR processes are still running"
    rm -f "$SESSIONS_FILE" "$PG_STARTED_MARK"
    log "nothing OAR-related is running"
}

cmd_stop() {
    if ! command -v oarstat >/dev/null; then
        log "OAR is not installed: nothing to stop"
        return 0
    fi
    step "delete jobs" delete_jobs
    step "Almighty" stop_almighty
    step "oar-node sshd" stop_node_sshd
    step "PostgreSQL" stop_postgres
    step "verify" verify_stopped
    log "stop took $(elapsed "$T0") s"
}

# ----------------------------------------------------------------------------- status
cmd_status() {
    local ok=0 pid
    check() {
        local what=$1
        shift
        if "$@" >/dev/null 2>&1; then echo "ok   $what"; else echo "FAIL $what"; ok=1; fi
    }
    check "OAR installed" command -v oarsub
    check "PostgreSQL running" pg_running
    check "oar-node sshd running (pid file $SSHD_PIDFILE)" pidfile_pid "$SSHD_PIDFILE"
    check "Almighty running (pid file $ALMIGHTY_PIDFILE)" pidfile_pid "$ALMIGHTY_PIDFILE"
    check "Almighty listening on $SERVER_PORT" port_open "$SERVER_PORT"
    check "oarstat answers" timeout 20 oarstat
    check "user $OAR_TEST_USER exists" id "$OAR_TEST_USER"
    return "$ok"
}

# ----------------------------------------------------------------------------- selftest
# A job run by the test user executes the test python by absolute path and exchanges a
# message with a TCP server (same python, same user) on 127.0.0.1.
cmd_selftest() {
    cmd_status >/dev/null || die "OAR is not running: run '$0 start' first"
    create_user >/dev/null
    resolve_python
    local dir id port srv i
    dir=$OAR_WORKDIR/oar-selftest
    as_user mkdir -p "$dir"
    rm -f "$dir"/*
    as_user tee "$dir/server.py" >/dev/null <<'EOF'
import socket, sys
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
srv.settimeout(120)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(srv.getsockname()[1]))
import os; os.rename(sys.argv[1] + ".tmp", sys.argv[1])
conn, _ = srv.accept()
print("server got:", conn.recv(100).decode().strip(), flush=True)
conn.sendall(b"ack\n")
conn.close()
EOF
    as_user "$OAR_PYTHON" "$dir/server.py" "$dir/port" >"$dir/server.log" 2>&1 &
    srv=$!
    wait_until 20 "server port file" test -s "$dir/port"
    port=$(cat "$dir/port")
    as_user tee "$dir/job.sh" >/dev/null <<EOF
#!/bin/bash
#OAR -n ci-selftest
#OAR -l /nodes=1/core=1,walltime=0:02:00
#OAR -O selftest.%jobid%.out
#OAR -E selftest.%jobid%.err
echo "PATH in job: \$PATH"
exec $OAR_PYTHON -c '
import socket
s = socket.create_connection(("127.0.0.1", $port), timeout=30)
s.sendall(b"hello from job\n")
print("client got:", s.recv(100).decode().strip())
'
EOF
    chmod +x "$dir/job.sh"
    id=$(submit_as_user "$dir" -S ./job.sh)
    log "selftest job $id submitted (server on 127.0.0.1:$port)"
    wait_until 90 "selftest job $id" job_finished "$id" || true
    wait "$srv" || true
    cat "$dir/server.log" "$dir/selftest.$id.out" 2>/dev/null || true
    if [[ $(job_state "$id") == Terminated ]] && grep -q '^client got: ack$' "$dir/selftest.$id.out" &&
        grep -q '^server got: hello from job$' "$dir/server.log"; then
        log "selftest passed"
    else
        oarstat -f -j "$id" >&2 || true
        cat "$dir/selftest.$id.err" >&2 2>/dev/null || true
        die "selftest failed"
    fi
}

case ${1:-} in
    start) cmd_start ;;
    install) install_packages ;;
    stop) cmd_stop ;;
    status) if cmd_status; then exit 0; else exit 1; fi ;;
    selftest) cmd_selftest ;;
    *)
        echo "usage: $0 {start|stop|status|install|selftest}" >&2
        exit 2
        ;;
esac
