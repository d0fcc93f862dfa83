#!/bin/bash
# Snapshot Redis online (redis-cli --rdb: the replication protocol, nothing written on the server),
# zstd, encrypted to an age recipient. Prints "keys<TAB>N" and "redis_version<TAB>V" on stdout.
# Usage: redis-dump.sh OUTPUT_FILE
# Env: REDIS_HOST REDIS_PORT REDISCLI_AUTH AGE_RECIPIENT ZSTD_LEVEL
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: redis-dump.sh OUTPUT_FILE" >&2; exit 2; }
out=$1
rdb=$(mktemp /tmp/redis-XXXXXX.rdb)
trap 'rm -f "$rdb"' EXIT
redis-cli -h "$REDIS_HOST" -p "${REDIS_PORT:-6379}" --no-auth-warning --rdb "$rdb" >/dev/null
zstd -q -T0 "-${ZSTD_LEVEL:-3}" -c "$rdb" | age -r "$AGE_RECIPIENT" -o "$out.tmp"
mv "$out.tmp" "$out"
keys=$(redis-cli -h "$REDIS_HOST" -p "${REDIS_PORT:-6379}" --no-auth-warning info keyspace \
       | sed -n 's/^db[0-9]*:keys=\([0-9]*\).*/\1/p' | awk '{s+=$1} END {print s+0}')
version=$(redis-cli -h "$REDIS_HOST" -p "${REDIS_PORT:-6379}" --no-auth-warning info server \
          | sed -n 's/^redis_version:\([^[:space:]]*\).*/\1/p')
printf 'keys\t%s\nredis_version\t%s\n' "$keys" "$version"
