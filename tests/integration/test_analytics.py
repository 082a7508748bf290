"""End-to-end tests of the engagement, feedback and ad-signal log (issue 5,
point 12): the real `parley` binary with PostgreSQL and the fake LLM/Graph
API (tests/fakes/fakeup.c). Every assertion is on rows in PostgreSQL (and on
what the fake recorded Parley sending):

  * a scripted WhatsApp conversation: a click-to-WhatsApp referral on the
    first message, the reply, its statuses (including one that arrives
    before the send API answered), a reaction added and removed, a 👍
    feedback button click and a STOP opt-out, each event linked to the
    response it concerns;
  * ad signals under the per-platform data-use policy: a shopping query
    leaves the expected category and intents, a sensitive query leaves no
    per-user signal (only a user-less aggregate);
  * `parley erase`: afterwards no row of any table mentions the user.
"""

import json
import re
import time

import harness
from harness import WA_PHONE_ID, wait_until

MODEL = "fake-model-analytics"
SYSTEM_PROMPT = "You are the Parley analytics test bot. Answer briefly."
WAIT = 15  # seconds: every bounded wait on the database or the fake

SHOPPING_TEXT = "I want to buy cheap running shoes, what's the price?"
SENSITIVE_TEXT = "I have diabetes, what should I eat?"
MIXED_TEXT = "I have diabetes, where can I buy cheap running shoes?"
THUMBS_UP = "\U0001F44D"


# --------------------------------------------------------------------------
# helpers: Parley, the fake, webhook bodies

def start(parley, fake, env=None):
    """parley serve wired to the fake, with test-friendly timings."""
    e = harness.fake_env(fake, MODEL, SYSTEM_PROMPT, **(env or {}))
    return parley(env=e)


def post(p, platform, body):
    r = p.post_webhook(platform, body)
    assert r.status == 200, f"webhook {platform}: {r}"
    return r


def now_ts():
    return str(int(time.time()))


def wa_msg(mid, phone, text=None, bsuid=None, referral=None, context_id=None,
           extra=None):
    """One WhatsApp message item (text unless `extra` gives another type)."""
    m = {"from": phone, "id": mid, "timestamp": now_ts(), "type": "text"}
    if bsuid:
        m["from_user_id"] = bsuid
    if text is not None:
        m["text"] = {"body": text}
    if referral:
        m["referral"] = referral
    if context_id:
        m["context"] = {"from": "15550001111", "id": context_id}
    m.update(extra or {})
    return m


def wa_body(messages=(), statuses=(), bsuid=None):
    contacts = None
    if messages:
        phone = messages[0]["from"]
        c = {"profile": {"name": "Test " + phone[-4:]}, "wa_id": phone}
        if bsuid:
            c["user_id"] = bsuid
        contacts = [c]
    return harness.wa_envelope(list(messages), list(statuses), contacts=contacts)


def wa_reaction(mid, phone, target, emoji, bsuid=None):
    return wa_msg(mid, phone, bsuid=bsuid,
                  extra={"type": "reaction",
                         "reaction": {"message_id": target, "emoji": emoji}})


def wa_button_reply(mid, phone, target, button_id, title, bsuid=None):
    return wa_msg(mid, phone, bsuid=bsuid, context_id=target,
                  extra={"type": "interactive",
                         "interactive": {"type": "button_reply",
                                         "button_reply": {"id": button_id,
                                                          "title": title}}})


def wa_status(wamid, status, phone, bsuid=None):
    s = {"id": wamid, "status": status, "timestamp": now_ts(),
         "recipient_id": phone}
    if bsuid:
        s["recipient_user_id"] = bsuid
    return s


def is_send(rec):
    """A Graph request that sends a message (not mark-as-read / typing)."""
    b = rec.get("body")
    if rec.get("method") != "POST" or not isinstance(b, dict):
        return False
    if "messaging_product" in b:
        return b.get("status") != "read" and ("to" in b or "recipient" in b)
    return isinstance(b.get("message"), dict)


def sends(fake, recipient=None, since=None):
    """Accepted sends (HTTP 200), optionally to one recipient / after a seq."""
    out = []
    for r in fake.requests("graph", since=since):
        if not is_send(r) or r.get("status") != 200:
            continue
        b = r["body"]
        to = b.get("to") or b.get("recipient")
        if isinstance(to, dict):
            to = to.get("id")
        if recipient is not None and to != recipient:
            continue
        out.append(r)
    return out


def llm_calls(fake, since=None):
    return [r for r in fake.requests("llm", since=since) if isinstance(r.get("body"), dict)]


def last_seq(fake):
    reqs = fake.requests()
    return reqs[-1]["seq"] if reqs else 0


