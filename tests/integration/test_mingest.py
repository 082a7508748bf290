"""tests/fakes/mingest, the bench's least durable ingest (row a'' of
docs/PERFORMANCE.md): a bound is only worth quoting if the thing measured
does the job. Against a real PostgreSQL: it answers 200 only for what it
stored (duplicates once), 401 for a bad signature, 400 without a message
id, 413 for an oversize body, and 503 when the insert fails; rows a''n,
a''q and a''d store what they say they store.
"""

import hashlib
import hmac
import json
import re
import subprocess
import time

import pytest

import harness
from fakes import loadgen

SECRET = "mingest-test-secret"


def start(db, *args):
    p = subprocess.Popen([str(harness.build_dir() / "tests" / "mingest"), "--db", db.url,
                          "--secret", SECRET, "--port", "0", *args],
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


def load_with_retries(db, url, requests, users, table="inbox"):
    """loadgen's webhooks, 30 % of them retries: every one answered 200,
    each stored once."""
    r = loadgen(url + "/webhooks/whatsapp", secret=SECRET, connections=8, requests=requests,
                users=users, dup_ratio=0.3)
    assert r["responses"] == {"200": requests}, r
    assert db.scalar("SELECT count(*) FROM %s" % table) == requests - r["duplicates"]


def test_mingest_normalised_stores_the_fields_of_what_it_answers(db):
    """Row a''n, the least normalised ingest: the message's fields in typed
    columns, parsed with cJSON; the same answers as the raw one."""
    p, url = start(db, "--normalise", "1")
    try:
        load_with_retries(db, url, 200, users=50)
        assert db.scalar("SELECT count(DISTINCT user_id) FROM inbox") <= 50

        msg = harness.wa_text("wamid.MNORM1", "15550042", "hello, fields", ts=1764288000)
        assert post(url, msg, secret="wrong") == 401
        assert post(url, msg) == 200 and post(url, msg) == 200
        value = msg["entry"][0]["changes"][0]["value"]
        assert db.query("SELECT platform, channel, user_id, kind, text, platform_ts, state"
                        " FROM inbox WHERE key = 'wamid.MNORM1'") == [
            ("whatsapp", value["metadata"]["phone_number_id"], "15550042", "text",
             "hello, fields", 1764288000, 0)]
        assert post(url, {"object": "whatsapp_business_account", "entry": []}) == 400
        assert post(url, "not json at all") == 400
    finally:
        stop(p)


def test_mingest_queue_makes_each_conversation_ready_once(db):
    """Row a''q, the least queue ingest: besides a''n's row, each stored
    message's conversation in the same statement: created ready with the
    user's pseudonym, made ready again when idle, left alone when ready;
    a duplicate changes nothing."""
    p, url = start(db, "--normalise", "2")
    try:
        load_with_retries(db, url, 300, users=40)
        users = db.scalar("SELECT count(DISTINCT (platform, channel, user_id)) FROM inbox")
        assert 1 < users <= 40
        assert db.scalar("SELECT count(*) FROM conv WHERE pending_since IS NOT NULL") == users
        assert db.scalar("SELECT count(*) FROM conv") == users

        msg = harness.wa_text("wamid.MQ1", "15550077", "hello, queue")
        assert post(url, msg) == 200
        pseudo = hmac.new(SECRET.encode(), b"whatsapp:15550077", hashlib.sha256).hexdigest()
        assert db.query("SELECT pseudonym FROM conv WHERE user_id = '15550077'") == [(pseudo,)]
        first = db.scalar("SELECT pending_since FROM conv WHERE user_id = '15550077'")

        # Ready already: a new message leaves it as it is; so does a retry.
        assert post(url, harness.wa_text("wamid.MQ2", "15550077", "again")) == 200
        assert post(url, msg) == 200
        assert db.scalar("SELECT pending_since FROM conv WHERE user_id = '15550077'") == first

        # Idle (answered): a retry of an old message does not wake it, a new one does.
        db.execute("UPDATE conv SET pending_since = NULL WHERE user_id = '15550077'")
        assert post(url, msg) == 200
        assert db.scalar("SELECT pending_since FROM conv WHERE user_id = '15550077'") is None
        assert post(url, harness.wa_text("wamid.MQ3", "15550077", "and again")) == 200
        assert db.scalar("SELECT pending_since FROM conv WHERE user_id = '15550077'") > first
        assert db.scalar("SELECT count(*) FROM inbox WHERE user_id = '15550077'") == 3
        assert post(url, {"object": "whatsapp_business_account", "entry": []}) == 400
    finally:
        stop(p)


def test_mingest_design_storage_keeps_ids_events_and_the_queue(db):
    """Row a''d, the least ingest of DESIGN.md's storage: a''q's work with
    identity ids (each conversation's id returned by its upsert, the
    message's foreign key to it) and each stored message's
    message_received event in the partitioned log, in one statement."""
    p, url = start(db, "--normalise", "3")
    try:
        load_with_retries(db, url, 300, users=40, table="messages")
        users = db.scalar("SELECT count(DISTINCT conversation_id) FROM messages")
        assert 1 < users <= 40
        assert db.scalar("SELECT count(*) FROM conversations") == users
        assert db.scalar("SELECT count(*) FROM conversations WHERE pending_since IS NULL") == 0
        # One event per message, naming it and its conversation.
        assert db.scalar("SELECT count(*) FROM messages m JOIN events e ON e.message_id = m.id"
                         " AND e.conversation_id = m.conversation_id"
                         " AND e.platform_event_id = m.key") == \
            db.scalar("SELECT count(*) FROM messages") == db.scalar("SELECT count(*) FROM events")

        msg = harness.wa_text("wamid.MD1", "15550088", "hello, design", ts=1764288000)
        assert post(url, msg) == 200
        pseudo = hmac.new(SECRET.encode(), b"whatsapp:15550088", hashlib.sha256).hexdigest()
        conv = db.query("SELECT id, pseudonym FROM conversations WHERE user_id = '15550088'")
        assert [c[1] for c in conv] == [pseudo]
        conv = conv[0][0]
        assert db.query("SELECT conversation_id, kind, text, platform_ts FROM messages"
                        " WHERE key = 'wamid.MD1'") == [(conv, "text", "hello, design",
                                                          1764288000)]
        assert db.query("SELECT e.tableoid::regclass::text, e.type, e.user_pseudonym,"
                        " e.data->>'msg_type', extract(epoch FROM e.occurred_at)::bigint"
                        " FROM events e JOIN messages m ON m.id = e.message_id"
                        " WHERE m.key = 'wamid.MD1'") == [
            ("events_now", "message_received", pseudo, "text", 1764288000)]
        first = db.scalar("SELECT pending_since FROM conversations WHERE id = %s", (conv,))

        # Ready already: a new message leaves it as it is; a retry stores nothing.
        assert post(url, harness.wa_text("wamid.MD2", "15550088", "again")) == 200
        assert post(url, msg) == 200
        assert db.scalar("SELECT pending_since FROM conversations WHERE id = %s", (conv,)) == first

        # Idle (answered): a retry of an old message does not wake it, a new one does.
        db.execute("UPDATE conversations SET pending_since = NULL WHERE id = %s", (conv,))
        assert post(url, msg) == 200
        assert db.scalar("SELECT pending_since FROM conversations WHERE id = %s", (conv,)) is None
        assert post(url, harness.wa_text("wamid.MD3", "15550088", "and again")) == 200
        assert db.scalar("SELECT pending_since FROM conversations WHERE id = %s", (conv,)) > first
        assert db.scalar("SELECT count(*) FROM messages WHERE conversation_id = %s", (conv,)) == 3
        assert db.scalar("SELECT count(*) FROM events WHERE conversation_id = %s", (conv,)) == 3
        assert db.scalar("SELECT count(*) FROM conversations WHERE user_id = '15550088'") == 1
        assert post(url, {"object": "whatsapp_business_account", "entry": []}) == 400
    finally:
        stop(p)


def start_replying(db, fake, receipt=1, queue="memory"):
    fake.control(llm_api_key="mingest-llm-key", graph_token="mingest-graph-token")
    p = subprocess.Popen([str(harness.build_dir() / "tests" / "mingest"), "--db", db.url,
                          "--secret", SECRET, "--port", "0", "--llm", fake.llm_base,
                          "--llm-key", "mingest-llm-key", "--graph", fake.graph_base,
                          "--graph-token", "mingest-graph-token", "--inflight", "8",
                          "--receipt", str(receipt), "--queue", queue],
                         env=harness.child_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    m = re.match(r"mingest port=(\d+)", p.stdout.readline())
    assert m, "mingest did not print its port"
    return p, "http://127.0.0.1:%s" % m.group(1)


def wait_outbox(db, n, timeout=20.0):
    """Replies stored with the platform's id (an intent has none yet)."""
    sql = "SELECT count(*) FROM outbox WHERE wamid IS NOT NULL"
    deadline = time.monotonic() + timeout
    while db.scalar(sql) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return db.scalar(sql)


@pytest.mark.parametrize("queue", ["memory", "db"])
def test_mingest_reply_mode_answers_every_new_message_once(db, fake, queue):
    """Rows a''' and a'''' (the least durable reply paths) are only bounds
    if they do the job: every new message gets its receipt, then the LLM's
    answer sent to its sender, stored with the platform's id; a retried
    webhook is not answered twice. Through PostgreSQL (--queue db) every
    message ends claimed and done. Each reply's row keeps its LLM call's
    time (the paced row a''''p takes it out of the reply's latency)."""
    p, url = start_replying(db, fake, queue=queue)
    fake.control(graph_latency_ms=40,  # so that "answered before" shows
                 llm_latency_ms=30)
    try:
        r = loadgen(url + "/webhooks/whatsapp", secret=SECRET, connections=8, requests=200,
                    users=40)
        assert r["responses"] == {"200": 200}, r
        msg = harness.wa_text("wamid.MREPLY1", "15550009", "hello there")
        assert post(url, msg) == 200 and post(url, msg) == 200
        assert wait_outbox(db, 201) == 201

        rows = db.query("SELECT i.key, i.body, o.wamid, o.reply FROM inbox i"
                        " JOIN outbox o USING (key)")
        assert len(rows) == 201
        graph = fake.requests(kind="graph")
        sends = [g for g in graph if g["body"].get("status") != "read"]
        reads = {g["body"]["message_id"]: g for g in graph
                 if g["body"].get("status") == "read"}
        assert len(sends) == 201 and len(reads) == 201
        by_text = {}
        for s in sends:
            assert s["body"]["messaging_product"] == "whatsapp"
            by_text[s["body"]["text"]["body"]] = s
        for key, body, wamid, reply in rows:
            m = json.loads(body)["entry"][0]["changes"][0]["value"]["messages"][0]
            assert reply == "Echo: " + m["text"]["body"]
            s = by_text[reply]
            assert s["body"]["to"] == m["from"]
            assert wamid.startswith("wamid.")
            # The receipt was answered before the reply was sent.
            rd = reads[key]
            assert rd["delay_ms"] >= 40, rd
            # (1 ms for fakeup's timer: mingest sends at once, so the
            # send's arrival and the receipt's answer can be µs apart.)
            assert s["ts_ms"] >= rd["ts_ms"] + rd["delay_ms"] - 1, (rd, s)
        assert len(fake.requests(kind="llm")) == 201
        # (fakeup answers up to ~1 ms before its configured latency.)
        assert db.scalar("SELECT count(*) FROM outbox"
                         " WHERE llm_us BETWEEN 25000 AND 10000000") == 201
        if queue == "db":
            assert db.query("SELECT state, count(*) FROM inbox GROUP BY 1") == [(2, 201)]
            assert db.scalar("SELECT count(*) FROM inbox WHERE lease_until IS NOT NULL") == 0
    finally:
        out = stop(p)
    assert "mingest replies sent=201 failed=0 stored=201" in out, out


@pytest.mark.parametrize("queue", ["memory", "db"])
def test_mingest_reply_mode_stores_no_reply_it_did_not_send(db, fake, queue):
    p, url = start_replying(db, fake, receipt=0, queue=queue)
    try:
        fake.control(llm_faults=[{"status": 500}])
        assert post(url, harness.wa_text("wamid.MREPLY2", "15550009", "one")) == 200
        fake.wait_requests("llm", 1)
        fake.control(graph_faults=[{"http": 500, "code": 2}])
        assert post(url, harness.wa_text("wamid.MREPLY3", "15550009", "two")) == 200
        fake.wait_requests("graph", 1)
        assert post(url, harness.wa_text("wamid.MREPLY4", "15550009", "three")) == 200
        assert wait_outbox(db, 1) == 1
        assert db.query("SELECT key FROM outbox WHERE wamid IS NOT NULL") == [("wamid.MREPLY4",)]
        assert [g["body"].get("status") for g in fake.requests(kind="graph")] == [None, None]
        if queue == "db":
            # The failed ones keep their lease (claimed again when it runs
            # out); the failed send's intent is left without an id.
            assert db.query("SELECT key, state FROM inbox ORDER BY key") == [
                ("wamid.MREPLY2", 1), ("wamid.MREPLY3", 1), ("wamid.MREPLY4", 2)]
            assert db.query("SELECT key FROM outbox WHERE wamid IS NULL") == [("wamid.MREPLY3",)]
    finally:
        out = stop(p)
    assert "mingest replies sent=1 failed=2 stored=1" in out, out
