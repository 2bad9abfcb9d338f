#!/usr/bin/env bash
# `make run` / `make stop`: a private nfs-ganesha serving ./var/export on a free
# loopback port, mounted with efsfuse at ./mnt.
#   run.sh start BIN   start both (BIN: the efsfuse binary)
#   run.sh stop        unmount, stop efsfuse and the server
# State lives in ./var: port, efsfuse.pid, efsfuse.log and the server's files.
set -euo pipefail
cd "$(dirname "$0")/.."
state=$PWD/var
mnt=$PWD/mnt

mounted() { grep -qs " $mnt fuse.efsfuse " /proc/self/mounts; }

alive() {
    local s
    s=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ $s != Z* ]]
}

# Nothing on 127.0.0.1:PORT, TCP or UDP (ganesha binds both).
port_free() { [ -z "$(ss -Htuan "( sport = :$1 )" 2>/dev/null)" ]; }

stop() {
    if mounted; then
        fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -u -z "$mnt"
    fi
    if [ -f "$state/efsfuse.pid" ]; then
        local pid
        pid=$(cat "$state/efsfuse.pid")
        # After the unmount it writes back and exits by itself; SIGTERM covers
        # a daemon whose mount is already gone but which is still running.
        for _ in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
        if alive "$pid"; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
        fi
        if alive "$pid"; then
            echo "efsfuse (PID $pid) did not exit; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$state/efsfuse.pid"
    fi
    scripts/ganesha.sh stop "$state"
    rm -f "$state/port"
}

start() {
    local bin=$1 port pid
    [ -x "$bin" ] || { echo "run: $bin is not an executable (make builds it)" >&2; exit 1; }
    bin=$(realpath "$bin")
    if mounted && [ -f "$state/efsfuse.pid" ] && alive "$(cat "$state/efsfuse.pid")"; then
        echo "./mnt is already mounted (port $(cat "$state/port" 2>/dev/null || echo '?')); make stop first"
        exit 0
    fi
    stop >/dev/null # leftovers of a run that died: a dead mount, a server, a stale pid file

    port=20490
    while ! port_free "$port"; do
        port=$((port + 1))
        [ "$port" -lt 20590 ] || { echo "run: no free port in 20490-20589" >&2; exit 1; }
    done
    mkdir -p "$state/export" "$mnt"
    scripts/ganesha.sh start "$state" "$port"
    echo "$port" >"$state/port"

    # In the foreground under setsid rather than daemonized (it would do that
    # by itself without -f), so that its PID and its log stay ours.
    setsid "$bin" 127.0.0.1:/ "$mnt" -f -o "port=$port,allow_other,default_permissions" \
        </dev/null >"$state/efsfuse.log" 2>&1 &
    pid=$!
    echo "$pid" >"$state/efsfuse.pid"
    for _ in $(seq 1 150); do
        mounted && break
        if ! alive "$pid"; then
            echo "run: efsfuse failed to mount:" >&2
            cat "$state/efsfuse.log" >&2
            stop >/dev/null
            exit 1
        fi
        sleep 0.1
    done
    if ! mounted; then
        echo "run: efsfuse did not mount ./mnt within 15 s:" >&2
        cat "$state/efsfuse.log" >&2
        stop >/dev/null
        exit 1
    fi
    cat <<EOF
nfs-ganesha (PID $(cat "$state/server.pid")) serves ./var/export on 127.0.0.1:$port
efsfuse (PID $pid) mounts it at ./mnt       log: ./var/efsfuse.log, ./var/ganesha.log
stop both with: make stop
EOF
}

case "${1:-}" in
start) [ $# -eq 2 ] || { echo "usage: $0 start BIN" >&2; exit 2; }; start "$2" ;;
stop) stop; echo "stopped: ./mnt unmounted, efsfuse and nfs-ganesha stopped" ;;
*) echo "usage: $0 start BIN | stop" >&2; exit 2 ;;
esac
