#!/usr/bin/env bash
# A private nfs-ganesha (userspace NFSv4 server, VFS backend) on loopback.
#   ganesha.sh start DIR PORT   export DIR/export on 127.0.0.1:PORT
#   ganesha.sh stop DIR         stop the server started for DIR
# Everything it writes (config, log, pid, recovery state) stays under DIR.
set -euo pipefail

usage() { echo "usage: $0 start DIR PORT | stop DIR" >&2; exit 2; }

start() {
    local dir port
    dir=$(realpath -m "$1"); port=$2
    mkdir -p "$dir/export" "$dir/recovery"
    cat >"$dir/ganesha.conf" <<CONF
NFS_CORE_PARAM { Protocols = 4; NFS_Port = $port; Enable_NLM = false; Enable_RQUOTA = false;
                 Bind_addr = 127.0.0.1; }
NFSV4 { Graceless = true; Only_Numeric_Owners = true; RecoveryRoot = $dir/recovery; }
EXPORT { Export_Id = 1; Path = $dir/export; Pseudo = /; Access_Type = RW; Squash = No_Root_Squash;
         SecType = sys; Protocols = 4; Transports = TCP; FSAL { Name = VFS; } }
CONF
    : >"$dir/ganesha.log"
    ganesha.nfsd -F -f "$dir/ganesha.conf" -L "$dir/ganesha.log" -p "$dir/ganesha.pid" \
        </dev/null >/dev/null 2>&1 &
    echo $! >"$dir/server.pid"
    for _ in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        if ! kill -0 "$(cat "$dir/server.pid")" 2>/dev/null; then
            echo "ganesha: exited at start-up; last log lines:" >&2
            tail -5 "$dir/ganesha.log" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "ganesha: not listening on 127.0.0.1:$port after 20 s; last log lines:" >&2
    tail -5 "$dir/ganesha.log" >&2
    stop "$dir"
    return 1
}

stop() {
    local dir pid
    dir=$(realpath -m "$1")
    [ -f "$dir/server.pid" ] || return 0
    pid=$(cat "$dir/server.pid")
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/server.pid"
}

case "${1:-}" in
start) [ $# -eq 3 ] || usage; start "$2" "$3" ;;
stop) [ $# -eq 2 ] || usage; stop "$2" ;;
*) usage ;;
esac
