#!/usr/bin/env bash
# Serving, sesame's router vs nginx on the same pages: nginx serves
# `sesame export` of the site (with gzip_static for the precompressed
# variants), both on loopback, loaded by the same wrk command in one run.
#
# Usage: DATASET=path/to/gallery-250k.ndjson.gz bench/serve-vs-nginx.sh
# Env: ITEMS (default 50000; reuses $WORK/sesame-ITEMS when built), DURATION
# (default 10s), CONNECTIONS (default 64).
source "$(dirname "$0")/lib.sh"
ensure_tools nginx wrk
build_release
ITEMS=${ITEMS:-50000} DURATION=${DURATION:-10s} CONNECTIONS=${CONNECTIONS:-64}
site=$(built_site "$ITEMS")
say "exporting"
rm -rf "$WORK/export"
"$BIN" --project "$site" export "$WORK/export" > /dev/null

SESAME_PORT=$(free_port) NGINX_PORT=$(free_port)
"$BIN" --project "$site" router --listen "127.0.0.1:$SESAME_PORT" > "$WORK/router.log" 2>&1 &
ROUTER=$!
NG=$WORK/nginx; mkdir -p "$NG/tmp"
cat > "$NG/nginx.conf" <<CONF
worker_processes 2;
pid $NG/nginx.pid;
error_log $NG/error.log warn;
events { worker_connections 1024; }
http {
  include /etc/nginx/mime.types;
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  open_file_cache max=10000 inactive=60s;
  gzip_static on;
  client_body_temp_path $NG/tmp/body;
  proxy_temp_path $NG/tmp/proxy;
  fastcgi_temp_path $NG/tmp/fastcgi;
  uwsgi_temp_path $NG/tmp/uwsgi;
  scgi_temp_path $NG/tmp/scgi;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $WORK/export;
    location / { try_files \$uri \$uri/ =404; }
  }
}
CONF
nginx -c "$NG/nginx.conf" -p "$NG"
trap 'kill $ROUTER 2>/dev/null; kill -QUIT "$(cat "$NG/nginx.pid")" 2>/dev/null' EXIT
wait_http "http://127.0.0.1:$SESAME_PORT/"
wait_http "http://127.0.0.1:$NGINX_PORT/"

item=/sprites/$(head -1 "$(gallery "$ITEMS")" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')/
OUT=$WORK/serve-vs-nginx.md
{
  echo "$(machine) Site: $ITEMS items; wrk -t2 -c$CONNECTIONS -d$DURATION on loopback, server and wrk on the same 2 cores."
  echo
  echo "| page | Accept-Encoding | server | requests/s | p50 | p99 | body bytes | sesame / nginx |"
  echo "|---|---|---|---|---|---|---|---|"
} > "$OUT"
# load SERVER PORT PATH ENCODING → "rps p50 p99 bytes"
load() {
  local url="http://127.0.0.1:$2$3" header=()
  [ -n "$4" ] && header=(-H "Accept-Encoding: $4")
  local bytes
  bytes=$(curl -s -o /dev/null -w '%{size_download}' ${4:+-H "Accept-Encoding: $4"} "$url")
  wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "${header[@]}" "$url" > "$WORK/wrk.out"
  python3 - "$WORK/wrk.out" "$bytes" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def ms(s):
    v, unit = re.match(r"([\d.]+)(\w+)", s).groups()
    return float(v) * {"us": 1e-3, "ms": 1, "s": 1e3}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p50 = ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))
p99 = ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
assert not errors, f"errors: {errors.group(0)}"
print(f"{rps:.0f} {p50:.2f} {p99:.2f} {sys.argv[2]}")
PY
}
for page in "$item" /sprites/; do
  for enc in "" gzip; do
    say "$page ${enc:-identity}"
    read -r srps sp50 sp99 sbytes <<< "$(load sesame "$SESAME_PORT" "$page" "$enc")"
    read -r nrps np50 np99 nbytes <<< "$(load nginx "$NGINX_PORT" "$page" "$enc")"
    ratio=$(python3 -c "print(f'{$srps/$nrps:.2f}×')")
    echo "| \`$page\` | ${enc:-none} | sesame | $srps | $sp50 ms | $sp99 ms | $sbytes | $ratio |" >> "$OUT"
    echo "| \`$page\` | ${enc:-none} | nginx | $nrps | $np50 ms | $np99 ms | $nbytes | |" >> "$OUT"
  done
done
cat "$OUT"
record serve-vs-nginx "$OUT"
