"""Every file and directory operation through a real mount, with its errors."""
import ctypes
import errno
import os
import stat
import time

import pytest


def read(path):
    with open(path, "rb") as f:
        return f.read()


def test_create_write_read(workdir):
    p = workdir / "a.txt"
    p.write_bytes(b"hello\n")
    assert read(p) == b"hello\n"
    assert p.stat().st_size == 6
    assert stat.S_ISREG(p.stat().st_mode)


def test_create_mode_is_honoured(workdir):
    old = os.umask(0)
    try:
        fd = os.open(workdir / "m", os.O_CREAT | os.O_WRONLY, 0o640)
        os.close(fd)
    finally:
        os.umask(old)
    assert stat.S_IMODE((workdir / "m").stat().st_mode) == 0o640


def test_open_flags(workdir):
    p = workdir / "f"
    p.write_bytes(b"0123456789")
    # O_EXCL on an existing file
    with pytest.raises(FileExistsError):
        os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    # O_CREAT without O_EXCL on an existing file opens it
    fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
    assert os.read(fd, 3) == b"012"
    os.close(fd)
    # O_TRUNC
    fd = os.open(p, os.O_WRONLY | os.O_TRUNC)
    os.close(fd)
    assert p.stat().st_size == 0
    # O_APPEND
    p.write_bytes(b"abc")
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"def")
    os.close(fd)
    assert read(p) == b"abcdef"
    # opening a missing file
    with pytest.raises(FileNotFoundError):
        os.open(workdir / "missing", os.O_RDONLY)


def test_mkdir_rmdir(workdir):
    d = workdir / "d"
    d.mkdir(mode=0o750)
    assert stat.S_ISDIR(d.stat().st_mode)
    with pytest.raises(FileExistsError):
        d.mkdir()
    (d / "x").write_text("x")
    with pytest.raises(OSError) as e:
        d.rmdir()
    assert e.value.errno == errno.ENOTEMPTY
    (d / "x").unlink()
    d.rmdir()
    assert not d.exists()
    with pytest.raises(FileNotFoundError):
        d.rmdir()


def test_unlink(workdir):
    p = workdir / "u"
    p.write_text("x")
    p.unlink()
    assert not p.exists()
    with pytest.raises(FileNotFoundError):
        p.unlink()
    (workdir / "dir").mkdir()
    with pytest.raises(IsADirectoryError):
        os.unlink(workdir / "dir")


def test_unlink_open_file_stays_readable(workdir):
    p = workdir / "open"
    p.write_bytes(b"still here")
    with open(p, "rb") as f:
        p.unlink()
        assert f.read() == b"still here"
    assert not p.exists()


def test_rename(workdir):
    (workdir / "a").write_text("A")
    (workdir / "b").write_text("B")
    (workdir / "sub").mkdir()
    os.rename(workdir / "a", workdir / "c")
    assert (workdir / "c").read_text() == "A" and not (workdir / "a").exists()
    os.rename(workdir / "c", workdir / "b")  # over an existing file
    assert (workdir / "b").read_text() == "A"
    os.rename(workdir / "b", workdir / "sub" / "moved")  # across directories
    assert (workdir / "sub" / "moved").read_text() == "A"
    # the moved file can still be opened for writing under its new name
    with open(workdir / "sub" / "moved", "a") as f:
        f.write("+")
    assert (workdir / "sub" / "moved").read_text() == "A+"
    with pytest.raises(FileNotFoundError):
        os.rename(workdir / "nope", workdir / "x")
    # a directory with contents
    os.rename(workdir / "sub", workdir / "sub2")
    assert (workdir / "sub2" / "moved").read_text() == "A+"


def test_link(workdir):
    (workdir / "orig").write_text("data")
    os.link(workdir / "orig", workdir / "hard")
    assert (workdir / "hard").read_text() == "data"
    assert (workdir / "orig").stat().st_nlink == 2
    assert (workdir / "orig").stat().st_ino == (workdir / "hard").stat().st_ino
    with pytest.raises(FileExistsError):
        os.link(workdir / "orig", workdir / "hard")


def test_symlink_readlink(workdir):
    (workdir / "target").write_text("t")
    os.symlink("target", workdir / "ln")
    assert os.readlink(workdir / "ln") == "target"
    assert (workdir / "ln").read_text() == "t"
    assert stat.S_ISLNK(os.lstat(workdir / "ln").st_mode)
    os.symlink("/nowhere/at/all", workdir / "dangling")
    assert os.readlink(workdir / "dangling") == "/nowhere/at/all"
    with pytest.raises(FileExistsError):
        os.symlink("x", workdir / "ln")


