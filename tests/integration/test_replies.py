"""End-to-end reply path (issue 4, points 17-18): the real binary with the
fake OpenAI-compatible LLM and the fake Graph API (tests/fakes/fakeup.c via
tests/integration/fakes.py): prompts, sends per platform, splitting,
coalescing, retries, apology, history, a kill -9 crash test and two
processes sharing one database."""

import json
import re
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

import pytest

import harness
import promparse
from harness import IG_ID, PAGE_ID, WA_PHONE_ID, wait_until

SYSTEM_PROMPT = "You are the Parley end-to-end test bot. Answer briefly."
MODEL = "fake-model-e2e"
GRAPH_VERSION = "v21.0"
LIMITS = {"whatsapp": ("chars", 4096), "messenger": ("chars", 2000),
          "instagram": ("bytes", 1000)}
TOKENS = {"whatsapp": harness.WA_TOKEN, "messenger": harness.MESSENGER_TOKEN,
          "instagram": harness.INSTAGRAM_TOKEN}
CHANNELS = {"whatsapp": WA_PHONE_ID, "messenger": PAGE_ID, "instagram": IG_ID}


# --------------------------------------------------------------------------
# helpers

def start(parley, fake, env=None, args=("serve",)):
    """parley serve wired to the fake, with test-friendly timings."""
    e = harness.fake_env(fake, MODEL, SYSTEM_PROMPT, **(env or {}))
    return parley(env=e, args=args)


def post(p, platform, body):
    r = p.post_webhook(platform, body)
    assert r.status == 200, f"webhook {platform}: {r}"
    return r


def inbound_body(platform, mid, user, text):
    if platform == "whatsapp":
        return harness.wa_text(mid, user, text)
    if platform == "messenger":
        return harness.ms_text(mid, user, text)
    return harness.ig_text(mid, user, text)


def user_id(platform, n):
    return {"whatsapp": f"1555700{n:04d}", "messenger": f"70000{n:06d}",
            "instagram": f"80000{n:06d}"}[platform]


def is_text_send(rec):
    """A Graph request that carries a text message (not mark-read/typing)."""
    b = rec.get("body")
    if not isinstance(b, dict) or rec.get("method") != "POST":
        return False
    if "messaging_product" in b:
        return b.get("type", "text") == "text" and isinstance(b.get("text"), dict)
    msg = b.get("message")
    return isinstance(msg, dict) and "text" in msg


def send_text(rec):
    b = rec["body"]
    if "messaging_product" in b:
        return b["text"]["body"]
    return b["message"]["text"]


def send_recipient(rec):
    b = rec["body"]
    if "messaging_product" in b:
        return b.get("to") or b.get("recipient")
    return (b.get("recipient") or {}).get("id")


def text_sends(fake, recipient=None, ok_only=True):
    out = []
    for r in fake.requests("graph"):
        if not is_text_send(r):
            continue
        if ok_only and r.get("status") != 200:
            continue
        if recipient is not None and send_recipient(r) != recipient:
            continue
        out.append(r)
    return out


def llm_calls(fake):
    return [r for r in fake.requests("llm") if isinstance(r.get("body"), dict)]


def content_text(c):
    """OpenAI message content: a string or a list of parts."""
    if isinstance(c, str):
        return c
    if isinstance(c, list):
        return "".join(p.get("text", "") for p in c if isinstance(p, dict))
    return ""


def wait_answered(db, n_inbound, timeout=30):
    """Wait until n_inbound inbound messages exist and none is pending."""
    def done():
        rows = dict(db.query("SELECT coalesce(reply_state, 'null'), count(*) FROM messages "
                             "WHERE direction = 'in' GROUP BY 1"))
        total = sum(rows.values())
        return total >= n_inbound and rows.get("pending", 0) == 0 and rows.get("null", 0) == 0
    try:
        wait_until(done, timeout, interval=0.1, what=f"{n_inbound} inbound messages answered")
    except AssertionError:
        rows = db.query("SELECT platform_message_id, reply_state FROM messages "
                        "WHERE direction = 'in' ORDER BY id")
        raise AssertionError(f"not all answered within {timeout}s: {rows}") from None


def squash(s):
    return re.sub(r"\s+", "", s)


# --------------------------------------------------------------------------
# one message, each platform

def test_whatsapp_text_gets_llm_reply_with_quote(parley, fake):
    p = start(parley, fake)
    user = user_id("whatsapp", 1)
    post(p, "whatsapp", harness.wa_text("wamid.E2EWA1", user, "Do you ship to Lisbon?"))
    wait_answered(parley.db, 1)
    wait_until(lambda: text_sends(fake, user), 10, what="the reply at the fake Graph API")

    calls = llm_calls(fake)
    assert len(calls) == 1, f"{len(calls)} LLM calls"
    req = calls[0]["body"]
    assert calls[0]["path"].endswith("/chat/completions")
    assert req["model"] == MODEL
    assert calls[0]["headers"].get("authorization") == "Bearer fake-llm-key"
    msgs = req["messages"]
    assert msgs[0]["role"] == "system" and content_text(msgs[0]["content"]) == SYSTEM_PROMPT, msgs
    assert msgs[-1]["role"] == "user", msgs
    assert "Do you ship to Lisbon?" in content_text(msgs[-1]["content"]), msgs

    sends = text_sends(fake, user)
    assert len(sends) == 1, sends
    s = sends[0]
    assert s["path"] == f"/{GRAPH_VERSION}/{WA_PHONE_ID}/messages", s["path"]
    assert s["headers"].get("authorization") == f"Bearer {harness.WA_TOKEN}"
    b = s["body"]
    assert b["messaging_product"] == "whatsapp"
    assert b.get("to") == user or b.get("recipient") == user, b
    assert b["text"]["body"].strip() == "Echo: Do you ship to Lisbon?", b
    assert b.get("context", {}).get("message_id") == "wamid.E2EWA1", b

    db = parley.db
    assert db.scalar("SELECT reply_state FROM messages WHERE platform_message_id = "
                     "'wamid.E2EWA1'") == "answered"
    out = db.query("SELECT m.platform_message_id, m.response_id, r.status, r.model, "
                   "r.completion, r.request_messages FROM messages m "
                   "JOIN responses r ON r.id = m.response_id WHERE m.direction = 'out'")
    assert len(out) == 1, out
    wamid, rid, status, model, completion, reqmsgs = out[0]
    assert wamid and wamid.startswith("wamid."), "outbound platform id not kept"
    assert status == "sent" and model == MODEL and completion.strip() == "Echo: Do you ship to Lisbon?"
    assert content_text(reqmsgs[0]["content"]) == SYSTEM_PROMPT
    inputs = db.query("SELECT m.platform_message_id FROM response_inputs ri "
                      "JOIN messages m ON m.id = ri.message_id WHERE ri.response_id = %s", (rid,))
    assert inputs == [("wamid.E2EWA1",)]