def wait_reply_state(db, mid, states=("answered",), timeout=WAIT):
    """Wait until inbound message `mid` has left 'pending'; assert its state."""
    def done():
        return db.scalar("SELECT reply_state FROM messages WHERE platform_message_id = %s "
                         "AND direction = 'in'", (mid,)) not in (None, "pending")
    wait_until(done, timeout, interval=0.1, what=f"inbound {mid} to leave 'pending'")
    st = db.scalar("SELECT reply_state FROM messages WHERE platform_message_id = %s", (mid,))
    assert st in states, f"inbound {mid}: reply_state {st!r}, expected one of {states}"
    return st


def bot_reply(db, inbound_mid):
    """(response id, outbound message id, wamid) of the reply to inbound_mid,
    waiting until the outbound message has its platform id."""
    def get():
        rows = db.query(
            "SELECT r.id, o.id, o.platform_message_id FROM messages i "
            "JOIN responses r ON r.id = i.response_id "
            "JOIN messages o ON o.response_id = r.id AND o.direction = 'out' "
            "WHERE i.platform_message_id = %s AND o.platform_message_id IS NOT NULL "
            "ORDER BY o.part", (inbound_mid,))
        return rows
    rows = wait_until(get, WAIT, interval=0.1, what=f"the recorded reply to {inbound_mid}")
    assert len(rows) == 1, f"expected one outbound part, got {rows}"
    return rows[0]


def events(db, etype, **where):
    """Rows of events of one type as dicts, optionally filtered by columns."""
    cols = ["id", "type", "platform", "channel", "user_id", "user_pseudonym",
            "conversation_id", "message_id", "response_id", "platform_event_id",
            "ref_platform_message_id", "request_id", "data", "occurred_at"]
    sql = f"SELECT {', '.join(cols)} FROM events WHERE type = %s"
    params = [etype]
    for k, v in where.items():
        sql += f" AND {k} = %s"
        params.append(v)
    rows = db.query(sql + " ORDER BY id", params)
    return [dict(zip(cols, r)) for r in rows]


def user_row(db, platform, platform_user_id):
    rows = db.query("SELECT id, pseudonym, phone, opted_out_at FROM users "
                    "WHERE platform = %s AND platform_user_id = %s",
                    (platform, platform_user_id))
    assert len(rows) == 1, f"users rows for {platform}/{platform_user_id}: {rows}"
    return dict(zip(("id", "pseudonym", "phone", "opted_out_at"), rows[0]))


def wamid_number(wamid):
    m = re.fullmatch(r"wamid\.FAKE(\d+)", wamid or "")
    assert m, f"outbound id {wamid!r} is not the fake's wamid.FAKE<n>"
    return int(m.group(1))


# --------------------------------------------------------------------------
# 1. the scripted WhatsApp conversation

