"""`parley export` (DESIGN §4): training data from real conversations.

The real `parley serve` answers WhatsApp users through the fake LLM and
Graph API; the users rate the answers with Parley's own thumbs buttons and
with reactions, one opts out, and then the real `parley export` writes each
format. Every assertion is on the JSONL it printed:

  * which answers each format holds (labels: last click wins, sources
    that disagree are a conflict, neutral or no feedback is no label,
    opted-out and erased users are left out), and in which shape;
  * texts are PII-redacted and users appear only as their pseudonym;
  * --platform, --since, --until and --out; wrong arguments and a
    database that is not there give a one-line error and no file;
  * the export streams: its peak memory does not grow with the rows.
"""

import json
import os
import subprocess

import harness
from test_analytics import (THUMBS_UP, bot_reply, post, start, user_row,
                            wa_body, wa_button_reply, wa_reaction,
                            wait_reply_state)

THUMBS_DOWN = "\U0001F44E"
QUESTION = "Do you ship to Porto? Write to ann.lee@example.com please"
OTHER_ANSWER = "No, we do not ship to Portugal. Call +351 912 345 678."
FORMATS = ("sft", "dpo", "kto", "openai-sft", "openai-dpo", "raw")


def export(env, *args):
    """Run `parley export ARGS`: (CliResult, parsed rows)."""
    r = harness.cli(["export"] + list(args), env=env)
    assert harness.sanitizer_report(r.stderr) is None, r.stderr
    rows = []
    if r.rc == 0 and r.stdout:
        assert r.stdout.endswith("\n"), "the last JSONL line has no newline"
        rows = [json.loads(line) for line in r.stdout.split("\n")[:-1]]
    return r, rows


def rows_of(env, fmt, *args):
    r, rows = export(env, "--format", fmt, *args)
    assert r.rc == 0, f"parley export --format {fmt} failed: {r!r}"
    assert r.stderr.strip() == f"parley: exported {len(rows)} {fmt} rows", r.stderr
    return rows


def click(p, phone, mid, wamid, rid, up):
    way = "up" if up else "down"
    post(p, "whatsapp", wa_body([wa_button_reply(mid, phone, wamid,
                                                 f"parley_fb:{way}:{rid}",
                                                 THUMBS_UP if up else THUMBS_DOWN)]))


def ask(p, db, phone, mid, text):
    post(p, "whatsapp", harness.wa_text(mid, phone, text))
    wait_reply_state(db, mid)
    return bot_reply(db, mid)  # (response id, outbound id, wamid)


def wait_feedback(db, n):
    harness.wait_until(lambda: db.scalar("SELECT count(*) FROM feedback") >= n, 15,
                       what=f"{n} feedback rows")


