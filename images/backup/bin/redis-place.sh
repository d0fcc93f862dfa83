#!/bin/bash
# Put a plain RDB snapshot into a stopped Redis's data folder (mounted at TARGET), in the layout the
# Redis that will load it reads, whether it runs with appendonly on or off: dump.rdb, plus
#   Redis 7 and newer: appendonlydir/ whose base file is the snapshot (its manifest names it);
#   Redis 6 and older: appendonly.aof holding the snapshot (an AOF may start with an RDB preamble).
# The current content moves to TARGET/.difyops-pre-adopt-STAMP first (nothing is deleted); the new
# files get TARGET's owner (the image's entrypoint fixes owners too).
# Usage: redis-place.sh RDB_FILE TARGET STAMP REDIS_MAJOR
set -euo pipefail
[ $# -eq 4 ] || { echo "usage: redis-place.sh RDB_FILE TARGET STAMP REDIS_MAJOR" >&2; exit 2; }
in=$1 target=$2 stamp=$3 major=$4
[ -s "$in" ] || { echo "$in is missing or empty" >&2; exit 1; }
head -c 5 "$in" | grep -q '^REDIS' || { echo "$in is not an RDB file (no REDIS header)" >&2; exit 1; }
aside="$target/.difyops-pre-adopt-$stamp"
if [ -n "$(find "$target" -mindepth 1 -maxdepth 1 ! -name '.difyops-*' -print -quit)" ]; then
  mkdir "$aside"
  find "$target" -mindepth 1 -maxdepth 1 ! -name '.difyops-*' -exec mv -t "$aside" {} +
  printf 'aside\t%s\n' "$aside"
fi
cp "$in" "$target/dump.rdb"
if [ "$major" -ge 7 ]; then
  mkdir "$target/appendonlydir"
  cp "$in" "$target/appendonlydir/appendonly.aof.1.base.rdb"
  printf 'file appendonly.aof.1.base.rdb seq 1 type b\n' > "$target/appendonlydir/appendonly.aof.manifest"
  chown -R --reference="$target" "$target/dump.rdb" "$target/appendonlydir"
else
  cp "$in" "$target/appendonly.aof"
  chown --reference="$target" "$target/dump.rdb" "$target/appendonly.aof"
fi
