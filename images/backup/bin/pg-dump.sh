#!/bin/bash
# Dump one PostgreSQL database online: pg_dump custom format, zstd, encrypted to an age recipient.
# The per-table row counts printed on stdout come from the very snapshot pg_dump reads, so they
# match the dump exactly while the stack keeps writing.
# Usage: pg-dump.sh DATABASE OUTPUT_FILE
# Env: PGHOST PGPORT PGUSER PGPASSWORD AGE_RECIPIENT ZSTD_LEVEL
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: pg-dump.sh DATABASE OUTPUT_FILE" >&2; exit 2; }
db=$1 out=$2
here=$(dirname "$0")

# A session that holds a repeatable-read transaction open and exports its snapshot.
coproc HOLD { psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$db"; }
echo "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT pg_export_snapshot();" >&"${HOLD[1]}"
read -r -t 60 snapshot <&"${HOLD[0]}" || { echo "could not export a snapshot of $db" >&2; exit 1; }

{ printf 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\nSET TRANSACTION SNAPSHOT %s;\n' "'$snapshot'"
  cat "$here/counts.sql"
  printf 'COMMIT;\n'; } | psql -X -q -A -t -F $'\t' -v ON_ERROR_STOP=1 -d "$db"

pg_dump --format=custom --compress=0 --snapshot="$snapshot" -d "$db" \
  | zstd -q -T0 "-${ZSTD_LEVEL:-3}" \
  | age -r "$AGE_RECIPIENT" -o "$out.tmp"
mv "$out.tmp" "$out"

echo "COMMIT;" >&"${HOLD[1]}"
exec {HOLD[1]}>&-
wait
