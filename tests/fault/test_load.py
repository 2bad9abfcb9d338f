"""Fault test 7: load with faults.

Eight processes run the mixed workload (faultlib.Workload: create, write,
rename, link, symlink, mkdir, rmdir, unlink, readdir) for two minutes
through a proxy that resets the connection every few seconds, while the
server is killed (kill -9) and restarted twice on the same port and export.
No operation may fail, every tree must equal its model (through the mount
and in the export after unmount), and efsfuse must not leak: its resident
memory and open descriptors at the end are what they were after warm-up.
Under `make test-asan` the same run must also end with a clean ASan exit
(the mount fixture asserts efsfuse's exit status).
"""
import multiprocessing
import os
import time

import pytest

from conftest import integration
from faultlib import Workload, diff_trees, log_events, snapshot

WORKERS = 8
DURATION = float(os.environ.get("EFSFUSE_LOAD_SECONDS", "120"))
RESET_MS = 4000
WARMUP = min(20.0, DURATION / 6)
CRASHES = (0.3, 0.65)  # when the server is killed, as fractions of DURATION
DOWNTIME = 2.0
RSS_SLACK_KIB = 16 << 10


def proc_status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def worker(root, seed, stop, results):
    """One process's workload; reports (root, errors, done, diff, expected)."""
    w = Workload(root, seed=seed)
    w.run(stop, max_errors=3)
    diff = diff_trees(snapshot(root), w.expected())
    results.put((str(root), [f"{op}: {e!r}" for op, e in w.errors], w.done, diff,
                 w.expected()))


@pytest.fixture
def own_mount(own_server, tmp_path):
    """mount(**how) -> Mount of own_server; unmounted and checked at teardown."""
    gen = integration.mount_factory(own_server, tmp_path)
    yield next(gen)
    next(gen, None)


@pytest.mark.needs_efsfuse
def test_load_with_resets_and_server_kills(efsfuse_bin, own_server, own_mount, fault_proxy):
    proxy = fault_proxy(own_server.port, "--delay-ms", "0.2", "--reset-every-ms", str(RESET_MS))
    m = own_mount("/", port=proxy.port)
    procs = []
    try:
        pid = m.proc.pid
        top = m.path / "load"
        top.mkdir()
        roots = [top / f"w{i}" for i in range(WORKERS)]
        for r in roots:
            r.mkdir()

        ctx = multiprocessing.get_context("fork")
        stop = ctx.Event()
        results = ctx.Queue()
        procs += [ctx.Process(target=worker, args=(r, 1000 + i, stop, results))
                  for i, r in enumerate(roots)]
        t0 = time.monotonic()
        for p in procs:
            p.start()

        time.sleep(WARMUP)
        rss_warm = proc_status_kib(pid, "VmRSS")
        fds_warm = fd_count(pid)
        for frac in CRASHES:
            time.sleep(max(0.0, t0 + frac * DURATION - time.monotonic()))
            own_server.crash_and_restart(downtime=DOWNTIME)
        time.sleep(max(0.0, t0 + DURATION - time.monotonic()))
        stop.set()

        reports = []
        for _ in procs:
            reports.append(results.get(timeout=120))
        for p in procs:
            p.join(30)
            assert p.exitcode == 0, f"a worker process died ({p.exitcode})"

        errors = [(root, e) for root, errs, _, _, _ in reports for e in errs]
        assert not errors, f"app-visible errors under load with faults: {errors}\n" \
                           f"{m.stderr()[-4000:]}"
        for root, _, done, diff, _ in reports:
            assert done > 100, f"{root}: only {done} operations in {DURATION:.0f} s"
            assert diff == [], f"{root} through the mount differs from its model: {diff}"
        assert len(log_events(m.stderr(), r"^reconnected to")) >= 3, \
            "too few reconnects: the faults did not happen"
        assert m.stderr().count("state recovered:") >= len(CRASHES), \
            "the state was not recovered after each server kill"

        # No leak: memory and descriptors back to the warm-up level.
        rss_end = proc_status_kib(pid, "VmRSS")
        fds_end = fd_count(pid)
        assert rss_end <= max(rss_warm * 3 // 2, rss_warm + RSS_SLACK_KIB), \
            f"RSS grew from {rss_warm} KiB after warm-up to {rss_end} KiB"
        assert fds_end <= fds_warm + 1, f"open descriptors grew from {fds_warm} to {fds_end}"

        m.unmount()
        for root, _, _, _, expected in reports:
            exported = own_server.export / os.path.relpath(root, m.path)
            assert diff_trees(snapshot(exported), expected) == [], f"{exported} in the export"
        print(f"{sum(r[2] for r in reports)} operations by {WORKERS} processes in "
              f"{time.monotonic() - t0:.0f} s; RSS {rss_warm} -> {rss_end} KiB, "
              f"fds {fds_warm} -> {fds_end}")
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
