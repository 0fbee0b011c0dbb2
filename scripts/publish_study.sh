#!/usr/bin/env bash
# Copy a finished study's report into docs/results/<name>/: report.md, results.json, the
# plots, the real-data grid and the first seed's sample grid of every variant.
# Usage: bash scripts/publish_study.sh results/<name> [docs/results/<name>]
set -euo pipefail
src=${1:?usage: publish_study.sh results/<name> [docs/results/<name>]}
dst=${2:-docs/results/$(basename "$src")}
mkdir -p "$dst"
cp "$src"/report.md "$src"/results.json "$dst"/
for f in "$src"/*.png "$src"/*.wav; do [ -e "$f" ] && cp "$f" "$dst"/; done
( cd "$src" && find real runs -path '*/seed0/eval/*' -o -path 'real/*' 2>/dev/null ) | while read -r f; do
  case "$f" in *.png|*.wav) mkdir -p "$dst/$(dirname "$f")"; cp "$src/$f" "$dst/$f";; esac
done
du -sh "$dst"
