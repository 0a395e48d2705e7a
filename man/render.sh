#!/bin/sh
# Render the man pages from their scdoc sources: man/render.sh [OUTDIR]
#
# OUTDIR defaults to man/ itself; tests/test_docs.py renders into a temp dir
# and compares, so the shipped pages cannot fall behind their sources.
# scdoc puts the date of SOURCE_DATE_EPOCH into each page; it is fixed here so
# that rendering is reproducible.  Move it forward when the pages change.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here}
SOURCE_DATE_EPOCH=1795824000 # 2026-11-28
export SOURCE_DATE_EPOCH
command -v scdoc >/dev/null || { echo "render.sh: scdoc is not installed" >&2; exit 1; }
mkdir -p "$out"
for src in "$here"/*.scd; do
  page=$(basename "$src" .scd)
  if ! scdoc < "$src" > "$out/$page.tmp"; then
    rm -f "$out/$page.tmp"
    echo "render.sh: scdoc failed on $src" >&2
    exit 1
  fi
  mv "$out/$page.tmp" "$out/$page"
done