def test_referral_reply_statuses_and_reactions_are_linked(parley, fake):
    p = start(parley, fake)
    db = parley.db
    user = "15557100001"
    referral = {"source_url": "https://fb.me/fakeAdAnalytics",
                "source_id": "120200000000777001", "source_type": "ad",
                "headline": "Spring running sale", "body": "20% off shoes",
                "media_type": "image", "image_url": "https://scontent.example/a.jpg",
                "ctwa_clid": "ARAkANALYTICSCLID"}
    post(p, "whatsapp", wa_body([wa_msg("wamid.AN1", user, "Hi, I saw your ad",
                                        referral=referral)]))
    wait_reply_state(db, "wamid.AN1")
    rid, out_id, wamid = bot_reply(db, "wamid.AN1")
    wamid_number(wamid)
    u = user_row(db, "whatsapp", user)
    conv = db.scalar("SELECT id FROM conversations WHERE user_id = %s", (u["id"],))
    in_id = db.scalar("SELECT id FROM messages WHERE platform_message_id = 'wamid.AN1'")

    # -- the referral: one attribution row, one event, linked
    refs = db.query("SELECT conversation_id, message_id, platform, source_type, source_id, "
                    "source_url, headline, ctwa_clid, ad_id FROM referrals")
    assert refs == [(conv, in_id, "whatsapp", "ad", "120200000000777001",
                     "https://fb.me/fakeAdAnalytics", "Spring running sale",
                     "ARAkANALYTICSCLID", "120200000000777001")], refs
    ev = events(db, "referral")
    assert len(ev) == 1, ev
    assert ev[0]["conversation_id"] == conv and ev[0]["message_id"] == in_id, ev
    assert ev[0]["user_id"] == u["id"] and ev[0]["user_pseudonym"] == u["pseudonym"], ev
    assert ev[0]["ref_platform_message_id"] == "wamid.AN1", ev
    assert (ev[0]["data"] or {}).get("referral", {}).get("ctwa_clid") == "ARAkANALYTICSCLID", ev
    recv = events(db, "message_received", message_id=in_id)
    assert len(recv) == 1, recv
    assert recv[0]["data"]["referral"]["source_id"] == "120200000000777001", recv[0]["data"]

    # -- the reply: what the fake recorded, and the message_sent event
    s = sends(fake, user)
    assert len(s) == 1, s
    assert s[0]["body"]["text"]["body"].strip() == "Echo: Hi, I saw your ad", s[0]["body"]
    sent_ev = events(db, "message_sent")
    assert len(sent_ev) == 1, sent_ev
    e = sent_ev[0]
    assert e["ref_platform_message_id"] == wamid, e
    assert e["response_id"] == rid and e["message_id"] == out_id, e
    assert e["conversation_id"] == conv and e["user_pseudonym"] == u["pseudonym"], e
    assert e["platform"] == "whatsapp" and e["channel"] == WA_PHONE_ID, e
    for t in ("llm_request", "response_generated"):
        got = events(db, t)
        assert [x["response_id"] for x in got] == [rid], (t, got)

    # -- statuses: sent, read, then a late delivered (first seen after read)
    for status, expect in (("sent", "sent"), ("read", "read"), ("delivered", "read")):
        post(p, "whatsapp", wa_body(statuses=[wa_status(wamid, status, user)]))
        evs = events(db, status, ref_platform_message_id=wamid)
        assert len(evs) == 1, (status, evs)
        assert evs[0]["response_id"] == rid, (status, evs[0])
        assert evs[0]["message_id"] == out_id, (status, evs[0])
        assert evs[0]["user_id"] == u["id"], (status, evs[0])
        got = db.scalar("SELECT status FROM messages WHERE id = %s", (out_id,))
        assert got == expect, f"after a '{status}' status: messages.status {got!r}, " \
                              f"expected {expect!r}"
    # A retried 'read' webhook is deduplicated: still one read event.
    post(p, "whatsapp", wa_body(statuses=[wa_status(wamid, "read", user)]))
    assert len(events(db, "read", ref_platform_message_id=wamid)) == 1

    # The read receipt joins, through the outbound id, to the LLM call.
    j = db.query("SELECT r.model, r.completion, r.prompt_tokens, r.completion_tokens, "
                 "r.llm_ms, r.request_messages FROM events e "
                 "JOIN responses r ON r.id = e.response_id "
                 "WHERE e.type = 'read' AND e.ref_platform_message_id = %s", (wamid,))
    assert len(j) == 1, j
    model, completion, pt, ct, llm_ms, reqmsgs = j[0]
    assert model == MODEL and completion.strip() == "Echo: Hi, I saw your ad", j
    assert pt and pt > 0 and ct and ct > 0 and llm_ms is not None, j
    assert "Hi, I saw your ad" in json.dumps(reqmsgs), reqmsgs

    # -- reaction 👍 on the bot message: event + feedback row
    seq = last_seq(fake)
    post(p, "whatsapp", wa_body([wa_reaction("wamid.ANREACT1", user, wamid, THUMBS_UP)]))
    add = events(db, "reaction_added")
    assert len(add) == 1, add
    assert add[0]["response_id"] == rid and add[0]["message_id"] == out_id, add
    assert add[0]["ref_platform_message_id"] == wamid, add
    assert add[0]["data"].get("emoji") == THUMBS_UP, add[0]["data"]
    assert add[0]["data"].get("polarity") == 1, add[0]["data"]
    fb = db.query("SELECT response_id, message_id, conversation_id, user_id, source, "
                  "polarity, emoji, retracted_at FROM feedback")
    assert fb == [(rid, out_id, conv, u["id"], "reaction", 1, THUMBS_UP, None)], fb

    # -- reaction removed (empty emoji): event + feedback retracted
    post(p, "whatsapp", wa_body([wa_reaction("wamid.ANREACT2", user, wamid, "")]))
    rem = events(db, "reaction_removed")
    assert len(rem) == 1, rem
    assert rem[0]["response_id"] == rid and rem[0]["message_id"] == out_id, rem
    fb = db.query("SELECT source, polarity, retracted_at IS NOT NULL FROM feedback")
    assert fb == [("reaction", 1, True)], f"the removed reaction did not retract: {fb}"

    # Reactions are not messages to answer.
    time.sleep(0.6)
    assert not llm_calls(fake, since=seq), "a reaction triggered an LLM call"
    assert not sends(fake, since=seq), "a reaction was answered"
    assert db.scalar("SELECT count(*) FROM messages WHERE direction = 'in'") == 1


