#!/usr/bin/env bash
# The router's memory on a built gallery: `sesame router` alone, its
# anonymous memory (RssAnon: what it allocates, not the LMDB map shared with
# the page cache) once loaded, and after random pages across the whole site
# under wrk, whose request rate is reported too. With BASELINE=path/to/sesame
# (an earlier build), that binary is measured the same way in the same run.
#
# Usage: DATASET=path/to/gallery-250k.ndjson.gz bench/router-memory.sh
# Env: ITEMS (default 50000; reuses $WORK/sesame-ITEMS), DURATION (default 10s),
# BASELINE.
source "$(dirname "$0")/lib.sh"
ensure_tools wrk
build_release
ITEMS=${ITEMS:-50000} DURATION=${DURATION:-10s}
site=$(built_site "$ITEMS")

# Every page path of the site, drawn at random by wrk: the pages of its
# export (the table lives in the manifest, not in database rows).
PATHS=$WORK/router-paths.txt
rm -rf "$WORK/router-export"
"$BIN" --project "$site" export "$WORK/router-export" > /dev/null
(cd "$WORK/router-export" && find . -name index.html | sed 's|^\.||; s|index\.html$||') > "$PATHS"
rm -rf "$WORK/router-export"
random_pages_lua "$PATHS" "$WORK/router-random.lua"

kib() { awk -v k="$1" '$1 == k":" {print int($2 / 1024)}' "/proc/$2/status"; }

# measure LABEL BINARY → one table row
measure() {
  local port pid loaded anon_after file rps
  port=$(free_port)
  "$2" --project "$site" router --listen "127.0.0.1:$port" > "$WORK/router-memory.log" 2>&1 &
  pid=$!
  wait_http "http://127.0.0.1:$port/"
  sleep 2
  loaded=$(kib RssAnon $pid)
  wrk -t2 -c64 -d"$DURATION" --latency -s "$WORK/router-random.lua" "http://127.0.0.1:$port/" > "$WORK/wrk.out"
  anon_after=$(kib RssAnon $pid)
  file=$(kib RssFile $pid)
  rps=$(wrk_stats "$WORK/wrk.out" | cut -d' ' -f1)
  kill $pid; wait $pid 2>/dev/null || true
  echo "| $1 | $loaded MB | $anon_after MB | $file MB | $rps |"
}

OUT=$WORK/router-memory.md
{
  echo "$(machine) Site: $ITEMS items ($(wc -l < "$PATHS") page paths, every path of the site in the router's table); \`sesame router\` alone, then wrk -t2 -c64 -d$DURATION on random pages."
  echo
  echo "| router | anonymous memory, loaded | anonymous memory, after random pages | mapped objects (RssFile) | random pages, requests/s |"
  echo "|---|---|---|---|---|"
  [ -n "${BASELINE:-}" ] && measure "baseline ($("$BASELINE" --version))" "$BASELINE"
  measure "$("$BIN" --version)" "$BIN"
} > "$OUT"
cat "$OUT"
record router-memory "$OUT"
