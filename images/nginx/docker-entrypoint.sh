#!/bin/sh
# Entrypoint of difyops-local/nginx, with the official nginx image's contract
# (images/INTERFACE.md lists exactly what is honoured). When the command is nginx, the files
# in /docker-entrypoint.d/ run first, in version-sorted order:
#   *.envsh  sourced into this shell when executable (so they can export variables),
#   *.sh     executed when executable,
#   anything else, or a file that is not executable, is skipped with a note.
# Then the command is exec'd: nginx runs as PID 1 and stops gracefully on SIGQUIT.
# NGINX_ENTRYPOINT_QUIET_LOGS (any value) silences the entrypoint's own messages.
set -e

entrypoint_log() {
  if [ -z "${NGINX_ENTRYPOINT_QUIET_LOGS:-}" ]; then
    echo "$@"
  fi
}

if [ "$1" = nginx ] || [ "$1" = nginx-debug ]; then
  scripts="$(find /docker-entrypoint.d/ -follow -type f -print 2>/dev/null | sort -V)"
  if [ -n "$scripts" ]; then
    entrypoint_log "$0: running the files in /docker-entrypoint.d/"
    # Paths have no newlines here (we made the folder); read them one per line.
    while IFS= read -r f; do
      case "$f" in
        *.envsh)
          if [ -x "$f" ]; then
            entrypoint_log "$0: sourcing $f"
            # shellcheck disable=SC1090
            . "$f"
          else
            entrypoint_log "$0: skipping $f: not executable (chmod +x it to have it sourced)"
          fi
          ;;
        *.sh)
          if [ -x "$f" ]; then
            entrypoint_log "$0: running $f"
            "$f"
          else
            entrypoint_log "$0: skipping $f: not executable (chmod +x it to have it run)"
          fi
          ;;
        *)
          entrypoint_log "$0: ignoring $f"
          ;;
      esac
    done <<SCRIPTS
$scripts
SCRIPTS
    entrypoint_log "$0: configuration done; starting nginx"
  else
    entrypoint_log "$0: /docker-entrypoint.d/ is empty; starting nginx"
  fi
fi

exec "$@"
