"""Fixtures for the integration suite: a private nfs-ganesha and efsfuse mounts of it.

Everything is real: the server is nfs-ganesha (VFS backend) on a free loopback
port, started for this session with its own directory, config and RecoveryRoot;
the mounts are efsfuse processes serving /dev/fuse. Processes are stopped by
their PID and every mount is unmounted, also when a test fails.

Environment:
  EFSFUSE_BIN            the binary under test (default: <repo>/build/efsfuse)
  EFSFUSE_TEST_TARGET    "local": no server, no efsfuse -- every "mount" is a
                         bind mount of the export directory. This checks the
                         tests' own logic against the kernel's local
                         filesystem; tests marked needs_efsfuse are skipped.
  EFSFUSE_TEST_TIMEOUT   seconds a test may keep its mounts (default 300); past
                         that its efsfuse processes are killed, so a hung
                         request fails the test instead of hanging the run.

Against the real binary nothing may be skipped: a skipped test fails the run.

Tests use the fixtures nfs_server, mount_efsfuse and workdir, and the helpers
run_as/run_as_user (setpriv), sha256, wait_for, is_mounted and free_port.
"""
import fcntl
import hashlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EFSFUSE = os.environ.get("EFSFUSE_BIN", str(REPO / "build" / "efsfuse"))
GANESHA_SH = str(REPO / "scripts" / "ganesha.sh")
LOCAL = os.environ.get("EFSFUSE_TEST_TARGET", "") == "local"
MOUNT_TIMEOUT = 15  # seconds for efsfuse to mount
EXIT_TIMEOUT = 60  # seconds for efsfuse to exit after its unmount (it writes back first)
TEST_TIMEOUT = float(os.environ.get("EFSFUSE_TEST_TIMEOUT", "300"))

# The uid/gid the credential tests act as (Debian's first user; it need not exist).
USER_UID = USER_GID = 1000

# efsfuse options that change nothing a test can observe through a bind mount.
_LOCAL_IGNORED_OPTS = {"attr_timeout", "entry_timeout", "negative_timeout", "max_read",
                       "max_write", "max_inflight", "readahead_kb", "timeo", "connect_timeout",
                       "log_level", "log_format", "client_name", "debug", "allow_other",
                       "default_permissions", "rw", "port"}


# ---------------------------------------------------------------- pytest hooks

def pytest_configure(config):
    config.addinivalue_line(
        "markers", "needs_efsfuse: runs the efsfuse binary itself or checks behaviour only "
        "efsfuse has (skipped with EFSFUSE_TEST_TARGET=local)")


def pytest_collection_modifyitems(config, items):
    if not LOCAL:
        return
    skip = pytest.mark.skip(reason="needs the efsfuse binary (EFSFUSE_TEST_TARGET=local)")
    for item in items:
        if "needs_efsfuse" in item.keywords:
            item.add_marker(skip)


def pytest_sessionstart(session):
    if not LOCAL and not os.access(EFSFUSE, os.X_OK):
        pytest.exit(f"efsfuse binary {EFSFUSE} not found: run `make` or set EFSFUSE_BIN", 2)


_skipped = []


def pytest_runtest_logreport(report):
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    # Against the real binary nothing may be skipped: a skip is a test that did
    # not run, and must not pass for one that did.
    if not LOCAL and _skipped and exitstatus == 0:
        print(f"\n{len(_skipped)} test(s) skipped against the real binary: {_skipped}")
        session.exitstatus = 1


# ------------------------------------------------------------------- helpers

def free_port():
    """A port nothing on 127.0.0.1 uses right now (TCP and UDP: ganesha binds both).

    Taken below the kernel's ephemeral range (32768 and up), so that no outgoing
    connection takes it while a server restarts; above `make run`'s 20490-20589.
    """
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(21000, 32768)
        try:
            with socket.socket() as tcp, socket.socket(type=socket.SOCK_DGRAM) as udp:
                tcp.bind(("127.0.0.1", port))
                udp.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port on 127.0.0.1 in 21000-32767")


def mount_fstype(path):
    """The type of the filesystem mounted exactly at path (the topmost one), or None.

    Reads only /proc: a hung mount cannot make it hang."""
    path = os.path.abspath(path)
    fstype = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            # mountinfo escapes blanks in paths as \040
            if fields[4].replace("\\040", " ") == path:
                fstype = fields[fields.index("-") + 1]
    return fstype


