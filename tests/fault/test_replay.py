"""The worst moment for a reset, made to happen: the server has executed a
request and the connection dies before its reply reaches efsfuse.

A small proxy that reads ONC RPC records (record marking, the COMPOUND tag
after the call header) swallows the reply to the next COMPOUND with a given
tag and resets both connections instead. efsfuse then sends the request
again on a new connection, to a server that has already done it:
  - REMOVE, RENAME, CREATE (mkdir, symlink), LINK are not idempotent and the
    retransmission fails (NOENT, EXIST); efsfuse must recognise its own work
    and answer success;
  - OPEN, CLOSE, LOCK, LOCKU carry an owner seqid: the server's replay cache
    (per owner, not per connection) must answer the retransmission with the
    original reply, and the owner must stay in sequence.
Every application call must succeed and the tree must be as asked.
"""
import fcntl
import os
import struct
import threading
import time

import pytest

from faultlib import log_events
from rpcproxy import OP_PUTFH, TIMEOUT, ReplyDropper, compound_reply, op_after_putfh, xdr_opaque


@pytest.fixture
def dropper(nfs_server):
    with ReplyDropper(nfs_server.port) as d:
        yield d


@pytest.mark.needs_efsfuse
def test_lost_replies_of_executed_requests(efsfuse_bin, nfs_server, mount_efsfuse, dropper):
    m = mount_efsfuse("/", opts=["log_level=debug"], port=dropper.port)
    d = m.path / f"replay-{time.monotonic_ns()}"
    d.mkdir()

    def lose_reply(tag, action):
        dropper.arm(tag)
        result = action()
        assert dropper.fired.wait(TIMEOUT), f"no {tag} reply was dropped"
        return result

    # CREATE (mkdir, symlink): EXIST on the retransmission
    lose_reply("create", lambda: os.mkdir(d / "dir"))
    assert (d / "dir").is_dir()
    lose_reply("create", lambda: os.symlink("the-target", d / "sym"))
    assert os.readlink(d / "sym") == "the-target"

    # OPEN (create) and CLOSE: seqid replay, by an owner the server has
    # confirmed (a new owner's first OPEN: test_lost_reply_of_first_exclusive_create).
    (d / "warmup").write_bytes(b"")
    def create_file():
        with open(d / "file", "xb") as f:
            f.write(b"first")
    lose_reply("open", create_file)
    assert (d / "file").read_bytes() == b"first"

    def rewrite():
        fd = os.open(d / "file", os.O_WRONLY)
        os.write(fd, b"FIRST")
        dropper.arm("close")
        os.close(fd)
    rewrite()
    assert dropper.fired.wait(TIMEOUT), "no close reply was dropped"
    assert (d / "file").read_bytes() == b"FIRST"

    # LINK: EXIST
    lose_reply("link", lambda: os.link(d / "file", d / "hard"))
    assert os.stat(d / "hard").st_ino == os.stat(d / "file").st_ino

    # RENAME: NOENT for the old name, the new one exists
    lose_reply("rename", lambda: os.rename(d / "hard", d / "moved"))
    (d / "other").write_bytes(b"other")
    lose_reply("rename", lambda: os.rename(d / "other", d / "moved"))  # over an existing file
    assert (d / "moved").read_bytes() == b"other"

    # REMOVE: NOENT
    lose_reply("remove", lambda: os.unlink(d / "moved"))
    lose_reply("remove", lambda: os.rmdir(d / "dir"))
    assert sorted(os.listdir(d)) == ["file", "sym", "warmup"]

    # LOCK and LOCKU: lock-owner seqid replay
    with open(d / "file", "r+b") as f:
        lose_reply("lock", lambda: fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 2, 0))
        lose_reply("locku", lambda: fcntl.lockf(f, fcntl.LOCK_UN, 2, 0))
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 2, 0)  # still in sequence
        fcntl.lockf(f, fcntl.LOCK_UN, 2, 0)

    # The open-owners kept their sequence: opens and closes still work.
    for i in range(5):
        (d / f"after{i}").write_bytes(b"x" * i)
        assert (d / f"after{i}").read_bytes() == b"x" * i

    log = m.stderr()
    settled = [e for _, e in log_events(log, r"resent after a reconnect (found|had been)")]
    for kind in ("CREATE of 'dir'", "CREATE of 'sym'", "LINK of 'hard'", "RENAME of 'moved'",
                 "REMOVE of 'moved'", "REMOVE of 'dir'"):
        assert any(e.startswith(kind) for e in settled), (kind, settled)
    replays = [e for _, e in log_events(log, r"^(open|close|lock|locku) resent after a reconnect")]
    assert replays and all(e.endswith(": OK") for e in replays), replays
    m.unmount()
    exported = nfs_server.export / d.name
    assert sorted(os.listdir(exported)) == ["after0", "after1", "after2", "after3", "after4",
                                            "file", "sym", "warmup"]
    assert (exported / "file").read_bytes() == b"FIRST"



