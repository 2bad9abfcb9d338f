"""A directory of 10,000 entries lists completely: every name once, nothing else."""
import os

N = 10_000


# Needs: READDIR continued by cookie over many calls (and READDIRPLUS attributes).
def test_ten_thousand_entries(nfs_server, mount_efsfuse):
    m = mount_efsfuse("/")
    d = m.path / "big-dir"
    d.mkdir()
    names = {f"file-{i:05d}-{'x' * (i % 50)}" for i in range(N)}
    for n in names:
        os.close(os.open(d / n, os.O_CREAT | os.O_WRONLY, 0o644))
    listed = os.listdir(d)
    assert len(listed) == N
    assert set(listed) == names
    assert set(os.listdir(nfs_server.export / "big-dir")) == names

    # through a fresh mount (nothing cached), with attributes as `ls -l` wants them
    fresh = mount_efsfuse("/")
    entries = list(os.scandir(fresh.path / "big-dir"))
    assert len(entries) == N
    assert {e.name for e in entries} == names
    assert all(e.is_file(follow_symlinks=False) for e in entries)
    assert all(e.stat(follow_symlinks=False).st_size == 0 for e in entries[::97])

    # Listings abandoned part way (closedir while the next batch is being
    # read ahead), then rewound and repeated, all give every entry once.
    for stop_after in (1, 700, 6000):
        it = os.scandir(fresh.path / "big-dir")
        for _ in range(stop_after):
            next(it)
        it.close()
    fd = os.open(fresh.path / "big-dir", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(2):
            os.lseek(fd, 0, os.SEEK_SET)
            assert sorted(os.listdir(fd)) == sorted(names)
    finally:
        os.close(fd)
    # Entries added after a listing began are seen by the next listing.
    (d / "late-comer").touch()
    assert len(os.listdir(fresh.path / "big-dir")) == N + 1


# Needs: a readdirplus reply built ahead of the kernel's call for it (fuse/dir.c)
# is not sent once an entry's attributes changed through the mount after it
# was built: the kernel would take the old ones as newer than its own.
def test_attributes_changed_during_a_listing(nfs_server, mount_efsfuse):
    m = mount_efsfuse("/")
    d = m.path / "changing-dir"
    d.mkdir()
    for i in range(4000):
        os.close(os.open(d / f"f{i:04d}", os.O_CREAT | os.O_WRONLY, 0o644))
    fresh = mount_efsfuse("/")
    fd_dir = fresh.path / "changing-dir"
    order = os.listdir(fd_dir)
    it = os.scandir(fd_dir)
    try:
        first = next(it)  # one getdents: the first reply; the next one is built
        changed = set(order[500:4000:37]) - {first.name}
        for name in changed:
            os.chmod(fd_dir / name, 0o600)
            os.truncate(fd_dir / name, 7)
        seen = {}
        for e in it:
            st = e.stat(follow_symlinks=False)
            seen[e.name] = (st.st_mode & 0o777, st.st_size)
    finally:
        it.close()
    assert len(seen) == 3999
    stale = {n: seen[n] for n in changed if seen.get(n) != (0o600, 7)}
    assert not stale, f"{len(stale)} of {len(changed)} listed with old attributes, e.g. {list(stale.items())[:3]}"
    unchanged = set(order) - changed - {first.name}
    assert all(seen[n] == (0o644, 0) for n in unchanged)


def getdents_names(path, bufsize):
    """Every name in path, read with getdents64 and a buffer of bufsize bytes
    (the kernel asks FUSE for about as much per call)."""
    import ctypes
    import struct
    libc = ctypes.CDLL(None, use_errno=True)
    SYS_getdents64 = 217  # x86_64
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    buf = ctypes.create_string_buffer(bufsize)
    names = []
    try:
        while True:
            n = libc.syscall(SYS_getdents64, fd, buf, bufsize)
            if n < 0:
                raise OSError(ctypes.get_errno(), "getdents64")
            if n == 0:
                return names
            pos = 0
            while pos < n:
                _ino, _off, reclen, _type = struct.unpack_from("<QqHB", buf.raw, pos)
                name = buf.raw[pos + 19:pos + reclen].split(b"\0", 1)[0].decode()
                if name not in (".", ".."):
                    names.append(name)
                pos += reclen
    finally:
        os.close(fd)


# Needs: a reply that fills up on a second name of an inode it already holds
# (hard links) keeps that inode for the names before it.
def test_hard_links_fill_a_small_reply(nfs_server, mount_efsfuse):
    m = mount_efsfuse("/")
    d = m.path / "links-dir"
    d.mkdir()
    (d / "target").write_bytes(b"x")
    for i in range(300):
        os.link(d / "target", d / f"link-{i:03d}")
    fresh = mount_efsfuse("/")
    expected = {"target"} | {f"link-{i:03d}" for i in range(300)}
    for bufsize in (4096, 1000):
        names = getdents_names(fresh.path / "links-dir", bufsize)
        assert sorted(names) == sorted(expected)
    assert os.stat(fresh.path / "links-dir" / "link-123").st_nlink == 301
