"""A black hole: for 20 s nothing passes in either direction while the
connection stays open (tcpproxy's blackhole mode), during a workload on a
hard mount.

efsfuse must notice on its own (a request overdue, the server silent, a NULL
probe unanswered for timeo), replace the connection (more than once: the new
ones lead into the same hole), and once the path heals carry on within 5 s
with no application error; the tree must equal the workload's model.
"""
import threading
import time

import pytest

from faultlib import Workload, diff_trees, log_events, snapshot

TIMEO = 2  # seconds; the probe fires after min(timeo, 2) s of silence, fails min(timeo, 3) s later
HOLE = 20  # seconds of black hole
RESUME_WITHIN = 5  # seconds after healing


@pytest.mark.needs_efsfuse
def test_black_hole_hard_mount_resumes(efsfuse_bin, nfs_server, mount_efsfuse, fault_proxy):
    proxy = fault_proxy(nfs_server.port, control=True)
    m = mount_efsfuse("/", opts=[f"timeo={TIMEO}"], port=proxy.port)
    top = m.path / f"blackhole-{time.monotonic_ns()}"
    top.mkdir()
    roots = [top / f"w{i}" for i in range(2)]
    for r in roots:
        r.mkdir()
    work = [Workload(r, seed=100 + i) for i, r in enumerate(roots)]
    stop = threading.Event()
    threads = [threading.Thread(target=w.run, args=(stop,), daemon=True) for w in work]
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        assert all(w.done > 0 for w in work), "no progress before the black hole"
        proxy.control("blackhole\n")
        hole_start = time.time()
        time.sleep(HOLE)
        done_at_heal = [w.done for w in work]
        proxy.control("pass\n")
        healed = time.time()
        healed_mono = time.monotonic()
        # Progress: every worker completes an operation it had not before.
        while time.monotonic() < healed_mono + 30:
            if all(w.done > d for w, d in zip(work, done_at_heal)) or \
                    any(w.errors for w in work):
                break
            time.sleep(0.05)
        resumed_after = time.monotonic() - healed_mono
        time.sleep(2)  # and keeps going
    finally:
        proxy.control("pass\n")  # (already, unless the test failed on the way)
        stop.set()
        for t in threads:
            t.join(60)
    assert not any(t.is_alive() for t in threads), "a worker hung"

    log = m.stderr()
    errors = [(w.root.name, op, e) for w in work for op, e in w.errors]
    assert not errors, f"app-visible errors: {errors}\n{log[-4000:]}"
    # Detected during the hole: the liveness probe went unanswered.
    lost = [t for t, _ in log_events(log, r"not responding") if hole_start <= t <= healed]
    assert lost, f"the black hole was never detected:\n{log[-3000:]}"
    assert resumed_after < RESUME_WITHIN, \
        f"work resumed {resumed_after:.1f} s after healing, not within {RESUME_WITHIN} s\n" \
        f"{log[-3000:]}"
    for w in work:
        assert diff_trees(snapshot(w.root), w.expected()) == [], f"{w.root} through the mount"
    m.unmount()
    for w in work:
        exported = nfs_server.export / w.root.relative_to(m.path)
        assert diff_trees(snapshot(exported), w.expected()) == [], f"{exported} in the export"

    reconnects = [t for t, _ in log_events(log, r"^reconnected to") if t >= hole_start]
    print(f"\nblack hole {HOLE} s, timeo={TIMEO}: first 'not responding' "
          f"{lost[0] - hole_start:.2f} s into the hole, {len(lost)} connections given up, "
          f"{len(reconnects)} reconnects; work resumed {resumed_after:.2f} s after healing")
