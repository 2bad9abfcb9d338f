"""-o dircache: local answers for names that do not exist (fuse/dircache.c).

FUSE looks every new name up before creating it. In a directory efsfuse
made itself, and changed since only by its own requests (the change_info
of each reply says so), it knows every name and, with -o dircache, answers
those lookups without a round trip. It is off by default because it gives
up close-to-open for names another client makes there (unseen for up to
negative_timeout). A proxy that counts COMPOUNDs by tag and their answers
by status shows what goes to the server; a second mount plays another
client.
"""
import os
import subprocess
import time

import pytest

from rpcproxy import ReplyDropper

FILES = 40


@pytest.fixture
def counter(nfs_server):
    with ReplyDropper(nfs_server.port) as p:
        yield p


NFS4ERR_NOENT = 2


def sent(proxy, tag):
    with proxy.lock:
        return proxy.calls[tag]


def absent_lookups(proxy):
    """LOOKUPs the server answered NOENT."""
    with proxy.lock:
        return proxy.replies[("lookup", NFS4ERR_NOENT)]


def create(path):
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))


@pytest.mark.needs_efsfuse
def test_creates_in_a_directory_we_made_send_no_lookup(efsfuse_bin, nfs_server, mount_efsfuse,
                                                       counter):
    m = mount_efsfuse("/", port=counter.port, opts=["dircache"])
    d = m.path / f"made-{time.monotonic_ns()}"
    d.mkdir()
    (d / "sub").mkdir()
    lookups, opens = absent_lookups(counter), sent(counter, "open")
    for i in range(FILES):
        create(d / f"f{i}")
    create(d / "sub" / "inner")
    os.symlink("f0", d / "link")
    os.link(d / "f1", d / "hard")
    os.rename(d / "f2", d / "sub" / "moved")
    os.unlink(d / "f3")
    with pytest.raises(FileNotFoundError):
        os.stat(d / "f3")
    with pytest.raises(FileNotFoundError):
        os.stat(d / "never-made")
    assert sent(counter, "open") - opens == FILES + 1
    # (Names that exist may be looked up again as the kernel revalidates.)
    assert absent_lookups(counter) - lookups == 0, \
        "names known to be absent were looked up on the server"
    assert sorted(os.listdir(d)) == sorted(
        [f"f{i}" for i in range(FILES) if i not in (2, 3)] + ["sub", "link", "hard"])
    assert sorted(os.listdir(d / "sub")) == ["inner", "moved"]
    m.unmount()
    exported = nfs_server.export / d.name
    assert sorted(os.listdir(exported / "sub")) == ["inner", "moved"]
    assert not (exported / "f3").exists() and (exported / "hard").exists()


@pytest.mark.needs_efsfuse
def test_names_made_by_another_client_are_seen(efsfuse_bin, nfs_server, mount_efsfuse, counter):
    """Another client's create ends what we know: at once when our next change
    to the directory reports a change attribute that is not ours, and without
    one within negative_timeout, like the kernel's own negative entries."""
    ours = mount_efsfuse("/", port=counter.port, opts=["dircache", "negative_timeout=1"])
    other = mount_efsfuse("/")
    name = f"shared-{time.monotonic_ns()}"
    d = ours.path / name
    d.mkdir()
    create(d / "mine")
    with pytest.raises(FileNotFoundError):
        os.stat(d / "theirs")  # answered locally, and cached by the kernel
    create(other.path / name / "theirs")

    # Our next change shows a change attribute we did not make.
    create(d / "mine2")
    lookups = sent(counter, "lookup")
    # (The kernel may still hold its negative entry for up to 1 s.)
    deadline = time.monotonic() + 5
    while not os.path.exists(d / "theirs"):
        assert time.monotonic() < deadline, "another client's file stayed invisible"
        time.sleep(0.05)
    assert sent(counter, "lookup") > lookups, "the name was never looked up again"

    # Without any change of ours: visible once negative_timeout has passed.
    d2 = ours.path / f"{name}-quiet"
    d2.mkdir()
    with pytest.raises(FileNotFoundError):
        os.stat(d2 / "later")
    t0 = time.monotonic()
    create(other.path / d2.name / "later")
    while not os.path.exists(d2 / "later"):
        assert time.monotonic() - t0 < 5, "another client's file stayed invisible"
        time.sleep(0.05)
    assert time.monotonic() - t0 < 2.5


@pytest.mark.needs_efsfuse
@pytest.mark.parametrize("opts", [[], ["dircache", "negative_timeout=0"]],
                         ids=["default", "no-negative-caching"])
def test_no_local_answers_unless_asked(efsfuse_bin, nfs_server, mount_efsfuse, counter, opts):
    """By default, and without negative caching, every absent name is asked."""
    m = mount_efsfuse("/", port=counter.port, opts=opts)
    d = m.path / f"strict-{time.monotonic_ns()}"
    d.mkdir()
    lookups = absent_lookups(counter)
    for i in range(5):
        create(d / f"f{i}")
    assert absent_lookups(counter) - lookups == 5, counter.replies


@pytest.mark.needs_efsfuse
def test_tar_into_tracked_directories(efsfuse_bin, nfs_server, mount_efsfuse, counter, tmp_path):
    """tar makes most of its names in directories it has just made: the tree
    must come out exactly as from a local extraction, without one LOOKUP
    answered NOENT by the server below the top directory."""
    src = tmp_path / "src"
    for i in range(6):
        sub = src / f"d{i}" / "nested"
        sub.mkdir(parents=True)
        for j in range(8):
            (sub / f"f{j}").write_bytes(os.urandom(97 * j))
        os.symlink("nested/f1", src / f"d{i}" / "link")
        os.link(sub / "f2", src / f"d{i}" / "hard")
    tarball = tmp_path / "t.tar"
    subprocess.run(["tar", "-C", str(src), "-cf", str(tarball), "."], check=True)
    local = tmp_path / "local"
    local.mkdir()
    subprocess.run(["tar", "-C", str(local), "-xf", str(tarball)], check=True)

    m = mount_efsfuse("/", port=counter.port, opts=["dircache"])
    top = m.path / f"tar-{time.monotonic_ns()}"
    top.mkdir()
    lookups = absent_lookups(counter)
    subprocess.run(["tar", "-C", str(top), "-xf", str(tarball)], check=True)
    assert absent_lookups(counter) - lookups == 0
    assert snapshot(top) == snapshot(local)
    subprocess.run(["rm", "-rf", str(top / "d0")], check=True)
    (top / "d0").mkdir()
    assert os.listdir(top / "d0") == []
    m.unmount()
    expected = {k: v for k, v in snapshot(local).items() if not k.startswith("d0/")}
    assert snapshot(nfs_server.export / top.name) == expected


def snapshot(root):
    """{relative path: (kind, content or target)} of a tree."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = ("link", os.readlink(p))
            elif os.path.isdir(p):
                out[rel] = ("dir",)
            else:
                with open(p, "rb") as f:
                    out[rel] = ("file", f.read())
    return out