def test_stage_timings_account_for_a_reply_without_the_llm(parley, fake):
    """parley_job_stage_seconds splits a reply's own time by stage: each
    stage observed once per job, none of them holding the LLM's 400 ms,
    and together no more than the reply's whole latency."""
    fake.control(llm_latency_ms=400)
    p = start(parley, fake)
    user = user_id("whatsapp", 2)
    post(p, "whatsapp", harness.wa_text("wamid.STAGES1", user, "how long?"))
    wait_answered(parley.db, 1)
    wait_until(lambda: text_sends(fake, user), 10, what="the reply")
    fams = promparse.parse(p.get("/metrics").text)
    stages = {s.labels["stage"]: s.value
              for s in fams["parley_job_stage_seconds"].samples
              if s.name.endswith("_sum")}
    counts = {s.labels["stage"]: s.value
              for s in fams["parley_job_stage_seconds"].samples
              if s.name.endswith("_count")}
    names = {"wait", "queue", "handoff", "intent", "send", "finish"}
    assert set(counts) == names and all(v == 1 for v in counts.values()), counts
    assert all(0 <= v < 0.3 for v in stages.values()), \
        f"a stage holds the LLM call: {stages}"
    total = next(s.value for s in fams["parley_reply_latency_seconds"].samples
                 if s.name.endswith("_sum"))
    assert total >= 0.4, f"reply latency {total} s without the LLM's 400 ms"
    assert sum(v for k, v in stages.items() if k != "finish") <= total, (stages, total)


@pytest.mark.parametrize("platform", ["messenger", "instagram"])
def test_messenger_and_instagram_reply(parley, fake, platform):
    p = start(parley, fake)
    user = user_id(platform, 2)
    mid = f"m_E2E_{platform}_1"
    post(p, platform, inbound_body(platform, mid, user, f"hello from {platform}"))
    wait_answered(parley.db, 1)
    wait_until(lambda: text_sends(fake, user), 10, what="the reply at the fake Graph API")

    msgs = llm_calls(fake)[0]["body"]["messages"]
    assert msgs[0]["role"] == "system" and content_text(msgs[0]["content"]) == SYSTEM_PROMPT
    assert f"hello from {platform}" in content_text(msgs[-1]["content"])

    sends = text_sends(fake, user)
    assert len(sends) == 1, sends
    s = sends[0]
    assert s["path"] in (f"/{GRAPH_VERSION}/{CHANNELS[platform]}/messages",
                         f"/{GRAPH_VERSION}/me/messages"), s["path"]
    auth = s["headers"].get("authorization")
    assert auth == f"Bearer {TOKENS[platform]}" or \
        s.get("args", {}).get("access_token") == TOKENS[platform], s["headers"]
    b = s["body"]
    assert b["recipient"]["id"] == user, b
    assert b["messaging_type"] == "RESPONSE", b
    assert b["message"]["text"].strip() == f"Echo: hello from {platform}", b
    out = parley.db.query("SELECT platform_message_id FROM messages WHERE direction = 'out'")
    assert len(out) == 1 and out[0][0], out


def receipt_kind(rec):
    """'read' (WhatsApp: status read with the typing indicator),
    'mark_seen' or 'typing_on' (Messenger, Instagram), else None."""
    b = rec.get("body")
    if not isinstance(b, dict):
        return None
    if b.get("status") == "read":
        return "read" if (b.get("typing_indicator") or {}).get("type") == "text" else "read?"
    return b.get("sender_action")


@pytest.mark.parametrize("platform", ["whatsapp", "messenger", "instagram"])
def test_read_receipt_reaches_the_platform_before_the_reply(parley, fake, platform):
    # Every Graph answer takes 300 ms and the LLM none: a receipt made on
    # another thread than the reply would be overtaken by it (a typing
    # indicator that arrives after the answer stays up).
    fake.control(graph_latency_ms=300)
    p = start(parley, fake)
    user = user_id(platform, 9)
    mid = f"m_RCPT_{platform}" if platform != "whatsapp" else "wamid.RCPT1"
    post(p, platform, inbound_body(platform, mid, user, "are you there?"))
    wait_answered(parley.db, 1)
    graph = fake.requests("graph")
    kinds = [receipt_kind(r) or ("text" if is_text_send(r) else "other") for r in graph]
    want = ["read", "text"] if platform == "whatsapp" else ["mark_seen", "typing_on", "text"]
    assert kinds == want, kinds
    if platform == "whatsapp":
        assert graph[0]["body"]["message_id"] == mid, graph[0]["body"]
    else:
        assert all(r["body"]["recipient"]["id"] == user for r in graph), graph
    assert all(r["status"] == 200 for r in graph), [r["status"] for r in graph]
    # Each request starts only after the one before was answered.
    for before, after in zip(graph, graph[1:]):
        assert before["delay_ms"] >= 300, before
        assert after["ts_ms"] >= before["ts_ms"] + before["delay_ms"], (before, after)


def test_a_failed_read_receipt_does_not_hold_the_reply_back(parley, fake):
    # Best effort: the receipt's 500 is not retried, and the reply goes out.
    fake.control(graph_faults=[{"http": 500, "code": 2}])
    p = start(parley, fake)
    user = user_id("whatsapp", 10)
    post(p, "whatsapp", inbound_body("whatsapp", "wamid.RCPTFAIL1", user, "hi"))
    wait_answered(parley.db, 1)
    graph = fake.requests("graph")
    assert [(receipt_kind(r), r["status"]) for r in graph] == [("read", 500), (None, 200)], \
        [(receipt_kind(r), r["status"]) for r in graph]
    assert parley.db.scalar("SELECT status FROM responses") == "sent"


# --------------------------------------------------------------------------
# splitting

LONG_TEXT = " ".join(
    f"Frase número {i}: ação, coração e 日本語のテキスト {i} — emoji 👍🏽 e acentuação. "
    + ("Parágrafo novo.\n\n" if i % 7 == 0 else "")
    for i in range(1, 160))


def unit_len(s, unit):
    return len(s.encode("utf-8")) if unit == "bytes" else len(s)


