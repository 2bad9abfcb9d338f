"""Two efsfuse mounts of one export, like two pods sharing a claim.

Close-to-open consistency (a file closed on one side is seen whole by an open
on the other), changes to names seen from the other side within the default
1 s timeouts, and locks that conflict across the two mounts. Each mount is its
own NFSv4 client, so conflicts between them are decided by the server.
"""
import errno
import fcntl
import os
import struct
import subprocess
import sys
import time

import pytest

from conftest import wait_for

# The default attr/entry/negative timeouts are 1 s; allow for a loaded machine.
VISIBLE_WITHIN = 2.5


@pytest.fixture
def two_mounts(mount_efsfuse, request):
    """(a, b): the same fresh directory through two independent mounts."""
    a = mount_efsfuse("/")
    b = mount_efsfuse("/")
    name = "two-" + request.node.name
    (a.path / name).mkdir()
    assert wait_for(lambda: (b.path / name).is_dir(), VISIBLE_WITHIN)
    return a.path / name, b.path / name


def seconds_until(predicate, timeout=5.0):
    t0 = time.monotonic()
    assert wait_for(predicate, timeout, interval=0.02), "never happened"
    return time.monotonic() - t0


# Needs: READDIR always from the server; entry/negative timeouts of 1 s.
def test_new_file_appears_in_other_mount(two_mounts):
    a, b = two_mounts
    assert os.listdir(b) == []
    assert not (b / "new").exists()  # b now caches "no such file" for up to 1 s
    (a / "new").write_text("hi")
    assert seconds_until(lambda: "new" in os.listdir(b)) < VISIBLE_WITHIN
    assert seconds_until(lambda: (b / "new").exists()) < VISIBLE_WITHIN
    assert (b / "new").read_text() == "hi"


# Needs: open() revalidates (GETATTR change attribute) and drops stale cached pages.
def test_new_content_after_close_and_open(two_mounts):
    a, b = two_mounts
    (a / "f").write_bytes(b"version-1")
    assert (b / "f").read_bytes() == b"version-1"  # b has it in its page cache now
    (a / "f").write_bytes(b"version-2")  # same size and (maybe) same mtime second
    assert (b / "f").read_bytes() == b"version-2"
    with open(a / "f", "r+b") as f:  # a partial overwrite
        f.seek(8)
        f.write(b"3")
    assert (b / "f").read_bytes() == b"version-3"
    (a / "f").write_bytes(b"much longer version 4\n" * 1000)  # grows
    assert (b / "f").read_bytes() == b"much longer version 4\n" * 1000
    (a / "f").write_bytes(b"5")  # shrinks
    assert (b / "f").read_bytes() == b"5"
    # and the other way round
    (b / "f").write_bytes(b"from b")
    assert (a / "f").read_bytes() == b"from b"


# Needs: a file kept open on one side sees the other side's data after reopening.
def test_reader_reopening_sees_writer_data(two_mounts):
    a, b = two_mounts
    (a / "log").write_bytes(b"")
    reader = open(b / "log", "rb")  # b keeps the file open all along
    try:
        for i in range(5):
            with open(a / "log", "ab") as w:
                w.write(b"line %d\n" % i)
            with open(b / "log", "rb") as r:
                assert r.read() == b"".join(b"line %d\n" % j for j in range(i + 1))
    finally:
        reader.close()


# Needs: lookups revalidated after entry_timeout; RENAME by another client.
def test_rename_seen_from_other_side(two_mounts):
    a, b = two_mounts
    (a / "old").write_text("payload")
    assert (b / "old").read_text() == "payload"
    os.rename(a / "old", a / "renamed")
    seconds_until(lambda: not (b / "old").exists() and (b / "renamed").exists())
    assert sorted(os.listdir(b)) == ["renamed"]
    assert (b / "renamed").read_text() == "payload"
    # b writes it under the new name; a sees that
    with open(b / "renamed", "a") as f:
        f.write("+b")
    assert (a / "renamed").read_text() == "payload+b"
    # a directory renamed on b, seen on a
    (b / "dir1").mkdir()
    (b / "dir1" / "inner").write_text("i")
    assert (a / "dir1" / "inner").read_text() == "i"
    os.rename(b / "dir1", b / "dir2")
    seconds_until(lambda: (a / "dir2" / "inner").exists() and not (a / "dir1").exists())
    assert (a / "dir2" / "inner").read_text() == "i"


# Needs: REMOVE by another client; stale file handles handled as ENOENT.
def test_unlink_seen_from_other_side(two_mounts):
    a, b = two_mounts
    (a / "gone").write_text("x")
    assert (b / "gone").exists()
    (a / "gone").unlink()
    seconds_until(lambda: not (b / "gone").exists())
    with pytest.raises(FileNotFoundError):
        (b / "gone").read_text()
    # created again on b with new content: a sees the new file, not the old one
    (b / "gone").write_text("reborn")
    seconds_until(lambda: (a / "gone").exists())
    assert (a / "gone").read_text() == "reborn"


