#!/usr/bin/env bash
# Installs the Debian packages efsfuse needs to build, run and test -- only
# those that are missing, so it costs one dpkg-query when there is nothing to
# do. Works on a fresh Debian 12 machine, non-interactively (CI).
set -euo pipefail

packages=(
    # build
    gcc make pkg-config libfuse3-dev libnfs-dev libcurl4-openssl-dev libcjson-dev
    # run: fusermount3, mount.fuse3
    fuse3
    # tests: unit (cmocka), the private NFS server, pytest, tools the suites call
    libcmocka-dev nfs-ganesha nfs-ganesha-vfs python3 python3-pytest fio valgrind
    # setpriv, flock, mount (util-linux), ps/kill (procps), fuser (psmisc),
    # ss (iproute2), man (man-db: the man page test)
    util-linux procps psmisc iproute2 man-db
    # the fault suite's network partitions (nft in a network namespace)
    nftables
    # the benchmark: its chart, and the fresh ext4 image it exports (mkfs.ext4)
    gnuplot-nox e2fsprogs
)

# One query for all of them; packages dpkg has never heard of print nothing.
installed=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${packages[@]}" 2>/dev/null || true)
missing=()
for p in "${packages[@]}"; do
    grep -qx "$p installed" <<<"$installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo=(sudo -n)
    else
        echo "deps: missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
        exit 1
    fi
fi

echo "deps: installing ${missing[*]}"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
apt_get() {
    # Quiet on success; the whole output on failure.
    if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "$@" >"$log" 2>&1; then
        echo "deps: apt-get $* failed:" >&2
        cat "$log" >&2
        exit 1
    fi
}
apt_get update -q
apt_get install -y -q --no-install-recommends "${missing[@]}"
