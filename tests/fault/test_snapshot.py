"""Small files read without open state (nfsclient/snapshot.c, fuse/file.c).

A file of at most 64 KiB opened read-only (not O_DIRECT) is read whole in
one compound (ACCESS, GETATTR, READ with the anonymous stateid) instead of
OPEN and CLOSE; the open file keeps that content for its lifetime, which
keeps it readable whatever happens on the server, as open state would. A
proxy that counts COMPOUNDs by tag shows what goes to the server; the
export's directory on disk plays another client.
"""
import errno
import fcntl
import os
import struct
import time

import pytest

from rpcproxy import ReplyDropper


@pytest.fixture
def counter(nfs_server):
    with ReplyDropper(nfs_server.port) as p:
        yield p


def sent(proxy, *tags):
    with proxy.lock:
        return {t: proxy.calls[t] for t in tags}


def delta(before, after):
    return {t: after[t] - before[t] for t in before}


def fresh_dir(nfs_server, name):
    d = nfs_server.export / f"{name}-{time.monotonic_ns()}"
    d.mkdir()
    return d


def drop_pages(fd):
    """Makes the kernel ask the filesystem again for the file's data."""
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


@pytest.mark.needs_efsfuse
def test_small_read_only_opens_send_no_open_or_close(efsfuse_bin, nfs_server, mount_efsfuse,
                                                     counter):
    srv = fresh_dir(nfs_server, "snap")
    for i in range(10):
        (srv / f"s{i}").write_bytes(bytes([i]) * (4096 + i))
    (srv / "empty").write_bytes(b"")
    (srv / "big").write_bytes(b"B" * (100 * 1024))
    m = mount_efsfuse("/", port=counter.port)
    d = m.path / srv.name
    names = [f"s{i}" for i in range(10)] + ["empty"]
    for n in names:
        os.stat(d / n)  # looked up first: only the opens are counted below
    os.stat(d / "big")
    before = sent(counter, "open", "close", "snapshot", "read")
    for i, n in enumerate(names):
        want = (srv / n).read_bytes()
        fd = os.open(d / n, os.O_RDONLY)
        try:
            assert os.read(fd, 1 << 20) == want, n
            drop_pages(fd)
            assert os.pread(fd, 1 << 20, 0) == want, n  # from the snapshot again
        finally:
            os.close(fd)
    assert delta(before, sent(counter, "open", "close", "snapshot", "read")) == \
        {"open": 0, "close": 0, "snapshot": len(names), "read": 0}
    # a file past one snapshot READ, and O_DIRECT, are opened with open state
    before = sent(counter, "open", "close")
    assert (d / "big").read_bytes() == b"B" * (100 * 1024)
    fd = os.open(d / "s1", os.O_RDONLY | os.O_DIRECT)
    os.close(fd)
    time.sleep(0.5)  # CLOSE leaves after close() has returned
    assert delta(before, sent(counter, "open", "close")) == {"open": 2, "close": 2}


@pytest.mark.needs_efsfuse
def test_snapshot_outlives_removal_by_another_client(efsfuse_bin, nfs_server, mount_efsfuse,
                                                     counter):
    srv = fresh_dir(nfs_server, "snapgone")
    (srv / "f").write_bytes(b"kept while open" * 100)
    m = mount_efsfuse("/", port=counter.port)
    fd = os.open(m.path / srv.name / "f", os.O_RDONLY)
    try:
        os.unlink(srv / "f")  # another client removes it
        drop_pages(fd)
        reads = sent(counter, "read")
        assert os.pread(fd, 1 << 16, 0) == b"kept while open" * 100
        assert delta(reads, sent(counter, "read")) == {"read": 0}
    finally:
        os.close(fd)


@pytest.mark.needs_efsfuse
def test_own_write_makes_the_snapshot_old(efsfuse_bin, nfs_server, mount_efsfuse, counter):
    srv = fresh_dir(nfs_server, "snapwrite")
    (srv / "f").write_bytes(b"old content")
    m = mount_efsfuse("/", port=counter.port)
    p = m.path / srv.name / "f"
    fd = os.open(p, os.O_RDONLY)
    try:
        assert os.read(fd, 100) == b"old content"
        with open(p, "r+b") as w:
            w.write(b"NEW")
        drop_pages(fd)
        reads = sent(counter, "read")
        assert os.pread(fd, 100, 0) == b"NEW content"
        # the server was asked, without open state (the read is tagged "read")
        assert delta(reads, sent(counter, "read"))["read"] >= 1
    finally:
        os.close(fd)


