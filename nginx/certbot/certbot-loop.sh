#!/bin/sh
# certbot service (compose/gateway.yml, profile `certbot`): obtains the certificate for
# CERTBOT_DOMAIN through the webroot that nginx serves on /.well-known/acme-challenge/ (plain
# HTTP), then tries a renewal every CERTBOT_RENEW_INTERVAL seconds (certbot renews only within
# 30 days of expiry). nginx notices the new files and reloads (nginx/entrypoint.d/40-*).
# Point NGINX_SSL_CERT_FILENAME / NGINX_SSL_CERT_KEY_FILENAME at
# /etc/letsencrypt/live/$CERTBOT_DOMAIN/fullchain.pem and privkey.pem to serve it.
set -eu

: "${CERTBOT_DOMAIN:?set CERTBOT_DOMAIN (the public name of this Dify) in .env}"
: "${CERTBOT_EMAIL:?set CERTBOT_EMAIL (Let's Encrypt expiry notices) in .env}"
interval="${CERTBOT_RENEW_INTERVAL:-43200}"

if [ ! -e "/etc/letsencrypt/live/$CERTBOT_DOMAIN/fullchain.pem" ]; then
  echo "certbot: requesting a certificate for $CERTBOT_DOMAIN"
  # shellcheck disable=SC2086
  certbot certonly --webroot --webroot-path /var/www/certbot --domain "$CERTBOT_DOMAIN" \
    --email "$CERTBOT_EMAIL" --agree-tos --no-eff-email --non-interactive --keep-until-expiring \
    ${CERTBOT_OPTIONS:-}
fi

trap 'exit 0' TERM INT
while :; do
  sleep "$interval" &
  wait $!
  # shellcheck disable=SC2086
  certbot renew --webroot --webroot-path /var/www/certbot --non-interactive ${CERTBOT_OPTIONS:-} \
    || echo "certbot: renewal failed; retrying in ${interval}s" >&2
done
