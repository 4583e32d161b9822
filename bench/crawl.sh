#!/usr/bin/env bash
# A careless crawler against `sesame serve` on the 50,000-item gallery: every
# page of the sitemap fetched on a new keep-alive connection that the crawler
# keeps open (`sesame-bench crawl`, as a link checker on Node's default agent
# or a search engine's crawler behaves). Reports the answers that were not
# 200, the duration, and the server's peak established connections and open
# descriptors, sampled every half second. The server starts with the common
# default soft open-file limit (1024): sesame raises its own to the hard limit.
#
# Usage: DATASET=path/to/gallery-250k.ndjson.gz bench/crawl.sh
# Env: ITEMS (default 50000), CONCURRENCY (32), HOLD (connections the crawler
# keeps open, 8000), MAX_SECONDS (each crawl stops after this, 300), BEFORE (an earlier sesame binary to measure in the same
# run; it builds its own copy of the site, since databases migrate forward)
# and BEFORE_LABEL (its name in the table, e.g. the commit it was built from).
source "$(dirname "$0")/lib.sh"
build_release
ITEMS=${ITEMS:-50000} CONCURRENCY=${CONCURRENCY:-32} HOLD=${HOLD:-8000} MAX_SECONDS=${MAX_SECONDS:-300}

# crawl LABEL BINARY SITE → a table row
crawl() {
  local label=$1 binary=$2 site=$3 port pid sampler line
  port=$(free_port)
  (ulimit -Sn 1024; exec "$binary" --project "$site" serve --listen "127.0.0.1:$port") > "$WORK/crawl-server.log" 2>&1 &
  pid=$!
  wait_http "http://127.0.0.1:$port/"
  ( while kill -0 "$pid" 2>/dev/null; do
      echo "$(ss -Htn state established "( sport = :$port )" | wc -l) $(ls "/proc/$pid/fd" 2>/dev/null | wc -l)"
      sleep 0.5
    done ) > "$WORK/crawl-samples" &
  sampler=$!
  say "crawling with $label"
  line=$("$DRIVER" crawl --base "http://127.0.0.1:$port" --concurrency "$CONCURRENCY" --hold "$HOLD" --max-seconds "$MAX_SECONDS")
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
  kill "$sampler" 2>/dev/null || true
  local peak_conn peak_fds errors
  peak_conn=$(awk 'BEGIN { m = 0 } $1 > m { m = $1 } END { print m }' "$WORK/crawl-samples")
  peak_fds=$(awk 'BEGIN { m = 0 } $2 > m { m = $2 } END { print m }' "$WORK/crawl-samples")
  errors=$(grep -c -i "too many open files" "$WORK/crawl-server.log" || true)
  echo "$line" > "$WORK/crawl-$port.txt"
  # "pages F/N ok K failed M (details) seconds S pages_per_s R" → a table row
  python3 - "$label" "$line" "$peak_conn" "$peak_fds" "$errors" <<'PY'
import re, sys
label, line, conn, fds, errors = sys.argv[1:]
m = re.match(r"pages (\S+) ok (\d+) failed (\d+) \((.*)\) seconds (\S+) pages_per_s (\S+)", line)
pages, ok, failed, details, seconds, rate = m.groups()
not_ok = failed if details == "-" else f"{failed}: {details}"
print(f"| {label} | {pages} | {not_ok} | {seconds} | {rate} | {conn} | {fds} | {errors} |")
PY
}

site=$(built_site "$ITEMS")
OUT=$WORK/crawl.md
{
  echo "Measured $(date -u +%Y-%m-%d) on $(nproc) vCPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)). Site: $ITEMS items (every page of its sitemap); $CONCURRENCY fetches in flight, each on a new connection the crawler keeps open (at most $HOLD), a page failing after 5 s without an answer, each crawl stopped after $MAX_SECONDS s; server started with a soft open-file limit of 1024."
  echo
  echo "| server | pages fetched / in sitemap | not 200 (none: no answer within 5 s) | seconds | pages/s | peak connections | peak descriptors | \"too many open files\" logged |"
  echo "|---|---|---|---|---|---|---|---|"
} > "$OUT"
if [ -n "${BEFORE:-}" ]; then
  before_site=$WORK/sesame-$ITEMS-before
  if [ ! -f "$before_site/.sesame/sesame.db" ]; then
    say "building a $ITEMS-item site with $BEFORE"
    rm -rf "$before_site"
    "$BEFORE" init "$before_site" --example gallery >/dev/null
    "$BEFORE" --project "$before_site" import "$(gallery "$ITEMS")" --collection sprites >/dev/null
    "$BEFORE" --project "$before_site" build >/dev/null
  fi
  crawl "${BEFORE_LABEL:-before}" "$BEFORE" "$before_site" >> "$OUT"
fi
crawl "sesame $(git -C "$ROOT" rev-parse --short HEAD)" "$BIN" "$site" >> "$OUT"
cat "$OUT"
record crawl "$OUT"