def default_sigint():
    """In a child before exec: SIGINT back to its default action."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def is_mounted(path, fstype="fuse.efsfuse"):
    return mount_fstype(path) == fstype


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def wait_for(predicate, timeout=3.0, interval=0.05):
    """Polls predicate until it is true or timeout seconds passed; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def run_as(uid, gid, groups, argv, **kw):
    """Runs argv as uid/gid with exactly the given supplementary groups (setpriv)."""
    cmd = ["setpriv", f"--reuid={uid}", f"--regid={gid}"]
    cmd += [f"--groups={','.join(str(g) for g in groups)}"] if groups else ["--clear-groups"]
    kw.setdefault("timeout", 60)
    return subprocess.run(cmd + [str(a) for a in argv], capture_output=True, text=True, **kw)


def run_as_user(argv, groups=(), **kw):
    """run_as the test user (uid/gid 1000)."""
    return run_as(USER_UID, USER_GID, groups, argv, **kw)


# -------------------------------------------------------------------- server

class Server:
    """nfs-ganesha exporting <base>/export on <host>:<port> (scripts/ganesha.sh).

    host defaults to 127.0.0.1; netns runs the server inside that network
    namespace (one the caller made, with host one of its addresses); grace is
    the seconds of grace period (and lease) after each start (None: graceless)."""

    def __init__(self, base, port=None, host="127.0.0.1", netns=None, grace=None):
        self.dir = Path(base)
        self.host = host
        self.netns = netns
        # Another namespace has all its ports free; loopback is shared.
        self.port = port or (2049 if netns else free_port())
        self.export = self.dir / "export"
        self.log = self.dir / "ganesha.log"
        self.grace = grace

    def start(self):
        env = dict(os.environ)
        env.pop("GANESHA_GRACE", None)
        if self.grace is not None:
            env["GANESHA_GRACE"] = str(self.grace)
        cmd = [GANESHA_SH, "start", str(self.dir), str(self.port), self.host]
        r = subprocess.run(cmd + ([self.netns] if self.netns else []),
                           capture_output=True, text=True, timeout=60, env=env)
        assert r.returncode == 0, f"ganesha did not start:\n{r.stderr}"

    def stop(self):
        r = subprocess.run([GANESHA_SH, "stop", str(self.dir)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"ganesha did not stop:\n{r.stderr}"

    def restart(self):
        """Stops and starts the server on the same port with the same export."""
        self.stop()
        self.start()

    def crash(self):
        """kill -9 the server; returns once it is gone."""
        pid = self.pid
        os.kill(pid, 9)
        while os.path.exists(f"/proc/{pid}") and "zombie" not in open(f"/proc/{pid}/status").read():
            time.sleep(0.05)

    def crash_and_restart(self, downtime=1.0):
        """kill -9 the server, then start it again on the same port and export."""
        self.crash()
        time.sleep(downtime)
        self.start()

    @property
    def pid(self):
        try:
            return int((self.dir / "server.pid").read_text())
        except FileNotFoundError:
            return None


class LocalServer:
    """EFSFUSE_TEST_TARGET=local: just the export directory."""

    def __init__(self, base):
        self.dir = Path(base)
        self.host = "127.0.0.1"
        self.port = 0
        self.export = self.dir / "export"
        self.log = None
        self.pid = None

    def start(self):
        self.export.mkdir(exist_ok=True)

    def stop(self):
        pass

    def restart(self):
        pass


@pytest.fixture(scope="session")
def nfs_server(tmp_path_factory):
    """One server for the whole session; tests keep to their own directories in it."""
    server = (LocalServer if LOCAL else Server)(tmp_path_factory.mktemp("ganesha"))
    server.start()
    yield server
    server.stop()


def make_server(tmp_path, grace=None):
    """A started server of the test's own; grace: seconds of grace period and lease."""
    server = Server(tmp_path / "srv", grace=grace)
    server.dir.mkdir()
    server.start()
    return server


@pytest.fixture
def own_server(tmp_path):
    """A server of the test's own, for tests that stop, kill or restart it (graceless)."""
    server = make_server(tmp_path)
    yield server
    server.stop()


# -------------------------------------------------------------------- mounts

# Seconds a test may keep a mount of its own server (a hung fsync fails, not hangs).
OWN_MOUNT_TIMEOUT = 240


@pytest.fixture
def mount(own_server, tmp_path):
    """Factory for mounts of own_server; each is cleaned up, with a watchdog."""
    mounts = []

    def make(opts=()):
        mnt = tmp_path / f"m{len(mounts)}"
        mnt.mkdir()
        m = Mount(own_server, mnt, "/", list(opts), tmp_path / f"log{len(mounts)}")
        mounts.append(m)
        return m

    timer = threading.Timer(OWN_MOUNT_TIMEOUT, lambda: [m.kill() for m in mounts])
    timer.daemon = True
    timer.start()
    yield make
    timer.cancel()
    for m in mounts:
        m.cleanup()


@pytest.fixture
def mounts(tmp_path):
    """Factory: mounts(server, n) -> n mounts of the server's export root,
    unmounted (which must succeed) and cleaned up at the end."""
    made = []

    def make(server, n=1):
        for _ in range(n):
            mnt = tmp_path / f"m{len(made)}"
            mnt.mkdir()
            made.append(Mount(server, mnt, "/", [], tmp_path / f"efsfuse{len(made)}.log"))
        return made[-n:]

    yield make
    try:
        for m in made:
            m.unmount()
    finally:
        for m in made:
            m.cleanup()


def try_lock(fd, start=0, length=100):
    """Non-blocking POSIX write lock: 0, or the errno it failed with."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, length, start)
        return 0
    except OSError as e:
        return e.errno


class Restarter:
    """Starts the server again, from a process made before the test opens files
    on the mount: a process forked later would flush those files when it
    closes them, and that flush waits for the very server it is to start."""

    def __init__(self, server):
        self.err = server.dir / "restart.err"
        with open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                ["bash", "-c", 'read -r _ && exec "$0" start "$1" "$2"', GANESHA_SH,
                 str(server.dir), str(server.port)],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)

    def start(self):
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.close()
        rc = self.proc.wait(timeout=60)
        assert rc == 0, f"ganesha did not start again:\n{self.err.read_text()}"

    def cancel(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def restarter(own_server):
    r = Restarter(own_server)
    yield r
    r.cancel()



# An error-level line of efsfuse's log, text or JSON format.
_ERROR_LINE = re.compile(r'^\S+ efsfuse\[\d+\] error |"level":"error"')


def _unmount(path, lazy=False, busy_for=3.0):
    """fusermount3 -u [-z] path. A mount can be busy for a moment after a test
    (processes it started still exiting), so EBUSY is retried for busy_for seconds."""
    cmd = ["fusermount3", "-u"] + (["-z"] if lazy else []) + [str(path)]
    deadline = time.monotonic() + busy_for
    while True:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        if r.returncode == 0 or "busy" not in r.stderr or time.monotonic() > deadline:
            return r
        time.sleep(0.1)


class Mount:
    """efsfuse SOURCE MOUNTPOINT -f -o port=...,OPTS, running until unmount().

    .path is the mountpoint, .proc the efsfuse process, .log its stderr.
    host/port override the server's (e.g. a proxy in between); prefix is
    put before the command line (e.g. nsenter --net=...: it must exec, so
    that .proc is efsfuse itself).
    """

    def __init__(self, server, mnt, path="/", opts=(), log=None, extra_args=(), host=None,
                 port=None, prefix=()):
        if LOCAL:
            pytest.skip("needs the efsfuse binary (EFSFUSE_TEST_TARGET=local)")
        self.server = server
        self.path = Path(mnt)
        self.log = Path(log) if log else self.path.with_name(self.path.name + ".log")
        self.done = False
        host = host or server.host
        port = port or server.port
        args = list(prefix) + [EFSFUSE, f"{host}:{path}", str(mnt), "-f",
                               "-o", ",".join([f"port={port}"] + list(opts))] + list(extra_args)
        with open(self.log, "wb") as err:
            # A shell that starts the tests in the background ignores SIGINT
            # for them, and libfuse leaves an ignored signal ignored: the
            # signal tests would then wait for an exit that never comes.
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err,
                                         preexec_fn=default_sigint)
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not is_mounted(self.path):
            if self.proc.poll() is not None:
                raise AssertionError(f"efsfuse exited with {self.proc.returncode} before "
                                     f"mounting {self.path}:\n{self.stderr()}")
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"efsfuse did not mount {self.path} within "
                                     f"{MOUNT_TIMEOUT} s:\n{self.stderr()}")
            time.sleep(0.02)

    def stderr(self):
        return self.log.read_text(errors="replace")

    def kill(self):
        """SIGKILL by PID (the kernel then aborts the mount) and remove the dead mount."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        if mount_fstype(self.path):
            _unmount(self.path, lazy=True)

    def unmount(self):
        """fusermount3 -u; efsfuse must then write back and exit 0 by itself."""
        if self.done:
            return
        self.done = True
        if self.proc.poll() is None and is_mounted(self.path):
            r = _unmount(self.path)
            assert r.returncode == 0, f"fusermount3 -u {self.path}: {r.stderr}"
        try:
            rc = self.proc.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"efsfuse did not exit within {EXIT_TIMEOUT} s of its "
                                 f"unmount:\n{self.stderr()}")
        assert rc == 0, f"efsfuse exited with {rc} after unmount:\n{self.stderr()}"
        # Nothing failed on the way out (e.g. writing back at exit).
        errors = [line for line in self.stderr().splitlines() if _ERROR_LINE.search(line)]
        assert not errors, "efsfuse logged errors:\n" + "\n".join(errors)

    def cleanup(self):
        """Best effort, for error paths: unmount, wait a little, kill if stuck."""
        self.done = True
        if self.proc.poll() is None:
            if is_mounted(self.path):
                _unmount(self.path)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        self.kill()


class LocalMount:
    """EFSFUSE_TEST_TARGET=local: a bind mount of the export (read-only with "ro")."""

    proc = None

    def __init__(self, server, mnt, path="/", opts=(), log=None, extra_args=(), **how):
        if how:
            pytest.skip("host, port or prefix need the efsfuse binary (EFSFUSE_TEST_TARGET=local)")
        for opt in opts:
            name = opt.split("=", 1)[0]
            if name not in _LOCAL_IGNORED_OPTS | {"ro"}:
                pytest.skip(f"option {name} needs the efsfuse binary (EFSFUSE_TEST_TARGET=local)")
        if extra_args:
            pytest.skip("extra arguments need the efsfuse binary (EFSFUSE_TEST_TARGET=local)")
        self.server = server
        self.path = Path(mnt)
        self.done = False
        src = server.export / path.lstrip("/")
        bind = ["mount", "--bind"] + (["-o", "ro"] if "ro" in opts else [])
        subprocess.run(bind + [str(src), str(mnt)], check=True, timeout=30)

    def stderr(self):
        return ""

    def unmount(self):
        if not self.done:
            self.done = True
            subprocess.run(["umount", str(self.path)], check=True, timeout=30)

    def cleanup(self):
        if not self.done:
            self.done = True
            subprocess.run(["umount", "-l", str(self.path)], timeout=30)

    def kill(self):
        self.cleanup()


def mount_factory(server, tmp_path):
    """The generator behind mount_efsfuse, for fixtures of other servers."""
    return _mounts(server, tmp_path)


@pytest.fixture
def mount_efsfuse(nfs_server, tmp_path):
    """Factory: mount_efsfuse(path="/", opts=(), extra_args=(), **how) -> Mount.

    Mounts 127.0.0.1:<path> of the session's server on a fresh mountpoint
    (how: Mount's host, port and prefix).
    Every mount the test leaves mounted is unmounted at teardown, and efsfuse
    must then exit 0 (the teardown fails otherwise).
    """
    yield from _mounts(nfs_server, tmp_path)


def _mounts(nfs_server, tmp_path):
    mounts = []
    # Mountpoints live outside pytest's private (0700) tmp_path so that the
    # other uid of the credential tests can reach them.
    base = Path(tempfile.mkdtemp(prefix="efsfuse-mnt-"))
    base.chmod(0o755)
    fired = threading.Event()

    def watchdog():
        fired.set()
        for m in mounts:
            m.kill()

    timer = threading.Timer(TEST_TIMEOUT, watchdog)
    timer.daemon = True
    timer.start()

    def make(path="/", opts=(), extra_args=(), **how):
        mnt = base / f"mnt{len(mounts)}"
        mnt.mkdir()
        cls = LocalMount if LOCAL else Mount
        try:
            m = cls(nfs_server, mnt, path, opts, tmp_path / f"efsfuse{len(mounts)}.log",
                    extra_args, **how)
        except BaseException:  # did not mount (a failure, or a skip)
            mnt.rmdir()
            raise
        mounts.append(m)
        return m

    yield make

    timer.cancel()
    failures = []
    for m in mounts:
        try:
            m.unmount()
        except AssertionError as e:
            failures.append(str(e))
        finally:
            m.cleanup()
    for m in mounts:
        try:
            m.path.rmdir()
        except OSError as e:
            failures.append(f"mountpoint {m.path} left behind: {e}")
    try:
        base.rmdir()
    except OSError:
        pass  # a mountpoint is left: reported above
    if fired.is_set():
        pytest.fail(f"the test ran longer than {TEST_TIMEOUT:.0f} s; its efsfuse "
                    "processes were killed")
    if failures:
        pytest.fail("\n\n".join(failures))


@pytest.fixture
def workdir(mount_efsfuse, request):
    """A fresh directory named after the test, through a mount of the export's root."""
    name = request.node.name.replace("[", "_").replace("]", "").replace("/", "_")
    root = mount_efsfuse("/")
    d = root.path / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir()
    return d
