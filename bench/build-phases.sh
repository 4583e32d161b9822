#!/usr/bin/env bash
# The phases of one `sesame build` until its generation is committed, for an
# A/B of two binaries on the same project, alternated. Each run starts from a
# fresh copy of PROJECT (an imported, unbuilt project: a full build; a built
# one with TEMPLATE_CHANGE=1: every page changes, as in template-change.sh),
# is killed once committed (the compressed variants that follow are not
# timed), and prints its CPU seconds, its peak anonymous memory (sampled
# every 0.2 s) and the build's own phase log.
#
# Usage: bench/build-phases.sh PROJECT BINARY_A BINARY_B [ROUNDS]
# Env: TEMPLATE_CHANGE=1 adds a comment to templates/_base.html first;
#      PROJECT_B=DIR gives B a project of its own (e.g. the same content with
#      other templates, for an A/B of templates with one binary).
source "$(dirname "$0")/lib.sh"
project=$1 a=$2 b=$3 rounds=${4:-2}
project_b=${PROJECT_B:-$project}
run=$WORK/build-phases

# once LABEL BINARY PROJECT → one line: the phases and their elapsed times
once() {
  # The log is emptied here, not by the redirection below: that one runs in
  # the background child, after the wait loop may have read the old log.
  rm -rf "$run"
  : > "$run.log"
  cp -a "$3" "$run"
  sync
  if [ -n "${TEMPLATE_CHANGE:-}" ]; then
    sed -i "0,/<head>/s//<head><!-- $1 $(date +%s.%N) -->/" "$run/templates/_base.html"
  fi
  SESAME_LOG=info "$2" --project "$run" build > "$run.log" 2>&1 &
  local pid=$! anon peak=0
  # Anonymous memory (what the build allocates; LMDB's mapped pages are
  # the page cache's), sampled while it runs.
  until grep -q 'generation committed' "$run.log" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || break
    anon=$(awk '/^RssAnon:/ {print int($2 / 1024)}' "/proc/$pid/status" 2>/dev/null || echo 0)
    [ "${anon:-0}" -gt "$peak" ] && peak=$anon
    sleep 0.2
  done
  # CPU seconds until committed (user + system, all threads): steadier
  # than wall time on a shared host.
  local cpu
  cpu=$(awk -v hz="$(getconf CLK_TCK)" '{ printf "%.1f", ($14 + $15) / hz }' "/proc/$pid/stat" 2>/dev/null || echo "?")
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  echo "$1: cpu=${cpu}s; anon_peak=${peak}MB; $(grep -oE '(published state loaded|changes applied|pages rendered and written|manifest written|objects synced|generation committed).*elapsed=[^ ]+' "$run.log" |
    sed -E 's/ (documents|events|candidates|rendered|generation)=[0-9]+//g' | paste -sd';')"
}

for round in $(seq "$rounds"); do
  once "A$round" "$a" "$project"
  once "B$round" "$b" "$project_b"
done
rm -rf "$run"
