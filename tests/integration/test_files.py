"""Basic file and directory operations through a mount, checked on the server too.

Every test states in a "Needs:" comment which efsfuse features it exercises.
The failure cases of these operations are in test_errnos.py, data integrity
in test_data.py. `make valgrind` runs this file under valgrind.
"""
import ctypes
import errno
import os
import stat
import time

import pytest


@pytest.fixture
def srv(nfs_server, workdir):
    """The test's directory as the server stores it (a path in the export)."""
    return nfs_server.export / workdir.name


# Needs: lookup, create (OPEN with CREATE), write, flush/close (COMMIT), read, getattr.
def test_create_write_read(workdir, srv):
    p = workdir / "a.txt"
    with open(p, "wb") as f:
        assert f.write(b"hello\n") == 6
    assert p.read_bytes() == b"hello\n"
    st = p.stat()
    assert st.st_size == 6 and stat.S_ISREG(st.st_mode)
    # close-to-open: after close() the data is on the server
    assert (srv / "a.txt").read_bytes() == b"hello\n"


# Needs: create with the mode attribute (UNCHECKED4 carries it).
def test_create_mode_and_umask(workdir, srv):
    old = os.umask(0)
    try:
        os.close(os.open(workdir / "m640", os.O_CREAT | os.O_WRONLY, 0o640))
        os.umask(0o022)
        os.close(os.open(workdir / "m644", os.O_CREAT | os.O_WRONLY, 0o666))
        os.mkdir(workdir / "d755", 0o777)
    finally:
        os.umask(old)
    assert stat.S_IMODE((workdir / "m640").stat().st_mode) == 0o640
    assert stat.S_IMODE((workdir / "m644").stat().st_mode) == 0o644
    assert stat.S_IMODE((workdir / "d755").stat().st_mode) == 0o755
    assert stat.S_IMODE((srv / "m640").stat().st_mode) == 0o640


# Needs: create (GUARDED/UNCHECKED), O_EXCL, O_TRUNC (SETATTR size), O_APPEND.
def test_open_flags(workdir):
    p = workdir / "f"
    # O_CREAT|O_EXCL creates a new file
    fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    os.write(fd, b"0123456789")
    os.close(fd)
    # ... and refuses an existing one, leaving it alone
    with pytest.raises(FileExistsError):
        os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    assert p.read_bytes() == b"0123456789"
    # O_CREAT without O_EXCL opens an existing file without truncating it
    fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o600)
    assert os.read(fd, 3) == b"012"
    os.close(fd)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644
    # O_TRUNC empties it
    os.close(os.open(p, os.O_WRONLY | os.O_TRUNC))
    assert p.stat().st_size == 0
    # O_APPEND writes at the end, wherever the offset was
    p.write_bytes(b"abc")
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, b"def")
    os.write(fd, b"ghi")
    os.close(fd)
    assert p.read_bytes() == b"abcdefghi"