def test_status_before_send_answer_is_linked_later(parley, fake):
    p = start(parley, fake)
    db = parley.db
    user = "15557100002"
    post(p, "whatsapp", harness.wa_text("wamid.EARLY1", user, "first question"))
    wait_reply_state(db, "wamid.EARLY1")
    _, _, wamid1 = bot_reply(db, "wamid.EARLY1")
    # The fake numbers every id it hands out from one counter: the next
    # turn's LLM answer takes n+1, its send n+2.
    predicted = f"wamid.FAKE{wamid_number(wamid1) + 2}"

    # A status for the wamid the next send will get, before that send.
    post(p, "whatsapp", wa_body(statuses=[wa_status(predicted, "delivered", user)]))
    early = events(db, "delivered", ref_platform_message_id=predicted)
    assert len(early) == 1, early
    assert early[0]["response_id"] is None and early[0]["message_id"] is None, early

    post(p, "whatsapp", harness.wa_text("wamid.EARLY2", user, "second question"))
    wait_reply_state(db, "wamid.EARLY2")
    rid2, out2, wamid2 = bot_reply(db, "wamid.EARLY2")
    assert wamid2 == predicted, (
        f"test assumption broken: the fake returned {wamid2}, not {predicted}")

    linked = events(db, "delivered", ref_platform_message_id=predicted)
    assert len(linked) == 1, linked
    assert linked[0]["response_id"] == rid2, \
        f"early status not linked to the response when the reply was recorded: {linked[0]}"
    assert linked[0]["message_id"] == out2, linked[0]
    assert db.scalar("SELECT status FROM messages WHERE id = %s", (out2,)) == "delivered", \
        "the early 'delivered' status was not applied to the outbound message"
    sent = events(db, "message_sent", ref_platform_message_id=predicted)
    assert [e["response_id"] for e in sent] == [rid2], sent


def test_feedback_button_click_is_feedback_on_the_response(parley, fake):
    p = start(parley, fake, env={"PARLEY_FEEDBACK": "all"})
    db = parley.db
    user = "15557100003"
    post(p, "whatsapp", harness.wa_text("wamid.FB1", user, "Is this helpful?"))
    wait_reply_state(db, "wamid.FB1")
    rid, out_id, wamid = bot_reply(db, "wamid.FB1")
    u = user_row(db, "whatsapp", user)

    # The reply carried our two thumbs buttons with the response id.
    s = sends(fake, user)
    assert len(s) == 1, s
    b = s[0]["body"]
    assert b.get("type") == "interactive", f"reply without feedback buttons: {b}"
    assert b["interactive"]["type"] == "button", b
    assert b["interactive"]["body"]["text"].strip() == "Echo: Is this helpful?", b
    ids = [x["reply"]["id"] for x in b["interactive"]["action"]["buttons"]]
    assert ids == [f"parley_fb:up:{rid}", f"parley_fb:down:{rid}"], ids

    # The user taps 👍.
    seq = last_seq(fake)
    post(p, "whatsapp", wa_body([wa_button_reply("wamid.FBCLICK1", user, wamid,
                                                 f"parley_fb:up:{rid}", THUMBS_UP)]))
    ev = events(db, "feedback")
    assert len(ev) == 1, ev
    assert ev[0]["response_id"] == rid and ev[0]["message_id"] == out_id, ev
    assert ev[0]["user_id"] == u["id"], ev
    assert ev[0]["data"].get("payload") == f"parley_fb:up:{rid}", ev[0]["data"]
    fb = db.query("SELECT response_id, message_id, user_id, source, polarity, retracted_at "
                  "FROM feedback")
    assert fb == [(rid, out_id, u["id"], "button", 1, None)], fb
    assert not events(db, "button_clicked"), "our own feedback button logged as a plain click"

    # A click naming a response of somebody else's conversation is not
    # feedback on it.
    other = "15557100004"
    post(p, "whatsapp", wa_body([wa_button_reply("wamid.FBFORGED", other, wamid,
                                                 f"parley_fb:down:{rid}", "x")]))
    wait_until(lambda: len(events(db, "feedback")) == 2, WAIT, what="the forged click's event")
    fb = db.query("SELECT user_id, polarity FROM feedback ORDER BY id")
    assert fb == [(u["id"], 1)], f"feedback accepted from another user: {fb}"

    # A thumbs click is not a question: no LLM call, no reply.
    time.sleep(0.6)
    assert not llm_calls(fake, since=seq), "a feedback click triggered an LLM call"
    assert not sends(fake, since=seq), "a feedback click was answered"


