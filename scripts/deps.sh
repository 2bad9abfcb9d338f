#!/usr/bin/env bash
# Installs the Debian packages efsfuse needs to build, run and test, and only
# those that are missing, so it is quick when there is nothing to do.
set -euo pipefail

packages=(
    gcc make pkg-config
    libfuse3-dev fuse3 libnfs-dev libcurl4-openssl-dev libcjson-dev libcmocka-dev
    nfs-ganesha nfs-ganesha-vfs
    python3 python3-pytest
    util-linux procps psmisc iproute2 fio valgrind man-db
)

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$status" = installed ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing packages: ${missing[*]} (run as root, or install them)" >&2
    exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
