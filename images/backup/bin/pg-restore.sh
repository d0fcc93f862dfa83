#!/bin/bash
# Restore one encrypted dump into a NEW database (created here, from template0), then print its
# per-table row counts ("schema.table<TAB>count"). It never touches an existing database.
# Usage: pg-restore.sh INPUT_FILE NEW_DATABASE
# Env: PGHOST PGPORT PGUSER PGPASSWORD; the age identity is mounted at /identity/key
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: pg-restore.sh INPUT_FILE NEW_DATABASE" >&2; exit 2; }
in=$1 db=$2
here=$(dirname "$0")
psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE \"$db\" TEMPLATE template0"
age -d -i /identity/key "$in" | zstd -q -d -c | pg_restore --exit-on-error -d "$db"
psql -X -q -A -t -F $'\t' -v ON_ERROR_STOP=1 -d "$db" -f "$here/counts.sql"
