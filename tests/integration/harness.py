"""Integration harness for Parley: a throwaway PostgreSQL cluster, the real
`parley` binary as a subprocess, and small stdlib HTTP helpers.

Every wait in here is bounded (there is no per-test timeout plugin), every
process started is stopped at teardown or at interpreter exit, and logs go to
LOG_DIR (see tests/README.md).
"""

import atexit
import glob
import hashlib
import hmac
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import psycopg2

REPO = Path(__file__).resolve().parents[2]

APP_SECRET = "test-secret"
VERIFY_TOKEN = "verify-me"
WA_TOKEN = "wa-test-token"
MESSENGER_TOKEN = "ms-test-token"
INSTAGRAM_TOKEN = "ig-test-token"
PSEUDONYM_KEY = "6b6579666f7270736575646f6e796d73" "0011223344556677" "8899aabbccddeeff"
# A local port nobody listens on: the default Graph API / LLM base when a
# test does not use the fake, so nothing ever reaches the internet.
DEAD_BASE = "http://127.0.0.1:9"

SANITIZER_MARKERS = (
    "ERROR: AddressSanitizer",
    "runtime error:",
    "ThreadSanitizer",
    "LeakSanitizer",
)

DEFAULT_SANITIZER_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    "TSAN_OPTIONS": "halt_on_error=1 second_deadlock_stack=1",
}


def _resolve(p):
    p = Path(p)
    return p if p.is_absolute() else REPO / p


def parley_bin():
    return str(_resolve(os.environ.get("PARLEY_BIN", "build/asan/parley")))


def build_dir():
    bd = os.environ.get("PARLEY_BUILD_DIR")
    if bd:
        return _resolve(bd)
    parent = Path(parley_bin()).parent
    if (REPO / "build") in parent.parents:
        return parent
    return REPO / "build" / "asan"


def log_dir():
    d = os.environ.get("PARLEY_TEST_LOG_DIR")
    d = _resolve(d) if d else build_dir() / "test-logs" / "integration"
    d.mkdir(parents=True, exist_ok=True)
    return d


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout, interval=0.05, what="condition"):
    """Poll pred() until it returns a truthy value; return it. Raises
    AssertionError after timeout seconds. Exceptions from pred count as
    'not yet'; the last one is reported."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - reported below
            last_exc = e
        if time.monotonic() >= deadline:
            extra = f" (last error: {last_exc!r})" if last_exc else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")
        time.sleep(interval)


def tail(path, nlines=60):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    lines = data.decode("utf-8", "replace").splitlines()
    return "\n".join(lines[-nlines:])


def sanitizer_report(text):
    """The first line of text mentioning a sanitizer report, or None."""
    for line in text.splitlines():
        for m in SANITIZER_MARKERS:
            if m in line:
                return line
    return None


# --------------------------------------------------------------------------
# HTTP (urllib, no proxies)

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Response:
    """(status, headers, body) with helpers; unpacks as a 3-tuple."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def __iter__(self):
        return iter((self.status, self.headers, self.body))

    def header(self, name, default=None):
        if self.headers is None:
            return default
        v = self.headers.get(name)
        return default if v is None else v

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        b = self.body[:300]
        return f"Response({self.status}, {b!r})"


def request(method, url, body=None, headers=None, timeout=10):
    """One HTTP request with urllib; HTTP errors are returned, not raised."""
    hdrs = dict(headers or {})
    if body is not None and not any(k.lower() == "content-type" for k in hdrs):
        hdrs["Content-Type"] = "application/octet-stream"
    req = urllib.request.Request(url, data=body, method=method, headers=hdrs)
    try:
        with _OPENER.open(req, timeout=timeout) as r:
            return Response(r.status, r.headers, r.read())
    except urllib.error.HTTPError as e:
        try:
            data = e.read()
        except Exception:  # noqa: BLE001 - body may be cut short
            data = b""
        return Response(e.code, e.headers, data)


def get(url, headers=None, timeout=10):
    return request("GET", url, headers=headers, timeout=timeout)


