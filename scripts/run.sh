#!/usr/bin/env bash
# `make run` / `make stop`: a local NFS server exporting ./var/export, mounted at ./mnt.
set -euo pipefail
cd "$(dirname "$0")/.."
state=var
port_file=$state/port

case "${1:-}" in
start)
    bin=$2
    if grep -qs " $PWD/mnt " /proc/mounts; then
        echo "already mounted at ./mnt (make stop first)"; exit 0
    fi
    port=20490
    while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
    scripts/ganesha.sh start "$state" "$port"
    echo "$port" >"$port_file"
    mkdir -p mnt
    # Foreground under setsid with its PID kept, so `make stop` can wait for
    # exactly this process; its log goes to var/efsfuse.log.
    setsid "$bin" "127.0.0.1:/" mnt -f -o "port=$port,allow_other,default_permissions" \
        </dev/null >"$state/efsfuse.log" 2>&1 &
    echo $! >"$state/efsfuse.pid"
    for _ in $(seq 1 100); do
        grep -qs " $PWD/mnt fuse.efsfuse " /proc/mounts && break
        if ! kill -0 "$(cat "$state/efsfuse.pid")" 2>/dev/null; then
            echo "efsfuse failed to mount:" >&2; cat "$state/efsfuse.log" >&2
            scripts/ganesha.sh stop "$state"; exit 1
        fi
        sleep 0.1
    done
    echo "nfs-ganesha serves ./$state/export on 127.0.0.1:$port; efsfuse mounted it at ./mnt"
    echo "stop both with: make stop"
    ;;
stop)
    if grep -qs " $PWD/mnt " /proc/mounts; then
        fusermount3 -u mnt
    fi
    if [ -f "$state/efsfuse.pid" ]; then
        pid=$(cat "$state/efsfuse.pid")
        # Unmounting makes it write back and exit; SIGTERM if it was not mounted.
        kill -0 "$pid" 2>/dev/null && ! grep -qs " $PWD/mnt " /proc/mounts && kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        rm -f "$state/efsfuse.pid"
    fi
    scripts/ganesha.sh stop "$state"
    rm -f "$port_file"
    echo "stopped"
    ;;
*)
    echo "usage: $0 start BIN | stop" >&2; exit 2 ;;
esac
