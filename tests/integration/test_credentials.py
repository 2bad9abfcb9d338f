"""Credentials: every request carries the caller's uid, gid and supplementary groups.

The tests act as uid/gid 1000 through setpriv on a mount with allow_other.
With default_permissions the kernel checks modes first; without it every
decision is the server's, made from the AUTH_SYS credentials efsfuse sends --
both are run.
"""
import os

import pytest

from conftest import USER_GID, USER_UID, run_as_user

GROUP = 2000  # a supplementary group the user is given only when a test says so


@pytest.fixture(params=["default_permissions", "server_checks"])
def shared(nfs_server, mount_efsfuse, request):
    """(mount dir, server dir): a world-writable directory of this test, usable by every uid."""
    opts = ["allow_other"] + (["default_permissions"] if request.param == "default_permissions" else [])
    m = mount_efsfuse("/", opts)
    name = "creds-" + request.node.name.replace("[", "-").replace("]", "")
    d = m.path / name
    d.mkdir()
    os.chmod(d, 0o777)
    return d, nfs_server.export / name


# Needs: AUTH_SYS with the caller's uid; the server's (or kernel's) mode check.
def test_user_denied_root_private_file(shared):
    d, srv = shared
    secret = d / "secret"
    secret.write_text("root only")
    os.chmod(secret, 0o600)
    r = run_as_user(["cat", secret])
    assert r.returncode != 0 and "Permission denied" in r.stderr, r
    r = run_as_user(["sh", "-c", f"echo x >> {secret}"])
    assert r.returncode != 0 and "Permission denied" in r.stderr, r
    r = run_as_user(["test", "-r", secret])
    assert r.returncode == 1  # access(2) says no as well
    r = run_as_user(["chmod", "666", secret])
    assert r.returncode != 0 and "not permitted" in r.stderr, r
    assert secret.read_text() == "root only"
    assert (srv / "secret").stat().st_mode & 0o777 == 0o600


# Needs: creates (files, directories, symlinks) owned by the caller on the server.
def test_files_created_by_user_are_owned_by_user(shared):
    d, srv = shared
    r = run_as_user(["sh", "-c", f"echo mine > {d}/byuser && mkdir {d}/dir1000 && "
                                 f"ln -s byuser {d}/link1000 && mkfifo {d}/fifo1000"])
    assert r.returncode == 0, r.stderr
    for name in ("byuser", "dir1000", "link1000", "fifo1000"):
        st = os.lstat(srv / name)
        assert (st.st_uid, st.st_gid) == (USER_UID, USER_GID), name
        st = os.lstat(d / name)
        assert (st.st_uid, st.st_gid) == (USER_UID, USER_GID), name
    assert (srv / "byuser").read_text() == "mine\n"
    # the owner may change its own file's mode; root's file stays out of reach
    r = run_as_user(["chmod", "600", d / "byuser"])
    assert r.returncode == 0, r.stderr
    assert (srv / "byuser").stat().st_mode & 0o777 == 0o600


# Needs: an O_EXCL create (EXCLUSIVE4, then SETATTR of mode and times) owned
# by the caller, with the mode asked for.
def test_exclusive_create_by_user(shared):
    d, srv = shared
    script = ("import os, sys; fd = os.open(sys.argv[1], os.O_CREAT | os.O_EXCL | os.O_WRONLY,"
              " 0o600); os.write(fd, b'excl'); os.close(fd)")
    r = run_as_user(["/usr/bin/python3", "-c", script, d / "excl1000"])
    assert r.returncode == 0, r.stderr
    for st in (os.stat(srv / "excl1000"), os.stat(d / "excl1000")):
        assert (st.st_uid, st.st_gid) == (USER_UID, USER_GID)
        assert st.st_mode & 0o7777 == 0o600, oct(st.st_mode)
    assert (srv / "excl1000").read_bytes() == b"excl"
    r = run_as_user(["/usr/bin/python3", "-c", script, d / "excl1000"])
    assert r.returncode != 0 and "FileExistsError" in r.stderr, r


# Needs: the caller's uid on CREATE/OPEN; the server's (or kernel's) check of the directory.
def test_user_cannot_create_in_root_directory(shared):
    d, srv = shared
    (d / "rootdir").mkdir(mode=0o755)
    r = run_as_user(["touch", d / "rootdir" / "nope"])
    assert r.returncode != 0 and "Permission denied" in r.stderr, r
    r = run_as_user(["mkdir", d / "rootdir" / "nope"])
    assert r.returncode != 0
    assert os.listdir(srv / "rootdir") == []


# Needs: supplementary groups in AUTH_SYS (gids list), for files and directories.
def test_supplementary_group_grants_access(shared):
    d, srv = shared
    grp = d / "groupfile"
    grp.write_text("for group 2000")
    os.chown(grp, 0, GROUP)
    os.chmod(grp, 0o640)
    gdir = d / "groupdir"
    gdir.mkdir()
    os.chown(gdir, 0, GROUP)
    os.chmod(gdir, 0o770)

    r = run_as_user(["cat", grp])
    assert r.returncode != 0 and "Permission denied" in r.stderr, r
    r = run_as_user(["touch", gdir / "without-group"])
    assert r.returncode != 0

    r = run_as_user(["cat", grp], groups=[GROUP])
    assert r.returncode == 0 and r.stdout == "for group 2000", r
    r = run_as_user(["touch", gdir / "with-group"], groups=[GROUP])
    assert r.returncode == 0, r.stderr
    st = (srv / "groupdir" / "with-group").stat()
    assert st.st_uid == USER_UID
    assert os.listdir(srv / "groupdir") == ["with-group"]


# Needs: the mount refuses other users without allow_other (libfuse/kernel).
@pytest.mark.needs_efsfuse
def test_other_users_locked_out_without_allow_other(mount_efsfuse):
    m = mount_efsfuse("/")
    r = run_as_user(["ls", m.path])
    assert r.returncode != 0 and "Permission denied" in r.stderr, r
