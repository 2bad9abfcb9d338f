"""State recovery across a server restart (kill -9 of ganesha, restarted on the same port
and export): open files keep working, locks are reclaimed in the server's grace period,
and locks that cannot be reclaimed are reported to their holder, never silently dropped."""
import errno
import fcntl
import mmap
import os
import threading
import time

import pytest

from conftest import make_server, try_lock, wait_for

# Grace period (and lease) of the servers that offer one. Long enough for a client to
# reconnect and reclaim on a loaded machine, short enough to wait out in a test.
# (own_server, from conftest, offers none.)
GRACE = 10


@pytest.fixture
def grace_server(tmp_path):
    server = make_server(tmp_path, GRACE)
    yield server
    server.stop()


@pytest.mark.parametrize("grace", [None, GRACE], ids=["graceless", "grace"])
def test_open_file_survives_restart(tmp_path, mounts, grace):
    server = make_server(tmp_path, grace)
    try:
        (m,) = mounts(server)
        data = os.urandom(1 << 20)
        fd = os.open(m.path / "f", os.O_CREAT | os.O_RDWR, 0o644)
        os.write(fd, data)
        os.fsync(fd)

        server.crash_and_restart()

        # the same descriptor: no EIO, the right data
        late = os.urandom(4096)
        os.pwrite(fd, late, 4096)
        os.fsync(fd)
        expect = data[:4096] + late + data[8192:]
        assert os.pread(fd, len(expect) + 1, 0) == expect
        os.close(fd)
        assert (server.export / "f").read_bytes() == expect
        m.unmount()
        how = "1 opens reclaimed, 0 reopened" if grace else "0 opens reclaimed, 1 reopened"
        assert f"state recovered: {how}" in m.stderr()
    finally:
        server.stop()


def test_lock_reclaimed_in_grace(grace_server, mounts):
    """Fault test 2: a POSIX lock held across the restart stays held; another client
    cannot take it, during the grace period or after; released, it is free again."""
    m1, m2 = mounts(grace_server, 2)
    fd1 = os.open(m1.path / "locked", os.O_CREAT | os.O_RDWR, 0o644)
    os.write(fd1, b"a" * 1000)
    os.fsync(fd1)
    assert try_lock(fd1) == 0
    fd2 = os.open(m2.path / "locked", os.O_RDWR)
    assert try_lock(fd2) in (errno.EAGAIN, errno.EACCES)

    grace_server.crash_and_restart()
    # the holder keeps using its file (which also makes its client notice at once)
    os.pwrite(fd1, b"b", 0)

    # asked during the grace period: the answer waits for its end, and is "taken"
    asked = time.monotonic()
    assert try_lock(fd2) in (errno.EAGAIN, errno.EACCES)
    assert time.monotonic() - asked < GRACE + 20
    # and after it
    assert try_lock(fd2) in (errno.EAGAIN, errno.EACCES)

    # the holder's descriptor works, its lock is still its own
    os.fsync(fd1)
    assert os.pread(fd1, 3, 0) == b"baa"
    assert try_lock(fd1) == 0  # re-locking one's own range succeeds
    assert "1 opens reclaimed, 0 reopened; 1 locks reclaimed" in m1.stderr()

    fcntl.lockf(fd1, fcntl.LOCK_UN, 100, 0)
    assert try_lock(fd2) == 0
    fcntl.lockf(fd2, fcntl.LOCK_UN, 100, 0)
    os.close(fd2)
    os.close(fd1)
    assert (grace_server.export / "locked").read_bytes() == b"b" + b"a" * 999