@pytest.mark.parametrize("platform", ["whatsapp", "messenger", "instagram"])
def test_long_answer_split_at_limits_on_utf8_boundaries(parley, fake, platform):
    unit, limit = LIMITS[platform]
    assert unit_len(LONG_TEXT, unit) > 2 * limit
    fake.control(llm_reply=LONG_TEXT)
    p = start(parley, fake)
    user = user_id(platform, 3)
    post(p, platform, inbound_body(platform, f"m_SPLIT_{platform}", user, "tell me a lot"))
    wait_answered(parley.db, 1, timeout=40)
    sends = text_sends(fake, user, ok_only=False)
    assert sends, "no sends"
    bad = [r for r in sends if r.get("status") != 200]
    assert not bad, f"the fake refused pieces (over the limit?): {[r['status'] for r in bad]}"
    pieces = [send_text(r) for r in sends]
    assert len(pieces) >= 2
    for piece in pieces:
        assert 0 < unit_len(piece, unit) <= limit, (unit_len(piece, unit), limit)
        assert "\ufffd" not in piece, "a piece was cut inside a UTF-8 sequence"
    assert squash("".join(pieces)) == squash(LONG_TEXT), "pieces do not rebuild the answer in order"
    n_out = parley.db.scalar("SELECT count(*) FROM messages WHERE direction = 'out'")
    assert n_out == len(pieces)


# --------------------------------------------------------------------------
# coalescing, retries, apology, history

def test_burst_of_five_answered_in_order_and_coalesced(parley, fake):
    fake.control(llm_latency_ms=800)
    p = start(parley, fake)
    user = user_id("whatsapp", 4)
    for i in range(1, 6):
        post(p, "whatsapp", harness.wa_text(f"wamid.BURST{i}", user, f"burst part {i}"))
    wait_answered(parley.db, 5, timeout=40)
    calls = llm_calls(fake)
    assert 1 <= len(calls) <= 2, f"5 quick messages made {len(calls)} LLM calls (no coalescing)"
    # Every part reaches the LLM, in order, each once as a new user turn.
    seen = []
    for c in calls:
        msgs = c["body"]["messages"]
        last_assistant = max([i for i, m in enumerate(msgs) if m["role"] == "assistant"],
                             default=0)
        for m in msgs[last_assistant:]:
            if m["role"] == "user":
                seen += [int(x) for x in re.findall(r"burst part (\d)", content_text(m["content"]))]
    assert seen == [1, 2, 3, 4, 5], seen
    sends = text_sends(fake, user)
    assert len(sends) == len(calls), (len(sends), len(calls))
    db = parley.db
    rows = db.query("SELECT m.platform_message_id, count(ri.response_id) FROM messages m "
                    "LEFT JOIN response_inputs ri ON ri.message_id = m.id "
                    "WHERE m.direction = 'in' GROUP BY 1 ORDER BY 1")
    assert rows == [(f"wamid.BURST{i}", 1) for i in range(1, 6)], rows
    # Responses are in message order.
    order = db.query("SELECT ri.response_id FROM messages m JOIN response_inputs ri "
                     "ON ri.message_id = m.id WHERE m.direction = 'in' ORDER BY m.id")
    ids = [r[0] for r in order]
    assert ids == sorted(ids), ids


def test_message_sent_while_thinking_is_claimed_when_that_reply_is_done(parley, fake):
    """A message that arrives while its conversation is being answered
    cannot be claimed then (the conversation is leased); the finish of that
    job must call for a claim at once, not leave it to the dispatcher's
    2-second poll."""
    fake.control(llm_latency_ms=1000)
    p = start(parley, fake)
    user = user_id("whatsapp", 9)
    post(p, "whatsapp", harness.wa_text("wamid.THINK1", user, "first question"))
    fake.wait_requests("llm", 1, timeout=10)
    post(p, "whatsapp", harness.wa_text("wamid.THINK2", user, "second question"))
    wait_answered(parley.db, 2, timeout=20)
    calls = llm_calls(fake)
    sends = text_sends(fake, user)
    assert len(calls) == 2 and len(sends) == 2, (len(calls), len(sends))
    assert "second question" in content_text(calls[1]["body"]["messages"][-1]["content"])
    gap = calls[1]["ts_ms"] - sends[0]["ts_ms"]
    assert gap < 1000, \
        f"second LLM call {gap} ms after the first reply was sent: claimed by the poll"


def test_llm_429_then_success_gives_exactly_one_reply(parley, fake):
    fake.control(llm_faults=[{"status": 429, "retry_after": 1}])
    p = start(parley, fake)
    user = user_id("whatsapp", 5)
    post(p, "whatsapp", harness.wa_text("wamid.R429", user, "rate me"))
    wait_answered(parley.db, 1, timeout=30)
    calls = llm_calls(fake)
    assert [c["status"] for c in calls] == [429, 200], [c["status"] for c in calls]
    gap = calls[1]["ts_ms"] - calls[0]["ts_ms"]
    assert gap >= 900, f"Retry-After: 1 not honoured (retried after {gap} ms)"
    sends = text_sends(fake, user)
    assert len(sends) == 1 and send_text(sends[0]).strip() == "Echo: rate me"
    rows = parley.db.query("SELECT status, kind, attempts FROM responses")
    assert rows == [("sent", "llm", 2)], rows


def test_llm_down_sends_apology_and_records_failure(parley, fake):
    apology = "Sorry, the test bot cannot answer right now."
    fake.control(llm_down=True)
    p = start(parley, fake, env={"PARLEY_LLM_MAX_ATTEMPTS": "2",
                                 "PARLEY_APOLOGY_TEXT": apology})
    user = user_id("whatsapp", 6)
    post(p, "whatsapp", harness.wa_text("wamid.DOWN1", user, "anyone there?"))
    db = parley.db
    wait_until(lambda: db.scalar("SELECT count(*) FROM messages WHERE direction = 'in' "
                                 "AND reply_state <> 'pending'") == 1, 40, interval=0.1,
               what="the message to leave 'pending'")
    wait_until(lambda: text_sends(fake, user), 10, what="the apology")
    time.sleep(0.5)
    sends = text_sends(fake, user)
    assert [send_text(s).strip() for s in sends] == [apology]
    assert len(llm_calls(fake)) == 2, "PARLEY_LLM_MAX_ATTEMPTS=2 not honoured"
    rows = db.query("SELECT status, kind, error FROM responses")
    assert len(rows) == 1, rows
    status, kind, error = rows[0]
    assert kind == "apology" or status == "failed", rows
    assert error, "the failure reason is not recorded"
    assert db.scalar("SELECT reply_state FROM messages WHERE direction = 'in'") in (
        "failed", "answered")