def test_export_formats_labels_and_privacy(parley, fake):
    p = start(parley, fake, env={"PARLEY_FEEDBACK": "all"})
    db = parley.db
    env = parley.env()

    # u1 asks; thumbs down, then thumbs up: the last click counts (good).
    u1 = "15557400001"
    r1, _, w1 = ask(p, db, u1, "wamid.EX1", QUESTION)
    click(p, u1, "wamid.EX1D", w1, r1, up=False)
    wait_feedback(db, 1)
    click(p, u1, "wamid.EX1U", w1, r1, up=True)
    # u2 asks the very same question and gets another answer: thumbs down.
    fake.control(llm_reply=OTHER_ANSWER)
    u2 = "15557400002"
    r2, _, w2 = ask(p, db, u2, "wamid.EX2", QUESTION)
    fake.control(llm_reply=None)
    click(p, u2, "wamid.EX2D", w2, r2, up=False)
    # u3: thumbs up by button, thumbs down by reaction: a conflict.
    u3 = "15557400003"
    r3, _, w3 = ask(p, db, u3, "wamid.EX3", "When do you open on Sunday?")
    click(p, u3, "wamid.EX3U", w3, r3, up=True)
    post(p, "whatsapp", wa_body([wa_reaction("wamid.EX3R", u3, w3, THUMBS_DOWN)]))
    # u4: no feedback at all.
    u4 = "15557400004"
    r4, _, _ = ask(p, db, u4, "wamid.EX4", "Hello there")
    # u5: thumbs up, then STOP: left out of every export.
    u5 = "15557400005"
    r5, _, w5 = ask(p, db, u5, "wamid.EX5", "Do you sell gift cards?")
    click(p, u5, "wamid.EX5U", w5, r5, up=True)
    post(p, "whatsapp", harness.wa_text("wamid.EX5S", u5, "STOP"))
    wait_reply_state(db, "wamid.EX5S")
    wait_feedback(db, 6)
    harness.wait_until(lambda: db.scalar("SELECT count(*) FROM responses WHERE status = 'sent'")
                       == 6, 15, what="every response sent")
    labels = dict(db.query(
        "SELECT response_id, array_agg(polarity ORDER BY id) FROM feedback "
        "WHERE retracted_at IS NULL GROUP BY response_id"))
    assert labels == {r1: [-1, 1], r2: [-1], r3: [1, -1], r5: [1]}, labels
    pseudo = {u: user_row(db, "whatsapp", u)["pseudonym"] for u in (u1, u2, u3, u4)}
    prompt1 = db.scalar("SELECT request_messages FROM responses WHERE id = %s", (r1,))
    completion1 = db.scalar("SELECT completion FROM responses WHERE id = %s", (r1,))
    assert "ann.lee@example.com" in json.dumps(prompt1) + completion1, "test bug"

    # Every format: one fixed key set per file, no raw PII, no raw user id.
    out = {fmt: rows_of(env, fmt) for fmt in FORMATS}
    for fmt, rows in out.items():
        assert rows, f"{fmt}: no rows"
        keys = {tuple(r.keys()) for r in rows}
        assert len(keys) == 1, f"{fmt}: rows with different keys {keys}"
        text = json.dumps(rows, ensure_ascii=False)
        for secret in ("ann.lee@example.com", "912 345 678", u1, u2, u3, u4, u5):
            assert secret not in text, f"{fmt} export contains {secret!r}"
        assert "[EMAIL]" in text, f"{fmt}: the e-mail was not replaced by [EMAIL]"

    want_prompt = [{"role": m["role"], "content": m["content"].replace(
        "ann.lee@example.com", "[EMAIL]")} for m in prompt1]
    assert want_prompt[0]["role"] == "system" and want_prompt[-1]["role"] == "user", prompt1
    good = [{"role": "assistant", "content": completion1.replace("ann.lee@example.com",
                                                                   "[EMAIL]")}]
    bad = [{"role": "assistant", "content": OTHER_ANSWER.replace("+351 912 345 678",
                                                                  "[PHONE]")}]

    assert out["kto"] == [
        {"prompt": want_prompt, "completion": good, "label": True,
         "response_id": r1, "user": pseudo[u1]},
        {"prompt": want_prompt, "completion": bad, "label": False,
         "response_id": r2, "user": pseudo[u2]},
    ], out["kto"]
    assert out["sft"] == [{"prompt": want_prompt, "completion": good,
                           "response_id": r1, "user": pseudo[u1]}], out["sft"]
    assert out["dpo"] == [{"prompt": want_prompt, "chosen": good, "rejected": bad,
                           "chosen_response_id": r1, "rejected_response_id": r2}], out["dpo"]
    assert out["openai-sft"] == [{"messages": want_prompt + [dict(good[0], weight=1)]}], \
        out["openai-sft"]
    assert out["openai-dpo"] == [{"input": {"messages": want_prompt},
                                  "preferred_output": good,
                                  "non_preferred_output": bad}], out["openai-dpo"]

    raw = {r["response_id"]: r for r in out["raw"]}
    assert sorted(raw) == [r1, r2, r3, r4], f"raw holds {sorted(raw)}"
    assert [raw[r]["label"] for r in (r1, r2, r3, r4)] == ["good", "bad", "conflict", None]
    assert [(f["source"], f["polarity"]) for f in raw[r3]["feedback"]] == \
        [("button", 1), ("reaction", -1)], raw[r3]["feedback"]
    assert raw[r3]["feedback"][1]["emoji"] == THUMBS_DOWN, raw[r3]
    assert raw[r4]["feedback"] == [], raw[r4]
    assert [(f["source"], f["polarity"]) for f in raw[r1]["feedback"]] == [("button", 1)]
    assert raw[r1]["user"] == pseudo[u1] and raw[r1]["platform"] == "whatsapp", raw[r1]
    assert raw[r1]["status"] == "sent" and raw[r1]["completion"] == good[0]["content"]
    assert raw[r1]["prompt"] == want_prompt and raw[r1]["model"], raw[r1]

    # Filters.
    assert rows_of(env, "kto", "--platform", "messenger") == []
    assert len(rows_of(env, "kto", "--platform", "whatsapp")) == 2
    t2 = db.scalar("SELECT created_at FROM responses WHERE id = %s", (r2,)).isoformat()
    assert [r["response_id"] for r in rows_of(env, "kto", "--since", t2)] == [r2]
    assert [r["response_id"] for r in rows_of(env, "kto", "--until", t2)] == [r1]
    assert rows_of(env, "raw", "--since", "2999-01-01") == []
    assert len(rows_of(env, "raw", "--until", "2999-01-01")) == 4

    # --out: the same rows in the file, nothing left beside it.
    d = harness.log_dir() / "export-out"
    d.mkdir(parents=True, exist_ok=True)
    for f in d.iterdir():
        f.unlink()
    path = d / "kto.jsonl"
    r = harness.cli(["export", "--format", "kto", "--out", str(path)], env=env)
    assert r.rc == 0 and r.stdout == "", r
    assert r.stderr.strip() == f"parley: exported 2 kto rows to {path}", r.stderr
    assert [json.loads(x) for x in path.read_text().splitlines()] == out["kto"]
    assert sorted(os.listdir(d)) == ["kto.jsonl"], os.listdir(d)

    # --manifest: per line of the file, the responses and users it holds
    # (the OpenAI formats carry no ids of their own).
    for fmt, want in (("kto", [[r1], [r2]]), ("openai-dpo", [[r1, r2]])):
        data, man = d / f"{fmt}.jsonl", d / f"{fmt}.manifest.jsonl"
        r = harness.cli(["export", "--format", fmt, "--out", str(data),
                         "--manifest", str(man)], env=env)
        assert r.rc == 0, r
        lines = [json.loads(x) for x in man.read_text().splitlines()]
        assert [x["line"] for x in lines] == list(range(1, len(want) + 1)), lines
        assert [x["response_ids"] for x in lines] == want, lines
        users = {r1: pseudo[u1], r2: pseudo[u2]}
        assert [x["users"] for x in lines] == [[users[i] for i in w] for w in want], lines
        assert len(data.read_text().splitlines()) == len(want)
    assert not [f for f in os.listdir(d) if ".partial-" in f], os.listdir(d)

    # After erasure, u1's answers are gone from every export, the pair too.
    r = harness.cli(["erase", "--user", pseudo[u1]], env=env)
    assert r.rc == 0, r
    assert [x["response_id"] for x in rows_of(env, "kto")] == [r2]
    assert rows_of(env, "dpo") == []
    assert sorted(x["response_id"] for x in rows_of(env, "raw")) == [r2, r3, r4]


