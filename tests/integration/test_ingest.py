"""Ingest (issue 3) against the real binary and PostgreSQL: the Meta
handshake, every fixture signed and posted (exact rows, idempotent on
retry), signature failures, unconfigured platforms, malformed bodies, a
PostgreSQL outage, 50 concurrent posters of overlapping duplicates, and
status ranking. Parley runs with --no-workers: nothing here is answered."""

import hashlib
import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

import fakes
import harness
import promparse
from harness import VERIFY_TOKEN, REPO, wait_until

FIXTURES = REPO / "tests" / "fixtures"
EXPECTED = FIXTURES / "expected.json"
PLATFORMS = ("whatsapp", "messenger", "instagram")


def fixture_files():
    files = []
    for plat in PLATFORMS:
        files += sorted((FIXTURES / plat).glob("*.json"))
    return files


# --------------------------------------------------------------------------
# Shared server: one parley (--no-workers) and database for the module; each
# test starts from empty tables.

def data_tables(db):
    """Every table ingest may write (not schema_migrations, not settings
    where a generated pseudonym key lives), partitions excluded."""
    return [r[0] for r in db.query(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
        "AND c.relname NOT IN ('schema_migrations', 'settings') ORDER BY 1")]


def reset(db):
    tables = data_tables(db)
    if tables:
        db.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) +
                   " RESTART IDENTITY CASCADE")


def row_counts(db):
    return {t: db.scalar(f'SELECT count(*) FROM "{t}"') for t in data_tables(db)}


def total_rows(db):
    return sum(row_counts(db).values())


@pytest.fixture(scope="module")
def shared(pg):
    db = pg.create_db("ingest")
    factory = harness.ParleyFactory(pg, db, harness.log_dir(), "test_ingest-shared")
    try:
        p = factory(args=("serve", "--no-workers"))
    except BaseException:
        factory.finish()
        raise
    p.factory_ref = factory
    yield p
    problems = factory.finish()
    try:
        pg.drop_db(db)
    except Exception:  # noqa: BLE001
        pass
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def srv(shared, request, pg):
    if not pg.running:
        pg.start()
    request.node._parley_factory = shared.factory_ref
    assert shared.alive(), f"the shared parley died:\n{shared.log_tail()}"
    reset(shared.factory.db)
    yield shared


def sdb(srv):
    return srv.factory.db


# --------------------------------------------------------------------------
# Handshake

@pytest.mark.parametrize("platform", PLATFORMS)
def test_handshake(srv, platform):
    base = f"/webhooks/{platform}"
    r = srv.get(f"{base}?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}"
                "&hub.challenge=1158201444")
    assert r.status == 200, r
    assert r.body == b"1158201444", r
    assert r.header("Content-Type", "").startswith("text/plain"), r.header("Content-Type")
    # An opaque, URL-encoded challenge is echoed decoded.
    r = srv.get(f"{base}?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}"
                "&hub.challenge=abc%2Fxyz-9")
    assert r.status == 200 and r.body == b"abc/xyz-9", r
    for q in ("hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1",
              f"hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}x&hub.challenge=1",
              f"hub.mode=unsubscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1",
              "hub.mode=subscribe&hub.challenge=1",
              ""):
        r = srv.get(f"{base}?{q}" if q else base)
        assert r.status == 403, f"{q!r}: {r}"
        assert b"1158201444" not in r.body


# --------------------------------------------------------------------------
# Fixtures

def _load_expected():
    if not EXPECTED.exists():
        return None
    return json.loads(EXPECTED.read_text("utf-8"))


def expected_for(path):
    """The expected counts for one fixture file, tolerant of the layout of
    expected.json: keyed by 'platform/name.json', 'platform/name', or
    nested {platform: {name: ...}}."""
    exp = _load_expected()
    if exp is None:
        pytest.fail(f"{EXPECTED} does not exist")
    rel = path.relative_to(FIXTURES).as_posix()
    plat, name = rel.split("/", 1)
    for k in (rel, rel[:-5], name, name[:-5]):
        if k in exp:
            return exp[k]
    sub = exp.get(plat)
    if isinstance(sub, dict):
        for k in (name, name[:-5]):
            if k in sub:
                return sub[k]
    pytest.fail(f"no entry for {rel} in {EXPECTED}")


# events.type (gateway/ingest.c, docs/DATA.md) -> the adapter's event kind
# that expected.json counts.
KIND_OF_TYPE = {
    "message_received": "message",
    "button_clicked": "interactive",
    "feedback": "interactive",
    "reaction_added": "reaction",
    "reaction_removed": "reaction",
    "sent": "status",
    "delivered": "status",
    "read": "status",
    "failed": "status",
    "referral": "referral",
    "opt_out": "opt_out",
    "opt_in": "opt_in",
    "message_echo": "echo",
    "unknown": "unknown",
}


FIXTURE_PARAMS = [pytest.param(p, id=p.relative_to(FIXTURES).as_posix())
                  for p in fixture_files()] or [pytest.param(None, id="no-fixtures")]


@pytest.mark.parametrize("path", FIXTURE_PARAMS)
def test_fixture_stored_exactly_and_retry_changes_nothing(srv, path):
    assert path is not None, f"no fixtures in {FIXTURES}/{{{','.join(PLATFORMS)}}}"
    platform = path.parent.name
    body = path.read_bytes()
    db = sdb(srv)
    want = Counter({k: v for k, v in expected_for(path).items() if v})

    r = srv.post_webhook(platform, body)
    assert r.status == 200, r
    by_type = dict(db.query("SELECT type, count(*) FROM events GROUP BY type"))
    strange = set(by_type) - set(KIND_OF_TYPE)
    assert not strange, f"event types not in the data dictionary: {strange}"
    got = Counter()
    for t, n in by_type.items():
        got[KIND_OF_TYPE[t]] += n
    # A message carrying ad attribution also yields a "referral" event
    # linked to that message (expected.json counts parser events: only the
    # message); standalone referrals have no message of their own.
    attached = db.scalar("SELECT count(*) FROM events e JOIN messages m ON m.id = e.message_id "
                         "WHERE e.type = 'referral' AND m.direction = 'in'")
    with_ref = db.scalar("SELECT count(*) FROM messages WHERE raw ? 'referral' "
                         "OR raw->'message' ? 'referral' OR raw->'postback' ? 'referral'")
    assert attached == with_ref, f"{with_ref} messages with a referral, {attached} linked events"
    got["referral"] -= attached
    got = +got
    assert got == want, f"events by kind: got {dict(got)} ({by_type}), expected {dict(want)}"
    assert db.scalar("SELECT count(*) FROM referrals") == by_type.get("referral", 0)
    assert db.scalar("SELECT count(*) FROM events WHERE platform <> %s", (platform,)) == 0

    # Messages rows: inbound user messages and button clicks ('in', queued
    # unless feedback), echoes of the page's own messages ('out').
    msgs = dict(db.query("SELECT direction, count(*) FROM messages GROUP BY 1"))
    n_in = by_type.get("message_received", 0) + by_type.get("button_clicked", 0)
    n_out = by_type.get("message_echo", 0)
    assert msgs.get("in", 0) == n_in and msgs.get("out", 0) == n_out, \
        f"messages by direction {msgs}, expected in={n_in} out={n_out}"
    # Echoes are recorded as outbound and never queued as work.
    assert db.scalar("SELECT count(*) FROM messages WHERE direction = 'out' "
                     "AND reply_state IS NOT NULL") == 0
    # Every event carries the platform timestamp.
    assert db.scalar("SELECT count(*) FROM events WHERE occurred_at IS NULL "
                     "AND type <> 'unknown'") == 0

    before = row_counts(db)
    r = srv.post_webhook(platform, body)
    assert r.status == 200, f"retried POST: {r}"
    after = row_counts(db)
    assert after == before, f"a retried webhook changed rows: {before} -> {after}"