def sign(body, secret=APP_SECRET):
    """Meta's X-Hub-Signature-256 value for body."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


_DEFAULT = object()


def post_webhook(base_url, platform, body, signature=_DEFAULT, headers=None,
                 secret=APP_SECRET, timeout=15):
    """POST body (bytes, str or a JSON-able object) to /webhooks/<platform>.
    signature: default = correct HMAC with secret; None = header omitted;
    any string = sent as is."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode("utf-8")
    elif isinstance(body, str):
        body = body.encode("utf-8")
    hdrs = {"Content-Type": "application/json"}
    if signature is _DEFAULT:
        hdrs["X-Hub-Signature-256"] = sign(body, secret)
    elif signature is not None:
        hdrs["X-Hub-Signature-256"] = signature
    hdrs.update(headers or {})
    return request("POST", f"{base_url}/webhooks/{platform}", body=body,
                   headers=hdrs, timeout=timeout)


# --------------------------------------------------------------------------
# Webhook payload builders (documented Meta formats, platforms.md §2-4)

WA_PHONE_ID = "106540352242922"
WA_WABA_ID = "102290129340398"
PAGE_ID = "1122334455667788"
IG_ID = "17841400000000001"


def fake_env(fake, model, system_prompt, **overrides):
    """Environment for `parley serve` wired to the fake LLM and Graph API,
    with test-friendly timings (short leases, few LLM attempts)."""
    e = {
        "PARLEY_LLM_BASE_URL": fake.llm_base,
        "PARLEY_LLM_MODEL": model,
        "PARLEY_LLM_API_KEY": "fake-llm-key",
        "PARLEY_GRAPH_API_BASE": fake.graph_base,
        "PARLEY_SYSTEM_PROMPT": system_prompt,
        "PARLEY_LLM_TIMEOUT_MS": "10000",
        "PARLEY_LLM_MAX_ATTEMPTS": "3",
        "PARLEY_LEASE_MS": "3000",
        "PARLEY_FEEDBACK": "off",
    }
    e.update(overrides)
    return e


def role_without_the_flush_function(db, port):
    """A login role of its own for db that may create its schema but may
    not call pg_logical_emit_message() (revoked from PUBLIC in db, as an
    administrator could): Parley's ingest then commits synchronously.
    Returns the role's database URL."""
    role = f"plain_{db.name}"
    db.execute(f'CREATE ROLE "{role}" LOGIN')
    db.execute(f'GRANT CREATE ON DATABASE "{db.name}" TO "{role}"')
    db.execute(f'GRANT CREATE ON SCHEMA public TO "{role}"')
    db.execute("REVOKE EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text)"
               " FROM PUBLIC")
    assert not db.scalar("SELECT has_function_privilege(%s, "
                         "'pg_logical_emit_message(boolean, text, text)', 'EXECUTE')",
                         (role,))
    return f"postgresql://{role}@127.0.0.1:{port}/{db.name}"


def wa_message(mid, frm, text, ts=None, context_id=None):
    m = {"from": frm, "id": mid, "timestamp": str(int(ts or time.time())),
         "type": "text", "text": {"body": text}}
    if context_id:
        m["context"] = {"from": "15550001111", "id": context_id}
    return m


def wa_envelope(messages=(), statuses=(), phone_id=WA_PHONE_ID, contacts=None):
    value = {"messaging_product": "whatsapp",
             "metadata": {"display_phone_number": "15550001111",
                          "phone_number_id": phone_id}}
    if messages:
        if contacts is None:
            seen = []
            for m in messages:
                if m["from"] not in seen:
                    seen.append(m["from"])
            contacts = [{"profile": {"name": "Test " + u[-4:]}, "wa_id": u} for u in seen]
        value["contacts"] = contacts
        value["messages"] = list(messages)
    if statuses:
        value["statuses"] = list(statuses)
    return {"object": "whatsapp_business_account",
            "entry": [{"id": WA_WABA_ID,
                       "changes": [{"field": "messages", "value": value}]}]}


def wa_text(mid, frm, text, ts=None, context_id=None):
    """A whole WhatsApp webhook body with one text message."""
    return wa_envelope([wa_message(mid, frm, text, ts, context_id)])


