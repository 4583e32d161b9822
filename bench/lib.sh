# Shared by the bench/ scripts: tools, the release binaries, the dataset,
# timing and writing result tables into BENCHMARKS.md.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATASET=${DATASET:-}
WORK=${WORK:-/tmp/sesame-bench}
mkdir -p "$WORK"
BIN=${SESAME_BIN:-$ROOT/target/release/sesame}
DRIVER=$ROOT/target/release/sesame-bench

say() { printf '\n== %s\n' "$*" >&2; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Installs the tools compared against (Debian packages) when missing.
ensure_tools() {
  local missing=()
  for tool in "$@"; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    as_root apt-get update -q >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
  fi
}

# static-web-server, the second serving peer: built from crates.io once
# (kept in ~/.cargo/bin); $SWS names it.
SWS_VERSION=2.44.1
SWS=${CARGO_HOME:-$HOME/.cargo}/bin/static-web-server
ensure_sws() {
  if ! "$SWS" --version 2>/dev/null | grep -q "$SWS_VERSION"; then
    say "installing static-web-server $SWS_VERSION (a few minutes, once)"
    cargo install static-web-server --version "$SWS_VERSION" --locked --quiet
  fi
}

build_release() {
  [ -n "${NO_BUILD:-}" ] && return
  say "building release binaries"
  (cd "$ROOT" && cargo build --release --quiet -p sesame -p sesame-bench)
}

need_dataset() {
  if [ -z "$DATASET" ] || [ ! -f "$DATASET" ]; then
    echo "set DATASET=path/to/gallery-250k.ndjson.gz (the 250,000-item gallery dataset)" >&2
    exit 1
  fi
}

# gallery N: an NDJSON file of N items: all of the dataset, or every k-th item.
gallery() {
  local n=$1 out=$WORK/gallery-$1.ndjson
  if [ ! -f "$out" ]; then
    local total step
    total=$(gzip -dc "$DATASET" | wc -l)
    step=$(( total / n ))
    gzip -dc "$DATASET" | awk -v s="$step" -v n="$n" '(NR - 1) % s == 0 && c < n { print; c++ }' > "$out"
  fi
  echo "$out"
}

# timed LABEL CMD...: runs CMD, appends "LABEL WALL_S PEAK_RSS_KB" to $WORK/times.
timed() {
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$WORK/.time" "$@"
  echo "$label $(cat "$WORK/.time")" >> "$WORK/times"
  echo "$label: $(awk '{printf "%.1f s, peak RSS %.0f MB", $1, $2/1024}' "$WORK/.time")" >&2
}

# time_of LABEL → "WALL RSS_KB" of the last run with that label.
time_of() { awk -v l="$1" '$1 == l { w = $2; r = $3 } END { print w, r }' "$WORK/times"; }

# record NAME FILE: puts FILE between the <!-- bench:NAME --> markers of BENCHMARKS.md.
record() {
  python3 - "$ROOT/BENCHMARKS.md" "$1" "$2" <<'PY'
import sys
path, name, table = sys.argv[1], sys.argv[2], open(sys.argv[3]).read().strip()
text = open(path).read()
start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
if start in text:
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    text = f"{head}{start}\n{table}\n{end}{tail}"
else:
    text = f"{text.rstrip()}\n\n{start}\n{table}\n{end}\n"
open(path, "w").write(text)
PY
  echo "recorded in BENCHMARKS.md ($1)" >&2
}

machine() {
  local tools=("$("$BIN" --version)")
  command -v hugo >/dev/null && tools+=("$(hugo version 2>/dev/null | cut -d' ' -f1-2)")
  command -v nginx >/dev/null && tools+=("$(nginx -v 2>&1 | cut -d' ' -f3)")
  command -v wrk >/dev/null && tools+=("$(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)")
  local joined
  joined=$(printf '%s; ' "${tools[@]}")
  echo "Measured $(date -u +%Y-%m-%d) on $(nproc) vCPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/ {print $2}') GiB RAM; ${joined%; }."
}

# sesame_site DIR FILE: a fresh gallery example project with FILE imported.
sesame_site() {
  rm -rf "$1"
  "$BIN" init "$1" --example gallery >/dev/null
  "$BIN" --project "$1" import "$2" --collection sprites >/dev/null
}

# built_site N: $WORK/sesame-N, imported and built unless it already is; prints its path.
built_site() {
  local site=$WORK/sesame-$1
  if [ ! -f "$site/.sesame/sesame.db" ]; then
    need_dataset
    say "building a $1-item site"
    sesame_site "$site" "$(gallery "$1")"
    "$BIN" --project "$site" build > /dev/null
  fi
  echo "$site"
}

# random_pages_lua PATHS OUT: a wrk script at OUT drawing each request's
# path from the file PATHS (one path a line).
random_pages_lua() {
  cat > "$2" <<LUA
local paths = {}
for line in io.lines("$1") do paths[#paths + 1] = line end
math.randomseed(os.time())
request = function() return wrk.format(nil, paths[math.random(#paths)]) end
LUA
}

# nginx_conf DIR PORT ROOT WORKERS CONNECTIONS HTTP: writes DIR/nginx.conf,
# serving ROOT on 127.0.0.1:PORT with WORKERS processes of CONNECTIONS each;
# HTTP holds the http block's own directives, one a line. Its pid, log and
# temporary files stay under DIR.
nginx_conf() {
  local dir=$1 port=$2 root=$3 workers=$4 connections=$5 http=$6 t=$1/tmp
  mkdir -p "$t"
  cat > "$dir/nginx.conf" <<CONF
worker_processes $workers;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections $connections; }
http {
  include /etc/nginx/mime.types;
  access_log off;
  sendfile on;
  tcp_nopush on;
$(sed 's/^/  /' <<< "$http")
$(printf '  %s_temp_path %s/%s;\n' client_body "$t" body proxy "$t" proxy fastcgi "$t" fastcgi uwsgi "$t" uwsgi scgi "$t" scgi)
  server {
    listen 127.0.0.1:$port;
    root $root;
    location / { try_files \$uri \$uri/ =404; }
  }
}
CONF
}

# free_port: a TCP port nothing listens on now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_http URL: until something answers.
wait_http() {
  for _ in $(seq 1 600); do curl -fs -o /dev/null "$1" && return; sleep 0.1; done
  echo "nothing answers at $1" >&2; exit 1
}

# wrk_stats FILE: "REQUESTS_PER_S P50_MS P99_MS" of a `wrk --latency` report;
# fails when any response was not 2xx or 3xx.
wrk_stats() {
  python3 - "$1" <<'PY'
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
print(f"{rps:.0f} {p50:.2f} {p99:.2f}")
PY
}
