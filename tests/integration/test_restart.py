"""A server restart (kill -9): what was reported written survives, the mount keeps working,
and files open across the restart keep working (their state is recovered; test_reclaim.py
covers grace periods and locks)."""
import os

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
