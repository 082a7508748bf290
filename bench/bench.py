#!/usr/bin/env python3
"""Parley benchmark suite, run by scripts/bench.sh (`make bench`).

Starts its own PostgreSQL cluster (durable settings, echoed), the fake
LLM/Graph server `fakeup` and the webhook load generator `loadgen`, measures
the fakes alone, the HTTP ceiling, durable ingest, ingest with duplicates,
end to end replies and memory/CPU, then prints one table and writes
bench/results/*.json (and, for full runs, the table into docs/PERFORMANCE.md).
Standard library only. Every process it starts is stopped by pid at the end.
"""

import ctypes
import datetime
import json
import os
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def env(name, default):
    v = os.environ.get(name, "")
    return v if v != "" else default


QUICK = env("BENCH_QUICK", "0") == "1"
RUNS = int(env("BENCH_RUNS", "1" if QUICK else "3"))
DUR = float(env("BENCH_DURATION", "3" if QUICK else "8"))
FAKE_DUR = float(env("BENCH_FAKE_DURATION", "2" if QUICK else "3"))
CONNS = [int(x) for x in env("BENCH_CONNECTIONS", "16,64,256").split(",")]
USERS = int(env("BENCH_USERS", "10000"))
E2E_MAX = int(env("BENCH_E2E_MAX", "20000"))
E2E_200_MSGS = int(env("BENCH_E2E_200_MSGS", "600" if QUICK else "1600"))
PACED_S = float(env("BENCH_PACED_SECONDS", "4" if QUICK else "30"))
PACED_RATE = 100
# Before the paced run: the same rate for this long, not measured, so that
# the pool's connections exist, plans are made and every worker's LLM
# connection is open (the run without it: p99 set by the first second).
# Every (d) run starts with this many seconds at PACED_RATE that are not
# measured: the pool's connections and plans, plpgsql compiles and each
# worker's LLM connection are made on first use, after every start.
E2E_WARMUP_S = float(env("BENCH_E2E_WARMUP", "3"))
WORKERS = int(env("BENCH_WORKERS", "64"))
DRAIN_TIMEOUT = float(env("BENCH_DRAIN_TIMEOUT", "90"))
BUILD_DIR = os.path.join(ROOT, env("BENCH_BUILD_DIR", "build/release"))
PG_DIR = env("BENCH_PG_DIR", os.path.join(ROOT, "var", "bench-pg"))
KEEP = env("BENCH_KEEP", "0") == "1"
# BENCH_ONLY=b,d200: run only these scenarios (fakes a a' a'' a''n a''q a''d b c bs d0 a''' a'''' d200 dpaced
# a''''p e; a''''p, the least reply path at 100 msg/s, runs only when named here);
# for development: such a run never updates docs/PERFORMANCE.md or latest.json.
ONLY = set(env("BENCH_ONLY", "").split(",")) - {""} or None
UPDATE_DOC = env("BENCH_UPDATE_DOC", "0" if QUICK or ONLY else "1") == "1"
RESULTS = os.path.join(ROOT, "bench", "results")
SECRET = "bench-app-secret"
CLK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

PARLEY = os.path.join(BUILD_DIR, "parley")
FAKEUP = os.path.join(BUILD_DIR, "tests", "fakeup")
LOADGEN = os.path.join(BUILD_DIR, "tests", "loadgen")
VMPROBE = os.path.join(BUILD_DIR, "tests", "vmprobe")
MINGEST = os.path.join(BUILD_DIR, "tests", "mingest")

# The bench cluster. Durability is the point: fsync, synchronous_commit and
# full_page_writes stay on; WAL is sized so no checkpoint is forced by volume
# during a run. Everything else is PostgreSQL's default.
PG_SETTINGS = [
    ("listen_addresses", "127.0.0.1"),
    ("max_connections", "300"),
    ("shared_buffers", "256MB"),
    ("fsync", "on"),
    ("synchronous_commit", "on"),
    ("full_page_writes", "on"),
    ("wal_sync_method", "fdatasync"),
    ("wal_level", "replica"),
    ("wal_buffers", "16MB"),
    ("max_wal_size", "4GB"),
    ("min_wal_size", "1GB"),
    ("checkpoint_timeout", "15min"),
    ("commit_delay", "0"),
]

# BENCH_PG_STATEMENTS=1: diagnostics, not part of the measured setup. Loads
# pg_stat_statements and prints the top statements of each scenario's first run;
# BENCH_PG_STATEMENTS=all also tracks the statements inside the plpgsql
# functions (each then counts both on its own and in its function's total).
PG_STATEMENTS = env("BENCH_PG_STATEMENTS", "0") in ("1", "all")
PG_STATEMENTS_TOP = int(env("BENCH_PG_STATEMENTS_TOP", "10"))
PARLEY_EXTRA_ENV = env("BENCH_PARLEY_ENV", "")
# BENCH_FAKE_RESTART=1: a new fakeup process for every end-to-end run
# (experiment: does the fake's own history slow the later rows?).
FAKE_RESTART = env("BENCH_FAKE_RESTART", "0") == "1"
# BENCH_PG_FRESH=1: a new PostgreSQL cluster (initdb) before every paced run
# (experiment: is it the cluster's state after the earlier rows?).
PG_FRESH = env("BENCH_PG_FRESH", "0") == "1"
# BENCH_PACED_FIRST=1: the paced row also before every other scenario, as
# its own row (d200p0), beside the usual one after them (experiment: does
# ten minutes of load before it move the paced row? The target reads the
# usual row.)
PACED_FIRST = env("BENCH_PACED_FIRST", "0") == "1"
# BENCH_VMPROBE=1: run tests/vmprobe (SCHED_FIFO: late wake-ups and the
# time of two fixed units of work, one in registers and one memory-bound,
# per 5 s) for the whole run, with 15 s idle before and after, and
# summarize it per scenario and per run: does the machine itself stall or
# slow down?
VMPROBE_ON = env("BENCH_VMPROBE", "0") == "1"
MARKS = []  # (unix time, scenario header) for the vmprobe summary
RUN_SPANS = []  # (start, end, what, run number, the run's numbers) of each valid run
if PG_STATEMENTS:
    PG_SETTINGS.append(("shared_preload_libraries", "pg_stat_statements"))
    PG_SETTINGS.append(("pg_stat_statements.track_planning", "on"))
    if env("BENCH_PG_STATEMENTS", "0") == "all":
        PG_SETTINGS.append(("pg_stat_statements.track", "all"))

# BENCH_PG_SETTINGS="log_min_duration_statement=5 deadlock_timeout=5ms ...":
# extra PostgreSQL settings for a diagnostic run (printed and recorded like
# the others; the server log is var/bench-pg/server.log, kept with BENCH_KEEP=1).
for kv in env("BENCH_PG_SETTINGS", "").split():
    k, _, v = kv.partition("=")
    PG_SETTINGS.append((k, v))

TARGETS_DOC = os.path.join(ROOT, "docs", "PERFORMANCE.md")
BEGIN_MARK = "<!-- bench:begin (written by scripts/bench.sh) -->"
END_MARK = "<!-- bench:end -->"

_libc = ctypes.CDLL(None, use_errno=True)
NOPROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def child_setup():
    """In every child: die with us (PR_SET_PDEATHSIG = SIGTERM)."""
    _libc.prctl(1, signal.SIGTERM, 0, 0, 0)


def log(msg):
    if msg.startswith("== "):
        MARKS.append((time.time(), msg[3:]))
    print(msg, flush=True)


def vmprobe_windows(lines):
    """tests/vmprobe's window lines as lists of 9 floats (see its header
    comment for the columns); its '#' lines skipped."""
    return [[float(x) for x in ln.split()] for ln in lines
            if not ln.startswith("#") and len(ln.split()) == 9]


