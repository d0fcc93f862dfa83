#!/bin/bash
# Copy one backup set off the host with restic (the set is already encrypted with age; restic
# adds its own encryption and deduplication). Initialises the repository on first use.
# Usage: restic-copy.sh SET_FOLDER STACK
# Env: RESTIC_REPOSITORY RESTIC_PASSWORD (and whatever the repository's backend needs)
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: restic-copy.sh SET_FOLDER STACK" >&2; exit 2; }
set_dir=$1 stack=$2
restic cat config >/dev/null 2>&1 || restic init >/dev/null
restic backup --quiet --host "difyops-$stack" --tag difyops --tag "$stack" "$set_dir"
restic snapshots --json --tag difyops --host "difyops-$stack" --latest 1 | head -c 2000
