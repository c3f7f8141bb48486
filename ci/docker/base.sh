#!/usr/bin/env bash
# Build the Debian 12 (bookworm) base image of ci/docker/Dockerfile without any image registry:
# debootstrap a minimal root file system from the Debian mirror apt already uses on this
# machine, then `docker import` it. Skipped when the image exists already.
#
#   ci/docker/base.sh            build (or keep) the image
#
# Environment:
#   BASE_IMAGE      image name (default dask-jobqueue-ci/debian:bookworm, the Dockerfile's BASE)
#   DEBIAN_MIRROR   Debian mirror URL (default: the first URI of the host's bookworm sources)
#   DOCKER_HOST     which dockerd to use (ci/docker/dockerd.sh env prints ours)
# Needs root (debootstrap) and the debootstrap and debian-archive-keyring packages.
set -euo pipefail
export LC_ALL=C
IMAGE=${BASE_IMAGE:-dask-jobqueue-ci/debian:bookworm}
SUITE=bookworm
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "base.sh: $IMAGE exists, not rebuilt (docker rmi $IMAGE to rebuild)"
    exit 0
fi

# The mirror of the host's Debian sources: deb822 files (URIs:) or one-line ones (deb URL SUITE).
host_mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        case $f in
            *.sources)
                # the URIs of a stanza whose Suites include bookworm (not -security)
                awk -v suite="$SUITE" '
                    /^[ \t]*$/ { if (uri != "" && ok) { print uri; exit } uri = ""; ok = 0; next }
                    $1 == "URIs:" { uri = $2 }
                    $1 == "Suites:" { for (i = 2; i <= NF; i++) if ($i == suite) ok = 1 }
                    END { if (uri != "" && ok) print uri }' "$f" ;;
            *)
                awk -v suite="$SUITE" '$1 == "deb" && $3 == suite { print $2; exit }' "$f" ;;
        esac
    done | head -n 1
}
MIRROR=${DEBIAN_MIRROR:-$(host_mirror)}
if [ -z "$MIRROR" ]; then
    echo "base.sh: no Debian $SUITE mirror in /etc/apt/sources*; set DEBIAN_MIRROR" >&2
    exit 1
fi
# The security archive sits beside the main one on deb.debian.org and most mirrors.
SECURITY=${DEBIAN_SECURITY_MIRROR:-${MIRROR%/debian}/debian-security}

for tool in debootstrap docker; do
    command -v "$tool" >/dev/null || { echo "base.sh: $tool not found" >&2; exit 1; }
done
[ -r "$KEYRING" ] || { echo "base.sh: $KEYRING missing (debian-archive-keyring)" >&2; exit 1; }

work=$(mktemp -d /var/tmp/dask-jobqueue-base.XXXXXX)
trap 'rm -rf --one-file-system "$work"' EXIT
rootfs=$work/rootfs
t0=$SECONDS
echo "base.sh: debootstrap $SUITE from $MIRROR"
if ! debootstrap --variant=minbase --keyring="$KEYRING" "$SUITE" "$rootfs" "$MIRROR" \
        >"$work/debootstrap.log" 2>&1; then
    tail -n 30 "$work/debootstrap.log" >&2
    tail -n 30 "$rootfs/debootstrap/debootstrap.log" 2>/dev/null >&2 || true
    exit 1
fi
# apt inside the image reads the same mirror, with the point-release and security updates.
cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY $SUITE-security main
EOF
# The host's own certificate authorities (a site's, or an HTTPS proxy's in front of PyPI): the
# images' ca-certificates package adds them to its bundle, so pip inside trusts what the host's
# pip trusts. Nothing else of the host goes into the image.
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    mkdir -p "$rootfs/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
fi
# Images need no caches, logs or documentation from the bootstrap.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
echo "base.sh: root file system ready ($((SECONDS - t0))s), importing as $IMAGE"
tar --numeric-owner -C "$rootfs" -c . \
    | docker import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - "$IMAGE" >/dev/null
echo "base.sh: $IMAGE built in $((SECONDS - t0))s"