def vmprobe_summary(lines):
    """Per scenario (from one '== ' header to the next) and per run: the
    vmprobe windows in it, the median time of each work unit, the worst
    p99s, the worst lateness and the count of wake-ups over 1 ms late."""
    rows = []
    wins = vmprobe_windows(lines)
    # A scenario runs from its header to the next; each run from its start
    # to its end (set-up included).
    spans = []
    bounds = MARKS + [(float("inf"), None)]
    for (t0, name), (t1, _) in zip(bounds, bounds[1:]):
        spans.append((t0, t1, name, None))
        for a, z, what, n, r in RUN_SPANS:
            if t0 <= a < t1:
                parts = ["run %d" % n]
                for key, fmt in (("added_ms_p99", "added p99 %.1f ms"),
                                 ("pg_cpu_s_per_1000", "pg %.2f ms CPU/reply"),
                                 ("parley_cpu_s_per_1000", "parley %.2f ms CPU/reply")):
                    if isinstance(r.get(key), (int, float)):
                        parts.append(fmt % r[key])
                lg = r.get("loadgen") or {}
                if "rps" in lg and not isinstance(r.get("added_ms_p99"), (int, float)):
                    parts.append("%.0f/s, p99 %.1f ms" % (lg["rps"], lg["latency_ms"]["p99"]))
                spans.append((a, z, name, ", ".join(parts)))
    for t0, t1, name, run in spans:
        w = [x for x in wins if t0 <= x[0] - 5 and x[0] <= t1 + 2.5]
        if not w:
            continue
        rows.append({"scenario": name, "run": run, "windows": len(w),
                     "work_p50_us": statistics.median(x[1] for x in w),
                     "mem_p50_us": statistics.median(x[7] for x in w),
                     "mem_p99_us_max": max(x[8] for x in w),
                     "work_p99_us_max": max(x[2] for x in w),
                     "late_p99_us_max": max(x[4] for x in w),
                     "late_max_us": max(x[5] for x in w),
                     "late_over_1ms": int(sum(x[6] for x in w))})
    return rows


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def http(url, data=None, timeout=10.0):
    req = urllib.request.Request(url, data=data)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with NOPROXY.open(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


# ---- /proc ------------------------------------------------------------------

def proc_stat(pid):
    """(ppid, utime+stime, cutime+cstime) in seconds, or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rindex(")") + 2:].split()
    return (int(rest[1]), (int(rest[11]) + int(rest[12])) / CLK,
            (int(rest[13]) + int(rest[14])) / CLK)


def proc_cpu(pid):
    st = proc_stat(pid)
    return st[1] if st else 0.0


def proc_mem(pid):
    """VmRSS, VmHWM in kB."""
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line.split(":")[0]] = int(line.split()[1])
    except OSError:
        pass
    return out.get("VmRSS", 0), out.get("VmHWM", 0)


def proc_switches(pid):
    """Context switches (voluntary + involuntary) of all of a process's
    threads alive now."""
    total = 0
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return 0
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches:",
                                        "nonvoluntary_ctxt_switches:")):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def live_children(root_pid):
    """(pid, proc_stat) of each live child of root_pid."""
    for d in os.listdir("/proc"):
        if d.isdigit():
            c = proc_stat(int(d))
            if c and c[0] == root_pid:
                yield int(d), c


def tree_switches(root_pid):
    """Context switches of a process and its live children (PostgreSQL's
    backends: Parley's pooled connections live through a run)."""
    return proc_switches(root_pid) + sum(
        proc_switches(pid) for pid, _ in live_children(root_pid))


def tree_cpu(root_pid):
    """CPU seconds of a process, its live children and its reaped ones."""
    st = proc_stat(root_pid)
    if not st:
        return 0.0
    return st[1] + st[2] + sum(c[1] for _, c in live_children(root_pid))


def sys_cpu():
    """(user+nice+system, irq+softirq, steal) jiffies of the whole machine."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
    return user + nice + system, irq + softirq, steal


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def self_cpu():
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Meter:
    """CPU used by Parley, PostgreSQL, fakeup, this script and its reaped
    children (loadgen, psql) over an interval, and the machine's other load."""

    def __init__(self, parley=None, pg=None, fake=None):
        self.pids = {"parley": parley, "fake": fake}
        self.pg = pg
        self.t0 = time.monotonic()
        self.c0 = {k: proc_cpu(p) for k, p in self.pids.items() if p}
        self.pg0 = tree_cpu(pg.postmaster()) if pg else 0.0
        self.sw0 = {"parley": proc_switches(parley) if parley else 0,
                    "pg": tree_switches(pg.postmaster()) if pg else 0}
        self.self0 = self_cpu()
        self.sys0 = sys_cpu()

    def stop(self):
        wall = time.monotonic() - self.t0
        out = {"wall_s": wall}
        ours = 0.0
        for k, p in self.pids.items():
            if p:
                out[k + "_cpu_s"] = proc_cpu(p) - self.c0[k]
                ours += out[k + "_cpu_s"]
        if self.pg:
            out["pg_cpu_s"] = tree_cpu(self.pg.postmaster()) - self.pg0
            ours += out["pg_cpu_s"]
            out["pg_switches"] = tree_switches(self.pg.postmaster()) - self.sw0["pg"]
        if self.pids["parley"]:
            out["parley_switches"] = (proc_switches(self.pids["parley"]) -
                                      self.sw0["parley"])
        mine = self_cpu() - self.self0
        ours += mine
        busy, irq, steal = sys_cpu()
        busy_s = (busy - self.sys0[0]) / CLK
        out["machine_busy_cores"] = busy_s / wall
        out["irq_cores"] = (irq - self.sys0[1]) / CLK / wall
        out["steal_cores"] = (steal - self.sys0[2]) / CLK / wall
        # Process time the machine spent outside this benchmark's processes:
        # other developers' jobs on a shared box.
        out["other_load_cores"] = max(0.0, busy_s - ours) / wall
        return out


# ---- processes ----------------------------------------------------------------

STARTED = []  # Popen objects we own, stopped by pid at the end


def spawn(argv, envd=None, stdout=None, stderr=None, stdin=None):
    p = subprocess.Popen(argv, env=envd, stdout=stdout, stderr=stderr,
                         stdin=stdin, preexec_fn=child_setup, cwd=ROOT)
    STARTED.append(p)
    return p


def stop_proc(p, timeout=15.0):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if p in STARTED:
        STARTED.remove(p)


def run_loadgen(args):
    """Run loadgen to completion: (its JSON, its CPU seconds)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen([LOADGEN] + args, stdout=out, stderr=err,
                             preexec_fn=child_setup, cwd=ROOT)
        STARTED.append(p)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        STARTED.remove(p)
        out.seek(0)
        err.seek(0)
        text = out.read().decode()
        if p.returncode != 0 or not text.strip():
            raise RuntimeError("loadgen %s failed (%d): %s" % (
                " ".join(args), p.returncode, err.read().decode()[-500:]))
        return json.loads(text.strip().splitlines()[-1]), ru.ru_utime + ru.ru_stime


# ---- PostgreSQL ----------------------------------------------------------------

class Pg:
    def __init__(self, root):
        self.root = root
        self.data = os.path.join(root, "data")
        self.port = int(env("BENCH_PG_PORT", "0")) or free_port()
        bins = sorted((d for d in os.listdir("/usr/lib/postgresql")
                       if os.path.isdir("/usr/lib/postgresql/%s/bin" % d)),
                      key=lambda d: [int(x) for x in re.findall(r"\d+", d)])
        if not bins:
            raise RuntimeError("PostgreSQL server binaries not found (scripts/deps.sh)")
        self.bin = "/usr/lib/postgresql/%s/bin" % bins[-1]
        self.running = False

    def as_pg(self, argv):
        return (["runuser", "-u", "postgres", "--"] + argv) if os.getuid() == 0 else argv

    def start(self):
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            self.stop_dir()
        shutil.rmtree(self.root, ignore_errors=True)
        os.makedirs(self.root)
        if os.getuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        subprocess.run(self.as_pg([self.bin + "/initdb", "-D", self.data, "-U", "postgres",
                                   "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"]),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        opts = "-p %d -k %s " % (self.port, self.data) + " ".join(
            "-c %s=%s" % kv for kv in PG_SETTINGS)
        subprocess.run(self.as_pg([self.bin + "/pg_ctl", "-D", self.data, "-l",
                                   os.path.join(self.root, "server.log"), "-w", "-t", "60",
                                   "-o", opts, "start"]),
                       check=True, stdout=subprocess.DEVNULL)
        self.running = True

    def stop_dir(self):
        subprocess.run(self.as_pg([self.bin + "/pg_ctl", "-D", self.data, "-m", "fast",
                                   "-w", "stop"]),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self):
        if self.running:
            self.stop_dir()
            self.running = False
        if not KEEP:
            shutil.rmtree(self.root, ignore_errors=True)

    def postmaster(self):
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            return int(f.readline())

    def url(self, db):
        return "postgresql://postgres@127.0.0.1:%d/%s" % (self.port, db)

    def psql(self, db, sql):
        r = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-F", "\t", "-h", "127.0.0.1",
                            "-p", str(self.port), "-U", "postgres", "-d", db,
                            "-v", "ON_ERROR_STOP=1", "-c", sql],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("psql: %s: %s" % (sql[:80], r.stderr.strip()))
        return r.stdout

    def statements_reset(self):
        if PG_STATEMENTS:
            self.psql("postgres", "SELECT pg_stat_statements_reset()")

    def statements_top(self, db, n=PG_STATEMENTS_TOP):
        """Top statements of one database by total (plan + execute) time, and
        the totals over all its statements (BENCH_PG_STATEMENTS=1)."""
        if not PG_STATEMENTS:
            return []
        out = self.psql("postgres", """
            WITH s AS (SELECT * FROM pg_stat_statements WHERE dbid = (
                SELECT oid FROM pg_database WHERE datname = '%s'))
            (SELECT 0 AS o, sum(calls), round(sum(total_plan_time)::numeric, 1),
                    round(sum(total_exec_time)::numeric, 1), sum(rows), 'ALL STATEMENTS'
             FROM s)
            UNION ALL
            (SELECT 1, calls, round(total_plan_time::numeric, 1),
                    round(total_exec_time::numeric, 1), rows,
                    regexp_replace(left(query, 150), '\\s+', ' ', 'g')
             FROM s ORDER BY total_plan_time + total_exec_time DESC LIMIT %d)
            ORDER BY 1""" % (db, n))
        keys = ("o", "calls", "plan_ms", "exec_ms", "rows", "query")
        return [dict(zip(keys[1:], line.split("\t")[1:]))
                for line in out.splitlines() if line]

    def version(self):
        return self.psql("postgres", "SHOW server_version").strip()


# ---- Parley -------------------------------------------------------------------

class Bench:
    def __init__(self):
        self.tmp = env("BENCH_TMP", "")
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
            os.makedirs(self.tmp)
        else:
            self.tmp = tempfile.mkdtemp(prefix="parley-bench-")
        self.pg = Pg(PG_DIR)
        self.fake = None
        self.fake_port = None
        self.parley = None
        self.parley_port = None
        self.ndb = 0

    # fakeup ---------------------------------------------------------------

    def start_fake(self):
        errf = open(os.path.join(self.tmp, "fakeup.log"), "wb")
        # Every reply is three recorded requests (the LLM call, the read
        # receipt, the send); past the ring's size the oldest are dropped and
        # the integrity check would count replies as missing.
        p = spawn([FAKEUP, "--port", "0", "--threads", "2", "--record-max",
                   str(max(50000, 4 * E2E_MAX)), "--stdin-watch"],
                  stdout=subprocess.PIPE, stderr=errf,
                  stdin=subprocess.PIPE)
        errf.close()
        deadline = time.monotonic() + 10
        buf = b""
        while time.monotonic() < deadline:
            r, _, _ = select.select([p.stdout], [], [], 0.2)
            if r:
                chunk = os.read(p.stdout.fileno(), 4096)
                if not chunk:
                    break
                buf += chunk
                m = re.search(rb"^port=(\d+)$", buf, re.M)
                if m:
                    self.fake, self.fake_port = p, int(m.group(1))
                    return
        raise RuntimeError("fakeup did not start")

    def restart_fake(self):
        stop_proc(self.fake, 5)
        self.start_fake()

    def fake_url(self, path):
        return "http://127.0.0.1:%d%s" % (self.fake_port, path)

    def fake_graph_requests(self):
        """The Graph API requests fakeup recorded since its last reset:
        sends and read receipts, each with its body and ts_ms."""
        st, body = http(self.fake_url("/_requests?kind=graph"), timeout=30)
        recs = json.loads(body) if st == 200 else []
        return recs.get("requests", []) if isinstance(recs, dict) else recs

    def fake_control(self, obj):
        st, body = http(self.fake_url("/_control"), json.dumps(obj).encode())
        if st != 200:
            raise RuntimeError("fakeup /_control %s: %s %s" % (obj, st, body[:200]))

    def fake_reset(self):
        st, _ = http(self.fake_url("/_reset"), b"")
        if st != 200:
            raise RuntimeError("fakeup /_reset failed")

    # database and parley ----------------------------------------------------

    def new_db(self, tag):
        self.ndb += 1
        name = "bench_%s_%d" % (re.sub(r"\W", "_", tag), self.ndb)
        self.pg.psql("postgres", "CREATE DATABASE %s" % name)
        r = subprocess.run([PARLEY, "migrate"], env=self.parley_env(name, 0),
                           capture_output=True, text=True, cwd=ROOT)
        if r.returncode != 0:
            raise RuntimeError("parley migrate: " + r.stderr[-500:])
        return name

    def drop_db(self, name):
        self.pg.psql("postgres", "DROP DATABASE IF EXISTS %s WITH (FORCE)" % name)

    def parley_env(self, db, workers):
        e = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
        fake = "http://127.0.0.1:%d" % self.fake_port
        e.update({
            "PARLEY_DATABASE_URL": self.pg.url(db),
            "PARLEY_LISTEN": "127.0.0.1:%d" % (self.parley_port or 0),
            "PARLEY_LOG_LEVEL": "warn",
            "PARLEY_META_APP_SECRET": SECRET,
            "PARLEY_META_VERIFY_TOKEN": "bench-verify",
            "PARLEY_WHATSAPP_TOKEN": "bench-wa-token",
            "PARLEY_LLM_BASE_URL": fake + "/v1",
            "PARLEY_LLM_API_KEY": "bench-llm-key",
            "PARLEY_GRAPH_API_BASE": fake + "/v21.0",
            "PARLEY_PSEUDONYM_KEY": "bench-pseudonym-key-0123456789abcdef",
            "PARLEY_WORKERS": str(max(workers, 1)),
        })
        # BENCH_PARLEY_ENV="PARLEY_X=1 PARLEY_Y=2": experiments only; the
        # run's JSON records it.
        for kv in PARLEY_EXTRA_ENV.split():
            k, _, v = kv.partition("=")
            e[k] = v
        return e

    def start_parley(self, db, workers):
        self.parley_port = free_port()
        logf = open(os.path.join(self.tmp, "parley.log"), "ab")
        argv = [PARLEY, "serve"] + ([] if workers else ["--no-workers"])
        self.parley = spawn(argv, envd=self.parley_env(db, workers), stdout=logf,
                            stderr=logf)
        logf.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.parley.poll() is not None:
                break
            st, _ = http(self.parley_url("/readyz"), timeout=2)
            if st == 200:
                return self.parley.pid
            time.sleep(0.1)
        raise RuntimeError("parley serve did not become ready (log: %s)" %
                           os.path.join(self.tmp, "parley.log"))

    def parley_death(self):
        """None while parley runs; else how it ended and the end of its log."""
        if self.parley is None or self.parley.poll() is None:
            return None
        code = self.parley.returncode
        how = ("signal %s" % signal.Signals(-code).name) if code < 0 else "status %d" % code
        try:
            with open(os.path.join(self.tmp, "parley.log"), errors="replace") as f:
                tail = f.read()[-1500:].strip().splitlines()[-8:]
        except OSError:
            tail = []
        return "parley exited (%s) during the run; log tail: %s" % (how, " | ".join(tail))

    def parley_url(self, path):
        return "http://127.0.0.1:%d%s" % (self.parley_port, path)

    def stop_parley(self):
        if self.parley:
            stop_proc(self.parley)
            self.parley = None

    def metrics_text(self):
        st, body = http(self.parley_url("/metrics"))
        return body.decode() if st == 200 else ""

    def metrics(self, text=None):
        """Sum of each metric's samples (all label sets), by name."""
        sums = {}
        for line in (self.metrics_text() if text is None else text).splitlines():
            if not line or line[0] == "#":
                continue
            name_labels, _, value = line.rpartition(" ")
            name = name_labels.split("{")[0]
            try:
                sums[name] = sums.get(name, 0.0) + float(value)
            except ValueError:
                pass
        return sums

    @staticmethod
    def stages(text):
        """parley_job_stage_seconds (whole process life, warm-up included),
        per stage: the mean in ms (where a reply's own time went) and the
        share of jobs over 2.5, 5 and 10 ms from the cumulative buckets
        (which stage the latency's tail comes from)."""
        acc = {}
        for line in text.splitlines():
            m = re.match(r'parley_job_stage_seconds_(sum|count|bucket)\{stage="(\w+)"'
                         r'(?:,le="([^"]+)")?\} (\S+)$', line)
            if m:
                d = acc.setdefault(m.group(2), {})
                d[m.group(3) if m.group(1) == "bucket" else m.group(1)] = float(m.group(4))
        means, tails = {}, {}
        for k, d in acc.items():
            n = d.get("count")
            if not n:
                continue
            means[k] = 1000 * d["sum"] / n
            tails[k] = {ms: round(1 - d[le] / n, 4)
                        for ms, le in (("2.5", "0.0025"), ("5", "0.005"), ("10", "0.01"))
                        if le in d}
        return means, tails

    def cleanup(self):
        for p in list(STARTED):
            try:
                stop_proc(p, 5)
            except Exception:  # noqa: BLE001 - best effort teardown
                pass
        try:
            self.pg.stop()
        except Exception:  # noqa: BLE001
            pass
        shutil.rmtree(self.tmp, ignore_errors=True)


# ---- statistics ----------------------------------------------------------------

def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(-(-p * len(v) // 100)) - 1))
    return v[k]


def summary(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return {"median": None, "min": None, "max": None, "runs": values}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals),
            "runs": values}


def lg_lat(d):
    lat = d.get("latency_ms", {})
    return lat.get("p50"), lat.get("p99"), lat.get("p999")


def fmt_num(v, digits=None):
    if v is None:
        return "-"
    if digits is None:
        digits = 0 if abs(v) >= 100 else (1 if abs(v) >= 10 else 2)
    return "{:,.{d}f}".format(v, d=digits)


# ---- scenarios -------------------------------------------------------------

class Suite:
    def __init__(self, b):
        self.b = b
        self.rows = []     # table rows (dicts)
        self.raw = {}      # per-run details, for the JSON
        self.checks = []   # integrity problems found

    def valid_runs(self, what, fn):
        """RUNS runs of fn(); a run during which parley died (crash, or killed
        by someone else on this shared machine) is reported and redone, at most
        RUNS + 2 attempts in all."""
        runs, attempts = [], 0
        while len(runs) < RUNS and attempts < RUNS + 2:
            attempts += 1
            t0 = time.time()
            r = fn()
            if r.get("parley_death"):
                self.checks.append("%s, attempt %d: %s (run discarded and redone)"
                                   % (what, attempts, r["parley_death"]))
                log("   attempt %d discarded: %s" % (attempts, r["parley_death"]))
                continue
            runs.append(r)
            RUN_SPANS.append((t0, time.time(), what, len(runs), r))
        if not runs:
            raise RuntimeError("%s: no valid run in %d attempts" % (what, attempts))
        return runs

    def show_top(self, runs):
        top = runs[0].get("top_statements") if runs else None
        if top:
            log("   pg_stat_statements (run 1): calls, plan ms, exec ms, rows, query")
            for t in top:
                log("     %8s %9s %9s %8s  %s" % (t["calls"], t["plan_ms"], t["exec_ms"],
                                                t["rows"], t["query"]))

    def row(self, rid, name, unit, values, p50=None, p99=None, p999=None, note="",
            lat_kind=""):
        runs = self.raw.get(rid, [])
        other = (statistics.median(r["other_load_cores"] for r in runs)
                 if runs and "other_load_cores" in runs[0] else None)
        r = {"id": rid, "scenario": name, "unit": unit, "value": summary(values),
             "p50_ms": summary(p50 or []), "p99_ms": summary(p99 or []),
             "p999_ms": summary(p999 or []), "latency": lat_kind, "note": note,
             "other_load_cores": other}
        self.rows.append(r)
        v = r["value"]
        log("  -> %-44s %s %s [%s-%s] %s" % (name, fmt_num(v["median"]), unit,
                                            fmt_num(v["min"]), fmt_num(v["max"]), note))
        return r

    # 0. the fakes alone ---------------------------------------------------

    def fakes(self):
        b = self.b
        log("== fakes alone (fakeup --threads 2, loadgen 64 connections, %gs each)" % FAKE_DUR)
        llm = os.path.join(b.tmp, "llm.json")
        with open(llm, "w") as f:
            json.dump({"model": "llama-3.1-8b-instant", "stream": True,
                       "stream_options": {"include_usage": True},
                       "max_completion_tokens": 512, "temperature": 0.7,
                       "messages": [
                           {"role": "system", "content": "You are a helpful assistant."},
                           {"role": "user", "content": "loadgen message 1 from user 2"}]}, f)
        wa = os.path.join(b.tmp, "wa.json")
        with open(wa, "w") as f:
            json.dump({"messaging_product": "whatsapp", "recipient_type": "individual",
                       "to": "15550000002", "type": "text",
                       "text": {"body": "Echo: loadgen message 1 from user 2"}}, f)
        base = ["--connections", "64", "--duration", str(FAKE_DUR)]
        cases = [
            ("f_loadgen", "loadgen -> fakeup sink (signed POST)",
             {"record": False, "webhook_secret": SECRET},
             ["--url", b.fake_url("/webhooks/whatsapp"), "--secret", SECRET,
              "--users", str(USERS)], None),
            ("f_llm0", "fakeup LLM 0 ms (SSE stream)", {},
             ["--url", b.fake_url("/v1/chat/completions"), "--body-file", llm], None),
            ("f_graph", "fakeup Graph send", {},
             ["--url", b.fake_url("/v21.0/1555/messages"), "--body-file", wa,
              "--header", "Authorization: Bearer t"], None),
            ("f_llm200", "fakeup LLM 200 ms (SSE), 64 conns", {"llm_latency_ms": 200},
             ["--url", b.fake_url("/v1/chat/completions"), "--body-file", llm], 320.0),
        ]
        for rid, name, ctl, args, ideal in cases:
            rps, p50, p99, p999, runs = [], [], [], [], []
            for _ in range(RUNS):
                b.fake_reset()
                if ctl:
                    b.fake_control(ctl)
                m = Meter(fake=b.fake.pid)
                d, lg_cpu = run_loadgen(base + args)
                mm = m.stop()
                bad = d["completed"] - d["responses"].get("200", 0) + d["errors"]
                if bad:
                    self.checks.append("%s: %d non-200 answers or errors" % (name, bad))
                rps.append(d["rps"])
                a, c, e = lg_lat(d)
                p50.append(a), p99.append(c), p999.append(e)
                runs.append({"loadgen": d, "loadgen_cpu_s": lg_cpu,
                             "loadgen_us_per_req": 1e6 * lg_cpu / max(d["completed"], 1),
                             "loadgen_core_share": lg_cpu / d["duration_s"], **mm})
            self.raw[rid] = runs
            us = statistics.median(r["loadgen_us_per_req"] for r in runs)
            fk = statistics.median(r["fake_cpu_s"] / r["wall_s"] for r in runs)
            note = "loadgen %.1f us CPU/req; fakeup %.0f%% of a core" % (us, 100 * fk)
            if ideal:
                note = "ideal %d/s (64 conns / 0.2 s); %.0f%% of it; %s" % (
                    ideal, 100 * statistics.median(rps) / ideal, note)
            self.row(rid, name, "req/s", rps, p50, p99, p999, note, "client")
        b.fake_reset()

    # a'. the PostgreSQL ceiling ------------------------------------------------

    def pg_ceiling(self):
        """PostgreSQL alone, on the same cluster and settings, with pgbench: the
        commit and row rates the durable paths are bounded by."""
        b = self.b
        log("== a'. PostgreSQL ceiling (pgbench, same cluster), %gs per run" % DUR)
        db = "bench_pgceiling"
        b.pg.psql("postgres", "DROP DATABASE IF EXISTS %s" % db)
        b.pg.psql("postgres", "CREATE DATABASE %s" % db)
        b.pg.psql(db, "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY"
                      " PRIMARY KEY, k text NOT NULL, body text)")
        scripts = {
            # One row per transaction: what a receiver committing each
            # webhook on its own does.
            "single": "INSERT INTO t (k, body) VALUES (md5(random()::text), 'x');\n",
            # 100 rows per transaction: a group commit's shape.
            "rows100": "INSERT INTO t (k, body) SELECT md5(random()::text), 'x'"
                       " FROM generate_series(1, 100);\n",
        }
        rows = {"single": 1, "rows100": 100}
        try:
            for key, clients, name in (("single", 64, "single-row commits, 64 clients"),
                                       ("rows100", 16, "100-row transactions, 16 clients")):
                path = os.path.join(b.tmp, "pgbench-%s.sql" % key)
                with open(path, "w") as f:
                    f.write(scripts[key])
                os.chmod(path, 0o644)

                def one(path=path, clients=clients):
                    t0 = time.monotonic()
                    cpu0 = tree_cpu(b.pg.postmaster())
                    r = subprocess.run(
                        [b.pg.bin + "/pgbench", "-n", "-h", "127.0.0.1", "-p", str(b.pg.port),
                         "-U", "postgres", "-c", str(clients), "-j", "2", "-T",
                         str(int(max(DUR, 1))), "-f", path, db],
                        capture_output=True, text=True, cwd=ROOT)
                    if r.returncode != 0:
                        raise RuntimeError("pgbench: " + r.stderr[-300:])
                    m = re.search(r"tps = ([0-9.]+)", r.stdout)
                    lat = re.search(r"latency average = ([0-9.]+) ms", r.stdout)
                    wall = time.monotonic() - t0
                    return {"tps": float(m.group(1)), "lat_ms": float(lat.group(1)),
                            "pg_cores": (tree_cpu(b.pg.postmaster()) - cpu0) / wall,
                            "wall_s": wall}
                runs = self.valid_runs("pgbench %s" % key, one)
                self.raw["p_" + key] = runs
                per_s = [r["tps"] * rows[key] for r in runs]
                self.row("p_" + key, "a'. PostgreSQL %s" % name,
                         "commits/s" if key == "single" else "rows/s", per_s,
                         note="pgbench; %.0f tx/s, mean latency %.2f ms; pg %.2f cores" % (
                             statistics.median(r["tps"] for r in runs),
                             statistics.median(r["lat_ms"] for r in runs),
                             statistics.median(r["pg_cores"] for r in runs)))
            self.pg_floor(db)
        finally:
            b.pg.psql("postgres", "DROP DATABASE IF EXISTS %s" % db)

    def pg_floor(self, db):
        """The machine's floor under the latency target: on its way out a
        reply at 100 messages/s waits for two commits in sequence, the
        ingest's and the intent's, neither of which waits for its flush (the
        ingest's flush, which its 200 waits for, is a transaction beside
        the reply's path: gateway/ingest.c). pgbench, one client, paced at
        the same rate for as long as the paced (d) run: per script the
        ingest's commit, its flush's transaction, then the intent's commit.
        The flush is in sequence here (pgbench runs one script at a time),
        so this floor is above what the reply waits for by the flush: read
        it with the machine line's flush figures. Latency from the
        scheduled start (as loadgen's), per script, from pgbench's log."""
        b = self.b
        path = os.path.join(b.tmp, "pgbench-floor.sql")
        insert_async = ("BEGIN;\nSET LOCAL synchronous_commit = off;\n"
                        "INSERT INTO t (k, body) VALUES (md5(random()::text), 'x');\n"
                        "COMMIT;\n")
        with open(path, "w") as f:
            f.write(insert_async +
                    "SELECT pg_logical_emit_message(true, 'parley_flush', '');\n" +
                    insert_async)
        os.chmod(path, 0o644)
        logdir = os.path.join(b.tmp, "pgbench-floor")

        def one():
            shutil.rmtree(logdir, ignore_errors=True)
            os.makedirs(logdir)
            cpu0 = tree_cpu(b.pg.postmaster())
            t0 = time.monotonic()
            r = subprocess.run(
                [b.pg.bin + "/pgbench", "-n", "-h", "127.0.0.1", "-p", str(b.pg.port),
                 "-U", "postgres", "-c", "1", "-R", str(PACED_RATE), "-T",
                 str(int(max(PACED_S, 1))), "-l", "--log-prefix",
                 os.path.join(logdir, "floor"), "-f", path, db],
                capture_output=True, text=True, cwd=ROOT)
            if r.returncode != 0:
                raise RuntimeError("pgbench: " + r.stderr[-300:])
            wall = time.monotonic() - t0
            lat = []
            for name in os.listdir(logdir):
                with open(os.path.join(logdir, name)) as f:
                    # client_id transaction_no time(us) script_no time_epoch
                    # time_us [schedule_lag(us)]
                    lat += [int(ln.split()[2]) / 1000.0 for ln in f if ln.strip()]
            if not lat:
                raise RuntimeError("pgbench wrote no transaction log")
            lat.sort()
            return {"n": len(lat), "per_s": len(lat) / wall, "p50": pct(lat, 50),
                    "p99": pct(lat, 99), "p999": pct(lat, 99.9),
                    "pg_ms_per_script": 1000 * (tree_cpu(b.pg.postmaster()) - cpu0)
                    / len(lat), "wall_s": wall}
        runs = self.valid_runs("pgbench floor", one)
        self.raw["p_floor"] = runs
        self.row("p_floor", "a'. PostgreSQL floor: a reply's 2 commits, %d/s" % PACED_RATE,
                 "scripts/s", [r["per_s"] for r in runs], [r["p50"] for r in runs],
                 [r["p99"] for r in runs], [r["p999"] for r in runs],
                 "pgbench, 1 client, -R %d, %gs; per script the ingest's single-row INSERT"
                 " committed without waiting for its flush, the flush's own transaction (which"
                 " the reply does not wait for; here in sequence), the intent's INSERT as the"
                 " first; pg %.2f ms CPU per script"
                 % (PACED_RATE, PACED_S, statistics.median(r["pg_ms_per_script"]
                                                           for r in runs)),
                 "2 commits")

    # a''. the least any durable ingest can do -----------------------------------

    def start_mingest(self, db, extra=()):
        """Start tests/mingest on db: (process, port, its output file)."""
        b = self.b
        out = open(os.path.join(b.tmp, "mingest.out"), "w+")
        p = spawn([MINGEST, "--db", b.pg.url(db), "--secret", SECRET, "--committers", "1",
                   "--batch", "256", "--threads", "2"] + list(extra),
                  stdout=out, stderr=subprocess.STDOUT)
        for _ in range(100):
            out.seek(0)
            m = re.search(r"mingest port=(\d+)", out.read())
            if m:
                return p, int(m.group(1)), out
            if p.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError("mingest did not start: " + self.stop_mingest(p, out))

    @staticmethod
    def stop_mingest(p, out):
        """Stop a mingest started by start_mingest(); the tail of its output."""
        stop_proc(p)
        out.seek(0)
        tail = out.read()[-300:]
        out.close()
        return tail

    def min_ingest_run(self, normalised=0):
        """One run of tests/mingest (signature, key, one multi-row INSERT per
        batch, synchronous commit, 200) under (b)'s load at 64 connections;
        normalised 1: the message's fields parsed (cJSON) into typed columns,
        with the indexes a queue and a conversation's context need; 2: and
        in the same statement the message's conversation, created or made
        ready (the queue's unit); 3: as 2 in DESIGN.md's storage (identity
        ids, a foreign key, each message's event in a partitioned log)."""
        b = self.b
        b.ndb += 1
        db = "bench_mingest_%d" % b.ndb
        b.pg.psql("postgres", "CREATE DATABASE %s" % db)  # mingest makes its tables
        try:
            p, port, out = self.start_mingest(db, ["--normalise", str(normalised)]
                                              if normalised else [])
            try:
                m = Meter(parley=p.pid, pg=b.pg)
                d, lg_cpu = run_loadgen(["--url", "http://127.0.0.1:%d/webhooks/whatsapp" % port,
                                         "--secret", SECRET, "--connections", "64",
                                         "--duration", str(DUR), "--users", str(USERS)])
                mm = m.stop()
                stored = int(b.pg.psql(db, "SELECT count(*) FROM %s" % (
                    "messages" if normalised == 3 else "inbox")))
                missing = 0
                if normalised == 3:
                    # Every stored message's conversation ready, and its
                    # event there.
                    missing = int(b.pg.psql(db, "SELECT (SELECT count(*) FROM messages m"
                                                " JOIN conversations c ON c.id ="
                                                " m.conversation_id WHERE c.pending_since"
                                                " IS NULL) + (SELECT count(*) FROM messages)"
                                                " - (SELECT count(*) FROM events WHERE type"
                                                " = 'message_received')"))
                elif normalised == 2:
                    # Every stored message's conversation there, and ready
                    # (conv rows come only from stored messages).
                    missing = int(b.pg.psql(db, "SELECT count(DISTINCT (platform, channel,"
                                                " user_id)) - (SELECT count(pending_since)"
                                                " FROM conv) FROM inbox"))
            finally:
                self.stop_mingest(p, out)
        finally:
            b.drop_db(db)
        ok = d["responses"].get("200", 0)
        return {"loadgen": d, "loadgen_cpu_s": lg_cpu, **mm, "acked_200": ok,
                "stored": stored, "stored_minus_expected": stored - ok,
                "queue_misses": missing,
                "non_200": d["completed"] - ok, "errors": d["errors"]}

    def min_ingest(self, normalised=0):
        if normalised == 3:
            rid, name, what = ("m64d", "a''d. least ingest of DESIGN.md's storage (mingest),"
                               " 64 conns", "as a''q with identity ids, a foreign key and"
                               " each message's event in a partitioned log")
            log("== a''d. the least ingest of DESIGN.md's storage (tests/mingest --normalise"
                " 3: as a''q, with identity ids (conversations upserted RETURNING id), the"
                " message's foreign key to its conversation, and its message_received event"
                " in an event log partitioned by month), 64 conns, %gs per run" % DUR)
        elif normalised == 2:
            rid, name, what = ("m64q", "a''q. least queue ingest (mingest), 64 conns",
                               "as a''n, and in the same statement each message's"
                               " conversation created or made ready")
            log("== a''q. the least ingest of a per-conversation queue (tests/mingest"
                " --normalise 2: as a''n, and in the same statement the conversation of"
                " each message created, with the user's pseudonym, or locked and made"
                " ready), 64 conns, %gs per run" % DUR)
        elif normalised:
            rid, name, what = ("m64n", "a''n. least normalised ingest (mingest), 64 conns",
                               "fields parsed into typed columns, queue and conversation"
                               " indexes")
            log("== a''n. the least normalised ingest (tests/mingest --normalise 1: as a''"
                " with the message parsed by cJSON into typed columns, a pending index and"
                " a conversation index), 64 conns, %gs per run" % DUR)
        else:
            rid, name, what = ("m64", "a''. least durable ingest (mingest), 64 conns",
                               "no normalised rows")
            log("== a''. the least a durable ingest can do (tests/mingest: signature, key,"
                " one INSERT per batch, synchronous commit), 64 conns, %gs per run" % DUR)
        runs = self.valid_runs("minimal ingest", lambda: self.min_ingest_run(normalised))
        self.raw[rid] = runs
        for i, r in enumerate(runs):
            if (r["stored_minus_expected"] or r["non_200"] or r["errors"]
                    or r["queue_misses"]):
                self.checks.append("minimal ingest %s run %d: stored %d, 200 answers %d, "
                                   "non-200 %d, errors %d, messages whose conversation is "
                                   "not ready or whose event is missing %d" % (
                                       rid, i + 1, r["stored"], r["acked_200"], r["non_200"],
                                       r["errors"], r["queue_misses"]))
        lat = [lg_lat(r["loadgen"]) for r in runs]
        self.row(rid, name, "webhooks/s",
                 [r["loadgen"]["rps"] for r in runs], [x[0] for x in lat],
                 [x[1] for x in lat], [x[2] for x in lat],
                 "one multi-row INSERT per batch, " + what + "; stored-200s %s; "
                 "loadgen %.0f%%, pg %.2f, mingest %.2f cores; machine busy %.2f" % (
                     ",".join(str(r["stored_minus_expected"]) for r in runs),
                     100 * statistics.median(r["loadgen_cpu_s"] / r["wall_s"] for r in runs),
                     statistics.median(r["pg_cpu_s"] / r["wall_s"] for r in runs),
                     statistics.median(r["parley_cpu_s"] / r["wall_s"] for r in runs),
                     statistics.median(r["machine_busy_cores"] for r in runs)), "ack")

    # a'''. the least any durable reply path can do -----------------------------

    def min_reply_run(self, queue):
        """One run of tests/mingest in reply mode (rows a''' and a''''): d0's
        load (LLM 0 ms, closed loop at 64 connections, 1e6 users), every new
        message answered through fakeup (receipt, LLM call, send) with 64
        calls in flight on one curl multi handle, the replies stored in
        batches; with queue "db" the messages are claimed from PostgreSQL
        and each reply's intent stored before its send."""
        b = self.b
        b.fake_reset()
        b.ndb += 1
        db = "bench_minreply_%d" % b.ndb
        b.pg.psql("postgres", "CREATE DATABASE %s" % db)  # mingest makes its tables
        fake = "http://127.0.0.1:%d" % b.fake_port
        try:
            p, port, out = self.start_mingest(db, [
                "--llm", fake + "/v1", "--llm-key", "bench-llm-key",
                "--graph", fake + "/v21.0", "--graph-token", "bench-wa-token",
                "--inflight", str(WORKERS), "--receipt", "1", "--queue", queue])
            try:
                m = Meter(parley=p.pid, pg=b.pg, fake=b.fake.pid)
                d, lg_cpu = run_loadgen(["--url", "http://127.0.0.1:%d/webhooks/whatsapp" % port,
                                         "--secret", SECRET, "--connections", "64",
                                         "--users", "1000000", "--requests", str(E2E_MAX),
                                         "--duration", str(DUR)])
                acked = d["responses"].get("200", 0)
                deadline = time.monotonic() + DRAIN_TIMEOUT
                stored = answered = -1
                while time.monotonic() < deadline and p.poll() is None:
                    stored, answered = (int(x) for x in b.pg.psql(
                        db, "SELECT (SELECT count(*) FROM inbox),"
                            " (SELECT count(*) FROM outbox WHERE wamid IS NOT NULL)").split())
                    if answered >= stored >= acked:
                        break
                    time.sleep(0.2)
                mm = m.stop()
                first_in = float(b.pg.psql(db, "SELECT extract(epoch FROM min(received_at))"
                                               " * 1000 FROM inbox") or 0)
            finally:
                tail = self.stop_mingest(p, out)
        finally:
            b.drop_db(db)
        recs = b.fake_graph_requests()
        sends = [r["ts_ms"] for r in recs if isinstance(r.get("body"), dict)
                 and r["body"].get("status") != "read"]
        span = (max(sends) - first_in) / 1000 if sends and first_in else None
        replies = len(sends)
        return {"loadgen": d, "loadgen_cpu_s": lg_cpu, **mm, "acked_200": acked,
                "stored": stored, "answered": answered, "replies": replies,
                "mingest_tail": tail,
                "replies_per_s": replies / span if span and span > 0 else None,
                "mingest_cpu_s_per_1000": 1000 * mm["parley_cpu_s"] / replies if replies else None,
                "pg_cpu_s_per_1000": 1000 * mm["pg_cpu_s"] / replies if replies else None,
                "fake_cpu_s_per_1000": 1000 * mm["fake_cpu_s"] / replies if replies else None}

    def min_reply(self, queue="memory"):
        if queue == "db":
            rid, name = "m0db", "a''''. least reply path through PostgreSQL (mingest), LLM 0 ms"
            log("== a''''. the least reply path through PostgreSQL (tests/mingest --llm"
                " --queue db: ingest as a'', claims with a lease, an intent before each"
                " send, the finish in one commit), LLM 0 ms, closed loop 64 conns for %gs"
                % DUR)
        else:
            rid, name = "m0", "a'''. least durable reply path (mingest), LLM 0 ms"
            log("== a'''. the least a durable reply path can do (tests/mingest --llm: ingest"
                " as a'', then receipt, LLM call and send on one curl multi handle, replies"
                " stored in batches), LLM 0 ms, closed loop 64 conns for %gs" % DUR)
        runs = self.valid_runs("minimal reply path (%s)" % queue,
                               lambda: self.min_reply_run(queue))
        self.raw[rid] = runs
        for i, r in enumerate(runs):
            log("   run %d: %d replies, %s/s; stored %d, answered %d, acked %d" % (
                i + 1, r["replies"], fmt_num(r["replies_per_s"]), r["stored"],
                r["answered"], r["acked_200"]))
            if not (r["stored"] == r["acked_200"] == r["answered"] == r["replies"]):
                self.checks.append("minimal reply path run %d: %d acked, %d stored, %d replies "
                                   "stored, %d sent (%s)" % (i + 1, r["acked_200"], r["stored"],
                                                             r["answered"], r["replies"],
                                                             r["mingest_tail"].strip()))
        self.row(rid, name, "replies/s", [r["replies_per_s"] for r in runs], note=(
                     ("claim, intent, finish in batches; no context, events or normalised rows"
                      if queue == "db" else
                      "jobs in memory: no claim, intent, context, events or normalised rows") +
                     "; mingest %.2f s + "
                     "pg %.2f s + fakeup %.2f s CPU/1000 replies; machine busy %.2f cores" % (
                         statistics.median(r["mingest_cpu_s_per_1000"] or 0 for r in runs),
                         statistics.median(r["pg_cpu_s_per_1000"] or 0 for r in runs),
                         statistics.median(r["fake_cpu_s_per_1000"] or 0 for r in runs),
                         statistics.median(r["machine_busy_cores"] for r in runs))))

    # a''''p. the least reply path through PostgreSQL at 100 messages/s ------

    def min_reply_paced_run(self):
        """One run of tests/mingest --queue db under the paced row's load
        (100 messages/s for PACED_S after E2E_WARMUP_S unmeasured, LLM
        200 ms, 1e6 users): each reply's added latency as (d)'s, the send's
        time at fakeup minus its message's received_at minus its LLM call's
        time (outbox.llm_us)."""
        b = self.b
        b.fake_reset()
        b.fake_control({"llm_latency_ms": 200})
        b.ndb += 1
        db = "bench_minpaced_%d" % b.ndb
        b.pg.psql("postgres", "CREATE DATABASE %s" % db)  # mingest makes its tables
        fake = "http://127.0.0.1:%d" % b.fake_port

        def answered():
            return [int(x) for x in b.pg.psql(
                db, "SELECT (SELECT count(*) FROM inbox),"
                    " (SELECT count(*) FROM outbox WHERE wamid IS NOT NULL)").split()]

        def drain(acked):
            deadline = time.monotonic() + DRAIN_TIMEOUT
            while time.monotonic() < deadline:
                stored, done = answered()
                if done >= stored >= acked:
                    return stored, done
                time.sleep(0.1)
            return answered()

        try:
            p, port, out = self.start_mingest(db, [
                "--llm", fake + "/v1", "--llm-key", "bench-llm-key",
                "--graph", fake + "/v21.0", "--graph-token", "bench-wa-token",
                "--inflight", str(WORKERS), "--receipt", "1", "--queue", "db"])
            args = ["--url", "http://127.0.0.1:%d/webhooks/whatsapp" % port, "--secret", SECRET,
                    "--connections", "64", "--users", "1000000", "--rate", str(PACED_RATE)]
            try:
                w, _ = run_loadgen(args + ["--duration", str(E2E_WARMUP_S), "--run-id",
                                           "warmup", "--seed", "7"])
                warm = w["responses"].get("200", 0)
                drain(warm)
                cutoff = float(b.pg.psql(db, "SELECT coalesce(extract(epoch FROM"
                                             " max(received_at)) * 1000, 0) FROM inbox"))
                b.fake_reset()  # forget the warm-up's sends
                b.fake_control({"llm_latency_ms": 200})
                m = Meter(parley=p.pid, pg=b.pg, fake=b.fake.pid)
                d, lg_cpu = run_loadgen(args + ["--duration", str(PACED_S)])
                acked = d["responses"].get("200", 0)
                stored, done = drain(acked + warm)
                mm = m.stop()
                rows = b.pg.psql(db, "SELECT o.reply, o.llm_us,"
                                     " extract(epoch FROM i.received_at) * 1000"
                                     " FROM inbox i JOIN outbox o USING (key)"
                                     " WHERE i.received_at > to_timestamp(%f / 1000)" % cutoff)
            finally:
                tail = self.stop_mingest(p, out)
        finally:
            b.drop_db(db)
        recs = b.fake_graph_requests()
        inputs = {}
        for line in rows.splitlines():
            parts = line.split("\t")
            if len(parts) == 3 and parts[1] and parts[2]:
                inputs[parts[0]] = (float(parts[1]) / 1000, float(parts[2]))
        added, added_cfg, unmatched = [], [], 0
        for r in recs:
            body_ = r.get("body")
            if not isinstance(body_, dict) or body_.get("status") == "read":
                continue
            text = ((body_.get("text") or {}).get("body")) or ""
            if text not in inputs:
                unmatched += 1
                continue
            llm, first = inputs[text]
            added.append(r["ts_ms"] - first - llm)
            added_cfg.append(r["ts_ms"] - first - 200)
        return {"loadgen": d, "loadgen_cpu_s": lg_cpu, **mm, "acked_200": acked + warm,
                "stored": stored, "answered": done, "replies": len(added),
                "unmatched_sends": unmatched, "mingest_tail": tail,
                "added_ms_p50": pct(added, 50), "added_ms_p99": pct(added, 99),
                "added_ms_p999": pct(added, 99.9), "added_n": len(added),
                "added_incl_client_ms_p99": pct(added_cfg, 99)}

    def min_reply_paced(self):
        rid = "m200p"
        log("== a''''p. the least reply path through PostgreSQL (tests/mingest --llm --queue"
            " db, as a'''') at %d msg/s, LLM 200 ms, for %gs after %gs unmeasured"
            % (PACED_RATE, PACED_S, E2E_WARMUP_S))
        runs = self.valid_runs("minimal reply path paced", self.min_reply_paced_run)
        self.raw[rid] = runs
        for i, r in enumerate(runs):
            log("   run %d: %d replies, added p50 %s p99 %s ms; stored %d, answered %d,"
                " acked %d, unmatched sends %d" % (
                    i + 1, r["replies"], fmt_num(r["added_ms_p50"]), fmt_num(r["added_ms_p99"]),
                    r["stored"], r["answered"], r["acked_200"], r["unmatched_sends"]))
            if not (r["stored"] == r["acked_200"] == r["answered"]) or r["unmatched_sends"]:
                self.checks.append("minimal paced reply path run %d: %d acked, %d stored, %d "
                                   "answered, %d sends unmatched (%s)" % (
                                       i + 1, r["acked_200"], r["stored"], r["answered"],
                                       r["unmatched_sends"], r["mingest_tail"].strip()))
        self.row(rid, "a''''p. least reply path through PostgreSQL (mingest), 100 msg/s",
                 "replies/s", [r["replies"] / PACED_S for r in runs],
                 [r["added_ms_p50"] for r in runs], [r["added_ms_p99"] for r in runs],
                 [r["added_ms_p999"] for r in runs],
                 "LLM 200 ms; as a'''': ingest committed durably, then claimed, intent, send;"
                 " added p99 %s ms if the LLM client's own time counts; mingest %.2f,"
                 " pg %.2f cores" % (
                     fmt_num(statistics.median(r["added_incl_client_ms_p99"] or 0 for r in runs)),
                     statistics.median(r["parley_cpu_s"] / r["wall_s"] for r in runs),
                     statistics.median(r["pg_cpu_s"] / r["wall_s"] for r in runs)), "added")

    # a. the HTTP ceiling ------------------------------------------------------

    def ceiling(self):
        b = self.b
        log("== a. ceiling: GET /healthz on parley serve --no-workers, %gs per run" % DUR)
        db = b.new_db("ceiling")
        try:
            for c in CONNS:
                def one(c=c):
                    if b.parley is None or b.parley.poll() is not None:
                        b.parley = None
                        b.start_parley(db, 0)
                    m = Meter(parley=b.parley.pid)
                    d, lg_cpu = run_loadgen(["--url", b.parley_url("/"), "--path", "/healthz",
                                             "--method", "GET", "--connections", str(c),
                                             "--duration", str(DUR)])
                    return {"loadgen": d, "loadgen_cpu_s": lg_cpu, **m.stop(),
                            "parley_death": b.parley_death()}
                runs = self.valid_runs("ceiling %d conns" % c, one)
                for i, r in enumerate(runs):
                    d = r["loadgen"]
                    if d["errors"] or d["completed"] != d["responses"].get("200", 0):
                        self.checks.append("ceiling %d conns run %d: %d errors %s, answers %s"
                                           % (c, i + 1, d["errors"], d["error_kinds"],
                                              d["responses"]))
                self.raw["a%d" % c] = runs
                lat = [lg_lat(r["loadgen"]) for r in runs]
                lg = statistics.median(r["loadgen_cpu_s"] / r["wall_s"] for r in runs)
                self.row("a%d" % c, "a. ceiling /healthz, %d conns" % c, "req/s",
                         [r["loadgen"]["rps"] for r in runs], [x[0] for x in lat],
                         [x[1] for x in lat], [x[2] for x in lat],
                         "loadgen %.0f%% of a core, %.1f us CPU/req" % (
                             100 * lg, statistics.median(
                                 1e6 * r["loadgen_cpu_s"] / max(r["loadgen"]["completed"], 1)
                                 for r in runs)), "client")
        finally:
            b.stop_parley()
            b.drop_db(db)

    # b/c. durable ingest ------------------------------------------------------

    def ingest_run(self, conns, dup, status=0.0):
        b = self.b
        db = b.new_db("ingest%d" % conns)
        pid = b.start_parley(db, 0)
        try:
            rss_idle, _ = proc_mem(pid)
            b.pg.statements_reset()
            m = Meter(parley=pid, pg=b.pg)
            args = ["--url", b.parley_url("/webhooks/whatsapp"), "--secret", SECRET,
                    "--connections", str(conns), "--duration", str(DUR),
                    "--users", str(USERS)]
            if dup:
                args += ["--dup-ratio", str(dup)]
            if status:
                args += ["--status-ratio", str(status)]
            d, lg_cpu = run_loadgen(args)
            mm = m.stop()
            met = b.metrics()
            _, hwm = proc_mem(pid)
            # Each unique webhook stores one inbound message or, a status
            # (--status-ratio), one 'delivered' event.
            stored = int(b.pg.psql(db, "SELECT (SELECT count(*) FROM messages"
                                       " WHERE direction = 'in') + (SELECT count(*)"
                                       " FROM events WHERE type = 'delivered')"))
            top = b.pg.statements_top(db)
            death = b.parley_death()
        finally:
            b.stop_parley()
        b.drop_db(db)
        ok = d["responses"].get("200", 0)
        expected = ok - (d["duplicates"] if dup else 0)
        bcount = met.get("parley_ingest_batch_requests_count", 0)
        return {"loadgen": d, "loadgen_cpu_s": lg_cpu, **mm,
                "rss_idle_kb": rss_idle, "rss_peak_kb": hwm,
                "batch_mean": (met.get("parley_ingest_batch_requests_sum", 0) / bcount)
                if bcount else None,
                "commits": bcount, "acked_200": ok, "stored": stored,
                "expected_stored": expected, "stored_minus_expected": stored - expected,
                "non_200": d["completed"] - ok, "errors": d["errors"], "top_statements": top,
                "parley_death": death}

    def ingest(self, dup=0.0, status=0.0):
        conns_list = [64] if dup or status else CONNS
        label = ("c. ingest, 50% duplicates" if dup else
                 "bs. ingest, 3 of 4 webhooks statuses" if status else
                 "b. durable ingest")
        log("== %s: unique signed WhatsApp webhooks, %gs per run, %d users, "
            "serve --no-workers" % (label, DUR, USERS))
        for c in conns_list:
            runs = self.valid_runs("%s %d conns" % (label, c),
                                   lambda c=c: self.ingest_run(c, dup, status))
            rid = ("c%d" if dup else "bs%d" if status else "b%d") % c
            self.raw[rid] = runs
            self.show_top(runs)
            for i, r in enumerate(runs):
                log("   run %d: %.0f/s p99 %.1f ms batch %.1f stored-expected %d non200 %d "
                    "errors %d other load %.2f cores" % (
                        i + 1, r["loadgen"]["rps"], r["loadgen"]["latency_ms"]["p99"],
                        r["batch_mean"] or 0, r["stored_minus_expected"], r["non_200"],
                        r["errors"], r["other_load_cores"]))
                if r["stored_minus_expected"] or r["non_200"] or r["errors"]:
                    self.checks.append(
                        "%s %d conns run %d: stored %d, expected %d (200 answers %d%s), "
                        "non-200 %d, errors %d" % (label, c, i + 1, r["stored"],
                                                    r["expected_stored"], r["acked_200"],
                                                    ", minus %d duplicates" %
                                                    r["loadgen"]["duplicates"] if dup else "",
                                                    r["non_200"], r["errors"]))
            lat = [lg_lat(r["loadgen"]) for r in runs]
            note = "batch %.1f; stored-expected %s; loadgen %.0f%%, pg %.2f, parley %.2f cores" % (
                statistics.median(r["batch_mean"] or 0 for r in runs),
                ",".join(str(r["stored_minus_expected"]) for r in runs),
                100 * statistics.median(r["loadgen_cpu_s"] / r["wall_s"] for r in runs),
                statistics.median(r["pg_cpu_s"] / r["wall_s"] for r in runs),
                statistics.median(r["parley_cpu_s"] / r["wall_s"] for r in runs))
            name = "%s, %d conns" % (label, c)
            self.row(rid, name, "webhooks/s", [r["loadgen"]["rps"] for r in runs],
                     [x[0] for x in lat], [x[1] for x in lat], [x[2] for x in lat],
                     note, "ack")

    # d. end to end ---------------------------------------------------------------

    def wait_drain(self, db, acked):
        deadline = time.monotonic() + DRAIN_TIMEOUT
        pending = total = -1
        while time.monotonic() < deadline and self.b.parley.poll() is None:
            out = self.b.pg.psql(db, "SELECT count(*) FILTER (WHERE reply_state = 'pending'),"
                                     " count(*) FROM messages WHERE direction = 'in'")
            pending, total = (int(x) for x in out.split())
            if pending == 0 and total >= acked:
                return True, pending, total
            time.sleep(0.2)
        return False, pending, total

    def e2e_run(self, llm_ms, paced):
        b = self.b
        if FAKE_RESTART:
            b.restart_fake()
        if PG_FRESH and paced:
            b.pg.stop()
            b.pg.start()
        b.fake_reset()
        if llm_ms:
            b.fake_control({"llm_latency_ms": llm_ms})
        db = b.new_db("e2e%d" % llm_ms)
        pid = b.start_parley(db, WORKERS)
        try:
            time.sleep(1.0)
            rss_idle, _ = proc_mem(pid)
            args = ["--url", b.parley_url("/webhooks/whatsapp"), "--secret", SECRET,
                    "--connections", "64", "--users", "1000000"]
            cutoff, warm_sent = 0.0, 0
            if E2E_WARMUP_S > 0:
                w, _ = run_loadgen(args + ["--rate", str(PACED_RATE), "--duration",
                                           str(E2E_WARMUP_S), "--run-id", "warmup",
                                           "--seed", "7"])
                self.wait_drain(db, w["responses"].get("200", 0))
                cutoff = float(b.pg.psql(db, "SELECT coalesce(extract(epoch FROM"
                                             " max(received_at)) * 1000, 0) FROM messages"))
                warm_sent = int(b.pg.psql(db, "SELECT count(*) FROM responses"
                                              " WHERE kind = 'llm' AND status = 'sent'"))
                b.fake_reset()  # forget the warm-up's sends
                if llm_ms:
                    b.fake_control({"llm_latency_ms": llm_ms})
            b.pg.statements_reset()
            m = Meter(parley=pid, pg=b.pg, fake=b.fake.pid)
            if paced:
                args += ["--rate", str(PACED_RATE), "--duration", str(PACED_S)]
            elif llm_ms:
                args += ["--requests", str(E2E_200_MSGS), "--duration", "120"]
            else:
                args += ["--requests", str(E2E_MAX), "--duration", str(DUR)]
            d, lg_cpu = run_loadgen(args)
            acked = d["responses"].get("200", 0)
            if cutoff:
                acked += int(b.pg.psql(db, "SELECT count(*) FROM messages WHERE direction = 'in'"
                                           " AND received_at <= to_timestamp(%f / 1000)"
                                           % cutoff))
            drained, pending, total = self.wait_drain(db, acked)
            mm = m.stop()
            text = b.metrics_text()
            met = b.metrics(text)
            stages, tails = b.stages(text)
            _, hwm = proc_mem(pid)
            rows = b.pg.psql(db, """
                SELECT m.text, r.llm_ms, extract(epoch FROM f.first) * 1000
                FROM messages m JOIN responses r ON r.id = m.response_id
                JOIN LATERAL (SELECT min(m2.received_at) AS first
                              FROM response_inputs ri JOIN messages m2 ON m2.id = ri.message_id
                              WHERE ri.response_id = r.id) f ON true
                WHERE m.direction = 'in' AND r.kind = 'llm'
                  AND f.first > to_timestamp(%f / 1000)""" % cutoff)
            states = b.pg.psql(db, "SELECT reply_state, count(*) FROM messages"
                                   " WHERE direction = 'in' GROUP BY 1 ORDER BY 1")
            resp = b.pg.psql(db, "SELECT kind || '/' || status, count(*) FROM responses"
                                 " GROUP BY 1 ORDER BY 1")
            top = b.pg.statements_top(db)
            death = b.parley_death()
            first_in = float(b.pg.psql(db, "SELECT extract(epoch FROM min(received_at)) * 1000"
                                           " FROM messages WHERE direction = 'in'"
                                           " AND received_at > to_timestamp(%f / 1000)"
                                           % cutoff) or 0)
        finally:
            b.stop_parley()
        b.drop_db(db)
        recs = b.fake_graph_requests()
        key_re = re.compile(r"loadgen message (\d+) from user (\d+)")
        inputs = {}
        for line in rows.splitlines():
            parts = line.split("\t")
            if len(parts) != 3:
                continue
            k = key_re.search(parts[0])
            if k and parts[1] and parts[2]:
                inputs[k.groups()] = (float(parts[1]), float(parts[2]))
        added, added_cfg, send_ts, unmatched = [], [], [], 0
        for r in recs:
            body_ = r.get("body")
            if not isinstance(body_, dict) or body_.get("status") == "read":
                continue
            text = ((body_.get("text") or {}).get("body")) or ""
            send_ts.append(r["ts_ms"])
            k = key_re.search(text)
            if not k or k.groups() not in inputs:
                unmatched += 1
                continue
            llm, first = inputs[k.groups()]
            added.append(r["ts_ms"] - first - llm)
            added_cfg.append(r["ts_ms"] - first - llm_ms)
        replies = len(send_ts)
        span = (max(send_ts) - first_in) / 1000 if send_ts and first_in else None
        lat_sum = met.get("parley_reply_latency_seconds_sum", 0)
        lat_n = met.get("parley_reply_latency_seconds_count", 0)
        llm_sum = met.get("parley_llm_request_duration_seconds_sum", 0)
        llm_n = met.get("parley_llm_request_duration_seconds_count", 0)
        return {
            "llm_latency_ms": llm_ms, "paced_rate": PACED_RATE if paced else None,
            "loadgen": d, "loadgen_cpu_s": lg_cpu, **mm,
            "drained": drained, "pending_left": pending, "stored": total,
            "acked_200": acked, "reply_states": dict(
                line.split("\t") for line in states.splitlines() if "\t" in line),
            "responses": dict(line.split("\t") for line in resp.splitlines() if "\t" in line),
            "replies": replies, "unmatched_sends": unmatched,
            "warmup_replies": warm_sent,
            "replies_per_s": replies / span if span and span > 0 else None,
            "added_ms_p50": pct(added, 50), "added_ms_p99": pct(added, 99),
            "added_ms_p999": pct(added, 99.9), "added_ms_max": max(added) if added else None,
            "added_n": len(added),
            # Minus the fake's configured latency instead of the measured
            # call: counts Parley's own LLM client time (and the fake's) too.
            "added_incl_client_ms_p50": pct(added_cfg, 50),
            "added_incl_client_ms_p99": pct(added_cfg, 99),
            "metric_mean_reply_latency_ms": 1000 * lat_sum / lat_n if lat_n else None,
            "metric_mean_llm_ms": 1000 * llm_sum / llm_n if llm_n else None,
            "stage_mean_ms": stages,
            "stage_share_over_ms": tails,
            "rss_idle_kb": rss_idle, "rss_peak_kb": hwm, "top_statements": top,
            "parley_death": death,
            "parley_cpu_s_per_1000": 1000 * mm["parley_cpu_s"] / replies if replies else None,
            "pg_cpu_s_per_1000": 1000 * mm["pg_cpu_s"] / replies if replies else None,
            # Context switches per reply (a count: steadier than CPU time
            # across this VM's phases; PostgreSQL's from its live backends).
            "parley_switches_per_reply": mm.get("parley_switches", 0) / replies if replies else None,
            "pg_switches_per_reply": mm.get("pg_switches", 0) / replies if replies else None,
        }

    def e2e(self, llm_ms, paced=False, first=False):
        if paced:
            what = "%d msg/s for %gs" % (PACED_RATE, PACED_S)
            if first:
                what += ", before the other scenarios"
        elif llm_ms:
            what = "%d messages" % E2E_200_MSGS
        else:
            what = "closed loop 64 conns for %gs (at most %d messages)" % (DUR, E2E_MAX)
        what += " after a %gs warm-up" % E2E_WARMUP_S
        log("== d. end to end: LLM %d ms, %d workers, %s, 1e6 users" % (llm_ms, WORKERS, what))
        runs = self.valid_runs("e2e LLM %d ms%s" % (llm_ms, " paced" if paced else ""),
                               lambda: self.e2e_run(llm_ms, paced))
        for i, r in enumerate(runs):
            log("   run %d: %d replies, %s/s, added p50 %s p99 %s ms, pending left %d, "
                "states %s, other load %.2f cores" % (
                    i + 1, r["replies"], fmt_num(r["replies_per_s"]),
                    fmt_num(r["added_ms_p50"]), fmt_num(r["added_ms_p99"]),
                    r["pending_left"], r["reply_states"], r["other_load_cores"]))
            answered = int(r["reply_states"].get("answered", 0))
            sent_ok = int(r["responses"].get("llm/sent", 0))
            if (not r["drained"] or r["unmatched_sends"] or r["stored"] != r["acked_200"]
                    or answered != r["acked_200"]
                    or r["replies"] != sent_ok - r.get("warmup_replies", 0)
                    or sum(int(v) for v in r["responses"].values()) != sent_ok):
                self.checks.append(
                    "e2e LLM %d ms%s run %d: %d acked, %d stored, %d replies sent (after "
                    "the warm-up's %d), %d still "
                    "pending after %gs, %d sends not matched to a message, messages %s, "
                    "responses %s" % (
                        llm_ms, " paced" if paced else "", i + 1, r["acked_200"], r["stored"],
                        r["replies"], r.get("warmup_replies", 0), r["pending_left"], DRAIN_TIMEOUT, r["unmatched_sends"],
                        r["reply_states"], r["responses"]))
        rid = "d%d%s%s" % (llm_ms, "p" if paced else "", "0" if first else "")
        self.raw[rid] = runs
        self.show_top(runs)
        note = ("parley %.2f s + pg %.2f s CPU/1000 replies; %.1f + %.1f context switches/reply; "
                "fakeup %.0f%%, loadgen %.0f%% core") % (
            statistics.median(r["parley_cpu_s_per_1000"] or 0 for r in runs),
            statistics.median(r["pg_cpu_s_per_1000"] or 0 for r in runs),
            statistics.median(r.get("parley_switches_per_reply") or 0 for r in runs),
            statistics.median(r.get("pg_switches_per_reply") or 0 for r in runs),
            100 * statistics.median(r["fake_cpu_s"] / r["wall_s"] for r in runs),
            100 * statistics.median(r["loadgen_cpu_s"] / r["wall_s"] for r in runs))
        if llm_ms and not paced:
            ideal = WORKERS * 1000.0 / llm_ms
            note = "%.0f%% of ideal %d/s; %s" % (
                100 * statistics.median(r["replies_per_s"] or 0 for r in runs) / ideal,
                ideal, note)
        note = "added p99 %s ms if the LLM client's own time counts; %s" % (
            fmt_num(statistics.median(r["added_incl_client_ms_p99"] for r in runs
                                      if r["added_incl_client_ms_p99"] is not None)
                    if any(r["added_incl_client_ms_p99"] is not None for r in runs)
                    else None), note)
        if paced:
            note = "ack p99 %s ms; %s" % (fmt_num(statistics.median(
                r["loadgen"]["latency_ms"]["p99"] for r in runs)), note)
            order = ("wait", "queue", "handoff", "intent", "send", "finish")
            means = {k: statistics.median(r["stage_mean_ms"][k] for r in runs
                                          if k in r.get("stage_mean_ms", {}))
                     for k in order if any(k in r.get("stage_mean_ms", {}) for r in runs)}
            if means:
                note = "mean ms by stage: %s; %s" % (
                    ", ".join("%s %.2f" % (k, v) for k, v in means.items()), note)
        note = "after %gs unmeasured warm-up; %s" % (E2E_WARMUP_S, note)
        name = "d. e2e LLM %d ms, %d workers%s%s" % (
            llm_ms, WORKERS, ", %d msg/s" % PACED_RATE if paced else "",
            ", run first" if first else "")
        self.row(rid, name, "replies/s", [r["replies_per_s"] for r in runs],
                 [r["added_ms_p50"] for r in runs], [r["added_ms_p99"] for r in runs],
                 [r["added_ms_p999"] for r in runs], note, "added")

    # e. memory and CPU ----------------------------------------------------------------

    def memory(self):
        mb = 1024.0
        d = [r for k in ("d0", "d200", "d200p") for r in self.raw.get(k, [])]
        bkeys = [k for k in sorted(self.raw) if k[:1] == "b" and k[1:].isdigit()]
        b = [r for k in bkeys for r in self.raw[k]]
        self.row("e_idle", "e. RSS idle, %d workers" % WORKERS, "MB",
                 [r["rss_idle_kb"] / mb for r in d], note="VmRSS 1 s after ready")
        if b:
            by = {}
            for k in bkeys:
                by[k] = max(r["rss_peak_kb"] for r in self.raw[k]) / mb
            self.row("e_peak_b", "e. peak RSS under (b), --no-workers", "MB",
                     [r["rss_peak_kb"] / mb for r in b],
                     note="VmHWM; max by conns: " + ", ".join(
                         "%s %.1f" % (k[1:], v) for k, v in by.items()))
        self.row("e_peak_d", "e. peak RSS under (d), %d workers" % WORKERS, "MB",
                 [r["rss_peak_kb"] / mb for r in d], note="VmHWM")
        d0 = self.raw.get("d0", [])
        self.row("e_cpu", "e. parley CPU-s per 1000 replies (LLM 0 ms)", "CPU-s",
                 [r["parley_cpu_s_per_1000"] for r in d0],
                 note="PostgreSQL: %s CPU-s per 1000 replies" % fmt_num(
                     statistics.median(r["pg_cpu_s_per_1000"] or 0 for r in d0)
                     if d0 else None))


# ---- report -------------------------------------------------------------------

def machine_phase(seconds=10):
    """The machine's state now, idle, from tests/vmprobe: the median time of
    its fixed register and memory units and the late wake-ups per second
    (docs/performance-history.md, "What the machine does"). On this VM the memory
    unit moves by up to 70 % between phases; the header shows it at the
    start and the end of every run so that runs can be told apart."""
    p = subprocess.run(["timeout", "-s", "TERM", str(seconds + 1), VMPROBE,
                        "--window-s", str(seconds // 2)],
                       capture_output=True, text=True, cwd=ROOT)
    wins = vmprobe_windows(p.stdout.splitlines())
    if not wins:
        return None
    return {"alu_p50_us": statistics.median(w[1] for w in wins),
            "mem_p50_us": statistics.median(w[7] for w in wins),
            "late_over_1ms_per_s": sum(w[6] for w in wins) / (len(wins) * (seconds // 2)),
            "late_max_ms": max(w[5] for w in wins) / 1000}


def phase_text(ph):
    if not ph:
        return "?"
    return ("memory unit %.0f us, ALU unit %.0f us, %.1f wake-ups/s over 1 ms late "
            "(worst %.1f ms)" % (ph["mem_p50_us"], ph["alu_p50_us"],
                                 ph["late_over_1ms_per_s"], ph["late_max_ms"]))


def machine_info(pg):
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    fs = subprocess.run(["df", "--output=fstype,source", pg.root],
                        capture_output=True, text=True).stdout.split("\n")[1:2]
    return {"nproc": os.cpu_count(), "cpu": cpu, "mem_gb": round(mem_kb / 1048576, 1),
            "kernel": os.uname().release, "postgres": pg.version(),
            "pg_data_fs": " ".join(fs[0].split()) if fs else "?",
            "fdatasync_per_s": fdatasync_test(pg.root, 0, 5000)[0],
            "fdatasync_paced_ms": dict(zip(("p50", "p99"),
                                           fdatasync_test(pg.root, 0.010, 300)[1:]))}


def fdatasync_test(directory, gap_s, n):
    """n 8 kB writes + fdatasync on the cluster's disk, at advancing offsets
    as the WAL is written, gap_s apart: (flushes per second of flush time,
    p50 ms, p99 ms). Back to back (gap 0) it is the WAL flush rate the disk
    allows, what one group commit costs at least. With a gap: on a virtual
    machine a flush after an idle gap can cost several times one made back
    to back (the vCPU halts while the disk works, and waking it is slow);
    each reply at 100 messages/s waits for two (the ingest's and the
    intent's commit), one every 10 ms is that rate's message interval."""
    path = os.path.join(directory, "fdatasync.test")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        block = b"\0" * 8192
        os.pwrite(fd, b"\0" * (n * 8192), 0)
        os.fsync(fd)
        lat = []
        for i in range(n):
            if gap_s:
                time.sleep(gap_s)
            t0 = time.perf_counter()
            os.pwrite(fd, block, i * 8192)
            os.fdatasync(fd)
            lat.append(time.perf_counter() - t0)
        rate = n / sum(lat)
        lat.sort()
        return round(rate), round(1000 * lat[n // 2], 3), round(1000 * lat[int(n * 0.99)], 3)
    finally:
        os.close(fd)
        os.unlink(path)


def other_load_now(seconds=2.0):
    """Cores kept busy by processes that are not ours, over a short idle wait."""
    m = Meter()
    time.sleep(seconds)
    return m.stop()["other_load_cores"]


def git_info():
    def g(*a):
        r = subprocess.run(["git"] + list(a), cwd=ROOT, capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else ""
    return {"commit": g("rev-parse", "--short", "HEAD") or "nogit",
            "dirty": bool(g("status", "--porcelain", "--untracked-files=no"))}


def find(rows, rid):
    for r in rows:
        if r["id"] == rid:
            return r
    return None


def med(rows, rid, field="value"):
    r = find(rows, rid)
    return r[field]["median"] if r else None


def targets(rows):
    out = []

    def t(name, value, ok, fmt):
        out.append({"target": name, "measured": value,
                    "met": None if value is None else bool(ok(value)),
                    "shown": fmt(value) if value is not None else "not measured"})

    ing = med(rows, "b64")
    ceil = med(rows, "a64")
    # What the least ingests did in the same run (rows a'', a''n, a''q and a''d).
    leasts = [(k, med(rows, rid), med(rows, rid, "p99_ms"))
              for k, rid in (("least durable ingest", "m64"), ("normalised", "m64n"),
                             ("queue", "m64q"), ("DESIGN.md's storage", "m64d"))
              if med(rows, rid)]

    def bound(fmt):
        return " (%s)" % "; ".join("%s %s" % (k, fmt(v, p99)) for k, v, p99 in leasts) \
            if leasts else ""
    t("durable ingest >= 30,000 webhooks/s at 64 conns", ing, lambda v: v >= 30000,
      lambda v: "%s/s%s" % (fmt_num(v), bound(lambda x, _: "%s/s" % fmt_num(x))))
    t("durable ingest >= 0.2x ceiling at 64 conns",
      ing / ceil if ing and ceil else None, lambda v: v >= 0.2,
      lambda v: "%.3fx%s" % (v, bound(lambda x, _: "%.3fx" % (x / ceil))))
    t("p99 ack <= 10 ms at 64 conns", med(rows, "b64", "p99_ms"), lambda v: v <= 10,
      lambda v: "%s ms%s" % (fmt_num(v), bound(lambda _, p99: "%s ms" % fmt_num(p99))))
    least_reply = [("least reply path", med(rows, "m0")),
                   ("through PostgreSQL", med(rows, "m0db"))]
    least_reply = "; ".join("%s %s/s" % (k, fmt_num(v)) for k, v in least_reply if v)
    t("e2e LLM 0 ms >= 3,000 replies/s", med(rows, "d0"), lambda v: v >= 3000,
      lambda v: "%s/s%s" % (fmt_num(v), " (%s)" % least_reply if least_reply else ""))
    ideal = WORKERS * 1000.0 / 200
    t("e2e LLM 200 ms, 64 workers >= 95%% of %d replies/s" % ideal, med(rows, "d200"),
      lambda v: v >= 0.95 * ideal, lambda v: "%s/s (%.0f%%)" % (fmt_num(v), 100 * v / ideal))
    floor = med(rows, "p_floor", "p99_ms")
    least_paced = med(rows, "m200p", "p99_ms")
    bounds = ([] if floor is None else ["floor of its 2 commits: p99 %s ms" % fmt_num(floor)]) + \
        ([] if least_paced is None else
         ["least reply path through PostgreSQL: p99 %s ms" % fmt_num(least_paced)])
    t("added latency p99 <= 10 ms at 100 msg/s", med(rows, "d200p", "p99_ms"),
      lambda v: v <= 10, lambda v: "%s ms%s" % (fmt_num(v), " (%s)" % "; ".join(bounds)
                                                 if bounds else ""))
    t("RSS <= 48 MB idle with 64 workers", med(rows, "e_idle"), lambda v: v <= 48,
      lambda v: "%.1f MB" % v)
    return out


def render(report):
    """The table as Markdown-compatible text (also what stdout shows)."""
    rows = report["rows"]
    lines = []
    hdr = ["scenario", "median", "min-max", "unit", "p50 ms", "p99 ms", "p99.9 ms",
           "latency of", "other load", "notes"]
    body = []
    for r in rows:
        v = r["value"]
        body.append([r["scenario"], fmt_num(v["median"]),
                     "%s-%s" % (fmt_num(v["min"]), fmt_num(v["max"])), r["unit"],
                     fmt_num(r["p50_ms"]["median"]), fmt_num(r["p99_ms"]["median"]),
                     fmt_num(r["p999_ms"]["median"]), r["latency"],
                     fmt_num(r["other_load_cores"], 2), r["note"]])
    widths = [max(len(x[i]) for x in body + [hdr]) for i in range(len(hdr))]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    lines.append(line(hdr))
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += [line(c) for c in body]
    lines.append("")
    lines.append("Latency of: client = loadgen's request latency; ack = loadgen's webhook "
                 "POST -> 200 after the durable commit; added = Parley's own time, "
                 "webhook stored -> reply POST reaches the Graph fake, minus the LLM call's "
                 "time (responses.llm_ms). Other load = cores busy with processes "
                 "that are not this benchmark's (a shared machine), median over the runs. "
                 "Medians of %d run(s); min-max of the runs." % report["config"]["runs"])
    lines.append("")
    ratios = report["ratios"]
    if ratios:
        lines.append("Ingest / ceiling (same run, same connections): " + ", ".join(
            "%s conns %.3fx" % (c, v) for c, v in ratios.items()))
        lines.append("")
    lines.append("Targets:")
    for t in report["targets"]:
        mark = "n/a " if t["met"] is None else ("MET " if t["met"] else "MISS")
        lines.append("  [%s] %-52s %s" % (mark, t["target"], t["shown"]))
    if report["checks"]:
        lines.append("")
        lines.append("Integrity / errors:")
        lines += ["  - " + c for c in report["checks"]]
    else:
        lines.append("")
        lines.append("Integrity: every run stored exactly the webhooks it answered 200 "
                     "(minus acknowledged duplicates), no errors, every message answered.")
    return "\n".join(lines)


def header_text(report):
    m = report["machine"]
    return "\n".join([
        "Machine: %d cores, %s, %.1f GB RAM, Linux %s; PostgreSQL %s on %s "
        "(8 kB write+fdatasync: %d/s back to back; one every 10 ms: p50 %.2f ms, p99 %.2f ms)"
        % (m["nproc"], m["cpu"], m["mem_gb"], m["kernel"], m["postgres"], m["pg_data_fs"],
           m["fdatasync_per_s"], m["fdatasync_paced_ms"]["p50"],
           m["fdatasync_paced_ms"]["p99"]),
        "Run: %s, commit %s%s, %s; took %.0f s" % (
            report["started"], report["git"]["commit"],
            " (dirty tree)" if report["git"]["dirty"] else "",
            "BENCH_QUICK" if QUICK else "full", report["elapsed_s"]),
        "Shared machine: load average at start %s, at end %s; other processes kept "
        "%.2f cores busy before the run, %.2f after" % (
            report["loadavg_start"], report["loadavg_end"], report["other_load_start"],
            report["other_load_end"]),
        "Machine phase (tests/vmprobe, idle, 10 s): at start %s; at end %s" % (
            phase_text(report.get("phase_start")), phase_text(report.get("phase_end"))),
        "PostgreSQL settings: " + ", ".join("%s=%s" % kv for kv in PG_SETTINGS),
        "Config: runs=%d, %gs per load run, connections %s, %d users for (b)/(c), "
        "%d workers for (d), fakeup --threads 2, loadgen 1 thread"
        % (RUNS, DUR, ",".join(map(str, CONNS)), USERS, WORKERS),
    ])


def write_doc(report, text):
    block = "\n".join([BEGIN_MARK, "", "```", header_text(report), "", text, "```", "",
                       END_MARK])
    try:
        with open(TARGETS_DOC) as f:
            doc = f.read()
    except FileNotFoundError:
        doc = "# Performance\n\n%s\n%s\n" % (BEGIN_MARK, END_MARK)
    if BEGIN_MARK in doc and END_MARK in doc:
        pre = doc.split(BEGIN_MARK)[0]
        post = doc.split(END_MARK, 1)[1]
        doc = pre + block + post
    else:
        doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    with open(TARGETS_DOC, "w") as f:
        f.write(doc)


def snapshot_binaries(tmp):
    """Copy the binaries aside: the build directory is shared, and a
    rebuild in the middle of a run must not change (or break) what is measured."""
    global PARLEY, FAKEUP, LOADGEN, VMPROBE
    copies = []
    for src in (PARLEY, FAKEUP, LOADGEN, VMPROBE):
        if not os.access(src, os.X_OK):
            sys.exit("bench: missing %s (make BUILD=release tests)" % src)
        dst = os.path.join(tmp, os.path.basename(src))
        for attempt in range(10):
            shutil.copy2(src, dst)
            probe = [dst, "version"] if src == PARLEY else [dst, "--help"]
            r = subprocess.run(probe, capture_output=True)
            if r.returncode in (0, 2) and (r.stdout or r.stderr):
                break
            time.sleep(1)  # being relinked right now: try again
        else:
            sys.exit("bench: %s does not run" % src)
        copies.append(dst)
    PARLEY, FAKEUP, LOADGEN, VMPROBE = copies


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t_start = time.monotonic()
    started = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    report = {"started": started, "loadavg_start": loadavg(), "git": git_info(),
              "config": {"quick": QUICK, "runs": RUNS, "duration_s": DUR,
                         "fake_duration_s": FAKE_DUR, "connections": CONNS, "users": USERS,
                         "workers": WORKERS, "e2e_max_messages": E2E_MAX,
                         "e2e_200_messages": E2E_200_MSGS, "paced_rate": PACED_RATE,
                         "paced_seconds": PACED_S, "parley_env": PARLEY_EXTRA_ENV,
                         "fake_restart": FAKE_RESTART, "pg_fresh": PG_FRESH,
                         "paced_first": PACED_FIRST,
                         "vmprobe": VMPROBE_ON},
              "pg_settings": dict(PG_SETTINGS)}
    b = Bench()
    suite = Suite(b)
    try:
        snapshot_binaries(b.tmp)
        report["parley_version"] = subprocess.run(
            [PARLEY, "version"], capture_output=True, text=True).stdout.strip()
        log("bench: load average %s; %s mode, %d run(s) per scenario" % (
            report["loadavg_start"], "QUICK" if QUICK else "full", RUNS))
        report["other_load_start"] = other_load_now()
        log("bench: other processes keep %.2f of %d cores busy" % (
            report["other_load_start"], os.cpu_count()))
        report["phase_start"] = machine_phase()
        log("bench: machine phase: %s" % phase_text(report["phase_start"]))
        b.pg.start()
        shown = b.pg.psql("postgres", "SELECT string_agg(name || '=' || setting || "
                                      "coalesce(unit, ''), ', ' ORDER BY name) FROM pg_settings"
                                      " WHERE name IN (%s)" % ",".join(
                                          "'%s'" % k for k, _ in PG_SETTINGS)).strip()
        log("bench: PostgreSQL %s on 127.0.0.1:%d, data %s" % (b.pg.version(), b.pg.port,
                                                                b.pg.data))
        log("bench: settings (pg_settings, units as shown): " + shown)
        report["pg_settings_effective"] = shown
        if PG_STATEMENTS:
            b.pg.psql("postgres", "CREATE EXTENSION pg_stat_statements")
            log("bench: BENCH_PG_STATEMENTS=1: pg_stat_statements loaded (diagnostics)")
        report["machine"] = machine_info(b.pg)
        log("bench: machine %s" % json.dumps(report["machine"]))
        b.start_fake()
        probe = None
        if VMPROBE_ON:
            probe_out = open(os.path.join(b.tmp, "vmprobe.txt"), "w")
            probe = spawn([VMPROBE, "--window-s", "5"], stdout=probe_out)
            log("== idle before the scenarios (vmprobe only), 15 s")
            time.sleep(15)
        if PACED_FIRST:
            suite.e2e(200, paced=True, first=True)
        for key, run in (("fakes", suite.fakes), ("a", suite.ceiling),
                         ("a'", suite.pg_ceiling), ("a''", suite.min_ingest),
                         ("a''n", lambda: suite.min_ingest(normalised=1)),
                         ("a''q", lambda: suite.min_ingest(normalised=2)),
                         ("a''d", lambda: suite.min_ingest(normalised=3)),
                         ("b", suite.ingest),
                         ("c", lambda: suite.ingest(dup=0.5)),
                         ("bs", lambda: suite.ingest(status=0.75)),
                         ("d0", lambda: suite.e2e(0)),
                         ("a'''", suite.min_reply),
                         ("a''''", lambda: suite.min_reply("db")),
                         ("d200", lambda: suite.e2e(200)),
                         ("dpaced", lambda: suite.e2e(200, paced=True)),
                         ("a''''p", suite.min_reply_paced),
                         ("e", suite.memory)):
            # a''''p is a diagnostic: only when asked for (the full run
            # would pass 15 minutes with it).
            if (ONLY is None and key != "a''''p") or (ONLY and key in ONLY):
                run()
        if probe:
            log("== idle after the scenarios (vmprobe only), 15 s")
            time.sleep(15)
            stop_proc(probe, 10)
            probe_out.close()
            with open(probe_out.name) as f:
                report["vmprobe"] = vmprobe_summary(f.read().splitlines())
            log("vmprobe (SCHED_FIFO; per scenario: median time of a fixed ALU "
                "unit (worst 5 s p99), of a fixed memory unit, worst lateness, "
                "wake-ups > 1 ms late):")
            for r in report["vmprobe"]:
                if r["run"]:
                    log("    %s" % r["run"][:100])
                log("  %-60s alu p50 %6.1f us (p99 max %6.1f)  mem p50 %6.1f us"
                    "  late p99 max %7.1f us, max %8.1f us, %d over 1 ms" % (
                        "" if r["run"] else r["scenario"][:60], r["work_p50_us"],
                        r["work_p99_us_max"], r["mem_p50_us"], r["late_p99_us_max"],
                        r["late_max_us"], r["late_over_1ms"]))
        report["phase_end"] = machine_phase()
    finally:
        b.cleanup()
    report["loadavg_end"] = loadavg()
    report["other_load_end"] = other_load_now()
    report["elapsed_s"] = time.monotonic() - t_start
    report["rows"] = suite.rows
    report["ratios"] = {}
    for c in CONNS:
        i, a = med(suite.rows, "b%d" % c), med(suite.rows, "a%d" % c)
        if i and a:
            report["ratios"][str(c)] = i / a
    report["targets"] = targets(suite.rows)
    report["checks"] = suite.checks
    report["runs"] = suite.raw
    text = render(report)
    log("")
    log(header_text(report))
    log("")
    log(text)
    os.makedirs(RESULTS, exist_ok=True)
    if QUICK or ONLY:
        out = os.path.join(RESULTS, "quick.json")
    else:
        stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
        out = os.path.join(RESULTS, "%s-%s.json" % (stamp, report["git"]["commit"]))
    slim = dict(report)
    slim["runs"] = slim_runs(suite.raw)
    for path in ([out] if QUICK or ONLY else [out, os.path.join(RESULTS, "latest.json")]):
        with open(path + ".tmp", "w") as f:
            json.dump(slim, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(path + ".tmp", path)
    log("\nbench: wrote %s%s" % (os.path.relpath(out, ROOT),
                                  "" if QUICK or ONLY else " and bench/results/latest.json"))
    if UPDATE_DOC:
        write_doc(report, text)
        log("bench: updated the table in docs/PERFORMANCE.md")
    log("bench: done in %.0f s" % report["elapsed_s"])


def slim_runs(raw):
    """Per-run numbers without loadgen's full JSON (keeps results small)."""
    out = {}
    for k, runs in raw.items():
        out[k] = []
        for r in runs:
            s = {x: (round(y, 4) if isinstance(y, float) else y)
                 for x, y in r.items() if x != "loadgen" and y not in ([], None)}
            d = r.get("loadgen")
            if d is None:  # pgbench runs
                out[k].append(s)
                continue
            s["loadgen"] = {x: d.get(x) for x in ("requests", "completed", "duplicates",
                                                   "responses", "errors", "error_kinds",
                                                   "duration_s", "rps", "latency_ms")}
            out[k].append(s)
    return out


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_NOFILE, (
        min(65536, resource.getrlimit(resource.RLIMIT_NOFILE)[1]),
        resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    try:
        main()
    except KeyboardInterrupt:
        print("bench: interrupted (everything it started is stopped)", file=sys.stderr)
        sys.exit(130)
    except (RuntimeError, subprocess.CalledProcessError) as e:
        sys.exit("bench: failed: %s" % e)
