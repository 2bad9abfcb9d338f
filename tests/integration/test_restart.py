"""A server restart (kill -9): what was reported written survives, the mount keeps working,
and state lost with the server is reported, never silently dropped."""
import os

import pytest

from conftest import Mount, Server


@pytest.fixture
def own_server(tmp_path):
    server = Server(tmp_path / "srv")
    server.dir.mkdir()
    server.start()
    yield server
    server.stop()


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

        # the file still open from before: its state died with the server;
        # an error must show up, or else the data must really be there
        late = b"after-restart"
        errors = []
        for call in (lambda: os.pwrite(fd, late, len(synced)), lambda: os.fsync(fd),
                     lambda: os.close(fd)):
            try:
                call()
            except OSError as e:
                errors.append(e.errno)
        on_server = (own_server.export / "kept").read_bytes()
        assert errors or on_server == synced + late
        # what fsync reported written survived
        assert on_server[:len(synced)] == synced
        # and the mount keeps working: reopen, new files
        assert (mnt / "kept").read_bytes()[:len(synced)] == synced
        (mnt / "new-after-restart").write_text("new")
        assert (own_server.export / "new-after-restart").read_text() == "new"
        m.unmount()
        assert "re-established" in m.stderr()
    finally:
        m.cleanup()
