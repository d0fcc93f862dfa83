#!/bin/sh
# Run by the nginx image's entrypoint after the templates are rendered. With HTTPS on, starts a
# watcher that checks the certificate and key every NGINX_CERT_RELOAD_INTERVAL seconds (0: never)
# and, when they changed (certbot renewed them, or you replaced the files), tests the config and
# reloads nginx gracefully: connections in flight finish on the old certificate.
set -eu

case "${NGINX_HTTPS_ENABLED:-false}" in true|TRUE|True|1) ;; *) exit 0 ;; esac
interval="${NGINX_CERT_RELOAD_INTERVAL:-3600}"
[ "$interval" -gt 0 ] 2>/dev/null || exit 0

cert="$(sed -n 's/^ssl_certificate  *\(.*\);$/\1/p' /etc/nginx/conf.d/snippets/tls.conf)"
key="$(sed -n 's/^ssl_certificate_key  *\(.*\);$/\1/p' /etc/nginx/conf.d/snippets/tls.conf)"

fingerprint() { cat "$cert" "$key" 2>/dev/null | cksum; }

(
  last="$(fingerprint)"
  while sleep "$interval"; do
    now="$(fingerprint)"
    if [ "$now" != "$last" ]; then
      if nginx -t -q; then
        echo "difyops: certificate changed; reloading nginx"
        nginx -s reload
        last="$now"
      else
        echo "difyops: certificate changed but nginx -t fails; keeping the running config" >&2
      fi
    fi
  done
) &
echo "difyops: watching $cert for changes every ${interval}s"