def test_expected_json_covers_every_fixture():
    exp = _load_expected()
    assert exp is not None, f"{EXPECTED} does not exist"
    files = fixture_files()
    assert files, "no fixtures"
    for f in files:
        expected_for(f)


# --------------------------------------------------------------------------
# Signatures, configuration, malformed bodies

def _wa_body(mid="wamid.SIGTEST1", text="hello"):
    return json.dumps(harness.wa_text(mid, "15551230001", text)).encode()


@pytest.mark.parametrize("variant", ["wrong", "missing", "other_secret", "sha1_prefix",
                                     "no_prefix", "truncated", "empty", "body_changed"])
def test_bad_signature_401_and_nothing_stored(srv, variant):
    body = _wa_body()
    good = harness.sign(body)
    sig = {
        "wrong": "sha256=" + "ab" * 32,
        "missing": None,
        "other_secret": harness.sign(body, "not-the-secret"),
        "sha1_prefix": "sha1=" + good[7:],
        "no_prefix": good[7:],
        "truncated": good[:-2],
        "empty": "",
        "body_changed": harness.sign(body + b" "),
    }[variant]
    r = srv.post_webhook("whatsapp", body, signature=sig)
    assert r.status == 401, r
    assert total_rows(sdb(srv)) == 0, row_counts(sdb(srv))


def test_uppercase_hex_signature_accepted(srv):
    body = _wa_body("wamid.UPPER1")
    sig = harness.sign(body)
    r = srv.post_webhook("whatsapp", body, signature="sha256=" + sig[7:].upper())
    assert r.status == 200, r
    assert sdb(srv).scalar("SELECT count(*) FROM messages") == 1


def test_non_ascii_body_signed_raw_and_escaped(srv):
    db = sdb(srv)
    text = "Olá, ação 日本語 👍"
    raw = json.dumps(harness.wa_text("wamid.UTF8RAW", "15551230002", text),
                     ensure_ascii=False).encode("utf-8")
    r = srv.post_webhook("whatsapp", raw)
    assert r.status == 200, r
    # Meta may sign the \\uXXXX-escaped form of a body sent as raw UTF-8.
    raw2 = json.dumps(harness.wa_text("wamid.UTF8ESC", "15551230002", text),
                      ensure_ascii=False).encode("utf-8")
    escaped = json.dumps(harness.wa_text("wamid.UTF8ESC", "15551230002", text),
                         ensure_ascii=True).encode("ascii")
    r = srv.post_webhook("whatsapp", raw2, signature=harness.sign(escaped))
    assert r.status == 200, r
    rows = dict(db.query("SELECT platform_message_id, text FROM messages"))
    assert rows == {"wamid.UTF8RAW": text, "wamid.UTF8ESC": text}, rows


def test_message_text_quotes_backslashes_and_braces_stored_exactly(srv):
    """The plain-message ingest passes fields as PostgreSQL array literals:
    every character that is special in one arrives unchanged."""
    db = sdb(srv)
    text = 'he said "hi" \\ {a,b} NULL, \\"} \t\n end'
    body = harness.wa_text("wamid.ESC\\\"1", "15551230009", text)
    r = srv.post_webhook("whatsapp", body)
    assert r.status == 200, r
    rows = db.query("SELECT platform_message_id, text, media_id, raw FROM messages")
    item = body["entry"][0]["changes"][0]["value"]["messages"][0]
    assert rows == [('wamid.ESC\\"1', text, None, item)], rows
    ev = db.query("SELECT platform_event_id, data FROM events")
    assert ev == [('wamid.ESC\\"1', {"msg_type": "text"})], ev


# Columns compared between the two ingest functions. Ids, times and the
# user's own ids differ by construction: they are compared as links, and a
# response id as its rank among the conversation's responses. user_replied's
# seconds since our reply (a minute ago) are compared as a range: a slow
# sanitizer run may round them differently for the two users.
REL_RESP = ("(SELECT count(*) FROM responses r2 WHERE r2.conversation_id = c.id "
            "AND r2.id <= {0}) * CASE WHEN {0} IS NULL THEN NULL ELSE 1 END")
MSG_COLS = ", ".join([("m." + c) for c in (
    "direction", "platform", "platform_message_id LIKE 'wamid.OUT%%'", "kind",
    "text", "media_id", "context_id", "reply_state", "part", "status",
    "status_rank", "error_code", "platform_ts", "sent_at",
    "raw - 'id' - 'from' - 'sender' #- '{message,mid}'")] + [REL_RESP.format("m.response_id")])
EV_COLS = ("e.type, e.platform, e.channel, e.occurred_at, "
           + REL_RESP.format("e.response_id") + ", "
           "e.ref_platform_message_id IS NOT NULL, e.data - 'raw' - 'seconds', "
           "(e.data->>'seconds')::int BETWEEN 55 AND 120, "
           "(e.data->'raw') - 'id' - 'recipient_id' - 'sender' #- '{delivery,mids}', "
           "e.request_id IS NOT NULL, "
           "e.user_pseudonym = u.pseudonym, e.conversation_id = c.id, "
           "m.direction, e.platform_event_id IS NOT DISTINCT FROM m.platform_message_id")


def _rows_of(db, phone, keys_like=None):
    """What the ingest stored for one WhatsApp user, without its ids (the
    reaction that sends the mixed user's webhooks to parley_ingest() left
    out)."""
    uid = db.scalar("SELECT id FROM users WHERE platform_user_id = %s", (phone,))
    user = db.query("SELECT platform, phone = platform_user_id, key_version, "
                    "length(pseudonym), opted_out_at FROM users WHERE id = %s", (uid,))
    conv = db.query("SELECT platform, channel, pending_since IS NOT NULL, lease_owner "
                    "FROM conversations WHERE user_id = %s", (uid,))
    msgs = db.query(f"SELECT {MSG_COLS} FROM messages m JOIN conversations c "
                    "ON c.id = m.conversation_id WHERE c.user_id = %s ORDER BY m.id", (uid,))
    evs = db.query(f"SELECT {EV_COLS} FROM events e JOIN users u ON u.id = e.user_id "
                   "LEFT JOIN conversations c ON c.user_id = u.id "
                   "LEFT JOIN messages m ON m.id = e.message_id "
                   "WHERE e.user_id = %s AND e.type <> 'reaction_added' "
                   "ORDER BY e.id", (uid,))
    keys = db.scalar("SELECT count(*) FROM inbound_keys WHERE key LIKE %s",
                     (keys_like or f"status:%{phone}%",))
    return {"user": user, "conversation": conv, "messages": msgs, "events": evs,
            "keys": keys}


