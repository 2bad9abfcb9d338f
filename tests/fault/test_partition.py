"""A network partition: ganesha in a network namespace reached over a veth
pair from another one where efsfuse runs; nftables drops everything in and
out of the server's namespace for 30 s, then the rules go.

A hard mount (workload with an oracle) waits it out with no application
error and resumes. A soft mount, during the partition, fails each request
within timeo x retrans (plus a little for the loop to notice) and works
again after healing.
"""
import errno
import os
import shutil
import threading
import time

import pytest

from conftest import integration
from faultlib import NetPair, Workload, diff_trees, log_events, snapshot

TIMEO = 2
RETRANS = 2
PARTITION = 30  # seconds
SLACK = 1.5  # seconds past timeo x retrans that a soft error may take
RECOVER_WITHIN = 20  # seconds after healing (reconnect backoff is at most 5 s)

pytestmark = pytest.mark.skipif(not shutil.which("nft"), reason="nft missing (make deps)")


@pytest.fixture
def netpair():
    pair = NetPair()
    yield pair
    pair.remove()


@pytest.fixture
def ns_server(netpair, tmp_path):
    server = integration.Server(tmp_path / "ganesha", host=netpair.server_addr,
                                netns=netpair.server_ns)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def ns_mount(ns_server, netpair, tmp_path):
    """mount(opts) -> Mount of ns_server by an efsfuse in the client's namespace."""
    gen = integration.mount_factory(ns_server, tmp_path)
    make = next(gen)
    yield lambda opts: make("/", opts=opts, prefix=netpair.client_prefix())
    next(gen, None)  # unmount everything, check the exits


class SoftProber:
    """mkdir of new names in a loop on a soft mount: (start, seconds, errno or 0)."""

    def __init__(self, root):
        self.root = root
        self.results = []
        self.n = 0

    def run(self, stop):
        while not stop.is_set():
            self.n += 1
            start = time.monotonic()
            try:
                os.mkdir(self.root / f"p{self.n}")
                err = 0
            except OSError as e:
                err = e.errno
            self.results.append((start, time.monotonic() - start, err))
            if err:
                continue
            time.sleep(0.05)


@pytest.mark.needs_efsfuse
def test_partition_hard_waits_soft_fails_in_time(efsfuse_bin, netpair, ns_server, ns_mount):
    hard = ns_mount([f"timeo={TIMEO}"])
    # Long entry/attr timeouts: otherwise the kernel revalidates the cached
    # path first, and a failed revalidation costs a second request (a fresh
    # LOOKUP) before the syscall fails: 2 x timeo x retrans.
    soft = ns_mount(["soft", f"timeo={TIMEO}", f"retrans={RETRANS}", "entry_timeout=3600",
                     "attr_timeout=3600"])
    root = hard.path / f"partition-{time.monotonic_ns()}"
    root.mkdir()
    soft_root = soft.path / root.name / "soft"
    soft_root.mkdir()
    work = Workload(root / "hard", seed=4242)
    work.root.mkdir()
    prober = SoftProber(soft_root)
    stop, soft_stop = threading.Event(), threading.Event()
    threads = [threading.Thread(target=work.run, args=(stop,), daemon=True),
               threading.Thread(target=prober.run, args=(soft_stop,), daemon=True)]
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        assert work.done > 0 and prober.results, "no progress before the partition"
        netpair.partition()
        cut = time.monotonic()
        time.sleep(PARTITION / 2)
        # Connections given up are gone with what they had not delivered,
        # not lingering to deliver stale requests once the network heals.
        socks = netpair.client_sockets()
        time.sleep(PARTITION / 2)
        done_at_heal = work.done
        soft_stop.set()
        netpair.heal()
        healed = time.monotonic()
        while time.monotonic() < healed + RECOVER_WITHIN and work.done == done_at_heal \
                and not work.errors:
            time.sleep(0.05)
        hard_resumed = time.monotonic() - healed
        threads[1].join(RECOVER_WITHIN)
        # The soft mount works again: a new name can be made (retrying while
        # the connection is re-established; each try fails within its deadline).
        soft_ok = None
        while time.monotonic() < healed + RECOVER_WITHIN:
            try:
                (soft_root / "after").mkdir()
                soft_ok = time.monotonic() - healed
                break
            except OSError:
                time.sleep(0.2)
        time.sleep(1)
    finally:
        netpair.heal()  # (already, unless the test failed on the way)
        stop.set()
        soft_stop.set()
        for t in threads:
            t.join(60)
    assert not any(t.is_alive() for t in threads), "a worker hung"

    # Hard: no error, resumed, and the tree is right.
    assert not work.errors, f"hard mount errors: {work.errors}\n{hard.stderr()[-3000:]}"
    assert work.done > done_at_heal, f"hard mount did not resume:\n{hard.stderr()[-3000:]}"
    assert diff_trees(snapshot(work.root), work.expected()) == []

    assert not [s for s in socks if s.startswith(("FIN-WAIT", "LAST-ACK", "CLOSING"))], socks

    # Soft: errors during the partition, each within timeo x retrans.
    limit = TIMEO * RETRANS + SLACK
    failed = [(s - cut, d, e) for s, d, e in prober.results if e]
    assert failed, f"the soft mount saw no error in a {PARTITION} s partition"
    assert all(e in (errno.ETIMEDOUT, errno.EIO) for _, _, e in failed), failed
    assert all(d <= limit for _, d, _ in failed), \
        f"soft errors slower than {limit} s: {[f for f in failed if f[1] > limit]}"
    during = [f for f in failed if 0 <= f[0] <= PARTITION]
    assert len(during) >= PARTITION // limit - 1, failed
    assert soft_ok is not None, f"soft mount unusable after healing:\n{soft.stderr()[-3000:]}"
    (soft_root / "after" / "file").write_bytes(b"works")
    assert (soft_root / "after" / "file").read_bytes() == b"works"

    hard.unmount()
    soft.unmount()
    exported = ns_server.export / work.root.relative_to(hard.path)
    assert diff_trees(snapshot(exported), work.expected()) == []

    lost = log_events(hard.stderr(), r"not responding")
    latencies = sorted(d for _, d, _ in during)
    print(f"\npartition {PARTITION} s, timeo={TIMEO}, retrans={RETRANS}: hard mount resumed "
          f"{hard_resumed:.2f} s after healing ({len(lost)} connections given up); soft: "
          f"{len(during)} errors (errno {sorted({e for _, _, e in during})}), latency "
          f"{latencies[0]:.2f}..{latencies[-1]:.2f} s (limit {TIMEO * RETRANS} s), usable again "
          f"{soft_ok:.2f} s after healing")