# Needs: O_EXCL creates (EXCLUSIVE4 + SETATTR of the mode and the times, since
# the server keeps the create verifier in the times), mknod of a regular file.
def test_exclusive_create_mode_and_times(workdir, srv):
    before = time.time()
    old = os.umask(0)
    try:
        fd = os.open(workdir / "x640", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o640)
        os.write(fd, b"mine")
        os.close(fd)
        # a mode without write permission still gives the creator its descriptor
        fd = os.open(workdir / "x444", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o444)
        os.write(fd, b"read-only")
        assert os.pread(fd, 100, 0) == b"read-only"
        os.close(fd)
        os.mknod(workdir / "node604", stat.S_IFREG | 0o604)
    finally:
        os.umask(old)
    for name, mode in (("x640", 0o640), ("x444", 0o444), ("node604", 0o604)):
        for st in (os.stat(workdir / name), os.stat(srv / name)):
            assert stat.S_ISREG(st.st_mode), name
            assert stat.S_IMODE(st.st_mode) == mode, (name, oct(st.st_mode))
            # not the verifier the server parks in the times while it creates
            for t in (st.st_mtime, st.st_atime):
                assert before - 60 < t < time.time() + 60, (name, t)
    assert (srv / "x640").read_bytes() == b"mine"
    assert (srv / "x444").read_bytes() == b"read-only"
    with pytest.raises(FileExistsError):
        os.open(workdir / "x640", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    assert stat.S_IMODE((srv / "x640").stat().st_mode) == 0o640
    assert (srv / "x640").read_bytes() == b"mine"


# Needs: create, read and write on one open file; reads see the file's own writes.
def test_read_write_same_open_file(workdir):
    fd = os.open(workdir / "rw", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b"0123456789")
        assert os.pread(fd, 4, 3) == b"3456"
        os.pwrite(fd, b"XY", 8)
        assert os.pread(fd, 100, 0) == b"01234567XY"
        os.pwrite(fd, b"!", 20)  # past the end: a hole of zeros
        assert os.pread(fd, 100, 0) == b"01234567XY" + bytes(10) + b"!"
    finally:
        os.close(fd)


# Needs: mkdir (CREATE NF4DIR with mode), rmdir (REMOVE), parent attributes refreshed.
def test_mkdir_rmdir(workdir, srv):
    links = workdir.stat().st_nlink
    d = workdir / "d"
    d.mkdir(mode=0o750)
    st = d.stat()
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o750
    assert (srv / "d").is_dir()
    assert workdir.stat().st_nlink == links + 1  # the new directory's ".."
    (d / "x").write_text("x")
    with pytest.raises(OSError) as e:
        d.rmdir()
    assert e.value.errno == errno.ENOTEMPTY
    assert (d / "x").exists()
    (d / "x").unlink()
    d.rmdir()
    assert not d.exists() and not (srv / "d").exists()
    assert workdir.stat().st_nlink == links
    # nested directories
    (workdir / "a" / "b" / "c").mkdir(parents=True)
    assert (srv / "a" / "b" / "c").is_dir()


# Needs: remove, lookup of a removed name, open files outliving their name.
def test_unlink(workdir, srv):
    p = workdir / "u"
    p.write_text("x")
    p.unlink()
    assert not p.exists() and not (srv / "u").exists()
    assert "u" not in os.listdir(workdir)
    # a file unlinked while open stays readable and writable through the open file
    p.write_bytes(b"still here")
    with open(p, "r+b") as f:
        p.unlink()
        assert not p.exists()
        assert f.read() == b"still here"
        f.write(b"+more")
        f.flush()
        f.seek(0)
        assert f.read() == b"still here+more"
    assert os.listdir(workdir) == []


# Needs: rename (RENAME) within and across directories, over files and directories.
def test_rename(workdir, srv):
    (workdir / "a").write_text("A")
    (workdir / "b").write_text("B")
    (workdir / "sub").mkdir()
    os.rename(workdir / "a", workdir / "c")
    assert (workdir / "c").read_text() == "A" and not (workdir / "a").exists()
    # over an existing file: it is replaced
    os.rename(workdir / "c", workdir / "b")
    assert (workdir / "b").read_text() == "A"
    assert sorted(os.listdir(workdir)) == ["b", "sub"]
    # across directories
    os.rename(workdir / "b", workdir / "sub" / "moved")
    assert (workdir / "sub" / "moved").read_text() == "A"
    assert (srv / "sub" / "moved").read_text() == "A" and not (srv / "b").exists()
    # the moved file can be written under its new name
    with open(workdir / "sub" / "moved", "a") as f:
        f.write("+")
    assert (workdir / "sub" / "moved").read_text() == "A+"
    # a directory with contents, and over an empty directory
    os.rename(workdir / "sub", workdir / "sub2")
    assert (workdir / "sub2" / "moved").read_text() == "A+"
    (workdir / "empty").mkdir()
    os.rename(workdir / "sub2", workdir / "empty")
    assert (workdir / "empty" / "moved").read_text() == "A+"
    assert sorted(os.listdir(workdir)) == ["empty"]
    assert (srv / "empty" / "moved").read_text() == "A+"
    # onto itself: nothing happens
    os.rename(workdir / "empty", workdir / "empty")
    assert (workdir / "empty" / "moved").read_text() == "A+"


# Needs: link (LINK), nlink and fileid in attributes.
def test_link(workdir, srv):
    orig, hard = workdir / "orig", workdir / "hard"
    orig.write_text("data")
    os.link(orig, hard)
    assert hard.read_text() == "data"
    assert orig.stat().st_nlink == 2 and hard.stat().st_nlink == 2
    assert orig.stat().st_ino == hard.stat().st_ino
    assert (srv / "orig").stat().st_ino == (srv / "hard").stat().st_ino
    # one file under two names: a write through one is read through the other
    with open(hard, "a") as f:
        f.write("+")
    assert orig.read_text() == "data+"
    orig.unlink()
    assert hard.stat().st_nlink == 1 and hard.read_text() == "data+"


# Needs: symlink (CREATE NF4LNK), readlink (READLINK), lookups through symlinks.
def test_symlink_readlink(workdir, srv):
    (workdir / "target").write_text("t")
    os.symlink("target", workdir / "ln")
    assert os.readlink(workdir / "ln") == "target"
    assert (workdir / "ln").read_text() == "t"
    st = os.lstat(workdir / "ln")
    assert stat.S_ISLNK(st.st_mode) and st.st_size == len("target")
    assert os.readlink(srv / "ln") == "target"
    # dangling and absolute targets are stored verbatim
    os.symlink("/nowhere/at/all", workdir / "dangling")
    assert os.readlink(workdir / "dangling") == "/nowhere/at/all"
    assert not (workdir / "dangling").exists()
    # a long target
    long_target = "/".join(["d" * 100] * 20)
    os.symlink(long_target, workdir / "long")
    assert os.readlink(workdir / "long") == long_target
    # through a symlinked directory
    (workdir / "dir").mkdir()
    (workdir / "dir" / "inner").write_text("i")
    os.symlink("dir", workdir / "dirlink")
    assert (workdir / "dirlink" / "inner").read_text() == "i"


# Needs: mknod (CREATE NF4FIFO / regular create); FIFO I/O is the kernel's.
def test_mknod_fifo(workdir, srv):
    os.mkfifo(workdir / "fifo", 0o600)
    st = os.lstat(workdir / "fifo")
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_ISFIFO(os.lstat(srv / "fifo").st_mode)
    # it works as a pipe
    fd = os.open(workdir / "fifo", os.O_RDWR | os.O_NONBLOCK)
    try:
        os.write(fd, b"through the fifo")
        assert os.read(fd, 100) == b"through the fifo"
    finally:
        os.close(fd)
    os.mknod(workdir / "regular", 0o640 | stat.S_IFREG)
    st = os.lstat(workdir / "regular")
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640 and st.st_size == 0


NS_ATIME = 1_000_000_123_456_789  # 2001-09-09, odd nanoseconds
NS_MTIME = 1_500_000_987_654_321  # 2017-07-14


# Needs: SETATTR mode/owner/group/atime/mtime (SET_TO_CLIENT_TIME4 and
# SET_TO_SERVER_TIME4) on files AND directories (no OPEN for directories).
@pytest.mark.parametrize("kind", ["file", "dir"])
def test_chmod_chown_utimes(workdir, srv, kind):
    p = workdir / kind
    if kind == "file":
        p.write_text("x")
    else:
        p.mkdir()
    os.chmod(p, 0o751)
    assert stat.S_IMODE(p.stat().st_mode) == 0o751
    os.chmod(p, 0o2755)  # setgid kept for root
    assert stat.S_IMODE(p.stat().st_mode) == 0o2755
    os.chown(p, 1234, 4321)
    assert (p.stat().st_uid, p.stat().st_gid) == (1234, 4321)
    os.chown(p, -1, 555)  # group only
    assert (p.stat().st_uid, p.stat().st_gid) == (1234, 555)
    assert ((srv / kind).stat().st_uid, (srv / kind).stat().st_gid) == (1234, 555)

    os.utime(p, ns=(NS_ATIME, NS_MTIME))
    st = p.stat()
    assert (st.st_atime_ns, st.st_mtime_ns) == (NS_ATIME, NS_MTIME)
    st = (srv / kind).stat()
    assert (st.st_atime_ns, st.st_mtime_ns) == (NS_ATIME, NS_MTIME)

    # UTIME_NOW (utimensat with NULL times): the server's clock, i.e. now
    before = time.time()
    os.utime(p)
    after = time.time()
    st = p.stat()
    for t in (st.st_atime, st.st_mtime):
        assert before - 2 <= t <= after + 2, (before, t, after)


# Needs: SETATTR size without an open file (truncate) and with one (ftruncate).
def test_truncate(workdir, srv):
    p = workdir / "t"
    p.write_bytes(b"x" * 1000)
    os.truncate(p, 10)  # down
    assert p.stat().st_size == 10 and p.read_bytes() == b"x" * 10
    os.truncate(p, 5000)  # up: zeros
    data = p.read_bytes()
    assert len(data) == 5000 and data == b"x" * 10 + bytes(4990)
    assert (srv / "t").read_bytes() == data
    with open(p, "r+b") as f:
        f.truncate(3)
        f.seek(0, os.SEEK_END)
        f.write(b"abc")
    assert p.read_bytes() == b"xxxabc"
    os.truncate(p, 0)
    assert p.stat().st_size == 0 and (srv / "t").stat().st_size == 0


# Needs: statfs (GETATTR space_*/files_*/maxname).
def test_statfs(workdir, nfs_server):
    sv = os.statvfs(workdir)
    host = os.statvfs(nfs_server.export)
    assert sv.f_bsize > 0 and sv.f_frsize > 0
    assert 0 < sv.f_bavail <= sv.f_bfree <= sv.f_blocks
    assert sv.f_namemax == 255
    # the server reports the space of the disk it stores the export on
    total, host_total = sv.f_blocks * sv.f_frsize, host.f_blocks * host.f_frsize
    assert abs(total - host_total) <= host_total * 0.01, (total, host_total)
    free, host_free = sv.f_bavail * sv.f_frsize, host.f_bavail * host.f_frsize
    assert abs(free - host_free) <= host_total * 0.02, (free, host_free)


# Needs: access (ACCESS), or the kernel's mode check.
def test_access(workdir):
    p = workdir / "acc"
    p.write_text("x")
    os.chmod(p, 0o644)
    assert os.access(p, os.R_OK | os.W_OK)
    assert not os.access(p, os.X_OK)  # even root needs an x bit to execute
    os.chmod(p, 0o755)
    assert os.access(p, os.X_OK)
    assert os.access(workdir, os.R_OK | os.W_OK | os.X_OK)
    assert not os.access(workdir / "missing", os.F_OK)


# Needs: readdir/readdirplus with cookies across several READDIR calls, d_type.
def test_readdir(workdir):
    names = {f"entry-{i:03d}-" + "n" * 40 for i in range(300)}
    for n in names:
        (workdir / n).write_text(n)
    (workdir / "subdir").mkdir()
    os.symlink("entry", workdir / "link")
    listed = os.listdir(workdir)
    assert len(listed) == len(set(listed)) == 302
    assert set(listed) == names | {"subdir", "link"}
    kinds = {e.name: (e.is_dir(follow_symlinks=False), e.is_symlink()) for e in os.scandir(workdir)}
    assert kinds["subdir"] == (True, False)
    assert kinds["link"] == (False, True)
    assert kinds[min(names)] == (False, False)
    assert os.listdir(workdir / "subdir") == []


# Needs: fsync (COMMIT) on files and directories.
def test_fsync(workdir, srv):
    fd = os.open(workdir / "s", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"z" * 100000)
        os.fsync(fd)
        os.fdatasync(fd)
        assert (srv / "s").stat().st_size == 100000  # on the server before close
    finally:
        os.close(fd)
    dfd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


# Needs: efsfuse's answer to xattr requests: ENOTSUP, at once (NFSv4.0 has no xattrs).
@pytest.mark.needs_efsfuse
def test_xattr_not_supported(workdir):
    p = workdir / "x"
    p.write_text("x")
    for call in (lambda: os.setxattr(p, "user.k", b"v"), lambda: os.getxattr(p, "user.k"),
                 lambda: os.listxattr(p), lambda: os.removexattr(p, "user.k")):
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == errno.ENOTSUP
    assert p.read_text() == "x"


# Needs: efsfuse's answer to fallocate: EOPNOTSUPP, at once (NFSv4.0 has no ALLOCATE).
@pytest.mark.needs_efsfuse
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
    assert (workdir / "fa").stat().st_size == 0
