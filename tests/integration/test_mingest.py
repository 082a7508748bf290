"""tests/fakes/mingest, the bench's least durable ingest (row a'' of
docs/PERFORMANCE.md): a bound is only worth quoting if the thing measured
does the job. Against a real PostgreSQL: it answers 200 only for what it
stored (duplicates once), 401 for a bad signature, 400 without a message
id, 413 for an oversize body, and 503 when the insert fails.
"""

import json
import re
import subprocess
import time

import harness
from fakes import loadgen

SECRET = "mingest-test-secret"


def start(db):
    db.execute("CREATE TABLE inbox (key text PRIMARY KEY, body text NOT NULL)")
    p = subprocess.Popen([str(harness.build_dir() / "tests" / "mingest"), "--db", db.url,
                          "--secret", SECRET, "--port", "0"],
                         env=harness.child_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    m = re.match(r"mingest port=(\d+)", p.stdout.readline())
    assert m, "mingest did not print its port"
    return p, "http://127.0.0.1:%s" % m.group(1)


def stop(p):
    p.terminate()
    out = p.stdout.read()
    assert p.wait(timeout=15) == 0, out
    assert harness.sanitizer_report(out) is None, out
    return out


def post(url, body, secret=SECRET):
    raw = json.dumps(body).encode()
    return harness.request("POST", url + "/webhooks/whatsapp", body=raw,
                           headers={"X-Hub-Signature-256": harness.sign(raw, secret)}).status


def test_mingest_stores_what_it_answers(db):
    p, url = start(db)
    try:
        r = loadgen(url + "/webhooks/whatsapp", secret=SECRET, connections=8, requests=300,
                    users=50)
        assert r["responses"] == {"200": 300}, r
        assert db.scalar("SELECT count(*) FROM inbox") == 300
        assert db.scalar("SELECT count(*) FROM inbox WHERE key LIKE 'wamid.%%'") == 300

        r = loadgen(url + "/webhooks/whatsapp", secret=SECRET, connections=8, requests=300,
                    users=50, dup_ratio=0.5, run_id="dups")
        assert r["responses"] == {"200": 300} and r["duplicates"] > 50, r
        assert db.scalar("SELECT count(*) FROM inbox") == 600 - r["duplicates"]

        msg = harness.wa_text("wamid.MINGEST1", "15550001", "hello")
        assert post(url, msg, secret="wrong") == 401
        assert post(url, {"object": "whatsapp_business_account", "entry": []}) == 400
        big = harness.wa_text("wamid.MINGEST2", "15550001", "x" * 70000)
        assert post(url, big) == 413
        assert db.scalar("SELECT count(*) FROM inbox WHERE key LIKE 'wamid.MINGEST%%'") == 0
        assert post(url, msg) == 200 and post(url, msg) == 200
        assert db.scalar("SELECT count(*) FROM inbox WHERE key = 'wamid.MINGEST1'") == 1

        # Nowhere to store: 503, never a 200.
        db.execute("DROP TABLE inbox")
        time.sleep(0.1)
        assert post(url, harness.wa_text("wamid.MINGEST3", "15550001", "x")) == 503
    finally:
        stop(p)