def test_platform_rate_limit_then_success_one_send(parley, fake):
    # The fake's Graph faults apply to the next Graph request of any kind.
    # Mark-read / typing happen when work starts, before the LLM call: hold
    # the LLM answer, inject the fault while it is held, so that the fault
    # hits the send.
    fake.control(llm_latency_ms=1500)
    p = start(parley, fake)
    user = user_id("whatsapp", 7)
    post(p, "whatsapp", harness.wa_text("wamid.GRL1", user, "send me"))
    wait_until(lambda: llm_calls(fake), 15, what="the LLM call")
    fake.control(graph_faults=[{"http": 400, "code": 130429}])
    wait_answered(parley.db, 1, timeout=40)
    attempts = text_sends(fake, user, ok_only=False)
    assert [a["status"] for a in attempts] == [400, 200], [a["status"] for a in attempts]
    assert attempts[0]["body"] == attempts[1]["body"], "the retry sent something else"
    assert parley.db.scalar("SELECT count(*) FROM messages WHERE direction = 'out'") == 1
    assert parley.db.scalar("SELECT status FROM responses") == "sent"


def test_second_turn_prompt_contains_history(parley, fake):
    p = start(parley, fake)
    user = user_id("whatsapp", 8)
    post(p, "whatsapp", harness.wa_text("wamid.HIST1", user, "My name is Ana."))
    wait_answered(parley.db, 1)
    post(p, "whatsapp", harness.wa_text("wamid.HIST2", user, "What is my name?"))
    wait_answered(parley.db, 2)
    calls = llm_calls(fake)
    assert len(calls) == 2
    msgs = [(m["role"], content_text(m["content"]).strip()) for m in calls[1]["body"]["messages"]]
    assert msgs[0] == ("system", SYSTEM_PROMPT)
    assert msgs[1:] == [("user", "My name is Ana."), ("assistant", "Echo: My name is Ana."),
                        ("user", "What is my name?")], msgs


# --------------------------------------------------------------------------
# crash safety and horizontal scale

def _tag(conv, k):
    return f"conv{conv:02d} msg{k}"


def _post_round(p, k, n_conv, prefix):
    def one(c):
        body = harness.wa_text(f"wamid.{prefix}{c:02d}x{k}", user_id("whatsapp", 100 + c),
                               _tag(c, k), ts=1767225600 + k)
        return p.post_webhook("whatsapp", body).status
    with ThreadPoolExecutor(max_workers=8) as ex:
        statuses = list(ex.map(one, range(n_conv)))
    assert all(s == 200 for s in statuses), Counter(statuses)


def _last_msg_number(text):
    nums = re.findall(r"msg(\d+)", text)
    return int(nums[-1]) if nums else None


def test_kill_9_mid_way_then_restart_answers_everything_once_in_order(parley, fake):
    n_conv, rounds = 50, 4
    # A slow send widens the window between send and commit, so that the
    # kill may also hit a job that sent but did not record it.
    fake.control(llm_latency_ms=300, graph_latency_ms=150)
    p = start(parley, fake, env={"PARLEY_WORKERS": "8", "PARLEY_LEASE_MS": "2000"})
    db = parley.db
    for k in (1, 2):
        _post_round(p, k, n_conv, "CR")
    wait_until(lambda: db.scalar("SELECT count(*) FROM messages WHERE direction = 'in' "
                                 "AND reply_state = 'answered'") >= 15, 60, interval=0.05,
               what="some answers before the kill")
    p.kill()
    answered_at_kill = db.scalar("SELECT count(*) FROM messages WHERE direction = 'in' "
                                 "AND reply_state = 'answered'")
    leased_at_kill = db.scalar("SELECT count(*) FROM conversations WHERE lease_owner IS NOT NULL "
                               "AND lease_until > now()")
    pending_at_kill = db.scalar("SELECT count(*) FROM messages WHERE direction = 'in' "
                                "AND reply_state = 'pending'")
    assert pending_at_kill > 0 and leased_at_kill > 0, \
        f"the kill did not interrupt work in flight (pending {pending_at_kill}, " \
        f"leased {leased_at_kill}, answered {answered_at_kill})"
    p.start()
    for k in (3, 4):
        _post_round(p, k, n_conv, "CR")
    wait_answered(db, n_conv * rounds, timeout=180)
    print("crash test: answered at kill", answered_at_kill, "leased", leased_at_kill,
          "possible duplicates", db.scalar("SELECT count(*) FROM events "
                                           "WHERE type = 'possible_duplicate_send'"))

    states = dict(db.query("SELECT reply_state, count(*) FROM messages WHERE direction = 'in' "
                           "GROUP BY 1"))
    assert states == {"answered": n_conv * rounds}, states

    dup_convs = {r[0] for r in db.query(
        "SELECT DISTINCT conversation_id FROM events WHERE type = 'possible_duplicate_send'")}
    conv_of_user = dict(db.query("SELECT u.platform_user_id, c.id FROM conversations c "
                                 "JOIN users u ON u.id = c.user_id"))
    # Each inbound message fed exactly one delivered response, unless a
    # possible duplicate send was recorded for its conversation.
    per_msg = db.query(
        "SELECT m.conversation_id, m.platform_message_id, count(r.id) FROM messages m "
        "LEFT JOIN response_inputs ri ON ri.message_id = m.id "
        "LEFT JOIN responses r ON r.id = ri.response_id AND r.status IN ('sent', 'partial') "
        "WHERE m.direction = 'in' GROUP BY 1, 2")
    for conv, mid, n in per_msg:
        assert n == 1 or (n > 1 and conv in dup_convs), f"{mid}: {n} delivered responses"

    sends_by_user = defaultdict(list)
    for r in text_sends(fake):
        sends_by_user[send_recipient(r)].append(r)
    for c in range(n_conv):
        user = user_id("whatsapp", 100 + c)
        conv = conv_of_user[user]
        sends = sends_by_user[user]
        nums = [_last_msg_number(send_text(s)) for s in sends]
        assert nums and nums[-1] == rounds, f"{user}: last reply answers {nums}"
        if conv in dup_convs:
            assert nums == sorted(nums), f"{user}: replies out of order {nums}"
        else:
            assert all(a < b for a, b in zip(nums, nums[1:])), \
                f"{user}: replies out of order or repeated without a possible_duplicate_send " \
                f"event: {nums}"
            n_out = db.scalar("SELECT count(*) FROM messages WHERE direction = 'out' "
                              "AND conversation_id = %s", (conv,))
            assert n_out == len(sends), f"{user}: {len(sends)} sends, {n_out} outbound rows"
        # Response order follows message order.
        ids = [r[0] for r in db.query(
            "SELECT ri.response_id FROM messages m JOIN response_inputs ri ON ri.message_id = m.id "
            "JOIN responses r ON r.id = ri.response_id AND r.status IN ('sent', 'partial') "
            "WHERE m.conversation_id = %s AND m.direction = 'in' ORDER BY m.id", (conv,))]
        assert ids == sorted(ids), f"{user}: responses out of message order {ids}"


def slow_sends_after_the_receipt(fake, ms):
    """Once the read receipt was answered (the LLM call is held meanwhile),
    every Graph answer takes ms, and the LLM none."""
    wait_until(lambda: [r for r in fake.requests("graph") if receipt_kind(r)], 15,
               what="the read receipt")
    fake.control(graph_latency_ms=ms, llm_latency_ms=0)


