#!/usr/bin/env bash
# A template change on a running site: `sesame serve` runs on the built
# 250,000-item gallery, the base template gains a marker (so every page's bytes
# change), `sesame build` runs beside it, and a client polls the router until
# an item page carries the marker. Timed from the start of the build to the
# router serving the new page; meanwhile a probe times a request every 10 ms
# (a router that stalls while it applies the new generation shows in the max).
# The compressed variants that follow are timed apart. With
# BASELINE=path/to/sesame (an earlier build), that binary runs the same change
# first, in the same run.
#
# Usage: DATASET=path/to/gallery-250k.ndjson.gz bench/template-change.sh
# Env: ITEMS (default 250000; reuses $WORK/sesame-ITEMS), BASELINE.
source "$(dirname "$0")/lib.sh"
build_release
ITEMS=${ITEMS:-250000}
site=$(built_site "$ITEMS")
item=/sprites/$(head -1 "$(gallery "$ITEMS")" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')/
base=$site/templates/_base.html
cp "$base" "$WORK/_base.html.orig"
trap 'cp "$WORK/_base.html.orig" "$base"' EXIT

# change LABEL BINARY → one table row
change() {
  local port server probe build started served marker
  port=$(free_port)
  "$2" --project "$site" serve --listen "127.0.0.1:$port" > "$WORK/serve-template.log" 2>&1 &
  server=$!
  wait_http "http://127.0.0.1:$port/healthz"
  marker="<!-- template change $(date +%s.%N) -->"
  cp "$WORK/_base.html.orig" "$base"
  sed -i "0,/<head>/s//<head>$marker/" "$base"
  say "$1: template changed; building beside serve"
  python3 "$ROOT/bench/probe.py" "http://127.0.0.1:$port/sprites/" 0.01 > "$WORK/probe.out" &
  probe=$!
  started=$(date +%s.%N)
  "$2" --project "$site" build > "$WORK/template-build.log" &
  build=$!
  until curl -fs "http://127.0.0.1:$port$item" | grep -qF "$marker"; do sleep 0.05; done
  served=$(python3 -c "print(f'{$(date +%s.%N) - $started:.1f}')")
  wait "$build"
  # Until the router has applied the whole generation (its refresh follows the commit).
  sleep 2
  kill -TERM $probe; wait $probe || true
  kill $server; wait $server 2>/dev/null || true
  read -r p50 p99 max n < "$WORK/probe.out"
  echo "| $1 | $served s | $p50 / $p99 / $max ms ($n requests) | $(paste -sd' ' "$WORK/template-build.log") |"
}

OUT=$WORK/template-change.md
{
  echo "$(machine) Site: $ITEMS items, \`serve\` running, \`sesame build\` beside it."
  echo
  echo "| sesame | from the build's start to the router serving the changed page | a page's response time meanwhile: p50 / p99 / max | the build's own report |"
  echo "|---|---|---|---|"
  [ -n "${BASELINE:-}" ] && change "baseline ($("$BASELINE" --version))" "$BASELINE"
  change "$("$BIN" --version)" "$BIN"
} > "$OUT"
cat "$OUT"
record template-change "$OUT"
