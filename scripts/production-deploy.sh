#!/usr/bin/env bash
# Deploy Dify on this host: a thin wrapper over the invoke tasks.
# Usage: scripts/production-deploy.sh [--skip-host-setup]
#   Sets up Docker and Compose v2 if missing (Debian, as root), installs the task library,
#   writes .env with generated secrets if there is none, then runs `invoke prod.deploy`.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  "") bash scripts/host-setup.sh ;;
  --skip-host-setup) ;;
  -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--skip-host-setup]" >&2; exit 2 ;;
esac

python3 -m pip install --quiet --disable-pip-version-check -e .
[ -f .env ] || invoke env.init
invoke prod.deploy
invoke prod.status