def test_lock_lost_without_grace(own_server, mounts):
    """Without a grace period the lock cannot be reclaimed: its holder gets EIO on its
    next operations on that descriptor (as with the Linux client) and a warning is
    logged; once it closes, the file works again."""
    (m,) = mounts(own_server)
    fd = os.open(m.path / "locked", os.O_CREAT | os.O_RDWR, 0o644)
    os.write(fd, b"a" * 1000)
    os.fsync(fd)
    assert try_lock(fd) == 0

    own_server.crash_and_restart()

    def write_and_sync(offset):
        errors = []
        for call in (lambda: os.pwrite(fd, b"b", offset), lambda: os.fsync(fd)):
            try:
                call()
            except OSError as e:
                errors.append(e.errno)
        return errors

    try:
        errors = write_and_sync(0)
        assert errors and set(errors) == {errno.EIO}
        assert try_lock(fd) == errno.EIO
        # not just once: until the descriptor is closed
        errors = write_and_sync(1)
        assert errors and set(errors) == {errno.EIO}
    finally:
        try:
            os.close(fd)  # (may report the lost write again)
        except OSError as e:
            assert e.errno == errno.EIO
    log = m.stderr()
    assert "locks of owner" in log and "lost" in log
    assert "1 lost" in log

    # a new open is a new start
    fd = os.open(m.path / "locked", os.O_RDWR)
    assert try_lock(fd) == 0
    os.pwrite(fd, b"c", 0)
    os.fsync(fd)
    os.close(fd)
    assert (own_server.export / "locked").read_bytes() == b"c" + b"a" * 999


def test_reads_in_flight_are_resent(own_server, mounts):
    """A reader busy on a file while the server is killed and restarted sees no error and
    the right data: its requests wait for the server and go again with the new state."""
    (m,) = mounts(own_server)
    size = 8 << 20
    data = os.urandom(size)
    (m.path / "big").write_bytes(data)
    chunk = 1 << 20
    stop = threading.Event()
    errors = []
    reads_at = []

    def reader():
        # O_DIRECT so that every read goes to the server, not the page cache
        buf = mmap.mmap(-1, chunk)
        fd = os.open(m.path / "big", os.O_RDONLY | os.O_DIRECT)
        try:
            while not stop.is_set():
                for off in range(0, size, chunk):
                    n = os.preadv(fd, [buf], off)
                    if n != chunk or buf[:n] != data[off:off + n]:
                        errors.append(f"wrong data at {off} ({n} bytes)")
                        return
                    reads_at.append(time.monotonic())
        except OSError as e:
            errors.append(e)
        finally:
            os.close(fd)

    t = threading.Thread(target=reader)
    t.start()
    try:
        assert wait_for(lambda: len(reads_at) > 8, 20)
        own_server.crash_and_restart()
        restarted = time.monotonic()
        assert wait_for(lambda: sum(1 for r in reads_at if r > restarted) > 8 or errors, 60)
    finally:
        stop.set()
        t.join(60)
    assert not t.is_alive()
    assert not errors
    assert "state recovered: 0 opens reclaimed, 1 reopened" in m.stderr()


@pytest.mark.parametrize("grace", [None, GRACE], ids=["graceless", "grace"])
def test_small_files_read_without_state_across_restart(tmp_path, mounts, grace):
    """Small read-only opens hold no server state (fuse/file.c): a descriptor
    open across the restart keeps reading its copy, new opens read without
    state whether or not the server is in its grace period, and a lock
    taken through the old descriptor afterwards gets the open state it needs."""
    server = make_server(tmp_path, grace)
    try:
        for i in range(3):
            (server.export / f"s{i}").write_bytes(bytes([65 + i]) * 3000)
        (m,) = mounts(server)
        fd = os.open(m.path / "s0", os.O_RDONLY)
        assert os.read(fd, 8192) == b"A" * 3000

        server.crash_and_restart()

        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        assert os.pread(fd, 8192, 0) == b"A" * 3000
        assert (m.path / "s1").read_bytes() == b"B" * 3000
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, 100, 0)
        os.close(fd)
        assert (m.path / "s2").read_bytes() == b"C" * 3000
        m.unmount()
        log = m.stderr()
        # the small file held no open state to recover
        assert "state recovered: 0 opens reclaimed, 0 reopened" in log
        assert " error " not in log
    finally:
        server.stop()
