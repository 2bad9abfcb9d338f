"""Fixtures: a private nfs-ganesha on a free loopback port, and efsfuse mounts of it.

Everything runs for real: the NFS server is nfs-ganesha (VFS backend) and the
mounts go through /dev/fuse. Processes are stopped by their PID and every
mount is unmounted, also when a test fails.
"""
import hashlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EFSFUSE = os.environ.get("EFSFUSE_BIN", str(REPO / "build" / "efsfuse"))
GANESHA_SH = str(REPO / "scripts" / "ganesha.sh")
MOUNT_TIMEOUT = 15


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[4] == path and fields[sep + 1] == "fuse.efsfuse":
                return True
    return False


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Server:
    """nfs-ganesha exporting <dir>/export on 127.0.0.1:<port>."""

    def __init__(self, base):
        self.dir = base
        self.port = free_port()
        self.export = base / "export"

    def start(self):
        subprocess.run([GANESHA_SH, "start", str(self.dir), str(self.port)], check=True,
                       timeout=60)

    def stop(self):
        subprocess.run([GANESHA_SH, "stop", str(self.dir)], check=True, timeout=60)

    def crash_and_restart(self, downtime=1.0):
        """kill -9 the server, then start it again on the same port and export."""
        pid = int((self.dir / "server.pid").read_text())
        os.kill(pid, 9)
        while os.path.exists(f"/proc/{pid}") and "zombie" not in open(f"/proc/{pid}/status").read():
            time.sleep(0.05)
        time.sleep(downtime)
        self.start()


@pytest.fixture(scope="session")
def nfs_server(tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("ganesha"))
    server.start()
    yield server
    server.stop()


class Mount:
    def __init__(self, server, mnt, path, opts, log):
        self.server = server
        self.path = mnt
        self.log = log
        args = [EFSFUSE, f"127.0.0.1:{path}", str(mnt), "-f",
                "-o", ",".join([f"port={server.port}"] + list(opts))]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(log, "w"))
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not is_mounted(mnt):
            if self.proc.poll() is not None:
                raise AssertionError(f"efsfuse exited with {self.proc.returncode}:\n{self.stderr()}")
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"efsfuse did not mount in {MOUNT_TIMEOUT} s:\n{self.stderr()}")
            time.sleep(0.02)

    def stderr(self):
        return Path(self.log).read_text(errors="replace")

    def unmount(self):
        """Unmounts; the process must then write back and exit 0 by itself."""
        if self.proc.poll() is None and is_mounted(self.path):
            subprocess.run(["fusermount3", "-u", str(self.path)], check=True, timeout=30)
        try:
            rc = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"efsfuse did not exit after unmount:\n{self.stderr()}")
        assert rc == 0, f"efsfuse exited with {rc}:\n{self.stderr()}"
        # No error-level log line (e.g. write-back failures at exit).
        assert not re.search(r"\] error \w+:", self.stderr()), self.stderr()

    def cleanup(self):
        if self.proc.poll() is None:
            if is_mounted(self.path):
                subprocess.run(["fusermount3", "-u", str(self.path)], timeout=30)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if is_mounted(self.path):
            subprocess.run(["fusermount3", "-u", "-z", str(self.path)], timeout=30)


@pytest.fixture
def mount_efsfuse(nfs_server, tmp_path):
    """Factory: mount_efsfuse(path="/", opts=()) -> Mount, unmounted at teardown."""
    mounts = []
    # Mountpoints live outside pytest's private (0700) tmp_path so that the
    # other users of the credential tests can reach them.
    base = Path(tempfile.mkdtemp(prefix="efsfuse-mnt-"))
    base.chmod(0o755)

    def make(path="/", opts=()):
        mnt = base / f"mnt{len(mounts)}"
        mnt.mkdir()
        m = Mount(nfs_server, mnt, path, opts, tmp_path / f"efsfuse{len(mounts)}.log")
        mounts.append(m)
        return m

    yield make
    for m in mounts:
        m.cleanup()
    for m in mounts:
        m.path.rmdir()
    base.rmdir()


@pytest.fixture
def workdir(nfs_server, mount_efsfuse, request):
    """A fresh directory of this test on the server, and a mount of it."""
    name = request.node.name.replace("[", "_").replace("]", "").replace("/", "_")
    root = mount_efsfuse("/")
    d = root.path / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir()
    yield d
    root.unmount()


def run_as(uid, gid, groups, argv, **kw):
    """Runs argv as uid/gid with the given supplementary groups (setpriv)."""
    grp = ",".join(str(g) for g in groups) if groups else None
    cmd = ["setpriv", f"--reuid={uid}", f"--regid={gid}"]
    cmd += [f"--groups={grp}"] if grp else ["--clear-groups"]
    return subprocess.run(cmd + list(argv), capture_output=True, text=True, timeout=60, **kw)
