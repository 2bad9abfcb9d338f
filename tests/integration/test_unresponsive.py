"""A server that stops answering while the connection stays up (SIGSTOP: like a
black-holed mount target): hard mounts wait and carry on, soft mounts fail in
time and work again afterwards."""
import errno
import os
import signal
import threading
import time

import pytest

from conftest import Mount


@pytest.fixture
def own_server(own_server):
    """conftest's, woken up (SIGCONT) before it is stopped."""
    yield own_server
    os.kill(server_pid(own_server), signal.SIGCONT)


def server_pid(server):
    return int((server.dir / "server.pid").read_text())


def stop_server(pid):
    """SIGSTOP, and wait until every thread really is stopped."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        states = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                states.append(f.read().rsplit(")", 1)[1].split()[0])
        if all(s in ("T", "t") for s in states):
            return
        time.sleep(0.01)
    raise AssertionError("server did not stop")


def test_hard_mount_waits_for_the_server(own_server, tmp_path):
    mnt = tmp_path / "m"
    mnt.mkdir()
    m = Mount(own_server, mnt, "/", ["timeo=1"], tmp_path / "log")
    try:
        (mnt / "before").write_bytes(b"x" * 100000)
        pid = server_pid(own_server)
        stop_server(pid)
        threading.Timer(4.0, os.kill, (pid, signal.SIGCONT)).start()
        t0 = time.monotonic()
        data = os.urandom(3 << 20)
        (mnt / "during").write_bytes(data)  # waits, no error
        assert "during" in os.listdir(mnt)
        assert time.monotonic() - t0 >= 3.0  # it really had to wait
        assert (mnt / "during").read_bytes() == data
        m.unmount()
        assert (own_server.export / "during").read_bytes() == data
    finally:
        m.cleanup()


def test_soft_mount_fails_in_time_then_recovers(own_server, tmp_path):
    mnt = tmp_path / "m"
    mnt.mkdir()
    m = Mount(own_server, mnt, "/", ["soft", "timeo=1", "retrans=2"], tmp_path / "log")
    try:
        (mnt / "before").write_text("x")
        pid = server_pid(own_server)
        stop_server(pid)
        try:
            t0 = time.monotonic()
            with pytest.raises(OSError) as e:
                os.stat(mnt / "not-cached-name")
            took = time.monotonic() - t0
            assert e.value.errno in (errno.ETIMEDOUT, errno.EIO)
            assert took < 2 * 1 + 3  # timeo x retrans, plus scheduling slack
        finally:
            os.kill(pid, signal.SIGCONT)
        # back to normal once the server answers again
        deadline = time.monotonic() + 20
        while True:
            try:
                (mnt / "after").write_text("y")
                break
            except OSError:
                assert time.monotonic() < deadline, "mount did not recover"
                time.sleep(0.2)
        assert (own_server.export / "after").read_text() == "y"
        m.unmount()
    finally:
        m.cleanup()
