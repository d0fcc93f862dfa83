#!/usr/bin/env bash
# Prepares a Debian host to run difyops' tests: Docker engine, Compose v2, debootstrap, and
# promtool and amtool for the monitoring config checks.
# Idempotent: each step is skipped when what it provides is already there.
# Usage: scripts/host-setup.sh            (as root, on Debian 12 or 13)
set -euo pipefail

log() { printf '[host-setup] %s\n' "$*"; }

[ "$(id -u)" -eq 0 ] || { echo "host-setup: run as root (it installs packages)" >&2; exit 1; }

need_apt=0
command -v dockerd >/dev/null 2>&1 || need_apt=1
command -v debootstrap >/dev/null 2>&1 || need_apt=1
command -v promtool >/dev/null 2>&1 || need_apt=1
command -v amtool >/dev/null 2>&1 || need_apt=1
command -v openssl >/dev/null 2>&1 || need_apt=1
command -v nft >/dev/null 2>&1 || need_apt=1
docker compose version 2>/dev/null | grep -qE 'version v?2\.' || need_apt=1
if [ "$need_apt" -eq 1 ]; then
  . /etc/os-release
  if [ "${VERSION_CODENAME:-}" = "bookworm" ] && [ ! -f /etc/apt/sources.list.d/trixie.list ]; then
    # Bookworm's docker.io is 20.10 (API 1.41); trixie's 26.x is closer to what users run.
    # The trixie source is pinned low so nothing else on the host moves.
    log "adding a low-priority trixie apt source for docker.io 26"
    echo "deb http://deb.debian.org/debian trixie main" > /etc/apt/sources.list.d/trixie.list
    printf 'Package: *\nPin: release n=trixie\nPin-Priority: 100\n' > /etc/apt/preferences.d/trixie-low
  fi
  log "apt-get update"
  apt-get update -qq
  target=()
  # Take docker.io and docker-compose from trixie whenever apt knows that release
  # (on bookworm through the pinned source above; on trixie it is the default anyway).
  apt-cache policy 2>/dev/null | grep -q 'n=trixie' && target=(-t trixie)
  # trixie's docker-compose package is Compose v2 (Go); bookworm's is the old Python v1.
  log "installing docker.io and docker-compose (${target[*]:-default release}) and debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${target[@]}" docker.io docker-compose >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  # openssl: the TLS and adopt tests make key pairs with it; nftables: prod.firewall's rules are checked with nft --check.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl nftables >/dev/null
  if ! command -v promtool >/dev/null 2>&1; then
    # promtool checks and unit-tests the Prometheus rules. Its own package from trixie on; on
    # older releases it ships inside `prometheus`, which would also start a server, so the
    # trixie package is taken (it depends on libc only).
    log "installing promtool (${target[*]:-default release})"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${target[@]}" promtool >/dev/null
  fi
  if ! command -v amtool >/dev/null 2>&1; then
    # amtool checks the Alertmanager config. It ships inside prometheus-alertmanager, whose
    # installation would start an Alertmanager daemon on the host: unpack the package instead.
    log "unpacking amtool from prometheus-alertmanager"
    tmp="$(mktemp -d)"
    (cd "$tmp" && apt-get download "${target[@]}" prometheus-alertmanager >/dev/null 2>&1 \
      || apt-get download prometheus-alertmanager >/dev/null)
    mkdir -p /opt/difyops/alertmanager
    dpkg-deb -x "$tmp"/prometheus-alertmanager_*.deb /opt/difyops/alertmanager
    ln -sf /opt/difyops/alertmanager/usr/bin/amtool /usr/local/bin/amtool
    rm -rf "$tmp"
  fi
fi

# The development environment's tests (nox -s dev) drive Dify's own tools: uv (from PyPI) and
# pnpm (from the npm registry). Each is installed only when missing, and only where its installer is.
if ! command -v uv >/dev/null 2>&1; then
  log "installing uv (PyPI)"
  python3 -m pip install --quiet --disable-pip-version-check uv
fi
if ! command -v pnpm >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  log "installing pnpm (npm registry)"
  npm install -g --silent pnpm@9 >/dev/null
fi

docker compose version 2>/dev/null | grep -qE 'version v?2\.' || { echo "host-setup: Compose v2 is missing after install (docker compose version)" >&2; exit 1; }

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  setsid dockerd >/var/log/dockerd.log 2>&1 < /dev/null &
  echo $! > /run/difyops-dockerd.pid
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "host-setup: dockerd did not start; see /var/log/dockerd.log" >&2; exit 1; }
fi
log "docker $(docker version --format '{{.Server.Version}}'), $(docker compose version --short | sed 's/^/compose /')"
