"""Smoke: doing it again changes nothing it should not. `prod.deploy` over the healthy stack
recreates and restarts no container; `env.init` over an existing .env refuses without --force,
and with --force keeps the old file as a private backup where it says and regenerates every secret."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from smokestack import SERVICES, make_env
from testkit import ROOT, check, free_port, invoke, record, unique_name

from difyops import envfile

PLACEHOLDER = "!!!GENERATED!!!"


def containers(stack) -> dict[str, str]:
    """Each container of the stack: its id, when it started and how often it restarted."""
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"name=^{stack.name}-"], capture_output=True,
                         text=True, check=True).stdout.split()
    fields = "{{.Name}} {{.Id}} {{.State.StartedAt}} {{.RestartCount}}"
    out = subprocess.run(["docker", "inspect", "--format", fields, *ids], capture_output=True, text=True,
                         check=True).stdout if ids else ""
    rows = [line.split() for line in out.splitlines() if line.strip()]
    return {row[0].lstrip("/"): " ".join(row[1:]) for row in rows}


def test_deploy_over_a_healthy_stack_recreates_nothing(stack):
    before = containers(stack)
    started = time.monotonic()
    result = stack.invoke("prod.deploy", check=False, timeout=1200)
    record("prod.deploy over the deployed stack", time.monotonic() - started)
    after = containers(stack)
    changed = {name: {"before": before.get(name, "absent")[:40], "after": after.get(name, "absent")[:40]}
               for name in sorted(set(before) | set(after)) if before.get(name) != after.get(name)}
    check("prod.deploy over a healthy stack exits 0", result.returncode == 0,
          (result.stdout + result.stderr).strip().splitlines()[-1:])
    check("it recreates, restarts and adds no container (same ids, start times, restart counts)",
          not changed and len(before) == len(SERVICES), changed or f"{len(before)} containers untouched")


def test_env_init_again_refuses_then_force_keeps_a_backup_and_regenerates(tmp_path):
    name = unique_name("envinit")  # never deployed
    env_file = make_env(tmp_path, name, free_port())
    first = env_file.read_bytes()
    old = envfile.values_of(Path(env_file).read_bytes())

    again = invoke("env.init", "--env-file", str(env_file), check=False)
    errors = [ln for ln in again.stderr.splitlines() if ln.startswith("error:")]
    check("env.init over an existing .env refuses in one line naming --force, and changes nothing",
          again.returncode != 0 and len(errors) == 1 and "--force" in errors[0]
          and env_file.read_bytes() == first and not list(tmp_path.glob(".env.bak*")), errors or again.stderr[-300:])

    forced = invoke("env.init", "--env-file", str(env_file), "--force", "--set", f"DIFYOPS_STACK={name}")
    said = re.search(r"backed up the old file to (\S+)", forced.stdout)
    backups = sorted(str(p) for p in tmp_path.glob(".env.bak*"))
    saved = said[1] if said else None
    mode = oct(Path(saved).stat().st_mode & 0o777) if saved in backups else None
    check("env.init --force keeps the old file where it says, byte for byte, mode 0600",
          backups == [saved] and Path(saved).read_bytes() == first and mode == "0o600",
          {"said": saved, "found": backups, "mode": mode})

    new = envfile.values_of(Path(env_file).read_bytes())
    example = envfile.values_of(Path(ROOT / ".env.example").read_bytes())
    generated = sorted(k for k, v in example.items() if v and PLACEHOLDER in v)
    kept = [k for k in generated if new.get(k) == old.get(k)]
    placeholders = sorted(k for k, v in new.items() if v and PLACEHOLDER in v)
    check("every generated value is new (none kept from the old file, none left a placeholder)",
          generated and not kept and not placeholders,
          kept or placeholders or f"{len(generated)} values regenerated")
    mode = oct(env_file.stat().st_mode & 0o777)
    check("the new .env takes --set and is private (0600)",
          new.get("DIFYOPS_STACK") == name and mode == "0o600", {"DIFYOPS_STACK": new.get("DIFYOPS_STACK"), "mode": mode})
    checked = invoke("env.check", env_file=env_file, check=False)
    check("the regenerated .env passes env.check (its secrets agree)", checked.returncode == 0,
          (checked.stdout + checked.stderr).strip().splitlines()[-3:])
