"""core/batch.c against a real PostgreSQL: many threads' calls become few
transactions, each caller gets its own row back, and a failing call fails
alone (its neighbours are retried one by one and committed once)."""
import json
import subprocess

import harness

FUNC = """
CREATE TABLE bc_log (v int PRIMARY KEY);
CREATE FUNCTION bc_call(j jsonb) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep((j->>'sleep_ms')::int / 1000.0);
    INSERT INTO bc_log VALUES ((j->>'v')::int);  -- twice would raise
    IF (j->>'fail')::boolean THEN
        RAISE EXCEPTION 'asked to fail: %', j->>'v';
    END IF;
    RETURN 'r' || (j->>'v');
END $$;
"""


def run_check(db, threads, calls, fail_every, sleep_ms=0):
    out = subprocess.run(
        [str(harness.build_dir() / "tests" / "batchcheck"), db.url, str(threads),
         str(calls), str(fail_every), str(sleep_ms)],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_calls_are_grouped_and_each_gets_its_own_result(db):
    db.query(FUNC)
    # Every call takes 10 ms in the database: while a batch runs, the other
    # threads' calls queue up and go in the next one.
    r = run_check(db, threads=32, calls=5, fail_every=0, sleep_ms=10)
    assert r["mismatch"] == 0 and r["failed"] == 0
    assert r["ok"] == 32 * 5 == r["calls"]
    assert 0 < r["batches"] <= r["calls"] / 4, r
    assert r["fallbacks"] == 0
    assert db.scalar("SELECT count(*) FROM bc_log") == 32 * 5


def test_many_threads_fast_calls(db):
    db.query(FUNC)
    r = run_check(db, threads=32, calls=40, fail_every=0)
    assert r["mismatch"] == 0 and r["failed"] == 0
    assert r["ok"] == 32 * 40 == r["calls"]
    assert db.scalar("SELECT count(*) FROM bc_log") == 32 * 40


def test_a_failing_call_fails_alone(db):
    db.query(FUNC)
    r = run_check(db, threads=16, calls=30, fail_every=7)
    failing = sum(1 for t in range(16) for i in range(30)
                  if (t * 100000 + i) % 7 == 0)
    assert r["mismatch"] == 0, r
    assert r["failed"] == failing
    assert r["ok"] == 16 * 30 - failing
    assert r["fallbacks"] >= 1
    # Every good call committed exactly once (bc_log's key would have
    # refused a second insert), no failed call left a row.
    rows = {v for (v,) in db.query("SELECT v FROM bc_log")}
    assert len(rows) == r["ok"]
    assert all(v % 7 != 0 for v in rows)
