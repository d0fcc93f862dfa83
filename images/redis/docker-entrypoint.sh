#!/bin/sh
# Entrypoint of difyops-local/redis, with the official redis image's interface
# (images/INTERFACE.md lists exactly what is honoured):
#   - a first argument that is an option (-...) or a config file (*.conf) means "redis-server <args>";
#   - without a config file, protected mode is off by default, as in the official build (which
#     patches that default): containers on the same network can connect; --protected-mode overrides;
#   - redis-server and redis-sentinel started as root: files in the working folder (/data) that
#     the redis user does not own are given to it, then the server runs as redis;
#   - the command is exec'd, so redis is PID 1 and gets SIGTERM directly (it saves and exits).
set -eu

[ "$#" -gt 0 ] || set -- redis-server
case "$1" in
  -*|*.conf) set -- redis-server "$@" ;;
esac

if { [ "$1" = redis-server ] || [ "$1" = redis-sentinel ]; } && [ "$(id -u)" = 0 ]; then
  find . \! -user redis -exec chown redis '{}' +
  exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi

if [ "$1" = redis-server ]; then
  case "${2:-}" in
    --version|--help|--test-memory|--check-system) ;;
    ''|--*)
      # No config file: protected mode off unless asked; inserted first so a later
      # --protected-mode still wins.
      shift
      set -- redis-server --protected-mode no "$@"
      ;;
  esac
fi

# Files redis writes (dumps, AOF) are private to it, unless the caller chose a umask already.
if [ "$(umask)" = 0022 ]; then
  umask 0077
fi

exec "$@"
