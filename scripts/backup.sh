#!/usr/bin/env bash
# Thin wrapper over the backup tasks (difyops/tasks/backup.py), for cron and for people who do not
# use invoke directly. Every flag goes through to the task; `invoke --help backup.<command>` lists them.
# Usage: scripts/backup.sh create|list|verify|restore|prune|keygen|schedule|show [flags...]
#   e.g. scripts/backup.sh create
#        scripts/backup.sh restore --name dify-20261125T031700Z
#        INVOKE_DIFYOPS_ENV_FILE=/srv/dify/.env scripts/backup.sh prune --keep-last 14
set -euo pipefail

usage() { echo "usage: $0 create|list|verify|restore|prune|keygen|schedule|show [flags...]" >&2; exit 2; }

[ $# -ge 1 ] || usage
command=$1
shift
case "$command" in
  create|list|verify|restore|prune|keygen|schedule|show) ;;
  -h|--help|help) usage ;;
  *) echo "$0: unknown command '$command'" >&2; usage ;;
esac

cd "$(dirname "$0")/.."
python=python3
[ -x .venv/bin/python ] && python=.venv/bin/python
exec "$python" -m invoke "backup.$command" "$@"
