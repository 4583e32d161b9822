#!/usr/bin/env bash
# Full build, sesame vs Hugo, on the same content and page set: the gallery
# dataset at 50,000 and 250,000 items. Then one new newest item: Hugo rebuilds
# everything (timed, files changed counted) while sesame re-renders a few pages.
#
# Usage: DATASET=path/to/gallery-250k.ndjson.gz bench/build-vs-hugo.sh
# Env: SIZES (default "50000 250000"), REBUILD_SIZES (sizes at which Hugo's
# rebuild after one add is timed and diffed; default "50000"; "50000 250000"
# adds a 250,000-item rebuild, 202 s in the latest run, plus two checksum
# passes over its 720,849 files), WORK (default /tmp/sesame-bench).
# Leaves the sesame sites in $WORK/sesame-N for the other scripts.
source "$(dirname "$0")/lib.sh"
need_dataset
ensure_tools hugo
build_release
SIZES=${SIZES:-50000 250000}
OUT=$WORK/build-vs-hugo.md

# files_in DIR (Hugo's output), bytes_in DIR
files_in() { find "$1" -type f | wc -l; }
bytes_in() { du -sb "$1" | cut -f1; }
# A checksum per output file, to count what a rebuild changed.
checksums() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 md5sum); }

{
  echo "$(machine)"
  echo
  echo "| items | engine | wall time | pages/s | peak RSS | objects / files written | bytes on disk | speed-up vs Hugo | memory vs Hugo |"
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
  log=$WORK/sesame-build-$n.log
  pages=$(grep -o '[0-9,]* pages' "$log" | head -1 | tr -dc '0-9')
  # The generation is live when the build's commit returns; the compressed
  # variants follow (their own line, with their time).
  objects=$(grep -o '[0-9,]* objects written' "$log" | head -1 | tr -dc '0-9')
  variants=$(grep '^then compressed variants' "$log" || true)
  v_files=$(grep -o 'variants: [0-9,]* files' <<< "$variants" | tr -dc '0-9' || true)
  v_seconds=$(grep -o 'in [0-9.]* s$' <<< "$variants" | awk '{print $2}' || true)
  s_files=$(( objects + ${v_files:-0} )) s_bytes=$(bytes_in "$site/.sesame")
  read -r sw sr <<< "$(time_of "sesame-build-$n")"
  lw=$(python3 -c "print(f'{$sw - ${v_seconds:-0}:.2f}')")

  say "hugo: generate and build $n items"
  rm -rf "$hugo_dir"
  python3 "$ROOT/bench/hugo_site.py" gen "$file" "$hugo_dir"
  sync
  timed "hugo-build-$n" hugo --quiet -s "$hugo_dir" -d "$hugo_dir/public"
  h_files=$(files_in "$hugo_dir/public") h_bytes=$(bytes_in "$hugo_dir/public")
  h_pages=$(find "$hugo_dir/public" -name index.html | wc -l)

  read -r hw hr <<< "$(time_of "hugo-build-$n")"
  python3 - "$n" "$pages" "$hw" "$hr" "$h_pages" "$h_files" "$h_bytes" \
    "sesame, until the generation is live" "$lw" "$sr" "$objects" "-" \
    "sesame, until gzip + brotli variants are stored too" "$sw" "$sr" "$s_files" "$s_bytes" >> "$OUT" <<'PY'
import sys
n, sp, hw, hr, hp, hf, hb = sys.argv[1:8]
hw, hr = float(hw), int(hr)
rows = sys.argv[8:]
for i in range(0, len(rows), 5):
    label, w, r, f, b = rows[i:i + 5]
    w, r = float(w), int(r)
    size = "" if b == "-" else f"{int(b)/1e6:,.0f} MB"
    print(f"| {int(n):,} | {label} | {w:.1f} s | {int(sp)/w:,.0f} ({int(sp):,} pages) | {r/1048576:.2f} GB | {int(f):,} | {size} | {hw/w:.2f}× | {hr/r:.1f}× less |")
print(f"| {int(n):,} | Hugo | {hw:.1f} s | {int(hp)/hw:,.0f} ({int(hp):,} pages) | {hr/1048576:.2f} GB | {int(hf):,} | {int(hb)/1e6:,.0f} MB | 1× | 1× |")
PY

  # Hugo has no incremental build: its rebuild takes about its build time, so
  # the (long) rebuild is timed only at the sizes in REBUILD_SIZES.
  case " ${REBUILD_SIZES:-50000} " in *" $n "*) ;; *) continue ;; esac
  say "one new newest item, $n items"
  checksums "$hugo_dir/public" > "$WORK/hugo-$n.before"
  python3 "$ROOT/bench/hugo_site.py" add "$hugo_dir" 99999999 "$(date -u +%Y-%m-01)" "A new benchmark item"
  timed "hugo-rebuild-$n" hugo --quiet -s "$hugo_dir" -d "$hugo_dir/public"
  checksums "$hugo_dir/public" > "$WORK/hugo-$n.after"
  h_changed=$(diff "$WORK/hugo-$n.before" "$WORK/hugo-$n.after" | grep -c '^>' || true)
  printf '{"op":"upsert","collection":"sprites","id":"99999999","doc":{"title":"A new benchmark item","created":"%s","owner":"benchmark","tags":["benchmark","data"],"slug":"new-item"}}\n' "$(date -u +%Y-%m-01)" > "$WORK/add.ndjson"
  "$BIN" --project "$site" apply "$WORK/add.ndjson" > "$WORK/sesame-add-$n.log"
  s_line=$(grep -o 'generation [0-9]*: .*' "$WORK/sesame-add-$n.log" | head -1 | cut -d: -f2- | xargs || true)
  read -r hrw _ <<< "$(time_of "hugo-rebuild-$n")"
  echo "| $n | $hrw s, $h_changed files changed | $s_line |" >> "$EDITS"
done

{
  echo
  echo "One new newest item after the build (Hugo: full rebuild, output files compared by checksum; sesame: \`sesame apply\` of one event, the publish alone):"
  echo
  echo "| items | Hugo rebuild | sesame |"
  echo "|---|---|---|"
  cat "$EDITS"
} >> "$OUT"
cat "$OUT"
record build-vs-hugo "$OUT"
