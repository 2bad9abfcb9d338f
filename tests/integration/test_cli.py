"""The command line and the process: --help/--version, bad input, start-up failures,
signals, daemonizing, logs, the mount(8) helpers and `make install`.

A failure must be one line on stderr naming the problem, a non-zero exit
(2 for usage errors, 1 for everything else), within a few seconds, without a
crash and without leaving a mount behind. Everything here runs the binary.
"""
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import EFSFUSE, REPO, Mount, free_port, is_mounted

pytestmark = pytest.mark.needs_efsfuse


def run(args, timeout=20, env=None):
    """Runs efsfuse with args; returns (CompletedProcess, seconds it took)."""
    t0 = time.monotonic()
    r = subprocess.run([EFSFUSE] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    return r, time.monotonic() - t0


def one_line_error(r, *words, any_of=(), retry_notice=False):
    """Failed by itself (not killed by a signal) with exactly one stderr line that
    mentions every one of words and at least one of any_of.

    With retry_notice, one info line saying that start-up is retrying may come
    first (efsfuse retries servers that refuse or reset connections)."""
    assert r.returncode > 0, f"exit status {r.returncode} (negative: killed by a signal)\n{r.stderr}"
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    if retry_notice and len(lines) == 2:
        assert " info " in lines[0] and "retrying" in lines[0], r.stderr
        lines = lines[1:]
    assert len(lines) == 1, f"expected one line on stderr:\n{r.stderr}"
    line = lines[0].lower()
    for w in words:
        assert w.lower() in line, f"{w!r} not in {lines[0]!r}"
    if any_of:
        assert any(w.lower() in line for w in any_of), f"none of {any_of} in {lines[0]!r}"
    assert r.stdout == ""


# Needs: option parsing (sidecar/options.c).
def test_help_and_version():
    r, _ = run(["--help"])
    assert r.returncode == 0, r.stderr
    for opt in ("SOURCE", "MOUNTPOINT", "port", "attr_timeout", "entry_timeout",
                "negative_timeout", "max_read", "max_write", "max_inflight", "uid", "gid",
                "log_format", "ro"):
        assert opt in r.stdout, opt
    r2, _ = run(["-h"])
    assert r2.returncode == 0 and r2.stdout == r.stdout
    r, _ = run(["--version"])
    assert r.returncode == 0 and r.stdout.startswith("efsfuse ") and "libnfs" in r.stdout
    r2, _ = run(["-V"])
    assert r2.returncode == 0 and r2.stdout == r.stdout


# Needs: SOURCE parsing and option validation, all before any network traffic.
@pytest.mark.parametrize("args,words", [
    (["nohostnopath", "/tmp"], ["source"]),
    (["127.0.0.1:relative", "/tmp"], ["source"]),
    (["nfs://:12/x", "/tmp"], ["source"]),
    (["nfs://127.0.0.1:notaport/x", "/tmp"], ["source"]),
    (["[::1:/x", "/tmp"], ["source"]),
    (["127.0.0.1:/", "/tmp", "-o", "bogus_option=1"], ["bogus_option"]),
    (["127.0.0.1:/", "/tmp", "-o", "max_write=12x"], ["max_write"]),
    (["127.0.0.1:/", "/tmp", "-o", "port=70000"], ["port"]),
    (["127.0.0.1:/", "/tmp", "-o", "attr_timeout=-1"], ["attr_timeout"]),
    (["127.0.0.1:/", "/tmp", "-o", "log_format=xml"], ["log_format"]),
    (["127.0.0.1:/", "/tmp", "--no-such-flag"], ["--no-such-flag"]),
    (["127.0.0.1:/"], ["mountpoint"]),
    ([], ["source"]),
    (["127.0.0.1:/", "/tmp", "/extra"], ["/extra"]),
    (["127.0.0.1:/", "/nonexistent/mountpoint"], ["/nonexistent/mountpoint"]),
])
def test_usage_errors(args, words):
    r, took = run(args)
    one_line_error(r, *words)
    assert r.returncode == 2
    assert took < 5


# Needs: TCP connect errors reported with the server's address.
def test_unreachable_server(tmp_path):
    port = free_port()  # nothing listens there
    r, took = run(["127.0.0.1:/", tmp_path, "-f", "-o", f"port={port},connect_timeout=2"])
    one_line_error(r, f"127.0.0.1:{port}", "refused", "attempts", retry_notice=True)
    # it kept trying for about connect_timeout (a sidecar may start before its
    # mount target), then gave up
    assert r.returncode == 1 and 1.0 < took < 5
    assert not is_mounted(tmp_path)


# Needs: start-up retries until connect_timeout.
def test_server_that_appears_during_start_up(tmp_path):
    from conftest import Server
    server = Server(tmp_path / "late")
    server.dir.mkdir()
    mnt = tmp_path / "m"
    mnt.mkdir()
    proc = subprocess.Popen([EFSFUSE, "127.0.0.1:/", str(mnt), "-f", "-o",
                             f"port={server.port},connect_timeout=20"],
                            stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        assert proc.poll() is None  # still trying
        server.start()
        deadline = time.monotonic() + 15
        while not is_mounted(mnt) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert is_mounted(mnt)
        (mnt / "late").write_text("ok")
        assert (server.export / "late").read_text() == "ok"
    finally:
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-u", str(mnt)], timeout=30)
        assert proc.wait(timeout=30) == 0
        server.stop()
    assert "retrying" in proc.stderr.read()


# Needs: the SOURCE path looked up at start-up, NFS4ERR_NOENT/NOTDIR reported by name.
@pytest.mark.parametrize("path,words", [
    ("/no/such/claim", ["/no/such/claim", "does not exist"]),
    ("/a-regular-file", ["/a-regular-file", "not a directory"]),
])
def test_bad_export_path(nfs_server, mount_efsfuse, tmp_path, path, words):
    root = mount_efsfuse("/")
    (root.path / "a-regular-file").write_text("x")
    r, took = run([f"127.0.0.1:{path}", tmp_path, "-f", "-o", f"port={nfs_server.port}"])
    one_line_error(r, *words)
    assert r.returncode == 1 and took < 5
    assert not is_mounted(tmp_path)


def fake_server(behaviour):
    """A TCP listener on loopback that is not an NFSv4 server; returns (port, stop)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.settimeout(0.2)
    stop = threading.Event()
    conns = []

    def loop():
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except socket.timeout:
                continue
            conns.append(c)
            if behaviour == "garbage":  # an answer that is not ONC RPC
                c.recv(65536)
                c.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n" * 10)
            elif behaviour == "rpc-garbage":  # a record marker, then nonsense
                c.recv(65536)
                c.sendall(b"\x80\x00\x00\x10" + os.urandom(16))
            elif behaviour == "close":  # hangs up at once
                c.close()
            # "silent": accepts and never answers

    t = threading.Thread(target=loop, daemon=True)
    t.start()

    def shutdown():
        stop.set()
        t.join()
        for c in conns:
            c.close()
        srv.close()

    return srv.getsockname()[1], shutdown


# Needs: RPC reply validation, connection loss and connect_timeout during start-up.
@pytest.mark.parametrize("behaviour,problem", [
    ("garbage", ["malformed", "not an nfs", "invalid", "garbage"]),
    ("rpc-garbage", ["malformed", "not an nfs", "invalid", "no answer", "timed out"]),
    ("close", ["reset", "closed", "hung up", "eof"]),
    ("silent", ["no answer", "timed out", "timeout"]),
])
def test_server_that_does_not_speak_nfsv4(tmp_path, behaviour, problem):
    port, shutdown = fake_server(behaviour)
    try:
        r, took = run(["127.0.0.1:/", tmp_path, "-f", "-o", f"port={port},connect_timeout=2"])
    finally:
        shutdown()
    one_line_error(r, f"127.0.0.1:{port}", any_of=problem, retry_notice=(behaviour == "close"))
    assert r.returncode == 1
    assert took < 8
    assert not is_mounted(tmp_path)


# Needs: SIGTERM/SIGINT handled by the loop: write back, unmount, exit 0.
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_unmounts_and_exits_zero(nfs_server, tmp_path, sig):
    mnt = tmp_path / "m"
    mnt.mkdir()
    m = Mount(nfs_server, mnt, "/", [], tmp_path / "log")
    try:
        (mnt / f"closed-{sig.name}").write_bytes(b"closed before the signal")
        # a file still open: what write() accepted is written back before exiting
        fd = os.open(mnt / f"open-{sig.name}", os.O_CREAT | os.O_WRONLY, 0o644)
        assert os.write(fd, b"open during the signal" * 1000) == 22000
        m.proc.send_signal(sig)
        assert m.proc.wait(timeout=30) == 0, m.stderr()
        assert not is_mounted(mnt)
        try:
            os.close(fd)
        except OSError as e:  # the kernel answers for the gone filesystem
            assert e.errno in (errno.ENOTCONN, errno.ECONNABORTED), e
        assert (nfs_server.export / f"closed-{sig.name}").read_bytes() == b"closed before the signal"
        assert (nfs_server.export / f"open-{sig.name}").read_bytes() == b"open during the signal" * 1000
    finally:
        m.cleanup()


# Needs: an aborted FUSE connection (what an operator does to a hung mount:
# echo 1 > /sys/fs/fuse/connections/N/abort) ends efsfuse with status 0 and
# no error logged; the dead mount is left for the operator to unmount, as
# libfuse cannot tell an abort from an unmount.
def test_aborted_connection_ends_efsfuse(nfs_server, tmp_path):
    conns = Path("/sys/fs/fuse/connections")
    ours = "fusectl" not in Path("/proc/mounts").read_text()
    if ours:
        subprocess.run(["mount", "-t", "fusectl", "none", str(conns)], check=True, timeout=30)
    mnt = tmp_path / "ab"
    mnt.mkdir()
    m = Mount(nfs_server, mnt, "/", [], tmp_path / "log")
    try:
        name = f"abort-{time.monotonic_ns()}"
        (mnt / name).write_bytes(b"written before the abort")
        (conns / str(os.minor(os.stat(mnt).st_dev)) / "abort").write_text("1")
        assert m.proc.wait(timeout=20) == 0, m.stderr()
        assert " error " not in m.stderr(), m.stderr()
        assert (nfs_server.export / name).read_bytes() == b"written before the abort"
    finally:
        m.cleanup()
        if ours:
            subprocess.run(["umount", str(conns)], timeout=30)


# Needs: daemonizing only once the mount is live (fuse_daemonize after mount).
def test_daemonizes_after_mount_is_live(nfs_server, tmp_path):
    mnt = tmp_path / "d"
    mnt.mkdir()
    r, took = run(["127.0.0.1:/", mnt, "-o", f"port={nfs_server.port}"])
    try:
        assert r.returncode == 0, r.stderr
        assert is_mounted(mnt)  # live by the time the command returned
        (mnt / "daemon-file").write_text("ok")
        assert (nfs_server.export / "daemon-file").read_text() == "ok"
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], timeout=30)
    assert not is_mounted(mnt)


# Needs: log_format=json for every line, including start-up failures.
def test_json_logs(nfs_server, tmp_path):
    mnt = tmp_path / "j"
    mnt.mkdir()
    m = Mount(nfs_server, mnt, "/", ["log_format=json"], tmp_path / "log")
    m.unmount()
    lines = [line for line in m.stderr().splitlines() if line.strip()]
    assert lines
    for line in lines:
        rec = json.loads(line)
        assert {"time", "level", "component", "msg"} <= set(rec)
    r, _ = run(["127.0.0.1:/", tmp_path, "-f", "-o",
                f"port={free_port()},log_format=json,connect_timeout=1"])
    assert r.returncode == 1
    records = [json.loads(line) for line in r.stderr.splitlines() if line.strip()]
    # the start-up retry notice (info), then the failure (error)
    assert records[-1]["level"] == "error" and "refused" in records[-1]["msg"].lower()
    assert all(rec["level"] == "info" for rec in records[:-1])


def mount_readahead_kb(mnt):
    st = os.stat(mnt)
    return int(Path(f"/sys/class/bdi/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/read_ahead_kb")
               .read_text())


# Needs: readahead_kb reaches the kernel, above max_read too (the INIT answer
# caps the bdi's readahead at max_readahead: the setting must come after it).
@pytest.mark.parametrize("opts, want", [([], 8192), (["readahead_kb=4096"], 4096),
                                        (["readahead_kb=0"], 128)])
def test_readahead_reaches_the_kernel(nfs_server, tmp_path, opts, want):
    mnt = tmp_path / "ra"
    mnt.mkdir()
    m = Mount(nfs_server, mnt, "/", opts, tmp_path / "log")
    try:
        assert mount_readahead_kb(mnt) == want
    finally:
        m.unmount()


# Needs: options from the environment (EFSFUSE_*), the command line winning.
def test_environment_options(nfs_server, tmp_path):
    mnt = tmp_path / "e"
    mnt.mkdir()
    env = dict(os.environ, EFSFUSE_PORT=str(nfs_server.port), EFSFUSE_OPTIONS="ro")
    r, _ = run(["127.0.0.1:/", mnt], env=env)
    try:
        assert r.returncode == 0, r.stderr
        assert is_mounted(mnt)
        with pytest.raises(OSError):
            (mnt / "env-ro").write_text("x")
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], timeout=30)
    env = dict(os.environ, EFSFUSE_PORT="1", EFSFUSE_CONNECT_TIMEOUT="1")
    r, _ = run(["127.0.0.1:/", mnt, "-f", "-o", f"port={free_port()}"], env=env)
    one_line_error(r, "refused", retry_notice=True)
    assert "127.0.0.1:1:" not in r.stderr  # the command line's port, not the environment's


# Needs: what mount(8) runs for `mount -t fuse.efsfuse` and fstab lines: Debian's
# mount.fuse3, and our own scripts/mount.efsfuse, with fstab-only options.
def test_mount_helpers(nfs_server, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shutil.copy(EFSFUSE, bindir / "efsfuse")
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}")
    mnt = tmp_path / "via-mount"
    mnt.mkdir()
    r = subprocess.run(["mount.fuse3", "127.0.0.1:/", str(mnt), "-t", "fuse.efsfuse", "-o",
                        f"port={nfs_server.port},_netdev,nofail,rw"],
                       capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0, r.stderr
    try:
        assert is_mounted(mnt)
        (mnt / "via-mount-file").write_text("m")
        assert (nfs_server.export / "via-mount-file").read_text() == "m"
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], timeout=30)
    assert not is_mounted(mnt)

    helper = REPO / "scripts" / "mount.efsfuse"
    env["EFSFUSE_BIN"] = str(bindir / "efsfuse")
    r = subprocess.run([str(helper), "127.0.0.1:/", str(mnt), "-o",
                        f"port={nfs_server.port},_netdev,noauto,defaults"],
                       capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0, r.stderr
    try:
        assert (mnt / "via-mount-file").read_text() == "m"
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], timeout=30)
    assert not is_mounted(mnt)


# Needs: the Makefile's install target (layout and man page).
def test_make_install_layout(tmp_path):
    # Install the binary under test when it is one of the checkout's builds
    # (build/ or a sanitized build-*/), else build/efsfuse; -o: never rebuild
    # the checkout from a test, whatever the caller's make passed down.
    binary = Path(EFSFUSE).resolve()
    build = binary.parent if binary.parent.parent == REPO and binary.name == "efsfuse" \
        else REPO / "build"
    assert (build / "efsfuse").exists(), f"make install needs {build}/efsfuse (run make)"
    rel = os.path.relpath(build, REPO)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    r = subprocess.run(["make", "-s", "-C", str(REPO), "-o", f"{rel}/efsfuse", f"BUILD={rel}",
                        "install", f"DESTDIR={tmp_path}", "PREFIX=/usr"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    for f in ("usr/bin/efsfuse", "sbin/mount.efsfuse", "sbin/mount.fuse.efsfuse",
              "usr/share/man/man1/efsfuse.1"):
        assert (tmp_path / f).is_file(), f
    assert (tmp_path / "usr/bin/efsfuse").read_bytes() == (build / "efsfuse").read_bytes()
    assert os.access(tmp_path / "usr/bin/efsfuse", os.X_OK)
    r = subprocess.run(["man", "-l", "-P", "cat", str(tmp_path / "usr/share/man/man1/efsfuse.1")],
                       capture_output=True, text=True, env=dict(os.environ, MANWIDTH="80"),
                       timeout=60)
    assert r.returncode == 0 and "max_write" in r.stdout
