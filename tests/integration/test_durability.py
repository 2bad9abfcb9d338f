"""Written data survives a server that loses its unstable writes.

efsfuse writes UNSTABLE and keeps every write until a COMMIT answered with
the write verifier its WRITE got. A server restart changes the verifier;
efsfuse then sends the retained writes again before fsync/close report
success.

kill -9 of ganesha (VFS backend) does not really lose unstable data: it sits
in the host's page cache. What a power loss would do is simulated while the
server is down by truncating the file in the export to the size it had
before the unstable writes (empty). Only a client that re-sends restores
the content; one that trusts the data "written" gets an empty file.

Until open states survive a restart (nfsclient state recovery), the file
open across the crash is dead on the new server; these tests make the
re-send go through a descriptor opened after the restart, which is what
efsfuse picks for re-sends and COMMITs (the newest open for writing). It is
opened O_RDWR: an open asking for no more access than the old state has
would share that (dead) state.
tests/integration/test_durability_restart.py has the single-descriptor case.
"""
import hashlib
import os
import signal
import subprocess
import time

import pytest

from conftest import sha256

MIB = 1 << 20
TIMEOUT = 240  # seconds a test may keep its mount (a hung fsync fails, not hangs)


# Room for every write of these tests: no COMMIT before the crash, so that
# all of the file is unstable and cutting it to nothing is what a server
# could lose.
ROOMY = ("max_uncommitted_mb=256",)


def lose_unstable_data(server, restarter, name, expect_size, size=0):
    """Once the server has every write (the file reached expect_size), kill -9
    it, cut the file back to `size` bytes (what was stable) and start it again
    on the same port. A WRITE still unanswered at the kill would be retried
    with an open state the new server does not know (until state recovery)."""
    path = server.export / name
    deadline = time.monotonic() + 30
    while path.stat().st_size != expect_size:
        assert time.monotonic() < deadline, f"{path.stat().st_size} != {expect_size}"
        time.sleep(0.05)
    time.sleep(0.3)  # the last replies on their way back
    server.crash()
    os.truncate(server.export / name, size)
    # ganesha's write verifier is its start time in whole seconds: a server
    # started again within the second it first started in would answer the
    # same verifier, and nobody could tell it had lost anything.
    time.sleep(1.1)
    restarter.start()


def test_restart_resends_unstable_writes(own_server, mount, restarter):
    m = mount(ROOMY)
    data = os.urandom(24 * MIB + 12345)
    a = os.open(m.path / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    # unaligned pieces, and an overwrite: re-sends must keep the order
    os.write(a, data[:5 * MIB + 7])
    os.pwrite(a, b"x" * MIB, 3 * MIB)
    os.pwrite(a, data[3 * MIB:4 * MIB], 3 * MIB)
    os.write(a, data[5 * MIB + 7:])

    lose_unstable_data(own_server, restarter, "f", len(data))
    assert (own_server.export / "f").stat().st_size == 0

    b = os.open(m.path / "f", os.O_RDWR)
    os.fsync(b)  # commits the inode: COMMIT gets a new verifier, writes go again
    assert sha256(own_server.export / "f") == hashlib.sha256(data).hexdigest()
    os.close(b)
    os.close(a)
    m.unmount()
    assert sha256(own_server.export / "f") == hashlib.sha256(data).hexdigest()
    log = m.stderr()
    assert "again" in log, log


def test_truncate_is_not_undone_by_resend(own_server, mount, restarter):
    """Retained writes past a truncate are clipped: a re-send must not bring
    back the bytes the truncate removed."""
    m = mount(ROOMY)
    data = os.urandom(6 * MIB)
    a = os.open(m.path / "t", os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(a, data)
    os.ftruncate(a, MIB + 100)  # through the open file: SETATTR size

    lose_unstable_data(own_server, restarter, "t", MIB + 100)

    b = os.open(m.path / "t", os.O_RDWR)
    os.fsync(b)
    os.close(b)
    os.close(a)
    m.unmount()
    assert (own_server.export / "t").read_bytes() == data[:MIB + 100]


def test_exit_resends_before_leaving(own_server, mount, restarter):
    """SIGTERM with files still open: the exit drain re-sends and commits."""
    m = mount(ROOMY)
    data = os.urandom(8 * MIB)
    a = os.open(m.path / "e", os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(a, data)
    lose_unstable_data(own_server, restarter, "e", len(data))
    b = os.open(m.path / "e", os.O_RDWR)
    os.pwrite(b, b"tail", len(data))
    m.proc.send_signal(signal.SIGTERM)
    assert m.proc.wait(timeout=120) == 0, m.stderr()
    for fd in (a, b):
        try:
            os.close(fd)
        except OSError:
            pass  # the mount is gone
    m.cleanup()
    assert (own_server.export / "e").read_bytes() == data + b"tail"
    assert " error " not in m.stderr(), m.stderr()


def vm_hwm_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


# Peak RSS of efsfuse streaming 512 MiB with no fsync. It retains at most
# max_uncommitted_mb (32 MiB by default), in flight included, plus
# nfsclient's encoded copies of the WRITEs in flight (32 MiB at most) and a
# few MiB of its own: under 96 MiB (the benchmark's peak RSS target), and far
# from the 512 MiB that retaining everything would take. With
# max_uncommitted_mb=8 the write-behind is held to 8 MiB as well.
RSS_BOUND_MIB = 96


# AddressSanitizer's own memory, on top, with its quarantine of freed blocks
# off (else it keeps the last 256 MiB freed): shadow and runtime.
ASAN_EXTRA_MIB = 64


def sanitized(pid):
    return "libasan" in open(f"/proc/{pid}/maps").read()


@pytest.mark.parametrize("opts,bound", [((), RSS_BOUND_MIB),
                                        (("max_uncommitted_mb=8",), 48)])
def test_memory_bounded_without_fsync(own_server, mount, monkeypatch, opts, bound):
    asan = os.environ.get("ASAN_OPTIONS", "")
    monkeypatch.setenv("ASAN_OPTIONS", asan + (":" if asan else "") + "quarantine_size_mb=0")
    m = mount(opts)
    if sanitized(m.proc.pid):
        bound += ASAN_EXTRA_MIB
    r = subprocess.run(["dd", "if=/dev/zero", f"of={m.path}/big", "bs=1M", "count=512",
                        "status=none"], capture_output=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    peak = vm_hwm_kib(m.proc.pid) / 1024
    assert peak < bound, f"efsfuse peak RSS {peak:.0f} MiB"
    assert (own_server.export / "big").stat().st_size == 512 * MIB
    m.unmount()
    print(f"peak RSS {peak:.1f} MiB with {opts or 'defaults'}")
