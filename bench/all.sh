#!/usr/bin/env bash
# Every whole-system benchmark in one run (31 minutes or more on 2 cores,
# depending on the host), each writing its table into BENCHMARKS.md.
# Usage: DATASET=path/to/gallery-250k.ndjson.gz bench/all.sh
source "$(dirname "$0")/lib.sh"
need_dataset
ensure_tools hugo nginx wrk
build_release
export NO_BUILD=1 DATASET WORK
started=$(date +%s)
took=()
for script in build-vs-hugo serve-vs-nginx edit-latency burst; do
  t=$(date +%s)
  "$ROOT/bench/$script.sh"
  took+=("$script $(( $(date +%s) - t )) s")
done
say "all benchmarks done in $(( $(date +%s) - started )) s ($(IFS=,; echo "${took[*]}" | sed 's/,/, /g'))"
