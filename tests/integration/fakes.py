"""Python client for tests/fakes/fakeup, the fake upstream server.

One ``Fake`` runs one ``fakeup`` process on a free loopback port; it plays the
OpenAI-compatible LLM, the Meta Graph API (WhatsApp/Messenger/Instagram send),
the Telegram Bot API and the Slack Web API at once. Point Parley at it with

    PARLEY_LLM_BASE_URL=fake.llm_base          (http://127.0.0.1:P/v1)
    PARLEY_GRAPH_API_BASE=fake.graph_base      (http://127.0.0.1:P/v21.0)
    PARLEY_TELEGRAM_API_BASE=fake.telegram_base
    PARLEY_SLACK_API_BASE=fake.slack_base

and inspect what Parley sent with ``requests()`` / ``wait_requests()``; inject
faults with ``control(llm_faults=[{"status": 429, "retry_after": "1"}])``.
The control API is documented in tests/fakes/README.md. Stdlib only.

The binary is $PARLEY_BUILD_DIR/tests/fakeup (default build/asan, relative to
the repository root). The fake exits by itself when the Python process dies
(--stdin-watch), so a crashed test run leaves no server behind.
"""

import hashlib
import hmac
import json
import os
import select
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build_dir():
    """Absolute build directory: $PARLEY_BUILD_DIR or build/asan."""
    d = os.environ.get("PARLEY_BUILD_DIR", "build/asan")
    return d if os.path.isabs(d) else os.path.join(REPO, d)


def meta_signature(secret, body):
    """X-Hub-Signature-256 value for body (bytes or str) under secret."""
    if isinstance(body, str):
        body = body.encode()
    if isinstance(secret, str):
        secret = secret.encode()
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class FakeError(RuntimeError):
    """The fake refused a control call or did not start / stop cleanly."""