def test_stop_opts_out_confirms_once_then_silence(parley, fake):
    p = start(parley, fake, env={"PARLEY_AD_SIGNALS": "whatsapp=user"})
    db = parley.db
    user = "15557100005"
    post(p, "whatsapp", harness.wa_text("wamid.OPT1", user, SHOPPING_TEXT))
    wait_reply_state(db, "wamid.OPT1")
    u = user_row(db, "whatsapp", user)
    assert u["opted_out_at"] is None
    # Positive control: before the opt-out this query gives signals.
    assert db.scalar("SELECT count(*) FROM interest_signals WHERE user_id = %s",
                     (u["id"],)) > 0, "no interest signal for a shopping query"
    agg_before = db.scalar("SELECT coalesce(sum(count), 0) FROM interest_aggregates")

    seq = last_seq(fake)
    post(p, "whatsapp", harness.wa_text("wamid.OPTSTOP", user, "STOP"))
    wait_reply_state(db, "wamid.OPTSTOP", states=("answered",))
    u = user_row(db, "whatsapp", user)
    assert u["opted_out_at"] is not None, "STOP did not set users.opted_out_at"
    oo = events(db, "opt_out")
    assert len(oo) == 1, oo
    assert oo[0]["user_id"] == u["id"] and oo[0]["user_pseudonym"] == u["pseudonym"], oo
    wait_until(lambda: sends(fake, user, since=seq), WAIT, what="the opt-out confirmation")
    assert not llm_calls(fake, since=seq), "STOP was sent to the LLM"
    kinds = db.query("SELECT kind, status FROM responses ORDER BY id")
    assert kinds == [("llm", "sent"), ("opt_out", "sent")], kinds

    # A second STOP and a question: no further message of any kind.
    post(p, "whatsapp", harness.wa_text("wamid.OPTSTOP2", user, "stop"))
    wait_reply_state(db, "wamid.OPTSTOP2", states=("skipped",))
    post(p, "whatsapp", harness.wa_text("wamid.OPT2", user,
                                        "Where can I buy cheap football boots? Price?"))
    wait_reply_state(db, "wamid.OPT2", states=("skipped",))
    time.sleep(0.6)
    confirmations = sends(fake, user, since=seq)
    assert len(confirmations) == 1, f"{len(confirmations)} messages after STOP: " \
                                    f"{[c['body'] for c in confirmations]}"
    assert not llm_calls(fake, since=seq), "an opted-out user's message reached the LLM"
    assert db.scalar("SELECT count(*) FROM responses") == 2
    assert db.scalar("SELECT count(*) FROM messages WHERE direction = 'out'") == 2
    opt2 = db.scalar("SELECT id FROM messages WHERE platform_message_id = 'wamid.OPT2'")
    assert db.scalar("SELECT count(*) FROM interest_signals WHERE message_id = %s",
                     (opt2,)) == 0, "an opted-out user got interest signals"
    assert db.scalar("SELECT coalesce(sum(count), 0) FROM interest_aggregates") == agg_before, \
        "an opted-out user's message was counted in the ad-signal aggregates"


# --------------------------------------------------------------------------
# 2. ad signals under the data-use policy

def test_ad_signals_user_policy_shopping_and_sensitive(parley, fake):
    p = start(parley, fake, env={"PARLEY_AD_SIGNALS": "whatsapp=user"})
    db = parley.db
    user = "15557200001"
    post(p, "whatsapp", harness.wa_text("wamid.ADS1", user, SHOPPING_TEXT))
    wait_reply_state(db, "wamid.ADS1")
    u = user_row(db, "whatsapp", user)
    m1 = db.scalar("SELECT id FROM messages WHERE platform_message_id = 'wamid.ADS1'")

    rows = db.query("SELECT category, tier, score, intents, platform, conversation_id "
                    "FROM interest_signals WHERE user_id = %s AND message_id = %s",
                    (u["id"], m1))
    cats = {r[0] for r in rows}
    assert cats & {"iab:473", "iab:552"}, f"no Shopping / Style & Fashion signal: {rows}"
    for cat, tier, score, intents, platform, conv in rows:
        assert platform == "whatsapp" and conv is not None, rows
        assert 0 < score <= 1 and tier in (1, 2), rows
        assert "shopping" in intents and "price" in intents, f"intents {intents} of {cat}"
    prof = dict(db.query("SELECT category, score FROM interest_profiles WHERE user_id = %s",
                         (u["id"],)))
    assert cats & set(prof), f"no interest profile row: {prof}"
    assert all(v > 0 for v in prof.values()), prof

    post(p, "whatsapp", harness.wa_text("wamid.ADS2", user, SENSITIVE_TEXT))
    wait_reply_state(db, "wamid.ADS2")
    m2 = db.scalar("SELECT id FROM messages WHERE platform_message_id = 'wamid.ADS2'")
    per_user = db.query("SELECT category FROM interest_signals WHERE message_id = %s", (m2,))
    assert per_user == [], f"a health query left per-user signals: {per_user}"
    bad = db.query("SELECT category FROM interest_signals WHERE user_id = %s "
                   "AND category LIKE 'sensitive:%%' UNION ALL "
                   "SELECT category FROM interest_profiles WHERE user_id = %s "
                   "AND category LIKE 'sensitive:%%'", (u["id"], u["id"]))
    assert bad == [], f"sensitive category stored per user: {bad}"
    prof2 = dict(db.query("SELECT category, score FROM interest_profiles WHERE user_id = %s",
                          (u["id"],)))
    assert set(prof2) == set(prof), f"profile changed by a health query: {prof} -> {prof2}"
    agg = db.query("SELECT category, sensitive, count FROM interest_aggregates "
                   "WHERE platform = 'whatsapp' AND day = current_date ORDER BY category")
    assert ("sensitive:health", True, 1) in agg, f"health not counted in the aggregates: {agg}"
    assert all(not s for c, s, n in agg if not c.startswith("sensitive:")), agg
    assert any(c in ("iab:473", "iab:552") and not s and n == 1 for c, s, n in agg), agg

    # A message mixing a sensitive topic with a shopping one: no per-user
    # signal at all (its harmless categories would still be inferred from
    # a health disclosure); the sensitive part counts only in aggregate.
    post(p, "whatsapp", harness.wa_text("wamid.ADS3", user, MIXED_TEXT))
    wait_reply_state(db, "wamid.ADS3")
    m3 = db.scalar("SELECT id FROM messages WHERE platform_message_id = 'wamid.ADS3'")
    per_user = db.query("SELECT category FROM interest_signals WHERE message_id = %s", (m3,))
    assert per_user == [], f"a query about a sensitive topic left per-user signals: {per_user}"
    prof3 = dict(db.query("SELECT category, score FROM interest_profiles WHERE user_id = %s",
                          (u["id"],)))
    assert prof3 == prof2, f"profile changed by a sensitive query: {prof2} -> {prof3}"
    assert db.scalar("SELECT count FROM interest_aggregates WHERE platform = 'whatsapp' "
                     "AND category = 'sensitive:health' AND sensitive") == 2