def test_reply_whose_intent_is_lost_is_flagged_and_answered_again(parley, fake):
    # The intent commits without waiting for its WAL flush, so a crash of
    # PostgreSQL can lose it after the reply went out. Emulated: while the
    # send is slow, the test removes everything the intent wrote. The
    # finish then fails; the job records a possible_duplicate_send for it,
    # and once the lease has run out the message is answered again.
    # (The reply waits for its read receipt: hold the LLM call, and slow
    # the Graph API down only once the receipt was answered.)
    fake.control(llm_latency_ms=1000)
    p = start(parley, fake, env={"PARLEY_LEASE_MS": "2000"})
    db = parley.db
    user = user_id("whatsapp", 41)
    post(p, "whatsapp", harness.wa_text("wamid.LOSTINTENT1", user, "hello, lost intent"))
    slow_sends_after_the_receipt(fake, 1500)
    rid = wait_until(lambda: db.scalar("SELECT id FROM responses WHERE status = 'sending'"),
                     30, interval=0.02, what="the intent")
    db.execute("DELETE FROM events WHERE response_id = %s", (rid,))
    db.execute("DELETE FROM messages WHERE response_id = %s", (rid,))
    gone = db.query("DELETE FROM responses WHERE id = %s AND status = 'sending' RETURNING id",
                    (rid,))
    assert gone == [(rid,)], "the finish came before the test could remove the intent"

    ev = wait_until(lambda: db.query("SELECT data FROM events "
                                     "WHERE type = 'possible_duplicate_send'"),
                    30, what="the possible_duplicate_send event")
    assert len(ev) == 1, ev
    data = ev[0][0]
    assert data["response_id"] == rid, data
    assert "not recorded" in data["reason"], data
    first = text_sends(fake, user)
    assert len(first) == 1 and data["platform_message_ids"], (first, data)

    fake.control(graph_latency_ms=0)
    wait_answered(db, 1, timeout=60)
    assert len(text_sends(fake, user)) == 2, "answered again after the lost intent"
    assert db.scalar("SELECT count(*) FROM responses WHERE status = 'sent'") == 1
    fams = promparse.parse(p.get("/metrics").text)
    assert [x.value for x in fams["parley_possible_duplicate_sends_total"].samples] == [1]


def test_worker_killed_during_the_send_leaves_the_response_abandoned(parley, fake):
    # Only the response row is written before the send (migration 0009); its
    # inputs, outbound rows and llm events come with the finish. A process
    # killed during a slow send leaves the response 'sending': the next
    # claim marks it abandoned, flags it, and answers the message again.
    fake.control(llm_latency_ms=1000)
    env = {"PARLEY_LEASE_MS": "2000"}
    p = start(parley, fake, env=env)
    db = parley.db
    user = user_id("whatsapp", 43)
    post(p, "whatsapp", harness.wa_text("wamid.KILLSEND1", user, "hello, slow send"))
    slow_sends_after_the_receipt(fake, 4000)
    rid = wait_until(lambda: db.scalar("SELECT id FROM responses WHERE status = 'sending'"),
                     30, interval=0.02, what="the intent")
    # The intent wrote the response and nothing else about it.
    assert db.scalar("SELECT completion FROM responses WHERE id = %s", (rid,))
    assert db.scalar("SELECT count(*) FROM messages WHERE response_id = %s", (rid,)) == 0
    assert db.scalar("SELECT count(*) FROM response_inputs WHERE response_id = %s", (rid,)) == 0
    assert db.scalar("SELECT count(*) FROM events WHERE response_id = %s", (rid,)) == 0
    p.kill()
    assert db.scalar("SELECT status FROM responses WHERE id = %s", (rid,)) == "sending"

    fake.control(graph_latency_ms=0)
    p.start()
    wait_answered(db, 1, timeout=60)
    rows = db.query("SELECT id, status FROM responses ORDER BY id")
    assert [r[1] for r in rows] == ["abandoned", "sent"], rows
    assert rows[0][0] == rid, rows
    new = rows[1][0]
    ev = db.query("SELECT response_id FROM events WHERE type = 'possible_duplicate_send'")
    assert ev == [(rid,)], ev
    # The abandoned response keeps only its row; the one sent has the rest.
    assert db.scalar("SELECT count(*) FROM messages WHERE response_id = %s", (rid,)) == 0
    for r, n_in, n_out in ((rid, 0, 0), (new, 1, 1)):
        assert db.scalar("SELECT count(*) FROM response_inputs WHERE response_id = %s",
                         (r,)) == n_in, r
        assert db.scalar("SELECT count(*) FROM messages WHERE direction = 'out' "
                         "AND response_id = %s", (r,)) == n_out, r
    out = db.query("SELECT status, platform_message_id IS NOT NULL, part, text FROM messages "
                   "WHERE direction = 'out' AND response_id = %s", (new,))
    assert out[0][:3] == ("sent", True, 1) and out[0][3], out
    types = sorted(t for (t,) in db.query("SELECT type FROM events WHERE response_id = %s",
                                          (new,)))
    assert types == ["llm_request", "message_sent", "response_generated"], types
    sent_mid = db.scalar("SELECT message_id FROM events WHERE type = 'message_sent'")
    assert sent_mid == db.scalar("SELECT id FROM messages WHERE direction = 'out'"), sent_mid


def _leased_conversation(db, owner, lease_count):
    """A migrated db with one conversation leased to owner (lease_count)
    and one pending message in it: (conversation id, message id)."""
    r = harness.cli(["migrate"], env={"PARLEY_DATABASE_URL": db.url}, timeout=120)
    assert r.rc == 0, r
    db.execute("INSERT INTO users (platform, platform_user_id, pseudonym, key_version) "
               "VALUES ('whatsapp', '15550009', 'ps-old', 1)")
    conv = db.scalar("INSERT INTO conversations (user_id, platform, channel, lease_owner, "
                     "lease_count, lease_until) SELECT id, 'whatsapp', 'PHONE', %s, %s, "
                     "now() + interval '1 minute' FROM users RETURNING id",
                     (owner, lease_count))
    mid = db.scalar("INSERT INTO messages (conversation_id, direction, platform, "
                    "platform_message_id, kind, text, reply_state) VALUES "
                    "(%s, 'in', 'whatsapp', 'wamid.OLD1', 'text', 'hi', 'pending') "
                    "RETURNING id", (conv,))
    return conv, mid