def wa_status(wamid, status, recipient, ts=None):
    return {"id": wamid, "status": status, "timestamp": str(int(ts or time.time())),
            "recipient_id": recipient}


def _meta_messaging(obj, owner, items):
    return {"object": obj,
            "entry": [{"id": owner, "time": int(time.time() * 1000),
                       "messaging": list(items)}]}


def ms_message(mid, psid, text, ts_ms=None, owner=PAGE_ID):
    return {"sender": {"id": psid}, "recipient": {"id": owner},
            "timestamp": int(ts_ms or time.time() * 1000),
            "message": {"mid": mid, "text": text}}


def ms_text(mid, psid, text, ts_ms=None):
    """A whole Messenger webhook body with one text message."""
    return _meta_messaging("page", PAGE_ID, [ms_message(mid, psid, text, ts_ms)])


def ig_text(mid, igsid, text, ts_ms=None):
    """A whole Instagram webhook body with one text message."""
    return _meta_messaging("instagram", IG_ID,
                           [ms_message(mid, igsid, text, ts_ms, owner=IG_ID)])


# --------------------------------------------------------------------------
# PostgreSQL

def _pg_bindir():
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                  key=lambda d: int(re.sub(r"\D", "", d.split("/")[-2]) or 0))
    if not dirs:
        raise RuntimeError("PostgreSQL server binaries not found under /usr/lib/postgresql")
    return dirs[-1]


_cleanups = []
_cleanup_lock = threading.Lock()


def _run_cleanups():
    with _cleanup_lock:
        fns = list(reversed(_cleanups))
        _cleanups.clear()
    for fn in fns:
        try:
            fn()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


atexit.register(_run_cleanups)


def register_cleanup(fn):
    with _cleanup_lock:
        _cleanups.append(fn)


def unregister_cleanup(fn):
    with _cleanup_lock:
        try:
            _cleanups.remove(fn)
        except ValueError:
            pass


class Database:
    """One database of the cluster, with a psycopg2 helper. It keeps one
    autocommit connection and reconnects (once per call) when the server
    dropped it, so it survives PostgreSQL restarts. Thread-safe."""

    def __init__(self, cluster, name):
        self.cluster = cluster
        self.name = name
        self._conn = None
        self._lock = threading.Lock()

    @property
    def url(self):
        return self.cluster.url(self.name)

    def connect(self, timeout=5):
        """A new autocommit connection (the caller closes it)."""
        conn = psycopg2.connect(host="127.0.0.1", port=self.cluster.port,
                                user="postgres", dbname=self.name,
                                connect_timeout=timeout, sslmode="disable",
                                gssencmode="disable",
                                options="-c statement_timeout=20000")
        conn.autocommit = True
        return conn

    def close(self):
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except Exception:  # noqa: BLE001
                    pass
                self._conn = None

    def query(self, sql, params=None):
        """All rows of a statement (empty list when it returns none)."""
        with self._lock:
            for attempt in (1, 2):
                if self._conn is None or self._conn.closed:
                    self._conn = self.connect()
                try:
                    with self._conn.cursor() as cur:
                        cur.execute(sql, params)
                        return cur.fetchall() if cur.description else []
                except (psycopg2.OperationalError, psycopg2.InterfaceError):
                    try:
                        self._conn.close()
                    except Exception:  # noqa: BLE001
                        pass
                    self._conn = None
                    if attempt == 2:
                        raise
        return []

    def scalar(self, sql, params=None):
        rows = self.query(sql, params)
        return rows[0][0] if rows else None

    def execute(self, sql, params=None):
        self.query(sql, params)

    def table_exists(self, name):
        return self.scalar("SELECT to_regclass(%s) IS NOT NULL", (name,))


