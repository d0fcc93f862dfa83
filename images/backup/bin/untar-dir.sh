#!/bin/bash
# Restore a tar part into a folder (a volume mounted at TARGET) without ever leaving it half
# restored: extract into TARGET/.difyops-restore-STAMP first (the current content is untouched if
# that fails), then move the current content into TARGET/.difyops-pre-restore-STAMP and the
# extracted content into place. Owners are numeric, as archived, and the volume's root takes the
# archived root's owner and mode (the aside folder keeps the replaced root's, for aside.sh put-back).
# Usage: untar-dir.sh INPUT_FILE TARGET STAMP
# The age identity is mounted at /identity/key.
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: untar-dir.sh INPUT_FILE TARGET STAMP" >&2; exit 2; }
in=$1 target=$2 stamp=$3
stage="$target/.difyops-restore-$stamp" aside="$target/.difyops-pre-restore-$stamp"
mkdir "$stage"
if ! age -d -i /identity/key "$in" | zstd -q -d -c | tar -C "$stage" --numeric-owner -xpf -; then
  rm -rf "$stage"; echo "extracting $in failed: $target was not changed" >&2; exit 1
fi
mkdir "$aside"
chown --reference="$target" "$aside"; chmod --reference="$target" "$aside"
find "$target" -mindepth 1 -maxdepth 1 ! -name '.difyops-*' -exec mv -t "$aside" {} +
find "$stage" -mindepth 1 -maxdepth 1 -exec mv -t "$target" {} +
chown --reference="$stage" "$target"; chmod --reference="$stage" "$target"
rmdir "$stage"
printf 'aside\t%s\n' "$aside"
