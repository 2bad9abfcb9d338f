#!/usr/bin/python3
"""run_bench.py: the `make bench` driver.

    tests/bench/run_bench.py [--quick] [--out DIR] [--runs N] [--check]

Starts a private nfs-ganesha (scripts/ganesha.sh) on a free loopback port
exporting a directory on local disk, then measures, in one run:

  * the NFS ceiling (build/bench/nfs_ceiling, our nfsclient without FUSE) and
    the naive baseline (build/bench/naive_libnfs, libnfs's synchronous API);
  * the same file workloads through an efsfuse mount, through the null FUSE
    filesystem (build/bench/null_fs, the FUSE ceiling) and on a local
    directory;
  * efsfuse's start-to-live-mount time and its memory (VmRSS idle, VmHWM);
  * sequential read/write through a 1 ms RTT proxy (build/fault/tcpproxy)
    for efsfuse and for nfs_ceiling;
  * sequential read and write through efsfuse and nfs_ceiling back to back
    (the sequential targets' figures: see phase_paired).

Every figure is the median of --runs runs (3; 1 with --quick); min and max are
kept in results.json. Writes DIR/results.json, DIR/results.md and
DIR/ratios.png and prints the table and a last line "bench: K of N targets met".
A tool that is not built is reported as "not available" and its targets are
skipped (they count as not met).

Only loopback traffic; every process is stopped by its PID and every mount is
unmounted, also on failure or Ctrl-C. Needs root (drop_caches, FUSE mounts).
Python standard library only; the chart uses gnuplot (Debian gnuplot-nox).
"""
import argparse
import json
import multiprocessing
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("BUILD", REPO / "build"))
if not BUILD.is_absolute():
    BUILD = REPO / BUILD
EFSFUSE = Path(os.environ.get("EFSFUSE_BIN", BUILD / "efsfuse"))
NFS_CEILING = Path(os.environ.get("NFS_CEILING_BIN", BUILD / "bench" / "nfs_ceiling"))
NAIVE = Path(os.environ.get("NAIVE_LIBNFS_BIN", BUILD / "bench" / "naive_libnfs"))
NULL_FS = Path(os.environ.get("NULL_FS_BIN", BUILD / "bench" / "null_fs"))
TCPPROXY = Path(os.environ.get("TCPPROXY_BIN", BUILD / "fault" / "tcpproxy"))
GANESHA_SH = REPO / "scripts" / "ganesha.sh"

MOUNT_TIMEOUT = 20
MIB = 1 << 20
PAIRED_FILE = "paired.dat"  # in the export: the file phase_paired reads
# Written (and removed through the server) by phase_paired's write pair.
PAIRED_WRITES = {"warm-up": "paired-warmup.dat", "ceiling": "paired-ceiling.dat",
                 "efsfuse": "paired-efsfuse.dat"}
DISK_IMAGE_GIB = 8  # sparse: 1 GiB files on the server and locally, the tarball twice


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mount_fstype(path):
    """fstype of the mount at path, or None."""
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[4] == path:
                return fields[sep + 1]
    return None


def drop_caches():
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError as e:
        log(f"cannot drop caches: {e}")


