#!/usr/bin/env bash
# Measure the ceilings of the fakes themselves: fakeup's throughput per path
# and loadgen's own cost per request (so the benchmark knows neither is the
# bottleneck). Uses the release build:
#   make BUILD=release build/release/tests/fakeup build/release/tests/loadgen
#   tests/fakes/ceiling.sh [DURATION_S] [CONNECTIONS] [FAKEUP_THREADS]
# Prints one line per scenario: rps, latency p50/p99 (ms), and the CPU time
# each side spent per request (microseconds). CPU per request hardly depends
# on other load on the box, so "fakeup max" (2 cores / fakeup's CPU per
# request) and "loadgen max" (1 core / loadgen's CPU per request) are the
# ceilings even when the measured rps is held down by other jobs.
set -euo pipefail
cd "$(dirname "$0")/../.."

DUR=${1:-5}
CONNS=${2:-64}
THREADS=${3:-2}
B=${PARLEY_BUILD_DIR:-build/release}/tests
TMP=$(mktemp -d)
FAKE_PID=
cleanup() {
    if [ -n "$FAKE_PID" ]; then
        kill "$FAKE_PID" 2>/dev/null || true
        wait "$FAKE_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

for bin in "$B/fakeup" "$B/loadgen"; do
    [ -x "$bin" ] || { echo "missing $bin (make BUILD=release tests)" >&2; exit 1; }
done

start_fake() {
    "$B/fakeup" --port 0 --threads "$THREADS" "$@" >"$TMP/port" 2>"$TMP/fake.log" &
    FAKE_PID=$!
    for _ in $(seq 1 100); do
        PORT=$(sed -n 's/^port=//p' "$TMP/port")
        [ -n "$PORT" ] && return 0
        sleep 0.05
    done
    echo "fakeup did not start" >&2
    exit 1
}

stop_fake() {
    kill "$FAKE_PID"
    wait "$FAKE_PID" 2>/dev/null || true
    FAKE_PID=
}

fake_ticks() {  # utime + stime of fakeup, in clock ticks
    awk '{print $14 + $15}' "/proc/$FAKE_PID/stat"
}

cat >"$TMP/report.py" <<'PY'
import json, sys
name, out, tm, ticks, hz = sys.argv[1:]
d = json.load(open(out))
lines = [l for l in open(tm).read().split("\n") if l.strip()]
user, sys_ = (float(x) for x in lines[-1].split())
n = max(d["completed"], 1)
lg_us = 1e6 * (user + sys_) / n
fk_us = 1e6 * int(ticks) / int(hz) / n
bad = d["completed"] - d["responses"].get("200", 0) + d["errors"]
print("%-29s rps=%6.0f p50=%5.2fms p99=%6.2fms bad=%d | fakeup %5.1f us/req"
      " (max %3.0fk/s on 2 cores) | loadgen %5.1f us/req (max %3.0fk/s per core)"
      % (name, d["rps"], d["latency_ms"]["p50"], d["latency_ms"]["p99"], bad,
         fk_us, 2e3 / max(fk_us, 0.01), lg_us, 1e3 / max(lg_us, 0.01)))
PY

run() {  # name, loadgen args...
    local name=$1 t0 t1
    shift
    TIMEFORMAT='%U %S'
    t0=$(fake_ticks)
    { time "$B/loadgen" --connections "$CONNS" --duration "$DUR" "$@" >"$TMP/out.json"; } 2>"$TMP/time"
    t1=$(fake_ticks)
    python3 "$TMP/report.py" "$name" "$TMP/out.json" "$TMP/time" "$((t1 - t0))" "$(getconf CLK_TCK)"
}

cat >"$TMP/llm.json" <<'JSON'
{"model":"llama-3.1-8b-instant","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Do you ship to Lisbon?"}],"max_completion_tokens":512,"temperature":0.3}
JSON
cat >"$TMP/llm_stream.json" <<'JSON'
{"model":"llama-3.1-8b-instant","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Do you ship to Lisbon?"}]}
JSON
cat >"$TMP/wa.json" <<'JSON'
{"messaging_product":"whatsapp","recipient_type":"individual","to":"15551234567","type":"text","text":{"body":"Yes, we ship to Lisbon."}}
JSON

echo "fakeup --threads $THREADS, loadgen --connections $CONNS, ${DUR}s each, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"
start_fake --webhook-secret S
U=http://127.0.0.1:$PORT
run "GET /_ping"                   --url "$U/" --path /_ping --method GET
run "POST llm (non-stream)"        --url "$U/v1/chat/completions" --body-file "$TMP/llm.json"
run "POST llm (stream)"            --url "$U/v1/chat/completions" --body-file "$TMP/llm_stream.json"
run "POST graph (whatsapp send)"   --url "$U/v21.0/1/messages" --body-file "$TMP/wa.json" --header "Authorization: Bearer t"
run "POST webhook (signed, rec)"   --url "$U/webhooks/whatsapp" --secret S --dup-ratio 0.1
stop_fake
start_fake --webhook-secret S --no-record
U=http://127.0.0.1:$PORT
run "POST webhook (signed, norec)" --url "$U/webhooks/whatsapp" --secret S --dup-ratio 0.1
run "POST llm (norec)"             --url "$U/v1/chat/completions" --body-file "$TMP/llm.json"
stop_fake