def test_intent_of_a_stale_job_beside_the_lease_holder_gets_no_response(db):
    # Two jobs of one conversation in one intent batch: the one whose lease
    # ran out (lease 1, since re-claimed) and the holder (lease 2). Only the
    # holder gets a response; the stale job must not be told to send.
    conv, _ = _leased_conversation(db, "p2", 2)
    jobs = [{"conv": str(conv), "owner": owner, "lease": lease, "lease_ms": 60000,
             "kind": "llm", "completion": text, "worker": "w"}
            for owner, lease, text in (("p2", "2", "holder"), ("p1", "1", "stale"))]
    got = dict(db.query("SELECT n, result FROM parley_reply_intents(%s::jsonb)",
                        (json.dumps(jobs),)))
    rows = db.query("SELECT id, completion FROM responses")
    assert len(rows) == 1 and rows[0][1] == "holder", rows
    assert got == {1: {"response_id": rows[0][0]}, 2: None}, got


def test_previous_release_job_functions_still_work_after_0009(db):
    # During a rolling upgrade, processes of the release before migration
    # 0009 keep calling parley_intent_jobs() / parley_finish_jobs() with
    # their documents (the intent writes the inputs, the outbound rows
    # 'sending' and the llm events; the finish updates those rows). 0009
    # adds new functions and leaves these as they were.
    conv, mid = _leased_conversation(db, "old", 1)
    job = {"conv": str(conv), "owner": "old", "lease": "1", "lease_ms": 60000,
           "platform": "whatsapp", "kind": "llm", "model": "m", "completion": "hello",
           "worker": "w1", "inputs": [str(mid)], "parts": ["hello"],
           "events": [{"type": "llm_request", "message_id": mid, "data": {"inputs": 1}}]}
    (n, res), = db.query("SELECT n, result FROM parley_intent_jobs(%s::jsonb)",
                         (json.dumps([job]),))
    rid, (oid,) = res["response_id"], res["parts"]
    assert db.query("SELECT status, part, text FROM messages WHERE id = %s",
                    (oid,)) == [("sending", 1, "hello")]
    fin = {"conv": str(conv), "owner": "old", "lease": "1", "response_id": str(rid),
           "rstatus": "sent", "istate": "answered", "inbound": [str(mid)],
           "parts": [{"id": str(oid), "pid": "wamid.OUT1", "status": "sent", "rank": 1}],
           "events": [{"type": "message_sent", "message_id": str(oid), "ref": "wamid.OUT1",
                       "data": {"part": 1}}]}
    assert db.query("SELECT n, ok, more FROM parley_finish_jobs(%s::jsonb)",
                    (json.dumps([fin]),)) == [(1, True, False)]
    assert db.query("SELECT platform_message_id, status FROM messages WHERE id = %s",
                    (oid,)) == [("wamid.OUT1", "sent")]
    assert db.scalar("SELECT status FROM responses WHERE id = %s", (rid,)) == "sent"
    assert db.scalar("SELECT reply_state FROM messages WHERE id = %s", (mid,)) == "answered"
    assert db.scalar("SELECT count(*) FROM response_inputs WHERE response_id = %s", (rid,)) == 1
    types = sorted(t for (t,) in db.query("SELECT type FROM events WHERE response_id = %s",
                                          (rid,)))
    assert types == ["llm_request", "message_sent"], types
    assert db.scalar("SELECT lease_owner FROM conversations WHERE id = %s", (conv,)) is None


