"""Foundation (issue 2): the CLI, configuration errors, secrets masking,
migrations (fresh, re-run, status, concurrent, tampered), /healthz, /readyz
through a PostgreSQL outage, /metrics, JSON 404/405, 413 and graceful
shutdown under in-flight requests."""

import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time

import pytest

import harness
import promparse
from harness import REPO, cli, wait_until

DEAD_DB = "postgresql://postgres@127.0.0.1:9/nothing?connect_timeout=2"
MIGRATIONS = sorted(p.stem for p in (REPO / "migrations").glob("[0-9]*.sql"))


def nonblank_lines(s):
    return [line for line in s.splitlines() if line.strip()]


def assert_no_sanitizer(r):
    rep = harness.sanitizer_report(r.stdout + r.stderr)
    assert rep is None, f"sanitizer report: {rep}\n{r!r}"


# --------------------------------------------------------------------------
# CLI

def test_version_prints_and_exits_0():
    r = cli(["version"], env={"PARLEY_DATABASE_URL": DEAD_DB})
    assert r.rc == 0, r
    assert r.stdout.strip(), f"`parley version` printed nothing on stdout: {r!r}"
    assert re.search(r"\d", r.stdout), f"no version number in {r.stdout!r}"
    assert_no_sanitizer(r)


def test_help_prints_usage_and_exits_0():
    r = cli(["--help"], env={"PARLEY_DATABASE_URL": DEAD_DB})
    assert r.rc == 0, r
    for word in ("serve", "migrate", "version"):
        assert word in r.stdout, f"--help does not mention {word!r}: {r!r}"
    assert_no_sanitizer(r)


