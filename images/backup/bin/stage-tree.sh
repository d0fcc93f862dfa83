#!/bin/bash
# Copy a folder into a volume without ever leaving the volume half changed, in three steps:
#   copy SOURCE TARGET STAMP [OWNER]  SOURCE (read-only) -> TARGET/.difyops-stage-STAMP, owners kept
#                                     (numeric) or set to OWNER (uid:gid); then both sides hashed.
#                                     Prints "file<TAB>sha256<TAB>size<TAB>path" per regular file of
#                                     SOURCE, "link<TAB>target<TAB>path" per symlink, then
#                                     "source_digest<TAB>D" and "copy_digest<TAB>D" (sha256 of each
#                                     side's sorted list of files, links and folders): equal digests
#                                     mean every file arrived byte for byte.
#   switch TARGET STAMP               the current content of TARGET moves to
#                                     TARGET/.difyops-pre-adopt-STAMP, the staged copy into its place;
#                                     TARGET itself gets the staged copy's owner and mode.
#                                     Prints "aside<TAB>PATH" (nothing when TARGET held nothing).
#   drop TARGET STAMP                 removes the staged copy (a move that did not go through).
# Folders named .difyops-* (staged copies, content moved aside) are never copied or hashed.
set -euo pipefail
usage() { echo "usage: stage-tree.sh copy SOURCE TARGET STAMP [OWNER] | switch TARGET STAMP | drop TARGET STAMP" >&2; exit 2; }
[ $# -ge 1 ] || usage

# The sorted list a digest is taken of: "f sha256 path", "l target path", "d path" (mode and owner
# left out: OWNER may change them on purpose).
listing() {
  (cd "$1" && find . -path './.difyops-*' -prune -o \( -type f -print0 \) | sort -z | xargs -0 -r sha256sum \
     | sed 's/^\([0-9a-f]*\)  /f \1 /'
   cd "$1" && find . -path './.difyops-*' -prune -o \( -type l -printf 'l %l %p\n' \) | sort
   cd "$1" && find . -path './.difyops-*' -prune -o \( -type d -printf 'd %p\n' \) | sort)
}

case "$1" in
  copy)
    [ $# -ge 4 ] && [ $# -le 5 ] || usage
    src=$2 target=$3 stamp=$4 owner=${5:-}
    stage="$target/.difyops-stage-$stamp"
    mkdir "$stage"
    tar -C "$src" --numeric-owner --exclude='./.difyops-*' -cf - . | tar -C "$stage" --numeric-owner -xpf -
    if [ -n "$owner" ]; then chown -R "$owner" "$stage"; fi
    (cd "$src" && find . -path './.difyops-*' -prune -o -type f -printf '%s\t%p\n' | sort -t $'\t' -k2) > /tmp/sizes
    (cd "$src" && find . -path './.difyops-*' -prune -o -type f -print0 | sort -z | xargs -0 -r sha256sum) > /tmp/sums
    # file<TAB>sha256<TAB>size<TAB>path, joined on the path
    join -t $'\t' -1 2 -2 2 <(sed 's/^\([0-9a-f]*\)  /\1\t/' /tmp/sums | sort -t $'\t' -k2) /tmp/sizes \
      | awk -F '\t' '{print "file\t" $2 "\t" $3 "\t" $1}'
    (cd "$src" && find . -path './.difyops-*' -prune -o -type l -printf 'link\t%l\t%p\n')
    printf 'source_digest\t%s\n' "$(listing "$src" | sha256sum | cut -d' ' -f1)"
    printf 'copy_digest\t%s\n' "$(listing "$stage" | sha256sum | cut -d' ' -f1)"
    ;;
  switch)
    [ $# -eq 3 ] || usage
    target=$2 stamp=$3
    stage="$target/.difyops-stage-$stamp" aside="$target/.difyops-pre-adopt-$stamp"
    [ -d "$stage" ] || { echo "no staged copy $stage" >&2; exit 1; }
    if [ -n "$(find "$target" -mindepth 1 -maxdepth 1 ! -name '.difyops-*' -print -quit)" ]; then
      mkdir "$aside"
      find "$target" -mindepth 1 -maxdepth 1 ! -name '.difyops-*' -exec mv -t "$aside" {} +
      printf 'aside\t%s\n' "$aside"
    fi
    find "$stage" -mindepth 1 -maxdepth 1 -exec mv -t "$target" {} +
    # The volume's own folder as the source's (or OWNER's): Dify's api writes new folders there.
    chown --reference="$stage" "$target"
    chmod --reference="$stage" "$target"
    rmdir "$stage"
    ;;
  drop)
    [ $# -eq 3 ] || usage
    rm -rf "$2/.difyops-stage-$3"
    ;;
  *) usage ;;
esac
