"""Failing operations through a mount: the right errno, and nothing changed on the server.

Each case names the errno the application must see. Most reach the server
(NFS4ERR_* mapped to errno by efsfuse); a few are decided by the kernel from
the attributes efsfuse reported (noted "kernel"), which still needs the right
file types and sizes from efsfuse.
"""
import errno
import os

import pytest


@pytest.fixture
def tree(workdir):
    """workdir with a file, an empty and a non-empty directory, and a symlink."""
    (workdir / "file").write_text("content")
    (workdir / "dir").mkdir()
    (workdir / "full").mkdir()
    (workdir / "full" / "inside").write_text("x")
    os.symlink("file", workdir / "link")
    return workdir


def expect(err, call, *args):
    """call(*args) fails with errno err."""
    try:
        result = call(*args)
    except OSError as e:
        assert e.errno == err, f"{call.__name__}{args}: {e!r}, expected {errno.errorcode[err]}"
        return
    if call is os.open:
        os.close(result)  # or the mount stays busy
    pytest.fail(f"{call.__name__}{args} succeeded, expected {errno.errorcode[err]}")


def unchanged(tree):
    """Every failed call left the tree as it was."""
    assert sorted(os.listdir(tree)) == ["dir", "file", "full", "link"]
    assert (tree / "file").read_text() == "content"
    assert os.listdir(tree / "full") == ["inside"] and os.listdir(tree / "dir") == []


# Needs: LOOKUP answering NFS4ERR_NOENT (and negative entries).
def test_enoent(tree):
    missing = tree / "missing"
    expect(errno.ENOENT, os.stat, missing)
    expect(errno.ENOENT, os.open, missing, os.O_RDONLY)
    expect(errno.ENOENT, os.unlink, missing)
    expect(errno.ENOENT, os.rmdir, missing)
    expect(errno.ENOENT, os.rename, missing, tree / "x")
    expect(errno.ENOENT, os.readlink, missing)
    expect(errno.ENOENT, os.chmod, missing, 0o644)
    expect(errno.ENOENT, os.truncate, missing, 0)
    expect(errno.ENOENT, os.link, missing, tree / "x")
    expect(errno.ENOENT, os.mkdir, missing / "sub")
    expect(errno.ENOENT, os.open, missing / "new", os.O_CREAT | os.O_WRONLY, 0o644)
    expect(errno.ENOENT, os.listdir, missing)
    os.symlink("nowhere", tree / "dangling")
    expect(errno.ENOENT, os.stat, tree / "dangling")
    os.unlink(tree / "dangling")
    unchanged(tree)


# Needs: CREATE/OPEN/LINK answering NFS4ERR_EXIST, GUARDED create.
def test_eexist(tree):
    expect(errno.EEXIST, os.mkdir, tree / "dir")
    expect(errno.EEXIST, os.mkdir, tree / "file")
    expect(errno.EEXIST, os.open, tree / "file", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    expect(errno.EEXIST, os.open, tree / "dir", os.O_CREAT | os.O_EXCL | os.O_RDONLY, 0o644)
    expect(errno.EEXIST, os.link, tree / "file", tree / "dir")
    expect(errno.EEXIST, os.symlink, "x", tree / "file")
    expect(errno.EEXIST, os.mkfifo, tree / "file")
    unchanged(tree)


# Needs: NFS4ERR_NOTDIR mapped; file types in attributes (kernel: path walks).
def test_enotdir(tree):
    f = tree / "file"
    expect(errno.ENOTDIR, os.stat, f / "below")
    expect(errno.ENOTDIR, os.open, f / "below", os.O_CREAT | os.O_WRONLY, 0o644)
    expect(errno.ENOTDIR, os.mkdir, f / "below")
    expect(errno.ENOTDIR, os.listdir, f)
    expect(errno.ENOTDIR, os.open, f, os.O_RDONLY | os.O_DIRECTORY)
    expect(errno.ENOTDIR, os.rmdir, f)
    expect(errno.ENOTDIR, os.rename, tree / "dir", f)  # a directory over a file
    unchanged(tree)


# Needs: NFS4ERR_ISDIR mapped; file types in attributes.
def test_eisdir(tree):
    d = tree / "dir"
    expect(errno.EISDIR, os.open, d, os.O_WRONLY)
    expect(errno.EISDIR, os.open, d, os.O_RDWR)
    expect(errno.EISDIR, os.unlink, d)
    expect(errno.EISDIR, os.rename, tree / "file", d)  # a file over a directory
    fd = os.open(d, os.O_RDONLY)
    try:
        expect(errno.EISDIR, os.read, fd, 10)
    finally:
        os.close(fd)
    unchanged(tree)


# Needs: REMOVE/RENAME answering NFS4ERR_NOTEMPTY.
def test_enotempty(tree):
    expect(errno.ENOTEMPTY, os.rmdir, tree / "full")
    with pytest.raises(OSError) as e:  # a directory over a non-empty one
        os.rename(tree / "dir", tree / "full")
    assert e.value.errno in (errno.ENOTEMPTY, errno.EEXIST)
    unchanged(tree)


# Needs: NFS4ERR_NAMETOOLONG mapped (FUSE lets names up to 1024 bytes through).
def test_enametoolong(tree):
    name = "n" * 256  # NAME_MAX is 255
    expect(errno.ENAMETOOLONG, os.open, tree / name, os.O_CREAT | os.O_WRONLY, 0o644)
    expect(errno.ENAMETOOLONG, os.mkdir, tree / name)
    expect(errno.ENAMETOOLONG, os.stat, tree / name)
    expect(errno.ENAMETOOLONG, os.symlink, "x", tree / name)
    expect(errno.ENAMETOOLONG, os.rename, tree / "file", tree / name)
    unchanged(tree)
    # 255 is fine
    (tree / ("m" * 255)).write_text("max")
    assert (tree / ("m" * 255)).read_text() == "max"


# Needs: readlink of a symlink loop (kernel: ELOOP after following READLINK answers).
def test_eloop(tree):
    os.symlink("loop-b", tree / "loop-a")
    os.symlink("loop-a", tree / "loop-b")
    expect(errno.ELOOP, os.stat, tree / "loop-a")
    expect(errno.ELOOP, os.open, tree / "link", os.O_RDONLY | os.O_NOFOLLOW)


# Needs: nothing of efsfuse beyond correct attributes (kernel: EINVAL, EPERM).
def test_kernel_checked_errors(tree):
    expect(errno.EINVAL, os.readlink, tree / "file")
    expect(errno.EINVAL, os.rename, tree / "full", tree / "full" / "into-itself")
    expect(errno.EPERM, os.link, tree / "dir", tree / "dirlink")
    unchanged(tree)


# Needs: the mount keeps working after a burst of failed requests.
def test_mount_still_works_after_errors(tree):
    for _ in range(50):
        with pytest.raises(FileNotFoundError):
            os.stat(tree / "missing")
        with pytest.raises(FileExistsError):
            os.mkdir(tree / "dir")
    (tree / "after").write_text("ok")
    assert (tree / "after").read_text() == "ok"