def _batches_by_function(srv):
    """parley_ingest_batches_total by function, from /metrics."""
    fams = promparse.parse(srv.get("/metrics").text)
    fam = fams.get("parley_ingest_batches_total")
    return Counter({s.labels["function"]: s.value for s in fam.samples} if fam else {})


def _wa_reaction(mid, frm, target, ts):
    return {"from": frm, "id": mid, "timestamp": str(ts), "type": "reaction",
            "reaction": {"message_id": target, "emoji": "\N{THUMBS UP SIGN}"}}


@pytest.mark.parametrize("with_statuses", [False, True])
def test_plain_and_mixed_batches_store_the_same_rows(srv, with_statuses):
    """A batch of plain messages goes to parley_ingest_messages(), one of
    plain messages and statuses to parley_ingest_plain(), any other batch
    to parley_ingest(): the same webhooks must leave the same rows either
    way. Messages: a new user, a known one, an idle conversation made
    ready, the user_replied signal, a retry, a duplicate within one
    webhook. Statuses (with_statuses): of our reply (linked to the message
    and its response, the status raised), late lower ones that change
    nothing, a duplicate, a status of a message we never sent, a
    status-only webhook of a user never seen (created with an idle
    conversation)."""
    db = sdb(srv)
    ts = int(time.time()) - 60
    for phone, mixed in (("15551239001", False), ("15551239002", True)):
        other = phone[:-1] + str(int(phone[-1]) + 7)    # seen only in a status
        out1, out2 = f"wamid.OUT1{phone}", f"wamid.OUT2{phone}"

        def post(msgs=(), statuses=()):
            # A reaction to a message we never sent makes a webhook not plain.
            # Its id follows the webhook's content, so that a retry is one.
            rx = hashlib.sha1(json.dumps([msgs, statuses]).encode()).hexdigest()[:16]
            msgs = list(msgs) + ([_wa_reaction(f"wamid.R{rx}", phone,
                                               f"wamid.NEVER{phone}", ts)]
                                 if mixed else [])
            r = srv.post_webhook("whatsapp", harness.wa_envelope(msgs, list(statuses)))
            assert r.status == 200, r

        def status(*s):
            """The statuses (wamid, status, seconds[, recipient]) when the
            test sends them."""
            return [harness.wa_status(x[0], x[1], x[3] if len(x) > 3 else phone,
                                      ts + x[2]) for x in s] if with_statuses else []

        calls = _batches_by_function(srv)
        post([harness.wa_message(f"wamid.A{phone}", phone, "first", ts)])
        # Our reply, sent in two parts, a minute ago; the conversation idle.
        cid = db.scalar("SELECT c.id FROM conversations c JOIN users u ON u.id = c.user_id "
                        "WHERE u.platform_user_id = %s", (phone,))
        rid = db.scalar("INSERT INTO responses (conversation_id, status, completion) "
                        "VALUES (%s, 'sent', 'hello') RETURNING id", (cid,))
        for part, wamid in enumerate((out1, out2)):
            db.execute("INSERT INTO messages (conversation_id, direction, platform, "
                       "platform_message_id, kind, text, response_id, part, status, "
                       "status_rank, sent_at) VALUES (%s, 'out', 'whatsapp', %s, 'text', "
                       "'hello', %s, %s, 'sent', 1, to_timestamp(%s))",
                       (cid, wamid, rid, part, ts))
        db.execute("UPDATE conversations SET pending_since = NULL, last_response_id = %s, "
                   "last_reply_at = now() - interval '1 minute' WHERE id = %s", (rid, cid))
        b = harness.wa_message(f"wamid.B{phone}", phone, 'second "quoted"', ts + 1)
        post([b], status((out1, "delivered", 1)))
        before = total_rows(db)
        post([b], status((out1, "delivered", 1)))
        assert total_rows(db) == before, "a retried webhook stored rows"
        c = harness.wa_message(f"wamid.C{phone}", phone, "third", ts + 2)
        post([c, c], status((out1, "read", 3), (out1, "delivered", 1),
                            (out2, "read", 3), (out2, "delivered", 2)))
        if with_statuses:
            post([], status((out1, "sent", 0), (f"wamid.NEVER{phone}", "delivered", 4),
                            (f"wamid.ELSE{other}", "sent", 4, other)))
        # Each webhook one batch, stored by the function its kind of batch
        # goes to.
        calls = _batches_by_function(srv) - calls
        want = (Counter(parley_ingest=5) if mixed else
                Counter(parley_ingest_messages=1, parley_ingest_plain=4)) \
            if with_statuses else \
            Counter(parley_ingest=4) if mixed else Counter(parley_ingest_messages=4)
        assert calls == want, \
            f"batches by function for the {'mixed' if mixed else 'plain'} user: {calls}"
    plain, mixed = _rows_of(db, "15551239001"), _rows_of(db, "15551239002")
    for k in plain:
        assert plain[k] == mixed[k], f"{k}: plain {plain[k]} != mixed {mixed[k]}"
    assert len(plain["messages"]) == 5, plain
    if not with_statuses:
        assert [e[0] for e in plain["events"]] == [
            "message_received", "message_received", "user_replied", "message_received",
            "user_replied"], plain
        return
    assert [m[9] for m in plain["messages"] if m[0] == "out"] == ["read", "read"], plain
    assert [e[0] for e in plain["events"]] == [
        "message_received", "message_received", "delivered", "user_replied",
        "message_received", "read", "read", "delivered", "user_replied",
        "sent", "delivered"], plain
    # A status of our reply is linked to its message and response (the
    # conversation's first); the one of a message we never sent, to none.
    assert [(e[4], e[12]) for e in plain["events"] if e[0] in ("sent", "delivered", "read")] == [
        (1, "out"), (1, "out"), (1, "out"), (1, "out"), (1, "out"), (None, None)], plain
    assert plain["keys"] == 6, plain
    assert _rows_of(db, "15551239008") == _rows_of(db, "15551239009")
    other = _rows_of(db, "15551239008")
    assert other["conversation"] == [("whatsapp", harness.WA_PHONE_ID, False, None)], other
    assert [e[0] for e in other["events"]] == ["sent"], other


