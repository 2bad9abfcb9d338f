#!/usr/bin/env bash
# A private nfs-ganesha (userspace NFSv4 server, VFS backend) on loopback.
#   ganesha.sh start DIR PORT [ADDR [NETNS]]
#                               export DIR/export on ADDR:PORT (default
#                               127.0.0.1), inside network namespace NETNS
#                               (ip netns exec) when given
#   ganesha.sh stop DIR         stop the server started for DIR
# Everything it writes stays under DIR: ganesha.conf, ganesha.log (its log),
# ganesha.out (what it prints before its log is open), ganesha.pid (written by
# ganesha), server.pid (the PID we started, used to stop it) and recovery/
# (the NFSv4 RecoveryRoot, private to this instance).
# GANESHA_GRACE=N (environment) gives the server an N-second grace period and
# lease after a start, for tests of state reclaim; without it it is graceless.
set -euo pipefail

START_TIMEOUT=20 # seconds until the server must accept connections
STOP_TIMEOUT=10  # seconds after SIGTERM before SIGKILL

usage() { echo "usage: $0 start DIR PORT [ADDR [NETNS]] | stop DIR" >&2; exit 2; }
die() { echo "ganesha: $*" >&2; exit 1; }

# Alive and not a zombie (a zombie still answers kill -0).
alive() {
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ $state != Z* ]]
}

ADDR=127.0.0.1
NETNS=
# Runs a command in the server's network namespace (or here).
in_netns() {
    if [ -n "$NETNS" ]; then ip netns exec "$NETNS" "$@"; else "$@"; fi
}

accepts() { in_netns bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$ADDR" "$1" 2>/dev/null; }

log_tail() {
    echo "--- last lines of $1/ganesha.log:" >&2
    tail -n 15 "$1/ganesha.log" >&2 2>/dev/null || true
    if [ -s "$1/ganesha.out" ]; then
        echo "--- $1/ganesha.out:" >&2
        tail -n 15 "$1/ganesha.out" >&2
    fi
}

start() {
    local dir=$1 port=$2 pid
    [[ $port =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || die "bad port: $port"
    command -v ganesha.nfsd >/dev/null || die "ganesha.nfsd not found (make deps installs nfs-ganesha)"
    dir=$(realpath -m "$dir")
    if [ -f "$dir/server.pid" ] && alive "$(cat "$dir/server.pid")"; then
        die "already running for $dir (PID $(cat "$dir/server.pid")); stop it first"
    fi
    # Otherwise the readiness check below would succeed against someone else.
    accepts "$port" && die "$ADDR:$port is already in use"
    # The VFS backend finds the export's filesystem in /etc/mtab. Minimal
    # systems without systemd may lack it, and then ganesha drops the export
    # and serves only an empty read-only pseudo root. Debian's usual symlink:
    if [ ! -e /etc/mtab ]; then
        ln -s ../proc/self/mounts /etc/mtab 2>/dev/null ||
            die "/etc/mtab is missing (ganesha needs it): ln -s ../proc/self/mounts /etc/mtab"
        echo "ganesha: created the missing /etc/mtab -> ../proc/self/mounts" >&2
    fi

    local grace="Graceless = true;"
    if [ -n "${GANESHA_GRACE:-}" ]; then
        [[ $GANESHA_GRACE =~ ^[0-9]+$ ]] || die "bad GANESHA_GRACE: $GANESHA_GRACE"
        grace="Graceless = false; Grace_Period = $GANESHA_GRACE; Lease_Lifetime = $GANESHA_GRACE;"
    fi

    mkdir -p "$dir/export" "$dir/recovery"
    cat >"$dir/ganesha.conf" <<CONF
NFS_CORE_PARAM {
    Protocols = 4;
    NFS_Port = $port;
    Bind_addr = $ADDR;
    Enable_NLM = false;
    Enable_RQUOTA = false;
}
NFSV4 {
    $grace
    Only_Numeric_Owners = true;
    RecoveryRoot = "$dir/recovery";
}
EXPORT {
    Export_Id = 1;
    Path = "$dir/export";
    Pseudo = /;
    Access_Type = RW;
    Squash = No_Root_Squash;
    SecType = sys;
    Protocols = 4;
    Transports = TCP;
    FSAL { Name = VFS; }
}
CONF
    : >"$dir/ganesha.log"
    rm -f "$dir/ganesha.pid"
    # -F: stay in the foreground, so $! is the server itself.
    # Not through a function: that would put a subshell between $! and the
    # server. ip netns exec execs the server, so $! stays its PID.
    local prefix=()
    [ -z "$NETNS" ] || prefix=(ip netns exec "$NETNS")
    "${prefix[@]}" ganesha.nfsd -F -f "$dir/ganesha.conf" -L "$dir/ganesha.log" -p "$dir/ganesha.pid" \
        </dev/null >"$dir/ganesha.out" 2>&1 &
    pid=$!
    echo "$pid" >"$dir/server.pid"

    # Ready = accepts connections and has logged the end of its start-up.
    local deadline=$((SECONDS + START_TIMEOUT))
    while [ $SECONDS -lt $deadline ]; do
        if ! alive "$pid"; then
            echo "ganesha: exited during start-up ($ADDR:$port, $dir)" >&2
            log_tail "$dir"
            rm -f "$dir/server.pid"
            exit 1
        fi
        if accepts "$port" && grep -q "NFS SERVER INITIALIZED" "$dir/ganesha.log"; then
            # It serves even when the export failed: that is no use to anyone.
            if grep -qE "Could not create export|No export entries found|validation errors" \
                "$dir/ganesha.log"; then
                echo "ganesha: started, but without the export of $dir/export; from $dir/ganesha.log:" >&2
                grep -E ":(CRIT|MAJ) :" "$dir/ganesha.log" | grep -viE "dbus|krb5|keytab|principal|UDP" |
                    sed 's/^.*\] //' >&2 || true
                stop "$dir"
                exit 1
            fi
            return 0
        fi
        sleep 0.1
    done
    echo "ganesha: not serving $ADDR:$port after ${START_TIMEOUT} s ($dir)" >&2
    log_tail "$dir"
    stop "$dir"
    exit 1
}

stop() {
    local dir pid
    dir=$(realpath -m "$1")
    [ -f "$dir/server.pid" ] || return 0
    pid=$(cat "$dir/server.pid")
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + STOP_TIMEOUT))
        while alive "$pid" && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
        if alive "$pid"; then
            echo "ganesha: PID $pid ignored SIGTERM for ${STOP_TIMEOUT} s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
            while alive "$pid"; do sleep 0.1; done
        fi
    fi
    rm -f "$dir/server.pid" "$dir/ganesha.pid"
}

case "${1:-}" in
start)
    [ $# -ge 3 ] && [ $# -le 5 ] || usage
    ADDR=${4:-127.0.0.1}
    NETNS=${5:-}
    if [ -n "$NETNS" ] && [ ! -e "/run/netns/$NETNS" ]; then die "no network namespace $NETNS"; fi
    start "$2" "$3"
    ;;
stop) [ $# -eq 2 ] || usage; stop "$2" ;;
*) usage ;;
esac
