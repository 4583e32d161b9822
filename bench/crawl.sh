#!/usr/bin/env bash
# Crawlers against `sesame serve`, two ways:
#
# 1. A careless crawler on the 50,000-item gallery (needs DATASET): every
#    page of the sitemap fetched on a new keep-alive connection that the
#    crawler keeps open (`sesame-bench crawl`, as a search engine's crawler
#    behaves). Reports the answers that were not 200, the duration, and the
#    server's peak established connections and open descriptors, sampled
#    every half second.
# 2. A site owner's link checker: linkinator (pinned in e2e/package-lock.json,
#    on Node's fetch) with --recurse over the 5,000-item demo gallery, against
#    sesame at its default connection cap and at a cap of 100, and against
#    nginx with Debian's defaults (worker_connections 768, keepalive_timeout
#    65) on the exported site, in the same run. Reports links checked, the
#    answers by status, links without an HTTP answer (status 0) and seconds.
#
# Servers start with the common default soft open-file limit (1024): sesame
# raises its own to the hard limit.
#
# Usage: [DATASET=path/to/gallery-250k.ndjson.gz] bench/crawl.sh
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

# linkcheck LABEL URL BASE → a table row: linkinator --recurse from URL,
# the pages' canonical BASE pointed back at URL.
linkcheck() {
  local label=$1 url=$2 base=$3 started report
  report=$WORK/linkcheck-$(echo "$label" | tr -c 'a-z0-9' '-').json
  say "link-checking $label"
  started=$(date +%s.%N)
  node "$ROOT/e2e/node_modules/linkinator/build/src/cli.js" "$url/" --recurse --format json \
    --url-rewrite-search "$base" --url-rewrite-replace "$url" > "$report" 2>/dev/null || true
  python3 - "$label" "$report" "$(echo "$(date +%s.%N) - $started" | bc)" <<'PY'
import collections, json, sys
label, path, seconds = sys.argv[1:]
links = json.load(open(path))["links"]
by = collections.Counter(l["status"] for l in links)
others = ", ".join(f"{n} × {s}" for s, n in sorted(by.items()) if s not in (0, 200)) or "none"
print(f"| {label} | {len(links):,} | {by.get(200, 0):,} | {others} | {by.get(0, 0):,} | {float(seconds):.0f} |")
PY
}

linkcheck_section() {
  ensure_tools nginx bc
  if [ ! -d "$ROOT/e2e/node_modules/linkinator" ]; then
    (cd "$ROOT/e2e" && npm ci --no-audit --no-fund >/dev/null)
  fi
  local demo=$WORK/linkcheck-demo
  if [ ! -f "$demo/.sesame/sesame.db" ]; then
    say "building the 5,000-item demo gallery"
    rm -rf "$demo"
    "$BIN" init "$demo" --example gallery >/dev/null
    "$BIN" --project "$demo" import "$demo/content/sprites.ndjson.gz" --collection sprites >/dev/null
    "$BIN" --project "$demo" build >/dev/null
  fi
  local base export=$WORK/linkcheck-export port pid
  base=$(sed -n 's/^base_url = "\(.*\)"/\1/p' "$demo/sesame.toml")
  rm -rf "$export"
  "$BIN" --project "$demo" export "$export" >/dev/null
  echo
  echo "linkinator $(node -p "require('$ROOT/e2e/node_modules/linkinator/package.json').version") --recurse over the 5,000-item demo gallery (canonical links pointed back at the server checked), each server started with a soft open-file limit of 1024:"
  echo
  echo "| server | links checked | 200 | other answers | no HTTP answer | seconds |"
  echo "|---|---|---|---|---|---|"
  for cap in default 100; do
    cp "$demo/sesame.toml" "$demo/sesame.toml.orig"
    [ "$cap" = 100 ] && printf '\n[serve]\nmax_connections = 100\n' >> "$demo/sesame.toml"
    port=$(free_port)
    (ulimit -Sn 1024; exec "$BIN" --project "$demo" serve --listen "127.0.0.1:$port") > "$WORK/linkcheck-server.log" 2>&1 &
    pid=$!
    wait_http "http://127.0.0.1:$port/"
    linkcheck "sesame $(git -C "$ROOT" rev-parse --short HEAD), max_connections $cap" "http://127.0.0.1:$port" "$base"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    mv "$demo/sesame.toml.orig" "$demo/sesame.toml"
  done
  local ng=$WORK/linkcheck-nginx
  port=$(free_port)
  # Debian's nginx.conf, the site served from the export.
  nginx_conf "$ng" "$port" "$export" auto 768 "keepalive_timeout 65;
gzip on;"
  (ulimit -Sn 1024; exec nginx -c "$ng/nginx.conf" -p "$ng")
  wait_http "http://127.0.0.1:$port/"
  linkcheck "nginx $(nginx -v 2>&1 | sed 's|.*/||'), Debian's defaults" "http://127.0.0.1:$port" "$base"
  kill -QUIT "$(cat "$ng/nginx.pid")" 2>/dev/null || true
}

OUT=$WORK/crawl.md
echo "Measured $(date -u +%Y-%m-%d) on $(nproc) vCPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))." > "$OUT"
if [ -n "$DATASET" ]; then
  site=$(built_site "$ITEMS")
  {
    echo
    echo "A careless crawler: site of $ITEMS items (every page of its sitemap); $CONCURRENCY fetches in flight, each on a new connection the crawler keeps open (at most $HOLD), a page failing after 5 s without an answer, each crawl stopped after $MAX_SECONDS s; server started with a soft open-file limit of 1024."
    echo
    echo "| server | pages fetched / in sitemap | not 200 (none: no answer within 5 s) | seconds | pages/s | peak connections | peak descriptors | \"too many open files\" logged |"
    echo "|---|---|---|---|---|---|---|---|"
  } >> "$OUT"
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
else
  say "DATASET not set: the careless crawler is skipped"
fi
linkcheck_section >> "$OUT"
cat "$OUT"
record crawl "$OUT"
