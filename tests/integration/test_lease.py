"""The client's lease on a server that stays up: kept alive by RENEW while the mount is
idle, and, once it has expired anyway (efsfuse stopped for longer than the lease, as a
partition longer than the lease would), recovered like a restart without grace: open
files carry on, locks another client may have taken meanwhile are reported lost to
their holder instead of being silently taken again."""
import errno
import os
import signal
import time

import pytest

from conftest import make_server, try_lock, wait_for

# The server's lease (and its grace period after a start), seconds: short, so that a
# test can outlast it several times.
LEASE = 5


@pytest.fixture
def short_lease_server(tmp_path):
    server = make_server(tmp_path, LEASE)
    yield server
    server.stop()


@pytest.fixture
def two_mounts(short_lease_server, mounts):
    return mounts(short_lease_server, 2)


def locked_file(m, name):
    fd = os.open(m.path / name, os.O_CREAT | os.O_RDWR, 0o644)
    os.write(fd, b"a" * 1000)
    os.fsync(fd)
    assert try_lock(fd) == 0
    return fd


def test_idle_mount_keeps_its_lease(two_mounts):
    """A mount that does nothing for three leases still holds its lock and open file:
    RENEW kept the lease, so the server neither gave the lock to another client nor
    made the holder recover."""
    holder, other = two_mounts
    fd = locked_file(holder, "held")
    fd2 = os.open(other.path / "held", os.O_RDWR)
    try:
        time.sleep(3 * LEASE + 1)
        assert try_lock(fd2) in (errno.EAGAIN, errno.EACCES)

        os.pwrite(fd, b"b", 0)
        os.fsync(fd)
        assert try_lock(fd) == 0
        assert os.pread(fd2, 3, 0) == b"baa"
    finally:
        os.close(fd2)
        os.close(fd)
    assert "state recovered" not in holder.stderr()
    assert "lease renewal failed" not in holder.stderr()


def test_expired_lease_is_recovered(two_mounts, short_lease_server):
    """efsfuse stopped (SIGSTOP) for longer than its lease: the server expires the client
    and gives its lock to another. Resumed, efsfuse treats EXPIRED/STALE_CLIENTID as a
    reason to recover, not as an error: a file open without a lock carries on with no
    error; the descriptor whose lock was lost fails with EIO until it is closed; the
    lock's new holder keeps it."""
    holder, other = two_mounts
    plain = os.open(holder.path / "plain", os.O_CREAT | os.O_RDWR, 0o644)
    os.write(plain, b"x" * 100)
    os.fsync(plain)
    fd = locked_file(holder, "held")
    fd2 = os.open(other.path / "held", os.O_RDWR)
    assert try_lock(fd2) in (errno.EAGAIN, errno.EACCES)

    holder.proc.send_signal(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        # the server gives the lock away only once it has expired the holder's lease
        assert wait_for(lambda: try_lock(fd2) == 0, 6 * LEASE, interval=0.2), "the lease never expired"
        assert time.monotonic() - stopped >= LEASE - 1
    finally:
        holder.proc.send_signal(signal.SIGCONT)

    try:
        # the file without a lock: no error, the data where it belongs
        os.pwrite(plain, b"y", 0)
        os.fsync(plain)
        assert os.pread(plain, 2, 0) == b"yx"

        # the holder's descriptor: its lock is gone, so it fails, and keeps failing
        for _ in range(2):
            errors = []
            for call in (lambda: os.pwrite(fd, b"b", 0), lambda: os.fsync(fd)):
                try:
                    call()
                except OSError as e:
                    errors.append(e.errno)
            assert errors and set(errors) == {errno.EIO}
        assert try_lock(fd) == errno.EIO
    finally:
        os.close(plain)
        try:
            os.close(fd)  # (may report the lost write again)
        except OSError as e:
            assert e.errno == errno.EIO

    # the other client still holds the lock; the holder's failed write never landed
    fd = os.open(holder.path / "held", os.O_RDWR)
    try:
        assert try_lock(fd) in (errno.EAGAIN, errno.EACCES)
    finally:
        os.close(fd)
    os.close(fd2)
    assert (short_lease_server.export / "held").read_bytes() == b"a" * 1000
    assert (short_lease_server.export / "plain").read_bytes() == b"y" + b"x" * 99
    log = holder.stderr()
    assert "state recovered" in log
    assert "1 lost" in log
