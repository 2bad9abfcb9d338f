"""Data integrity: what is written through a mount is what is read back, and what the server stores.

Every test checks its data three ways where it can: through the mount that
wrote it, through a fresh mount (cold page cache, so the bytes come from the
server), and straight from the export directory after efsfuse has unmounted
and exited. `make valgrind` runs this file under valgrind.
"""
import hashlib
import mmap
import os
import random
import threading

import pytest

from conftest import sha256

MiB = 1 << 20


@pytest.fixture
def mnt(mount_efsfuse):
    return mount_efsfuse("/")


@pytest.fixture
def testdir(mnt, request):
    """A fresh directory named after the test at the root of the mount."""
    d = mnt.path / ("data-" + request.node.name)
    d.mkdir()
    return d


# Needs: WRITE at any offset and length (unaligned, across 1 MiB request
# boundaries), READ at any offset and length, size updates, COMMIT at close.
def test_random_offsets_and_sizes(nfs_server, mount_efsfuse, mnt, testdir):
    rng = random.Random(1234)
    expect = bytearray()
    fd = os.open(testdir / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        for _ in range(150):
            off = rng.randrange(0, 3 * MiB)
            size = rng.choice([1, 7, 511, 4095, 4097, 65537, MiB - 1, MiB + 3])
            data = rng.randbytes(size)
            assert os.pwrite(fd, data, off) == size
            if len(expect) < off + size:
                expect.extend(bytes(off + size - len(expect)))
            expect[off:off + size] = data
        # reads through the same open file at odd places
        for _ in range(100):
            off = rng.randrange(0, len(expect) + 10)
            size = rng.choice([1, 13, 4097, MiB + 17])
            assert os.pread(fd, size, off) == expect[off:off + size], (off, size)
    finally:
        os.close(fd)
    expect = bytes(expect)
    assert (testdir / "f").read_bytes() == expect

    other = mount_efsfuse("/")
    with open(other.path / testdir.name / "f", "rb") as f:
        for _ in range(50):
            off = rng.randrange(0, len(expect))
            size = rng.choice([3, 5000, MiB])
            f.seek(off)
            assert f.read(size) == expect[off:off + size]
        f.seek(0)
        assert f.read() == expect
    other.unmount()
    mnt.unmount()
    assert (nfs_server.export / testdir.name / "f").read_bytes() == expect


# Needs: holes stay holes (no zero-filling writes), reads of holes, size from SETATTR/WRITE.
def test_sparse_file(nfs_server, mnt, testdir):
    p = testdir / "sparse"
    size = 10 * MiB + 3
    with open(p, "wb") as f:
        f.write(b"start")
        f.seek(5 * MiB)
        f.write(b"middle")
        f.seek(10 * MiB)
        f.write(b"end")
    assert p.stat().st_size == size
    with open(p, "rb") as f:
        assert f.read(4096) == b"start" + bytes(4091)
        f.seek(5 * MiB - 2)
        assert f.read(10) == bytes(2) + b"middle" + bytes(2)
        f.seek(10 * MiB - 1)
        assert f.read() == b"\0end"
    # extended by truncate: the new part reads as zeros
    os.truncate(p, size + MiB)
    with open(p, "rb") as f:
        f.seek(size - 3)
        assert f.read() == b"end" + bytes(MiB)
    mnt.unmount()
    host = nfs_server.export / testdir.name / "sparse"
    st = host.stat()
    assert st.st_size == size + MiB
    assert st.st_blocks * 512 < 2 * MiB, "the holes were written out as zeros"
    data = host.read_bytes()
    assert data[:5] == b"start" and data[5 * MiB:5 * MiB + 6] == b"middle"
    assert data.count(0) == len(data) - len("startmiddleend")


# Needs: 1 MiB WRITEs with many in flight, 1 MiB READs, COMMIT on fsync.
def test_64mib_file_in_1mib_blocks(nfs_server, mount_efsfuse, mnt, testdir):
    rng = random.Random(64)
    block = rng.randbytes(MiB)
    digest = hashlib.sha256()
    fd = os.open(testdir / "big", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    try:
        for i in range(64):
            data = bytes([i]) + block[1:]  # every block different
            assert os.write(fd, data) == MiB
            digest.update(data)
        os.fsync(fd)
    finally:
        os.close(fd)
    expect = digest.hexdigest()
    assert (testdir / "big").stat().st_size == 64 * MiB
    assert sha256(testdir / "big") == expect
    # cold cache: a fresh mount reads it from the server
    other = mount_efsfuse("/")
    assert sha256(other.path / testdir.name / "big") == expect
    other.unmount()
    mnt.unmount()
    assert sha256(nfs_server.export / testdir.name / "big") == expect


# Needs: overwrite in place (partial pages), SETATTR size down after writes, in order.
def test_overwrite_in_place_and_truncate(nfs_server, mnt, testdir):
    p = testdir / "ow"
    base = random.Random(7).randbytes(3 * MiB)
    p.write_bytes(base)
    patch = random.Random(8).randbytes(12345)
    with open(p, "r+b") as f:
        f.seek(1_000_001)
        f.write(patch)
        f.truncate(2_500_000)
        f.seek(0, os.SEEK_END)
        f.write(b"tail")
    expect = (base[:1_000_001] + patch + base[1_000_001 + len(patch):])[:2_500_000] + b"tail"
    assert p.read_bytes() == expect
    mnt.unmount()
    assert (nfs_server.export / testdir.name / "ow").read_bytes() == expect


# Needs: many creates and small writes, empty files, one-byte files.
def test_many_small_files(nfs_server, mnt, testdir):
    rng = random.Random(99)
    contents = {f"s{i}": rng.randbytes(i * 37 % 5000) for i in range(200)}
    contents["one"] = b"1"
    for n, data in contents.items():
        (testdir / n).write_bytes(data)
    for n, data in contents.items():
        assert (testdir / n).read_bytes() == data
    mnt.unmount()
    for n, data in contents.items():
        assert (nfs_server.export / testdir.name / n).read_bytes() == data


# Needs: several files written at once (requests of different files interleaved).
def test_concurrent_writers(nfs_server, mnt, testdir):
    blobs = {f"w{i}": random.Random(i).randbytes(4 * MiB + i * 1000) for i in range(4)}

    def writer(name):
        fd = os.open(testdir / name, os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            data = memoryview(blobs[name])
            for off in range(0, len(data), 300_000):
                os.pwrite(fd, data[off:off + 300_000], off)
        finally:
            os.close(fd)

    threads = [threading.Thread(target=writer, args=(n,)) for n in blobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n, data in blobs.items():
        assert (testdir / n).read_bytes() == data
    mnt.unmount()
    for n, data in blobs.items():
        assert (nfs_server.export / testdir.name / n).read_bytes() == data


# Needs: a write through one descriptor is read through another at once (same mount).
def test_read_own_writes_through_second_descriptor(mnt, testdir):
    p = testdir / "two-fds"
    w = os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)
    r = os.open(p, os.O_RDONLY)
    try:
        os.write(w, b"first")
        assert os.pread(r, 100, 0) == b"first"
        os.pwrite(w, b"F", 0)
        assert os.pread(r, 100, 0) == b"First"
    finally:
        os.close(w)
        os.close(r)


# Needs: small files read along with their OPEN (up to 64 KiB) answer the
# kernel's reads with the right bytes at every offset, and larger ones read on.
def test_small_files_read_with_open(nfs_server, mnt, testdir):
    rng = random.Random(77)
    sizes = [0, 1, 4095, 4096, 5000, 65535, 65536, 65537, 200000]
    srv = nfs_server.export / testdir.name
    for size in sizes:
        (srv / f"s{size}").write_bytes(rng.randbytes(size))
    for size in sizes:
        expect = (srv / f"s{size}").read_bytes()
        # Whole, in odd-sized pieces, and from the middle and past the end.
        assert (testdir / f"s{size}").read_bytes() == expect
        # The first read straight to FUSE (O_DIRECT, aligned buffer).
        buf = mmap.mmap(-1, 8192)
        fd = os.open(testdir / f"s{size}", os.O_RDONLY | os.O_DIRECT)
        try:
            n = os.preadv(fd, [buf], 0)
            assert buf[:n] == expect[:8192]
        finally:
            os.close(fd)
            buf.close()
        with open(testdir / f"s{size}", "rb", buffering=0) as f:
            got = b"".join(iter(lambda: f.read(777), b""))
        assert got == expect
        with open(testdir / f"s{size}", "rb", buffering=0) as f:
            f.seek(size // 2)
            assert f.read() == expect[size // 2:]
            f.seek(size + 10)
            assert f.read() == b""


# Needs: data read along with the OPEN is not used once a write of ours (or
# a truncate) through another descriptor changed the file after it was read.
def test_small_file_read_after_local_change(nfs_server, mnt, testdir):
    srv = nfs_server.export / testdir.name
    (srv / "w").write_bytes(b"old content here")
    (srv / "t").write_bytes(b"to be truncated")
    r = os.open(testdir / "w", os.O_RDONLY)  # small: its data comes with the OPEN
    try:
        with open(testdir / "w", "r+b") as w:
            w.write(b"NEW")
        assert os.pread(r, 100, 0) == b"NEW content here"
    finally:
        os.close(r)
    r = os.open(testdir / "t", os.O_RDONLY)
    try:
        os.truncate(testdir / "t", 2)
        assert os.pread(r, 100, 0) == b"to"
    finally:
        os.close(r)


# Needs: the copy read along with the OPEN answers one read only: a process
# polling a file with O_DIRECT sees a change made on the server after its
# first read.
def test_direct_reads_after_the_first_go_to_the_server(nfs_server, mnt, testdir):
    srv = nfs_server.export / testdir.name / "polled"
    srv.write_bytes(b"a" * 10000)
    buf = mmap.mmap(-1, 4096)  # O_DIRECT wants an aligned buffer
    fd = os.open(testdir / "polled", os.O_RDONLY | os.O_DIRECT)
    try:
        assert os.preadv(fd, [buf], 0) == 4096 and buf[:4] == b"aaaa"
        with open(srv, "r+b") as f:  # another client's change, on the server
            f.write(b"bbbb")
        assert os.preadv(fd, [buf], 0) == 4096 and buf[:4] == b"bbbb"
    finally:
        os.close(fd)
        buf.close()


# Needs: shared writable mmap (page writeback becomes WRITE), mmap reads.
def test_mmap(nfs_server, mnt, testdir):
    p = testdir / "mapped"
    p.write_bytes(bytes(3 * 4096 + 100))
    with open(p, "r+b") as f:
        with mmap.mmap(f.fileno(), 0) as m:
            m[0:5] = b"hello"
            m[4096 * 3:4096 * 3 + 5] = b"world"
            m.flush()
    data = p.read_bytes()
    assert data[:5] == b"hello" and data[3 * 4096:3 * 4096 + 5] == b"world"
    with open(p, "rb") as f:
        with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
            assert m[:5] == b"hello"
    mnt.unmount()
    host = (nfs_server.export / testdir.name / "mapped").read_bytes()
    assert host == data and len(host) == 3 * 4096 + 100