# Requests to 127.0.0.1 must never go through an http_proxy from the env.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Fake:
    """One fakeup process. Use as a context manager or call stop()."""

    def __init__(self, args=(), binary=None, start=True, start_timeout=15.0):
        self.binary = binary or os.path.join(build_dir(), "tests", "fakeup")
        self.args = list(args)
        self.start_timeout = start_timeout
        self.proc = None
        self.port = None
        self.log_path = None
        self._log = None
        if start:
            self.start()

    # -- lifecycle ---------------------------------------------------------

    def start(self):
        if self.proc is not None:
            raise FakeError("fake already started")
        if not os.access(self.binary, os.X_OK):
            raise FakeError("fakeup binary not found: %s (build it with "
                            "`make BUILD=asan tests`)" % self.binary)
        self._log = tempfile.NamedTemporaryFile(
            prefix="fakeup-", suffix=".log", delete=False)
        self.log_path = self._log.name
        self.proc = subprocess.Popen(
            [self.binary, "--port", "0", "--stdin-watch"] + self.args,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log)
        self.port = self._read_port()
        return self

    def _read_port(self):
        deadline = time.monotonic() + self.start_timeout
        buf = b""
        fd = self.proc.stdout.fileno()
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                buf += chunk
                for line in buf.split(b"\n")[:-1]:
                    if line.startswith(b"port="):
                        return int(line[5:])
            elif self.proc.poll() is not None:
                break
        self._kill()
        raise FakeError("fakeup did not report its port; log:\n" + self.log())

    def stop(self, check=True):
        """Stop the fake (SIGTERM); with check, raise if it exited uncleanly
        (non-zero status, e.g. a sanitizer report). Returns the exit status."""
        if self.proc is None:
            return 0
        proc, self.proc = self.proc, None
        try:
            proc.stdin.close()
        except OSError:
            pass
        if proc.poll() is None:
            proc.terminate()
        try:
            rc = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        proc.stdout.close()
        self._log.close()
        if check and rc != 0:
            raise FakeError("fakeup exited with status %d; log:\n%s"
                            % (rc, self.log()))
        return rc

    def _kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def log(self):
        """The fake's stderr so far (logs, sanitizer reports)."""
        if not self.log_path:
            return ""
        with open(self.log_path, "r", errors="replace") as f:
            return f.read()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop(check=exc[0] is None)
        return False

    # -- base URLs ---------------------------------------------------------

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    @property
    def llm_base(self):
        return self.url + "/v1"

    @property
    def graph_base(self):
        return self.url + "/v21.0"

    @property
    def telegram_base(self):
        return self.url

    @property
    def slack_base(self):
        return self.url + "/api"

    def webhook_url(self, platform="whatsapp"):
        """The fake's own webhook sink (used to measure loadgen)."""
        return "%s/webhooks/%s" % (self.url, platform)

    # -- HTTP --------------------------------------------------------------

    def call(self, method, path, body=None, headers=None, query=None,
             timeout=10.0):
        """Raw request to the fake: returns (status, headers, parsed body)."""
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None
        hdrs = dict(headers or {})
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
        try:
            with _OPENER.open(req, timeout=timeout) as r:
                status, rh, raw = r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            status, rh, raw = e.code, dict(e.headers), e.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return status, rh, parsed

    def _ok(self, method, path, body=None, query=None):
        status, _, parsed = self.call(method, path, body=body, query=query)
        if status != 200:
            raise FakeError("%s %s -> %d: %s" % (method, path, status, parsed))
        return parsed

    # -- control API ---------------------------------------------------------

    def reset(self):
        """Forget recorded requests, pending faults, counters and settings
        (back to the command-line defaults). Sequence numbers keep growing."""
        return self._ok("POST", "/_reset")

    def control(self, **kw):
        """POST /_control, e.g. control(llm_latency_ms=200,
        llm_faults=[{"status": 500}]). Fault lists are appended to the
        queues (pass clear_faults=True to replace). Returns the new state."""
        return self._ok("POST", "/_control", body=kw)

    def state(self):
        return self._ok("GET", "/_control")

    def stats(self):
        return self._ok("GET", "/_stats")

    def requests(self, kind=None, since=None, limit=None):
        """Recorded requests, oldest first; kind is llm, graph, telegram,
        slack, webhook or other; since is a seq (only later ones)."""
        q = {}
        if kind:
            q["kind"] = kind
        if since is not None:
            q["since"] = str(since)
        if limit is not None:
            q["limit"] = str(limit)
        return self._ok("GET", "/_requests", query=q or None)

    def records(self, kind=None, since=None, limit=None):
        """Same as requests()."""
        return self.requests(kind=kind, since=since, limit=limit)

    def last(self, kind=None):
        reqs = self.requests(kind=kind)
        return reqs[-1] if reqs else None

    def wait_requests(self, kind, n, timeout=10.0, since=None, predicate=None):
        """Wait until at least n requests of kind (matching predicate, if
        given) are recorded; return them. Raises TimeoutError listing what
        was seen, so a failing test says what Parley did send."""
        deadline = time.monotonic() + timeout
        while True:
            reqs = self.requests(kind=kind, since=since)
            if predicate is not None:
                reqs = [r for r in reqs if predicate(r)]
            if len(reqs) >= n:
                return reqs
            if time.monotonic() >= deadline:
                seen = ["%s %s -> %s" % (r["method"], r["path"], r["status"])
                        for r in reqs]
                raise TimeoutError("waited %.1fs for %d %s request(s), saw %d: %s"
                                   % (timeout, n, kind or "any", len(reqs), seen))
            time.sleep(0.05)


def loadgen(url, binary=None, **kw):
    """Run tests/fakes/loadgen and return its JSON result. Keyword arguments
    map to flags: loadgen(url, secret="s", connections=8, requests=100,
    dup_ratio=0.5) -> --secret s --connections 8 --requests 100 --dup-ratio 0.5."""
    binary = binary or os.path.join(build_dir(), "tests", "loadgen")
    args = [binary, "--url", url]
    for k, v in kw.items():
        args += ["--" + k.replace("_", "-"), str(v)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=3700)
    if out.returncode != 0:
        raise FakeError("loadgen failed (%d): %s" % (out.returncode, out.stderr))
    return json.loads(out.stdout)
