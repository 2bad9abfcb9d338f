"""Helpers of the fault suite: the tcpproxy driver, a tree workload with its
oracle, network namespaces and efsfuse log parsing.

A workload applies random operations (create, write, rename, mkdir, link,
symlink, unlink, rmdir, readdir) to a directory of an efsfuse mount and the
same operations, in the same order, to a Python model of the tree. Every
OSError is an app-visible error and is recorded; at the end the tree on disk
(through the mount, and in the export after unmount) must equal the model:
names, types, sizes, sha256 of contents, symlink targets.
"""
import datetime
import hashlib
import os
import random
import re
import select
import signal
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TCPPROXY = os.environ.get("TCPPROXY_BIN", str(REPO / "build" / "fault" / "tcpproxy"))
TIMEOUT = 10


# ------------------------------------------------------------------ tcpproxy

class Proxy:
    """tcpproxy --listen 127.0.0.1:0 --connect HOST:PORT ARGS... (stopped by stop())."""

    def __init__(self, tmp_path, upstream_port, *args, control=False, upstream_host="127.0.0.1"):
        self.control_path = Path(tmp_path) / "control"
        self.pidfile = Path(tmp_path) / "tcpproxy.pid"
        argv = [TCPPROXY, "--listen", "127.0.0.1:0", "--connect",
                f"{upstream_host}:{upstream_port}", "--pidfile", str(self.pidfile), *args]
        if control:
            argv += ["--control", str(self.control_path)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        ready, _, _ = select.select([self.proc.stdout], [], [], TIMEOUT)
        first = self.proc.stdout.readline() if ready else ""
        m = re.fullmatch(r"port=(\d+)\n", first)
        if not m:
            self.stop()
            raise AssertionError(f"expected port=NNNN first on stdout, got {first!r}:\n"
                                 f"{self.stderr()}")
        self.port = int(m.group(1))

    def _read_stderr(self):
        for line in self.proc.stderr:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()

    def stderr(self):
        with self.cond:
            return "\n".join(self.lines)

    def wait_log(self, pattern, start=0, timeout=TIMEOUT):
        """The first stderr line from index `start` on that matches."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines[start:]:
                    if re.search(pattern, line):
                        return line
                left = deadline - time.monotonic()
                assert left > 0, f"no log line matching {pattern!r}:\n" + "\n".join(self.lines)
                self.cond.wait(left)

    def control(self, text):
        """Rewrites the control file, SIGHUPs, returns the proxy's answer."""
        tmp = self.control_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.control_path)
        with self.cond:
            start = len(self.lines)
        os.kill(self.proc.pid, signal.SIGHUP)
        return self.wait_log(r"control: ", start)

    def connect(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"tcpproxy ignored {sig!r}:\n{self.stderr()}")


# ------------------------------------------------------- network namespaces

def run(argv, **kw):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30, **kw)
    assert r.returncode == 0, f"{' '.join(argv)}: {r.stderr}"
    return r


