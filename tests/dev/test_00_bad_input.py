"""Bad input to the development tasks: one clear line, a non-zero exit, nothing changed."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

from devenv import make_env
from testkit import check, owned


def refused(name, result, needle, env=None, changed=()):
    text = result.stdout + result.stderr
    last = (result.stderr.strip().splitlines() or [""])[-1]
    ok = result.returncode != 0 and needle in text and "Traceback" not in text and last.startswith("error:")
    leftovers = []
    if env is not None:
        leftovers = [n for names in owned(env.stack).values() for n in names] + [str(p) for p in changed
                                                                                 if Path(p).exists()]
    check(name, ok and not leftovers, f"exit {result.returncode}: {last}" + (f"; left {leftovers}" if leftovers else ""))


def tool_bin(tmp_path, *names) -> str:
    """A PATH holding only the named tools (and a python for uv to find)."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    for name in ("bash", "sh", *names):
        found = shutil.which(name)
        if found:
            (folder / name).symlink_to(os.path.realpath(found))
    (folder / "python3").symlink_to(os.path.realpath(sys.executable))
    return str(folder)


def test_no_source_offline(tmp_path):
    env = make_env(tmp_path)
    result = env.invoke("dev.init", *env.set_args(), check=False, DIFY_SRC=None)
    refused("no Dify source and no way to clone: refused", result, "no Dify source", env,
            changed=[env.state / "middleware.env"])


def test_source_is_not_a_checkout(tmp_path):
    env = make_env(tmp_path)
    result = env.invoke("dev.init", check=False, DIFY_SRC=str(tmp_path))
    refused("DIFY_SRC without api/ and web/: refused", result, "is not a Dify checkout", env,
            changed=[env.state / "middleware.env"])


def test_python_tooling_missing(tmp_path):
    env = make_env(tmp_path)
    result = env.invoke("dev.init", check=False, PATH=tool_bin(tmp_path, "docker", "git", "node", "pnpm"))
    refused("uv missing: refused", result, "uv is not installed", env,
            changed=[env.src / "api" / ".env", env.state / "middleware.env"])


def test_node_missing(tmp_path):
    env = make_env(tmp_path)
    result = env.invoke("dev.init", check=False, PATH=tool_bin(tmp_path, "docker", "git", "uv"))
    refused("Node missing: refused", result, "Node.js is not installed", env,
            changed=[env.src / "web" / ".env.local", env.src / "api" / ".env"])


def test_middleware_not_set_up(tmp_path):
    env = make_env(tmp_path)
    result = env.invoke("dev.start-api", check=False)
    refused("start-api with no middleware: refused", result, "run `invoke dev.init`", env)


def test_middleware_port_taken(tmp_path):
    env = make_env(tmp_path)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", env.ports["EXPOSE_REDIS_PORT"]))
        holder.listen(1)
        result = env.invoke("dev.init", *env.set_args(), check=False)
    refused("middleware port taken: refused, no container", result,
            f"port {env.ports['EXPOSE_REDIS_PORT']} on 127.0.0.1 is already in use", env,
            changed=[env.src / "api" / ".env"])


def test_unknown_vector_store(tmp_path):
    env = make_env(tmp_path)
    result = env.invoke("dev.init", *env.set_args(), "--set", "VECTOR_STORE=nosuchstore", check=False)
    refused("unknown VECTOR_STORE: refused", result, "VECTOR_STORE='nosuchstore'", env,
            changed=[env.src / "api" / ".env"])
