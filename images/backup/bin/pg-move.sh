#!/bin/bash
# Move one PostgreSQL database to another server, of the same or a newer major version, and
# fingerprint both sides: pg_dump (this image's, 17: it reads servers from 9.2 on) in the custom
# format, piped into pg_restore on the target, in a NEW database created here. The source is read in
# one exported snapshot: its fingerprint and the dump see the same data even if something writes.
# Owners and grants are not carried: every object belongs to the target's user (the one Dify
# connects as). The target database is analysed (a dump carries no planner statistics).
# Prints, tab-separated: "source|target<TAB>table|sequence<TAB>name<TAB>..." (fingerprint.sql) and
# "meta<TAB>key<TAB>value" (sizes in bytes, times in milliseconds). Nothing is written on the source.
# Usage: pg-move.sh SOURCE_DATABASE TARGET_DATABASE
# Env: SRC_PGHOST SRC_PGPORT SRC_PGUSER SRC_PGPASSWORD, DST_PGHOST DST_PGPORT DST_PGUSER DST_PGPASSWORD
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: pg-move.sh SOURCE_DATABASE TARGET_DATABASE" >&2; exit 2; }
src_db=$1 dst_db=$2
here=$(dirname "$0")
# Both servers print values alike (fingerprint.sql); the same for the restore session.
export PGOPTIONS='-c TimeZone=UTC -c DateStyle=ISO,YMD -c IntervalStyle=postgres -c extra_float_digits=1 -c bytea_output=hex'

src() { PGHOST=$SRC_PGHOST PGPORT=${SRC_PGPORT:-5432} PGUSER=$SRC_PGUSER PGPASSWORD=$SRC_PGPASSWORD "$@"; }
dst() { PGHOST=$DST_PGHOST PGPORT=${DST_PGPORT:-5432} PGUSER=$DST_PGUSER PGPASSWORD=$DST_PGPASSWORD "$@"; }
now() { date +%s%3N; }  # milliseconds
meta() { printf 'meta\t%s\t%s\n' "$1" "$2"; }

# A session that holds a repeatable-read transaction open and exports its snapshot.
coproc HOLD { src psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$src_db"; }
echo "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT pg_export_snapshot();" >&"${HOLD[1]}"
read -r -t 60 snapshot <&"${HOLD[0]}" || { echo "could not export a snapshot of $src_db" >&2; exit 1; }

started=$(now)
{ printf 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\nSET TRANSACTION SNAPSHOT %s;\n' "'$snapshot'"
  cat "$here/fingerprint.sql"
  printf 'COMMIT;\n'; } | src psql -X -q -A -t -F $'\t' -v ON_ERROR_STOP=1 -d "$src_db" | sed 's/^/source\t/'
meta source_fingerprint_ms "$(( $(now) - started ))"

read -r encoding size version < <(src psql -X -A -t -F ' ' -v ON_ERROR_STOP=1 -d "$src_db" -c \
  "SELECT pg_encoding_to_char(encoding), pg_database_size(datname), current_setting('server_version_num')
     FROM pg_database WHERE datname = current_database()")
meta source_bytes "$size"
meta source_version "$version"
meta encoding "$encoding"
locale=""
[ "$encoding" = UTF8 ] || locale=" LOCALE 'C'"  # another encoding needs a locale that accepts it
dst psql -X -q -v ON_ERROR_STOP=1 -d postgres \
  -c "CREATE DATABASE \"$dst_db\" TEMPLATE template0 ENCODING '$encoding'$locale"

started=$(now)
src pg_dump --format=custom --compress=0 --snapshot="$snapshot" -d "$src_db" \
  | dst pg_restore --exit-on-error --no-owner --no-acl -d "$dst_db"
meta move_ms "$(( $(now) - started ))"

echo "COMMIT;" >&"${HOLD[1]}"
exec {HOLD[1]}>&-
wait

started=$(now)
dst psql -X -q -v ON_ERROR_STOP=1 -d "$dst_db" -c ANALYZE
meta analyze_ms "$(( $(now) - started ))"
started=$(now)
dst psql -X -q -A -t -F $'\t' -v ON_ERROR_STOP=1 -d "$dst_db" -f "$here/fingerprint.sql" | sed 's/^/target\t/'
meta target_fingerprint_ms "$(( $(now) - started ))"
meta target_bytes "$(dst psql -X -A -t -v ON_ERROR_STOP=1 -d "$dst_db" -c "SELECT pg_database_size(current_database())")"
