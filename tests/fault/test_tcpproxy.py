"""tcpproxy (tests/fault/tcpproxy.c) against Python servers on loopback.

The binary comes from TCPPROXY_BIN, default build/fault/tcpproxy (what
`make` builds); nothing is compiled here. Every proxy a test starts is
stopped with SIGTERM at the end and must exit 0 without a sanitizer report,
so an ASan/UBSan build of the proxy is checked by the same tests.
"""
import hashlib
import itertools
import os
import random
import select
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from faultlib import Proxy

REPO = Path(__file__).resolve().parents[2]
TCPPROXY = os.environ.get("TCPPROXY_BIN", str(REPO / "build" / "fault" / "tcpproxy"))
TIMEOUT = 10
MIB = 1 << 20


@pytest.fixture(scope="session", autouse=True)
def tcpproxy_bin():
    assert os.access(TCPPROXY, os.X_OK), \
        f"{TCPPROXY} is not an executable; build it or set TCPPROXY_BIN"


# --- servers -------------------------------------------------------------

class Server:
    """Listens on a free loopback port; runs handler(conn) in a thread per
    connection and keeps what it returns (or raises) in self.results."""

    def __init__(self, handler):
        self.handler = handler
        self.results = []
        self.conns = []
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            result = self.handler(conn)
        except OSError as e:
            result = e
        finally:
            conn.close()
        with self.lock:
            self.results.append(result)

    def wait_results(self, n, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.results) >= n:
                    return list(self.results)
            time.sleep(0.01)
        raise AssertionError(f"server finished {len(self.results)} connections, not {n}")

    def close(self):
        self.sock.close()
        with self.lock:
            for c in self.conns:
                c.close()


def echo(conn):
    while True:
        data = conn.recv(1 << 16)
        if not data:
            return "eof"
        conn.sendall(data)


def exchange(size):
    """Sends `size` bytes of its own random stream (a different one on each
    connection) while hashing all it receives; returns (sha256 sent, sha256
    received, bytes received). Its FIN waits for the client's, so a proxy
    that does not forward half-closes hangs here."""
    seeds = itertools.count(1000)

    def handler(conn):
        sent = {}
        seed = next(seeds)
        writer = threading.Thread(
            target=lambda: sent.update(h=send_random(conn, size, seed, fin=False)))
        writer.start()
        got, n = recv_all_hash(conn)
        writer.join(TIMEOUT * 3)
        conn.shutdown(socket.SHUT_WR)
        return sent["h"], got, n
    return handler


def send_random(sock, size, seed, fin=True):
    """Sends size pseudo-random bytes, then FIN if asked; returns their sha256."""
    rng = random.Random(seed)
    h = hashlib.sha256()
    left = size
    while left:
        block = rng.randbytes(min(left, 4 * MIB))
        h.update(block)
        sock.sendall(block)
        left -= len(block)
    if fin:
        sock.shutdown(socket.SHUT_WR)
    return h.hexdigest()


def recv_all_hash(sock):
    h = hashlib.sha256()
    n = 0
    buf = bytearray(1 << 20)
    while True:
        k = sock.recv_into(buf)
        if not k:
            return h.hexdigest(), n
        h.update(memoryview(buf)[:k])
        n += k


# --- the proxy -------------------------------------------------------------

@pytest.fixture
def servers():
    made = []

    def make(handler=echo):
        s = Server(handler)
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


@pytest.fixture
def proxy(tmp_path):
    """proxy(upstream_port, *args, control=False) -> Proxy; with control, it
    gets a --control file (absent at first). Each must exit 0 on SIGTERM."""
    made = []

    def make(upstream_port, *args, control=False):
        assert not made, "one proxy per test: they share the pidfile"
        p = Proxy(tmp_path, upstream_port, *args, control=control)
        made.append(p)
        return p
    yield make
    for p in made:
        rc = p.stop()
        p.proc.stdout.close()
        log = p.stderr()
        assert rc == 0, f"tcpproxy exited {rc}:\n{log}"
        assert "runtime error" not in log and "Sanitizer" not in log, log


def roundtrip(sock, payload=b"ping" * 16):
    """Sends payload to an echo server; returns the seconds until it is back."""
    t = time.monotonic()
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(len(payload) - len(got))
        assert chunk, "connection closed during a round trip"
        got += chunk
    assert got == payload
    return time.monotonic() - t


