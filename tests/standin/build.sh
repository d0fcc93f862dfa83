#!/usr/bin/env bash
# TEST DOUBLE - NOT DIFY, NEVER A DEFAULT.
# Builds the Dify stand-in images (test doubles for offline tests) from tests/standin/Dockerfile:
#   difyops-standin/dify-api:<v>  difyops-standin/dify-web:<v>
#   difyops-standin/dify-sandbox:<v>  difyops-standin/dify-plugin-daemon:<v>     (<v> = v1, v2: Dify 1.13.3)
#   and for v3 (Dify 1.16.1) also difyops-standin/dify-agent-backend:v3 and
#   difyops-standin/dify-agent-local-sandbox:v3, the plugin daemon built as 0.6.3.
# Needs the local base image difyops/debian:trixie-2 and apt access to deb.debian.org during the build.
# Usage: tests/standin/build.sh [v1|v2|v3|all]     (default: all)
set -euo pipefail

usage() { echo "usage: $0 [v1|v2|v3|all]" >&2; exit 2; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
what="${1:-all}"
case "$what" in
  v1|v2|v3) versions=("$what") ;;
  all) versions=(v1 v2 v3) ;;
  -h|--help) usage ;;
  *) usage ;;
esac
[ $# -le 1 ] || usage

if ! docker image inspect difyops/debian:trixie-2 >/dev/null 2>&1; then
  echo "build.sh: base image difyops/debian:trixie-2 is missing (invoke images.build-local makes it)" >&2
  exit 1
fi

log="$(mktemp -t standin-build.XXXXXX)"
trap 'rm -f "${log}"' EXIT

# target in the Dockerfile -> image name, per version (v3 stands in for Dify 1.16.1)
targets_of() {
  case "$1" in
    v3) echo api:dify-api web:dify-web sandbox:dify-sandbox plugin-daemon-0.6:dify-plugin-daemon \
             agent-backend:dify-agent-backend local-sandbox:dify-agent-local-sandbox ;;
    *) echo api:dify-api web:dify-web sandbox:dify-sandbox plugin-daemon:dify-plugin-daemon ;;
  esac
}

for v in "${versions[@]}"; do
  read -r -a targets <<< "$(targets_of "$v")"
  for pair in "${targets[@]}"; do
    target="${pair%%:*}"
    image="difyops-standin/${pair#*:}:${v}"
    echo "build.sh: ${image} (target ${target})"
    if ! docker build \
        --file "${here}/Dockerfile" \
        --target "${target}" \
        --build-arg "STANDIN_VERSION=${v}" \
        --tag "${image}" \
        "${here}" >"${log}" 2>&1; then
      echo "build.sh: building ${image} failed; last lines of the build log:" >&2
      tail -n 60 "${log}" >&2
      exit 1
    fi
  done
done

echo "build.sh: built:"
for v in "${versions[@]}"; do
  read -r -a targets <<< "$(targets_of "$v")"
  for pair in "${targets[@]}"; do
    echo "  difyops-standin/${pair#*:}:${v}"
  done
done