def test_export_bad_arguments_and_no_database(parley, tmp_path):
    env = parley.env()
    parley.migrate(env)
    cases = [
        ([], 2, "export needs --format"),
        (["--format"], 2, "option needs a value: --format"),
        (["--format", "csv"], 2, "unknown export format: csv"),
        (["--format", "kto", "--platform", "myspace"], 2, "unknown platform: myspace"),
        (["--format", "kto", "--since", "yesterday-ish"], 1, "export:"),
        (["--format", "kto", "--out", str(tmp_path / "no" / "such" / "dir.jsonl")], 1,
         "cannot write"),
        (["--format", "kto", "--max-per-user", "0"], 2, "--max-per-user wants a number"),
        (["--format", "kto", "--max-per-user", "3x"], 2, "--max-per-user wants a number"),
        (["--format", "kto", "--out", str(tmp_path / "a"), "--manifest", str(tmp_path / "a")],
         2, "name the same file"),
    ]
    for args, rc, msg in cases:
        r = harness.cli(["export"] + args, env=env)
        assert r.rc == rc, f"export {args}: {r!r}"
        assert r.stdout == "", f"export {args} printed rows: {r!r}"
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and msg in lines[0], f"export {args}: {r!r}"
    r = harness.cli(["export", "--format", "kto", "--manifest", str(tmp_path / "m")], env=env)
    assert r.rc == 2 and "--manifest needs --out" in r.stderr, r
    r = harness.cli(["serve", "--format", "kto"], env=env)
    assert r.rc == 2 and "apply to export only" in r.stderr, r

    # No database: an error, and --out leaves no file behind.
    path = tmp_path / "x.jsonl"
    dead = dict(env, PARLEY_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none")
    r = harness.cli(["export", "--format", "raw", "--out", str(path)], env=dead)
    assert r.rc == 1 and "could not connect to the database: " in r.stderr, r
    assert len(r.stderr.strip().splitlines()) == 1, f"not one line: {r!r}"
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())


