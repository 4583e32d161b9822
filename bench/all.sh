#!/usr/bin/env bash
# Every whole-system benchmark in one run, each writing its table into
# BENCHMARKS.md (18 and 31 minutes in the complete runs so far on 2 cores;
# it depends on the host).
# Usage: DATASET=path/to/gallery-250k.ndjson.gz bench/all.sh
source "$(dirname "$0")/lib.sh"
need_dataset
ensure_tools hugo nginx wrk
ensure_sws
build_release
export NO_BUILD=1 DATASET WORK
started=$(date +%s)
took=""
for script in build-vs-hugo serve-vs-nginx router-memory crawl template-change edit-latency burst edge; do
  t=$(date +%s)
  "$ROOT/bench/$script.sh"
  took="$took${took:+, }$script $(( $(date +%s) - t )) s"
done
say "all benchmarks done in $(( $(date +%s) - started )) s ($took)"
