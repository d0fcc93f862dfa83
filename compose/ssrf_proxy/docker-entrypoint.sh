#!/bin/sh
# ssrf_proxy entrypoint: renders /etc/squid/squid.conf from /etc/squid/squid.conf.template and
# runs squid in the foreground as PID 1 (so `docker stop` reaches it), logging to stdout/stderr.
# Settings (Dify's names): HTTP_PORT (3128), COREDUMP_DIR (/var/spool/squid),
# REVERSE_PROXY_PORT (8194), SANDBOX_HOST (sandbox), SANDBOX_PORT (8194).
# Needs only sh, squid and envsubst, so it runs in ubuntu/squid and in difyops-local/squid
# (without envsubst it falls back to sed, which every Debian or Ubuntu image has).
set -eu

TEMPLATE=/etc/squid/squid.conf.template
CONF=/etc/squid/squid.conf
SQUID=/usr/sbin/squid

fail() { echo "ssrf_proxy: $*" >&2; exit 1; }

HTTP_PORT="${HTTP_PORT:-3128}"
COREDUMP_DIR="${COREDUMP_DIR:-/var/spool/squid}"
REVERSE_PROXY_PORT="${REVERSE_PROXY_PORT:-8194}"
SANDBOX_HOST="${SANDBOX_HOST:-sandbox}"
SANDBOX_PORT="${SANDBOX_PORT:-8194}"
export HTTP_PORT COREDUMP_DIR REVERSE_PROXY_PORT SANDBOX_HOST SANDBOX_PORT

# A bad value would otherwise surface as a squid parse error far from its cause.
for pair in "HTTP_PORT=$HTTP_PORT" "REVERSE_PROXY_PORT=$REVERSE_PROXY_PORT" "SANDBOX_PORT=$SANDBOX_PORT"; do
  case "${pair#*=}" in
    ''|*[!0-9]*) fail "${pair%%=*} must be a port number, not '${pair#*=}'" ;;
  esac
done
case "$SANDBOX_HOST" in
  ''|*[!A-Za-z0-9._:-]*) fail "SANDBOX_HOST must be a host name or address, not '$SANDBOX_HOST'" ;;
esac
case "$COREDUMP_DIR" in
  /*) ;;
  *) fail "COREDUMP_DIR must be an absolute path, not '$COREDUMP_DIR'" ;;
esac
[ "$HTTP_PORT" != "$REVERSE_PROXY_PORT" ] || fail "HTTP_PORT and REVERSE_PROXY_PORT must differ (both are $HTTP_PORT)"
[ -r "$TEMPLATE" ] || fail "$TEMPLATE is missing: mount compose/ssrf_proxy/squid.conf.template there"

# Only these five are substituted; any other $ in the template stays as it is.
if command -v envsubst >/dev/null 2>&1; then
  envsubst '${HTTP_PORT} ${COREDUMP_DIR} ${REVERSE_PROXY_PORT} ${SANDBOX_HOST} ${SANDBOX_PORT}' \
    < "$TEMPLATE" > "$CONF.new"
else
  # The values were checked above: none holds the sed delimiter or a newline.
  sed -e "s|\${HTTP_PORT}|$HTTP_PORT|g" \
      -e "s|\${COREDUMP_DIR}|$COREDUMP_DIR|g" \
      -e "s|\${REVERSE_PROXY_PORT}|$REVERSE_PROXY_PORT|g" \
      -e "s|\${SANDBOX_HOST}|$SANDBOX_HOST|g" \
      -e "s|\${SANDBOX_PORT}|$SANDBOX_PORT|g" \
      "$TEMPLATE" > "$CONF.new"
fi
mv "$CONF.new" "$CONF"
echo "ssrf_proxy: rendered $CONF (proxy :$HTTP_PORT, sandbox :$REVERSE_PROXY_PORT -> $SANDBOX_HOST:$SANDBOX_PORT)"

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
