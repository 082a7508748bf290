#!/usr/bin/env bash
# Measure the ceilings of the fakes themselves: fakeup's throughput per path
# and loadgen's own cost per request (so the benchmark knows neither is the
# bottleneck). Uses the release build:
#   make BUILD=release build/release/tests/fakeup build/release/tests/loadgen
#   tests/fakes/ceiling.sh [DURATION_S] [CONNECTIONS] [FAKEUP_THREADS]
# Prints one line per scenario: rps, latency p50/p99 (ms), and loadgen's CPU
# use (share of one core, microseconds of CPU per request).
set -euo pipefail
cd "$(dirname "$0")/../.."

DUR=${1:-5}
CONNS=${2:-64}
THREADS=${3:-2}
B=${PARLEY_BUILD_DIR:-build/release}/tests
TMP=$(mktemp -d)
FAKE_PID=
cleanup() {
    [ -n "$FAKE_PID" ] && kill "$FAKE_PID" 2>/dev/null && wait "$FAKE_PID" 2>/dev/null
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

run() {  # name, loadgen args...
    local name=$1
    shift
    TIMEFORMAT='%U %S'
    { time "$B/loadgen" --connections "$CONNS" --duration "$DUR" "$@" >"$TMP/out.json"; } 2>"$TMP/time"
    python3 - "$name" "$TMP/out.json" "$TMP/time" <<'EOF'
import json, sys
name, out, tm = sys.argv[1:]
d = json.load(open(out))
lines = [l for l in open(tm).read().split("\n") if l.strip()]
user, sys_ = (float(x) for x in lines[-1].split())
cpu = user + sys_
bad = d["completed"] - d["responses"].get("200", 0) + d["errors"]
print("%-28s rps=%8.0f p50=%6.2fms p99=%6.2fms non200+errors=%d  loadgen: %3.0f%% of a core, %.1f us/req"
      % (name, d["rps"], d["latency_ms"]["p50"], d["latency_ms"]["p99"], bad,
         100 * cpu / d["duration_s"], 1e6 * cpu / max(d["completed"], 1)))
EOF
}

cat >"$TMP/llm.json" <<'EOF'
{"model":"llama-3.1-8b-instant","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Do you ship to Lisbon?"}],"max_completion_tokens":512,"temperature":0.3}
EOF
cat >"$TMP/llm_stream.json" <<'EOF'
{"model":"llama-3.1-8b-instant","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Do you ship to Lisbon?"}]}
EOF
cat >"$TMP/wa.json" <<'EOF'
{"messaging_product":"whatsapp","recipient_type":"individual","to":"15551234567","type":"text","text":{"body":"Yes, we ship to Lisbon."}}
EOF

echo "fakeup --threads $THREADS, loadgen --connections $CONNS, ${DUR}s each, $(nproc) cores"
start_fake --webhook-secret S
U=http://127.0.0.1:$PORT
run "GET /_ping"                  --url "$U/" --path /_ping --method GET
run "POST llm (non-stream)"       --url "$U/v1/chat/completions" --body-file "$TMP/llm.json"
run "POST llm (stream)"           --url "$U/v1/chat/completions" --body-file "$TMP/llm_stream.json"
run "POST graph (whatsapp send)"  --url "$U/v21.0/1/messages" --body-file "$TMP/wa.json" --header "Authorization: Bearer t"
run "POST webhook (signed, rec)"  --url "$U/webhooks/whatsapp" --secret S --dup-ratio 0.1
stop_fake
start_fake --webhook-secret S --no-record
U=http://127.0.0.1:$PORT
run "POST webhook (signed, norec)" --url "$U/webhooks/whatsapp" --secret S --dup-ratio 0.1
run "POST llm (norec)"            --url "$U/v1/chat/completions" --body-file "$TMP/llm.json"
stop_fake
