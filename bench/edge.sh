#!/usr/bin/env bash
# Serving from the edge: what the path manifest costs, and the Worker in
# workerd against the router on the same pages.
#
# 1. The manifest at scale: a gallery of ITEMS (default 250,000) built
#    (every publish writes its manifest), then ADDS (default 1000) adds published one by
#    one: manifest objects written per full build and per add (typical, and
#    with the base writes and checkpoints among them), and the bytes a
#    generation writes (blobs, its root three times: its blob, the
#    generation's copy and `current`).
# 2. Serving: a gallery of SERVE_ITEMS (default 5,000) in a local object
#    directory, mirrored into the R2 bucket of the Worker running in workerd
#    (Miniflare, edge/cloudflare/test/harness.mjs), and served by the router
#    too; wrk on one hot page and on random pages, same command for both.
#
# Usage: DATASET=path/to/gallery-250k.ndjson.gz bench/edge.sh
# Env: ITEMS, ADDS, SERVE_ITEMS, DURATION (default 10s), CONNECTIONS (default 16);
# PARTS="manifest serve" (default both; a part left out keeps its last table).
#
# For scale, Miniflare's own cost is measured too (test/floor.mjs): a Worker
# answering a constant, and one reading one 5 KB object from its R2 bucket.
source "$(dirname "$0")/lib.sh"
ensure_tools wrk
build_release
need_dataset
ITEMS=${ITEMS:-250000} ADDS=${ADDS:-1000} SERVE_ITEMS=${SERVE_ITEMS:-5000}
DURATION=${DURATION:-10s} CONNECTIONS=${CONNECTIONS:-16}
EDGE=$ROOT/edge/cloudflare
if [ ! -d "$EDGE/node_modules/miniflare" ]; then
  say "installing the Worker's packages (npm ci)"
  (cd "$EDGE" && npm ci --no-audit --no-fund)
fi
OUT=$WORK/edge.md
PARTS=${PARTS:-manifest serve}

# The numbers of a "manifest at generation …" line:
# "blobs shards_written shards base(0|1) kilobytes root_kb seconds".
manifest_numbers() {
  python3 -c '
import re, sys
line = re.compile(r"^manifest at generation \d+: ([\d,]+) blobs written \(([\d,]+) of ([\d,]+) shards(, the base)?(, whole)?; ([\d.]+) KB\) and the root \(([\d.]+) KB\) in ([\d.]+) s$")
for text in sys.stdin:
    m = line.match(text.strip())
    if m:
        n = lambda i: m.group(i).replace(",", "")
        print(n(1), n(2), n(3), 1 if m.group(4) else 0, n(6), n(7), n(8))
'
}

if [[ " $PARTS " == *" manifest "* ]]; then
say "manifest: a $ITEMS-item gallery, built"
site=$WORK/sesame-edge-$ITEMS
sesame_site "$site" "$(gallery "$ITEMS")"
timed edge-build "$BIN" --project "$site" build > "$WORK/edge-build.out"
read -r fb fw fs _ fkb froot fsec <<< "$(manifest_numbers < "$WORK/edge-build.out")"
build_line=$(grep '^built generation' "$WORK/edge-build.out")

say "manifest: $ADDS adds, one generation each"
adds=$WORK/edge-adds.ndjson
python3 - "$ADDS" > "$adds" <<'PY'
import json, sys
for i in range(int(sys.argv[1])):
    doc = {"title": f"Edge add {i}", "created": "2026-12-01", "owner": f"edge{i % 7}", "tags": ["fresh", f"t{i % 5}"]}
    print(json.dumps({"op": "upsert", "collection": "sprites", "id": str(900000 + i), "doc": doc}))
PY
"$BIN" --project "$site" apply "$adds" --batch 1 > "$WORK/edge-adds.out"
manifest_numbers < "$WORK/edge-adds.out" > "$WORK/edge-adds.numbers"
python3 - "$WORK/edge-adds.numbers" "$ADDS" > "$WORK/edge-adds.row" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
blobs = [r[0] for r in rows]; bases = sum(r[3] for r in rows)
checkpoints = sum(1 for r in rows if r[1] > 0)
kb = [r[4] + 3 * r[5] for r in rows]; root = [r[5] for r in rows]; ms = [r[6] * 1e3 for r in rows]
typical = [b for b, r in zip(blobs, rows) if r[1] == 0]
print(f"| {len(rows)} adds, one generation each | {statistics.median(blobs) + 3:.0f} (max without a checkpoint {max(typical) + 3:.0f}) "
      f"| {bases:.0f} | {checkpoints} (max {max(r[1] for r in rows):.0f} shards) "
      f"| {statistics.median(kb):.0f} KB (mean {statistics.mean(kb):.0f} KB) | {statistics.median(root):.1f} KB | {statistics.median(ms):.1f} ms (max {max(ms):.0f} ms) |")
PY

{
  echo "**The manifest at $ITEMS items** (\`[edge]\` defaults: \`shard_entries = 256\`, \`recent_entries = 256\`, \`delta_entries = 16384\`):"
  echo
  echo "| publish | manifest objects written (blobs and the root three times), median | base writes | checkpoints (shards rewritten) | bytes a generation, median (mean) | root | manifest time, median |"
  echo "|---|---|---|---|---|---|---|"
  echo "| full build ($build_line) | $((fb + 3)) ($fw of $fs shards) | — | — | $(python3 -c "print(f'{$fkb / 1e3:.1f}')") MB | $froot KB | $fsec s |"
  cat "$WORK/edge-adds.row"
  echo
  echo "Bytes a generation: the blobs written (shards, the base, the moderation list when it changed) and the root three times (its blob, which the commit names, gzip-compressed, counted at its JSON size here; \`manifest/roots/N\` and \`manifest/current\`)."
} > "$WORK/edge-manifest.md"
fi

