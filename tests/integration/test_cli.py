"""The command line: --help/--version, bad input, start-up failures, signals, daemonizing."""
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import EFSFUSE, Mount, free_port, is_mounted


def run(args, timeout=20, env=None):
    t0 = time.monotonic()
    r = subprocess.run([EFSFUSE] + args, capture_output=True, text=True, timeout=timeout,
                       env=env, stdin=subprocess.DEVNULL)
    return r, time.monotonic() - t0


def one_line_error(r, *words, retry_notice=False):
    """Failed with exactly one stderr line that mentions every word, and no crash.

    With retry_notice, one info line saying that start-up is retrying may
    come first (the server may only be slow to appear)."""
    assert r.returncode not in (0, -6, -11, 134, 139), r
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    if retry_notice and len(lines) == 2:
        assert " info " in lines[0] and "retrying" in lines[0], r.stderr
        lines = lines[1:]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("efsfuse: "), lines[0]
    for w in words:
        assert w.lower() in lines[0].lower(), lines[0]


def test_help_and_version():
    r, _ = run(["--help"])
    assert r.returncode == 0
    for opt in ("max_write", "attr_timeout", "log_format", "port"):
        assert opt in r.stdout
    r, _ = run(["--version"])
    assert r.returncode == 0 and "efsfuse" in r.stdout


@pytest.mark.parametrize("args,words", [
    (["nohostnopath", "/tmp"], ["source"]),
    (["127.0.0.1:relative", "/tmp"], ["source"]),
    (["nfs://:12/x", "/tmp"], ["source"]),
    (["127.0.0.1:/", "/tmp", "-o", "bogus_option=1"], ["bogus_option"]),
    (["127.0.0.1:/", "/tmp", "-o", "max_write=12x"], ["max_write"]),
    (["127.0.0.1:/"], ["mountpoint"]),
    (["127.0.0.1:/", "/nonexistent/mountpoint"], ["/nonexistent/mountpoint"]),
])
def test_usage_errors(args, words):
    r, took = run(args)
    one_line_error(r, *words)
    assert r.returncode == 2
    assert took < 5


def test_unreachable_server(tmp_path):
    port = free_port()  # nothing listens there
    r, took = run([f"127.0.0.1:/", str(tmp_path), "-f", "-o", f"port={port},connect_timeout=2"])
    one_line_error(r, "127.0.0.1", "refused", "attempts", retry_notice=True)
    assert r.returncode == 1
    assert 1.0 < took < 5  # it kept trying for about connect_timeout, then gave up
    assert not is_mounted(tmp_path)


def test_server_that_appears_during_start_up(tmp_path):
    """A sidecar may start before its mount target: efsfuse waits for it."""
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


def test_missing_export_path(nfs_server, tmp_path):
    r, took = run(["127.0.0.1:/no/such/claim", str(tmp_path), "-f", "-o", f"port={nfs_server.port}"])
    one_line_error(r, "/no/such/claim", "does not exist")
    assert r.returncode == 1 and took < 5
    assert not is_mounted(tmp_path)


def fake_server(behaviour):
    """A TCP server that is not an NFSv4 server; returns (port, stop)."""
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
            if behaviour == "garbage":
                c.recv(65536)
                c.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n" * 10)
            elif behaviour == "close":
                c.close()
            # "silent": accept and never answer

    t = threading.Thread(target=loop, daemon=True)
    t.start()

    def shutdown():
        stop.set()
        t.join()
        for c in conns:
            c.close()
        srv.close()

    return srv.getsockname()[1], shutdown


@pytest.mark.parametrize("behaviour,words", [
    ("garbage", ["not"]),
    ("close", ["127.0.0.1"]),
    ("silent", ["no answer"]),
])
def test_server_that_does_not_speak_nfsv4(tmp_path, behaviour, words):
    port, shutdown = fake_server(behaviour)
    try:
        r, took = run(["127.0.0.1:/", str(tmp_path), "-f", "-o",
                       f"port={port},connect_timeout=2"])
    finally:
        shutdown()
    one_line_error(r, *words, retry_notice=True)
    assert r.returncode == 1
    assert took < 8
    assert not is_mounted(tmp_path)


def test_sigterm_unmounts_and_exits_zero(nfs_server, tmp_path):
    mnt = tmp_path / "m"
    mnt.mkdir()
    m = Mount(nfs_server, mnt, "/", [], tmp_path / "log")
    try:
        (mnt / "sigterm-file").write_text("written before SIGTERM")
        m.proc.send_signal(signal.SIGTERM)
        assert m.proc.wait(timeout=30) == 0, m.stderr()
        assert not is_mounted(mnt)
        assert (nfs_server.export / "sigterm-file").read_text() == "written before SIGTERM"
    finally:
        m.cleanup()


def test_daemonizes_after_mount_is_live(nfs_server, tmp_path):
    mnt = tmp_path / "d"
    mnt.mkdir()
    r, took = run(["127.0.0.1:/", str(mnt), "-o", f"port={nfs_server.port}"])
    try:
        assert r.returncode == 0, r.stderr
        assert is_mounted(mnt)  # live by the time the command returned
        (mnt / "daemon-file").write_text("ok")
        assert (nfs_server.export / "daemon-file").read_text() == "ok"
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], timeout=30)
    assert not is_mounted(mnt)


def test_json_logs(nfs_server, tmp_path):
    import json
    mnt = tmp_path / "j"
    mnt.mkdir()
    m = Mount(nfs_server, mnt, "/", ["log_format=json"], tmp_path / "log")
    m.unmount()
    lines = [l for l in m.stderr().splitlines() if l.strip()]
    assert lines
    for l in lines:
        rec = json.loads(l)
        assert {"time", "level", "component", "msg"} <= set(rec)


def test_mount_helpers(nfs_server, tmp_path):
    """What mount(8) runs for `mount -t fuse.efsfuse` and fstab lines: Debian's
    mount.fuse3, and our own mount.efsfuse helper, with fstab-only options."""
    import shutil
    from pathlib import Path
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

    helper = Path(__file__).resolve().parents[2] / "scripts" / "mount.efsfuse"
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


def test_make_install_layout(tmp_path):
    from pathlib import Path
    repo = Path(__file__).resolve().parents[2]
    r = subprocess.run(["make", "-s", "-C", str(repo), "install", f"DESTDIR={tmp_path}",
                        "PREFIX=/usr"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for f in ("usr/bin/efsfuse", "sbin/mount.efsfuse", "sbin/mount.fuse.efsfuse",
              "usr/share/man/man1/efsfuse.1"):
        assert (tmp_path / f).is_file(), f
    assert os.access(tmp_path / "usr/bin/efsfuse", os.X_OK)
    r = subprocess.run(["man", "-l", "-P", "cat", str(tmp_path / "usr/share/man/man1/efsfuse.1")],
                       capture_output=True, text=True, env=dict(os.environ, MANWIDTH="80"))
    assert r.returncode == 0 and "max_write" in r.stdout
