#!/usr/bin/env bash
# Full build, sesame vs Hugo, on the same content and page set: the gallery
# dataset at 50,000 and 250,000 items. Then one new newest item: Hugo rebuilds
# everything (timed, files changed counted) while sesame re-renders a few pages.
#
# Usage: DATASET=path/to/gallery-250k.ndjson.gz bench/build-vs-hugo.sh
# Env: SIZES (default "50000 250000"), WORK (default /tmp/sesame-bench).
# Leaves the sesame sites in $WORK/sesame-N for the other scripts.
source "$(dirname "$0")/lib.sh"
need_dataset
ensure_tools hugo
build_release
SIZES=${SIZES:-50000 250000}
OUT=$WORK/build-vs-hugo.md

# files_in DIR, bytes_in DIR
files_in() { find "$1" -type f | wc -l; }
bytes_in() { du -sb "$1" | cut -f1; }
# A checksum per output file, to count what a rebuild changed.
checksums() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 md5sum); }

{
  echo "$(machine)"
  echo
  echo "| items | engine | wall time | pages/s | peak RSS | files written | bytes written | speed-up | memory ratio |"
  echo "|---|---|---|---|---|---|---|---|---|"
} > "$OUT"
EDITS=$WORK/build-vs-hugo-edit.md
: > "$EDITS"

for n in $SIZES; do
  file=$(gallery "$n")
  site=$WORK/sesame-$n hugo_dir=$WORK/hugo-$n
  say "sesame: import and build $n items"
  sesame_site "$site" "$file"
  sync
  timed "sesame-build-$n" "$BIN" --project "$site" build > "$WORK/sesame-build-$n.log"
  pages=$(grep -o '[0-9,]* pages' "$WORK/sesame-build-$n.log" | head -1 | tr -dc '0-9')
  s_files=$(files_in "$site/.sesame/objects") s_bytes=$(bytes_in "$site/.sesame")

  say "hugo: generate and build $n items"
  rm -rf "$hugo_dir"
  python3 "$ROOT/bench/hugo_site.py" gen "$file" "$hugo_dir"
  sync
  timed "hugo-build-$n" hugo --quiet -s "$hugo_dir" -d "$hugo_dir/public"
  h_files=$(files_in "$hugo_dir/public") h_bytes=$(bytes_in "$hugo_dir/public")
  h_pages=$(find "$hugo_dir/public" -name index.html | wc -l)

  read -r sw sr <<< "$(time_of "sesame-build-$n")"
  read -r hw hr <<< "$(time_of "hugo-build-$n")"
  python3 - "$n" "$sw" "$sr" "$pages" "$s_files" "$s_bytes" "$hw" "$hr" "$h_pages" "$h_files" "$h_bytes" >> "$OUT" <<'PY'
import sys
n, sw, sr, sp, sf, sb, hw, hr, hp, hf, hb = sys.argv[1:]
sw, hw, sr, hr = float(sw), float(hw), int(sr), int(hr)
print(f"| {int(n):,} | sesame | {sw:.1f} s | {int(sp)/sw:,.0f} ({int(sp):,} pages) | {sr/1048576:.2f} GB | {int(sf):,} | {int(sb)/1e6:,.0f} MB | {hw/sw:.1f}× | {hr/sr:.1f}× less |")
print(f"| {int(n):,} | Hugo | {hw:.1f} s | {int(hp)/hw:,.0f} ({int(hp):,} pages) | {hr/1048576:.2f} GB | {int(hf):,} | {int(hb)/1e6:,.0f} MB | 1× | 1× |")
PY

  say "one new newest item, $n items"
  checksums "$hugo_dir/public" > "$WORK/hugo-$n.before"
  python3 "$ROOT/bench/hugo_site.py" add "$hugo_dir" 99999999 "$(date -u +%Y-%m-01)" "A new benchmark item"
  timed "hugo-rebuild-$n" hugo --quiet -s "$hugo_dir" -d "$hugo_dir/public"
  checksums "$hugo_dir/public" > "$WORK/hugo-$n.after"
  h_changed=$(diff "$WORK/hugo-$n.before" "$WORK/hugo-$n.after" | grep -c '^>' || true)
  printf '{"op":"upsert","collection":"sprites","id":"99999999","doc":{"title":"A new benchmark item","created":"%s","owner":"benchmark","tags":["benchmark","data"],"slug":"new-item"}}\n' "$(date -u +%Y-%m-01)" > "$WORK/add.ndjson"
  "$BIN" --project "$site" apply "$WORK/add.ndjson" > "$WORK/sesame-add-$n.log"
  s_line=$(tail -1 "$WORK/sesame-add-$n.log")
  read -r hrw _ <<< "$(time_of "hugo-rebuild-$n")"
  echo "| $n | $hrw s, $h_changed files changed | $s_line |" >> "$EDITS"
done

{
  echo
  echo "One new newest item after the build (Hugo: full rebuild; sesame: \`sesame apply\` of one event):"
  echo
  echo "| items | Hugo rebuild | sesame |"
  echo "|---|---|---|"
  cat "$EDITS"
} >> "$OUT"
cat "$OUT"
record build-vs-hugo "$OUT"