class NetPair:
    """Two network namespaces, client and server, joined by a veth pair.

    The addresses exist only inside them (10.X.Y.1 client, .2 server), so
    nothing leaves the machine and the root namespace never routes to them.
    Names carry the PID, so parallel runs do not collide; remove() deletes
    everything (deleting a namespace deletes its end of the veth pair)."""

    def __init__(self):
        tag = f"{os.getpid() % 100000}{random.randrange(100):02d}"
        self.client_ns = f"efsc{tag}"
        self.server_ns = f"efss{tag}"
        self.client_dev = f"efvc{tag}"
        self.server_dev = f"efvs{tag}"
        x, y = 200 + random.randrange(50), random.randrange(1, 255)
        self.client_addr = f"10.{x}.{y}.1"
        self.server_addr = f"10.{x}.{y}.2"
        self.made = []
        self.partitioned = False
        try:
            for ns in (self.client_ns, self.server_ns):
                run(["ip", "netns", "add", ns])
                self.made.append(ns)
            run(["ip", "link", "add", self.client_dev, "netns", self.client_ns, "type", "veth",
                 "peer", "name", self.server_dev, "netns", self.server_ns])
            for ns, dev, addr in ((self.client_ns, self.client_dev, self.client_addr),
                                  (self.server_ns, self.server_dev, self.server_addr)):
                run(["ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev])
                run(["ip", "-n", ns, "link", "set", dev, "up"])
                run(["ip", "-n", ns, "link", "set", "lo", "up"])
        except BaseException:
            self.remove()
            raise

    def client_prefix(self):
        """Runs a command in the client's network namespace only: ip netns
        exec would also give it a mount namespace of its own, hiding a FUSE
        mount from everyone else."""
        return ["nsenter", f"--net=/run/netns/{self.client_ns}"]

    def partition(self):
        """Drops every packet in and out of the server's namespace: the
        connection stays open, nothing arrives, nobody is told."""
        rules = ("table inet efsfault {\n"
                 "  chain in { type filter hook input priority -10; policy drop; }\n"
                 "  chain out { type filter hook output priority -10; policy drop; }\n"
                 "}\n")
        run(["ip", "netns", "exec", self.server_ns, "nft", "-f", "-"], input=rules)
        self.partitioned = True

    def heal(self):
        """Ends the partition (if any): safe to call again in a finally."""
        if self.partitioned:
            run(["ip", "netns", "exec", self.server_ns, "nft", "delete", "table", "inet",
                 "efsfault"])
            self.partitioned = False

    def client_sockets(self):
        """ss lines (state first) of the TCP sockets in the client's namespace."""
        r = run(["ip", "netns", "exec", self.client_ns, "ss", "-Htan"])
        return [line for line in r.stdout.splitlines() if line.strip()]

    def remove(self):
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        self.made = []


# ------------------------------------------------------------ efsfuse's log

_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z efsfuse\[\d+\] (\w+) (\w+): (.*)$")


def log_events(text, pattern):
    """(wall-clock seconds, message) of the log lines whose message matches."""
    out = []
    for line in text.splitlines():
        m = _STAMP.match(line)
        if m and re.search(pattern, m.group(4)):
            t = datetime.datetime.fromisoformat(m.group(1)).replace(
                tzinfo=datetime.timezone.utc).timestamp()
            out.append((t, m.group(4)))
    return out


# ------------------------------------------------------------ the workload

class Inode:
    def __init__(self, data=b""):
        self.data = bytearray(data)


class Workload:
    """Random operations on root (a directory of a mount) and on a model.

    Each instance is single-threaded; run several on different roots for
    concurrency. .errors lists (operation, OSError) of app-visible errors;
    .done counts operations completed."""

    MAX_FILE = 96 << 10

    def __init__(self, root, seed, max_entries=60):
        self.root = Path(root)
        self.rng = random.Random(seed)
        self.max_entries = max_entries
        # relative path -> ("d",) | ("f", Inode) | ("l", target)
        self.model = {}
        self.serial = 0
        self.errors = []
        self.done = 0
        self.last_ok = time.monotonic()

    # --- choosing
    def _new_name(self, prefix):
        self.serial += 1
        dirs = [""] + [p for p, v in self.model.items() if v[0] == "d"]
        parent = self.rng.choice(dirs)
        return f"{parent}/{prefix}{self.serial}" if parent else f"{prefix}{self.serial}"

    def _pick(self, kind):
        names = sorted(p for p, v in self.model.items() if v[0] == kind)
        return self.rng.choice(names) if names else None

    def _data(self, n):
        return self.rng.randbytes(n)

    # --- operations: each does the real thing, then (if it succeeded) the model
    def op_create(self):
        name = self._new_name("f")
        data = self._data(self.rng.randrange(0, self.MAX_FILE))
        fd = os.open(self.root / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        self.model[name] = ("f", Inode(data))

    def op_write(self):
        name = self._pick("f")
        if name is None:
            return self.op_create()
        ino = self.model[name][1]
        off = self.rng.randrange(0, len(ino.data) + 1)
        data = self._data(self.rng.randrange(1, 16 << 10))
        fd = os.open(self.root / name, os.O_WRONLY)
        try:
            os.pwrite(fd, data, off)
        finally:
            os.close(fd)
        if off > len(ino.data):
            ino.data.extend(b"\0" * (off - len(ino.data)))
        ino.data[off:off + len(data)] = data

    def op_rename(self):
        src = self.rng.choice(sorted(p for p, v in self.model.items() if v[0] != "d") or [None])
        if src is None:
            return self.op_create()
        others = sorted(p for p, v in self.model.items() if v[0] == "f" and p != src)
        # (Onto another name of the same file, rename does nothing at all.)
        others = [p for p in others if self.model[p][1] is not self.model[src][1]]
        if others and self.rng.random() < 0.4:
            dst = self.rng.choice(others)  # replaces an existing file
        else:
            dst = self._new_name("r")
        os.rename(self.root / src, self.root / dst)
        self.model[dst] = self.model.pop(src)

    def op_mkdir(self):
        name = self._new_name("d")
        os.mkdir(self.root / name)
        self.model[name] = ("d",)

    def op_rmdir(self):
        empty = sorted(p for p, v in self.model.items()
                       if v[0] == "d" and not any(q.startswith(p + "/") for q in self.model))
        if not empty:
            return self.op_mkdir()
        name = self.rng.choice(empty)
        os.rmdir(self.root / name)
        del self.model[name]

    def op_symlink(self):
        name = self._new_name("s")
        target = f"target-{self.serial}-" + "x" * self.rng.randrange(0, 40)
        os.symlink(target, self.root / name)
        self.model[name] = ("l", target)

    def op_link(self):
        src = self._pick("f")
        if src is None:
            return self.op_create()
        name = self._new_name("h")
        os.link(self.root / src, self.root / name)
        self.model[name] = self.model[src]

    def op_unlink(self):
        name = self.rng.choice(sorted(p for p, v in self.model.items() if v[0] != "d") or [None])
        if name is None:
            return self.op_create()
        os.unlink(self.root / name)
        del self.model[name]

    def op_readdir(self):
        dirs = [""] + sorted(p for p, v in self.model.items() if v[0] == "d")
        d = self.rng.choice(dirs)
        got = sorted(os.listdir(self.root / d))
        want = sorted(p.rsplit("/", 1)[-1] for p in self.model
                      if (p.rsplit("/", 1)[0] if "/" in p else "") == d)
        assert got == want, f"readdir {d or '.'}: {got} != model {want}"

    def step(self):
        full = len(self.model) >= self.max_entries
        ops = [(self.op_create, 1 if full else 4), (self.op_write, 3), (self.op_rename, 3),
               (self.op_mkdir, 0 if full else 1), (self.op_rmdir, 1), (self.op_symlink, 1),
               (self.op_link, 1), (self.op_unlink, 4 if full else 2), (self.op_readdir, 2)]
        op = self.rng.choices([o for o, _ in ops], [w for _, w in ops])[0]
        try:
            op()
        except (OSError, AssertionError) as e:  # AssertionError: readdir != model
            self.errors.append((op.__name__, e))
            return
        self.done += 1
        self.last_ok = time.monotonic()

    def run(self, stop, max_ops=None, max_errors=5):
        """Steps until stop (an Event) is set, max_ops are done, or too many errors."""
        while not stop.is_set() and (max_ops is None or self.done < max_ops):
            self.step()
            if len(self.errors) >= max_errors:
                return

    def expected(self):
        """{relative path: (type, size, sha256 or target)} of the model."""
        out = {}
        for p, v in self.model.items():
            if v[0] == "d":
                out[p] = ("d", None, None)
            elif v[0] == "f":
                out[p] = ("f", len(v[1].data), hashlib.sha256(v[1].data).hexdigest())
            else:
                out[p] = ("l", None, v[1])
        return out


def snapshot(root):
    """The tree under root in the form of Workload.expected()."""
    root = Path(root)
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            rel = str(full.relative_to(root))
            st = os.lstat(full)
            if stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", None, None)
            elif stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", None, os.readlink(full))
            elif stat.S_ISREG(st.st_mode):
                h = hashlib.sha256(full.read_bytes()).hexdigest()
                out[rel] = ("f", st.st_size, h)
            else:
                out[rel] = ("?", st.st_mode, None)
    return out


def diff_trees(got, want):
    """A readable list of differences ([] when equal)."""
    lines = []
    for p in sorted(set(got) | set(want)):
        if got.get(p) != want.get(p):
            lines.append(f"{p}: got {got.get(p)}, model {want.get(p)}")
    return lines
