#!/usr/bin/env bash
# A Docker daemon of our own for the compose suites, which cannot disturb anything else on the
# machine: its own socket, data root, exec root (with its own containerd), cgroup parent and
# config file; no bridge, no iptables rules, no IP forwarding (containers use network_mode
# host or none, so no traffic leaves the machine through it).
#
#   ci/docker/dockerd.sh install   apt-get install docker.io, docker-compose, debootstrap if missing
#   ci/docker/dockerd.sh start     start it (nothing happens if it runs already); wait until ready
#   ci/docker/dockerd.sh stop      remove its containers, stop it by its pid file, then check
#                                  that no process, mount, network interface, iptables rule or
#                                  cgroup of ours is left (exit 1 and say what, if one is)
#   ci/docker/dockerd.sh env       print `export DOCKER_HOST=...` for this daemon
#   ci/docker/dockerd.sh status    exit 0 if it runs and answers
#
# Environment: DOCKERD_CI_ROOT (default /var/lib/dask-jobqueue-ci-docker: images, containers)
# and DOCKERD_CI_RUN (default /run/dask-jobqueue-ci-docker: socket, pid file, exec root, log).
# Everything is found by its pid file or by these two paths, never by process name, so another
# dockerd (a site's own) keeps running untouched.
set -euo pipefail
export LC_ALL=C
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH

DATA=${DOCKERD_CI_ROOT:-/var/lib/dask-jobqueue-ci-docker}
RUN=${DOCKERD_CI_RUN:-/run/dask-jobqueue-ci-docker}
SOCK=$RUN/docker.sock
PIDFILE=$RUN/dockerd.pid
EXEC=$RUN/exec
LOG=$RUN/dockerd.log
CONFIG=$RUN/daemon.json
BEFORE=$RUN/before              # host state at start: interfaces and iptables rules
CGROUP_PARENT=$(basename "$RUN")  # one per instance: another instance's containers are not ours
export DOCKER_HOST=unix://$SOCK
TIMEOUT=${DOCKERD_TIMEOUT:-30}

die() { echo "dockerd.sh: $*" >&2; exit 1; }

# pid_of_daemon: the pid in our pid file if that process is a live dockerd.
pid_of_daemon() {
    local pid
    [ -r "$PIDFILE" ] || return 1
    pid=$(tr -dc '0-9' <"$PIDFILE")
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ] || return 1
    echo "$pid"
}

answers() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

