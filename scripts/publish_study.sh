#!/usr/bin/env bash
# Copy a finished study's report into docs/results/<name>/: report.md, results.json, the
# contrast against a twin study where one was written (contrast.md, contrast.json), the
# plots, the error maps (probe/ and the seed-0 map record of each row that probe/maps.json
# names; the records along a training curve stay behind, probe.md tables them), and what
# the report links: the real-data grid (or the first two reference clips) and the first
# seed's sample grid (or first two clips) and learned band weights of every variant.
# Usage: bash scripts/publish_study.sh results/<name> [docs/results/<name>]
set -euo pipefail
src=${1:?usage: publish_study.sh results/<name> [docs/results/<name>]}
dst=${2:-docs/results/$(basename "$src")}
mkdir -p "$dst"
dst=$(cd "$dst" && pwd)  # absolute: the copies below run inside "$src"
cp "$src"/report.md "$src"/results.json "$dst"/
for f in "$src"/contrast.md "$src"/contrast.json; do [ -e "$f" ] && cp "$f" "$dst"/; done
for f in "$src"/*.png; do [ -e "$f" ] && cp "$f" "$dst"/; done
if [ -d "$src/probe" ]; then  # the error maps the report links (probe.md, its figures, maps.json)
  mkdir -p "$dst/probe"
  for f in "$src"/probe/*.md "$src"/probe/*.png "$src"/probe/*.json; do [ -e "$f" ] && cp "$f" "$dst/probe/"; done
fi
( cd "$src" && for d in real runs/*/seed0/eval; do
    [ -d "$d" ] || continue
    mkdir -p "$dst/$d"
    [ -e "$d/samples.png" ] && cp "$d/samples.png" "$dst/$d/"
    { ls "$d" | grep "\.wav$" || true; } | sort | head -2 | while read -r w; do cp "$d/$w" "$dst/$d/"; done
  done
  for f in runs/*/seed0/band_weights.png runs/*/seed0/probe/probe.json; do
    [ -e "$f" ] || continue
    mkdir -p "$dst/$(dirname "$f")"
    cp "$f" "$dst/$f"
  done
  true )
du -sh "$dst"
