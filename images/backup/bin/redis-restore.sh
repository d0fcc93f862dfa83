#!/bin/bash
# Restore a Redis snapshot into a stopped Redis's data folder (mounted at TARGET): the current
# content moves to TARGET/.difyops-pre-restore-STAMP, the snapshot becomes dump.rdb and the base of
# a fresh append-only file (Redis 7+ layout), so Redis loads it with appendonly on or off.
# Usage: redis-restore.sh INPUT_FILE TARGET STAMP
# The age identity is mounted at /identity/key.
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: redis-restore.sh INPUT_FILE TARGET STAMP" >&2; exit 2; }
in=$1 target=$2 stamp=$3
rdb=$(mktemp /tmp/restore-XXXXXX.rdb)
trap 'rm -f "$rdb"' EXIT
age -d -i /identity/key "$in" | zstd -q -d -c > "$rdb"
aside="$target/.difyops-pre-restore-$stamp"
mkdir "$aside"
chown --reference="$target" "$aside"; chmod --reference="$target" "$aside"
find "$target" -mindepth 1 -maxdepth 1 ! -name '.difyops-*' -exec mv -t "$aside" {} +
mkdir "$target/appendonlydir"
cp "$rdb" "$target/dump.rdb"
cp "$rdb" "$target/appendonlydir/appendonly.aof.1.base.rdb"
printf 'file appendonly.aof.1.base.rdb seq 1 type b\n' > "$target/appendonlydir/appendonly.aof.manifest"
chown -R --reference="$target" "$target/dump.rdb" "$target/appendonlydir"
printf 'aside\t%s\n' "$aside"
