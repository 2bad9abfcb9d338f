"""Fault test 1: the server is killed (kill -9) in the middle of a 256 MiB
write with periodic fsync and comes back 5 s later on the same port and
export. In hard mode (the default) the writer sees no error at all, and the
file on the server is exactly what was written."""
import hashlib
import subprocess
import sys

from conftest import Mount, wait_for

SIZE_MIB = 256
FSYNC_EVERY_MIB = 16
DOWNTIME_S = 5.0
# The writer's whole run, outage included; generous for ASan and a loaded host.
WRITER_TIMEOUT_S = 240

# Writes SIZE_MIB blocks of 1 MiB, each a fixed random block stamped with its
# index, fsyncs every FSYNC_EVERY_MIB, closes, and prints the sha256 of all it
# wrote. Progress ("written N") goes to stdout so the test can time the crash.
WRITER = r"""
import hashlib, os, sys
path, size_mib, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
block = bytearray(os.urandom(1 << 20))
h = hashlib.sha256()
fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
for i in range(size_mib):
    block[:8] = i.to_bytes(8, "little")
    view = memoryview(block)
    while view:
        view = view[os.write(fd, view):]
    h.update(block)
    if (i + 1) % every == 0:
        os.fsync(fd)
        print("written", i + 1, flush=True)
os.close(fd)
print("sha256", h.hexdigest(), flush=True)
"""


def test_writer_rides_out_server_kill(own_server, tmp_path):
    mnt = tmp_path / "m"
    mnt.mkdir()
    m = Mount(own_server, mnt, "/", [], tmp_path / "efsfuse.log")
    writer = None
    try:
        out_path = tmp_path / "writer.out"
        with open(out_path, "w") as out:
            writer = subprocess.Popen([sys.executable, "-c", WRITER, str(mnt / "big"),
                                       str(SIZE_MIB), str(FSYNC_EVERY_MIB)],
                                      stdout=out, stderr=subprocess.STDOUT)

        def progress():
            lines = [ln for ln in out_path.read_text().splitlines() if ln.startswith("written")]
            return int(lines[-1].split()[1]) if lines else 0

        # Crash while a good part is still to come: after the first fsyncs.
        assert wait_for(lambda: progress() >= 2 * FSYNC_EVERY_MIB or writer.poll() is not None,
                        timeout=120), "the writer made no progress"
        assert writer.poll() is None, f"the writer ended before the crash:\n{out_path.read_text()}"
        at_crash = progress()
        own_server.crash_and_restart(downtime=DOWNTIME_S)

        rc = writer.wait(timeout=WRITER_TIMEOUT_S)
        report = out_path.read_text()
        assert rc == 0, f"the writer saw an error (exit {rc}):\n{report}"
        assert at_crash < SIZE_MIB, "the crash came after the last write"
        written_sha = [ln.split()[1] for ln in report.splitlines() if ln.startswith("sha256")][0]

        # What the server holds is exactly what was written.
        on_server = own_server.export / "big"
        assert on_server.stat().st_size == SIZE_MIB << 20
        h = hashlib.sha256()
        with open(on_server, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        assert h.hexdigest() == written_sha
        # And through the mount.
        with open(mnt / "big", "rb") as f:
            h2 = hashlib.sha256()
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h2.update(chunk)
        assert h2.hexdigest() == written_sha
        m.unmount()
    finally:
        if writer and writer.poll() is None:
            writer.kill()
            writer.wait()
        m.cleanup()
