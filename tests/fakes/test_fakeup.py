"""Self-tests of the fakes (fakeup, loadgen) through tests/integration/fakes.py.

Run: /usr/bin/python3 -m pytest -q tests/fakes  (PARLEY_BUILD_DIR=build/asan by
default; build with `make BUILD=asan tests`). Every test starts its own fake.
"""

import http.client
import json
import os
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "integration"))

from fakes import Fake, FakeError, build_dir, loadgen, meta_signature  # noqa: E402

CHAT = {"model": "m1", "messages": [
    {"role": "system", "content": "be nice"},
    {"role": "user", "content": "first"},
    {"role": "assistant", "content": "ok"},
    {"role": "user", "content": "héllo wörld, how are you today?"}]}
ECHO = "Echo: héllo wörld, how are you today?"
WA_SEND = {"messaging_product": "whatsapp", "recipient_type": "individual",
           "to": "15551234567", "type": "text", "text": {"body": "hi"}}
AUTH = {"Authorization": "Bearer tok"}


@pytest.fixture
def fake():
    f = Fake()
    yield f
    f.stop()


def raw(fake, path, body, timeout=10):
    """POST and return (status, headers, raw bytes, error or None)."""
    c = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=timeout)
    c.request("POST", path, body=json.dumps(body),
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    err = None
    try:
        data = r.read()
    except http.client.IncompleteRead as e:
        data, err = e.partial, e
    c.close()
    return r.status, r.headers, data, err


def sse_events(data):
    out = []
    for block in data.decode().replace("\r\n", "\n").split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data: "):
                out.append(line[6:])
    return out


# ---------------------------------------------------------------- LLM

def test_llm_echo_non_stream(fake):
    st, hdrs, body = fake.call("POST", "/v1/chat/completions", CHAT)
    assert st == 200
    assert body["object"] == "chat.completion" and body["model"] == "m1"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": ECHO}
    assert body["choices"][0]["finish_reason"] == "stop"
    u = body["usage"]
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    assert u["completion_tokens"] == (len(ECHO.encode()) + 3) // 4
    assert hdrs["x-ratelimit-remaining-tokens"] == "5900"
    # other accepted paths
    for path in ("/openai/v1/chat/completions", "/anything/chat/completions"):
        assert fake.call("POST", path, CHAT)[0] == 200


def test_llm_stream_with_usage(fake):
    req = dict(CHAT, stream=True, stream_options={"include_usage": True})
    st, hdrs, data, err = raw(fake, "/v1/chat/completions", req)
    assert st == 200 and err is None
    assert hdrs["Content-Type"] == "text/event-stream"
    ev = sse_events(data)
    assert ev[-1] == "[DONE]"
    chunks = [json.loads(e) for e in ev[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "")
                   for c in chunks if c["choices"])
    assert text == ECHO
    assert sum(1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")) >= 3
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    assert all(c["usage"] is None for c in chunks[:-1])
    # without include_usage: no usage chunk
    ev = sse_events(raw(fake, "/v1/chat/completions", dict(CHAT, stream=True))[2])
    assert all("usage" not in json.loads(e) for e in ev[:-1])


def test_llm_stream_escaping_roundtrip(fake):
    tricky = 'q"uote \\ back\nnew\ttab \x01\x1f é 😀 </script> \u2028'
    req = {"model": "m", "stream": True,
           "messages": [{"role": "user", "content": tricky}]}
    ev = sse_events(raw(fake, "/v1/chat/completions", req)[2])
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "")
                   for e in ev[:-1])
    assert text == "Echo: " + tricky


def test_llm_validation(fake):
    cases = [b"not json", {"messages": [{"role": "user", "content": "x"}]},
             {"model": "m", "messages": []},
             {"model": "m", "messages": [{"role": "bot", "content": "x"}]},
             {"model": "m", "messages": [{"role": "user", "content": 5}]},
             {"model": "m", "stream": "yes", "messages": [{"role": "user", "content": "x"}]},
             {"model": "m", "n": 2, "messages": [{"role": "user", "content": "x"}]}]
    for body in cases:
        st, _, err = fake.call("POST", "/v1/chat/completions", body)
        assert st == 400, body
        assert err["error"]["type"] == "invalid_request_error"
    # content parts are accepted and echoed
    st, _, ok = fake.call("POST", "/v1/chat/completions", {"model": "m", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]})
    assert st == 200 and ok["choices"][0]["message"]["content"] == "Echo: ab"