# Processes whose command line names our run or data directory (dockerd, its containerd, the
# containerd shims of our containers), this script excepted.
our_processes() {
    local f pid
    for f in /proc/[0-9]*/cmdline; do
        pid=${f#/proc/}; pid=${pid%/cmdline}
        [ "$pid" = $$ ] && continue
        # (a process may end while we read: then its file is gone, which is fine)
        if { tr '\0' ' ' <"$f"; } 2>/dev/null | grep -qF -e "$RUN/" -e "$DATA"; then
            echo "$pid $({ tr '\0' ' ' <"$f"; } 2>/dev/null | cut -c1-120)"
        fi
    done
    return 0
}
our_mounts() { awk -v a="$DATA" -v b="$RUN/" 'index($2, a) == 1 || index($2, b) == 1 { print $2 }' /proc/self/mounts; }
# The interfaces and iptables chains a dockerd makes (docker0, br-<id>, docker_gwbridge, the host
# ends veth<hex> of container links; DOCKER* chains): only new ones of these count as ours, so
# another program that adds an interface or a rule meanwhile is not blamed on us.
interfaces() {
    ip -o link show | awk -F': ' '{ print $2 }' | sed 's/@.*//' \
        | { grep -E '^(docker|br-[0-9a-f]+$|veth[0-9a-f]{7}$)' || true; } | sort
}
# Docker's iptables rules and chains (all tables that exist), without the packet counters.
# (iptables-save only reads: it prints nothing while no table is loaded.)
iptables_rules() {
    { iptables-save 2>/dev/null; ip6tables-save 2>/dev/null | sed 's/^/v6 /'; } \
        | { grep DOCKER || true; } | sed 's/\[[0-9:]*\]//' | sort
}
our_cgroups() { find /sys/fs/cgroup -maxdepth 2 -type d -name "$CGROUP_PARENT" 2>/dev/null || true; }

install_packages() {
    local missing=() p
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v docker-compose >/dev/null || missing+=(docker-compose)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    [ -r /usr/share/keyrings/debian-archive-keyring.gpg ] || missing+=(debian-archive-keyring)
    command -v iptables-save >/dev/null || missing+=(iptables)
    [ ${#missing[@]} -eq 0 ] && { echo "dockerd.sh: packages present"; return 0; }
    echo "dockerd.sh: installing ${missing[*]}"
    # Another apt (CI installs the batch systems in the background) may hold the lock: wait.
    local apt=(apt-get -q -o DPkg::Lock::Timeout=600)
    for p in "${missing[@]}"; do
        if ! apt-cache show "$p" >/dev/null 2>&1; then "${apt[@]}" update >/dev/null; break; fi
    done
    # On a machine without policy-rc.d the package starts its own docker service: that one is not
    # ours and is left alone (ours has its own socket, data root and exec root).
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends "${missing[@]}" \
        >"$RUN.apt.log" 2>&1 || { tail -n 30 "$RUN.apt.log" >&2; die "apt-get install failed (log: $RUN.apt.log)"; }
    for p in dockerd docker-compose debootstrap; do command -v $p >/dev/null || die "$p still missing"; done
}

start() {
    if pid_of_daemon >/dev/null && answers; then
        echo "dockerd.sh: running already (pid $(pid_of_daemon))"
        return 0
    fi
    command -v dockerd >/dev/null || die "dockerd not installed (ci/docker/dockerd.sh install)"
    mkdir -p "$DATA" "$RUN" "$BEFORE"
    interfaces >"$BEFORE/interfaces"
    iptables_rules >"$BEFORE/iptables"
    # Our own config file: a host's /etc/docker/daemon.json (registry mirrors, bridges,
    # default address pools) must not change this daemon.
    echo '{}' >"$CONFIG"
    local t0; t0=$(date +%s.%N)
    # setsid: the daemon survives the shell that started it and gets no terminal signals.
    setsid dockerd \
        --config-file "$CONFIG" \
        --host "unix://$SOCK" --pidfile "$PIDFILE" \
        --data-root "$DATA" --exec-root "$EXEC" \
        --bridge none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
        --userland-proxy=false \
        --cgroup-parent "$CGROUP_PARENT" \
        </dev/null >"$LOG" 2>&1 &
    local launcher=$! deadline=$((SECONDS + TIMEOUT))
    until pid_of_daemon >/dev/null && answers; do
        if ! kill -0 "$launcher" 2>/dev/null; then
            tail -n 20 "$LOG" >&2
            die "dockerd exited during start-up (log: $LOG)"
        fi
        if [ $SECONDS -ge $deadline ]; then
            tail -n 20 "$LOG" >&2
            kill -TERM "$launcher" 2>/dev/null || true
            die "dockerd not ready after ${TIMEOUT}s, stopped it (ci/docker/dockerd.sh stop checks what is left)"
        fi
        sleep 0.1
    done
    echo "dockerd.sh: dockerd $(docker version --format '{{.Server.Version}}') ready," \
         "pid $(pid_of_daemon), $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2fs", b - a }')," \
         "DOCKER_HOST=$DOCKER_HOST"
}

stop() {
    local pid problems=0 leftover
    if pid=$(pid_of_daemon) && answers; then
        # Every container of this daemon is ours: it serves nobody else.
        leftover=$(docker ps -aq)
        if [ -n "$leftover" ]; then
            echo "dockerd.sh: removing containers $(echo $leftover)"
            docker rm -f $leftover >/dev/null || true
        fi
    fi
    if pid=$(pid_of_daemon); then
        kill -TERM "$pid"
        local deadline=$((SECONDS + TIMEOUT))
        while [ -d "/proc/$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]; do
            if [ $SECONDS -ge $deadline ]; then
                echo "dockerd.sh: dockerd $pid ignored SIGTERM for ${TIMEOUT}s, sending SIGKILL" >&2
                kill -KILL "$pid" 2>/dev/null || true
                problems=1
                sleep 1
                break
            fi
            sleep 0.1
        done
        echo "dockerd.sh: dockerd $pid stopped"
    else
        echo "dockerd.sh: not running"
    fi
    # Its containerd stops with it; wait a little for the shims of removed containers.
    local deadline=$((SECONDS + 10))
    while [ -n "$(our_processes)" ] && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    leftover=$(our_processes)
    if [ -n "$leftover" ]; then
        echo "dockerd.sh: LEFT OVER processes of ours:" >&2
        echo "$leftover" >&2
        problems=1
    fi
    # Mounts: container root file systems, network namespaces, the exec root.
    local m
    for m in $(our_mounts | sort -r); do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
    leftover=$(our_mounts)
    if [ -n "$leftover" ]; then
        echo "dockerd.sh: LEFT OVER mounts: $(echo $leftover)" >&2
        problems=1
    fi
    # Empty cgroups under our cgroup parent (runc removes the containers' own).
    local c
    for c in $(our_cgroups); do
        find "$c" -depth -mindepth 1 -type d -exec rmdir {} \; 2>/dev/null || true
        rmdir "$c" 2>/dev/null || true
    done
    leftover=$(our_cgroups)
    if [ -n "$leftover" ]; then
        echo "dockerd.sh: LEFT OVER cgroups: $(echo $leftover)" >&2
        problems=1
    fi
    if [ -r "$BEFORE/interfaces" ]; then
        leftover=$(comm -13 "$BEFORE/interfaces" <(interfaces))
        if [ -n "$leftover" ]; then
            echo "dockerd.sh: NEW Docker network interfaces since start: $(echo $leftover)" >&2
            problems=1
        fi
    fi
    if [ -r "$BEFORE/iptables" ]; then
        leftover=$(comm -13 "$BEFORE/iptables" <(iptables_rules))
        if [ -n "$leftover" ]; then
            echo "dockerd.sh: NEW Docker iptables rules/chains since start:" >&2
            echo "$leftover" >&2
            problems=1
        fi
    fi
    if [ $problems -ne 0 ]; then
        return 1
    fi
    rm -rf "$RUN"
    echo "dockerd.sh: clean: no process, mount, interface, iptables rule or cgroup of ours left" \
         "(images stay in $DATA)"
}

case ${1:-} in
    install) install_packages ;;
    start) start ;;
    stop) stop ;;
    env) echo "export DOCKER_HOST=$DOCKER_HOST" ;;
    status) pid_of_daemon >/dev/null && answers ;;
    *) echo "usage: ci/docker/dockerd.sh install|start|stop|env|status" >&2; exit 2 ;;
esac