@pytest.mark.needs_efsfuse
def test_lost_reply_of_first_exclusive_create(efsfuse_bin, nfs_server, mount_efsfuse, dropper):
    """The first OPEN of a new open-owner has no replay on the server (ganesha
    keeps none), so only the create itself can make the resent OPEN succeed:
    an O_EXCL create goes out as EXCLUSIVE4 with its own verifier, and the
    server recognises the file it made with it. The mode and the real times
    are set afterwards (EXCLUSIVE4 keeps the verifier in the times)."""
    d = nfs_server.export / f"excl-{time.monotonic_ns()}"
    d.mkdir()
    m = mount_efsfuse("/", opts=["log_level=debug"], port=dropper.port)
    path = m.path / d.name / "made"

    dropper.arm("open")  # the mount's first OPEN: a fresh client id and owner
    old_umask = os.umask(0)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o640)
    finally:
        os.umask(old_umask)
    try:
        assert dropper.fired.wait(TIMEOUT), "no open reply was dropped"
        os.write(fd, b"mine")
    finally:
        os.close(fd)

    now = time.time()
    st = os.stat(path)
    assert oct(st.st_mode & 0o7777) == oct(0o640)
    assert abs(st.st_mtime - now) < 60, st.st_mtime
    assert abs(st.st_atime - now) < 60, st.st_atime
    assert path.read_bytes() == b"mine"
    # Another exclusive create of the name has another verifier: EEXIST.
    with pytest.raises(FileExistsError):
        os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)

    log = m.stderr()
    replays = [e for _, e in log_events(log, r"^open resent after a reconnect")]
    assert replays == ["open resent after a reconnect: OK"], replays
    m.unmount()
    st = os.stat(d / "made")
    assert oct(st.st_mode & 0o7777) == oct(0o640)
    assert abs(st.st_mtime - now) < 60, st.st_mtime
    assert (d / "made").read_bytes() == b"mine"


class ResendHolder(ReplyDropper):
    """Drops the armed reply, then holds the next call of that tag back for a
    while: time for the test to change the server's file before the resend."""

    HOLD = 0.5

    def __init__(self, upstream_port):
        super().__init__(upstream_port)
        self.held = threading.Event()

    def call_delay(self, tag):
        if self.fired.is_set() and not self.held.is_set() and tag == "open":
            self.held.set()
            return self.HOLD
        return 0


@pytest.fixture
def holder(nfs_server):
    with ResendHolder(nfs_server.port) as h:
        yield h


def exclusive_create_meeting(holder, mount_efsfuse, nfs_server, change):
    """An O_EXCL create whose OPEN ran, lost its reply, and whose resend
    reaches a server where another client's change(path) has happened to the
    file meanwhile (the first OPEN of a new owner: no replay cache answers
    the resend)."""
    d = nfs_server.export / f"excl-{time.monotonic_ns()}"
    d.mkdir()
    m = mount_efsfuse("/", opts=["log_level=debug"], port=holder.port)
    path = m.path / d.name / "made"
    # Another client makes the change, through the server (whose attribute
    # cache would not see a change made beside it in the export).
    other = mount_efsfuse("/")

    def meddle():
        if holder.fired.wait(TIMEOUT) and holder.held.wait(TIMEOUT):
            change(other.path / d.name / "made")

    t = threading.Thread(target=meddle)
    t.start()
    holder.arm("open")
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o640)
    except OSError as e:
        return m, d, path, e
    finally:
        t.join()
    os.write(fd, b"mine")
    os.close(fd)
    return m, d, path, None