def test_llm_faults_consumed_in_order(fake):
    fake.control(llm_faults=[{"status": 429, "retry_after": "2"}, {"status": 500},
                             {"malformed": True}, {"status": 429, "retry_after": None},
                             {"reply": "once", "finish_reason": "length"}])
    st, h, b = fake.call("POST", "/v1/chat/completions", CHAT)
    assert st == 429 and h["retry-after"] == "2"
    assert b["error"]["code"] == "rate_limit_exceeded"
    st, _, b = fake.call("POST", "/v1/chat/completions", CHAT)
    assert st == 500 and b["error"]["type"] == "server_error"
    st, _, b = fake.call("POST", "/v1/chat/completions", CHAT)
    assert st == 200 and isinstance(b, str)  # not parseable JSON
    st, h, _ = fake.call("POST", "/v1/chat/completions", CHAT)
    assert st == 429 and "retry-after" not in {k.lower() for k in h}
    st, _, b = fake.call("POST", "/v1/chat/completions", CHAT)
    assert b["choices"][0]["message"]["content"] == "once"
    assert b["choices"][0]["finish_reason"] == "length"
    st, _, b = fake.call("POST", "/v1/chat/completions", CHAT)
    assert st == 200 and b["choices"][0]["message"]["content"] == ECHO
    s = fake.stats()
    assert s["faults_injected"]["llm"] == 5 and s["faults_pending"]["llm"] == 0
    recs = fake.requests("llm")
    assert [r["status"] for r in recs] == [429, 500, 200, 429, 200, 200]
    assert recs[0]["fault"] == {"status": 429, "retry_after": "2"}


def test_llm_stream_error_and_abort(fake):
    fake.control(llm_faults=[{"stream_error": True}, {"stream_abort": True}])
    req = dict(CHAT, stream=True)
    st, _, data, err = raw(fake, "/v1/chat/completions", req)
    ev = sse_events(data)
    assert st == 200 and err is None
    assert json.loads(ev[-1])["error"]["type"] == "server_error"
    assert "[DONE]" not in ev and len(ev) == 4
    st, _, data, err = raw(fake, "/v1/chat/completions", req)
    assert st == 200 and err is not None  # connection dropped mid-body
    assert "[DONE]" not in sse_events(data)


def test_llm_down_and_api_key(fake):
    fake.control(llm_down=True)
    assert fake.call("POST", "/v1/chat/completions", CHAT)[0] == 503
    fake.control(llm_down=False, llm_api_key="k1", llm_reply="fixed")
    assert fake.call("POST", "/v1/chat/completions", CHAT)[0] == 401
    st, _, b = fake.call("POST", "/v1/chat/completions", CHAT,
                         headers={"Authorization": "Bearer k1"})
    assert st == 200 and b["choices"][0]["message"]["content"] == "fixed"
    fake.control(llm_api_key=None, llm_reply=None, llm_enforce_max_tokens=True)
    st, _, b = fake.call("POST", "/v1/chat/completions", dict(CHAT, max_tokens=2))
    assert b["choices"][0]["finish_reason"] == "length"
    assert b["usage"]["completion_tokens"] == 2


