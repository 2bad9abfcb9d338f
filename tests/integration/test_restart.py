"""A server restart (kill -9): what was reported written survives, the mount keeps working,
and files open across the restart keep working (their state is recovered; test_reclaim.py
covers grace periods and locks)."""
import errno
import os
import shutil
import time

import pytest

from conftest import Mount


def test_server_restart(own_server, tmp_path):
    mnt = tmp_path / "m"
    mnt.mkdir()
    m = Mount(own_server, mnt, "/", [], tmp_path / "log")
    try:
        synced = os.urandom(3 << 20)
        fd = os.open(mnt / "kept", os.O_CREAT | os.O_RDWR, 0o644)
        os.write(fd, synced)
        os.fsync(fd)

        own_server.crash_and_restart()

        # the file still open from before: its open state is re-established
        # (reopened by name: this server has no grace period) and it just works
        late = b"after-restart"
        os.pwrite(fd, late, len(synced))
        os.fsync(fd)
        os.close(fd)
        on_server = (own_server.export / "kept").read_bytes()
        assert on_server == synced + late
        # and the mount keeps working: reopen, new files
        assert (mnt / "kept").read_bytes() == synced + late
        (mnt / "new-after-restart").write_text("new")
        assert (own_server.export / "new-after-restart").read_text() == "new"
        m.unmount()
        log = m.stderr()
        assert "state recovered: 0 opens reclaimed, 1 reopened" in log
    finally:
        m.cleanup()


def test_stale_handle_fails_that_file_only(own_server, tmp_path):
    """A directory removed on the server while it was down: the handle the mount still
    holds for it is unknown to the restarted server (NFS4ERR_STALE). That directory's
    descriptor gets ESTALE; the rest of the mount, open files included, carries on."""
    mnt = tmp_path / "m"
    mnt.mkdir()
    m = Mount(own_server, mnt, "/", [], tmp_path / "log")
    try:
        (mnt / "gone").mkdir()
        (mnt / "gone" / "f").write_text("in gone")
        (mnt / "kept").mkdir()
        dirfd = os.open(mnt / "gone", os.O_RDONLY | os.O_DIRECTORY)
        fd = os.open(mnt / "kept" / "open", os.O_CREAT | os.O_RDWR, 0o644)
        os.write(fd, b"before")
        os.fsync(fd)

        own_server.crash()
        shutil.rmtree(own_server.export / "gone")
        time.sleep(1)
        own_server.start()
        time.sleep(1.5)  # past attr_timeout: the kernel asks efsfuse again

        with pytest.raises(OSError) as e:
            os.fstat(dirfd)
        assert e.value.errno == errno.ESTALE
        with pytest.raises(OSError) as e:
            os.listdir(dirfd)
        assert e.value.errno == errno.ESTALE
        os.close(dirfd)

        os.pwrite(fd, b"after", 6)
        os.fsync(fd)
        os.close(fd)
        assert (own_server.export / "kept" / "open").read_bytes() == b"beforeafter"
        assert not (mnt / "gone").exists()
        (mnt / "gone").mkdir()
        (mnt / "gone" / "g").write_text("new")
        assert (own_server.export / "gone" / "g").read_text() == "new"
        m.unmount()
    finally:
        m.cleanup()