@pytest.mark.needs_efsfuse
def test_black_hole_default_timeo_replaced_after_healing(efsfuse_bin, netpair, ns_server,
                                                        ns_mount):
    """The same drop for 20 s under a hard mount with the default timeo (10 s):
    TCP itself would retry the old connection only at its next backed-off
    retransmission, so efsfuse must notice within seconds (NULL probe
    unanswered), give it up and have a new connection working within 5 s of
    healing."""
    hole, within = 20, 5
    m = ns_mount([])
    root = m.path / f"blackhole-{time.monotonic_ns()}"
    root.mkdir()
    work = Workload(root, seed=77)
    stop = threading.Event()
    thread = threading.Thread(target=work.run, args=(stop,), daemon=True)
    thread.start()
    try:
        time.sleep(2)
        assert work.done > 0, "no progress before the black hole"
        netpair.partition()
        cut = time.time()
        time.sleep(hole)
        done_at_heal = work.done
        netpair.heal()
        healed, healed_mono = time.time(), time.monotonic()
        while time.monotonic() < healed_mono + 30 and work.done == done_at_heal \
                and not work.errors:
            time.sleep(0.05)
        resumed = time.monotonic() - healed_mono
        time.sleep(1)
    finally:
        netpair.heal()
        stop.set()
        thread.join(60)
    assert not thread.is_alive(), "the worker hung"
    log = m.stderr()
    assert not work.errors, f"app-visible errors: {work.errors}\n{log[-3000:]}"
    assert work.done > done_at_heal, f"no progress after healing:\n{log[-3000:]}"
    lost = [t for t, _ in log_events(log, r"not responding") if t >= cut]
    assert lost, f"the black hole was never detected:\n{log[-3000:]}"
    # Detected by the probe in seconds (2 s silence + 3 s unanswered), long
    # before the default timeo of 10 s would have run out twice.
    assert lost[0] - cut < 10, f"detected only {lost[0] - cut:.1f} s into the hole"
    assert resumed < within, f"resumed {resumed:.1f} s after healing:\n{log[-3000:]}"
    assert diff_trees(snapshot(root), work.expected()) == []
    m.unmount()
    exported = ns_server.export / root.relative_to(m.path)
    assert diff_trees(snapshot(exported), work.expected()) == []
    back = [t for t, _ in log_events(log, r"^reconnected to") if t >= cut]
    print(f"\nblack hole {hole} s, timeo=10: 'not responding' at "
          f"{[round(t - cut, 2) for t in lost]} s, reconnected at "
          f"{[round(t - cut, 2) for t in back]} s after the cut; healed at "
          f"{healed - cut:.2f} s; work resumed {resumed:.2f} s after healing")
