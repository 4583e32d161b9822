#!/usr/bin/env bash
# Metadata rows per generation on the embedded store: a gallery of N items
# imported and built, then a template change (every page re-rendered, a whole
# new generation) and ten single adds, with the rows of every table counted
# after each step.
# Usage: DATASET=path/to/gallery-250k.ndjson.gz ITEMS=50000 bench/rows.sh
# (SESAME_BIN=path/to/sesame measures another build; NO_BUILD=1 skips building.)
source "$(dirname "$0")/lib.sh"
need_dataset
build_release
ITEMS=${ITEMS:-50000}
SITE=$WORK/rows-$ITEMS
rm -rf "$SITE"
"$BIN" init "$SITE" --example gallery >/dev/null
"$BIN" --project "$SITE" import "$(gallery "$ITEMS")" --collection sprites >/dev/null

count() {
  python3 - "$SITE/.sesame/sesame.db" "$1" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\' AND name NOT LIKE 'sqlite%'")]
counts = {t: db.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}
print(sys.argv[2], sum(counts.values()), " ".join(f"{t}={n}" for t, n in sorted(counts.items()) if n))
PY
}

say "full build"
"$BIN" --project "$SITE" build >/dev/null
count "built" | tee "$WORK/rows.txt"
say "template change: a whole new generation"
echo "<!-- changed -->" >> "$SITE/templates/sprite.html"
"$BIN" --project "$SITE" build >/dev/null
count "template-change" | tee -a "$WORK/rows.txt"
say "ten adds, one generation each"
for i in $(seq 1 10); do
  printf '{"op":"upsert","collection":"sprites","id":"rows-%s","doc":{"title":"Rows %s","created":"2026-12-06","owner":"rows","tags":["example"]}}\n' "$i" "$i" >"$WORK/add.ndjson"
  "$BIN" --project "$SITE" apply "$WORK/add.ndjson" >/dev/null
done
count "ten-adds" | tee -a "$WORK/rows.txt"
du -b "$SITE/.sesame/sesame.db" | awk '{printf "sesame.db %.1f MB\n", $1 / 1e6}'
python3 - "$WORK/rows.txt" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1])]
total = {r[0]: int(r[1]) for r in rows}
print(f"rows a whole new generation adds: {total['template-change'] - total['built']:,}")
print(f"rows per add (ten adds): {(total['ten-adds'] - total['template-change']) / 10:.1f}")
PY