def test_plain_and_mixed_messenger_watermarks_store_the_same_rows(srv):
    """Messenger's delivery and read receipts carry a watermark (all we
    sent up to then): parley_ingest_plain() must store them as
    parley_ingest() does. A delivery that reaches one of our two parts,
    a retry, a read that reaches both, a late delivery that changes
    nothing; the same webhooks with a reaction go to parley_ingest()."""
    db = sdb(srv)
    t0 = int(time.time()) - 60
    page = harness.PAGE_ID

    def item(psid, ts_ms, **kv):
        return {"sender": {"id": psid}, "recipient": {"id": page}, "timestamp": ts_ms, **kv}

    for psid, mixed in (("2000000000000001", False), ("2000000000000002", True)):
        out1, out2 = f"m_OUT1{psid}", f"m_OUT2{psid}"

        def post(*items):
            items = list(items) + ([item(psid, t0 * 1000, reaction={
                "mid": f"m_NEVER{psid}", "action": "react", "reaction": "like",
                "emoji": "\N{THUMBS UP SIGN}"})] if mixed else [])
            r = srv.post_webhook("messenger", {"object": "page", "entry": [
                {"id": page, "time": t0 * 1000, "messaging": items}]})
            assert r.status == 200, r

        calls = _batches_by_function(srv)
        post(harness.ms_message(f"m_A{psid}", psid, "first", t0 * 1000))
        cid = db.scalar("SELECT c.id FROM conversations c JOIN users u ON u.id = c.user_id "
                        "WHERE u.platform_user_id = %s", (psid,))
        rid = db.scalar("INSERT INTO responses (conversation_id, status, completion) "
                        "VALUES (%s, 'sent', 'hello') RETURNING id", (cid,))
        for part, (mid, sent) in enumerate(((out1, t0), (out2, t0 + 10))):
            db.execute("INSERT INTO messages (conversation_id, direction, platform, "
                       "platform_message_id, kind, text, response_id, part, status, "
                       "status_rank, sent_at) VALUES (%s, 'out', 'messenger', %s, 'text', "
                       "'hello', %s, %s, 'sent', 1, to_timestamp(%s))",
                       (cid, mid, rid, part, sent))
        delivered = item(psid, (t0 + 6) * 1000,
                         delivery={"mids": [out1], "watermark": (t0 + 5) * 1000})
        post(harness.ms_message(f"m_B{psid}", psid, "second", (t0 + 6) * 1000), delivered)
        before = total_rows(db)
        post(harness.ms_message(f"m_B{psid}", psid, "second", (t0 + 6) * 1000), delivered)
        assert total_rows(db) == before, "a retried webhook stored rows"
        post(item(psid, (t0 + 21) * 1000, read={"watermark": (t0 + 20) * 1000}))
        post(item(psid, (t0 + 22) * 1000,
                  delivery={"mids": [out2], "watermark": (t0 + 20) * 1000}))
        calls = _batches_by_function(srv) - calls
        want = Counter(parley_ingest=5) if mixed else \
            Counter(parley_ingest_messages=1, parley_ingest_plain=4)
        assert calls == want, f"{'mixed' if mixed else 'plain'}: {calls}"
    plain, mixed = (_rows_of(db, p, keys_like=f"%:{page}:{p}:%")
                    for p in ("2000000000000001", "2000000000000002"))
    for k in plain:
        assert plain[k] == mixed[k], f"{k}: plain {plain[k]} != mixed {mixed[k]}"
    assert [m[9] for m in plain["messages"] if m[0] == "out"] == ["read", "read"], plain
    assert [e[0] for e in plain["events"]] == [
        "message_received", "message_received", "delivered", "read", "delivered"], plain
    # The deliveries name the message they list; the read, none.
    assert [(e[4], e[12]) for e in plain["events"] if e[0] in ("delivered", "read")] == [
        (1, "out"), (None, None), (1, "out")], plain
    assert plain["keys"] == 3, plain


def _messenger_sent(db, psid, mid, sent_s):
    """Our Messenger message mid to psid, sent at sent_s (Unix seconds),
    status sent: what a status or a watermark raises."""
    db.execute("INSERT INTO messages (conversation_id, direction, platform, "
               "platform_message_id, kind, text, status, status_rank, sent_at) "
               "SELECT c.id, 'out', 'messenger', %s, 'text', 'hello', 'sent', 1, "
               "to_timestamp(%s) FROM conversations c JOIN users u ON u.id = c.user_id "
               "WHERE u.platform_user_id = %s", (mid, sent_s, psid))


@pytest.mark.parametrize("read_first", [True, False], ids=["read_first", "delivery_first"])
@pytest.mark.parametrize("mixed", [False, True], ids=["plain", "mixed"])
def test_delivery_and_read_watermarks_in_one_batch_leave_the_highest(srv, mixed, read_first):
    """A delivery watermark and a read watermark of one conversation in one
    webhook both reach our message: it must end read, the highest rank,
    in either order and whichever function stores the batch (with a
    reaction to a message never sent, the batch goes to parley_ingest())."""
    db = sdb(srv)
    psid = "20000000000001%d%d" % (mixed, read_first)
    page, t0 = harness.PAGE_ID, int(time.time()) - 60
    assert srv.post_webhook("messenger", harness.ms_text(
        f"m_A{psid}", psid, "hi", t0 * 1000)).status == 200
    _messenger_sent(db, psid, f"m_OUT{psid}", t0)
    calls = _batches_by_function(srv)
    items = [{"sender": {"id": psid}, "recipient": {"id": page}, "timestamp": (t0 + 6) * 1000,
              "read": {"watermark": (t0 + 5) * 1000}},
             {"sender": {"id": psid}, "recipient": {"id": page}, "timestamp": (t0 + 7) * 1000,
              "delivery": {"watermark": (t0 + 5) * 1000}}]
    if not read_first:
        items.reverse()
    if mixed:
        items.append({"sender": {"id": psid}, "recipient": {"id": page},
                      "timestamp": t0 * 1000, "reaction": {
                          "mid": f"m_NEVER{psid}", "action": "react", "reaction": "like",
                          "emoji": "\N{THUMBS UP SIGN}"}})
    r = srv.post_webhook("messenger", {"object": "page", "entry": [
        {"id": page, "time": t0 * 1000, "messaging": items}]})
    assert r.status == 200, r
    want = Counter(parley_ingest=1) if mixed else Counter(parley_ingest_plain=1)
    assert _batches_by_function(srv) - calls == want
    assert db.scalar("SELECT status FROM messages WHERE platform_message_id = %s",
                     (f"m_OUT{psid}",)) == "read"


