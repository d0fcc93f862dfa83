# TEST DOUBLE - NOT DIFY, NEVER A DEFAULT.
# The storage check of the dify-api stand-in. Dify's api, worker and beat run as uid 1001 (since
# 1.10) and write their files under /app/api/storage (OpenDAL fs): uploads into
# upload_files/<tenant>/, each workspace's key pair into privkeys/<tenant>/private.pem when the
# workspace is created. On a volume that user cannot write, the real image starts and fails at
# that first write ("PermissionDenied (persistent) at write ... privkeys/<id>/private.pem",
# langgenius/dify issue 29162). The stand-in is stricter: it checks at start, every place Dify
# writes (the root, and the folders two levels down), and refuses to start with one line.
#
#   python3 -m standin.storage          exit 1 with the problem on stderr, 0 when writable
import os
import stat
import sys
import tempfile

from standin import config

# Dify writes two levels deep (upload_files/<tenant>/<file>, privkeys/<tenant>/private.pem);
# bounded so a huge volume is never walked at start.
MAX_FOLDERS = 2000


def _describe(path):
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    return f"{path} is owned by {st.st_uid}:{st.st_gid}, mode {stat.S_IMODE(st.st_mode):04o}"


def problem(root=None, mounted_only=False):
    """None when this process can write where Dify writes under the storage root; else one line."""
    if root is None:
        root, unsupported = config.storage_root()
        if unsupported:
            return None  # not a file system the stand-in serves: nothing to check
    if mounted_only and not os.path.ismount(root):
        return None
    me = f"{os.getuid()}:{os.getgid()}"
    fix = (f"give it to {me} before the api, worker and beat start (Dify's own bundle runs "
           f"init_permissions: chown -R {me} /app/api/storage)")
    try:
        os.makedirs(root, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".standin-write-check-"):
            pass
    except OSError as exc:
        return f"storage {root} is not writable by uid {me} ({_describe(root)}: {exc.strerror}): {fix}"
    checked = 0
    for depth1 in sorted(os.scandir(root), key=lambda e: e.name):
        if depth1.name.startswith(".") or not depth1.is_dir(follow_symlinks=False):
            continue
        folders = [depth1.path]
        try:
            folders += [e.path for e in os.scandir(depth1.path)
                        if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)]
        except OSError as exc:
            return f"storage folder {depth1.path} cannot be read by uid {me} ({exc.strerror}): {fix}"
        for folder in folders:
            checked += 1
            if checked > MAX_FOLDERS:
                return None
            if not os.access(folder, os.W_OK | os.X_OK):
                return f"storage folder {folder} is not writable by uid {me} ({_describe(folder)}): {fix}"
    return None


def main():
    line = problem(mounted_only=config.MODE == "beat")  # beat has no storage unless one is mounted
    if line:
        print(f"ERROR: {line}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
