"""Connection resets during a mixed workload (tcpproxy --reset-every-ms).

The proxy between efsfuse and ganesha resets every connection every 1.5 s
while three workers create, write, rename, link, symlink, mkdir, rmdir,
unlink and list. A small delay in the proxy keeps calls in flight, so resets
catch requests the server has executed but whose replies are lost: their
retransmissions must not surface as ENOENT/EEXIST. No operation may fail,
and the tree must equal the workload's model, through the mount and in the
export after unmount.
"""
import re
import threading
import time

import pytest

from faultlib import Workload, diff_trees, log_events, snapshot

WORKERS = 3
DURATION = 15  # seconds of workload under resets
RESET_MS = 1500


@pytest.mark.needs_efsfuse
def test_resets_during_mixed_workload(efsfuse_bin, nfs_server, mount_efsfuse, fault_proxy):
    proxy = fault_proxy(nfs_server.port, "--delay-ms", "1", "--reset-every-ms", str(RESET_MS))
    m = mount_efsfuse("/", port=proxy.port)
    top = m.path / "resets"
    top.mkdir(exist_ok=True)
    roots = []
    for i in range(WORKERS):
        r = top / f"w{i}-{time.monotonic_ns()}"
        r.mkdir()
        roots.append(r)
    work = [Workload(r, seed=i * 7919 + 1) for i, r in enumerate(roots)]
    stop = threading.Event()
    threads = [threading.Thread(target=w.run, args=(stop,), daemon=True) for w in work]
    for t in threads:
        t.start()
    time.sleep(DURATION)
    stop.set()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a worker hung after the resets stopped"

    errors = [(w.root.name, op, e) for w in work for op, e in w.errors]
    assert not errors, f"app-visible errors under resets: {errors}\n{m.stderr()[-4000:]}"
    assert all(w.done > 50 for w in work), [w.done for w in work]
    resets = log_events(m.stderr(), r"^reconnected to")
    assert len(resets) >= 3, f"only {len(resets)} reconnects: the test did not test:\n" \
                             f"{m.stderr()[-3000:]}"

    # Nothing else went wrong underneath (e.g. an open-owner losing its
    # sequence because a replayed OPEN or CLOSE was answered wrongly).
    unexpected = [e for _, e in log_events(m.stderr(), r"") if not re.search(
        r"^(server .*: Connection reset by peer; reconnecting|reconnected to|"
        r".* resent after a reconnect )", e)]
    levels = re.findall(r"^\S+ efsfuse\[\d+\] (warn|error) nfs: (.*)$", m.stderr(), re.M)
    assert not [msg for _, msg in levels if msg in unexpected], levels
    for w in work:
        assert diff_trees(snapshot(w.root), w.expected()) == [], f"{w.root} through the mount"
    m.unmount()
    for w in work:
        exported = nfs_server.export / w.root.relative_to(m.path)
        assert diff_trees(snapshot(exported), w.expected()) == [], f"{exported} in the export"
    settled = log_events(m.stderr(), r"resent after a reconnect")
    print(f"{sum(w.done for w in work)} operations, {len(resets)} reconnects, "
          f"{len(settled)} retransmissions settled: {[e for _, e in settled]}")