@pytest.mark.needs_efsfuse
def test_lost_reply_of_exclusive_create_whose_verifier_the_server_lost(
        efsfuse_bin, nfs_server, mount_efsfuse, holder):
    """A server killed between making the file and storing the verifier in its
    times answers the resent OPEN with EXIST: here the times are changed on
    the export before the resend arrives. The empty file of ours is taken as
    the one we made, opened, and given its mode."""
    m, d, path, err = exclusive_create_meeting(
        holder, mount_efsfuse, nfs_server, lambda p: os.utime(p, (1000, 1000)))
    assert err is None, err
    assert path.read_bytes() == b"mine"
    assert oct(os.stat(path).st_mode & 0o7777) == oct(0o640)
    assert log_events(m.stderr(), r"found an empty file of ours")
    m.unmount()
    assert (d / "made").read_bytes() == b"mine"


@pytest.mark.needs_efsfuse
def test_lost_reply_of_exclusive_create_then_someone_elses_file(
        efsfuse_bin, nfs_server, mount_efsfuse, holder):
    """The same, but the file has data by the time the resend arrives: not
    the empty file our OPEN made, so O_EXCL fails as it must."""
    def replace(p):
        p.write_bytes(b"theirs")
        os.utime(p, (1000, 1000))

    m, d, path, err = exclusive_create_meeting(holder, mount_efsfuse, nfs_server, replace)
    assert isinstance(err, FileExistsError), err
    m.unmount()
    assert (d / "made").read_bytes() == b"theirs"


OP_OPEN = 18
OPEN4_CREATE = 1
UNCHECKED4, GUARDED4, EXCLUSIVE4 = 0, 1, 2
NFS4ERR_NOTSUPP = 10004


def _open_createmode(data):
    """createmode of a PUTFH + OPEN(CREATE) call, else None."""
    op, off = op_after_putfh(data)
    if op != OP_OPEN:
        return None
    off += 12 + 8  # seqid, share_access, share_deny; owner's clientid
    _, off = xdr_opaque(data, off)
    opentype, mode = struct.unpack_from(">II", data, off)
    return mode if opentype == OPEN4_CREATE else None


class ExclusiveRefuser(ReplyDropper):
    """A server without EXCLUSIVE4, as far as efsfuse can tell: the proxy
    answers every OPEN with createmode EXCLUSIVE4 NOTSUPP itself, and records
    the createmode of every creating OPEN."""

    def __init__(self, upstream_port):
        super().__init__(upstream_port)
        self.createmodes = []

    def answer_locally(self, call, xid, tag):
        mode = _open_createmode(call)
        if mode is None:
            return None
        with self.lock:
            self.createmodes.append(mode)
        if mode != EXCLUSIVE4:
            return None
        return compound_reply(xid, tag, NFS4ERR_NOTSUPP,
                              [(OP_PUTFH, 0), (OP_OPEN, NFS4ERR_NOTSUPP)])


