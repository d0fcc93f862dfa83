#!/bin/bash
# Digest of every key of a Redis server (redis-digest.lua), per database: prints "cutoff<TAB>MS",
# "db<TAB>keys<TAB>short_lived<TAB>sha1" lines and "redis_version<TAB>V". Read-only.
# Usage: redis-digest.sh HOST PORT [CUTOFF_MS]   (Unix ms; keys expiring before it are counted apart;
#        0 or none: five minutes from now. Pass the first side's cutoff to the second.)
# Env: REDISCLI_AUTH
set -euo pipefail
[ $# -ge 2 ] && [ $# -le 3 ] || { echo "usage: redis-digest.sh HOST PORT [CUTOFF_MS]" >&2; exit 2; }
host=$1 port=$2 cutoff=${3:-0}
here=$(dirname "$0")
cli() { redis-cli -h "$host" -p "$port" --no-auth-warning "$@"; }
mapfile -t dbs < <(cli info keyspace | sed -n 's/^db\([0-9]*\):.*/\1/p')
if [ "${#dbs[@]}" -gt 0 ]; then
  # --raw: the script's lines as they are (tabs kept, no quoting).
  cli --raw EVAL "$(cat "$here/redis-digest.lua")" 0 "$cutoff" "${dbs[@]}"
fi
printf 'redis_version\t%s\n' "$(cli info server | sed -n 's/^redis_version:\([^[:space:]]*\).*/\1/p')"
