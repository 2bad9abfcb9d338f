"""Credentials: requests carry the caller's uid, gid and groups; subtree and read-only mounts."""
import errno
import os

import pytest

from conftest import run_as


@pytest.fixture
def shared(nfs_server, mount_efsfuse, request):
    """A world-writable directory of this test, on a mount every uid may use."""
    m = mount_efsfuse("/", ["allow_other", "default_permissions"])
    d = m.path / ("creds-" + request.node.name)
    d.mkdir()
    os.chmod(d, 0o777)
    yield d
    m.unmount()


def test_other_user_denied_private_file(shared, nfs_server):
    secret = shared / "secret"
    secret.write_text("root only")
    os.chmod(secret, 0o600)
    r = run_as(1000, 1000, [], ["cat", str(secret)])
    assert r.returncode != 0 and "Permission denied" in r.stderr
    r = run_as(1000, 1000, [], ["sh", "-c", f"echo x > {secret}"])
    assert r.returncode != 0
    assert secret.read_text() == "root only"


def test_files_created_by_user_are_owned_by_user(shared, nfs_server):
    r = run_as(1000, 1000, [], ["sh", "-c", f"echo mine > {shared}/byuser && mkdir {shared}/dir1000"])
    assert r.returncode == 0, r.stderr
    for name in ("byuser", "dir1000"):
        st = os.stat(nfs_server.export / shared.name / name)
        assert (st.st_uid, st.st_gid) == (1000, 1000)
        st = os.stat(shared / name)
        assert (st.st_uid, st.st_gid) == (1000, 1000)


def test_supplementary_group_grants_access(shared, nfs_server):
    grp = shared / "groupfile"
    grp.write_text("for group 2000")
    os.chown(grp, 0, 2000)
    os.chmod(grp, 0o640)
    assert run_as(1000, 1000, [], ["cat", str(grp)]).returncode != 0
    r = run_as(1000, 1000, [2000], ["cat", str(grp)])
    assert r.returncode == 0, r.stderr
    assert r.stdout == "for group 2000"


def test_subtree_mount_shows_only_subtree(nfs_server, mount_efsfuse):
    root = mount_efsfuse("/")
    (root.path / "claims" / "pvc-1").mkdir(parents=True)
    (root.path / "claims" / "pvc-1" / "inside").write_text("in")
    (root.path / "claims" / "outside").write_text("out")
    m = mount_efsfuse("/claims/pvc-1")
    assert os.listdir(m.path) == ["inside"]
    assert (m.path / "inside").read_text() == "in"
    # ".." at the mount's root is the directory the mount sits in, not the server's
    assert "outside" not in os.listdir(m.path / "..")
    assert not os.path.exists(m.path / ".." / "outside")
    (m.path / "new").write_text("n")
    assert (root.path / "claims" / "pvc-1" / "new").read_text() == "n"
    m.unmount()
    root.unmount()


def test_read_only_mount(nfs_server, mount_efsfuse):
    rw = mount_efsfuse("/")
    (rw.path / "ro-file").write_text("keep")
    ro = mount_efsfuse("/", ["ro"])
    assert (ro.path / "ro-file").read_text() == "keep"
    for op in (lambda: (ro.path / "ro-file").write_text("changed"),
               lambda: (ro.path / "ro-new").write_text("x"),
               lambda: os.mkdir(ro.path / "ro-dir"),
               lambda: os.unlink(ro.path / "ro-file"),
               lambda: os.chmod(ro.path / "ro-file", 0o600)):
        with pytest.raises(OSError) as e:
            op()
        assert e.value.errno == errno.EROFS
    assert (rw.path / "ro-file").read_text() == "keep"
    ro.unmount()
    rw.unmount()


def test_ten_thousand_entries(nfs_server, mount_efsfuse):
    m = mount_efsfuse("/")
    d = m.path / "big-dir"
    d.mkdir()
    names = {f"file-{i:05d}" for i in range(10000)}
    for n in names:
        fd = os.open(d / n, os.O_CREAT | os.O_WRONLY, 0o644)
        os.close(fd)
    listed = os.listdir(d)
    assert len(listed) == 10000
    assert set(listed) == names
    # through a fresh mount, with attributes (ls -l)
    m2 = mount_efsfuse("/")
    entries = list(os.scandir(m2.path / "big-dir"))
    assert len(entries) == 10000
    assert all(e.stat(follow_symlinks=False).st_size == 0 for e in entries[:100])
    m2.unmount()
    m.unmount()