# Needs: attributes (size, mtime) of a file changed elsewhere, after attr_timeout.
def test_attributes_seen_from_other_side(two_mounts):
    a, b = two_mounts
    (a / "attrs").write_bytes(b"12345")
    assert (b / "attrs").stat().st_size == 5
    with open(a / "attrs", "ab") as f:
        f.write(b"6789")
    os.chmod(a / "attrs", 0o600)
    seconds_until(lambda: (b / "attrs").stat().st_size == 9)
    seconds_until(lambda: (b / "attrs").stat().st_mode & 0o777 == 0o600)


# ------------------------------------------------------------------------ locks

HOLDER = r"""
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
kind = sys.argv[2]
if kind == "posix-write":
    fcntl.lockf(fd, fcntl.LOCK_EX, 100, 0)   # F_SETLKW, F_WRLCK, bytes 0..99
elif kind == "posix-read":
    fcntl.lockf(fd, fcntl.LOCK_SH, 100, 0)   # F_SETLKW, F_RDLCK
else:
    fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.readline()
"""


def hold_lock(path, kind):
    """A separate process holding a lock on path until release(); waits until it holds it."""
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), kind],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked", "the holder could not take its lock"
    return p


def release(p):
    p.stdin.write("\n")
    p.stdin.flush()
    assert p.wait(timeout=30) == 0


def getlk(fd, ltype, start, length):
    """fcntl(F_GETLK) for a range: the conflicting lock's type, or F_UNLCK."""
    query = struct.pack("hhqqi4x", ltype, os.SEEK_SET, start, length, 0)
    return struct.unpack("hhqqi4x", fcntl.fcntl(fd, fcntl.F_GETLK, query))[0]


# Needs: LOCK/LOCKT/LOCKU with lock owners per process, conflicts decided by the server.
def test_posix_locks_conflict_across_mounts(two_mounts):
    a, b = two_mounts
    (a / "lock").write_bytes(b"x" * 200)
    holder = hold_lock(a / "lock", "posix-write")
    fd = os.open(b / "lock", os.O_RDWR)
    try:
        # F_SETLK on an overlapping range fails at once
        with pytest.raises(OSError) as e:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 50)
        assert e.value.errno in (errno.EAGAIN, errno.EACCES)
        with pytest.raises(OSError) as e:
            fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, 1, 99)
        assert e.value.errno in (errno.EAGAIN, errno.EACCES)
        # F_GETLK reports the conflicting write lock, and no conflict past it
        assert getlk(fd, fcntl.F_WRLCK, 0, 10) == fcntl.F_WRLCK
        assert getlk(fd, fcntl.F_RDLCK, 50, 10) == fcntl.F_WRLCK
        assert getlk(fd, fcntl.F_WRLCK, 150, 10) == fcntl.F_UNLCK
        # a range outside the holder's is free
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 150)
        fcntl.lockf(fd, fcntl.LOCK_UN, 10, 150)
    finally:
        release(holder)
    try:
        # the holder's exit released its lock
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 50)
        assert getlk(fd, fcntl.F_WRLCK, 0, 100) == fcntl.F_UNLCK  # our own lock never conflicts
    finally:
        os.close(fd)


# Needs: read locks (READ_LT) shared between clients, write locks excluded by them.
def test_read_locks_are_shared_across_mounts(two_mounts):
    a, b = two_mounts
    (a / "shared").write_bytes(b"x" * 100)
    holder = hold_lock(a / "shared", "posix-read")
    fd = os.open(b / "shared", os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, 100, 0)  # a second reader is fine
        fcntl.lockf(fd, fcntl.LOCK_UN, 100, 0)
        with pytest.raises(OSError) as e:  # a writer is not
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 100, 0)
        assert e.value.errno in (errno.EAGAIN, errno.EACCES)
        assert getlk(fd, fcntl.F_WRLCK, 0, 100) == fcntl.F_RDLCK
    finally:
        release(holder)
        os.close(fd)


# Needs: blocking locks (F_SETLKW): efsfuse polls/retries until the server grants it.
def test_blocking_lock_waits_for_release(two_mounts):
    a, b = two_mounts
    (a / "wait").write_text("x")
    holder = hold_lock(a / "wait", "posix-write")
    waiter = subprocess.Popen([sys.executable, "-c", r"""
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX, 100, 0)
print("acquired", flush=True)
""", str(b / "wait")], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        assert waiter.poll() is None, "got a lock another client holds"
        release(holder)
        assert waiter.stdout.readline().strip() == "acquired"
        assert waiter.wait(timeout=30) == 0
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()


# Needs: flock() mapped to whole-file NFSv4 locks.
def test_flock_conflicts_across_mounts(two_mounts):
    a, b = two_mounts
    (a / "fl").write_text("x")
    holder = hold_lock(a / "fl", "flock")
    try:
        r = subprocess.run(["flock", "-n", str(b / "fl"), "true"], timeout=30)
        assert r.returncode == 1, "flock -n got a lock another client holds"
        r = subprocess.run(["flock", "-n", str(a / "fl"), "true"], timeout=30)
        assert r.returncode == 1, "flock -n got a lock another process holds"
    finally:
        release(holder)
    r = subprocess.run(["flock", "-n", str(b / "fl"), "true"], timeout=30)
    assert r.returncode == 0
