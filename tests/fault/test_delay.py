"""A busy server: NFS4ERR_DELAY answers are waited out, invisibly to the
application.

The RPC proxy answers the next few COMPOUNDs with a given tag itself, with
the compound's second operation (the one after PUTFH) failed with
NFS4ERR_DELAY, as a server that cannot serve the request yet does. A request
without a seqid has changed nothing on the server, so efsfuse sends it again
after a backoff. An OPEN carries its open-owner's seqid, which a DELAY uses
up: it is sent again with the next one. The proxy can stand in for the
server there only for an open-owner the server has never seen (a new
owner's first OPEN is taken with any seqid), which is what a fresh mount's
first open is.
"""
import mmap
import os
import time

import pytest

from faultlib import log_events
from rpcproxy import OP_PUTFH, TIMEOUT, ReplyDropper, compound_reply, op_after_putfh

NFS4ERR_DELAY = 10008
# How many DELAY answers each request gets before the server takes it.
DELAYS = 3


class BusyServer(ReplyDropper):
    """arm_delay(tag, n): the next n calls tagged tag are answered DELAY."""

    def __init__(self, upstream_port):
        super().__init__(upstream_port)
        self.delay_tag = None
        self.delays_left = 0
        self.delayed_at = []  # monotonic times of the DELAY answers

    def arm_delay(self, tag, count):
        with self.lock:
            self.delay_tag, self.delays_left, self.delayed_at = tag, count, []

    def answered(self):
        with self.lock:
            return list(self.delayed_at)

    def answer_locally(self, call, xid, tag):
        with self.lock:
            if tag != self.delay_tag or self.delays_left == 0:
                return None
            op, _ = op_after_putfh(call)
            if op is None:
                return None
            self.delays_left -= 1
            self.delayed_at.append(time.monotonic())
        return compound_reply(xid, tag, NFS4ERR_DELAY, [(OP_PUTFH, 0), (op, NFS4ERR_DELAY)])


@pytest.fixture
def busy(nfs_server):
    with BusyServer(nfs_server.port) as p:
        yield p


def delayed(busy, tag, action):
    """Runs action with the next DELAYS calls tagged tag answered DELAY; the
    action must succeed after exactly that many, waited out with a backoff."""
    busy.arm_delay(tag, DELAYS)
    started = time.monotonic()
    result = action()
    took = time.monotonic() - started
    at = busy.answered()
    assert len(at) == DELAYS, f"{tag}: {len(at)} DELAY answers"
    # each DELAY was waited out (50 ms, then 100 ms) before the next copy came
    gaps = [b - a for a, b in zip(at, at[1:])]
    assert all(g > 0.03 for g in gaps), (tag, gaps)
    assert took < TIMEOUT, (tag, took)
    return result


@pytest.mark.needs_efsfuse
def test_delay_answers_are_waited_out(efsfuse_bin, nfs_server, mount_efsfuse, busy):
    m = mount_efsfuse("/", opts=["log_level=debug", "attr_timeout=0", "entry_timeout=0"],
                      port=busy.port)
    d = m.path / f"delay-{time.monotonic_ns()}"
    d.mkdir()
    data = os.urandom(300_000)
    fd = os.open(d / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        delayed(busy, "write", lambda: (os.write(fd, data), os.fsync(fd)))
        delayed(busy, "commit", lambda: (os.pwrite(fd, b"x", 0), os.fsync(fd)))
    finally:
        os.close(fd)
    data = b"x" + data[1:]
    delayed(busy, "lookup", lambda: os.stat(d / "f"))
    delayed(busy, "getattr", lambda: os.stat(d / "f"))
    delayed(busy, "setattr", lambda: os.chmod(d / "f", 0o600))
    delayed(busy, "create", lambda: os.mkdir(d / "sub"))
    delayed(busy, "rename", lambda: os.rename(d / "sub", d / "moved"))
    delayed(busy, "link", lambda: os.link(d / "f", d / "hard"))
    delayed(busy, "remove", lambda: os.unlink(d / "hard"))
    names = delayed(busy, "readdir", lambda: sorted(os.listdir(d)))
    assert names == ["f", "moved"]
    # a read the page cache cannot answer
    fd = os.open(d / "f", os.O_RDONLY | os.O_DIRECT)
    try:
        buf = mmap.mmap(-1, 1 << 20)
        n = delayed(busy, "read", lambda: os.preadv(fd, [buf], 0))
        assert buf[:n] == data
    finally:
        os.close(fd)

    m.unmount()
    exported = nfs_server.export / d.name
    assert sorted(os.listdir(exported)) == ["f", "moved"]
    assert (exported / "f").read_bytes() == data
    assert (exported / "f").stat().st_mode & 0o777 == 0o600
    resends = log_events(m.stderr(), r"server answered DELAY; resending in")
    assert len(resends) >= 11 * DELAYS, len(resends)


@pytest.mark.needs_efsfuse
def test_open_answered_delay_is_sent_again(efsfuse_bin, nfs_server, mount_efsfuse, busy):
    """A fresh mount's first open (a new open-owner) answered DELAY three
    times: the open waits and succeeds, the seqid moved on each time (the
    server takes the new owner's OPEN and then keeps it in sequence), and
    later opens and closes on that owner work."""
    m = mount_efsfuse("/", opts=["log_level=debug"], port=busy.port)
    name = f"delay-open-{time.monotonic_ns()}"
    fd = delayed(busy, "open", lambda: os.open(m.path / name, os.O_CREAT | os.O_EXCL | os.O_RDWR,
                                              0o640))
    os.write(fd, b"first")
    os.close(fd)
    for i in range(3):
        with open(m.path / name, "r+b") as f:
            f.seek(0, 2)
            f.write(b"-%d" % i)
    assert (m.path / name).read_bytes() == b"first-0-1-2"
    m.unmount()
    assert (nfs_server.export / name).read_bytes() == b"first-0-1-2"
    assert (nfs_server.export / name).stat().st_mode & 0o777 == 0o640
    assert len(log_events(m.stderr(), r"server answered DELAY to a seqid request")) == DELAYS
