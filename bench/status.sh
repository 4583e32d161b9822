#!/usr/bin/env bash
# bench/status.sh BIN PROJECT [PORT]: latency of a change's status
# (`GET /api/changes/{id}`, what the dashboard polls after a save), 200 reads
# of one published add, against `BIN serve` on PROJECT (a built gallery; its
# sesame.toml gets `[api] status_reads_per_minute = 1000000`). Needs curl, jq.
set -euo pipefail
B=$1; P=$2; PORT=${3:-39200}
sed -i 's/^status_reads_per_minute = .*//' $P/sesame.toml
grep -q '^\[api\]' $P/sesame.toml || printf '\n[api]\n' >> $P/sesame.toml
sed -i 's/^\[api\]$/[api]\nstatus_reads_per_minute = 1000000/' $P/sesame.toml
$B --project $P serve --listen 127.0.0.1:$PORT > /tmp/serve.log 2>&1 & S=$!
trap 'kill $S' EXIT
until curl -s -o /dev/null 127.0.0.1:$PORT/healthz; do sleep 0.1; done
H=u$RANDOM
T=$(curl -s -X POST 127.0.0.1:$PORT/api/accounts -H 'content-type: application/json' -d "{\"handle\":\"$H\"}" | jq -r .token)
C=$(curl -s -X PUT 127.0.0.1:$PORT/api/collections/sprites/docs/$H-1 -H "authorization: Bearer $T" -H 'content-type: application/json' -d '{"title":"Bench","created":"2026-12-01","tags":["bench"]}' | jq -r .change)
until curl -s 127.0.0.1:$PORT/api/changes/$C -H "authorization: Bearer $T" | grep -q '"published"'; do sleep 0.2; done
curl -s 127.0.0.1:$PORT/api/changes/$C -H "authorization: Bearer $T"; echo
for i in $(seq 200); do curl -s -o /dev/null -w '%{time_total}\n' 127.0.0.1:$PORT/api/changes/$C -H "authorization: Bearer $T"; done | sort -n | awk '{a[NR]=$1} END {printf "status p50 %.1f ms  p90 %.1f ms  max %.1f ms\n", a[int(NR*0.5)]*1000, a[int(NR*0.9)]*1000, a[NR]*1000}'
