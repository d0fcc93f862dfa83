#!/usr/bin/env bash
# One command to set up Dify development on this machine: checks the prerequisites (and says
# exactly what is missing and how to install it), installs the task library, then runs
# `invoke dev.init` (env files, middleware, dependencies, migrations).
# Usage: scripts/dev-setup.sh [dev.init options, e.g. --src /path/to/dify --viewer]
#        DIFY_SRC=/path/to/dify scripts/dev-setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac

missing=()
need() { missing+=("$1: $2"); }

command -v docker >/dev/null 2>&1 || need docker "install Docker Engine 25+ (scripts/host-setup.sh does it on Debian)"
if command -v docker >/dev/null 2>&1; then
  docker info >/dev/null 2>&1 || need "docker daemon" "start it (systemctl start docker) and retry"
  docker compose version 2>/dev/null | grep -qE 'v?2\.' || need "docker compose v2" "install the compose plugin 2.20.3+ (scripts/host-setup.sh)"
fi
command -v git >/dev/null 2>&1 || need git "apt-get install git"
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  need "python 3.11+" "install Python 3.12 (Dify's choice; 3.11 also satisfies api/pyproject.toml)"
fi
command -v uv >/dev/null 2>&1 || need uv "python3 -m pip install uv"
if command -v node >/dev/null 2>&1; then
  major="$(node --version | sed -E 's/^v([0-9]+).*/\1/')"
  [ "$major" -ge 22 ] || echo "dev-setup: note: Node $(node --version) found; Dify's web wants Node 22 (dev.init checks web/package.json)" >&2
else
  need node "install Node.js 22 (nodesource or nvm)"
fi
command -v pnpm >/dev/null 2>&1 || need pnpm "corepack enable pnpm   (or: npm install -g pnpm)"

if [ "${#missing[@]}" -gt 0 ]; then
  echo "dev-setup: missing prerequisites:" >&2
  printf '  - %s\n' "${missing[@]}" >&2
  exit 1
fi

echo "[dev-setup] installing the task library (pip install -e .[dev])"
python3 -m pip install --quiet --disable-pip-version-check -e ".[dev]"
exec python3 -m invoke dev.init "$@"
