#!/bin/sh
# Entrypoint of difyops-local/squid (the interface of ubuntu/squid's): arguments starting with
# "-" are squid's, so the default command is `squid -f /etc/squid/squid.conf -NYC -d 1`
# (foreground; -d 1 copies squid's own messages to stderr).
# Before squid starts, its log and spool folders and the container's output are given to the
# proxy user, and the cache folders of a configured cache_dir are created (squid -z). squid is
# exec'd as PID 1.
set -eu

[ "$#" -gt 0 ] || set -- -f /etc/squid/squid.conf -NYC -d 1
case "$1" in
  -*) set -- /usr/sbin/squid "$@" ;;
esac

if [ "$1" = /usr/sbin/squid ] || [ "$1" = squid ]; then
  if [ "$(id -u)" = 0 ]; then
    mkdir -p /var/log/squid /var/spool/squid /var/cache/squid
    chown proxy:proxy /var/log/squid /var/spool/squid /var/cache/squid
    # squid opens its access log (stdio:/dev/stdout) after it has become the proxy user:
    # give it the container's output pipes (or terminal), never a file or device such as /dev/null.
    for fd in 1 2; do
      # /proc/$$: this shell's descriptors (which squid inherits), not those of chown itself.
      if [ -p "/proc/$$/fd/$fd" ] || [ -t "$fd" ]; then
        chown --dereference proxy "/proc/$$/fd/$fd" 2>/dev/null || true
      fi
    done
  fi
  # The config file squid is given (after -f), else the packaged one.
  conf=/etc/squid/squid.conf
  previous=""
  for arg in "$@"; do
    if [ "$previous" = -f ]; then conf="$arg"; fi
    previous="$arg"
  done
  # Docker's descriptor limit can be about a million, and squid sizes its tables by it.
  soft="$(ulimit -S -n)"
  if [ "$soft" = unlimited ] || [ "$soft" -gt 65536 ]; then
    ulimit -S -n 65536
  fi
  if grep -Eq '^[[:space:]]*cache_dir[[:space:]]' "$conf" 2>/dev/null; then
    echo "entrypoint: creating missing cache folders (squid -z)"
    /usr/sbin/squid -N -z -f "$conf"
  fi
fi

exec "$@"