def test_latency_suspends_instead_of_blocking(fake):
    fake.control(llm_latency_ms=700)
    times = []

    def one():
        t = time.monotonic()
        assert fake.call("POST", "/v1/chat/completions", CHAT)[0] == 200
        times.append(time.monotonic() - t)

    ts = [threading.Thread(target=one) for _ in range(60)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(times) == 60 and min(times) >= 0.69
    assert time.monotonic() - t0 < 3.0, "delayed requests were serialised"
    # control endpoints are never delayed
    t = time.monotonic()
    fake.stats()
    assert time.monotonic() - t < 0.5


def test_stream_chunk_delay(fake):
    fake.control(llm_chunk_delay_ms=150, llm_sse_comments=True, llm_sse_crlf=True)
    t = time.monotonic()
    st, _, data, err = raw(fake, "/v1/chat/completions", dict(CHAT, stream=True))
    took = time.monotonic() - t
    assert st == 200 and err is None
    assert b"\r\n\r\n" in data and data.startswith(b": keep-alive")
    n = data.count(b"\r\n\r\n")
    assert took >= 0.15 * (n - 1) - 0.05
    assert sse_events(data)[-1] == "[DONE]"


# ---------------------------------------------------------------- Graph

def test_graph_send_shapes(fake):
    st, _, b = fake.call("POST", "/v21.0/123/messages", WA_SEND, headers=AUTH)
    assert st == 200 and b["contacts"] == [{"input": "15551234567", "wa_id": "15551234567"}]
    assert b["messages"][0]["id"].startswith("wamid.FAKE")
    st, _, b = fake.call("POST", "/v21.0/123/messages", {
        "messaging_product": "whatsapp", "status": "read", "message_id": "wamid.X",
        "typing_indicator": {"type": "text"}}, headers=AUTH)
    assert (st, b) == (200, {"success": True})
    st, _, b = fake.call("POST", "/v21.0/me/messages", {
        "recipient": {"id": "PSID"}, "sender_action": "typing_on"}, headers=AUTH)
    assert (st, b) == (200, {"recipient_id": "PSID"})
    st, _, b = fake.call("POST", "/v21.0/me/messages", {
        "recipient": {"id": "PSID"}, "messaging_type": "RESPONSE",
        "message": {"text": "x"}}, query={"access_token": "page"})
    assert st == 200 and b["recipient_id"] == "PSID" and b["message_id"].startswith("m_FAKE")
    st, _, b = fake.call("POST", "/v21.0/me/messages", {"recipient": {"id": "P"},
                                                         "message": {"text": "x"}})
    assert st == 401 and b["error"]["code"] == 190 and b["error"]["fbtrace_id"]
    long_wa = dict(WA_SEND, text={"body": "é" * 4097})
    st, _, b = fake.call("POST", "/v21.0/123/messages", long_wa, headers=AUTH)
    assert st == 400 and b["error"]["code"] == 100
    ok_wa = dict(WA_SEND, text={"body": "é" * 4096})
    assert fake.call("POST", "/v21.0/123/messages", ok_wa, headers=AUTH)[0] == 200
    msgr = {"recipient": {"id": "P"}, "message": {"text": "é" * 2001}}
    assert fake.call("POST", "/v21.0/me/messages", msgr, headers=AUTH)[0] == 400
    fake.control(graph_instagram_ids=["IG9"])
    ig = {"recipient": {"id": "IGSID"}, "message": {"text": "é" * 501}}
    assert fake.call("POST", "/v21.0/IG9/messages", ig, headers=AUTH)[0] == 400
    ig["message"]["text"] = "é" * 500
    st, _, b = fake.call("POST", "/v21.0/IG9/messages", ig, headers=AUTH)
    assert st == 200 and b["message_id"].startswith("aWdfFAKE")
    rec = fake.requests("graph")[0]
    assert rec["headers"]["authorization"] == "Bearer tok"
    assert rec["body"] == WA_SEND and rec["path"] == "/v21.0/123/messages"


def test_graph_faults(fake):
    fake.control(graph_faults=[{"code": 130429, "http": 400}, {"code": 131047, "http": 400},
                               {"http": 500}, {"delay_ms": 300}])
    st, _, b = fake.call("POST", "/v21.0/1/messages", WA_SEND, headers=AUTH)
    assert st == 400 and b["error"]["code"] == 130429
    assert b["error"]["error_data"]["messaging_product"] == "whatsapp"
    st, _, b = fake.call("POST", "/v21.0/1/messages", WA_SEND, headers=AUTH)
    assert st == 400 and b["error"]["code"] == 131047
    st, _, b = fake.call("POST", "/v21.0/1/messages", WA_SEND, headers=AUTH)
    assert st == 500 and b["error"]["type"] == "OAuthException"
    t = time.monotonic()
    assert fake.call("POST", "/v21.0/1/messages", WA_SEND, headers=AUTH)[0] == 200
    assert time.monotonic() - t >= 0.29


# ---------------------------------------------------------------- Telegram, Slack

def test_telegram(fake):
    st, _, b = fake.call("POST", "/bot1:AB/sendMessage", {"chat_id": 42, "text": "hi"})
    assert st == 200 and b["ok"] and b["result"]["chat"]["id"] == 42
    assert b["result"]["text"] == "hi" and b["result"]["message_id"] > 0
    assert fake.call("POST", "/bot1:AB/sendChatAction", {"chat_id": 42, "action": "typing"})[2] \
        == {"ok": True, "result": True}
    fake.control(telegram_faults=[{"error_code": 429, "retry_after": 3}])
    st, _, b = fake.call("POST", "/bot1:AB/sendMessage", {"chat_id": 42, "text": "hi"})
    assert st == 429 and b["parameters"]["retry_after"] == 3
    st, _, b = fake.call("POST", "/bot1:AB/sendMessage", {"chat_id": 42, "text": "x" * 4097})
    assert st == 400 and "too long" in b["description"]
    fake.control(telegram_token="1:AB")
    assert fake.call("POST", "/bot9:ZZ/sendMessage", {"chat_id": 1, "text": "a"})[0] == 401


def test_slack(fake):
    h = {"Authorization": "Bearer xoxb-1"}
    st, _, b = fake.call("POST", "/api/chat.postMessage", {"channel": "D1", "text": "hi"}, headers=h)
    assert st == 200 and b["ok"] and b["channel"] == "D1" and "." in b["ts"]
    assert fake.call("POST", "/api/chat.postMessage", {"channel": "D1", "text": "hi"})[2] \
        == {"ok": False, "error": "not_authed"}
    fake.control(slack_faults=[{"http": 429, "retry_after": "4"}])
    st, hd, b = fake.call("POST", "/api/chat.postMessage", {"channel": "D1", "text": "hi"}, headers=h)
    assert st == 429 and hd["Retry-After"] == "4" and b["error"] == "ratelimited"


# ---------------------------------------------------------------- control API

def test_control_refuses_typos(fake):
    with pytest.raises(FakeError):
        fake.control(llm_fualts=[])
    with pytest.raises(FakeError):
        fake.control(llm_faults=[{"stauts": 500}])
    with pytest.raises(FakeError):
        fake.control(llm_latency_ms=-1)
    assert fake.state()["faults_pending"]["llm"] == []


def test_requests_filters_and_reset(fake):
    fake.call("POST", "/v1/chat/completions", CHAT)
    fake.call("POST", "/v21.0/1/messages", WA_SEND, headers=AUTH)
    fake.call("GET", "/nothing")
    allr = fake.requests()
    assert [r["kind"] for r in allr] == ["llm", "graph", "other"]
    seqs = [r["seq"] for r in allr]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    assert [r["kind"] for r in fake.requests(since=seqs[0])] == ["graph", "other"]
    assert len(fake.requests(limit=1)) == 1
    assert fake.wait_requests("graph", 1, timeout=1)[0]["body"] == WA_SEND
    with pytest.raises(TimeoutError):
        fake.wait_requests("graph", 2, timeout=0.3)
    fake.control(llm_faults=[{"status": 500}], llm_latency_ms=5)
    fake.reset()
    assert fake.requests() == []
    st = fake.state()
    assert st["faults_pending"]["llm"] == [] and st["llm_latency_ms"] == 0
    fake.call("GET", "/nothing")
    assert fake.requests()[0]["seq"] > seqs[-1]  # seq keeps growing
    assert fake.stats()["total"] == 1


def test_record_max_and_body_max():
    with Fake(args=["--record-max", "3", "--body-max", "2048"]) as f:
        for _ in range(5):
            f.call("GET", "/x")
        s = f.stats()
        assert s["recorded"] == 3 and s["dropped"] == 2 and s["total"] == 5
        st, _, _ = f.call("POST", "/v1/chat/completions", {"model": "m", "messages": [
            {"role": "user", "content": "x" * 5000}]})
        assert st == 413


def test_stop_with_suspended_connections_is_clean():
    f = Fake()
    f.control(llm_latency_ms=30000)
    results = []

    def one():
        try:
            results.append(f.call("POST", "/v1/chat/completions", CHAT, timeout=20)[0])
        except Exception as e:  # the fake goes away: any outcome but a hang
            results.append(type(e).__name__)

    ts = [threading.Thread(target=one) for _ in range(5)]
    for t in ts:
        t.start()
    f.wait_requests("llm", 5, timeout=5)
    t0 = time.monotonic()
    assert f.stop() == 0
    assert time.monotonic() - t0 < 5
    for t in ts:
        t.join(10)
    assert len(results) == 5


# ---------------------------------------------------------------- loadgen

def test_loadgen_signed_unique_and_duplicates(fake):
    fake.control(webhook_secret="s3cret")
    r = loadgen(fake.webhook_url(), secret="s3cret", connections=8, requests=400,
                dup_ratio=0.25, users=50, seed=11)
    assert r["requests"] == 400 and r["completed"] == 400
    assert r["responses"] == {"200": 400} and r["errors"] == 0
    recs = fake.requests("webhook")
    assert len(recs) == 400
    ids = [x["body"]["entry"][0]["changes"][0]["value"]["messages"][0]["id"] for x in recs]
    assert len(ids) - len(set(ids)) == r["duplicates"]
    assert 50 <= r["duplicates"] <= 150
    users = {x["body"]["entry"][0]["changes"][0]["value"]["contacts"][0]["wa_id"] for x in recs}
    assert 1 < len(users) <= 50
    # the signature is over the exact bytes sent
    assert all(x["headers"]["x-hub-signature-256"].startswith("sha256=") for x in recs)
    wrong = loadgen(fake.webhook_url(), secret="nope", connections=2, requests=10)
    assert wrong["responses"] == {"401": 10}
    body = b'{"object":"whatsapp_business_account","entry":[]}'
    sig = meta_signature("s3cret", body)
    assert fake.call("POST", "/webhooks/whatsapp", body,
                     headers={"X-Hub-Signature-256": sig})[0] == 200
    assert fake.call("POST", "/webhooks/whatsapp", body + b" ",
                     headers={"X-Hub-Signature-256": sig})[0] == 401


def test_loadgen_messenger_and_get(fake):
    r = loadgen(fake.webhook_url("messenger"), secret="x", platform="messenger",
                requests=20, connections=2)
    assert r["completed"] == 20
    body = fake.requests("webhook")[0]["body"]
    assert body["object"] == "page" and body["entry"][0]["messaging"][0]["message"]["mid"]
    r = loadgen(fake.url + "/", path="/_ping", method="GET", duration=0.5, connections=4)
    assert r["completed"] > 50 and r["responses"].keys() == {"200"}
    assert r["latency_ms"]["p50"] <= r["latency_ms"]["p99"] <= r["latency_ms"]["max"] * 1.01


def test_loadgen_rate_and_refusals(fake):
    r = loadgen(fake.webhook_url(), secret="s", rate=200, duration=1, connections=4)
    assert 150 <= r["completed"] <= 210
    exe = os.path.join(build_dir(), "tests", "loadgen")
    for url in ("http://10.1.2.3:80/x", "https://127.0.0.1/x", "http://example.com/"):
        p = subprocess.run([exe, "--url", url, "--duration", "1"], capture_output=True)
        assert p.returncode == 2, url
    # nothing listening: bounded, reports connect errors
    r = loadgen("http://127.0.0.1:1/x", duration=0.5, connections=2)
    assert r["completed"] == 0 and r["error_kinds"]["connect"] > 0


def test_vmprobe_reports_windows_and_stops_on_sigterm():
    """vmprobe prints its header, then one line of 9 numbers per window, and
    exits 0 on SIGTERM; the work units take time and wake-ups are late by
    at least nothing (a window of zeros would mean it measured nothing)."""
    binary = os.path.join(build_dir(), "tests", "vmprobe")
    p = subprocess.Popen([binary, "--window-s", "1", "--work-every", "20",
                          "--mem-mb", "8", "--alu-iters", "20000",
                          "--mem-loads", "200"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2.6)
    finally:
        p.terminate()
    out, err = p.communicate(timeout=10)
    assert p.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("# vmprobe: period 1000 us")
    assert "20000 ALU iterations, 200 loads across 8 MB" in lines[0]
    rows = [[float(x) for x in ln.split()] for ln in lines if not ln.startswith("#")]
    assert len(rows) >= 2
    for unix_s, alu50, alu99, late50, late99, late_max, over1, mem50, mem99 in rows:
        assert abs(unix_s - time.time()) < 60
        assert 0 < alu50 <= alu99 and 0 < mem50 <= mem99
        assert 0 <= late50 <= late99 <= late_max and over1 >= 0


def test_vmprobe_refuses_bad_arguments():
    binary = os.path.join(build_dir(), "tests", "vmprobe")
    r = subprocess.run([binary, "--window-s", "0"], capture_output=True, text=True)
    assert r.returncode == 2 and "usage: vmprobe" in r.stderr
    r = subprocess.run([binary, "--bogus"], capture_output=True, text=True)
    assert r.returncode == 2 and "usage: vmprobe" in r.stderr