def rss_bytes(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


# --- tests -------------------------------------------------------------------

@pytest.mark.parametrize("delay", ["0", "0.5"])
def test_64mib_each_way_arrive_intact(servers, proxy, delay):
    size = 64 * MIB
    server = servers(exchange(size))
    p = proxy(server.port, "--delay-ms", delay)
    with p.connect() as s:
        sent = {}
        writer = threading.Thread(target=lambda: sent.update(h=send_random(s, size, 1)))
        writer.start()
        got, n = recv_all_hash(s)
        writer.join(TIMEOUT)
    (server_sent, server_got, server_n), = server.wait_results(1)
    assert (n, got) == (size, server_sent)
    assert (server_n, server_got) == (size, sent["h"])
    # Both FINs went through, so the pair ended as a stream, not a reset.
    p.wait_log(r"conn 1 closed: end of stream; 67108864 bytes up, 67108864 down")


def test_concurrent_connections_keep_their_own_streams(servers, proxy):
    size, count = 2 * MIB, 12
    server = servers(exchange(size))
    p = proxy(server.port, "--delay-ms", "1")
    outcomes = []

    def client(seed):
        with p.connect() as s:
            sent = {}
            w = threading.Thread(target=lambda: sent.update(h=send_random(s, size, seed)))
            w.start()
            got = recv_all_hash(s)
            w.join(TIMEOUT)
            outcomes.append((sent["h"], got))

    threads = [threading.Thread(target=client, args=(100 + i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 3)
    results = server.wait_results(count)
    assert len(outcomes) == count
    # Each of the 2 x 12 distinct streams arrived whole, and both streams of
    # a client met the same server connection: no pairs got crossed.
    client_view = {(sent, got) for sent, (got, n) in outcomes if n == size}
    server_view = {(got, sent) for sent, got, n in results if n == size}
    assert len(client_view) == count and client_view == server_view
    assert len({h for pair in client_view for h in pair}) == 2 * count


@pytest.mark.parametrize("delay_ms", [0.5, 20.0])
def test_delay_is_added_in_each_direction(servers, proxy, delay_ms):
    server = servers(echo)
    p = proxy(server.port, "--delay-ms", str(delay_ms))
    with p.connect() as s:
        samples = [roundtrip(s) for _ in range(10)]
    # Bytes never leave before arrival + delay, each way, on the same
    # monotonic clock as ours: the bound is exact, not statistical.
    assert min(samples) >= 2 * delay_ms / 1000
    # Loose: catches a wrong unit, not scheduling noise.
    assert sorted(samples)[len(samples) // 2] < 2 * delay_ms / 1000 + 0.1


def test_delay_changes_at_run_time(servers, proxy):
    server = servers(echo)
    p = proxy(server.port, control=True)
    with p.connect() as s:
        roundtrip(s)
        assert "delay 50.000 ms" in p.control("delay 50\n")
        assert min(roundtrip(s) for _ in range(2)) >= 0.100
        # Without a delay line the command line's delay applies again.
        assert "mode pass, delay 0.000 ms" in p.control("pass\n")
        assert min(roundtrip(s) for _ in range(3)) < 0.050


def test_reset_every_resets_all_pairs_periodically(servers, proxy):
    server = servers(echo)
    p = proxy(server.port, "--reset-every-ms", "500")
    for conn_id in (1, 2):
        s = p.connect()
        t = time.monotonic()
        roundtrip(s)
        with pytest.raises(ConnectionResetError):
            while s.recv(1):
                pass
        # Within the period, give or take a loaded machine.
        assert time.monotonic() - t < 0.5 + 1.0
        s.close()
        p.wait_log(rf"conn {conn_id} closed: reset-every")
    # The server's side was reset too.
    assert all(isinstance(r, ConnectionResetError) for r in server.wait_results(2))


def test_blackhole_holds_traffic_until_pass(servers, proxy):
    server = servers(echo)
    p = proxy(server.port, control=True)
    old = p.connect()
    roundtrip(old)
    assert "mode blackhole" in p.control("blackhole\n")
    old.sendall(b"held-1")
    new = p.connect()  # completes in the listen backlog
    new.sendall(b"held-2")
    readable, _, _ = select.select([old, new], [], [], 1.0)
    assert readable == [], "data flowed through a black hole"
    assert "mode pass" in p.control("pass\n")
    for s, want in ((old, b"held-1"), (new, b"held-2")):
        s.settimeout(2)
        got = b""
        while len(got) < len(want):
            got += s.recv(64)
        assert got == want
        roundtrip(s)
        s.close()


def test_refuse_refuses_new_connections_only(servers, proxy):
    server = servers(echo)
    p = proxy(server.port, control=True)
    live = p.connect()
    assert "mode refuse" in p.control("refuse\n")
    with pytest.raises(ConnectionRefusedError):
        p.connect()
    roundtrip(live)
    assert "mode pass" in p.control("pass\n")
    with p.connect() as s:
        roundtrip(s)
    p.wait_log(r"conn 2 closed: end of stream")
    # "reset" with "refuse": a server that crashed and stays down.
    assert "mode refuse, delay 0.000 ms, reset 1 connection" in p.control("reset\nrefuse\n")
    with pytest.raises(ConnectionResetError):
        live.recv(1)
    with pytest.raises(ConnectionRefusedError):
        p.connect()
    live.close()


def test_control_reset_resets_once_then_passes(servers, proxy):
    server = servers(echo)
    p = proxy(server.port, control=True)
    a, b = p.connect(), p.connect()
    roundtrip(a)
    roundtrip(b)
    assert "mode pass, delay 0.000 ms, reset 2 connections" in p.control("reset\n")
    for s in (a, b):
        with pytest.raises(ConnectionResetError):
            s.recv(1)
        s.close()
    with p.connect() as s:
        roundtrip(s)


def test_bad_control_file_keeps_current_mode(servers, proxy):
    server = servers(echo)
    p = proxy(server.port, control=True)
    with p.connect() as s:
        line = p.control("# comment\n\nblackhole\nflood 3\n")
        assert "line 4: expected pass" in line and "got 'flood 3'" in line
        assert "keeping mode pass" in line
        roundtrip(s)
        line = p.control("delay -4\n")
        assert "bad delay" in line
        roundtrip(s)


def test_upstream_down_resets_the_client(proxy):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    p = proxy(port)
    # The reset may come before connect() has even returned.
    with pytest.raises(ConnectionResetError):
        with p.connect() as s:
            s.recv(1)
    p.wait_log(r"conn 1 closed: connect to 127\.0\.0\.1:\d+: Connection refused")


def test_full_buffers_push_back_instead_of_growing(servers, proxy):
    gate = threading.Event()

    def sink(conn):
        gate.wait(TIMEOUT * 3)
        return recv_all_hash(conn)[1]

    server = servers(sink)
    p = proxy(server.port)
    rmem = int(Path("/proc/sys/net/ipv4/tcp_rmem").read_text().split()[2])
    wmem = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    # The proxy's 64 MiB, plus what two sockets can hold on each side.
    bound = 64 * MIB + 2 * (rmem + wmem) + 8 * MIB
    attempt = bound + 128 * MIB
    block = b"\xa5" * MIB
    sent = 0
    with p.connect() as s:
        s.setblocking(False)
        stalled_since = time.monotonic()
        while sent < attempt and time.monotonic() - stalled_since < 0.5:
            try:
                sent += s.send(block)
                stalled_since = time.monotonic()
            except BlockingIOError:
                select.select([], [s], [], 0.05)
        assert sent < bound, f"proxy took {sent >> 20} MiB from a client whose server reads nothing"
        assert rss_bytes(p.proc.pid) < 100 * MIB
        # Nothing was lost while pushing back.
        gate.set()
        s.setblocking(True)
        s.settimeout(TIMEOUT)
        s.shutdown(socket.SHUT_WR)
        assert server.wait_results(1) == [sent]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_exits_0_and_closes_everything(servers, proxy, sig):
    server = servers(echo)
    p = proxy(server.port)
    assert int(p.pidfile.read_text()) == p.proc.pid
    with p.connect() as s:
        roundtrip(s)
        assert p.stop(sig) == 0
        s.settimeout(2)
        assert s.recv(1) == b""
    assert not p.pidfile.exists()
    assert server.wait_results(1) == ["eof"]


GOOD = ["--listen", "127.0.0.1:0", "--connect", "127.0.0.1:1"]


@pytest.mark.parametrize("args, message", [
    ([], "--listen and --connect are required"),
    (["--listen", "127.0.0.1:0"], "--listen and --connect are required"),
    (["--listen", "127.0.0.1", "--connect", "127.0.0.1:1"],
     "--listen: '127.0.0.1' is not HOST:PORT"),
    (["--listen", "127.0.0.1:0", "--connect", "127.0.0.1:0"], "--connect: bad port"),
    (["--listen", "127.0.0.1:99999", "--connect", "127.0.0.1:1"], "--listen: bad port"),
    (GOOD + ["--delay-ms", "abc"], "--delay-ms: 'abc'"),
    (GOOD + ["--delay-ms", "-1"], "--delay-ms: '-1'"),
    (GOOD + ["--reset-every-ms", "0"], "--reset-every-ms: '0'"),
    (GOOD + ["--bogus"], "unknown option '--bogus'"),
    (GOOD + ["--delay-ms"], "--delay-ms needs a value"),
    (GOOD + ["extra"], "unexpected argument 'extra'"),
])
def test_bad_usage_is_one_line_and_exit_2(args, message):
    r = subprocess.run([TCPPROXY, *args], capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tcpproxy: ") and message in lines[0], r.stderr


def test_help_and_busy_port():
    r = subprocess.run([TCPPROXY, "--help"], capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0 and r.stdout.startswith("usage: tcpproxy --listen")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = subprocess.run([TCPPROXY, "--listen", f"127.0.0.1:{port}", "--connect", "127.0.0.1:1"],
                           capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == f"tcpproxy: listen on 127.0.0.1:{port}: Address already in use\n"


def test_bad_control_file_at_start_is_refused(tmp_path):
    control = tmp_path / "control"
    control.write_text("pass\nblackhole\n")
    r = subprocess.run([TCPPROXY, "--listen", "127.0.0.1:0", "--connect", "127.0.0.1:1",
                        "--control", str(control)], capture_output=True, text=True,
                       timeout=TIMEOUT)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "line 2: a second mode 'blackhole'" in r.stderr
