#!/usr/bin/env bash
# Serving, sesame's router vs nginx and static-web-server (a hyper-based
# static server) on the same pages: both peers serve `sesame export` of the
# site (with its precompressed variants: nginx's gzip_static, SWS's
# --compression-static), all on loopback, loaded by the same wrk command in
# one run: one hot page, one listing, and random pages across the whole site
# (a wrk script drawing each request's path from the export's page list).
#
# Usage: DATASET=path/to/gallery-250k.ndjson.gz bench/serve-vs-nginx.sh
# Env: ITEMS (default 50000; reuses $WORK/sesame-ITEMS when built), DURATION
# (default 10s), CONNECTIONS (default 64).
source "$(dirname "$0")/lib.sh"
ensure_tools nginx wrk
ensure_sws
build_release
ITEMS=${ITEMS:-50000} DURATION=${DURATION:-10s} CONNECTIONS=${CONNECTIONS:-64}
site=$(built_site "$ITEMS")
say "exporting"
rm -rf "$WORK/export"
"$BIN" --project "$site" export "$WORK/export" > /dev/null

SESAME_PORT=$(free_port) NGINX_PORT=$(free_port) SWS_PORT=$(free_port)
"$BIN" --project "$site" router --listen "127.0.0.1:$SESAME_PORT" > "$WORK/router.log" 2>&1 &
ROUTER=$!
NG=$WORK/nginx
nginx_conf "$NG" "$NGINX_PORT" "$WORK/export" 2 1024 "keepalive_requests 100000;
open_file_cache max=10000 inactive=60s;
gzip_static on;"
nginx -c "$NG/nginx.conf" -p "$NG"
# Two worker threads, like the other two servers.
"$SWS" --host 127.0.0.1 --port "$SWS_PORT" --root "$WORK/export" --compression false \
  --compression-static true --threads-multiplier 1 --log-level error > "$WORK/sws.log" 2>&1 &
SWS_PID=$!
trap 'kill $ROUTER $SWS_PID 2>/dev/null; kill -QUIT "$(cat "$NG/nginx.pid")" 2>/dev/null' EXIT
wait_http "http://127.0.0.1:$SESAME_PORT/"
wait_http "http://127.0.0.1:$NGINX_PORT/"
wait_http "http://127.0.0.1:$SWS_PORT/"

# Every page of the site, for the random workload: /a/b/ for a/b/index.html.
PATHS=$WORK/paths.txt
(cd "$WORK/export" && find . -name index.html | sed 's|^\.||; s|index\.html$||') > "$PATHS"
random_pages_lua "$PATHS" "$WORK/random.lua"

item=/sprites/$(head -1 "$(gallery "$ITEMS")" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')/
OUT=$WORK/serve-vs-nginx.md
{
  echo "$(machine) Site: $ITEMS items ($(wc -l < "$PATHS") pages); wrk -t2 -c$CONNECTIONS -d$DURATION on loopback, servers and wrk on the same 2 cores; static-web-server $("$SWS" --version | awk '/^Version/ {print $2}')."
  echo
  echo "| page | Accept-Encoding | server | requests/s | p50 | p99 | body bytes | sesame / nginx | sesame / static-web-server |"
  echo "|---|---|---|---|---|---|---|---|---|"
} > "$OUT"
# load PORT PATH ENCODING → "rps p50 p99 bytes"; PATH "random" draws each
# request's path from $PATHS (bytes: those of the first page of the list).
load() {
  local header=() script=() path=$2
  [ -n "$3" ] && header=(-H "Accept-Encoding: $3")
  if [ "$path" = random ]; then script=(-s "$WORK/random.lua"); path=$(head -1 "$PATHS"); fi
  local url="http://127.0.0.1:$1$path" bytes
  bytes=$(curl -s -o /dev/null -w '%{size_download}' ${3:+-H "Accept-Encoding: $3"} "$url")
  wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "${header[@]}" "${script[@]}" "$url" > "$WORK/wrk.out"
  echo "$(wrk_stats "$WORK/wrk.out") $bytes"
}
for page in "$item" /sprites/ random; do
  for enc in "" gzip; do
    say "$page ${enc:-identity}"
    read -r srps sp50 sp99 sbytes <<< "$(load "$SESAME_PORT" "$page" "$enc")"
    read -r nrps np50 np99 nbytes <<< "$(load "$NGINX_PORT" "$page" "$enc")"
    read -r wrps wp50 wp99 wbytes <<< "$(load "$SWS_PORT" "$page" "$enc")"
    ratios=$(python3 -c "print(f'{$srps/$nrps:.2f}× | {$srps/$wrps:.2f}×')")
    label="\`$page\`"
    [ "$page" = random ] && label="random pages"
    echo "| $label | ${enc:-none} | sesame | $srps | $sp50 ms | $sp99 ms | $sbytes | $ratios |" >> "$OUT"
    echo "| $label | ${enc:-none} | nginx | $nrps | $np50 ms | $np99 ms | $nbytes | | |" >> "$OUT"
    echo "| $label | ${enc:-none} | static-web-server | $wrps | $wp50 ms | $wp99 ms | $wbytes | | |" >> "$OUT"
  done
done
# Peak resident memory, and what it is at the end: anonymous (the router's
# own) and file-backed (pages of the LMDB map it read: page cache, which the
# kernel reclaims under pressure).
kb() { awk -v k="$1:" '$1 == k {print int($2 / 1024)}' "/proc/$ROUTER/status"; }
{
  echo
  echo "The router's peak RSS over the whole run: $(kb VmHWM) MB; at the end $(kb RssAnon) MB anonymous (body cache \`[serve] cache_mb\` = 64 MiB) and $(kb RssFile) MB of the object store's file mapped."
} >> "$OUT"
cat "$OUT"
record serve-vs-nginx "$OUT"
