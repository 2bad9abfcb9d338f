"""Data integrity: what is written through the mount is what the server stores."""
import os
import random
import subprocess

from conftest import sha256


def test_random_offsets_and_sizes(nfs_server, mount_efsfuse):
    m = mount_efsfuse("/")
    d = m.path / "data-random"
    d.mkdir(exist_ok=True)
    rng = random.Random(1234)
    expect = bytearray()
    fd = os.open(d / "f", os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
    for _ in range(200):
        off = rng.randrange(0, 3 * 1024 * 1024)
        size = rng.choice([1, 7, 511, 4095, 4097, 65537, 1 << 20, (1 << 20) + 3])
        data = rng.randbytes(size)
        os.pwrite(fd, data, off)
        if len(expect) < off + size:
            expect.extend(bytes(off + size - len(expect)))
        expect[off:off + size] = data
    os.close(fd)
    with open(d / "f", "rb") as f:
        assert f.read() == bytes(expect)
    m.unmount()
    # straight from the server's disk, after the mount is gone
    with open(nfs_server.export / "data-random" / "f", "rb") as f:
        assert f.read() == bytes(expect)


def test_sparse_file(nfs_server, mount_efsfuse):
    m = mount_efsfuse("/")
    p = m.path / "sparse"
    with open(p, "wb") as f:
        f.seek(10 * 1024 * 1024)
        f.write(b"end")
    assert p.stat().st_size == 10 * 1024 * 1024 + 3
    with open(p, "rb") as f:
        assert f.read(4096) == bytes(4096)
        f.seek(10 * 1024 * 1024)
        assert f.read() == b"end"
    m.unmount()
    assert (nfs_server.export / "sparse").stat().st_size == 10 * 1024 * 1024 + 3


def test_large_file_dd(nfs_server, mount_efsfuse, tmp_path):
    src = tmp_path / "src"
    src.write_bytes(os.urandom(64 << 20))
    m = mount_efsfuse("/")
    r = subprocess.run(["dd", f"if={src}", f"of={m.path / 'big'}", "bs=1M", "conv=fsync"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert sha256(m.path / "big") == sha256(src)
    # read back with a cold page cache through a fresh mount
    m.unmount()
    m2 = mount_efsfuse("/")
    assert sha256(m2.path / "big") == sha256(src)
    m2.unmount()
    assert sha256(nfs_server.export / "big") == sha256(src)


def test_overwrite_in_place_and_truncate(nfs_server, mount_efsfuse):
    m = mount_efsfuse("/")
    p = m.path / "ow"
    base = os.urandom(3 << 20)
    p.write_bytes(base)
    patch = os.urandom(12345)
    with open(p, "r+b") as f:
        f.seek(1_000_001)
        f.write(patch)
        f.truncate(2_500_000)
    expect = (base[:1_000_001] + patch + base[1_000_001 + len(patch):])[:2_500_000]
    assert p.read_bytes() == expect
    m.unmount()
    assert (nfs_server.export / "ow").read_bytes() == expect


def test_many_small_files(nfs_server, mount_efsfuse):
    m = mount_efsfuse("/")
    d = m.path / "small"
    d.mkdir()
    contents = {f"s{i}": os.urandom(i * 37 % 5000) for i in range(200)}
    for n, data in contents.items():
        (d / n).write_bytes(data)
    for n, data in contents.items():
        assert (d / n).read_bytes() == data
    m.unmount()
    for n, data in contents.items():
        assert (nfs_server.export / "small" / n).read_bytes() == data