def test_watermark_and_status_by_id_of_one_platform_go_to_parley_ingest(srv):
    """A Messenger delivery without a watermark (by message id) and a read
    watermark in one batch would both update our message in
    parley_ingest_plain()'s one statement, where only one UPDATE takes
    effect; the batch goes to parley_ingest(), and the message ends read."""
    db = sdb(srv)
    psid, page, t0 = "2000000000000003", harness.PAGE_ID, int(time.time()) - 60
    assert srv.post_webhook("messenger", harness.ms_text(f"m_A{psid}", psid, "hi")).status == 200
    _messenger_sent(db, psid, f"m_OUT{psid}", t0)
    calls = _batches_by_function(srv)
    items = [{"sender": {"id": psid}, "recipient": {"id": page}, "timestamp": (t0 + 5) * 1000,
              "delivery": {"mids": [f"m_OUT{psid}"]}},
             {"sender": {"id": psid}, "recipient": {"id": page}, "timestamp": (t0 + 6) * 1000,
              "read": {"watermark": (t0 + 6) * 1000}}]
    r = srv.post_webhook("messenger", {"object": "page", "entry": [
        {"id": page, "time": t0 * 1000, "messaging": items}]})
    assert r.status == 200, r
    assert _batches_by_function(srv) - calls == Counter(parley_ingest=1)
    assert db.scalar("SELECT status FROM messages WHERE platform_message_id = %s",
                     (f"m_OUT{psid}",)) == "read"
    assert [t for (t,) in db.query("SELECT type FROM events WHERE type IN "
                                   "('delivered', 'read') ORDER BY id")] == ["delivered", "read"]


def test_status_of_a_message_in_the_same_batch_goes_to_parley_ingest(srv):
    """parley_ingest_plain()'s status UPDATE cannot see a message its own
    statement inserts, so a batch in which a status reports on a message
    stored in the same batch goes to parley_ingest(), which links the
    status to that message and raises its status."""
    db = sdb(srv)
    phone, ts = "15551237001", int(time.time())
    calls = _batches_by_function(srv)
    body = harness.wa_envelope([harness.wa_message("wamid.SAME1", phone, "hi", ts)],
                               [harness.wa_status("wamid.SAME1", "delivered", phone, ts)])
    assert srv.post_webhook("whatsapp", body).status == 200
    assert _batches_by_function(srv) - calls == Counter(parley_ingest=1)
    mid, status = db.query("SELECT id, status FROM messages "
                           "WHERE platform_message_id = 'wamid.SAME1'")[0]
    assert status == "delivered"
    assert db.scalar("SELECT message_id FROM events WHERE type = 'delivered'") == mid


def _ingest_one(cur, fn, uid, eid, text):
    """Store one plain WhatsApp message by calling an ingest function
    directly, as the gateway would; its rows (idx, queued, ready)."""
    ts = int(time.time() * 1000)
    raw = {"from": uid, "id": eid, "type": "text", "text": {"body": text}}
    pseudo = hashlib.sha256(uid.encode()).hexdigest()
    if fn == "parley_ingest_messages":
        cur.execute("SELECT idx, queued, ready FROM parley_ingest_messages("
                    "%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], 1, "
                    "%s::text[], %s::bigint[], %s::text[], %s::text[], %s::text[], "
                    "%s::jsonb[], %s::text[])",
                    (["whatsapp"], [harness.WA_PHONE_ID], [uid], [uid], [pseudo], [eid],
                     [ts], ["text"], [text], [None], [json.dumps(raw)], ["race"]))
    elif fn == "parley_ingest_plain":
        cur.execute("SELECT idx, queued, ready FROM parley_ingest_plain("
                    "%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], 1, "
                    "%s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[], "
                    "%s::text[], %s::text[], %s::text[], %s::int[], %s::int[], "
                    "%s::bigint[], %s::jsonb[], %s::jsonb[], %s::text[])",
                    (["whatsapp"], [harness.WA_PHONE_ID], [uid], [uid], [pseudo],
                     ["message_received"], [eid], [eid], [None], [ts], ["text"], [text],
                     [None], [0], [None], [None], [json.dumps(raw)], [None], ["race"]))
    else:
        item = {"i": 0, "etype": "message_received", "platform": "whatsapp",
                "channel": harness.WA_PHONE_ID, "uid": uid, "phone": uid,
                "pseudo": pseudo, "kv": 1, "eid": eid, "key": eid, "ts": ts,
                "msg": "text", "body": text, "store": "in", "queue": True,
                "raw": raw, "data": {"msg_type": "text"}, "rid": "race"}
        cur.execute("SELECT idx, queued, ready FROM parley_ingest(%s::jsonb)",
                    (json.dumps([item]),))
    return cur.fetchall()


@pytest.mark.parametrize("fn", ["parley_ingest_messages", "parley_ingest_plain",
                                "parley_ingest"])
def test_new_user_created_by_a_concurrent_batch_is_found_by_the_second_pass(srv, fn):
    """Two batches bring the first messages of the same new user at once.
    The second waits on the first's uncommitted user, cannot see it once it
    is committed (its snapshot is older), and must store its message under
    that user on its second pass: one user, one conversation, both
    messages and their events."""
    db = sdb(srv)
    uid = "15551238" + str(int(time.time() * 1000) % 1000).zfill(3)
    a, b = db.connect(), db.connect()
    try:
        a.autocommit = False
        got_a = _ingest_one(a.cursor(), fn, uid, f"wamid.RACE.A.{uid}", "first")
        result = {}

        def second():
            try:
                result["rows"] = _ingest_one(b.cursor(), fn, uid, f"wamid.RACE.B.{uid}", "second")
            except Exception as e:  # noqa: BLE001
                result["error"] = e

        pid_b = b.get_backend_pid()
        t = threading.Thread(target=second)
        t.start()
        wait_until(lambda: db.scalar(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
            (pid_b,)) == "Lock", 10, what="the second batch waiting for the first")
        a.commit()
        t.join(20)
        assert not t.is_alive(), "the second batch did not finish"
    finally:
        a.close()
        b.close()
    assert "error" not in result, result
    assert [r[1] for r in got_a] == [True], got_a
    assert [r[1] for r in result["rows"]] == [True], result
    assert db.scalar("SELECT count(*) FROM users WHERE platform_user_id = %s", (uid,)) == 1
    rows = db.query("SELECT m.text, c.user_id = u.id FROM messages m "
                    "JOIN conversations c ON c.id = m.conversation_id "
                    "JOIN users u ON u.platform_user_id = %s ORDER BY m.id", (uid,))
    assert rows == [("first", True), ("second", True)], rows
    assert db.scalar("SELECT count(DISTINCT conversation_id) FROM messages m "
                     "JOIN conversations c ON c.id = m.conversation_id "
                     "JOIN users u ON u.id = c.user_id WHERE u.platform_user_id = %s",
                     (uid,)) == 1
    assert db.scalar("SELECT count(*) FROM events e JOIN users u ON u.id = e.user_id "
                     "WHERE u.platform_user_id = %s AND e.type = 'message_received'",
                     (uid,)) == 2


