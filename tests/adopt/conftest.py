"""Adopt fixtures: an install of Dify's official bundle's shape (tests/adopt/official.py) running
under its own compose project, with data written into it, and the difyops stack it is adopted into
(a unique stack name, its .env made by env.init with local images and the Dify stand-in, a test
double). Both are removed afterwards, whatever happened. `nox -s adopt` runs these."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import official as off
import pytest
from testkit import LOCAL_IMAGES, STANDIN_IMAGES, STANDIN_RELEASE, env_init, invoke, owned, record, remove_owned, unique_name


@dataclass
class Target:
    """The difyops stack an install is adopted into."""

    name: str
    env_file: Path
    tmp: Path

    def invoke(self, *args: str, check: bool = True, timeout: int = 900, input: str | None = None):
        return invoke(*args, env_file=self.env_file, check=check, timeout=timeout, input=input)

    def owned(self) -> dict[str, list[str]]:
        return owned(self.name)

    def psql(self, sql: str, db: str = "dify") -> list[str]:
        out = off.sh("docker", "exec", "-e", "PGTZ=UTC", f"{self.name}-data-db_postgres-1", "psql", "-X", "-q",
                     "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-Atc", sql).stdout
        return [line for line in out.splitlines() if line]

    def volume_files(self, volume: str) -> dict[str, str]:
        """sha256 (or the target of a symlink) of every file in one of the stack's volumes, with owners."""
        out = off.sh("docker", "run", "--rm", "-v", f"{self.name}-{volume}:/v:ro", "-w", "/v", "difyops-local/backup:1",
                     "sh", "-c", "find . -path './.difyops-*' -prune -o -type f -print0 | xargs -0 -r sha256sum; "
                     "find . -path './.difyops-*' -prune -o -type l -printf 'LINK %l %p\\n'").stdout
        files = {}
        for line in out.splitlines():
            if line.startswith("LINK "):
                _, link, path = line.split(" ", 2)
                files[path.removeprefix("./")] = f"-> {link}"
            elif line:
                files[line[66:].removeprefix("./")] = line[:64]
        return files

    def volume_owners(self, volume: str) -> set[str]:
        out = off.sh("docker", "run", "--rm", "-v", f"{self.name}-{volume}:/v:ro", "difyops-local/backup:1",
                     "find", "/v", "-path", "/v/.difyops-*", "-prune", "-o", "-printf", "%U:%G\\n").stdout
        return set(out.split())


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """The official install, running, with data; removed at the end."""
    tmp = tmp_path_factory.mktemp("official")
    install = off.create(tmp, unique_name("adoptofficial"))
    started = time.monotonic()
    try:
        install.up()
        record("official install up (PostgreSQL 15, stand-in, migrations)", time.monotonic() - started)
        mark = time.monotonic()
        off.seed(install, off.SEED_MB)
        record(f"data written (about {off.SEED_MB} MB of rows, files, keys, key pairs)", time.monotonic() - mark)
        yield install
    finally:
        install.compose("down", "--volumes", "--remove-orphans", "--timeout", "20", check=False, timeout=300)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    """The stack the install is adopted into: a .env from env.init, nothing deployed."""
    tmp = tmp_path_factory.mktemp("target")
    name = unique_name("adoptstack")
    env_file = env_init(tmp / ".env", {"DIFYOPS_STACK": name, **STANDIN_RELEASE, **STANDIN_IMAGES, **LOCAL_IMAGES,
                                       "NGINX_SSL_DIR": str(tmp / "ssl"), "DIFYOPS_BACKUP_DIR": str(tmp / "backups"),
                                       "NGINX_API_RATE": "off"})
    stack = Target(name, env_file, tmp)
    try:
        yield stack
    finally:
        stack.invoke("prod.down", "all", "--volumes", "--yes", check=False, timeout=600)
        remove_owned(name)
        shutil.rmtree(tmp, ignore_errors=True)