def machine_busy_s():
    """Busy CPU-seconds of the whole machine so far (every core; not idle or
    iowait), read as nfs_ceiling reads it: a figure's cost includes the
    server's and the kernel's work, which share the cores."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = \
            (int(x) for x in f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def pattern(size):
    """The bytes the prepared files hold (nfs_ceiling writes the same)."""
    return bytes((i * 131) & 0xFF for i in range(size))


def ceiling_figures(js):
    """nfs_ceiling's JSON as figures: each key_cpu / key_server_cpu (busy
    cores while key was measured: the machine's, the server's) becomes
    key_cpu_us / key_server_cpu_us, CPU microseconds per unit of key."""
    out = {}
    for k, v in js.items():
        for suffix in ("_server_cpu", "_cpu"):
            if k.endswith(suffix):
                rate = js.get(k[:-len(suffix)])
                if rate:
                    out[k + "_us"] = v / rate * 1e6
                break
        else:
            out[k] = v
    return out


def process_busy_s(pid):
    """CPU-seconds one process (all its threads) has used so far, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The command name may hold spaces and ')': count after the last.
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status_kib(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class Bench:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.out = Path(args.out).resolve()
        self.work = self.out / "work"
        self.runs = args.runs or (1 if self.quick else 3)
        if self.quick:
            self.size_mib, self.files, self.dir_entries, self.small_files = 128, 500, 2000, 2000
            self.fio_runtime, self.tar_src = 2, "/usr/include/linux"
        else:
            self.size_mib, self.files, self.dir_entries, self.small_files = 1024, 5000, 10000, 20000
            self.fio_runtime, self.tar_src = 5, "/usr/include"
        self.samples = {}          # group -> metric -> [values]
        self.notes = []            # "not available" and other remarks
        self.procs = []            # Popen of everything we started
        self.fs_pid = None         # the FUSE filesystem process last mounted
        self.mounts = []           # mountpoints we mounted
        # Where the server's export and the local twins live: a fresh ext4
        # image when loop devices work (see make_disk), else self.work.
        self.disk = self.work
        self.disk_mounted = False
        self.port = None

    # ---------- bookkeeping ----------

    def add(self, group, metric, value):
        if value is None:
            return
        self.samples.setdefault(group, {}).setdefault(metric, []).append(float(value))

    def note(self, msg):
        if msg not in self.notes:
            self.notes.append(msg)
            log(msg)

    def available(self, path, what):
        if os.access(path, os.X_OK):
            return True
        self.note(f"{what}: not available ({os.path.relpath(path, REPO)} is not built)")
        return False

    def run(self, argv, timeout, **kw):
        """Runs argv to completion (bounded); returns CompletedProcess."""
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             stdin=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            raise RuntimeError(f"{argv[0]} timed out after {timeout} s")
        finally:
            self.procs.remove(p)
        return subprocess.CompletedProcess(argv, p.returncode, out, err)

    # ---------- server, mounts, proxy ----------

    @property
    def server_dir(self):
        return self.disk / "ganesha"

    @property
    def export(self):
        return self.server_dir / "export"

    def make_disk(self):
        """A freshly made ext4 filesystem (sparse image on the local disk, loop
        mounted) for the export and the local directory. A long-used root
        filesystem makes every figure depend on its history: on these
        machines ext4's inode allocator, skipping thousands of recently
        deleted inodes, held creates on / to ~1,300/s where a fresh ext4 on
        the same disk does ~40,000/s, and in whichever order the ceiling and
        efsfuse happened to meet it.

        The loop device reads and writes the image with direct I/O: a
        buffered loop device caches every block twice (in the filesystem's
        page cache and in the image file's); at the ~8 GiB a full run writes
        per round, two copies outgrow this 24 GiB machine's memory in the
        second round, after which page-cache allocations (efsfuse's reads
        fill the FUSE mount's page cache; the NFS ceiling reads into one
        reused buffer) pay for reclaim: efsfuse's cold read back to back
        with the ceiling's fell from 0.81 of it in the first round to
        0.37-0.51 in the next two (0.73-1.05 with direct I/O)."""
        img = self.work / "disk.img"
        mnt = self.work / "disk"
        mnt.mkdir()
        try:
            with open(img, "wb") as f:
                f.truncate(DISK_IMAGE_GIB << 30)
            subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "nodiscard", str(img)], check=True,
                           timeout=120, capture_output=True)
            dev = subprocess.run(["losetup", "--find", "--show", "--direct-io=on", str(img)],
                                 timeout=60, capture_output=True, text=True)
            direct = dev.returncode == 0
            if direct:
                dev = dev.stdout.strip()
                try:
                    subprocess.run(["mount", dev, str(mnt)], check=True, timeout=60,
                                   capture_output=True)
                finally:
                    # Detached once unmounted (autoclear), as mount -o loop does.
                    subprocess.run(["losetup", "-d", dev], timeout=60, capture_output=True)
            else:
                self.note(f"loop device without direct I/O ({dev.stderr.strip()[-200:]})")
                subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], check=True,
                               timeout=60, capture_output=True)
        except (OSError, subprocess.SubprocessError) as e:
            err = getattr(e, "stderr", b"") or b""
            self.note(f"no fresh ext4 image ({e}: {err.decode(errors='replace').strip()[-200:]}); "
                      f"server and local directories on {self.work}'s filesystem")
            img.unlink(missing_ok=True)
            return
        self.disk = mnt
        self.disk_mounted = True
        log(f"fresh ext4 on {mnt} (loop{' with direct I/O' if direct else ''}, "
            f"{DISK_IMAGE_GIB} GiB sparse image)")

    def remove_disk(self):
        if self.disk_mounted:
            r = subprocess.run(["umount", str(self.disk)], timeout=120, capture_output=True)
            if r.returncode:
                subprocess.run(["umount", "-l", str(self.disk)], timeout=120,
                               capture_output=True)
            self.disk_mounted = False
            self.disk = self.work

    def start_server(self):
        if self.server_dir.exists():
            shutil.rmtree(self.server_dir)
        self.server_dir.mkdir(parents=True)
        self.port = free_port()
        subprocess.run([str(GANESHA_SH), "start", str(self.server_dir), str(self.port)],
                       check=True, timeout=60)
        log(f"nfs-ganesha on 127.0.0.1:{self.port}, export {self.export}")

    def stop_server(self):
        if self.port is not None:
            subprocess.run([str(GANESHA_SH), "stop", str(self.server_dir)], timeout=60)
            self.port = None

    def mount(self, kind, mnt, port=None, files=1, file_size=0, opts=()):
        """Starts efsfuse (with -o opts) or null_fs in the foreground on mnt and
        waits until the mount is live. Returns (Popen, seconds from start to live mount)."""
        mnt = Path(mnt)
        mnt.mkdir(parents=True, exist_ok=True)
        if mount_fstype(mnt):
            raise RuntimeError(f"{mnt} is already a mount")
        if kind == "efsfuse":
            argv = [str(EFSFUSE), "127.0.0.1:/", str(mnt), "-f",
                    "-o", ",".join([f"port={port or self.port}", *opts])]
        else:
            argv = [str(NULL_FS), str(mnt), "--files", str(files), "--file-size", str(file_size)]
        logf = open(self.work / f"{kind}.log", "a")
        t0 = time.monotonic()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
        logf.close()
        self.procs.append(p)
        deadline = t0 + MOUNT_TIMEOUT
        while not mount_fstype(mnt):
            if p.poll() is not None:
                self.procs.remove(p)
                raise RuntimeError(f"{kind} exited with {p.returncode}; see {self.work}/{kind}.log")
            if time.monotonic() > deadline:
                self.stop_proc(p)
                raise RuntimeError(f"{kind} did not mount in {MOUNT_TIMEOUT} s")
            time.sleep(0.001)
        elapsed = time.monotonic() - t0
        self.mounts.append(str(mnt))
        self.fs_pid = p.pid
        return p, elapsed

    def unmount(self, mnt, p):
        mnt = str(mnt)
        if mount_fstype(mnt):
            r = subprocess.run(["fusermount3", "-u", mnt], timeout=120, capture_output=True)
            if r.returncode != 0 and mount_fstype(mnt):
                time.sleep(0.5)
                subprocess.run(["fusermount3", "-u", "-z", mnt], timeout=60, capture_output=True)
        if mnt in self.mounts:
            self.mounts.remove(mnt)
        if self.fs_pid == p.pid:
            self.fs_pid = None
        self.stop_proc(p, grace=120)

    def stop_proc(self, p, grace=10):
        if p.poll() is None:
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.kill(p.pid, signal.SIGKILL)
                    p.wait()
        if p in self.procs:
            self.procs.remove(p)

    def start_proxy(self):
        """tcpproxy with 0.5 ms each way in front of the server: (Popen, port)."""
        p = subprocess.Popen([str(TCPPROXY), "--listen", "127.0.0.1:0", "--connect",
                              f"127.0.0.1:{self.port}", "--delay-ms", "0.5"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=open(self.work / "tcpproxy.log", "a"), text=True)
        self.procs.append(p)
        ready, _, _ = select.select([p.stdout], [], [], 10)
        line = p.stdout.readline().strip() if ready else ""
        if not line.startswith("port="):
            self.kill(p)
            raise RuntimeError(f"tcpproxy did not print port= (got {line!r})")
        # Keep draining its stdout so it never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
        return p, int(line.split("=", 1)[1])

    def kill(self, p):
        if p.poll() is None:
            os.kill(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()
        if p in self.procs:
            self.procs.remove(p)

    def cleanup(self):
        for mnt in list(self.mounts):
            if mount_fstype(mnt):
                subprocess.run(["fusermount3", "-u", mnt], timeout=60, capture_output=True)
                if mount_fstype(mnt):
                    subprocess.run(["fusermount3", "-u", "-z", mnt], timeout=60,
                                   capture_output=True)
            self.mounts.remove(mnt)
        for p in list(self.procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            self.kill(p)
        self.stop_server()
        self.remove_disk()

    # ---------- workloads (any directory) ----------

    def dd_write(self, path):
        t0 = time.monotonic()
        r = self.run(["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={self.size_mib}",
                      "conv=fsync"], timeout=900)
        t = time.monotonic() - t0
        if r.returncode:
            raise RuntimeError(f"dd write {path}: {r.stderr.strip()}")
        return self.size_mib / t

    def dd_read(self, path, mib=None):
        mib = mib or self.size_mib
        t0 = time.monotonic()
        r = self.run(["dd", f"if={path}", "of=/dev/null", "bs=1M", f"count={mib}"], timeout=900)
        t = time.monotonic() - t0
        if r.returncode:
            raise RuntimeError(f"dd read {path}: {r.stderr.strip()}")
        return mib / t

    def fio_randread(self, path, jobs):
        r = self.run(["fio", "--name=randread", f"--filename={path}", "--rw=randread", "--bs=4k",
                      "--direct=1", "--ioengine=psync", f"--numjobs={jobs}", "--group_reporting",
                      f"--size={self.size_mib}m", "--time_based",
                      f"--runtime={self.fio_runtime}", "--output-format=json"],
                     timeout=self.fio_runtime + 120)
        if r.returncode:
            raise RuntimeError(f"fio {path}: {r.stderr.strip()[-300:]}")
        js = json.loads(r.stdout[r.stdout.index("{"):])
        return js["jobs"][0]["read"]["iops"]

    @staticmethod
    def _parallel(n_threads, items, fn):
        """Runs fn(item) for every item on n_threads threads; returns seconds."""
        chunks = [items[i::n_threads] for i in range(n_threads)]
        errors = []

        def worker(chunk):
            try:
                for it in chunk:
                    fn(it)
            except OSError as e:
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(c,)) for c in chunks]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        t = time.monotonic() - t0
        if errors:
            raise errors[0]
        return t

    def meta(self, d, threads):
        """create, stat, unlink self.files empty files with `threads` threads: rates/s.

        Each thread works in its own subdirectory (as mdtest -u does): Linux
        holds a directory's i_rwsem exclusively across lookup and create, so
        threads creating in one directory run one at a time on every
        filesystem, local or FUSE, and would measure the kernel, not us."""
        d = Path(d)
        d.mkdir()
        subdirs = [d / f"t{t}" for t in range(threads)]
        for sd in subdirs:
            sd.mkdir()
        # names[i::threads] is thread i's share (see _parallel): keep it in t{i}.
        names = [str(subdirs[i % threads] / f"c{i:06d}") for i in range(self.files)]

        def create(n):
            os.close(os.open(n, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))

        rates = {}
        rates["create"] = self.files / self._parallel(threads, names, create)
        rates["stat"] = self.files / self._parallel(threads, names, os.stat)
        rates["unlink"] = self.files / self._parallel(threads, names, os.unlink)
        for sd in subdirs:
            sd.rmdir()
        os.rmdir(d)
        return rates

    def ls_l(self, d):
        t0 = time.monotonic()
        r = self.run(["ls", "-l", str(d)], timeout=600)
        t = time.monotonic() - t0
        if r.returncode:
            raise RuntimeError(f"ls -l {d}: {r.stderr.strip()}")
        return t, r.stdout.count("\n") - 1

    def warm_server_copies(self, d, names):
        """Reads the server's own copies of files: "cold" is about the client's
        caches, and the NFS ceiling reads files it has just written, while the
        prepared ones may have left the server's page cache since (some VMs
        page out idle file pages within a minute)."""
        for n in names:
            with open(os.path.join(d, n), "rb") as f:
                f.read()

    def small_reads(self, d, names, procs=8):
        """procs processes each open/read 4 KiB/close its share of names: files/s."""
        ctx = multiprocessing.get_context("fork")
        go = ctx.Event()
        errs = ctx.Queue()
        paths = [os.path.join(d, n) for n in names]

        def worker(chunk):
            try:
                go.wait(60)
                for pth in chunk:
                    fd = os.open(pth, os.O_RDONLY)
                    os.read(fd, 4096)
                    os.close(fd)
            except OSError as e:
                errs.put(str(e))

        ps = [ctx.Process(target=worker, args=(paths[i::procs],)) for i in range(procs)]
        for p in ps:
            p.start()
        time.sleep(0.2)
        t0 = time.monotonic()
        go.set()
        for p in ps:
            p.join(600)
            if p.is_alive():
                p.kill()
                p.join()
        t = time.monotonic() - t0
        if not errs.empty():
            raise RuntimeError(f"small-file reads: {errs.get()}")
        return len(paths) / t

    def tar_extract(self, d, tarball):
        d = Path(d)
        d.mkdir()
        t0 = time.monotonic()
        r = self.run(["tar", "-xf", str(tarball), "-C", str(d)], timeout=1800)
        t_x = time.monotonic() - t0
        if r.returncode:
            raise RuntimeError(f"tar -x into {d}: {r.stderr.strip()[-300:]}")
        t0 = time.monotonic()
        r = self.run(["rm", "-rf", str(d)], timeout=1800)
        t_rm = time.monotonic() - t0
        if r.returncode:
            raise RuntimeError(f"rm -rf {d}: {r.stderr.strip()[-300:]}")
        return t_x, t_rm

    # ---------- preparation ----------

    def make_tarball(self):
        name = "usr-include-linux.tar" if self.quick else "usr-include.tar"
        tb = self.out / name
        if not tb.exists():
            log(f"building {tb} from {self.tar_src}")
            tmp = tb.with_suffix(".tmp")
            with tarfile.open(tmp, "w") as t:
                t.add(self.tar_src, arcname=os.path.basename(self.tar_src))
            tmp.rename(tb)
        with tarfile.open(tb) as t:
            self.tar_entries = sum(1 for _ in t)
        self.tar_mib = tb.stat().st_size / MIB
        return tb

    def make_big_file(self, path, mib):
        block = pattern(MIB)
        with open(path, "wb") as f:
            for _ in range(mib):
                f.write(block)

    def make_files(self, d, n, size):
        """n files of `size` bytes named f000000.. in d (created on local disk)."""
        d = Path(d)
        d.mkdir(parents=True, exist_ok=True)
        data = pattern(size)
        for i in range(n):
            with open(d / f"f{i:06d}", "wb") as f:
                f.write(data)
        return [f"f{i:06d}" for i in range(n)]

    # ---------- phases ----------

    def phase_nfs(self, run_no):
        if self.available(NFS_CEILING, "nfs_ceiling"):
            log(f"run {run_no}: nfs_ceiling")
            t0 = time.monotonic()
            r = self.run([str(NFS_CEILING), "127.0.0.1", str(self.port),
                          "--size-mib", str(self.size_mib), "--files", str(self.files),
                          "--dir-entries", str(self.dir_entries),
                          "--server-pid", str(self.server_pid() or 0)], timeout=1200)
            if r.returncode:
                self.note(f"nfs_ceiling exited {r.returncode}: {r.stderr.strip()[-200:]}")
            try:
                for k, v in ceiling_figures(json.loads(r.stdout)).items():
                    self.add("nfs_ceiling", k, v)
            except ValueError:
                self.note("nfs_ceiling printed no JSON")
            self.add("runtime", "nfs_ceiling_s", time.monotonic() - t0)
        if self.available(NAIVE, "naive_libnfs"):
            log(f"run {run_no}: naive_libnfs")
            r = self.run([str(NAIVE), "127.0.0.1", str(self.port),
                          "--size-mib", str(self.size_mib)], timeout=1800)
            try:
                for k, v in json.loads(r.stdout).items():
                    if k.startswith("naive_"):
                        self.add("naive", k, v)
            except ValueError:
                self.note(f"naive_libnfs printed no JSON (exit {r.returncode}): "
                          f"{r.stderr.strip()[-200:]}")

    def server_pid(self):
        try:
            return int((self.server_dir / "server.pid").read_text())
        except (OSError, ValueError):
            return None

    def costed(self, group, key, fn, units):
        """Adds fn()'s figure, and the machine's CPU microseconds per unit of
        work while it ran (units(figure) units done) as key_cpu_us; through
        efsfuse also the server's part of them (key_server_cpu_us) and
        efsfuse's own (key_fs_cpu_us)."""
        parts = {"_cpu_us": machine_busy_s}
        if group == "efsfuse":
            server, fs = self.server_pid(), self.fs_pid
            if server:
                parts["_server_cpu_us"] = lambda: process_busy_s(server)
            if fs:
                parts["_fs_cpu_us"] = lambda: process_busy_s(fs)
        before = {suffix: read() for suffix, read in parts.items()}
        v = fn()
        after = {suffix: read() for suffix, read in parts.items()}
        self.add(group, key, v)
        n = units(v)
        for suffix in parts:
            if n and before[suffix] is not None and after[suffix] is not None:
                self.add(group, key + suffix, (after[suffix] - before[suffix]) / n * 1e6)
        return v

    def file_workloads(self, group, root, remount, cold, seq_read_file=None):
        """The seq/fio/meta/tar workloads in root. remount() gives a fresh (cold)
        root and returns it; cold is 'remount' or 'drop_caches'."""
        seq = Path(root) / "seq"
        log(f"{group}: sequential write {self.size_mib} MiB + fsync")
        self.add(group, "seq_write_mibps", self.dd_write(seq))
        read_file = Path(seq_read_file) if seq_read_file else seq
        if cold == "drop_caches":
            drop_caches()
        else:
            root = remount()
            read_file = Path(root) / read_file.name
            seq = Path(root) / "seq"
        log(f"{group}: sequential read cold, re-read")
        self.costed(group, "seq_read_cold_mibps", lambda: self.dd_read(read_file),
                    lambda _: self.size_mib)
        self.add(group, "seq_reread_mibps", self.dd_read(read_file))
        log(f"{group}: fio 4 KiB randread direct, 1 and 4 jobs")
        self.add(group, "randread_4k_iops_j1", self.fio_randread(read_file, 1))
        self.costed(group, "randread_4k_iops_j4", lambda: self.fio_randread(read_file, 4),
                    lambda iops: iops * self.fio_runtime)
        if seq.exists():  # null_fs forgets it at the remount
            os.unlink(seq)
        for threads in (1, 8):
            log(f"{group}: create/stat/unlink {self.files} files, {threads} thread(s)")
            rates = self.meta(Path(root) / f"meta{threads}", threads)
            for k, v in rates.items():
                self.add(group, f"{k}_per_s_t{threads}", v)
        log(f"{group}: tar -x {self.tar_entries} entries, rm -rf")
        t_x, t_rm = self.tar_extract(Path(root) / "tarx", self.tarball)
        self.add(group, "tar_extract_s", t_x)
        self.add(group, "rm_rf_s", t_rm)
        return root

    def ceiling_json(self, argv, what):
        """One nfs_ceiling run against the benchmark's server: its JSON, or {}."""
        r = self.run([str(NFS_CEILING), "127.0.0.1", str(self.port), *argv], timeout=900)
        try:
            return json.loads(r.stdout)
        except ValueError:
            self.note(f"nfs_ceiling {what} failed: {r.stderr.strip()[-200:]}")
            return {}

    def ls_l_paired(self, mnt, remount):
        """ls -l of the prepared directory through fresh mounts, paired with
        nfs_ceiling's listing of the same directory.

        The first listing meets nfs-ganesha's cache of the directory's
        attributes expired (they live 60 s there, and the runs are minutes
        apart), so the server stats every entry again: a context figure. The
        ceiling then lists it, and efsfuse once more on a fresh mount: both
        find the server's cache as the ceiling's own listing of the directory
        it has just made does, and efsfuse's kernel caches empty ("first")."""
        lsdir = mnt / "lsdir"
        t_cold, n = self.ls_l(lsdir)
        if n != self.dir_entries:
            self.note(f"efsfuse: ls -l listed {n} of {self.dir_entries} entries")
        self.add("efsfuse", "ls_l_server_cold_s", t_cold)
        if self.available(NFS_CEILING, "nfs_ceiling"):
            js = self.ceiling_json(["--list-dir", "lsdir"], "--list-dir")
            if js.get("list_dir_entries") == self.dir_entries:
                self.add("nfs_ceiling_paired", "list_dir_s", js["list_dir_s"])
        mnt = remount()
        t1, _ = self.ls_l(mnt / "lsdir")
        t2, _ = self.ls_l(mnt / "lsdir")
        self.add("efsfuse", "ls_l_first_s", t1)
        self.add("efsfuse", "ls_l_second_s", t2)

    def phase_efsfuse(self, run_no):
        if not self.available(EFSFUSE, "efsfuse"):
            return
        mnt = self.work / "mnt-efsfuse"
        state = {}

        def mount_one():
            p, t = self.mount("efsfuse", mnt)
            self.add("efsfuse", "mount_ms", t * 1000)
            state["p"] = p
            return p

        def note_hwm():
            hwm = proc_status_kib(state["p"].pid, "VmHWM")
            if hwm:
                state["hwm"] = max(state.get("hwm", 0), hwm)

        def unmount_timed():
            t0 = time.monotonic()
            self.unmount(mnt, state["p"])
            # fusermount3 -u until efsfuse has exited (write-back included).
            self.add("efsfuse", "unmount_ms", (time.monotonic() - t0) * 1000)

        def remount():
            note_hwm()
            unmount_timed()
            mount_one()
            return mnt

        log(f"run {run_no}: efsfuse")
        p = mount_one()
        time.sleep(1.0)
        self.add("efsfuse", "rss_idle_mib", (proc_status_kib(p.pid, "VmRSS") or 0) / 1024)
        try:
            d = mnt / "work"
            d.mkdir()
            self.file_workloads("efsfuse", d, lambda: remount() / "work", "remount")
            shutil.rmtree(d)
            # ls -l of the prepared directory and small-file reads, on a fresh mount.
            remount()
            log(f"efsfuse: ls -l {self.dir_entries} entries, paired with nfs_ceiling's listing")
            self.ls_l_paired(mnt, remount)
            log(f"efsfuse: 8 processes open/read 4 KiB/close over {self.small_files} files")
            self.warm_server_copies(self.export / "small", self.small_names)
            self.costed("efsfuse", "small_reads_per_s_p8",
                        lambda: self.small_reads(mnt / "small", self.small_names),
                        lambda _: len(self.small_names))
            self.add("efsfuse", "small_reads_warm_per_s_p8",
                     self.small_reads(mnt / "small", self.small_names))
        finally:
            note_hwm()
            unmount_timed()
        if state.get("hwm"):
            self.add("efsfuse", "rss_peak_mib", state["hwm"] / 1024)
        # Not a target (the targets are for the defaults): what -o dircache,
        # which saves the LOOKUP before each create, does to the create rate.
        log("efsfuse -o dircache: create, stat, unlink with 1 thread")
        p, _ = self.mount("efsfuse", mnt, opts=["dircache"])
        try:
            rates = self.meta(mnt / "meta-dircache", 1)
            self.add("efsfuse_dircache", "create_per_s_t1", rates["create"])
        finally:
            self.unmount(mnt, p)

    def phase_null(self, run_no):
        if not self.available(NULL_FS, "null_fs"):
            return
        mnt = self.work / "mnt-null"
        size = self.size_mib * MIB
        log(f"run {run_no}: null_fs")
        state = {}

        def remount():
            self.unmount(mnt, state["p"])
            state["p"], _ = self.mount("null_fs", mnt, files=1, file_size=size)
            return mnt

        state["p"], _ = self.mount("null_fs", mnt, files=1, file_size=size)
        try:
            self.file_workloads("null_fs", mnt, remount, "remount",
                                seq_read_file=mnt / "f000000")
        finally:
            self.unmount(mnt, state["p"])
        p, _ = self.mount("null_fs", mnt, files=self.dir_entries, file_size=4096)
        try:
            log(f"null_fs: ls -l {self.dir_entries} entries, twice")
            self.add("null_fs", "ls_l_first_s", self.ls_l(mnt)[0])
            self.add("null_fs", "ls_l_second_s", self.ls_l(mnt)[0])
        finally:
            self.unmount(mnt, p)
        p, _ = self.mount("null_fs", mnt, files=self.small_files, file_size=4096)
        try:
            log(f"null_fs: 8 processes open/read/close over {self.small_files} files")
            self.costed("null_fs", "small_reads_per_s_p8",
                        lambda: self.small_reads(mnt, self.small_names),
                        lambda _: len(self.small_names))
            self.add("null_fs", "small_reads_warm_per_s_p8",
                     self.small_reads(mnt, self.small_names))
        finally:
            self.unmount(mnt, p)

    def phase_connections(self, run_no):
        """Is one TCP connection what limits a sequential read? nfs_ceiling
        reads the prepared file with 32 READs in flight on one connection,
        then two nfs_ceiling processes read it at once with 16 each, on two
        connections (what -o nconnect=2 would give one client)."""
        if not self.available(NFS_CEILING, "nfs_ceiling"):
            return
        log(f"run {run_no}: sequential read on one connection and on two")
        opts = ["--read-file", PAIRED_FILE]
        self.warm_server_copies(self.export, [PAIRED_FILE])
        one = self.ceiling_json(opts + ["--depth", "32"], "--read-file").get("read_file_mibps_qd32")
        argv = [str(NFS_CEILING), "127.0.0.1", str(self.port), *opts, "--depth", "16"]
        t0 = time.monotonic()
        procs = [subprocess.Popen(argv, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True) for _ in range(2)]
        outs = [p.communicate(timeout=900)[0] for p in procs]
        elapsed = time.monotonic() - t0
        try:
            mib = sum(json.loads(o)["size_mib"] for o in outs)
        except (ValueError, KeyError):
            self.note("nfs_ceiling on two connections printed no JSON")
            return
        if all(p.returncode == 0 for p in procs) and one:
            self.add("nfs_ceiling_conns", "read_mibps_one_conn_qd32", one)
            # Wall time of both, start to end: neither can finish early unnoticed.
            self.add("nfs_ceiling_conns", "read_mibps_two_conns_qd16", mib / elapsed)

    def phase_paired(self, run_no):
        """Sequential read and write, each through efsfuse and the NFS
        ceiling back to back (the order alternating between runs): the
        sequential targets' figures.

        On these VMs the machine's speed drifts between the phases the other
        figures come from, and memory the guest has not used for a few
        seconds is handed back to the host (free page reporting), after
        which touching it again runs at ~550-850 MiB/s instead of ~2,500
        (measured with a 4 GiB anonymous mapping). A write into a new file
        fills the server's page cache with such memory: in the nfs phase
        the ceiling's qd16 write rewrites the file its qd4 run had just
        truncated and reuses warm pages, while efsfuse's write into a new
        file seconds later took ~300 MiB/s against ~1,100 for rewriting an
        existing one, and so did the ceiling's own writes into new files.
        Here both write a new file, which each removes through the server
        right after; an untimed write of the same size goes first.

        Each side runs twice per round, in the order A B B A (A alternating
        between rounds), and the round's figure is the mean of its two: the
        step that came second in a pair was often the slow one, whichever
        client it was (write pairs of one round: ceiling 906 then efsfuse
        494 MiB/s; efsfuse 894 then ceiling 216), which a single pair per
        round with 3 rounds would weigh 2 to 1 against one side."""
        if not (self.available(EFSFUSE, "efsfuse") and self.available(NFS_CEILING, "nfs_ceiling")):
            return
        log(f"run {run_no}: seq read cold and seq write, efsfuse and nfs_ceiling back to back")
        mnt = self.work / "mnt-paired"
        figures = {}  # "write efsfuse": [MiB/s, MiB/s]

        def ceiling_write(name):
            return self.ceiling_json(["--write-file", name, "--size-mib", str(self.size_mib),
                                      "--depth", "16"], "--write-file").get("write_file_mibps_qd16")

        def read_ceiling():
            self.warm_server_copies(self.export, [PAIRED_FILE])
            figures.setdefault("read ceiling", []).append(self.ceiling_json(
                ["--read-file", PAIRED_FILE, "--depth", "16"],
                "--read-file").get("read_file_mibps_qd16"))

        def read_efsfuse():
            self.warm_server_copies(self.export, [PAIRED_FILE])
            p, _ = self.mount("efsfuse", mnt)
            try:
                figures.setdefault("read efsfuse", []).append(self.dd_read(mnt / PAIRED_FILE))
            finally:
                self.unmount(mnt, p)

        def write_ceiling():
            figures.setdefault("write ceiling", []).append(
                ceiling_write(PAIRED_WRITES["ceiling"]))

        def write_efsfuse():
            p, _ = self.mount("efsfuse", mnt)
            try:
                f = mnt / PAIRED_WRITES["efsfuse"]
                figures.setdefault("write efsfuse", []).append(self.dd_write(f))
                os.unlink(f)
            finally:
                self.unmount(mnt, p)

        pairs = ((read_ceiling, read_efsfuse), (write_ceiling, write_efsfuse))
        for first, second in pairs:
            if first is write_ceiling:
                ceiling_write(PAIRED_WRITES["warm-up"])
            a, b = (first, second) if run_no % 2 else (second, first)
            for step in (a, b, b, a):
                step()

        def mean_of_two(key):
            v = figures.get(key, [])
            return statistics.mean(v) if len(v) == 2 and all(v) else None

        for kind, unit_key, ceiling_key in (("read", "seq_read_cold", "read_file_mibps_qd16"),
                                            ("write", "seq_write", "write_file_mibps_qd16")):
            ceiling, efsfuse = mean_of_two(f"{kind} ceiling"), mean_of_two(f"{kind} efsfuse")
            if ceiling and efsfuse:
                self.add("nfs_ceiling_paired", ceiling_key, ceiling)
                self.add("efsfuse_paired", f"{unit_key}_mibps", efsfuse)
                self.add("efsfuse_paired", f"{unit_key}_ratio", efsfuse / ceiling)

    def phase_local(self, run_no):
        log(f"run {run_no}: local directory")
        d = self.disk / "local"
        if d.exists():
            shutil.rmtree(d)
        d.mkdir()
        self.file_workloads("local", d, None, "drop_caches")
        drop_caches()
        self.add("local", "ls_l_first_s", self.ls_l(self.disk / "local-lsdir")[0])
        self.add("local", "ls_l_second_s", self.ls_l(self.disk / "local-lsdir")[0])
        drop_caches()
        self.add("local", "small_reads_per_s_p8",
                 self.small_reads(self.disk / "local-small", self.small_names))
        self.add("local", "small_reads_warm_per_s_p8",
                 self.small_reads(self.disk / "local-small", self.small_names))
        shutil.rmtree(d)

    def phase_proxy(self, run_no):
        if not self.available(TCPPROXY, "tcpproxy (1 ms RTT proxy)"):
            return
        log(f"run {run_no}: through the 1 ms RTT proxy")
        proxy, pport = self.start_proxy()
        try:
            if os.access(NFS_CEILING, os.X_OK):
                r = self.run([str(NFS_CEILING), "127.0.0.1", str(pport),
                              "--size-mib", str(self.size_mib), "--files", "1",
                              "--dir-entries", "1"], timeout=1800)
                try:
                    js = ceiling_figures(json.loads(r.stdout))
                    for k in ("seq_write_mibps_qd16", "seq_read_mibps_qd16",
                              "seq_read_mibps_qd16_cpu_us"):
                        self.add("nfs_ceiling_proxy", k, js.get(k))
                except ValueError:
                    self.note(f"nfs_ceiling through the proxy printed no JSON: "
                              f"{r.stderr.strip()[-200:]}")
            if os.access(EFSFUSE, os.X_OK):
                mnt = self.work / "mnt-proxy"
                p, _ = self.mount("efsfuse", mnt, port=pport)
                try:
                    f = mnt / "proxy-seq"
                    self.add("efsfuse_proxy", "seq_write_mibps", self.dd_write(f))
                finally:
                    self.unmount(mnt, p)
                p, _ = self.mount("efsfuse", mnt, port=pport)
                try:
                    self.costed("efsfuse_proxy", "seq_read_cold_mibps", lambda: self.dd_read(f),
                                lambda _: self.size_mib)
                    os.unlink(f)
                finally:
                    self.unmount(mnt, p)
        finally:
            self.kill(proxy)

    # ---------- driver ----------

    def main(self):
        t_start = time.monotonic()
        self.out.mkdir(parents=True, exist_ok=True)
        if self.work.exists():
            if mount_fstype(self.work / "disk"):
                # Our own image, left by an interrupted run.
                subprocess.run(["umount", str(self.work / "disk")], timeout=120)
            for m in ("mnt-efsfuse", "mnt-null", "mnt-proxy", "mnt-paired", "disk"):
                if mount_fstype(self.work / m):
                    raise SystemExit(f"{self.work / m} is still mounted; unmount it first")
            shutil.rmtree(self.work)
        self.work.mkdir()
        self.tarball = self.make_tarball()
        try:
            self.make_disk()
            self.start_server()
            # Prepared on the server's disk directly: the listing directory and
            # the small files, and their local twins.
            log("preparing directories on the server's disk and locally")
            self.make_files(self.export / "lsdir", self.dir_entries, 0)
            self.small_names = self.make_files(self.export / "small", self.small_files, 4096)
            self.make_files(self.disk / "local-lsdir", self.dir_entries, 0)
            self.make_files(self.disk / "local-small", self.small_files, 4096)
            self.make_big_file(self.export / PAIRED_FILE, self.size_mib)
            for run_no in range(1, self.runs + 1):
                self.phase_nfs(run_no)
                self.phase_efsfuse(run_no)
                self.phase_null(run_no)
                self.phase_local(run_no)
                self.phase_proxy(run_no)
                self.phase_paired(run_no)
                self.phase_connections(run_no)
        finally:
            self.cleanup()
        shutil.rmtree(self.work, ignore_errors=True)
        self.add("runtime", "total_s", time.monotonic() - t_start)
        return self.report()

    # ---------- report ----------

    def fig(self, group, metric):
        v = self.samples.get(group, {}).get(metric)
        return statistics.median(v) if v else None

    def ceiling(self, metric_nfs, metric_null, lower_is_better=False, nfs_group="nfs_ceiling"):
        """The lower of the NFS and FUSE ceilings: the smaller rate or the longer time."""
        vals = [v for v in (self.fig(nfs_group, metric_nfs) if metric_nfs else None,
                            self.fig("null_fs", metric_null) if metric_null else None)
                if v is not None]
        if not vals:
            return None
        return max(vals) if lower_is_better else min(vals)

    def targets(self):
        F, C = self.fig, self.ceiling
        # (name, measured, reference, unit, op, target). reference None => absolute target.
        return [
            ("NFS ceiling seq write qd16 ÷ naive libnfs write",
             F("nfs_ceiling", "seq_write_mibps_qd16"), F("naive", "naive_write_mibps"),
             "MiB/s", ">=", 5),
            # Both sequential targets from back-to-back pairs (phase_paired).
            (f"seq write {self.size_mib} MiB + fsync ÷ ceiling write qd16",
             F("efsfuse_paired", "seq_write_mibps"),
             C("write_file_mibps_qd16", "seq_write_mibps", nfs_group="nfs_ceiling_paired"),
             "MiB/s", ">=", 0.85),
            ("seq read cold ÷ ceiling read qd16",
             F("efsfuse_paired", "seq_read_cold_mibps"),
             C("read_file_mibps_qd16", "seq_read_cold_mibps", nfs_group="nfs_ceiling_paired"),
             "MiB/s", ">=", 0.85),
            ("re-read ÷ local page-cache read",
             F("efsfuse", "seq_reread_mibps"), F("local", "seq_reread_mibps"),
             "MiB/s", ">=", 0.8),
            ("4 KiB randread 4 jobs ÷ ceiling 4 KiB qd4",
             F("efsfuse", "randread_4k_iops_j4"), C("rand_read_4k_iops_qd4", "randread_4k_iops_j4"),
             "IOPS", ">=", 0.9),
            (f"create {self.files} files, 1 thread ÷ ceiling create qd1",
             F("efsfuse", "create_per_s_t1"), C("create_per_s_qd1", "create_per_s_t1"),
             "files/s", ">=", 0.9),
            ("create 8 threads ÷ 1 thread",
             F("efsfuse", "create_per_s_t8"), F("efsfuse", "create_per_s_t1"),
             "files/s", ">=", 3),
            (f"ls -l {self.dir_entries} entries (first) ÷ ceiling readdir+attrs (time)",
             F("efsfuse", "ls_l_first_s"),
             C("list_dir_s", "ls_l_first_s", True, nfs_group="nfs_ceiling_paired"),
             "s", "<=", 1.2),
            (f"tar -x {self.tar_entries} entries ÷ local (time)",
             F("efsfuse", "tar_extract_s"), F("local", "tar_extract_s"), "s", "<=", 5),
            ("1 ms RTT proxy: seq write ÷ ceiling write qd16 via proxy",
             F("efsfuse_proxy", "seq_write_mibps"), F("nfs_ceiling_proxy", "seq_write_mibps_qd16"),
             "MiB/s", ">=", 0.85),
            ("1 ms RTT proxy: seq read cold ÷ ceiling read qd16 via proxy",
             F("efsfuse_proxy", "seq_read_cold_mibps"),
             F("nfs_ceiling_proxy", "seq_read_mibps_qd16"), "MiB/s", ">=", 0.85),
            (f"small files, 8 procs open+read 4K+close ÷ ceiling qd8 ({self.small_files} files)",
             F("efsfuse", "small_reads_per_s_p8"),
             C("open_read_close_per_s_qd8", "small_reads_per_s_p8"), "files/s", ">=", 0.8),
            ("start to live mount", F("efsfuse", "mount_ms"), None, "ms", "<=", 200),
            ("RSS idle after mount", F("efsfuse", "rss_idle_mib"), None, "MiB", "<=", 16),
            ("RSS peak (VmHWM)", F("efsfuse", "rss_peak_mib"), None, "MiB", "<=", 96),
        ]

    def cpu_bound(self, nfs_key, null_key, nfs_group="nfs_ceiling"):
        """The highest rate this machine's cores allow a client that does the
        NFS ceiling's work plus the null FUSE filesystem's (the kernel's FUSE
        work and the application's) and nothing of its own: cores ÷ the sum of
        their CPU time per unit, both measured in this run."""
        total = self.cpu_sum(nfs_key, null_key, nfs_group)
        return os.cpu_count() / (total / 1e6) if total else None

    def cpu_sum(self, nfs_key, null_key, nfs_group="nfs_ceiling"):
        a = self.fig(nfs_group, nfs_key + "_cpu_us")
        b = self.fig("null_fs", null_key + "_cpu_us")
        return a + b if a and b else None

    def context(self):
        """Ratios that show where a limit lies (not targets): the same workload
        on the FUSE ceiling, or the NFS ceiling against itself."""
        F, C = self.fig, self.ceiling
        # Where the cores run out: a ratio below the target's shows the target
        # out of reach on this machine whatever efsfuse does; the second row
        # shows how much CPU efsfuse adds to the two parts it cannot avoid.
        cpu_rows = []
        for label, nfs_key, null_key, efs_key in (
                ("seq read cold", "seq_read_mibps_qd16", "seq_read_cold_mibps",
                 "seq_read_cold_mibps"),
                ("randread 4 jobs", "rand_read_4k_iops_qd4", "randread_4k_iops_j4",
                 "randread_4k_iops_j4"),
                ("small files", "open_read_close_per_s_qd8", "small_reads_per_s_p8",
                 "small_reads_per_s_p8")):
            cpu_rows.append((f"{label}: CPU bound (cores ÷ NFS ceiling's + null FS's CPU "
                             f"per unit) ÷ ceiling", self.cpu_bound(nfs_key, null_key),
                             C(nfs_key, null_key)))
            cpu_rows.append((f"{label}: efsfuse's machine CPU per unit ÷ (NFS ceiling's + "
                             f"null FS's)", F("efsfuse", efs_key + "_cpu_us"),
                             self.cpu_sum(nfs_key, null_key)))
            # Whose CPU it is: the server's and efsfuse's own shares of the
            # machine's while efsfuse ran, and whether efsfuse's requests
            # cost the server more per unit than the ceiling's do.
            cpu_rows.append((f"{label}: the server's CPU ÷ the machine's, through efsfuse",
                             F("efsfuse", efs_key + "_server_cpu_us"),
                             F("efsfuse", efs_key + "_cpu_us")))
            cpu_rows.append((f"{label}: efsfuse's own CPU ÷ the machine's",
                             F("efsfuse", efs_key + "_fs_cpu_us"),
                             F("efsfuse", efs_key + "_cpu_us")))
            cpu_rows.append((f"{label}: the server's CPU per unit, through efsfuse ÷ through "
                             f"the NFS ceiling", F("efsfuse", efs_key + "_server_cpu_us"),
                             F("nfs_ceiling", nfs_key + "_server_cpu_us")))
        # A synchronous read goes through FUSE and then the NFS layer, one
        # after the other: per request, the null filesystem's time plus the
        # NFS ceiling's. Each job has one read outstanding, so that sum bounds
        # the rate (the serial composition, 1 / (1/nfs + 1/null)).
        def serial(nfs, null):
            return 1 / (1 / nfs + 1 / null) if nfs and null else None

        comp1 = serial(F("nfs_ceiling", "rand_read_4k_iops_qd1"),
                       F("null_fs", "randread_4k_iops_j1"))
        comp4 = serial(F("nfs_ceiling", "rand_read_4k_iops_qd4"),
                       F("null_fs", "randread_4k_iops_j4"))
        comp_create = serial(F("nfs_ceiling", "create_per_s_qd1"), F("null_fs", "create_per_s_t1"))
        serial_rows = [
            ("randread 1 job: efsfuse ÷ serial composition of NFS ceiling qd1 and null FS",
             F("efsfuse", "randread_4k_iops_j1"), comp1),
            ("randread 4 jobs: serial composition of NFS ceiling qd4 and null FS ÷ ceiling",
             comp4, C("rand_read_4k_iops_qd4", "randread_4k_iops_j4")),
            ("randread 4 jobs: efsfuse ÷ serial composition",
             F("efsfuse", "randread_4k_iops_j4"), comp4),
            # A create waits for FUSE's lookup and create and for as many
            # round trips to the server as the ceiling's create makes (LOOKUP,
            # OPEN, SETATTR; the CLOSE goes out after the application's
            # close() has returned): the same composition bounds it.
            ("create 1 thread: serial composition of NFS ceiling create qd1 and null FS ÷ ceiling",
             comp_create, C("create_per_s_qd1", "create_per_s_t1")),
            ("create 1 thread: efsfuse ÷ serial composition",
             F("efsfuse", "create_per_s_t1"), comp_create),
            # Each reader opens, reads and closes one file after another:
            # the ceiling's three calls per file after FUSE's open, read,
            # flush and release.
            ("small files: serial composition of NFS ceiling qd8 and null FS ÷ ceiling",
             serial(F("nfs_ceiling", "open_read_close_per_s_qd8"),
                    F("null_fs", "small_reads_per_s_p8")),
             C("open_read_close_per_s_qd8", "small_reads_per_s_p8")),
        ]
        # Through the proxy the same, with the proxy's own copying in the
        # ceiling's CPU per unit (it runs on the same cores).
        cpu_rows += [
            ("1 ms RTT proxy, seq read cold: CPU bound (cores ÷ NFS ceiling's via the proxy + "
             "null FS's CPU per unit) ÷ ceiling via the proxy",
             self.cpu_bound("seq_read_mibps_qd16", "seq_read_cold_mibps", "nfs_ceiling_proxy"),
             F("nfs_ceiling_proxy", "seq_read_mibps_qd16")),
            ("1 ms RTT proxy, seq read cold: efsfuse's machine CPU per unit ÷ (NFS ceiling's via "
             "the proxy + null FS's)", F("efsfuse_proxy", "seq_read_cold_mibps_cpu_us"),
             self.cpu_sum("seq_read_mibps_qd16", "seq_read_cold_mibps", "nfs_ceiling_proxy")),
        ]
        # The sequential figures of the efsfuse and nfs phases, minutes
        # apart; the targets use back-to-back pairs (see phase_paired).
        unpaired_rows = [
            ("seq write, not paired: efsfuse phase ÷ ceiling (nfs phase: qd16 rewrites the file "
             "its qd4 run wrote)", F("efsfuse", "seq_write_mibps"),
             C("seq_write_mibps_qd16", "seq_write_mibps")),
            ("seq read cold, not paired: efsfuse phase ÷ ceiling (nfs phase)",
             F("efsfuse", "seq_read_cold_mibps"), C("seq_read_mibps_qd16", "seq_read_cold_mibps")),
        ]
        return cpu_rows + unpaired_rows + serial_rows + [
            ("re-read: efsfuse ÷ FUSE ceiling (null_fs) re-read",
             F("efsfuse", "seq_reread_mibps"), F("null_fs", "seq_reread_mibps")),
            ("re-read: FUSE ceiling (null_fs) ÷ local page cache",
             F("null_fs", "seq_reread_mibps"), F("local", "seq_reread_mibps")),
            ("ls -l first: efsfuse ÷ FUSE ceiling (null_fs) (time)",
             F("efsfuse", "ls_l_first_s"), F("null_fs", "ls_l_first_s")),
            ("ls -l first, the server's attribute cache expired: efsfuse ÷ the target's ceiling"
             " (time)", F("efsfuse", "ls_l_server_cold_s"),
             C("list_dir_s", "ls_l_first_s", True, nfs_group="nfs_ceiling_paired")),
            ("NFS ceiling: listing its own new directory ÷ listing the prepared one, paired (time)",
             F("nfs_ceiling", "readdir_s"), F("nfs_ceiling_paired", "list_dir_s")),
            ("seq read, NFS ceiling: two connections (16 in flight each) ÷ one (32 in flight)",
             F("nfs_ceiling_conns", "read_mibps_two_conns_qd16"),
             F("nfs_ceiling_conns", "read_mibps_one_conn_qd32")),
            ("create: NFS ceiling qd8 ÷ qd1 (the server's own scaling)",
             F("nfs_ceiling", "create_per_s_qd8"), F("nfs_ceiling", "create_per_s_qd1")),
            ("create 8 threads: efsfuse ÷ NFS ceiling qd8",
             F("efsfuse", "create_per_s_t8"), F("nfs_ceiling", "create_per_s_qd8")),
            # efsfuse reads a small file whole without open state (one
            # compound after the LOOKUP); the target's ceiling sends OPEN,
            # READ and CLOSE as three calls.
            ("small files: efsfuse ÷ NFS ceiling with OPEN+READ in one compound, qd8",
             F("efsfuse", "small_reads_per_s_p8"),
             F("nfs_ceiling", "open_read_close_compound_per_s_qd8")),
            ("small files: efsfuse ÷ NFS ceiling reading each file without open state "
             "(what efsfuse sends after its LOOKUP), qd8",
             F("efsfuse", "small_reads_per_s_p8"), F("nfs_ceiling", "snapshot_per_s_qd8")),
            ("create 1 thread with -o dircache (no LOOKUP before a create) ÷ ceiling",
             F("efsfuse_dircache", "create_per_s_t1"),
             self.ceiling("create_per_s_qd1", "create_per_s_t1")),
            ("tar -x: efsfuse ÷ FUSE ceiling (null_fs) (time)",
             F("efsfuse", "tar_extract_s"), F("null_fs", "tar_extract_s")),
            # tar creates its entries one after another: at the NFS ceiling's
            # create+close rate alone (no data, no chmod/utimes), the time
            # that takes, against local tar's whole run.
            ("tar -x floor: entries ÷ NFS ceiling create qd1, ÷ local tar (time)",
             self.tar_entries / F("nfs_ceiling", "create_per_s_qd1")
             if F("nfs_ceiling", "create_per_s_qd1") else None,
             F("local", "tar_extract_s")),
        ]

    def report(self):
        rows = []
        for name, meas, ref, unit, op, target in self.targets():
            absolute = unit in ("ms", "MiB")
            if meas is None or (ref is None and not absolute):
                ratio = None
            elif absolute:
                ratio = meas
            else:
                ratio = meas / ref if ref else None
            met = None if ratio is None else (ratio >= target if op == ">=" else ratio <= target)
            # score: >= 1 means met, whichever the direction.
            score = None if ratio is None else (
                ratio / target if op == ">=" else (target / ratio if ratio else float("inf")))
            rows.append(dict(metric=name, efsfuse=meas, ceiling=ref, unit=unit, absolute=absolute, ratio=ratio,
                             op=op, target=target, met=met, score=score))
        met_n = sum(1 for r in rows if r["met"])
        context = [dict(metric=n, value=a, reference=b, ratio=(a / b if a and b else None))
                   for n, a, b in self.context()]
        summary = {}
        for g, metrics in self.samples.items():
            summary[g] = {m: {"median": statistics.median(v), "min": min(v), "max": max(v),
                              "runs": v} for m, v in metrics.items()}
        result = {
            "quick": self.quick, "runs": self.runs,
            "params": {"size_mib": self.size_mib, "files": self.files,
                       "dir_entries": self.dir_entries, "small_files": self.small_files,
                       "fio_runtime_s": self.fio_runtime, "tarball": str(self.tarball),
                       "tar_entries": self.tar_entries, "tar_mib": round(self.tar_mib, 1)},
            "host": {"cpus": os.cpu_count(), "kernel": os.uname().release},
            "figures": summary, "targets": rows, "context": context, "notes": self.notes,
            "targets_met": met_n, "targets_total": len(rows),
        }
        (self.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
        md = self.markdown(rows, summary, context)
        (self.out / "results.md").write_text(md)
        self.chart(rows)
        print(md)
        print(f"bench: {met_n} of {len(rows)} targets met")
        if self.args.check:
            return self.check(rows, context)
        return 0

    def check(self, rows, context):
        """--check (make test's smoke run): every target and every context row
        has its figures and nothing was unavailable. Says nothing about speed."""
        missing = [r["metric"] for r in rows
                   if r["efsfuse"] is None or (r["ceiling"] is None and not r["absolute"])]
        missing += [c["metric"] for c in context if c["value"] is None or c["reference"] is None]
        for m in missing:
            print(f"bench: smoke check: no figure for '{m}'", file=sys.stderr)
        for n in self.notes:
            print(f"bench: smoke check: {n}", file=sys.stderr)
        if missing or self.notes:
            return 1
        print("bench: smoke check passed (every figure measured; speed is not judged here)")
        return 0

    @staticmethod
    def fmt(v):
        if v is None:
            return "n/a"
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 1:
            return f"{v:.2f}"
        return f"{v:.4f}"

    def markdown(self, rows, summary, context):
        mode = "quick" if self.quick else "full"
        out = [f"# efsfuse benchmark ({mode}, median of {self.runs} run(s))", "",
               f"{self.size_mib} MiB sequential, {self.files} files create/stat/unlink, "
               f"{self.dir_entries}-entry ls -l, {self.small_files} small files, "
               f"tar of {self.tar_entries} entries ({self.tar_mib:.0f} MiB); "
               f"{os.cpu_count()} CPUs. Ceiling = the lower of nfs_ceiling and null_fs.", "",
               "| metric | efsfuse | ceiling | ratio | target | met? |",
               "|---|---:|---:|---:|---:|:---:|"]
        for r in rows:
            u = r["unit"]
            ceil = "—" if r["absolute"] else f"{self.fmt(r['ceiling'])} {u}"
            met = "n/a" if r["met"] is None else ("yes" if r["met"] else "**no**")
            out.append(f"| {r['metric']} | {self.fmt(r['efsfuse'])} {u} | {ceil} | "
                       f"{self.fmt(r['ratio'])} | {r['op'].replace('>=', '≥').replace('<=', '≤')} "
                       f"{r['target']} | {met} |")
        out += ["", "## Where the limits are (not targets)", "",
                "| ratio | value | reference | ratio |", "|---|---:|---:|---:|"]
        for c in context:
            out.append(f"| {c['metric']} | {self.fmt(c['value'])} | {self.fmt(c['reference'])} | "
                       f"{self.fmt(c['ratio'])} |")
        out += ["", "## All figures (median; min–max over runs)", "",
                "| group | metric | median | min | max |", "|---|---|---:|---:|---:|"]
        for g in sorted(summary):
            for m in sorted(summary[g]):
                s = summary[g][m]
                out.append(f"| {g} | {m} | {self.fmt(s['median'])} | {self.fmt(s['min'])} | "
                           f"{self.fmt(s['max'])} |")
        if self.notes:
            out += ["", "## Notes", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(out) + "\n"

    def chart(self, rows):
        png = self.out / "ratios.png"
        gp = shutil.which("gnuplot")
        if not gp:
            self.note("ratios.png: not available (gnuplot not installed; apt-get install gnuplot-nox)")
            return
        dat = self.out / "ratios.dat"
        with open(dat, "w") as f:
            for i, r in enumerate(rows):
                label = r["metric"].split(" ÷ ")[0].replace('"', "'")[:38]
                s = min(r["score"], 5.0) if r["score"] is not None else 0
                na = "n/a" if r["score"] is None else ""
                color = 0x2e7d32 if r["met"] else (0xc62828 if r["met"] is False else 0x9e9e9e)
                f.write(f'{i} {s:.4f} {color} "{label}" "{na}"\n')
        script = f"""
set terminal pngcairo size 1200,700 font ",9"
set output "{png}"
set title "efsfuse: ratio ÷ target (≥ 1 = met; time/memory targets inverted; capped at 5; grey = n/a)"
set style fill solid 0.85
set boxwidth 0.7
set yrange [0:*]
set xtics rotate by 40 right
set grid ytics
set key off
set lmargin 16
set bmargin 13
set arrow from -0.5,1 to {len(rows) - 0.5},1 nohead lc rgb "black" dt 2 lw 2
plot "{dat}" using 1:2:3:xtic(4) with boxes lc rgb variable, \\
     "{dat}" using 1:(0.1):5 with labels
"""
        r = subprocess.run([gp], input=script, text=True, capture_output=True, timeout=60)
        dat.unlink()
        if r.returncode:
            self.note(f"ratios.png: gnuplot failed: {r.stderr.strip()[-200:]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="small sizes, one run (under 3 minutes)")
    ap.add_argument("--out", default=str(BUILD / ("bench-quick" if "--quick" in sys.argv
                                                   else "bench-results")),
                    help="output directory (default build/bench-results, "
                         "build/bench-quick with --quick)")
    ap.add_argument("--runs", type=int, default=0, help="runs per figure (default 3, quick 1)")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 unless every figure was measured (the smoke test in make test)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("run_bench: needs root (FUSE mounts, drop_caches)", file=sys.stderr)
        return 2
    b = Bench(args)

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        return b.main()
    except KeyboardInterrupt:
        print("run_bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