def test_loadgen_status_ratio_mixes_status_webhooks_with_messages(srv):
    """loadgen --status-ratio (the mixed load of docs/PERFORMANCE.md, "The
    message ingest"): that share of its webhooks are WhatsApp delivery
    statuses, each stored as one event; the rest are messages."""
    db = sdb(srv)
    d = fakes.loadgen(srv.url("/webhooks/whatsapp"), secret=harness.APP_SECRET,
                      connections=8, requests=200, status_ratio=0.5, users=20,
                      seed=7)
    assert d["completed"] == 200, d
    by_type = dict(db.query("SELECT type, count(*) FROM events GROUP BY 1"))
    msgs = db.scalar("SELECT count(*) FROM messages")
    assert set(by_type) == {"message_received", "delivered"}, by_type
    assert by_type["delivered"] + msgs == 200, (by_type, msgs)
    assert by_type["message_received"] == msgs
    assert 60 <= by_type["delivered"] <= 140, by_type


def test_loadgen_status_ratio_sends_messenger_read_receipts(srv):
    """loadgen --platform messenger --status-ratio: that share of its
    webhooks are read receipts, each its own watermark, stored as one
    event (by parley_ingest_plain() when a batch holds no other kind)."""
    db = sdb(srv)
    d = fakes.loadgen(srv.url("/webhooks/messenger"), secret=harness.APP_SECRET,
                      platform="messenger", phone_id=harness.PAGE_ID, connections=8,
                      requests=200, status_ratio=0.5, users=20, seed=7)
    assert d["completed"] == 200 and d["responses"] == {"200": 200}, d
    by_type = dict(db.query("SELECT type, count(*) FROM events GROUP BY 1"))
    msgs = db.scalar("SELECT count(*) FROM messages")
    assert set(by_type) == {"message_received", "read"}, by_type
    assert by_type["read"] + msgs == 200, (by_type, msgs)
    assert 60 <= by_type["read"] <= 140, by_type
    assert db.scalar("SELECT count(DISTINCT data->>'watermark_ms') FROM events "
                     "WHERE type = 'read'") == by_type["read"]


def test_platform_not_configured_404(parley):
    p = parley(env={"PARLEY_META_APP_SECRET": None}, args=("serve", "--no-workers"))
    for plat, body in (("whatsapp", harness.wa_text("wamid.NOCFG", "15551230003", "x")),
                       ("messenger", harness.ms_text("m_NOCFG", "7001", "x")),
                       ("instagram", harness.ig_text("ig_NOCFG", "8001", "x"))):
        r = p.post_webhook(plat, body)
        assert r.status == 404, f"{plat}: {r}"
    assert total_rows(parley.db) == 0


@pytest.mark.parametrize("body", [
    b'{"object": "whatsapp_business_account", "entry": [',
    b"hello",
    b"",
    b'{"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": []}]} trailing',
    b"\xff\xfe{}",
], ids=["truncated", "not_json", "empty", "trailing_garbage", "bad_utf8"])
def test_malformed_json_400_and_nothing_stored(srv, body):
    r = srv.post_webhook("whatsapp", body)
    assert r.status == 400, r
    assert total_rows(sdb(srv)) == 0, row_counts(sdb(srv))
    assert srv.alive()


def test_unknown_fields_are_stored_not_rejected(srv):
    body = {"object": "whatsapp_business_account",
            "entry": [{"id": harness.WA_WABA_ID, "changes": [
                {"field": "account_update_from_the_future",
                 "value": {"phone_number": "15550001111", "event": "SOMETHING_NEW"}}]}]}
    r = srv.post_webhook("whatsapp", body)
    assert r.status == 200, r
    assert sdb(srv).scalar("SELECT count(*) FROM events WHERE type = 'unknown'") == 1


# --------------------------------------------------------------------------
# Concurrency and dedupe

