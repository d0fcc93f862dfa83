#!/bin/bash
# Set PostgreSQL roles' passwords in one transaction (all or none), the new passwords read from the
# environment so no password is ever on a command line (psql's \getenv).
# Usage: role-passwords.sh ROLE=VARIABLE...   e.g. postgres=NEW_PASSWORD_1 replicator=NEW_PASSWORD_2
# Env: PGHOST PGPORT PGUSER PGPASSWORD (the current password, to connect), and each VARIABLE.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: role-passwords.sh ROLE=VARIABLE..." >&2; exit 2; }
{
  echo 'BEGIN;'
  for pair in "$@"; do
    role=${pair%%=*} var=${pair#*=}
    [ -n "${!var:-}" ] || { echo "$var is empty: no password for role $role" >&2; exit 2; }
    printf '\\set role %s\n\\getenv password %s\n' "$role" "$var"
    echo "ALTER ROLE :\"role\" WITH PASSWORD :'password';"
  done
  echo 'COMMIT;'
} | psql -X -q -v ON_ERROR_STOP=1 -d postgres
