#!/usr/bin/env bash
# Entrypoint of difyops-local/postgres, with the official postgres image's interface
# (images/INTERFACE.md lists exactly what is honoured):
#   - first argument starting with "-" means "postgres <args>";
#   - as root: prepares PGDATA and the socket folder, then re-runs itself as the postgres user;
#   - on an empty PGDATA: initdb with POSTGRES_USER/POSTGRES_PASSWORD, creates POSTGRES_DB, runs
#     /docker-entrypoint-initdb.d/* once against a temporary server that listens on the socket only;
#   - finally execs postgres as PID 1, so signals reach it directly.
# No -u: init scripts are sourced into this shell and may read unset variables, as upstream allows.
set -Eeo pipefail

log() { printf '%s [entrypoint] %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')" "$*"; }
die() { log "error: $*" >&2; exit 1; }

# VAR or VAR_FILE (a Docker secret file), never both; VAR_FILE is read once and unset.
env_or_file() {
  local name="$1" default="${2:-}"
  local file_name="${name}_FILE"
  local value="${!name:-}" file="${!file_name:-}"
  if [ -n "$value" ] && [ -n "$file" ]; then
    die "both $name and $file_name are set: set only one of them"
  fi
  if [ -n "$file" ]; then
    [ -r "$file" ] || die "$file_name=$file is not a readable file"
    value="$(< "$file")"
  fi
  [ -n "$value" ] || value="$default"
  export "$name=$value"
  unset "$file_name"
}

# Arguments that only ask postgres something (version, help, a setting) skip initialisation.
only_asks() {
  local arg
  for arg in "$@"; do
    case "$arg" in
      -V|--version|--help|-'?'|--describe-config|-C|-C*) return 0 ;;
    esac
  done
  return 1
}

load_settings() {
  env_or_file POSTGRES_PASSWORD
  env_or_file POSTGRES_USER postgres
  env_or_file POSTGRES_DB "$POSTGRES_USER"
  env_or_file POSTGRES_INITDB_ARGS
  : "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
  : "${POSTGRES_INITDB_WALDIR:=}"
  export POSTGRES_HOST_AUTH_METHOD POSTGRES_INITDB_WALDIR
}

# As root: folders the server writes, owned by postgres (changed only where needed).
prepare_folders() {
  mkdir -p "$PGDATA"
  find "$PGDATA" \! -user postgres -exec chown postgres:postgres '{}' +
  chmod 00700 "$PGDATA"
  mkdir -p /var/run/postgresql
  find /var/run/postgresql \! -user postgres -exec chown postgres:postgres '{}' +
  chmod 03777 /var/run/postgresql
  if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
    mkdir -p "$POSTGRES_INITDB_WALDIR"
    find "$POSTGRES_INITDB_WALDIR" \! -user postgres -exec chown postgres:postgres '{}' +
    chmod 00700 "$POSTGRES_INITDB_WALDIR"
  fi
}

check_password_given() {
  if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
    die "the database is not initialised and POSTGRES_PASSWORD is empty: set POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE) for the superuser, or POSTGRES_HOST_AUTH_METHOD=trust to allow every connection without a password (never in production)"
  fi
  if [ "$POSTGRES_HOST_AUTH_METHOD" = trust ]; then
    log "warning: POSTGRES_HOST_AUTH_METHOD=trust: every host may connect as any user without a password"
  fi
}

run_initdb() {
  local -a extra=()
  # POSTGRES_INITDB_ARGS is split like a shell command line, so quoted values stay whole.
  eval "extra=( ${POSTGRES_INITDB_ARGS} )"
  if [ -n "$POSTGRES_INITDB_WALDIR" ]; then
    extra+=( --waldir "$POSTGRES_INITDB_WALDIR" )
  fi
  log "initialising a new database cluster in $PGDATA"
  initdb --pgdata="$PGDATA" --username="$POSTGRES_USER" \
    --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") "${extra[@]}"
  # Remote connections: every address, with the configured method (passwords by default).
  printf '\n# added by the entrypoint (POSTGRES_HOST_AUTH_METHOD)\nhost all all all %s\n' \
    "$POSTGRES_HOST_AUTH_METHOD" >> "$PGDATA/pg_hba.conf"
}

psql_init() {
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc "$@"
}

temp_server_start() {
  local options=""
  # The same settings as the real server (each argument quoted for pg_ctl's shell), but no TCP:
  # nothing outside sees a half-made database.
  if [ "$#" -gt 0 ]; then
    options="$(printf '%q ' "$@")"
  fi
  log "starting a temporary server (socket only) for initialisation"
  PGUSER="$POSTGRES_USER" pg_ctl --pgdata="$PGDATA" --wait --silent \
    -o "${options}-c listen_addresses='' -p ${PGPORT:-5432}" start
}

temp_server_stop() {
  PGUSER="$POSTGRES_USER" pg_ctl --pgdata="$PGDATA" --wait --silent -m fast stop
  log "temporary server stopped"
}

create_database() {
  [ "$POSTGRES_DB" != postgres ] || return 0
  local exists
  exists="$(psql_init --dbname postgres --tuples-only --no-align --set db="$POSTGRES_DB" \
    <<< "SELECT 1 FROM pg_database WHERE datname = :'db';")"
  if [ -z "$exists" ]; then
    log "creating database $POSTGRES_DB"
    psql_init --dbname postgres --set db="$POSTGRES_DB" <<< 'CREATE DATABASE :"db";'
  fi
}

run_init_files() {
  local f
  shopt -s nullglob
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sh)
        if [ -x "$f" ]; then
          log "running $f"
          "$f"
        else
          log "sourcing $f"
          # shellcheck disable=SC1090
          . "$f"
        fi
        ;;
      *.sql)     log "running $f"; psql_init --dbname "$POSTGRES_DB" -f "$f" ;;
      *.sql.gz)  log "running $f"; gzip -dc "$f" | psql_init --dbname "$POSTGRES_DB" ;;
      *.sql.xz)  log "running $f"; xz -dc "$f" | psql_init --dbname "$POSTGRES_DB" ;;
      *.sql.zst) log "running $f"; zstd -dc "$f" | psql_init --dbname "$POSTGRES_DB" ;;
      *)         log "ignoring $f" ;;
    esac
  done
  shopt -u nullglob
}

initialise() {
  check_password_given
  run_initdb
  # Init scripts connect like the official image's: psql over the socket, password in the env.
  export PGPASSWORD="${PGPASSWORD:-$POSTGRES_PASSWORD}"
  temp_server_start "$@"
  create_database
  run_init_files
  temp_server_stop
  unset PGPASSWORD
  log "initialisation complete; starting the server"
}

main() {
  [ "$#" -gt 0 ] || set -- postgres
  if [ "${1:0:1}" = '-' ]; then
    set -- postgres "$@"
  fi
  if [ "$1" != postgres ] || only_asks "${@:2}"; then
    exec "$@"
  fi

  load_settings
  if [ "$(id -u)" = 0 ]; then
    prepare_folders
    exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
  fi

  if [ -s "$PGDATA/PG_VERSION" ]; then
    log "$PGDATA already holds a database cluster (PostgreSQL $(< "$PGDATA/PG_VERSION")): initialisation skipped"
  else
    # Without root (docker run --user postgres) the folder must already be writable.
    mkdir -p "$PGDATA"
    chmod 00700 "$PGDATA" 2>/dev/null || true
    initialise "${@:2}"
  fi
  exec "$@"
}

main "$@"
