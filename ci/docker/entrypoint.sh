#!/usr/bin/env bash
# Container entry point: run the real batch system's suite exactly as .ci/run does.
set -uo pipefail
cd /src
# network_mode none leaves only lo with 127.0.0.1. Two things break then:
# - Docker writes no /etc/hosts entry for the container's hostname, but Slurm (SlurmctldHost),
#   munged and Grid Engine resolve it: map it to 127.0.1.1, as a Debian install does.
# - glibc's getaddrinfo(AI_ADDRCONFIG), used by Slurm even for "127.0.0.1", returns nothing
#   while no IPv4 address other than 127.0.0.1 exists: put 127.0.1.1 on lo too
#   (needs cap_add NET_ADMIN, see compose.*.yml). Nothing leaves the container either way.
host=$(hostname)
if ! getent hosts "$host" >/dev/null; then
    echo "127.0.1.1	$host ${host%%.*}" >>/etc/hosts
fi
if ! ip -4 -o addr show | awk '{print $4}' | grep -qv '^127\.0\.0\.1/'; then
    ip addr add 127.0.1.1/8 dev lo \
        || echo "entrypoint: cannot add 127.0.1.1 to lo (no NET_ADMIN?); Slurm will not resolve" >&2
fi
# PBS ignores loopback addresses (127.0.0.0/8) for its server, comm and mom: give lo a private
# address from TEST-NET-2 as well; ci/pbs/run.sh maps "<hostname>-pbs" to it. Still nothing
# leaves the container.
if [ "$SCHEDULER" = pbs ] && ! ip -4 -o addr show scope global | grep -q .; then
    ip addr add 198.51.100.1/32 dev lo \
        || echo "entrypoint: cannot add 198.51.100.1 to lo (no NET_ADMIN?); PBS will not start" >&2
fi
# OAR's job_resource_manager_cgroups.pl makes a cpuset cgroup per job, but Docker mounts the
# container's cgroups read-only. They are the container's own subtree, so make them writable
# (needs cap_add SYS_ADMIN, see compose.oar.yml; --privileged would do it too).
if [ "$SCHEDULER" = oar ]; then
    awk '$3 ~ /^cgroup2?$/ && $4 ~ /(^|,)ro(,|$)/ {print $2}' /proc/self/mounts | while read -r m; do
        mount -o remount,bind,rw "$m" \
            || echo "entrypoint: cannot make $m writable (no SYS_ADMIN?); OAR jobs will fail" >&2
    done
fi
case "$SCHEDULER" in
    oar) exec bash ci/run-real.sh oar oartest ;;
    slurm|sge|pbs) exec bash ci/run-real.sh "$SCHEDULER" ;;
    *) echo "unknown SCHEDULER=$SCHEDULER (slurm, sge, oar or pbs)" >&2; exit 2 ;;
esac