def _post_at_once(srv, n_threads, posts_per_thread, body_of):
    """n_threads threads, released together, each POST body_of(t, k) for
    k < posts_per_thread; every answer's status (or the error)."""
    results = []
    lock = threading.Lock()
    start = threading.Barrier(n_threads)

    def poster(t):
        try:
            start.wait(timeout=30)
        except threading.BrokenBarrierError:
            pass
        for k in range(posts_per_thread):
            body = json.dumps(body_of(t, k)).encode()
            try:
                st = harness.post_webhook(srv.base_url, "whatsapp", body, timeout=60).status
            except OSError as e:
                st = repr(e)
            with lock:
                results.append(st)

    threads = [threading.Thread(target=poster, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not any(th.is_alive() for th in threads), "posters hung"
    return results


def test_50_concurrent_posters_of_overlapping_duplicates(parley):
    srv = parley(args=("serve", "--no-workers"))
    db = parley.db
    n_msgs, n_threads, posts_per_thread, batch = 100, 50, 4, 5
    msgs = [harness.wa_message(f"wamid.CONC{i:03d}", f"1555200{i % 20:04d}", f"message {i}",
                               ts=1767225600 + i)
            for i in range(n_msgs)]
    results = _post_at_once(srv, n_threads, posts_per_thread, lambda t, k: harness.wa_envelope(
        [msgs[(t * 2 + k * batch + j) % n_msgs] for j in range(batch)]))
    bad = Counter(s for s in results if s != 200)
    assert not bad, f"non-200 answers: {bad}"
    assert len(results) == n_threads * posts_per_thread

    counts = dict(db.query("SELECT platform_message_id, count(*) FROM messages "
                           "WHERE platform = 'whatsapp' GROUP BY 1"))
    want = {m["id"] for m in msgs}
    assert set(counts) == want, f"missing {sorted(want - set(counts))[:10]}"
    dup = {k: v for k, v in counts.items() if v != 1}
    assert not dup, f"messages stored more than once: {dup}"
    ev = dict(db.query("SELECT platform_event_id, count(*) FROM events "
                       "WHERE type = 'message_received' GROUP BY 1"))
    assert set(ev) == want and all(v == 1 for v in ev.values()), \
        {k: v for k, v in ev.items() if v != 1}
    assert db.scalar("SELECT count(*) FROM users WHERE platform = 'whatsapp'") == 20
    assert db.scalar("SELECT count(*) FROM conversations") == 20


def test_concurrent_posters_of_overlapping_statuses_and_messages(parley):
    """Webhooks of messages and delivery statuses (the batches
    parley_ingest_plain() stores), posted at once by 40 threads with
    overlapping duplicates: every message and every status is stored once,
    and each of our messages ends at its highest status, whatever order
    the statuses were stored in."""
    srv = parley(args=("serve", "--no-workers"))
    db = parley.db
    users = [f"1555300{u:04d}" for u in range(20)]
    for u in users:
        assert srv.post_webhook("whatsapp", harness.wa_text(f"wamid.HELLO{u}", u, "hi")).status == 200
    for u in users:
        db.execute("INSERT INTO messages (conversation_id, direction, platform, "
                   "platform_message_id, kind, text, status, status_rank, sent_at) "
                   "SELECT c.id, 'out', 'whatsapp', %s, 'text', 'hello', 'sent', 1, now() "
                   "FROM conversations c JOIN users x ON x.id = c.user_id "
                   "WHERE x.platform_user_id = %s", (f"wamid.OUT{u}", u))
    n, n_threads, posts_per_thread, batch = 120, 40, 4, 6
    kinds = ("sent", "delivered", "read")
    msgs = [harness.wa_message(f"wamid.CM{i:03d}", users[i % 20], f"m {i}", ts=1767225600 + i)
            for i in range(n)]
    # Status i reports on user i % 20's message; over i, each of our
    # messages gets all three kinds.
    statuses = [harness.wa_status(f"wamid.OUT{users[i % 20]}", kinds[i % 3], users[i % 20],
                                  1767225600 + i) for i in range(n)]
    def body_of(t, k):
        idx = [(t * 3 + k * batch + j) % n for j in range(batch)]
        return harness.wa_envelope([msgs[i] for i in idx[:2]], [statuses[i] for i in idx])

    results = _post_at_once(srv, n_threads, posts_per_thread, body_of)
    assert Counter(results) == Counter({200: n_threads * posts_per_thread}), Counter(results)
    by_fn = _batches_by_function(srv)
    assert by_fn["parley_ingest_plain"] > 0, by_fn

    posted = {(s["id"], s["status"]) for i, s in enumerate(statuses)
              if any((t * 3 + k * batch + j) % n == i for t in range(n_threads)
                     for k in range(posts_per_thread) for j in range(batch))}
    ev = db.query("SELECT ref_platform_message_id, type, count(*), "
                  "bool_and(message_id IS NOT NULL) FROM events "
                  "WHERE type IN ('sent', 'delivered', 'read') GROUP BY 1, 2")
    assert {(r[0], r[1]) for r in ev} == posted
    assert all(r[2] == 1 for r in ev), [r for r in ev if r[2] != 1]
    assert all(r[3] for r in ev), "a status not linked to our message"
    final = dict(db.query("SELECT platform_message_id, status FROM messages "
                          "WHERE direction = 'out'"))
    want = {}
    for sid, kind in posted:
        if kinds.index(kind) > kinds.index(want.get(sid, "sent")):
            want[sid] = kind
    assert final == {f"wamid.OUT{u}": want.get(f"wamid.OUT{u}", "sent") for u in users}
    stored = dict(db.query("SELECT platform_message_id, count(*) FROM messages "
                           "WHERE platform_message_id LIKE 'wamid.CM%%' GROUP BY 1"))
    assert all(v == 1 for v in stored.values()), stored


# --------------------------------------------------------------------------
# Status ranking

def test_late_delivered_never_overwrites_read(srv):
    db = sdb(srv)
    user = "15551239999"
    assert srv.post_webhook("whatsapp", harness.wa_text("wamid.USERMSG1", user, "hi")).status == 200
    conv = db.scalar("SELECT id FROM conversations")
    assert conv is not None
    for wamid in ("wamid.OUT1", "wamid.OUT2"):
        db.execute("INSERT INTO messages (conversation_id, direction, platform, "
                   "platform_message_id, kind, text, status, status_rank, sent_at) "
                   "VALUES (%s, 'out', 'whatsapp', %s, 'text', 'bot says hi', 'sent', 1, "
                   "now())", (conv, wamid))

    def post_status(wamid, status, ts):
        body = harness.wa_envelope(statuses=[harness.wa_status(wamid, status, user, ts)])
        r = srv.post_webhook("whatsapp", body)
        assert r.status == 200, r

    t = int(time.time())
    post_status("wamid.OUT1", "read", t + 2)
    post_status("wamid.OUT1", "delivered", t + 1)   # late
    post_status("wamid.OUT2", "delivered", t + 1)
    post_status("wamid.OUT2", "read", t + 2)
    # Both in one POST, the lower rank last.
    body = harness.wa_envelope(statuses=[harness.wa_status("wamid.OUT3", "read", user, t + 2),
                                         harness.wa_status("wamid.OUT3", "delivered", user, t + 1)])
    db.execute("INSERT INTO messages (conversation_id, direction, platform, "
               "platform_message_id, kind, text, status, status_rank, sent_at) "
               "VALUES (%s, 'out', 'whatsapp', 'wamid.OUT3', 'text', 'x', 'sent', 1, now())",
               (conv,))
    assert srv.post_webhook("whatsapp", body).status == 200

    st = dict(db.query("SELECT platform_message_id, status FROM messages WHERE direction = 'out'"))
    assert st == {"wamid.OUT1": "read", "wamid.OUT2": "read", "wamid.OUT3": "read"}, st
    ev = Counter((a, b) for a, b in db.query(
        "SELECT ref_platform_message_id, type FROM events WHERE type IN ('delivered', 'read')"))
    for wamid in ("wamid.OUT1", "wamid.OUT2", "wamid.OUT3"):
        assert ev[(wamid, "read")] == 1 and ev[(wamid, "delivered")] == 1, dict(ev)
    # Status events are linked to the outbound message they report on.
    unlinked = db.scalar("SELECT count(*) FROM events WHERE type IN ('delivered', 'read') "
                         "AND message_id IS NULL")
    assert unlinked == 0


def test_messages_of_one_webhook_get_ids_in_its_order(srv):
    """A webhook's messages get ids, which set the order they are answered
    in, in the webhook's order, also when their platform ids sort the
    other way; a retry mixed with a new message stores only the new one,
    after them. (Guards any change to how parley_ingest() inserts them,
    e.g. the key-ordered insert docs/performance-history.md measured ("The lean ingest").)"""
    db = sdb(srv)
    user = "15551237777"
    mids = ["wamid.ORD.Z", "wamid.ORD.A", "wamid.ORD.M"]
    body = harness.wa_envelope(messages=[harness.wa_message(m, user, f"part {i}")
                                         for i, m in enumerate(mids)])
    assert srv.post_webhook("whatsapp", body).status == 200
    got = [r[0] for r in db.query("SELECT platform_message_id FROM messages ORDER BY id")]
    assert got == mids, got
    # Retried together with a new one: only the new one is stored, after them.
    body = harness.wa_envelope(messages=[harness.wa_message(m, user, "again")
                                         for m in ["wamid.ORD.B"] + mids])
    assert srv.post_webhook("whatsapp", body).status == 200
    got = [r[0] for r in db.query("SELECT platform_message_id FROM messages ORDER BY id")]
    assert got == mids + ["wamid.ORD.B"], got


def test_message_deduplicated_by_its_row_after_keys_are_pruned(srv):
    """An inbound message is deduplicated by its own messages row, not by an
    inbound_keys row: a retry stays a duplicate after the keys are pruned
    (14 days), while a status, which has only its key, is new again."""
    db = sdb(srv)
    user = "15551238888"
    msg = harness.wa_text("wamid.KEEP1", user, "hello")
    assert srv.post_webhook("whatsapp", msg).status == 200
    assert db.scalar("SELECT count(*) FROM inbound_keys") == 0
    conv = db.scalar("SELECT id FROM conversations")
    db.execute("INSERT INTO messages (conversation_id, direction, platform, "
               "platform_message_id, kind, text, status, status_rank, sent_at) "
               "VALUES (%s, 'out', 'whatsapp', 'wamid.BOT1', 'text', 'hi', 'sent', 1, "
               "now())", (conv,))
    t = int(time.time())
    status = harness.wa_envelope(statuses=[harness.wa_status("wamid.BOT1", "read", user, t)])
    assert srv.post_webhook("whatsapp", status).status == 200
    assert db.scalar("SELECT count(*) FROM inbound_keys") == 1
    before = row_counts(db)

    db.execute("DELETE FROM inbound_keys")  # what the 14-day prune does
    assert srv.post_webhook("whatsapp", msg).status == 200
    after = row_counts(db)
    before["inbound_keys"] = 0
    assert after == before, f"a retried message changed rows: {before} -> {after}"

    assert srv.post_webhook("whatsapp", status).status == 200
    assert db.scalar("SELECT count(*) FROM events WHERE type = 'read'") == 2
    assert db.scalar("SELECT count(*) FROM events WHERE type = 'message_received'") == 1


# --------------------------------------------------------------------------
# PostgreSQL outage (last in the module: the shared server sees it too)

def test_postgres_down_503_with_retry_after_then_recovers(parley, pg_restore):
    pg = pg_restore
    p = parley(args=("serve", "--no-workers"))
    body = _wa_body("wamid.OUTAGE1", "during the outage")
    assert p.post_webhook("whatsapp", _wa_body("wamid.BEFORE1")).status == 200
    pg.stop()
    r = p.post_webhook("whatsapp", body, timeout=30)
    assert r.status == 503, r
    ra = r.header("Retry-After")
    assert ra is not None and ra.strip().isdigit(), f"Retry-After {ra!r}"
    assert p.alive()
    pg.start()
    wait_until(lambda: p.get("/readyz", timeout=3).status == 200, 10, interval=0.1,
               what="/readyz 200 after restart")
    r = p.post_webhook("whatsapp", body)
    assert r.status == 200, f"first POST after PostgreSQL came back: {r}"
    # Concurrent POSTs use every pooled connection: none may fail on a
    # connection that died with the old server.
    bodies = [_wa_body(f"wamid.AFTER{i}", f"after {i}") for i in range(12)]
    with ThreadPoolExecutor(max_workers=8) as ex:
        statuses = list(ex.map(lambda b: p.post_webhook("whatsapp", b).status, bodies))
    assert statuses == [200] * len(bodies), statuses
    ids = sorted(x[0] for x in parley.db.query("SELECT platform_message_id FROM messages"))
    assert ids == sorted(["wamid.BEFORE1", "wamid.OUTAGE1"] +
                         [f"wamid.AFTER{i}" for i in range(12)]), ids




def test_first_post_after_an_unobserved_restart_is_200(parley, pg_restore):
    # PostgreSQL restarts while Parley is idle: every pooled connection is
    # dead but nobody noticed. The next webhooks must still be stored.
    pg = pg_restore
    p = parley(args=("serve", "--no-workers"))
    bodies = [_wa_body(f"wamid.WARM{i}", f"warm {i}") for i in range(8)]
    with ThreadPoolExecutor(max_workers=8) as ex:   # fill the pool
        assert list(ex.map(lambda b: p.post_webhook("whatsapp", b).status, bodies)) == [200] * 8
    pg.stop()
    pg.start()
    r = p.post_webhook("whatsapp", _wa_body("wamid.COLD1", "after restart"))
    assert r.status == 200, f"first POST after a PostgreSQL restart: {r}"
    bodies = [_wa_body(f"wamid.COLD{i}", f"cold {i}") for i in range(2, 14)]
    with ThreadPoolExecutor(max_workers=8) as ex:
        statuses = list(ex.map(lambda b: p.post_webhook("whatsapp", b).status, bodies))
    assert statuses == [200] * len(bodies), statuses
    assert parley.db.scalar("SELECT count(*) FROM messages") == 8 + 13


def test_late_answer_is_logged_and_still_stored(parley):
    """A commit that waits (here on a table lock held for 6 s) delays the
    200; the platform may retry meanwhile. The webhook is still stored and
    answered 200, and the log says the batch was slow and the answer late."""
    srv = parley(args=("serve", "--no-workers"))
    db = parley.db
    holder = db.connect()
    holder.autocommit = False
    cur = holder.cursor()
    cur.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
    release = threading.Timer(6.0, holder.commit)
    release.start()
    try:
        body = json.dumps(harness.wa_text("wamid.LATE1", "15552000999", "slow one")).encode()
        t0 = time.monotonic()
        r = harness.post_webhook(srv.base_url, "whatsapp", body, timeout=60)
        waited = time.monotonic() - t0
    finally:
        release.join()
        holder.close()
    assert r.status == 200 and waited >= 5.0, (r.status, waited)
    assert db.scalar("SELECT count(*) FROM messages WHERE platform_message_id = 'wamid.LATE1'") == 1
    wait_until(lambda: "webhook answered late" in srv.log_text(), 5,
               what="the late answer in the log")
    log = srv.log_text()
    assert "slow ingest batch" in log and "status=ok" in log, log[-2000:]


def test_role_without_the_flush_function_still_stores_every_webhook(parley, pg):
    """Ingest commits without waiting for its flush, so that the pool can
    claim at once, and answers 200 only after a second transaction in the
    same round trip has flushed it; that transaction calls
    pg_logical_emit_message(). A role that may not call it (revoked by an
    administrator) gets the synchronous commit instead, from the first
    webhook on: every one answered 200 and stored, and the log says so
    once. A superuser (the other tests) never sees the warning."""
    db = parley.db
    url = harness.role_without_the_flush_function(db, pg.port)
    srv = parley(env={"PARLEY_DATABASE_URL": url}, args=("serve", "--no-workers"))
    statuses = [srv.post_webhook("whatsapp", _wa_body(f"wamid.NOFLUSH{i}", f"m {i}")).status
                for i in range(3)]
    assert statuses == [200] * 3, statuses
    assert db.scalar("SELECT count(*) FROM messages WHERE platform_message_id"
                     " LIKE 'wamid.NOFLUSH%%'") == 3
    log = srv.log_text()
    assert log.count("the pool claims after the flush") == 1, log[-2000:]
    assert "ingest batch failed" not in log, log[-2000:]
    # The same database and webhooks as a superuser: no warning, and the
    # retries are acknowledged as duplicates.
    su = parley(args=("serve", "--no-workers"), migrate=False)
    assert [su.post_webhook("whatsapp", _wa_body(f"wamid.NOFLUSH{i}", f"m {i}")).status
            for i in range(3)] == [200] * 3
    assert db.scalar("SELECT count(*) FROM messages") == 3
    assert "the pool claims after the flush" not in su.log_text()