class PgCluster:
    """A throwaway PostgreSQL cluster in a temporary directory, run as the
    unprivileged user `postgres` when we are root."""

    def __init__(self):
        self.bindir = _pg_bindir()
        self.as_root = os.geteuid() == 0
        self.root = tempfile.mkdtemp(prefix="parley-pg-")
        self.datadir = os.path.join(self.root, "data")
        self.logfile = os.path.join(self.root, "server.log")
        self.port = free_port()
        self.running = False
        self._dbseq = itertools.count(1)
        self._admin = None
        self._cleanup = self.destroy
        register_cleanup(self._cleanup)
        if self.as_root:
            shutil.chown(self.root, user="postgres", group="postgres")
        os.chmod(self.root, 0o755)

    def _cmd(self, args, timeout=60, check=True):
        if self.as_root:
            args = ["runuser", "-u", "postgres", "--"] + args
        r = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n"
                               f"{r.stderr}\n--- server log ---\n{tail(self.logfile)}")
        return r

    def init(self):
        self._cmd([f"{self.bindir}/initdb", "-D", self.datadir, "-U", "postgres",
                   "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "-N"], timeout=120)
        return self

    def start(self, timeout=30):
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c full_page_writes=off -c max_connections=400 "
                "-c shared_buffers=64MB")
        self._cmd([f"{self.bindir}/pg_ctl", "-D", self.datadir, "-l", self.logfile,
                   "-w", "-t", str(timeout), "-o", opts, "start"], timeout=timeout + 15)
        self.running = True
        return self

    def stop(self, mode="fast", timeout=30):
        self._cmd([f"{self.bindir}/pg_ctl", "-D", self.datadir, "-m", mode, "-w",
                   "-t", str(timeout), "stop"], timeout=timeout + 15)
        self.running = False

    def is_running(self):
        r = self._cmd([f"{self.bindir}/pg_ctl", "-D", self.datadir, "status"],
                      check=False, timeout=15)
        return r.returncode == 0

    def destroy(self):
        unregister_cleanup(self._cleanup)
        if os.environ.get("PARLEY_TEST_KEEP"):
            return
        try:
            if os.path.exists(os.path.join(self.datadir, "postmaster.pid")):
                self._cmd([f"{self.bindir}/pg_ctl", "-D", self.datadir, "-m",
                           "immediate", "-w", "-t", "20", "stop"], check=False, timeout=40)
        finally:
            self.running = False
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, dbname="postgres"):
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def admin(self):
        if self._admin is None:
            self._admin = Database(self, "postgres")
        return self._admin

    def create_db(self, prefix="t"):
        name = f"{prefix}_{next(self._dbseq)}"
        self.admin().execute(f'CREATE DATABASE "{name}"')
        return Database(self, name)

    def drop_db(self, db):
        db.close()
        if self.running:
            self.admin().execute(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)')


# --------------------------------------------------------------------------
# The parley binary

