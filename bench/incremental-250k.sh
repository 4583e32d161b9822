#!/usr/bin/env bash
# Incremental publishing on the 250,000-item gallery:
#   1. import and full build (timed, peak memory),
#   2. `sesame plan`: pages re-rendered per event under every scheme,
#   3. the same 1,000 random events applied for real, one per batch,
#   4. `sesame verify`: the live site equals a full build.
# Usage: DATASET=path/to/gallery-250k.ndjson.gz bench/incremental-250k.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DATASET=${DATASET:-}
EVENTS=${EVENTS:-1000}
WORK=${1:-$(mktemp -d)}
[ -n "$DATASET" ] && [ -f "$DATASET" ] || { echo "dataset ${DATASET:-(unset)} not found: set DATASET=path/to/gallery-250k.ndjson.gz" >&2; exit 1; }

cargo build --release --quiet
BIN=$PWD/target/release/sesame
SITE=$WORK/site
rm -rf "$SITE"
"$BIN" init "$SITE" --example gallery > /dev/null
echo "== import"
/usr/bin/time -f "wall %e s, peak RSS %M KB" "$BIN" --project "$SITE" import "$DATASET" --collection sprites
echo "== full build"
/usr/bin/time -f "wall %e s, peak RSS %M KB" "$BIN" --project "$SITE" build
echo "== plan ($EVENTS events, seed 1)"
/usr/bin/time -f "wall %e s, peak RSS %M KB" "$BIN" --project "$SITE" plan --dataset "$DATASET" --events "$EVENTS" --seed 1 --emit "$WORK/events.ndjson"
echo "== apply the same $EVENTS events, one per batch"
/usr/bin/time -f "wall %e s, peak RSS %M KB" "$BIN" --project "$SITE" apply "$WORK/events.ndjson" --batch 1 > "$WORK/apply.log"
tail -1 "$WORK/apply.log"
python3 - "$WORK/apply.log" <<'PY'
import re, sys, statistics
secs, planned, changed, written = [], [], [], []
for line in open(sys.argv[1]):
    m = re.search(r"(\d[\d,]*) pages planned, (\d[\d,]*) rendered, (\d[\d,]*) changed, (\d[\d,]*) objects written \(([\d.]+) MB\) in ([\d.]+) s", line)
    if m:
        num = lambda s: int(s.replace(",", ""))
        planned.append(num(m.group(1))); changed.append(num(m.group(3))); written.append(float(m.group(5))); secs.append(float(m.group(6)) * 1000)
def q(v, p):
    v = sorted(v); return v[min(len(v) - 1, round((len(v) - 1) * p))]
for name, v in [("ms per batch", secs), ("pages planned", planned), ("paths changed", changed), ("MB written", written)]:
    print(f"{name:>14}: p50 {q(v, .5):g}  p99 {q(v, .99):g}  max {max(v):g}  mean {statistics.mean(v):.3g}")
PY
echo "== verify"
/usr/bin/time -f "wall %e s, peak RSS %M KB" "$BIN" --project "$SITE" verify
