"""What a finished `backup.restore` says it kept aside, checked against what is there: the replaced
databases under the names it gives, the volumes' previous content in the folders it names, the
previous .env where it says (byte for byte what it was)."""

from __future__ import annotations

import re
from pathlib import Path

from testkit import check

KEPT = re.compile(r"Kept aside until you drop them: (.*?)\.\s+`invoke backup\.restore --undo`", re.S)
PREVIOUS_ENV = re.compile(r"\s*\(and the previous \.env, (\S+)\)$")


def kept_aside(stdout: str) -> dict:
    """The closing lines of a restore, read: databases, volume -> folder, the previous .env."""
    found = KEPT.search(stdout)
    if not found:
        return {}
    body, env_file = found[1].strip(), None
    if match := PREVIOUS_ENV.search(body):
        env_file, body = match[1], body[:match.start()]
    out = {"databases": [], "volumes": {}, "other": [], "env_file": env_file}
    for item in (i.strip() for i in body.split("; ") if i.strip()):
        if item.startswith("databases "):
            out["databases"] = [d.strip() for d in item.removeprefix("databases ").split(",")]
        elif ":" in item and not item.startswith("/"):
            volume, folder = item.split(":", 1)
            out["volumes"][volume] = folder
        else:
            out["other"].append(item)
    return out


def check_kept_aside(stdout: str, stack: str, databases: list[str], volume_has,
                     env_before: bytes | None = None, expected_volumes: int | None = None) -> dict:
    """Check every place the restore's output names: `databases` are the server's databases now,
    `volume_has(volume, folder)` says whether a volume holds that folder; with `env_before`, the
    previous .env is named and holds exactly those bytes."""
    aside = kept_aside(stdout)
    check("the restore says what it kept aside", bool(aside), aside or stdout[-400:])
    missing = [d for d in aside["databases"] if d not in databases]
    check("the databases it names as kept aside are there", aside["databases"] and not missing,
          missing or aside["databases"])
    absent = {v: f for v, f in aside["volumes"].items()
              if not volume_has(v if v.startswith(f"{stack}-") else f"{stack}-{v}", f)}
    check("each volume's previous content is in the folder it names", bool(aside["volumes"]) and not absent
          and (expected_volumes is None or len(aside["volumes"]) == expected_volumes),
          absent or aside["volumes"])
    if env_before is not None:
        path = Path(aside["env_file"]) if aside["env_file"] else None
        same = path is not None and path.is_file() and path.read_bytes() == env_before
        mode = oct(path.stat().st_mode & 0o777) if path and path.is_file() else None
        check("the previous .env is where it says, byte for byte, private (0600)", same and mode == "0o600",
              f"{aside['env_file']} ({'same bytes' if same else 'differs or missing'}, mode {mode})")
    return aside