if [[ " $PARTS " == *" serve "* ]]; then
say "serving: a $SERVE_ITEMS-item gallery in a local object directory"
served=$WORK/sesame-edge-serve
sesame_site "$served" "$(gallery "$SERVE_ITEMS")"
sed -i '1a storage_url = "file://.sesame/objects"' "$served/sesame.toml"
"$BIN" --project "$served" build > /dev/null
rm -rf "$WORK/edge-export"
"$BIN" --project "$served" export "$WORK/edge-export" > /dev/null
PATHS=$WORK/edge-paths.txt
(cd "$WORK/edge-export" && find . -name index.html | sed 's|^\.||; s|index\.html$||') > "$PATHS"
random_pages_lua "$PATHS" "$WORK/edge-random.lua"

ROUTER_PORT=$(free_port)
"$BIN" --project "$served" router --listen "127.0.0.1:$ROUTER_PORT" > "$WORK/edge-router.log" 2>&1 &
ROUTER=$!
coproc HARNESS { cd "$EDGE" && exec node test/harness.mjs --storage "$served/.sesame/objects"; }
# The harness stops Miniflare and its workerd when its stdin closes (a SIGTERM
# mid-dispose can leave workerd running).
stop_harness() {
  kill "$ROUTER" 2>/dev/null || true
  eval "exec ${HARNESS[1]}>&-" 2>/dev/null || true
  wait "$HARNESS_PID" 2>/dev/null || true
}
trap stop_harness EXIT
read -r urls <&"${HARNESS[0]}"
WORKER=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["worker"])' "$urls")
CONTROL=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["control"])' "$urls")
say "copying the site into the Worker's bucket"
copied=$(curl -fs -X POST "$CONTROL/sync")
wait_http "http://127.0.0.1:$ROUTER_PORT/"
wait_http "$WORKER/"

# load BASE PATH ENCODING → "rps p50 p99"
load() {
  local header=() script=() path=$2
  [ -n "$3" ] && header=(-H "Accept-Encoding: $3")
  if [ "$path" = random ]; then script=(-s "$WORK/edge-random.lua"); path=$(head -1 "$PATHS"); fi
  wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "${header[@]}" "${script[@]}" "$1$path" > "$WORK/wrk.out"
  wrk_stats "$WORK/wrk.out"
}
item=/sprites/$(head -1 "$(gallery "$SERVE_ITEMS")" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')/
rows=()
for page in "$item" random; do
  for enc in "" br; do
    say "$page ${enc:-identity}"
    read -r rrps rp50 rp99 <<< "$(load "http://127.0.0.1:$ROUTER_PORT" "$page" "$enc")"
    read -r wrps wp50 wp99 <<< "$(load "$WORKER" "$page" "$enc")"
    label="\`$page\`"
    [ "$page" = random ] && label="random pages"
    ratio=$(python3 -c "print(f'{$wrps/$rrps:.2f}×')")
    rows+=("| $label | ${enc:-none} | router | $rrps | $rp50 ms | $rp99 ms | |")
    rows+=("| $label | ${enc:-none} | Worker in workerd | $wrps | $wp50 ms | $wp99 ms | $ratio |")
  done
done

(cd "$EDGE" && exec node test/floor.mjs > "$WORK/floor.out" < /dev/null) &
FLOOR_PID=$!
for _ in $(seq 1 100); do [ -s "$WORK/floor.out" ] && break; sleep 0.1; done
FLOOR_URL=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["url"])' "$WORK/floor.out")
for what in "/ constant" "/r2 one-R2-get"; do
  read -r fpath flabel <<< "$what"
  say "Miniflare floor: $flabel"
  read -r frps fp50 fp99 <<< "$(load "$FLOOR_URL" "$fpath" "")"
  rows+=("| Miniflare's floor: ${flabel//-/ } | none | a Worker doing only that | $frps | $fp50 ms | $fp99 ms | |")
done
kill "$FLOOR_PID" 2>/dev/null || true
wait "$FLOOR_PID" 2>/dev/null || true
{
  echo "**Serving $SERVE_ITEMS items ($(wc -l < "$PATHS") pages)**, wrk -t2 -c$CONNECTIONS -d$DURATION on loopback, everything on the same 2 cores; bucket: $copied."
  echo
  echo "| page | Accept-Encoding | server | requests/s | p50 | p99 | Worker / router |"
  echo "|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
} > "$WORK/edge-serve.md"
fi

{
  echo "$(machine) Node $(node --version), Miniflare $(node -p 'require("'"$EDGE"'/node_modules/miniflare/package.json").version') (workerd)."
  echo
  # A part not run this time (and never run in this WORK) is left out.
  for part in manifest serve; do
    [ -f "$WORK/edge-$part.md" ] && { cat "$WORK/edge-$part.md"; echo; }
  done
} > "$OUT"
cat "$OUT"
record edge "$OUT"
