"""A mount of a claim's subtree (SOURCE 127.0.0.1:/claims/pvc-1) shows that subtree only."""
import os

import pytest


@pytest.fixture
def claim(nfs_server, mount_efsfuse, request):
    """(root mount dir of the claims, claim path on the server): /claims-<test>/pvc-1 with a
    file inside it and one beside it."""
    root = mount_efsfuse("/")
    claims = root.path / ("claims-" + request.node.name)
    (claims / "pvc-1" / "deeper").mkdir(parents=True)
    (claims / "pvc-1" / "inside").write_text("in")
    (claims / "outside").write_text("out")
    (claims / "pvc-2").mkdir()
    return claims, f"/{claims.name}/pvc-1"


# Needs: PUTROOTFH + LOOKUP of each SOURCE path component at mount; that handle as root.
def test_subtree_mount_shows_only_subtree(nfs_server, mount_efsfuse, claim):
    claims, path = claim
    m = mount_efsfuse(path)
    assert sorted(os.listdir(m.path)) == ["deeper", "inside"]
    assert (m.path / "inside").read_text() == "in"
    (m.path / "new").write_text("n")
    assert (claims / "pvc-1" / "new").read_text() == "n"
    assert (nfs_server.export / claims.name / "pvc-1" / "new").read_text() == "n"
    # nothing from outside the claim can be named through the mount
    for escape in ("../outside", "../pvc-2", "../../" + claims.name, "deeper/../../outside"):
        assert not os.path.exists(m.path / escape), escape


# Needs: ".." of the mount's root is the kernel's business (never a LOOKUP of the
# server's parent directory); ".." below the root stays inside.
def test_dotdot_at_root_stays_inside(mount_efsfuse, claim):
    claims, path = claim
    m = mount_efsfuse(path)
    parent = os.stat(m.path / "..")
    assert (parent.st_dev, parent.st_ino) == (os.stat(m.path.parent).st_dev,
                                              os.stat(m.path.parent).st_ino)
    assert set(os.listdir(m.path / "..")) == set(os.listdir(m.path.parent))
    fd = os.open(m.path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        up = os.stat("..", dir_fd=fd)
        assert up.st_ino == os.stat(m.path.parent).st_ino
    finally:
        os.close(fd)
    # below the root ".." is the mount's own root
    assert os.stat(m.path / "deeper" / "..").st_ino == os.stat(m.path).st_ino
    assert sorted(os.listdir(m.path / "deeper" / "..")) == ["deeper", "inside"]


# Needs: SOURCE paths with several components and a trailing slash.
def test_nested_subtree_mount(nfs_server, mount_efsfuse, claim):
    claims, path = claim
    m = mount_efsfuse(path + "/deeper/")
    assert os.listdir(m.path) == []
    (m.path / "x").write_text("deep")
    assert (nfs_server.export / claims.name / "pvc-1" / "deeper" / "x").read_text() == "deep"