def test_ad_signals_default_policy_whatsapp_aggregate_only(parley, fake):
    p = start(parley, fake)  # no PARLEY_AD_SIGNALS: the defaults
    db = parley.db
    post(p, "whatsapp", harness.wa_text("wamid.ADD1", "15557200002", SHOPPING_TEXT))
    wait_reply_state(db, "wamid.ADD1")
    assert db.query("SELECT user_id, category FROM interest_signals") == [], \
        "WhatsApp's default policy is aggregate-only, yet per-user signals were stored"
    assert db.query("SELECT user_id, category FROM interest_profiles") == []
    agg = db.query("SELECT category, sensitive, count FROM interest_aggregates "
                   "WHERE platform = 'whatsapp'")
    assert any(c in ("iab:473", "iab:552") and not s and n == 1 for c, s, n in agg), \
        f"the shopping query was not counted in the aggregates: {agg}"


def test_ad_signals_default_policy_messenger_per_user(parley, fake):
    p = start(parley, fake)  # no PARLEY_AD_SIGNALS: the defaults
    db = parley.db
    psid = "7100000000099"
    post(p, "messenger", harness.ms_text("m_ADSMS1", psid, SHOPPING_TEXT))
    wait_reply_state(db, "m_ADSMS1")
    u = user_row(db, "messenger", psid)
    rows = db.query("SELECT category, intents, platform FROM interest_signals "
                    "WHERE user_id = %s", (u["id"],))
    assert {r[0] for r in rows} & {"iab:473", "iab:552"}, \
        f"Messenger's default policy is per-user, but no signal: {rows}"
    assert all(r[2] == "messenger" and "shopping" in r[1] and "price" in r[1]
               for r in rows), rows
    assert db.scalar("SELECT count(*) FROM interest_profiles WHERE user_id = %s",
                     (u["id"],)) > 0
    assert db.scalar("SELECT count(*) FROM interest_aggregates WHERE platform = "
                     "'messenger'") > 0


def test_rephrased_question_is_an_implicit_signal_on_the_previous_response(parley, fake):
    p = start(parley, fake)
    db = parley.db
    psid = "7100000000123"
    post(p, "messenger", harness.ms_text("m_REPH1", psid, "how do I reset my password"))
    wait_reply_state(db, "m_REPH1")
    first = db.scalar("SELECT response_id FROM messages WHERE platform_message_id = 'm_REPH1'")
    assert first is not None
    # An unrelated follow-up is not a rephrase ...
    post(p, "messenger", harness.ms_text("m_REPH2", psid, "thanks, what are your opening hours"))
    wait_reply_state(db, "m_REPH2")
    assert db.scalar("SELECT count(*) FROM events WHERE type = 'user_rephrased'") == 0
    second = db.scalar("SELECT response_id FROM messages WHERE platform_message_id = 'm_REPH2'")
    # ... the same question again, in other words, is; it points at the
    # response the user apparently did not find helpful.
    post(p, "messenger", harness.ms_text("m_REPH3", psid, "what are the opening hours please"))
    wait_reply_state(db, "m_REPH3")
    rows = db.query("SELECT e.response_id, m.platform_message_id FROM events e "
                    "JOIN messages m ON m.id = e.message_id WHERE e.type = 'user_rephrased'")
    assert rows == [(second, "m_REPH3")], rows
    # never a training label: no feedback row comes from it
    assert db.scalar("SELECT count(*) FROM feedback") == 0