def child_env(overrides=None):
    """The environment for a parley child: ours minus PARLEY_* and proxy
    variables, plus sanitizer defaults and the overrides (None deletes)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PARLEY_")
           and k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    for k, v in DEFAULT_SANITIZER_ENV.items():
        env.setdefault(k, v)
    env["NO_PROXY"] = "*"
    for k, v in (overrides or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return env


def run_cli(args, env=None, timeout=120, input_bytes=None):
    """Run `parley ARGS` to completion: CompletedProcess with text output."""
    return subprocess.run([parley_bin()] + list(args), env=child_env(env),
                          input=input_bytes, capture_output=True, timeout=timeout)


class CliResult:
    def __init__(self, cp):
        self.rc = cp.returncode
        self.stdout = cp.stdout.decode("utf-8", "replace")
        self.stderr = cp.stderr.decode("utf-8", "replace")

    def __repr__(self):
        return f"rc={self.rc}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


def cli(args, env=None, timeout=120):
    return CliResult(run_cli(args, env=env, timeout=timeout))


class ParleyProcess:
    """One `parley serve` child. Its stdout+stderr go to self.log_path."""

    def __init__(self, factory, name, env, args, port):
        self.factory = factory
        self.name = name
        self.env = env
        self.args = list(args)
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = factory.logdir / f"{name}.log"
        self.proc = None
        self.returncodes = []   # of every finished run
        self.expect_clean_exit = True
        self._logf = None
        self.starts = 0
        self.exit_checked = False

    # lifecycle ------------------------------------------------------------
    def start(self, wait=True, timeout=20):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        self.exit_checked = False
        # The first start truncates a log left by an earlier run; restarts
        # append, so one file tells the whole story of this process.
        if self.starts == 1:
            open(self.log_path, "wb").close()
        # O_APPEND: the child's output and the harness's notes interleave.
        self._logf = open(self.log_path, "ab")
        self._logf.write(f"=== harness: start #{self.starts}: {' '.join(self.args)}\n".encode())
        self._logf.flush()
        self.proc = subprocess.Popen([parley_bin()] + self.args, env=child_env(self.env),
                                     stdin=subprocess.DEVNULL, stdout=self._logf,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        register_cleanup(self._kill_at_exit)
        if wait:
            self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout=20):
        def healthy():
            if self.proc.poll() is not None:
                raise ProcessExited(self)
            return get(self.url("/healthz"), timeout=2).status == 200
        deadline = time.monotonic() + timeout
        while True:
            try:
                if healthy():
                    return
            except ProcessExited:
                raise AssertionError(f"parley {self.name} exited with {self.proc.returncode} "
                                     f"before /healthz answered:\n{self.log_tail()}") from None
            except OSError:
                pass
            if time.monotonic() >= deadline:
                raise AssertionError(f"parley {self.name}: /healthz not 200 within {timeout}s:\n"
                                     f"{self.log_tail()}")
            time.sleep(0.05)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def _note(self, text):
        try:
            with open(self.log_path, "ab") as f:
                f.write(f"=== harness: {text}\n".encode())
        except OSError:
            pass

    def signal(self, sig):
        self._note(f"signal {int(sig)} to pid {self.proc.pid}")
        self.proc.send_signal(sig)

    def wait(self, timeout=30):
        """Wait for exit; returns the exit code (negative: signal), which
        the caller is then responsible for checking."""
        self.exit_checked = True
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self._closed()
            raise AssertionError(f"parley {self.name} did not exit within {timeout}s "
                                 f"(killed):\n{self.log_tail()}") from None
        self._closed()
        return rc

    def stop(self, timeout=30, check=True):
        """SIGTERM and wait; with check, assert exit code 0."""
        if not self.alive():
            return self.proc.returncode if self.proc else None
        self.signal(signal.SIGTERM)
        rc = self.wait(timeout)
        if check:
            assert rc == 0, f"parley {self.name} exited with {rc} after SIGTERM:\n{self.log_tail()}"
        return rc

    def kill(self):
        """kill -9 (an expected crash: the exit code is not checked)."""
        self.exit_checked = True
        if self.alive():
            self.signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._closed(expected=True)

    def restart(self, wait=True, timeout=20):
        if self.alive():
            self.stop()
        return self.start(wait=wait, timeout=timeout)

    def _closed(self, expected=False):
        if self.proc is not None and self.proc.returncode is not None:
            if not self.returncodes or self.returncodes[-1][0] is not self.proc:
                self.returncodes.append((self.proc, self.proc.returncode, expected))
        if self._logf:
            self._logf.close()
            self._logf = None
        unregister_cleanup(self._kill_at_exit)

    def _kill_at_exit(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    # logs ---------------------------------------------------------------------
    def log_text(self):
        try:
            return self.log_path.read_text("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, n=60):
        return f"--- {self.log_path} (last {n} lines) ---\n{tail(self.log_path, n)}"

    # HTTP ---------------------------------------------------------------------
    def url(self, path):
        return self.base_url + path

    def get(self, path, headers=None, timeout=10):
        return get(self.url(path), headers=headers, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=10):
        return request(method, self.url(path), body=body, headers=headers, timeout=timeout)

    def post_webhook(self, platform, body, **kw):
        return post_webhook(self.base_url, platform, body, **kw)


class ProcessExited(Exception):
    def __init__(self, p):
        super().__init__(f"{p.name} exited")


class ParleyFactory:
    """Creates ParleyProcess objects for one test and checks them at the end:
    still-running ones are stopped with SIGTERM (exit code must be 0), and
    no log may contain a sanitizer report."""

    def __init__(self, cluster, db, logdir, testname):
        self.cluster = cluster
        self.db = db
        self.logdir = logdir
        self.testname = re.sub(r"[^A-Za-z0-9_.-]+", "_", testname)[:120]
        self.procs = []
        self.problems = []
        self._scanned = set()
        self._migrated = False
        self._seq = itertools.count(1)

    def env(self, db=None, port=None, overrides=None):
        db = db or self.db
        env = {
            "PARLEY_DATABASE_URL": db.url,
            "PARLEY_LISTEN": f"127.0.0.1:{port}" if port else None,
            "PARLEY_META_APP_SECRET": APP_SECRET,
            "PARLEY_META_VERIFY_TOKEN": VERIFY_TOKEN,
            "PARLEY_WHATSAPP_TOKEN": WA_TOKEN,
            "PARLEY_MESSENGER_PAGE_TOKEN": MESSENGER_TOKEN,
            "PARLEY_INSTAGRAM_TOKEN": INSTAGRAM_TOKEN,
            "PARLEY_GRAPH_API_BASE": DEAD_BASE,
            "PARLEY_TELEGRAM_API_BASE": DEAD_BASE,
            "PARLEY_SLACK_API_BASE": DEAD_BASE,
            "PARLEY_WORKERS": "4",
            "PARLEY_PSEUDONYM_KEY": PSEUDONYM_KEY,
            "PARLEY_LOG_LEVEL": "info",
        }
        env.update(overrides or {})
        return env

    def __call__(self, env=None, args=("serve",), db=None, migrate=True, wait=True,
                 port=None, timeout=20):
        """Start `parley ARGS` (default: serve) on a fresh port against db
        (default: the test's database). env: overrides (None deletes a
        variable). Runs `parley migrate` first unless migrate=False."""
        db = db or self.db
        port = port or free_port()
        full_env = self.env(db=db, port=port, overrides=env)
        if migrate:
            self.migrate(full_env)
        name = f"{self.testname}-{next(self._seq)}"
        p = ParleyProcess(self, name, full_env, args, port)
        self.procs.append(p)
        p.start(wait=wait, timeout=timeout)
        return p

    def migrate(self, env):
        r = cli(["migrate"], env=env, timeout=120)
        path = self.logdir / f"{self.testname}-migrate.log"
        mode = "a" if self._migrated else "w"
        self._migrated = True
        with open(path, mode, encoding="utf-8") as f:
            f.write(f"=== parley migrate rc={r.rc}\n{r.stdout}{r.stderr}")
        assert r.rc == 0, f"parley migrate failed: {r!r}"
        rep = sanitizer_report(r.stderr)
        assert rep is None, f"sanitizer report from parley migrate: {rep}\n{r.stderr}"

    def finish(self):
        """Stop everything still running (SIGTERM, exit code must be 0) and
        scan every log for sanitizer reports. Idempotent; returns the list
        of problems found so far (empty when clean)."""
        for p in self.procs:
            if p.alive():
                try:
                    rc = p.stop(check=False)
                except AssertionError as e:
                    self.problems.append(str(e))
                    continue
                if rc != 0:
                    self.problems.append(f"parley {p.name} exited with {rc} on SIGTERM at "
                                         f"teardown:\n{p.log_tail()}")
            elif p.proc is not None and not p.exit_checked:
                # Died on its own during the test, and nobody looked.
                rc = p.proc.wait(timeout=10)
                p.exit_checked = True
                p._closed()
                if rc != 0:
                    self.problems.append(f"parley {p.name} exited unexpectedly with {rc} "
                                         f"during the test:\n{p.log_tail()}")
            if p.name in self._scanned:
                continue
            self._scanned.add(p.name)
            rep = sanitizer_report(p.log_text())
            if rep is not None:
                self.problems.append(f"sanitizer report in {p.log_path}: {rep}\n"
                                     f"{p.log_tail(120)}")
        return self.problems