def test_two_processes_share_work_without_overlap(parley, fake):
    n_conv, rounds = 20, 3
    fake.control(llm_latency_ms=200)
    common = {"PARLEY_WORKERS": "3"}
    a = start(parley, fake, env=dict(common, PARLEY_LLM_MODEL="model-a"))
    b = start(parley, fake, env=dict(common, PARLEY_LLM_MODEL="model-b"))
    db = parley.db
    for k in range(1, rounds + 1):
        # Alternate the receiving process per conversation and round.
        def one(c, k=k):
            target = a if (c + k) % 2 else b
            body = harness.wa_text(f"wamid.TP{c:02d}x{k}", user_id("whatsapp", 300 + c),
                                   _tag(c, k), ts=1767225600 + k)
            return target.post_webhook("whatsapp", body).status
        with ThreadPoolExecutor(max_workers=8) as ex:
            assert all(s == 200 for s in ex.map(one, range(n_conv)))
        time.sleep(0.3)
    wait_answered(db, n_conv * rounds, timeout=120)

    calls = llm_calls(fake)
    models = Counter(c["body"]["model"] for c in calls)
    assert models["model-a"] > 0 and models["model-b"] > 0, f"work not shared: {dict(models)}"

    # Per conversation, LLM calls and sends strictly alternate: a second
    # call never starts before the previous call's reply was sent.
    timeline = defaultdict(list)
    for r in fake.requests():
        if r.get("kind") == "llm" and isinstance(r.get("body"), dict):
            users = [content_text(m["content"]) for m in r["body"]["messages"]
                     if m["role"] == "user"]
            convs = set(re.findall(r"conv(\d\d)", users[-1])) if users else set()
            assert len(convs) == 1, users
            timeline[int(convs.pop())].append(("llm", r["seq"], r["body"]["model"]))
        elif r.get("kind") == "graph" and is_text_send(r) and r.get("status") == 200:
            m = re.search(r"conv(\d\d)", send_text(r))
            assert m, send_text(r)
            timeline[int(m.group(1))].append(("send", r["seq"], None))
    for conv, evs in timeline.items():
        kinds = [k for k, _, _ in sorted(evs, key=lambda e: e[1])]
        assert kinds == ["llm", "send"] * (len(kinds) // 2), \
            f"conv{conv:02d} handled concurrently: {kinds}"
    per_msg = db.query(
        "SELECT m.platform_message_id, count(ri.response_id) FROM messages m "
        "LEFT JOIN response_inputs ri ON ri.message_id = m.id "
        "WHERE m.direction = 'in' GROUP BY 1 HAVING count(ri.response_id) <> 1")
    assert not per_msg, per_msg


def wakeups(p):
    """parley_dispatcher_wakeups_total by cause."""
    return {m.group(1): float(m.group(2)) for m in re.finditer(
        r'^parley_dispatcher_wakeups_total\{cause="(\w+)"\} (\S+)$',
        p.get("/metrics").text, re.M)}


def test_notify_wakes_other_processes_and_not_the_sender(parley, fake):
    """A gateway-only process wakes a workers-only one by NOTIFY
    parley_work; a process with both ignores its own notifications (the
    payload names the sender; it woke its pool in-process)."""
    w = start(parley, fake, args=("serve", "--workers-only"))
    g = start(parley, fake, args=("serve", "--no-workers"))
    for k in range(3):
        post(g, "whatsapp", harness.wa_text(f"wamid.NTF{k}", user_id("whatsapp", 60 + k),
                                            f"notify test {k}"))
    wait_answered(parley.db, 3)
    seen = wakeups(w)
    assert seen.get("notify", 0) >= 1, f"the workers-only process was not notified: {seen}"
    g.stop()
    w.stop()

    both = start(parley, fake)
    post(both, "whatsapp", harness.wa_text("wamid.NTF9", user_id("whatsapp", 69), "one more"))
    wait_answered(parley.db, 4)
    wait_until(lambda: wakeups(both).get("own_notify", 0) >= 1, 10,
               what="the process's own notification")
    seen = wakeups(both)
    # In-process, the ingest claimed the message in its own round trip.
    assert seen.get("notify", 0) == 0 and sum(claims(both).values()) == 1, \
        (seen, claims(both))


def claims(p):
    """parley_queue_claims_total by who claimed."""
    return {m.group(1): float(m.group(2)) for m in re.finditer(
        r'^parley_queue_claims_total\{by="(\w+)"\} (\S+)$',
        p.get("/metrics").text, re.M)}


def test_the_ingest_claims_a_new_message_in_its_round_trip(parley, fake):
    """A message to an idle pool is claimed in the ingest batch's own round
    trip (a transaction after its commit, gateway/ingest.c store_call), not
    by the dispatcher: the dispatcher is not woken, claims nothing, and the
    reply goes out as always. The claim asks for one more slot than the
    batch has messages, so taking fewer says nothing is left behind."""
    p = start(parley, fake)
    before = wakeups(p)
    for k in range(3):
        user = user_id("whatsapp", 90 + k)
        post(p, "whatsapp", harness.wa_text(f"wamid.INGC{k}", user, f"claim test {k}"))
        wait_answered(parley.db, k + 1)
        wait_until(lambda: text_sends(fake, user), 10, what="the reply")
    # (The dispatcher's 2 s poll may claim one first, in the moment between
    # the batch's commit and the claim after it.)
    got = claims(p)
    assert got["ingest"] + got["dispatcher"] == 3 and got["ingest"] >= 2, got
    seen = wakeups(p)
    assert seen.get("local", 0) == before.get("local", 0), (before, seen)
    assert parley.db.scalar("SELECT count(*) FROM messages WHERE direction = 'in'"
                            " AND reply_state = 'answered'") == 3


def test_without_the_flush_function_the_ingest_claims_after_its_commit(parley, fake, pg):
    """A role that may not call pg_logical_emit_message() commits its
    ingest synchronously (test_ingest.py); the claim in the batch's round
    trip then follows that commit (core_db_query_then, not apart). Every
    message is answered once, claimed in the round trip or by the
    dispatcher's poll, and the dispatcher is not woken in-process."""
    db = parley.db
    url = harness.role_without_the_flush_function(db, pg.port)
    p = start(parley, fake, env={"PARLEY_DATABASE_URL": url})
    for k in range(3):
        user = user_id("whatsapp", 95 + k)
        post(p, "whatsapp", harness.wa_text(f"wamid.SYNCC{k}", user, f"sync claim {k}"))
        wait_answered(db, k + 1)
        wait_until(lambda: text_sends(fake, user), 10, what="the reply")
    got = claims(p)
    assert got["ingest"] + got["dispatcher"] == 3 and got["ingest"] >= 2, got
    assert wakeups(p).get("local", 0) == 0, wakeups(p)
    assert p.log_text().count("the pool claims after the flush") == 1
    assert len(text_sends(fake)) == 3


def test_a_claim_that_cannot_run_does_not_fail_the_ingest(parley, fake):
    """The claim in an ingest batch's round trip is a transaction of its
    own: when it cannot even be prepared (here a column only the claim
    reads is renamed, before any batch), the batch is stored and answered
    200 all the same, and the messages wait in PostgreSQL; once the claim
    works again they are answered, each once."""
    db = parley.db
    p = start(parley, fake)
    db.execute("ALTER TABLE conversations RENAME COLUMN not_before TO nb_gone")
    for k in range(2):
        post(p, "whatsapp", harness.wa_text(f"wamid.NOCLAIM{k}", user_id("whatsapp", 75 + k),
                                            f"claim broken {k}"))
    assert db.scalar("SELECT count(*) FROM messages WHERE platform_message_id"
                     " LIKE 'wamid.NOCLAIM%%' AND reply_state = 'pending'") == 2
    assert sum(claims(p).values()) == 0, claims(p)
    db.execute("ALTER TABLE conversations RENAME COLUMN nb_gone TO not_before")
    wait_answered(db, 2)
    wait_until(lambda: len(text_sends(fake)) == 2, 10, what="both replies")
    assert "ingest batch failed" not in p.log_text()


def test_a_freed_slot_wakes_the_dispatcher(parley, fake):
    """With every slot taken, the dispatcher asks to be woken when one
    frees up (inference/pool.c, room_wanted); it must not be left to its
    2 s poll. One worker (2 slots to think or wait, 1 in delivery), a
    300 ms LLM and eight conversations at once: after the first two claims
    each claim needs a slot freed by a worker or delivery. A lost wake-up
    leaves the work to the poll, which counts cause="poll"."""
    fake.control(llm_latency_ms=300)
    p = start(parley, fake, env={"PARLEY_WORKERS": "1"})
    polls = wakeups(p).get("poll", 0)
    for k in range(8):
        post(p, "whatsapp", harness.wa_text(f"wamid.ROOM{k}", user_id("whatsapp", 80 + k),
                                            f"room test {k}"))
    wait_answered(parley.db, 8)
    assert len(text_sends(fake)) == 8
    seen = wakeups(p)
    # One poll may fall due while the last reply is recorded. Without the
    # wake-up the six claims left wait for polls (a poll claims up to 2):
    # three or more.
    assert seen.get("poll", 0) - polls <= 1, f"claims waited for the poll: {seen}"


def test_claim_lost_in_a_crash_is_fenced_off(parley, fake):
    """A claim commits without waiting for its WAL flush, so a PostgreSQL
    crash can lose it while its job is thinking. Simulated by undoing the
    claim in the database: the conversation is claimed again with the same
    lease_count, and only the per-claim owner token tells the two jobs
    apart. The first job's intent must fail its lease check: one reply."""
    fake.control(llm_latency_ms=1500)
    p = start(parley, fake)
    db = parley.db
    user = user_id("whatsapp", 31)
    post(p, "whatsapp", harness.wa_text("wamid.FENCE1", user, "fence me"))
    wait_until(lambda: len(llm_calls(fake)) == 1, 10, what="the first job thinking")
    owner1, count1 = db.query("SELECT lease_owner, lease_count FROM conversations")[0]
    assert owner1, "not leased while thinking"
    db.execute("UPDATE conversations SET lease_owner = NULL, lease_until = NULL, "
               "lease_count = lease_count - 1")
    # The second job thinks longer, so the first one reaches its intent
    # while the second holds the lease under the same lease_count.
    fake.control(llm_latency_ms=3000)
    db.execute("NOTIFY parley_work")
    wait_until(lambda: db.query("SELECT lease_owner IS NOT NULL, lease_count = %s "
                                "FROM conversations", (count1,))[0] == (True, True),
               10, what="the conversation claimed again with the same lease_count")
    owner2 = db.scalar("SELECT lease_owner FROM conversations")
    wait_answered(db, 1, timeout=20)
    time.sleep(0.5)  # the first job's delivery has had its chance to send
    sends = text_sends(fake, user)
    assert len(sends) == 1, f"{len(sends)} replies: the lost claim's job was not fenced off"
    calls = llm_calls(fake)
    assert len(calls) == 2
    # The reply is the second job's: it left after the second LLM call's
    # 3 s (the first job's 1.5 s call, started earlier, ended long before).
    assert sends[0]["ts_ms"] >= calls[1]["ts_ms"] + 2500, \
        "the lost claim's job sent the reply"
    assert owner2 != owner1, "a claim's owner token was reused"
    rows = db.query("SELECT status FROM responses")
    assert rows == [("sent",)], rows
    metrics = p.get("/metrics").text
    assert re.search(r'^parley_jobs_total\{result="lease_lost"\} 1$', metrics, re.M), \
        [ln for ln in metrics.splitlines() if ln.startswith("parley_jobs_total")]
    # Nothing left in any stage.
    for gauge in ("parley_workers_busy", "parley_delivery_jobs"):
        assert re.search(rf"^{gauge} 0$", metrics, re.M), \
            [ln for ln in metrics.splitlines() if ln.startswith(gauge)]


def test_claim_reloads_a_conversation_that_changed_after_its_snapshot(parley, fake):
    """The claim loads in the same statement, from a snapshot taken before
    it locks the rows. Between the two, another process may claim and
    finish a conversation: then the messages the snapshot shows pending
    were answered, and answering them again would be a duplicate. Made
    deterministic: a trigger (test-only) sleeps 2 s while the claim updates
    the first conversation; meanwhile this session answers the second one's
    message and adds another, as that other process would. The job for the
    second conversation must be loaded afresh: one LLM call, for the new
    message only."""
    db = parley.db
    g = start(parley, fake, args=("serve", "--no-workers"))
    first, second = user_id("whatsapp", 81), user_id("whatsapp", 82)
    post(g, "whatsapp", harness.wa_text("wamid.SNAP1", first, "first user"))
    post(g, "whatsapp", harness.wa_text("wamid.SNAP2", second, "already answered"))
    g.stop()
    conv1, conv2 = [r[0] for r in db.query(
        "SELECT c.id FROM conversations c JOIN users u ON u.id = c.user_id "
        "WHERE u.platform_user_id IN (%s, %s) ORDER BY c.pending_since", (first, second))]
    db.execute("CREATE FUNCTION snap_nap() RETURNS trigger LANGUAGE plpgsql AS $$ "
               "BEGIN PERFORM pg_sleep(2); RETURN NEW; END $$")
    db.execute("CREATE TRIGGER snap_nap BEFORE UPDATE ON conversations FOR EACH ROW "
               "WHEN (OLD.id = %s AND NEW.lease_owner IS NOT NULL "
               "AND OLD.lease_owner IS NULL) EXECUTE FUNCTION snap_nap()" % int(conv1))
    try:
        w = start(parley, fake, args=("serve", "--workers-only"))
        # The claim is asleep on the first conversation; the second is not
        # locked yet: "another process" answers it and a new message comes.
        wait_until(lambda: db.scalar("SELECT count(*) FROM pg_stat_activity "
                                     "WHERE wait_event = 'PgSleep'") == 1,
                   10, what="the claim asleep in the trigger")
        db.execute("UPDATE messages SET reply_state = 'answered' "
                   "WHERE conversation_id = %s", (conv2,))
        db.execute("INSERT INTO messages (conversation_id, direction, platform, "
                   "platform_message_id, kind, text, reply_state) VALUES "
                   "(%s, 'in', 'whatsapp', 'wamid.SNAP3', 'text', 'new question', 'pending')",
                   (conv2,))
        db.execute("UPDATE conversations SET lease_count = lease_count + 1 WHERE id = %s",
                   (conv2,))
        wait_answered(db, 3, timeout=20)
        calls = [c for c in llm_calls(fake)
                 if "already answered" in json.dumps(c["body"]) or
                 "new question" in json.dumps(c["body"])]
        assert len(calls) == 1, f"{len(calls)} LLM calls for the second conversation"
        last = content_text(calls[0]["body"]["messages"][-1]["content"])
        assert "new question" in last and "already answered" not in last, \
            f"answered from the stale snapshot: {last!r}"
        assert len(text_sends(fake, second)) == 1
        w.stop()
    finally:
        db.execute("DROP TRIGGER IF EXISTS snap_nap ON conversations")
        db.execute("DROP FUNCTION IF EXISTS snap_nap()")


def test_sigterm_finishes_the_thinking_job_and_hands_back_the_queued(parley, fake):
    """Shutdown with one worker busy on a slow LLM call: the job in hand is
    thought, recorded and sent (the delivery stage drains); conversations
    claimed ahead but not started are handed back at once, unanswered; the
    next process answers them."""
    fake.control(llm_latency_ms=1500)
    p = start(parley, fake, env={"PARLEY_WORKERS": "1"})
    db = parley.db
    users = [user_id("whatsapp", 40 + k) for k in range(3)]
    for k, u in enumerate(users):
        post(p, "whatsapp", harness.wa_text(f"wamid.STOP{k}", u, f"stop test {k}"))
    wait_until(lambda: len(llm_calls(fake)) == 1, 10, what="the first job thinking")
    p.stop()  # SIGTERM; exit code 0
    thought = [u for u in users if text_sends(fake, u)]
    assert len(thought) == 1, f"replies sent for {thought}"
    assert db.query("SELECT count(*) FROM responses WHERE status = 'sent'") == [(1,)]
    states = dict(db.query("SELECT reply_state, count(*) FROM messages "
                           "WHERE direction = 'in' GROUP BY 1"))
    assert states == {"answered": 1, "pending": 2}, states
    assert db.scalar("SELECT count(*) FROM conversations WHERE lease_owner IS NOT NULL") == 0, \
        "a lease was kept past shutdown"
    fake.control(llm_latency_ms=0)
    start(parley, fake)
    wait_answered(db, 3, timeout=20)
    assert all(len(text_sends(fake, u)) == 1 for u in users), \
        {u: len(text_sends(fake, u)) for u in users}
