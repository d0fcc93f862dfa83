#!/bin/bash
# What a restore kept aside inside a volume (mounted at TARGET): the content it replaced, in
# TARGET/.difyops-pre-restore-STAMP (untar-dir.sh, redis-restore.sh), or what an undo replaced.
# Usage: aside.sh check TARGET NAME            exit 0 when TARGET/NAME is there
#        aside.sh put-back TARGET NAME [KEEP]  the current content moves to TARGET/KEEP (deleted when
#                                              KEEP is empty), NAME's content back into place, with
#                                              the volume root's owner and mode it had
#        aside.sh drop TARGET NAME             delete TARGET/NAME
# NAME and KEEP are folder names starting with .difyops-; nothing else is ever deleted.
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: aside.sh check|put-back|drop TARGET NAME [KEEP]" >&2; exit 2; }
action=$1 target=$2 name=$3 keep=${4:-}
for n in "$name" ${keep:+"$keep"}; do
  case "$n" in .difyops-*/*|*/*) echo "not a folder name: $n" >&2; exit 2 ;; .difyops-*) ;;
    *) echo "not a folder a restore keeps aside: $n" >&2; exit 2 ;; esac
done
aside="$target/$name"
case "$action" in
  check)
    [ -d "$aside" ] || { echo "$name is not in the volume" >&2; exit 1; } ;;
  put-back)
    [ -d "$aside" ] || { echo "$name is not in the volume: nothing to put back" >&2; exit 1; }
    if [ -n "$keep" ]; then
      mkdir "$target/$keep"
      chown --reference="$target" "$target/$keep"; chmod --reference="$target" "$target/$keep"
      find "$target" -mindepth 1 -maxdepth 1 ! -name '.difyops-*' -exec mv -t "$target/$keep" {} +
    else
      find "$target" -mindepth 1 -maxdepth 1 ! -name '.difyops-*' -exec rm -rf {} +
    fi
    find "$aside" -mindepth 1 -maxdepth 1 -exec mv -t "$target" {} +
    chown --reference="$aside" "$target"; chmod --reference="$aside" "$target"
    rmdir "$aside" ;;
  drop)
    rm -rf "$aside" ;;
  *) echo "unknown action $action: check, put-back or drop" >&2; exit 2 ;;
esac