@pytest.mark.needs_efsfuse
def test_exclusive_create_falls_back_to_guarded(efsfuse_bin, nfs_server, mount_efsfuse):
    """A server answering NOTSUPP to EXCLUSIVE4: the create is sent again as
    GUARDED4 (with the mode), and later ones go GUARDED4 straight away."""
    with ExclusiveRefuser(nfs_server.port) as refuser:
        d = nfs_server.export / f"guarded-{time.monotonic_ns()}"
        d.mkdir()
        m = mount_efsfuse("/", opts=["log_level=debug"], port=refuser.port)
        old_umask = os.umask(0)
        try:
            for name in ("one", "two"):
                fd = os.open(m.path / d.name / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o640)
                os.write(fd, name.encode())
                os.close(fd)
        finally:
            os.umask(old_umask)
        with pytest.raises(FileExistsError):
            os.open(m.path / d.name / "one", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with refuser.lock:
            modes = list(refuser.createmodes)
        # (the kernel may answer the last EEXIST from its own dentry cache)
        assert modes[:3] == [EXCLUSIVE4, GUARDED4, GUARDED4], modes
        assert set(modes[3:]) <= {GUARDED4}, modes
        log = m.stderr()
        refused = [e for _, e in log_events(log, r"refuses EXCLUSIVE4")]
        assert len(refused) == 1, refused
        m.unmount()
        for name in ("one", "two"):
            st = os.stat(d / name)
            assert oct(st.st_mode & 0o7777) == oct(0o640)
            assert (d / name).read_bytes() == name.encode()


NFS4ERR_STALE = 70


class StaleAfterReset(ReplyDropper):
    """What a server that has just restarted was seen to do: refuse for a
    moment a handle it takes again right after. Once the armed reply has been
    dropped (so efsfuse resends the request, already executed, on a new
    connection), the proxy answers the next `stale_count` calls with that tag
    itself: PUTFH failed with NFS4ERR_STALE."""

    def __init__(self, upstream_port):
        super().__init__(upstream_port)
        self.stale_left = 0
        self.stale_tag = None
        self.stale_answered = 0

    def arm_stale(self, tag, count):
        with self.lock:
            self.stale_tag, self.stale_left, self.stale_answered = tag, count, 0
        self.arm(tag)

    def answer_locally(self, call, xid, tag):
        with self.lock:
            if tag != self.stale_tag or not self.fired.is_set() or self.stale_left == 0:
                return None
            self.stale_left -= 1
            self.stale_answered += 1
        return compound_reply(xid, tag, NFS4ERR_STALE, [(OP_PUTFH, NFS4ERR_STALE)])


@pytest.fixture
def stale_proxy(nfs_server):
    with StaleAfterReset(nfs_server.port) as p:
        yield p


@pytest.mark.needs_efsfuse
def test_resent_requests_answered_stale_are_sent_again(efsfuse_bin, nfs_server, mount_efsfuse,
                                                       stale_proxy):
    """A request executed by the server, whose reply was lost with the
    connection, is resent and refused twice as STALE: efsfuse sends it again
    (a failed PUTFH has done nothing), the server then answers NOENT or EXIST,
    and efsfuse recognises its own work. The application sees success."""
    m = mount_efsfuse("/", opts=["log_level=debug"], port=stale_proxy.port)
    d = m.path / f"stale-{time.monotonic_ns()}"
    d.mkdir()
    (d / "file").write_bytes(b"data")
    (d / "gone").write_bytes(b"")

    def stale_twice(tag, action):
        stale_proxy.arm_stale(tag, 2)
        action()
        assert stale_proxy.fired.wait(TIMEOUT), f"no {tag} reply was dropped"
        with stale_proxy.lock:
            assert stale_proxy.stale_answered == 2, (tag, stale_proxy.stale_answered)

    stale_twice("remove", lambda: os.unlink(d / "gone"))
    stale_twice("create", lambda: os.mkdir(d / "sub"))
    stale_twice("link", lambda: os.link(d / "file", d / "hard"))
    stale_twice("rename", lambda: os.rename(d / "hard", d / "moved"))
    assert sorted(os.listdir(d)) == ["file", "moved", "sub"]

    log = m.stderr()
    again = log_events(log, r"answered NFS4ERR_STALE to a request resent after a reconnect")
    assert len(again) == 8, again
    settled = [e for _, e in log_events(log, r"resent after a reconnect (found|had been)")]
    for kind in ("REMOVE of 'gone'", "CREATE of 'sub'", "LINK of 'hard'", "RENAME of 'moved'"):
        assert any(e.startswith(kind) for e in settled), (kind, settled)
    m.unmount()
    exported = nfs_server.export / d.name
    assert sorted(os.listdir(exported)) == ["file", "moved", "sub"]


@pytest.mark.needs_efsfuse
def test_resent_request_stale_for_good_fails(efsfuse_bin, nfs_server, mount_efsfuse,
                                             stale_proxy):
    """A handle the server keeps refusing is not retried for ever: after a
    bounded number of copies the error reaches the application."""
    m = mount_efsfuse("/", opts=["log_level=debug"], port=stale_proxy.port)
    d = m.path / f"stale-for-good-{time.monotonic_ns()}"
    d.mkdir()
    (d / "a").write_bytes(b"")
    stale_proxy.arm_stale("rename", 1000)
    t0 = time.monotonic()
    # The kernel retries a rename that failed with ESTALE once, looking the
    # names up again; the old name is gone by then (the first copy did it).
    with pytest.raises(OSError):
        os.rename(d / "a", d / "b")
    elapsed = time.monotonic() - t0
    assert elapsed < TIMEOUT, elapsed
    again = log_events(m.stderr(), r"answered NFS4ERR_STALE to a request resent")
    assert len(again) == 5, again
    assert os.path.exists(d / "b")