@pytest.mark.parametrize("args", [
    ["frobnicate"],
    ["--frobnicate"],
    ["serve", "--frobnicate"],
    ["migrate", "--bogus"],
    ["migrate", "sideways"],
], ids=lambda a: "_".join(a))
def test_unknown_subcommand_or_flag_exits_2_with_one_line(args):
    try:
        r = cli(args, env={"PARLEY_DATABASE_URL": DEAD_DB}, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`parley {' '.join(args)}` did not exit within 20 s")
    assert r.rc == 2, r
    lines = nonblank_lines(r.stderr)
    assert len(lines) == 1, f"expected a one-line error on stderr: {r!r}"
    assert_no_sanitizer(r)


# --------------------------------------------------------------------------
# Configuration

BAD_CONFIG = [
    ("PARLEY_WORKERS", "abc"),
    ("PARLEY_WORKERS", "12abc"),
    ("PARLEY_LISTEN", "nonsense"),
    ("PARLEY_LISTEN", "127.0.0.1:99999"),
    ("PARLEY_LLM_TIMEOUT_MS", "-5"),
    ("PARLEY_BODY_MAX_BYTES", "-1"),
    ("PARLEY_LOG_LEVEL", "loud"),
    ("PARLEY_HTTP_THREADS", "many"),
    ("PARLEY_DB_POOL_SIZE", "-3"),
]


@pytest.mark.parametrize("key,value", BAD_CONFIG, ids=[f"{k}={v}" for k, v in BAD_CONFIG])
def test_bad_configuration_fails_with_one_line_naming_the_key(db, key, value):
    env = {"PARLEY_DATABASE_URL": db.url,
           "PARLEY_LISTEN": f"127.0.0.1:{harness.free_port()}",
           key: value}
    try:
        r = cli(["serve"], env=env, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"parley serve with {key}={value} did not fail (still running after 20 s)")
    assert r.rc != 0, r
    lines = nonblank_lines(r.stderr)
    assert len(lines) == 1, f"expected exactly one line on stderr: {r!r}"
    assert key in lines[0], f"error line does not name {key}: {lines[0]!r}"
    assert_no_sanitizer(r)


def test_config_file_is_read_and_environment_wins(parley, tmp_path):
    port_file = harness.free_port()
    port_env = harness.free_port()
    cfg = tmp_path / "parley.conf"
    cfg.write_text(f"PARLEY_LISTEN=127.0.0.1:{port_file}\nPARLEY_WORKERS=abc\n")
    # The file's bad value is reported, naming the key.
    r = cli(["serve"], env={"PARLEY_CONFIG_FILE": str(cfg),
                            "PARLEY_DATABASE_URL": parley.db.url}, timeout=20)
    assert r.rc != 0, r
    assert "PARLEY_WORKERS" in r.stderr, r
    # The environment overrides the file.
    p = parley(env={"PARLEY_CONFIG_FILE": str(cfg), "PARLEY_WORKERS": "2"},
               port=port_env)
    assert p.get("/healthz").status == 200
    with pytest.raises(OSError):
        harness.get(f"http://127.0.0.1:{port_file}/healthz", timeout=2)


def test_secrets_never_appear_in_logs_or_metrics(parley):
    tag = secrets.token_hex(6)
    secret_env = {
        "PARLEY_META_APP_SECRET": f"appsecret-{tag}",
        "PARLEY_META_VERIFY_TOKEN": f"verifytok-{tag}",
        "PARLEY_WHATSAPP_TOKEN": f"watoken-{tag}",
        "PARLEY_MESSENGER_PAGE_TOKEN": f"mstoken-{tag}",
        "PARLEY_INSTAGRAM_TOKEN": f"igtoken-{tag}",
        "PARLEY_LLM_API_KEY": f"llmkey-{tag}",
        "PARLEY_OPERATOR_TOKEN": f"optoken-{tag}",
        "PARLEY_PSEUDONYM_KEY": secrets.token_hex(32),
        "PARLEY_TELEGRAM_BOT_TOKEN": f"123456:tgtoken-{tag}",
        "PARLEY_TELEGRAM_SECRET_TOKEN": f"tgsecret-{tag}",
        "PARLEY_SLACK_SIGNING_SECRET": f"slacksign-{tag}",
        "PARLEY_SLACK_BOT_TOKEN": f"xoxb-slacktok-{tag}",
        "PARLEY_LOG_LEVEL": "debug",
    }
    p = parley(env=secret_env, args=("serve", "--no-workers"))
    assert p.get("/healthz").status == 200
    p.get("/readyz")
    metrics = p.get("/metrics").text
    p.get("/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1")
    body = json.dumps(harness.wa_text("wamid.SECRETTEST1", "15550000001", "hello"))
    p.post_webhook("whatsapp", body, secret=secret_env["PARLEY_META_APP_SECRET"])
    p.post_webhook("whatsapp", body, signature="sha256=" + "0" * 64)
    p.stop()
    migrate_logs = "".join(f.read_text("utf-8", "replace")
                           for f in harness.log_dir().glob(f"{parley.testname}-migrate.log"))
    log = p.log_text()
    assert log.strip(), "parley logged nothing at debug level"
    for key, val in secret_env.items():
        if key == "PARLEY_LOG_LEVEL":
            continue
        assert val not in log, f"{key}'s value appears in the log {p.log_path}"
        assert val not in metrics, f"{key}'s value appears in /metrics"
        assert val not in migrate_logs, f"{key}'s value appears in parley migrate's output"


def test_database_password_is_not_logged(parley, pg):
    pw = "dbpw-" + secrets.token_hex(6)
    url = f"postgresql://postgres:{pw}@127.0.0.1:{pg.port}/{parley.db.name}"
    p = parley(env={"PARLEY_DATABASE_URL": url, "PARLEY_LOG_LEVEL": "debug"},
               args=("serve", "--no-workers"))
    assert p.get("/readyz").status == 200
    p.stop()
    assert pw not in p.log_text(), f"the database password appears in {p.log_path}"


# --------------------------------------------------------------------------
# Migrations

def migrate(db, *extra):
    return cli(["migrate", *extra], env={"PARLEY_DATABASE_URL": db.url}, timeout=120)


def migration_rows(db):
    return db.query("SELECT version, name, checksum, applied_at FROM schema_migrations "
                    "ORDER BY version")


def versions():
    return [m.split("_", 1)[0] for m in MIGRATIONS]


def test_migrations_fresh_then_rerun_is_noop_and_status_lists_applied(db):
    assert MIGRATIONS, "no migrations/*.sql found"
    r = migrate(db, "status")
    assert r.rc == 0, r
    for m in MIGRATIONS:
        line = [ln for ln in r.stdout.splitlines() if m in ln]
        assert line and "pending" in line[0].lower(), \
            f"status before migrate should list {m} as pending:\n{r.stdout}"

    r = migrate(db)
    assert r.rc == 0, r
    assert_no_sanitizer(r)
    rows = migration_rows(db)
    assert [row[0] for row in rows] == versions(), rows
    for t in ("users", "conversations", "messages", "responses", "events"):
        assert db.table_exists(t), f"table {t} missing after migrate"

    r2 = migrate(db)
    assert r2.rc == 0, r2
    assert migration_rows(db) == rows, "re-running migrate changed schema_migrations"

    r3 = migrate(db, "status")
    assert r3.rc == 0, r3
    for m in MIGRATIONS:
        line = [ln for ln in r3.stdout.splitlines() if m in ln]
        assert line, f"migrate status does not list {m}:\n{r3.stdout}"
        assert re.search(r"\bapplied\b", line[0].lower()) and "pending" not in line[0].lower(), \
            f"migrate status does not show {m} as applied:\n{r3.stdout}"


def test_concurrent_migrate_runs_all_succeed_and_apply_each_once(db):
    env = harness.child_env({"PARLEY_DATABASE_URL": db.url})
    procs = [subprocess.Popen([harness.parley_bin(), "migrate"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(4)]
    results = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("concurrent parley migrate did not finish within 120 s")
        results.append((p.returncode, out.decode(errors="replace"), err.decode(errors="replace")))
    for rc, out, err in results:
        assert rc == 0, f"a concurrent migrate failed ({rc}):\n{out}\n{err}"
        assert harness.sanitizer_report(err) is None, err
    counts = db.query("SELECT version, count(*) FROM schema_migrations GROUP BY version "
                      "ORDER BY version")
    assert [c[0] for c in counts] == versions()
    assert all(c[1] == 1 for c in counts), counts


def test_tampered_migration_is_an_error_naming_it(db):
    assert migrate(db).rc == 0
    victim = versions()[0]
    db.execute("UPDATE schema_migrations SET checksum = %s WHERE version = %s",
               ("0" * 64, victim))
    r = migrate(db)
    assert r.rc != 0, f"migrate accepted a changed migration: {r!r}"
    name = MIGRATIONS[0]
    assert name in r.stderr or victim in r.stderr, \
        f"error does not name migration {name}: {r.stderr!r}"
    assert len(nonblank_lines(r.stderr)) >= 1
    assert_no_sanitizer(r)


def test_readyz_503_until_migrations_are_applied(parley):
    # A deployment may start `parley serve` before the migrate job has run:
    # alive, not ready; ready once migrations are current, without restart.
    p = parley(args=("serve", "--no-workers"), migrate=False)
    assert p.get("/healthz").status == 200
    wait_until(lambda: p.get("/readyz", timeout=3).status == 503, 5,
               what="/readyz 503 on a database without migrations")
    r = migrate(parley.db)
    assert r.rc == 0, r
    wait_until(lambda: p.get("/readyz", timeout=3).status == 200, 10,
               what="/readyz 200 after parley migrate")
    assert p.alive() and p.starts == 1


# --------------------------------------------------------------------------
# Health, readiness, outage

def test_healthz_and_readyz(parley):
    p = parley()
    r = p.get("/healthz")
    assert r.status == 200, r
    r = p.get("/readyz")
    assert r.status == 200, r


def test_readyz_follows_postgres_outage_without_restart(parley, pg_restore):
    pg = pg_restore
    p = parley()
    assert p.get("/readyz").status == 200
    pid = p.proc.pid

    t0 = time.monotonic()
    pg.stop()
    wait_until(lambda: p.get("/readyz", timeout=3).status == 503, 5, interval=0.1,
               what="/readyz 503 after PostgreSQL stopped")
    down_after = time.monotonic() - t0
    for _ in range(5):
        assert p.get("/healthz", timeout=3).status == 200, "/healthz must stay 200 in an outage"
        time.sleep(0.2)
    assert p.alive(), f"parley died while PostgreSQL was down:\n{p.log_tail()}"

    pg.start()
    wait_until(lambda: p.get("/readyz", timeout=3).status == 200, 10, interval=0.1,
               what="/readyz 200 after PostgreSQL came back")
    assert p.alive() and p.proc.pid == pid and p.starts == 1
    assert down_after < 5


# --------------------------------------------------------------------------
# Metrics, errors, limits

def test_metrics_strict_exposition_and_promtool(parley, tmp_path):
    p = parley(args=("serve", "--no-workers"))
    # Some traffic so that labelled series and histograms have samples.
    for _ in range(3):
        p.get("/healthz")
    p.get("/readyz")
    p.get("/no/such/path")
    p.request("POST", "/healthz", body=b"x")
    p.post_webhook("whatsapp", harness.wa_text("wamid.METRICS1", "15550000002", "hi"))
    p.post_webhook("whatsapp", b"{}", signature="sha256=" + "1" * 64)
    r = p.get("/metrics")
    assert r.status == 200, r
    ctype = r.header("Content-Type", "")
    assert ctype.startswith("text/plain"), f"Content-Type {ctype!r}"
    text = r.text
    (tmp_path / "metrics.txt").write_text(text)
    try:
        fams = promparse.parse(text)
    except promparse.ExpositionError as e:
        pytest.fail(f"/metrics is not a valid exposition: {e}\n\n{text[:4000]}")
    assert any(n.endswith("build_info") for n in fams), f"no *_build_info in {sorted(fams)}"
    hists = [f for f in fams.values() if f.type == "histogram" and f.samples]
    assert hists, "no histogram with samples (request duration?)"
    statuses = {s.labels.get("status") or s.labels.get("code")
                for f in fams.values() for s in f.samples}
    assert "404" in statuses and "200" in statuses, \
        "no HTTP request series labelled by status 200 and 404"

    promtool = shutil.which("promtool") or ("/usr/bin/promtool"
                                            if os.path.exists("/usr/bin/promtool") else None)
    if promtool:
        pr = subprocess.run([promtool, "check", "metrics"], input=r.body,
                            capture_output=True, timeout=60)
        assert pr.returncode == 0, ("promtool check metrics failed:\n"
                                    + pr.stdout.decode(errors="replace")
                                    + pr.stderr.decode(errors="replace"))


def assert_json_error(r, status):
    assert r.status == status, r
    ctype = r.header("Content-Type", "")
    assert "application/json" in ctype, f"{status} Content-Type {ctype!r}"
    try:
        doc = json.loads(r.body)
    except ValueError:
        pytest.fail(f"{status} body is not JSON: {r.body!r}")
    assert isinstance(doc, dict) and doc, f"{status} body should be a JSON object: {r.body!r}"


def test_404_and_405_have_json_bodies(parley):
    p = parley(args=("serve", "--no-workers"))
    assert_json_error(p.get("/no/such/path"), 404)
    assert_json_error(p.get("/webhooks/nosuchplatform"), 404)
    r = p.request("POST", "/healthz", body=b"{}")
    assert_json_error(r, 405)
    assert r.header("Allow"), "405 without an Allow header"
    assert_json_error(p.request("DELETE", "/metrics"), 405)
    assert_json_error(p.request("PUT", "/webhooks/whatsapp", body=b"{}"), 405)


def test_oversize_body_413(parley):
    p = parley(env={"PARLEY_BODY_MAX_BYTES": "1024"}, args=("serve", "--no-workers"))
    pad = "x" * 3000
    big = json.dumps(harness.wa_text("wamid.BIG1", "15550000003", pad)).encode()
    assert len(big) > 1024
    r = p.post_webhook("whatsapp", big)
    assert r.status == 413, r

    # The same with chunked transfer encoding (no Content-Length).
    conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
    try:
        chunks = [big[i:i + 500] for i in range(0, len(big), 500)]
        conn.request("POST", "/webhooks/whatsapp", body=iter(chunks), encode_chunked=True,
                     headers={"Content-Type": "application/json",
                              "X-Hub-Signature-256": harness.sign(big)})
        resp = conn.getresponse()
        assert resp.status == 413, f"chunked oversize body answered {resp.status}"
        resp.read()
    finally:
        conn.close()

    small = json.dumps(harness.wa_text("wamid.SMALL1", "15550000003", "ok")).encode()
    assert len(small) <= 1024
    assert p.post_webhook("whatsapp", small).status == 200
    assert p.get("/healthz").status == 200
    ids = {r[0] for r in parley.db.query("SELECT platform_message_id FROM messages")}
    assert ids == {"wamid.SMALL1"}, ids


def _refused(p, reason):
    body = p.get("/metrics").body.decode()
    m = re.search(r'^parley_http_refused_total\{reason="%s"\} (\S+)$' % reason, body, re.M)
    assert m, f"no parley_http_refused_total for {reason}"
    return float(m.group(1))


def test_limits_answer_their_own_status_and_are_counted(parley):
    p = parley(env={"PARLEY_BODY_MAX_BYTES": "1024"}, args=("serve", "--no-workers"))
    assert _refused(p, "body_too_large") == 0
    assert _refused(p, "header_too_large") == 0
    big = json.dumps(harness.wa_text("wamid.BIG2", "15550000003", "x" * 3000)).encode()
    assert p.post_webhook("whatsapp", big).status == 413
    assert _refused(p, "body_too_large") == 1
    # Headers well inside the per-connection memory (32 KiB) pass ...
    conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
    try:
        conn.request("GET", "/healthz", headers={"X-Big": "y" * 12000})
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    # ... headers past it: 431, counted.
    conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
    try:
        conn.request("GET", "/healthz", headers={"X-Big": "y" * 40000})
        assert conn.getresponse().status == 431
    except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
        pass  # the server may close while the client is still sending
    finally:
        conn.close()
    assert _refused(p, "header_too_large") == 1
    assert p.get("/healthz").status == 200


# --------------------------------------------------------------------------
# Graceful shutdown

def _partial_post(port, body, split):
    """Open a connection and send headers + body[:split]; return the socket."""
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    head = (f"POST /webhooks/whatsapp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nX-Hub-Signature-256: {harness.sign(body)}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    s.sendall(head + body[:split])
    return s


def _read_status(s):
    data = b""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
        if b"\r\n\r\n" in data:
            head = data.split(b"\r\n\r\n", 1)[0]
            m = re.search(rb"content-length:\s*(\d+)", head, re.I)
            if m and len(data) >= len(head) + 4 + int(m.group(1)):
                break
    m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return int(m.group(1)) if m else None, data


def test_graceful_shutdown_finishes_in_flight_requests(parley):
    p = parley(args=("serve", "--no-workers"))
    n = 8
    bodies = [json.dumps(harness.wa_text(f"wamid.GRACE{i}", f"1555000010{i}",
                                         f"in flight {i} " + "z" * 200)).encode()
              for i in range(n)]
    socks = [_partial_post(p.port, b, len(b) // 2) for b in bodies]
    time.sleep(0.5)          # the server has the headers and half the bodies
    p.signal(signal.SIGTERM)
    time.sleep(0.5)
    assert p.alive(), f"parley exited with requests in flight:\n{p.log_tail()}"
    results = []
    for s, b in zip(socks, bodies):
        try:
            s.sendall(b[len(b) // 2:])
            results.append(_read_status(s))
        except OSError as e:
            results.append((None, repr(e).encode()))
        finally:
            s.close()
    rc = p.wait(timeout=30)
    bad = [(i, st, raw[:200]) for i, (st, raw) in enumerate(results) if st != 200]
    assert not bad, f"in-flight requests not completed with 200 during shutdown: {bad}"
    assert rc == 0, f"exit code {rc} after SIGTERM:\n{p.log_tail()}"
    stored = parley.db.scalar("SELECT count(*) FROM messages WHERE platform_message_id "
                              "LIKE 'wamid.GRACE%%'")
    assert stored == n, f"{stored} of {n} acknowledged messages stored"
    with pytest.raises(OSError):
        harness.get(p.url("/healthz"), timeout=2)
