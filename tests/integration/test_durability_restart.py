"""The real case of a server that loses unstable writes: the descriptor that
wrote them stays open across the restart, and its fsync and close must
succeed with the data on the server.

It needs open states that survive a server restart (nfsclient state
recovery, branch "reclaim"): without it the open made before the crash is
dead on the new server, the re-send through it fails, and fsync reports EIO
(an error, not a silent loss, but not durability either).
See test_durability.py for the simulation of the loss; the fixtures are in conftest.py.
"""
import hashlib
import os

from conftest import sha256
from test_durability import MIB, ROOMY, lose_unstable_data


def test_fsync_after_restart_resends_through_same_descriptor(own_server, mount, restarter):
    m = mount(ROOMY)
    data = os.urandom(16 * MIB + 999)
    fd = os.open(m.path / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, data)
    os.pwrite(fd, b"y" * 5000, MIB - 10)  # an overwrite the re-send must keep in order
    data = data[:MIB - 10] + b"y" * 5000 + data[MIB - 10 + 5000:]

    lose_unstable_data(own_server, restarter, "f", len(data))

    os.fsync(fd)
    assert sha256(own_server.export / "f") == hashlib.sha256(data).hexdigest()
    os.pwrite(fd, b"more", len(data))
    os.close(fd)
    m.unmount()
    assert (own_server.export / "f").read_bytes() == data + b"more"


def test_close_after_restart_resends(own_server, mount, restarter):
    m = mount(ROOMY)
    data = os.urandom(8 * MIB)
    fd = os.open(m.path / "g", os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, data)
    lose_unstable_data(own_server, restarter, "g", len(data))
    os.close(fd)  # flush: COMMIT, new verifier, re-send, COMMIT
    assert (own_server.export / "g").read_bytes() == data
    m.unmount()
