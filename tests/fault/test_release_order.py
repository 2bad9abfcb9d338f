"""A file closed just before it is unlinked: the CLOSE goes first.

The kernel answers close() without waiting for FUSE's release, so the
release's CLOSE may still be on its way when the application's unlink (or
a rename over the file) arrives. The server frees an unlinked file only
when its last open state goes; a REMOVE that overtook the CLOSE would leave
the space taken after unlink() returned (tests/integration/test_errors.py
shows the ENOSPC that follows on a full export). A proxy holds every CLOSE
back for a while and records the order in which calls and replies pass:
the REMOVE and RENAME must leave only after the CLOSE's answer came back.
"""
import os
import time

import pytest

from rpcproxy import ReplyDropper

HOLD = 0.3


class CloseDelayer(ReplyDropper):
    def call_delay(self, tag):
        return HOLD if tag == "close" else 0


@pytest.fixture
def delayer(nfs_server):
    with CloseDelayer(nfs_server.port) as p:
        yield p


def after_close_reply(proxy, tag):
    """True if the last call tagged tag passed after the last CLOSE reply."""
    with proxy.lock:
        events = list(proxy.events)
    call = max(i for i, e in enumerate(events) if e == ("call", tag))
    replies = [i for i, e in enumerate(events) if e == ("reply", "close")]
    return bool(replies) and replies[-1] < call


def closes_answered(proxy, timeout=10):
    """Waits until every CLOSE sent so far has its answer back."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with proxy.lock:
            if proxy.events.count(("reply", "close")) == proxy.calls["close"]:
                return True
        time.sleep(0.02)
    return False


@pytest.mark.needs_efsfuse
def test_remove_and_rename_wait_for_the_close_of_a_released_file(efsfuse_bin, nfs_server,
                                                                mount_efsfuse, delayer):
    m = mount_efsfuse("/", port=delayer.port)
    d = m.path / f"order-{time.monotonic_ns()}"
    d.mkdir()

    (d / "gone").write_bytes(b"x" * 65536)
    t = time.monotonic()
    os.unlink(d / "gone")
    waited = time.monotonic() - t
    assert after_close_reply(delayer, "remove"), delayer.events[-6:]
    assert not (nfs_server.export / d.name / "gone").exists()

    # The moved file's CLOSE is not waited for: let it pass first, so that
    # the one pending when rename() comes is the replaced file's.
    (d / "new").write_bytes(b"new")
    assert closes_answered(delayer), delayer.events[-6:]
    (d / "replaced").write_bytes(b"old")
    os.rename(d / "new", d / "replaced")
    assert after_close_reply(delayer, "rename"), delayer.events[-6:]
    assert (d / "replaced").read_bytes() == b"new"

    # A file still open is removed at once: its CLOSE comes when it is closed.
    f = open(d / "open", "wb")
    f.write(b"y")
    f.flush()
    with delayer.lock:
        closes = delayer.calls["close"]
    os.unlink(d / "open")
    with delayer.lock:
        assert delayer.calls["close"] == closes
    assert not (nfs_server.export / d.name / "open").exists()
    f.close()
    # the first unlink really waited for the held CLOSE (not only ordered by luck)
    assert waited >= HOLD / 2, waited
    m.unmount()
