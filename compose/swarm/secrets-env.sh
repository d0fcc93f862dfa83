#!/bin/sh
# Swarm only: Dify's images read plain variables (DB_PASSWORD, SECRET_KEY, ...), not *_FILE.
# This shim runs in front of the image's own entrypoint: it exports each Docker secret mounted
# under /run/secrets as the variable its file is named after, then execs the rest of its arguments.
# Mounted as a Docker config by `invoke prod.deploy --target swarm` (difyops/swarm.py).
for f in /run/secrets/*; do
  [ -f "$f" ] || continue
  name=${f##*/}
  case "$name" in
    ''|[0-9]*|*[!A-Za-z0-9_]*) continue ;;
  esac
  value=$(cat "$f") || exit 1
  export "$name=$value"
done
exec "$@"