@pytest.mark.needs_efsfuse
def test_locks_through_a_snapshot_open(efsfuse_bin, nfs_server, mount_efsfuse, counter):
    """A lock needs open state: the file gets it at its first lock request,
    and the lock conflicts across clients and goes at close like any other."""
    srv = fresh_dir(nfs_server, "snaplock")
    (srv / "f").write_bytes(b"x" * 100)
    a = mount_efsfuse("/", port=counter.port)
    b = mount_efsfuse("/")
    fd = os.open(a.path / srv.name / "f", os.O_RDONLY)
    other = os.open(b.path / srv.name / "f", os.O_RDWR)
    try:
        before = sent(counter, "open")
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, 100, 0)
        assert delta(before, sent(counter, "open")) == {"open": 1}
        with pytest.raises(OSError) as e:
            fcntl.lockf(other, fcntl.LOCK_EX | fcntl.LOCK_NB, 100, 0)
        assert e.value.errno in (errno.EAGAIN, errno.EACCES)
        # a second read lock, F_GETLK and unlock on the same open need no new state
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, 10, 0)
        fcntl.lockf(fd, fcntl.LOCK_UN, 10, 0)
        assert delta(before, sent(counter, "open")) == {"open": 1}
        # write locks still need a descriptor open for writing
        with pytest.raises(OSError) as e:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 100, 0)
        assert e.value.errno == errno.EBADF
    finally:
        os.close(fd)
    try:
        # closing the reader released its lock (and its open state)
        fcntl.lockf(other, fcntl.LOCK_EX | fcntl.LOCK_NB, 100, 0)
        fcntl.lockf(other, fcntl.LOCK_UN, 100, 0)
    finally:
        os.close(other)
    time.sleep(0.5)
    with counter.lock:
        assert counter.calls["close"] >= 1


@pytest.mark.needs_efsfuse
def test_getlk_through_a_snapshot_open(efsfuse_bin, nfs_server, mount_efsfuse):
    srv = fresh_dir(nfs_server, "snapgetlk")
    (srv / "f").write_bytes(b"x" * 100)
    a = mount_efsfuse("/")
    b = mount_efsfuse("/")
    holder = os.open(b.path / srv.name / "f", os.O_RDWR)
    fd = os.open(a.path / srv.name / "f", os.O_RDONLY)
    try:
        fcntl.lockf(holder, fcntl.LOCK_EX | fcntl.LOCK_NB, 50, 0)
        query = struct.pack("hhqqi4x", fcntl.F_RDLCK, os.SEEK_SET, 0, 10, 0)
        got = struct.unpack("hhqqi4x", fcntl.fcntl(fd, fcntl.F_GETLK, query))[0]
        assert got == fcntl.F_WRLCK
    finally:
        os.close(fd)
        os.close(holder)


@pytest.mark.needs_efsfuse
def test_snapshot_reader_sees_another_clients_append(efsfuse_bin, nfs_server, mount_efsfuse):
    """tail -f: a descriptor kept open sees what another client adds, once
    the attributes (attr_timeout, 1 s) show the change."""
    srv = fresh_dir(nfs_server, "snapgrow")
    (srv / "log").write_bytes(b"line 1\n")
    m = mount_efsfuse("/")
    other = mount_efsfuse("/")  # the server caches attributes: not behind its back
    fd = os.open(m.path / srv.name / "log", os.O_RDONLY)
    try:
        assert os.read(fd, 4096) == b"line 1\n"
        with open(other.path / srv.name / "log", "ab") as f:
            f.write(b"line 2\n")
        deadline = time.monotonic() + 10
        while os.fstat(fd).st_size != 14:
            assert time.monotonic() < deadline, "the new size never showed"
            time.sleep(0.2)
        assert os.read(fd, 4096) == b"line 2\n"
        assert os.pread(fd, 4096, 0) == b"line 1\nline 2\n"
    finally:
        os.close(fd)
