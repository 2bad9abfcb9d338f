"""Throughput and round trip through tcpproxy, against a direct connection.

    /usr/bin/python3 tests/fault/bench_tcpproxy.py [--bin PATH] [--mib N] [--delays 0,0.5]

One sender streams N MiB over one connection to a sink in another process
(so sender and sink do not share a GIL); the sink acknowledges the byte
count at EOF, so the time covers delivery, not just queueing. Each figure is
the median of 3 runs. On a shared machine expect noise of +-30 %; the
proxy's own CPU time per GB moved does not depend on the load, and its
inverse is what the proxy could move with a core to itself.
"""
import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MIB = 1 << 20


def serve():
    """Child process: first byte b"S" = sink (replies the count at EOF),
    b"E" = echo. Prints its port."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    print(lsock.getsockname()[1], flush=True)

    def handle(conn):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mode = conn.recv(1)
        buf = bytearray(4 * MIB)
        total = 0
        while True:
            n = conn.recv_into(buf)
            if not n:
                break
            if mode == b"E":
                conn.sendall(memoryview(buf)[:n])
            total += n
        if mode == b"S":
            conn.sendall(str(total).encode())
        conn.close()

    while True:
        conn, _ = lsock.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def throughput(port, size):
    block = memoryview(b"\x5a" * (4 * MIB))
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"S")
        t = time.monotonic()
        sent = 0
        while sent < size:
            s.sendall(block)
            sent += len(block)
        s.shutdown(socket.SHUT_WR)
        got = int(s.recv(64))
        elapsed = time.monotonic() - t
    if got != sent:
        sys.exit(f"bench: sink got {got} bytes of {sent}")
    return sent / elapsed / 1e6


def rtt_ms(port, count=200):
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(b"E")
        samples = []
        for _ in range(count):
            t = time.monotonic()
            s.sendall(b"x" * 64)
            got = 0
            while got < 64:
                got += len(s.recv(64))
            samples.append((time.monotonic() - t) * 1000)
    return statistics.median(samples)


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(label, port, size, pid=None):
    cpu = cpu_seconds(pid) if pid else 0
    mbs = statistics.median(throughput(port, size) for _ in range(3))
    line = f"{label:<24} {mbs:8.0f} MB/s   rtt {rtt_ms(port):7.3f} ms"
    if pid:
        per_gb = (cpu_seconds(pid) - cpu) / (3 * size / 1e9)
        line += f"   proxy {per_gb:.3f} cpu-s/GB (~{1 / per_gb:.1f} GB/s per core)"
    print(line, flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.environ.get(
        "TCPPROXY_BIN", str(REPO / "build" / "fault" / "tcpproxy")))
    ap.add_argument("--mib", type=int, default=2048)
    ap.add_argument("--delays", default="0,0.5")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve()
        return
    server = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE,
                              text=True)
    try:
        port = int(server.stdout.readline())
        size = args.mib * MIB
        measure("direct", port, size)
        for delay in args.delays.split(","):
            proxy = subprocess.Popen([args.bin, "--listen", "127.0.0.1:0", "--connect",
                                      f"127.0.0.1:{port}", "--delay-ms", delay],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            try:
                pport = int(proxy.stdout.readline().removeprefix("port="))
                measure(f"tcpproxy --delay-ms {delay}", pport, size, proxy.pid)
            finally:
                proxy.terminate()
                proxy.wait()
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
