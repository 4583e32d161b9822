#!/usr/bin/env bash
# Publish latency of single adds, edits and removals on the 250,000-item
# gallery, through the API of `sesame serve` with debounce off: from the 202 to
# the router serving the new page, with the pages rendered and bytes written
# per event, for each pagination scheme of the global gallery listing.
#
# Usage: DATASET=path/to/gallery-250k.ndjson.gz bench/edit-latency.sh
# Env: ITEMS (default 250000; reuses $WORK/sesame-ITEMS), EVENTS (default 1002),
# OFFSET_EVENTS (default 15: every offset add re-renders the whole gallery),
# PLAIN_EVENTS (default 300: `stable` once more with `[publish] compress =
# false`, no variants made at all: what the background compression costs),
# POLL_US (default 1000: how often the driver polls the router; the figures
# carry up to that much extra), WARMUP (default 30: events sent after each
# server start and not counted; 3 for offset), SCHEMES (default "stable date head offset"),
# TABLE (default edit-latency: the BENCHMARKS.md block the table replaces).
source "$(dirname "$0")/lib.sh"
build_release
ITEMS=${ITEMS:-250000} EVENTS=${EVENTS:-1002} OFFSET_EVENTS=${OFFSET_EVENTS:-15} PLAIN_EVENTS=${PLAIN_EVENTS:-300}
POLL_US=${POLL_US:-1000} WARMUP=${WARMUP:-30}
SCHEMES=${SCHEMES:-stable date head offset} TABLE=${TABLE:-edit-latency}
site=$(built_site "$ITEMS")

# configure SCHEME COMPRESS: the gallery listing's scheme, debounce off, no API limits.
configure() {
  python3 - "$site/sesame.toml" "$1" "$2" <<'PY'
import re, sys
path, scheme, compress = sys.argv[1:]
text = open(path).read().split("\n# -- benchmark settings --")[0]
block = re.search(r'name = "gallery".*?scheme = "(\w+)"', text, re.S)
text = text[:block.start(1)] + scheme + text[block.end(1):]
text = re.sub(r"compress = \w+", f"compress = {compress}", text)
text += f"""
# -- benchmark settings --
[queue]
quiet_ms = 0
max_wait_ms = 0

[api]
max_updates_per_hour = 1000000
signups_per_hour = 1000000
"""
open(path, "w").write(text)
PY
}

OUT=$WORK/edit-latency.md
{
  echo "$(machine) Site: $ITEMS items, SQLite + LMDB (every publish fsynced; compressed variants follow each publish in the background); the driver polls the router every $POLL_US µs and counts events after $WARMUP warm-up events per server start (3 for \`offset\`)."
  echo
  echo "| scheme | op | events | p50 ms | p99 ms | max ms | pages rendered / event | objects written / event | KB written / event |"
  echo "|---|---|---|---|---|---|---|---|---|"
} > "$OUT"
NOTES=$WORK/edit-latency-notes.md
: > "$NOTES"
# The scheme the site's pages were last built with (a fresh site: the example's).
MARK=$site/.bench-built-scheme
built=$(cat "$MARK" 2>/dev/null || echo stable)
run() { # SCHEME COMPRESS EVENTS
  configure "$1" "$2"
  if [ "$1" != "$built" ]; then
    say "rebuilding for the $1 scheme"
    timed "rebuild-$1" "$BIN" --project "$site" build > "$WORK/rebuild-$1.log"
    echo "- switching the gallery to \`$1\`: full rebuild in $(time_of "rebuild-$1" | cut -d' ' -f1) s ($(head -1 "$WORK/rebuild-$1.log" | cut -d: -f2 | cut -d, -f1-2 | xargs))." >> "$NOTES"
    built=$1
    echo "$1" > "$MARK"
  fi
  local port
  port=$(free_port)
  "$BIN" --project "$site" serve --listen "127.0.0.1:$port" > "$WORK/serve-$1.log" 2>&1 &
  local server=$!
  wait_http "http://127.0.0.1:$port/healthz"
  say "$1 (compress = $2): $3 events"
  local label=$1 warmup=$WARMUP
  [ "$2" = false ] && label="$1, no variants stored"
  [ "$1" = offset ] && warmup=3 # each of its adds takes seconds
  "$DRIVER" latency --base "http://127.0.0.1:$port" --events "$3" --poll-us "$POLL_US" --warmup "$warmup" --label "$label" | grep "^| $label" >> "$OUT"
  kill "$server"; wait "$server" 2>/dev/null || true
}
for scheme in $SCHEMES; do
  case $scheme in
    offset) run offset true "$OFFSET_EVENTS" ;;
    stable) run stable true "$EVENTS"; run stable false "$PLAIN_EVENTS" ;;
    *) run "$scheme" true "$EVENTS" ;;
  esac
done
configure stable true
{ echo; cat "$NOTES"; } >> "$OUT"
cat "$OUT"
record "$TABLE" "$OUT"
