#!/bin/sh
# The gateway's switched routes: how prod.upgrade moves a route whose upstream a Dify release changes
# (/socket.io/, /openapi/) without restarting nginx (difyops/rollout_release.py, routes_script).
#
# /etc/nginx/difyops-routes/routes.env holds lines "NAME FROM TO": where this container was created
# with NAME=FROM (the release it was created for), TO is used instead. A container created with
# another value (a later deploy with .env's value, or the user's own) keeps its own.
#
#   45-difyops-routes.sh          run by the image's entrypoint once the templates are rendered:
#                                 watches the file every NGINX_ROUTES_POLL seconds (1; 0: never),
#                                 touches .watcher each time (a gateway runs here) and applies a
#                                 change: the routes snippet's upstreams set, nginx -t, a graceful
#                                 reload, then `applied` holds the file's checksum
#   45-difyops-routes.sh exports  `export` lines for the values to render at start (the defaults
#                                 envsh evaluates them)
#   45-difyops-routes.sh apply    apply the file now, once
set -eu

dir=/etc/nginx/difyops-routes
file="$dir/routes.env"
snippet=/etc/nginx/conf.d/snippets/dify-routes.conf
# NAME:the nginx variable the routes snippet sets from it
routes="NGINX_SOCKET_IO_UPSTREAM:dify_socket_io NGINX_OPENAPI_UPSTREAM:dify_openapi"

host_port() { case "$1" in '' | *[!a-z0-9_.:-]*) return 1 ;; *) return 0 ;; esac; }

# The value this container was created with: kept at start in DIFYOPS_CREATED_<NAME> (the start
# exports the effective value under NAME itself).
created() { eval "printf '%s' \"\${DIFYOPS_CREATED_$1:-\${$1:-}}\""; }

effective() {
  base="$(created "$1")"
  value="$base"
  if [ -r "$file" ]; then
    while read -r name from to _; do
      [ "$name" = "$1" ] && [ "$from" = "$base" ] || continue
      if host_port "$to"; then value="$to"; else echo "difyops: ignoring $name $to in $file (not host:port)" >&2; fi
    done < "$file"
  fi
  printf '%s' "$value"
}

exports() {
  for pair in $routes; do
    name="${pair%%:*}"
    base="$(created "$name")"
    host_port "$base" || continue  # not one this script can vouch for: left as it is
    printf "export DIFYOPS_CREATED_%s='%s' %s='%s'\n" "$name" "$base" "$name" "$(effective "$name")"
  done
}

stamp() { cksum < "$file" 2>/dev/null || echo none; }

apply() {
  cp "$snippet" "$snippet.before"
  for pair in $routes; do
    name="${pair%%:*}"
    var="${pair#*:}"
    value="$(effective "$name")"
    host_port "$value" || continue
    sed -i "s|^set \\\$$var .*;\$|set \\\$$var $value;|" "$snippet"
  done
  if cmp -s "$snippet" "$snippet.before"; then  # nothing changes for this container: no reload
    rm -f "$snippet.before"
    stamp > "$dir/applied"
    return 0
  fi
  if nginx -t -q; then
    nginx -s reload
    rm -f "$snippet.before"
    stamp > "$dir/applied"
    echo "difyops: routes from $file applied: $(grep '^set \$dify_\(socket_io\|openapi\) ' "$snippet" | tr '\n' ' ')"
  else
    mv "$snippet.before" "$snippet"
    echo "difyops: routes from $file not applied: nginx -t fails with them; the running config stays" >&2
    return 1
  fi
}

watch() {
  interval="${NGINX_ROUTES_POLL:-1}"
  [ "$interval" -gt 0 ] 2>/dev/null || exit 0
  mkdir -p "$dir"
  stamp > "$dir/applied"  # the start rendered what the file says already
  touch "$dir/.watcher"
  (
    last="$(stamp)"
    while sleep "$interval"; do
      touch "$dir/.watcher"
      now="$(stamp)"
      [ "$now" = "$last" ] && continue
      apply || true
      last="$now"
    done
  ) &
  echo "difyops: watching $file for switched routes every ${interval}s"
}

case "${1:-watch}" in
  exports) exports ;;
  apply) apply ;;
  watch) watch ;;
  *) echo "usage: $0 [watch|exports|apply]" >&2; exit 2 ;;
esac
