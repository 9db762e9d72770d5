#!/usr/bin/env bash
# Tree search on the bundled models, end to end: CONCURRENCY (default 1) DVTS searches
# of width 1 at budget 256 kept in flight for DURATION seconds (default 20; searches
# then get the load driver's grace to finish) on one generator and one verifier, then
# what each worker computed and reused (its metrics) and its resident memory. A command,
# not a test (docs/benchmarks.md, "Tree search on the bundled models").
#
#   cargo build --release -p ponder-cli -p ponder-load
#   PONDER_BIN=target/release/ponder OUT=/tmp/ts bench/tree-search.sh
#
# Ports 47100-47102 and 47111-47112 (metrics) on 127.0.0.1. For a before/after, run it
# once per build in turn with PONDER_BIN set, nothing else running.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${PONDER_BIN:-target/release/ponder}; load=target/release/ponder-load
out=${OUT:-$(mktemp -d)}; mkdir -p "$out"
key=tree-key-0123456789abcdef0
printf 'tree:%s\n' "$key" > "$out/keys"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
$bin node generator --model models --listen 127.0.0.1:47101 --metrics-addr 127.0.0.1:47111 > "$out/g.log" 2>&1 & pids+=($!)
$bin node verifier --model models --listen 127.0.0.1:47102 --metrics-addr 127.0.0.1:47112 > "$out/v.log" 2>&1 & pids+=($!)
sleep 4
PONDER_API_KEYS_FILE="$out/keys" $bin node orchestrator --listen 127.0.0.1:47100 \
  --generators 127.0.0.1:47101 --verifiers 127.0.0.1:47102 --budget-mode fixed > "$out/o.log" 2>&1 & pids+=($!)
sleep 4
$load run --addr 127.0.0.1:47100 --token "$key" --concurrency "${CONCURRENCY:-1}" \
  --duration "${DURATION:-20}s" --grace 130s --mix dvts:1:256 --levels 4=1,5=1,6=1 \
  --seed 5 --quiet --json "$out/load.json" > "$out/load.log" 2>&1
for role in generator:47111 verifier:47112; do
  curl -s "127.0.0.1:${role#*:}/metrics" | grep -E '^ponder_(tokens_total|prefix_cache)' > "$out/${role%%:*}.metrics"
done
echo "resident KB: generator $(ps -o rss= -p "${pids[0]}") verifier $(ps -o rss= -p "${pids[1]}")"
python3 - "$out" <<'PY'
import json, re, sys
out = sys.argv[1]
r = json.load(open(f"{out}/load.json"))
print(f"searches {r['ok']} of {r['sent']} ok, mean {r['latency']['mean']:.1f} s, "
      f"generations {r['mean_generations']}")
for role in ("generator", "verifier"):
    m = {}
    for line in open(f"{out}/{role}.metrics"):
        name, value = line.rsplit(" ", 1)
        m[re.sub(r'role="[a-z]+",?', "", name).replace("{}", "")] = float(value)
    prompt = m.get('ponder_tokens_total{kind="prompt"}', 0)
    saved = m.get("ponder_prefix_cache_saved_tokens_total", 0)
    generated = m.get('ponder_tokens_total{kind="generated"}', 0)
    scored = m.get('ponder_tokens_total{kind="scored"}', 0)  # cached tokens excluded
    computed = (prompt - saved if prompt else 0) + generated + scored
    print(f"{role}: {computed:,.0f} tokens through the model (prompt {prompt:,.0f}, "
          f"generated {generated:,.0f}, scored {scored:,.0f}; {saved:,.0f} from the prefix "
          f"cache, which holds {m.get('ponder_prefix_cache_bytes', 0) / 2**20:,.0f} MiB)")
PY