# --------------------------------------------------------------------------
# 3. erase

def public_tables(db):
    return [r[0] for r in db.query(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = 'public' ORDER BY table_name")]


def rows_mentioning(db, needles, skip=()):
    """{(table, needle): count} of rows whose text form contains needle."""
    found = {}
    for t in public_tables(db):
        if t in skip:
            continue
        for n in needles:
            c = db.scalar(f'SELECT count(*) FROM "{t}" x WHERE strpos(x::text, %s) > 0', (n,))
            if c:
                found[(t, n)] = c
    return found


ID_COLUMNS = ("user_id", "conversation_id", "message_id", "response_id")


def rows_referring(db, ids):
    """{(table, column): count} of rows whose id column holds one of the
    given ids ({column: [ids]}); catches leftovers that carry no string."""
    found = {}
    for t, col in db.query(
            "SELECT c.table_name, c.column_name FROM information_schema.columns c "
            "JOIN information_schema.tables t ON t.table_schema = c.table_schema "
            " AND t.table_name = c.table_name "
            "WHERE c.table_schema = 'public' AND c.column_name = ANY(%s) "
            "ORDER BY 1, 2", (list(ID_COLUMNS),)):
        want = ids.get(col) or []
        if not want:
            continue
        n = db.scalar(f'SELECT count(*) FROM "{t}" WHERE "{col}" = ANY(%s)', (want,))
        if n:
            found[(t, col)] = n
    return found


def erase_counts(stdout):
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"^([a-z_]+)\s+(\d+)\s*$", stdout, re.M)}


