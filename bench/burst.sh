#!/usr/bin/env bash
# Burst economics on the micro-site example with the default debounce (2 s
# quiet, 60 s at most): one account saving 50 times within a minute, and 1,000
# accounts saving 10 times each. What publishing cost per accepted write
# (renders, object writes, bytes, purge calls), next to a save published alone.
#
# Usage: bench/burst.sh   (no dataset needed)
source "$(dirname "$0")/lib.sh"
build_release
site=$WORK/burst
rm -rf "$site"
"$BIN" init "$site" --example microsites > /dev/null
SINK=$(free_port) PORT=$(free_port)
cat >> "$site/sesame.toml" <<CONF

# -- benchmark settings: a local purge endpoint, no sign-up limit --
[purge]
kind = "webhook"
url = "http://127.0.0.1:$SINK/purge"
CONF
sed -i 's/^max_updates_per_hour = .*/max_updates_per_hour = 100000\nsignups_per_hour = 100000/' "$site/sesame.toml"
"$DRIVER" sink --listen "127.0.0.1:$SINK" &
SINK_PID=$!
"$BIN" --project "$site" serve --listen "127.0.0.1:$PORT" > "$WORK/burst-serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER $SINK_PID 2>/dev/null' EXIT
wait_http "http://127.0.0.1:$PORT/healthz"
OUT=$WORK/burst.md
{
  echo "$(machine) Micro-site example, SQLite + local files, \`quiet_ms = 2000\`, \`max_wait_ms = 60000\`, webhook purge."
  echo
  say "one account, 50 saves within a minute"
  "$DRIVER" burst --base "http://127.0.0.1:$PORT" --accounts 1 --saves 50 --over 58 --prefix solo
  echo
  say "1,000 accounts, 10 saves each"
  "$DRIVER" burst --base "http://127.0.0.1:$PORT" --accounts 1000 --saves 10 --concurrency 32 --prefix many
} > "$OUT"
cat "$OUT"
record burst "$OUT"
