#!/bin/bash
# Decrypt and decompress one part without writing it anywhere: proves the identity opens it and
# the stream is whole. For a tar part, prints "files<TAB>N" (regular files in the archive).
# Usage: check-part.sh INPUT_FILE [tar]
# The age identity is mounted at /identity/key.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: check-part.sh INPUT_FILE [tar]" >&2; exit 2; }
in=$1 kind=${2:-}
if [ "$kind" = tar ]; then
  files=$(age -d -i /identity/key "$in" | zstd -q -d -c | tar -tvf - | grep -c '^-' || true)
  printf 'files\t%s\n' "$files"
else
  age -d -i /identity/key "$in" | zstd -q -t
fi