def test_erase_leaves_nothing_about_the_user(parley, fake):
    p = start(parley, fake, env={"PARLEY_AD_SIGNALS": "whatsapp=user"})
    db = parley.db
    phone, bsuid = "15557300001", "US.7300001999888777"
    texts = ["Hi, I saw your ad, marker Quokkaberry1",
             "I want to buy cheap running shoes, what is the price? Quokkaberry2"]
    referral = {"source_url": "https://fb.me/fakeAdErase", "source_id": "120200000000888001",
                "source_type": "ad", "headline": "Erase sale", "body": "20% off",
                "media_type": "image", "ctwa_clid": "ARAkERASECLID"}
    post(p, "whatsapp", wa_body([wa_msg("wamid.ER1", phone, texts[0], bsuid=bsuid,
                                        referral=referral)], bsuid=bsuid))
    wait_reply_state(db, "wamid.ER1")
    _, _, w1 = bot_reply(db, "wamid.ER1")
    post(p, "whatsapp", wa_body([wa_msg("wamid.ER2", phone, texts[1], bsuid=bsuid)],
                                bsuid=bsuid))
    wait_reply_state(db, "wamid.ER2")
    _, _, w2 = bot_reply(db, "wamid.ER2")
    for st in ("sent", "delivered", "read"):
        post(p, "whatsapp", wa_body(statuses=[wa_status(w1, st, phone, bsuid)]))
    post(p, "whatsapp", wa_body(statuses=[wa_status("wamid.ERNEVERSENT", "failed",
                                                    phone, bsuid)]))
    post(p, "whatsapp", wa_body([wa_reaction("wamid.ERREACT", phone, w2, THUMBS_UP,
                                             bsuid=bsuid)], bsuid=bsuid))
    # Another user, who must keep everything.
    other = "15557300002"
    post(p, "whatsapp", harness.wa_text("wamid.EROTHER", other, "Other user, marker Wombat9"))
    wait_reply_state(db, "wamid.EROTHER")

    u = user_row(db, "whatsapp", bsuid)
    assert u["phone"] == phone, u
    uid, pseudo = u["id"], u["pseudonym"]
    o = user_row(db, "whatsapp", other)
    conv = "(SELECT id FROM conversations WHERE user_id = %s)"
    before = {
        "users": db.scalar("SELECT count(*) FROM users WHERE id = %s", (uid,)),
        "conversations": db.scalar("SELECT count(*) FROM conversations WHERE user_id = %s",
                                   (uid,)),
        "messages": db.scalar(f"SELECT count(*) FROM messages WHERE conversation_id IN {conv}",
                              (uid,)),
        "responses": db.scalar(f"SELECT count(*) FROM responses WHERE conversation_id IN "
                               f"{conv}", (uid,)),
        "referrals": db.scalar(f"SELECT count(*) FROM referrals WHERE conversation_id IN "
                               f"{conv}", (uid,)),
        "feedback": db.scalar("SELECT count(*) FROM feedback WHERE user_id = %s", (uid,)),
        "interest_signals": db.scalar("SELECT count(*) FROM interest_signals "
                                      "WHERE user_id = %s", (uid,)),
        "interest_profiles": db.scalar("SELECT count(*) FROM interest_profiles "
                                       "WHERE user_id = %s", (uid,)),
        "events": db.scalar(f"SELECT count(*) FROM events WHERE user_id = %s OR "
                            f"user_pseudonym = %s OR conversation_id IN {conv}",
                            (uid, pseudo, uid)),
    }
    # The scenario really produced every kind of row.
    assert before["users"] == 1 and before["conversations"] == 1, before
    assert before["messages"] == 4 and before["responses"] == 2, before
    assert before["referrals"] == 1 and before["feedback"] == 1, before
    assert before["interest_signals"] > 0 and before["interest_profiles"] > 0, before
    assert before["events"] >= 12, before
    needles = [phone, bsuid, pseudo] + texts + ["Quokkaberry"]
    assert rows_mentioning(db, needles), "the scenario left no trace to erase (test bug)"
    other_before = {
        "messages": db.scalar(f"SELECT count(*) FROM messages WHERE conversation_id IN {conv}",
                              (o["id"],)),
        "events": db.scalar("SELECT count(*) FROM events WHERE user_id = %s", (o["id"],)),
        "responses": db.scalar(f"SELECT count(*) FROM responses WHERE conversation_id IN "
                               f"{conv}", (o["id"],)),
    }

    ids = {"user_id": [uid],
           "conversation_id": [r[0] for r in db.query(
               "SELECT id FROM conversations WHERE user_id = %s", (uid,))],
           "message_id": [r[0] for r in db.query(
               f"SELECT id FROM messages WHERE conversation_id IN {conv}", (uid,))],
           "response_id": [r[0] for r in db.query(
               f"SELECT id FROM responses WHERE conversation_id IN {conv}", (uid,))]}
    assert rows_referring(db, ids), "no row refers to the user's ids (test bug)"

    env = parley.env()
    r = harness.cli(["erase", "--platform", "whatsapp", "--platform-user", bsuid], env=env)
    assert r.rc == 0, f"parley erase failed: {r!r}"
    assert harness.sanitizer_report(r.stderr) is None, r.stderr
    counts = erase_counts(r.stdout)
    for table, n in before.items():
        assert counts.get(table) == n, \
            f"erase printed {table} {counts.get(table)}, the user had {n} rows:\n{r.stdout}"

    left = rows_mentioning(db, needles, skip=("suppressions",))
    assert not left, f"rows still mentioning the erased user (table, string): count: {left}"
    dangling = rows_referring(db, ids)
    assert not dangling, f"rows still pointing at the erased user's ids: {dangling}"
    supp = db.query("SELECT pseudonym, platform FROM suppressions")
    assert supp == [(pseudo, "whatsapp")], supp
    assert db.scalar("SELECT count(*) FROM users WHERE id = %s", (uid,)) == 0

    # The other user is untouched.
    other_after = {
        "messages": db.scalar(f"SELECT count(*) FROM messages WHERE conversation_id IN {conv}",
                              (o["id"],)),
        "events": db.scalar("SELECT count(*) FROM events WHERE user_id = %s", (o["id"],)),
        "responses": db.scalar(f"SELECT count(*) FROM responses WHERE conversation_id IN "
                               f"{conv}", (o["id"],)),
    }
    assert other_after == other_before, (other_before, other_after)
    assert other_before["messages"] == 2 and other_before["responses"] == 1, other_before
    assert rows_mentioning(db, ["Wombat9"]), "the other user's text vanished"

    # Erase by pseudonym; erasing again / an unknown pseudonym: exit 1.
    r = harness.cli(["erase", "--user", o["pseudonym"]], env=env)
    assert r.rc == 0, r
    assert db.scalar("SELECT count(*) FROM users") == 0
    assert not rows_mentioning(db, ["Wombat9", other, o["pseudonym"]], skip=("suppressions",))
    for pseudonym in (o["pseudonym"], "0" * 64):
        r = harness.cli(["erase", "--user", pseudonym], env=env)
        assert r.rc == 1, f"erase of a non-existent user: {r!r}"
        lines = [x for x in r.stderr.splitlines() if x.strip()]
        assert len(lines) == 1, f"expected one line on stderr: {r!r}"

    r = harness.cli(["erase"], env=env)
    assert r.rc == 2, f"erase without arguments: {r!r}"
    assert r.stderr.strip(), r
