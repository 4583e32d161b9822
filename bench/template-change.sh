#!/usr/bin/env bash
# A template change on a running site: `sesame serve` runs on the built
# 250,000-item gallery, the base template gains a marker (so every page's bytes
# change), `sesame build` runs beside it, and a client polls the router until
# an item page carries the marker. Timed from the start of the build to the
# router serving the new page; the compressed variants that follow are timed
# apart.
#
# Usage: DATASET=path/to/gallery-250k.ndjson.gz bench/template-change.sh
# Env: ITEMS (default 250000; reuses $WORK/sesame-ITEMS).
source "$(dirname "$0")/lib.sh"
build_release
ITEMS=${ITEMS:-250000}
site=$(built_site "$ITEMS")
port=$(free_port)
"$BIN" --project "$site" serve --listen "127.0.0.1:$port" > "$WORK/serve-template.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null' EXIT
wait_http "http://127.0.0.1:$port/healthz"
item=/sprites/$(head -1 "$(gallery "$ITEMS")" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')/
marker="<!-- template change $(date +%s) -->"
base=$site/templates/_base.html
cp "$base" "$WORK/_base.html.orig"
sed -i "0,/<head>/s//<head>$marker/" "$base"
say "template changed; building beside serve"
# Requests keep coming during the change: a probe times one every 10 ms.
python3 "$ROOT/bench/probe.py" "http://127.0.0.1:$port/sprites/" 0.01 > "$WORK/probe.out" &
probe=$!
started=$(date +%s.%N)
"$BIN" --project "$site" build > "$WORK/template-build.log" &
build=$!
until curl -fs "http://127.0.0.1:$port$item" | grep -qF "$marker"; do sleep 0.05; done
served=$(python3 -c "print(f'{$(date +%s.%N) - $started:.1f}')")
wait "$build"
# Until the router has applied the whole generation (its refresh follows the commit).
sleep 2
kill -TERM $probe; wait $probe || true
read -r probe_p50 probe_p99 probe_max probe_n < "$WORK/probe.out"
cp "$WORK/_base.html.orig" "$base"
OUT=$WORK/template-change.md
{
  echo "$(machine) Site: $ITEMS items, \`serve\` running, \`sesame build\` beside it."
  echo
  echo "| from the build's start to the router serving the changed page | a page's response time meanwhile (p50 / p99 / max of $probe_n) | the build's own report |"
  echo "|---|---|---|"
  echo "| $served s | $probe_p50 / $probe_p99 / $probe_max ms | $(paste -sd' ' "$WORK/template-build.log") |"
} > "$OUT"
cat "$OUT"
record template-change "$OUT"
