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
case "$SCHEDULER" in
    oar) exec bash ci/run-real.sh oar oartest ;;
    slurm|sge) exec bash ci/run-real.sh "$SCHEDULER" ;;
    *) echo "unknown SCHEDULER=$SCHEDULER (slurm, sge or oar)" >&2; exit 2 ;;
esac