def test_mknod_fifo(workdir):
    os.mkfifo(workdir / "fifo", 0o600)
    st = os.lstat(workdir / "fifo")
    assert stat.S_ISFIFO(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    os.mknod(workdir / "regular", 0o644 | stat.S_IFREG)
    assert stat.S_ISREG(os.lstat(workdir / "regular").st_mode)
    with pytest.raises(FileExistsError):
        os.mknod(workdir / "regular", 0o644 | stat.S_IFREG)


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_setattr_mode_owner_times(workdir, kind):
    p = workdir / kind
    if kind == "file":
        p.write_text("x")
    else:
        p.mkdir()
    os.chmod(p, 0o751)
    assert stat.S_IMODE(p.stat().st_mode) == 0o751
    os.chown(p, 1234, 4321)
    st = p.stat()
    assert (st.st_uid, st.st_gid) == (1234, 4321)
    os.utime(p, ns=(1_000_000_123_456_789, 2_000_000_987_654_321))
    st = p.stat()
    assert st.st_atime_ns == 1_000_000_123_456_789
    assert st.st_mtime_ns == 2_000_000_987_654_321
    before = time.time()
    os.utime(p)  # UTIME_NOW
    assert abs(p.stat().st_mtime - before) < 60


def test_truncate(workdir):
    p = workdir / "t"
    p.write_bytes(b"x" * 1000)
    os.truncate(p, 10)
    assert read(p) == b"x" * 10
    os.truncate(p, 5000)
    data = read(p)
    assert len(data) == 5000 and data[:10] == b"x" * 10 and data[10:] == bytes(4990)
    with open(p, "r+b") as f:
        f.truncate(3)
        f.write(b"abc")
    assert read(p) == b"abc"


def test_statfs(workdir):
    sv = os.statvfs(workdir)
    assert sv.f_blocks > 0
    assert 0 < sv.f_bavail <= sv.f_blocks
    assert sv.f_namemax >= 255 or sv.f_namemax > 0


def test_access(workdir):
    p = workdir / "acc"
    p.write_text("x")
    assert os.access(p, os.R_OK | os.W_OK)
    assert not os.access(workdir / "missing", os.F_OK)


def test_errors(workdir):
    (workdir / "file").write_text("x")
    (workdir / "dir").mkdir()
    with pytest.raises(NotADirectoryError):
        open(workdir / "file" / "below")
    with pytest.raises(IsADirectoryError):
        open(workdir / "dir", "w")
    with pytest.raises(OSError) as e:
        (workdir / ("n" * 300)).write_text("x")
    assert e.value.errno == errno.ENAMETOOLONG
    with pytest.raises(FileNotFoundError):
        (workdir / "missing" / "x").write_text("x")


def test_xattr_not_supported(workdir):
    p = workdir / "x"
    p.write_text("x")
    for call in (lambda: os.setxattr(p, "user.k", b"v"), lambda: os.getxattr(p, "user.k"),
                 lambda: os.listxattr(p), lambda: os.removexattr(p, "user.k")):
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == errno.ENOTSUP


def test_fallocate_not_supported(workdir):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    fd = os.open(workdir / "fa", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        t0 = time.monotonic()
        assert libc.fallocate(fd, 0, 0, 4096) == -1
        assert ctypes.get_errno() == errno.EOPNOTSUPP
        assert time.monotonic() - t0 < 1
    finally:
        os.close(fd)


def test_readdir_lists_everything(workdir):
    names = {f"entry-{i:03d}" for i in range(300)}
    for n in names:
        (workdir / n).write_text(n)
    (workdir / "subdir").mkdir()
    listed = set(os.listdir(workdir))
    assert listed == names | {"subdir"}
    # readdirplus gives attributes: types without a stat per entry
    kinds = {e.name: e.is_dir() for e in os.scandir(workdir)}
    assert kinds["subdir"] and not kinds["entry-000"]


def test_fsync_and_close_report_success(workdir):
    fd = os.open(workdir / "s", os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"z" * 100000)
    os.fsync(fd)
    os.close(fd)
    assert (workdir / "s").stat().st_size == 100000
