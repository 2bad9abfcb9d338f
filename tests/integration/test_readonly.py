"""A read-only mount (-o ro): reads work, every change fails with EROFS, nothing changes."""
import errno
import os

import pytest


@pytest.fixture
def ro(mount_efsfuse):
    """(read-only mount dir, read-write mount dir) of one directory with a file, a
    subdirectory and a symlink."""
    rw = mount_efsfuse("/")
    d = rw.path / "ro-test"
    d.mkdir()
    (d / "file").write_text("keep")
    (d / "sub").mkdir()
    os.symlink("file", d / "link")
    m = mount_efsfuse("/", ["ro"])
    return m.path / "ro-test", d


# Needs: the ro option: EROFS for every modifying request, before reaching the server.
def test_read_only_mount_refuses_changes(ro):
    r, rw = ro
    assert (r / "file").read_text() == "keep"
    assert os.readlink(r / "link") == "file"
    assert sorted(os.listdir(r)) == ["file", "link", "sub"]
    changes = {
        "write existing": lambda: (r / "file").write_text("changed"),
        "open O_RDWR": lambda: os.open(r / "file", os.O_RDWR),
        "create": lambda: (r / "new").write_text("x"),
        "mkdir": lambda: os.mkdir(r / "dir"),
        "rmdir": lambda: os.rmdir(r / "sub"),
        "unlink": lambda: os.unlink(r / "file"),
        "rename": lambda: os.rename(r / "file", r / "renamed"),
        "link": lambda: os.link(r / "file", r / "hard"),
        "symlink": lambda: os.symlink("file", r / "ln2"),
        "mkfifo": lambda: os.mkfifo(r / "fifo"),
        "chmod": lambda: os.chmod(r / "file", 0o600),
        "chown": lambda: os.chown(r / "file", 1, 1),
        "utime": lambda: os.utime(r / "file", (0, 0)),
        "truncate": lambda: os.truncate(r / "file", 0),
        "chmod dir": lambda: os.chmod(r / "sub", 0o700),
    }
    for what, change in changes.items():
        with pytest.raises(OSError) as e:
            change()
        assert e.value.errno == errno.EROFS, f"{what}: {e.value!r}"
    assert os.statvfs(r).f_flag & os.ST_RDONLY
    # nothing changed on the server
    assert (rw / "file").read_text() == "keep"
    assert sorted(os.listdir(rw)) == ["file", "link", "sub"]
    assert (rw / "file").stat().st_mode & 0o777 == 0o644
