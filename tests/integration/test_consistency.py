"""Two efsfuse mounts of one export, as two pods: close-to-open, renames, locks."""
import errno
import fcntl
import os
import struct
import subprocess
import sys
import time

import pytest


@pytest.fixture
def two_mounts(mount_efsfuse, request):
    a = mount_efsfuse("/")
    b = mount_efsfuse("/")
    d = "c2o-" + request.node.name
    (a.path / d).mkdir()
    yield a.path / d, b.path / d
    a.unmount()
    b.unmount()


def wait_for(pred, timeout=3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def test_new_file_appears_in_other_mount(two_mounts):
    a, b = two_mounts
    assert os.listdir(b) == []
    (a / "new").write_text("hi")
    t0 = time.monotonic()
    assert wait_for(lambda: "new" in os.listdir(b), timeout=3.0)
    # default timeouts are 1 s: visible within about a second
    assert time.monotonic() - t0 < 2.5
    assert (b / "new").read_text() == "hi"


def test_new_content_after_close_open(two_mounts):
    a, b = two_mounts
    (a / "f").write_bytes(b"version-1")
    assert (b / "f").read_bytes() == b"version-1"  # b caches it now
    (a / "f").write_bytes(b"version-2")  # same size: only the change attribute differs
    assert (b / "f").read_bytes() == b"version-2"
    with open(a / "f", "r+b") as f:
        f.seek(8)
        f.write(b"3")
    assert (b / "f").read_bytes() == b"version-3"


def test_rename_seen_from_other_side(two_mounts):
    a, b = two_mounts
    (a / "old").write_text("payload")
    assert (b / "old").read_text() == "payload"
    os.rename(a / "old", a / "renamed")
    assert wait_for(lambda: not (b / "old").exists() and (b / "renamed").exists())
    assert (b / "renamed").read_text() == "payload"
    # and b can write it under the new name
    with open(b / "renamed", "a") as f:
        f.write("+b")
    assert (a / "renamed").read_text() == "payload+b"


def test_unlink_seen_from_other_side(two_mounts):
    a, b = two_mounts
    (a / "gone").write_text("x")
    assert (b / "gone").exists()
    (a / "gone").unlink()
    assert wait_for(lambda: not (b / "gone").exists())


HOLDER = r"""
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
if sys.argv[2] == "posix":
    fcntl.lockf(fd, fcntl.LOCK_EX, 100, 0)
else:
    fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.readline()
"""


def hold_lock(path, kind):
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), kind],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def release(p):
    p.stdin.write("\n")
    p.stdin.flush()
    assert p.wait(timeout=30) == 0


def test_posix_locks_conflict_across_mounts(two_mounts):
    a, b = two_mounts
    (a / "lock").write_bytes(b"x" * 200)
    holder = hold_lock(a / "lock", "posix")
    try:
        fd = os.open(b / "lock", os.O_RDWR)
        with pytest.raises(OSError) as e:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 50)
        assert e.value.errno in (errno.EAGAIN, errno.EACCES)
        # F_GETLK reports the conflicting write lock
        query = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, 0, 10, 0)
        got = struct.unpack("hhqqi", fcntl.fcntl(fd, fcntl.F_GETLK, query))
        assert got[0] == fcntl.F_WRLCK
        # a range outside the holder's is free
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 150)
        fcntl.lockf(fd, fcntl.LOCK_UN, 10, 150)
    finally:
        release(holder)
    # the holder's exit released its lock
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 50)
    os.close(fd)


def test_blocking_lock_waits_for_release(two_mounts):
    a, b = two_mounts
    (a / "wait").write_text("x")
    holder = hold_lock(a / "wait", "posix")
    waiter = subprocess.Popen([sys.executable, "-c", r"""
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX, 100, 0)
print("acquired", flush=True)
""", str(b / "wait")], stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)
    assert waiter.poll() is None  # still waiting
    release(holder)
    assert waiter.stdout.readline().strip() == "acquired"
    assert waiter.wait(timeout=30) == 0


def test_flock_conflicts_across_mounts(two_mounts):
    a, b = two_mounts
    (a / "fl").write_text("x")
    holder = hold_lock(a / "fl", "flock")
    try:
        r = subprocess.run(["flock", "-n", str(b / "fl"), "true"])
        assert r.returncode == 1
    finally:
        release(holder)
    r = subprocess.run(["flock", "-n", str(b / "fl"), "true"])
    assert r.returncode == 0
