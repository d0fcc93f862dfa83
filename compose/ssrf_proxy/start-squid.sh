# The end of both SSRF proxies' entrypoints (docker-entrypoint.sh, agent-entrypoint.sh), sourced
# by them once squid's configuration is rendered: prepare what squid writes to, then run it in
# the foreground as PID 1. Needs SQUID, CONF and COREDUMP_DIR set; only sh.

if [ "$(id -u)" = 0 ]; then
  mkdir -p "$COREDUMP_DIR"
  if id proxy >/dev/null 2>&1; then
    chown proxy "$COREDUMP_DIR" 2>/dev/null || true
    # squid opens stdio:/dev/stdout after it has become the proxy user: give it the container's
    # output pipes (or terminal), never a file or a device such as /dev/null.
    for fd in 1 2; do
      # /proc/$$: this shell's descriptors (which squid inherits), not those of chown itself.
      if [ -p "/proc/$$/fd/$fd" ] || [ -t "$fd" ]; then
        chown --dereference proxy "/proc/$$/fd/$fd" 2>/dev/null || true
      fi
    done
  fi
fi

# Docker's descriptor limit can be about a million, and squid sizes its tables by it: cap the
# soft limit (lowering is always allowed; a smaller limit is kept).
soft="$(ulimit -S -n)"
if [ "$soft" = unlimited ] || [ "$soft" -gt 65536 ]; then
  ulimit -S -n 65536
fi

# -d 1: squid's own messages on stderr (the template sends cache_log to /dev/null).
exec "$SQUID" -f "$CONF" -NYC -d 1