FILL = """
WITH u AS (
    INSERT INTO users (platform, platform_user_id, pseudonym)
    VALUES ('whatsapp', %(uid)s, md5(%(uid)s)) RETURNING id),
c AS (
    INSERT INTO conversations (user_id, platform, channel)
    SELECT id, 'whatsapp', 'PHONE' FROM u RETURNING id),
r AS (
    INSERT INTO responses (conversation_id, status, kind, model, request_messages,
                           completion)
    SELECT c.id, 'sent', 'llm', 'm',
           jsonb_build_array(jsonb_build_object('role', 'system', 'content', 'Be brief.'),
                             jsonb_build_object('role', 'user',
                                                'content', 'question ' || g)),
           repeat('An answer of about a kilobyte. ', 32) || g
    FROM c, generate_series(1, %(n)s) g RETURNING id, conversation_id)
INSERT INTO feedback (response_id, conversation_id, user_id, source, polarity)
SELECT r.id, r.conversation_id, (SELECT id FROM u), 'button', 1 FROM r
"""


def test_export_caps_rows_per_user(parley):
    env = parley.env()
    parley.migrate(env)
    db = parley.db
    db.execute(FILL, {"uid": "heavy", "n": 5})
    db.execute(FILL, {"uid": "light", "n": 2})
    heavy = db.scalar("SELECT pseudonym FROM users WHERE platform_user_id = 'heavy'")
    ids = {u: [r[0] for r in db.query(
        "SELECT r.id FROM responses r JOIN conversations c ON c.id = r.conversation_id "
        "JOIN users u ON u.id = c.user_id WHERE u.platform_user_id = %s ORDER BY r.id", (u,))]
        for u in ("heavy", "light")}
    assert len(ids["heavy"]) == 5 and len(ids["light"]) == 2, ids
    for fmt in ("kto", "sft", "raw"):
        got = [r["response_id"] for r in rows_of(env, fmt)]
        assert got == sorted(ids["heavy"] + ids["light"]), (fmt, got)
        got = [r["response_id"] for r in rows_of(env, fmt, "--max-per-user", "3")]
        # The heavy user's three most recent, the light user's two.
        assert got == sorted(ids["heavy"][-3:] + ids["light"]), (fmt, got)
    got = rows_of(env, "kto", "--max-per-user", "1")
    assert [(r["user"], r["response_id"]) for r in got if r["user"] == heavy] == \
        [(heavy, ids["heavy"][-1])], got


def peak_rss_kb(env, args):
    """Run `parley ARGS` with stdout to /dev/null: (exit status, peak RSS in kB)."""
    with open(os.devnull, "wb") as null:
        proc = subprocess.Popen([harness.parley_bin()] + args, env=harness.child_env(env),
                                stdout=null, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.stderr.read()
        proc.stderr.close()
    return os.waitstatus_to_exitcode(status), usage.ru_maxrss


def test_export_memory_does_not_grow_with_rows(parley):
    parley.migrate(parley.env())
    db = parley.db
    # Freed memory is reused at once (ASan would otherwise hold up to
    # 256 MB of it in quarantine and the peak would measure the churn).
    env = dict(parley.env(), ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:"
                                          "quarantine_size_mb=1")
    db.execute(FILL, {"uid": "small", "n": 1000})
    rc, small = peak_rss_kb(env, ["export", "--format", "sft"])
    assert rc == 0
    db.execute(FILL, {"uid": "big", "n": 24000})
    n, size = db.query("SELECT count(*), sum(length(completion) + "
                       "length(request_messages::text)) FROM responses")[0]
    assert n == 25000 and size > 25_000_000, (n, size)
    rc, big = peak_rss_kb(env, ["export", "--format", "sft"])
    assert rc == 0
    # Holding the result would add > 25 MB; streaming adds nothing to speak of.
    assert big - small < 8 * 1024, f"peak RSS {small} kB for 1,000 rows, {big} kB for 25,000"
