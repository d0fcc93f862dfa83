#!/bin/bash
# Archive a folder (a volume mounted at SOURCE): tar with numeric owners, zstd, encrypted to an age
# recipient. Folders named .difyops-* (content a restore moved aside) are left out.
# Prints "files<TAB>N" and "bytes<TAB>N" (regular files and their total size) on stdout.
# Usage: tar-dir.sh SOURCE OUTPUT_FILE
# Env: AGE_RECIPIENT ZSTD_LEVEL
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: tar-dir.sh SOURCE OUTPUT_FILE" >&2; exit 2; }
src=$1 out=$2
tar -C "$src" --numeric-owner --exclude='./.difyops-*' -cf - . \
  | zstd -q -T0 "-${ZSTD_LEVEL:-3}" \
  | age -r "$AGE_RECIPIENT" -o "$out.tmp"
mv "$out.tmp" "$out"
files=$(find "$src" -path "$src/.difyops-*" -prune -o -type f -print | wc -l)
bytes=$(find "$src" -path "$src/.difyops-*" -prune -o -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')
printf 'files\t%s\nbytes\t%s\n' "$files" "$bytes"
