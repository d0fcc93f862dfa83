"""Smoke, first: bad input gets one clear line, a non-zero exit, and starts nothing."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys

from conftest import ROOT, free_port, make_env
from smokelib import check


def run_invoke(env_file, *args, extra_env=None):
    env = dict(os.environ, INVOKE_DIFYOPS_ENV_FILE=str(env_file), **(extra_env or {}))
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def containers_of(stack_name):
    out = subprocess.run(["docker", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True)
    return [n for n in out.stdout.split() if n.startswith(f"{stack_name}-")]


def refused(name, result, needle, stack_name=None):
    last = (result.stderr.strip().splitlines() or [""])[-1]
    text = result.stdout + result.stderr
    ok = result.returncode != 0 and needle in text and "Traceback" not in text and last.startswith("error:")
    if stack_name:
        ok = ok and not containers_of(stack_name)
    check(name, ok, f"exit {result.returncode}: {last}")


def test_no_env_file(tmp_path):
    result = run_invoke(tmp_path / "missing.env", "prod.deploy")
    refused("no .env: refused", result, "invoke env.init")


def test_placeholder_secret(tmp_path):
    env_file = tmp_path / ".env"
    shutil.copy(ROOT / ".env.example", env_file)
    result = run_invoke(env_file, "prod.deploy")
    refused("placeholder secrets: refused", result, "placeholder")


def test_malformed_env(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("SECRET_KEY=abc\nthis line is not an assignment\n")
    result = run_invoke(env_file, "env.check")
    refused("malformed .env: refused with the line number", result, "line 2")


def test_unknown_cluster(tmp_path):
    name = f"bad{secrets.token_hex(3)}"
    env_file = make_env(tmp_path, name, free_port())
    result = run_invoke(env_file, "prod.up", "nosuchcluster")
    refused("unknown cluster: refused", result, "unknown cluster nosuchcluster", name)


def test_port_in_use(tmp_path):
    name = f"bad{secrets.token_hex(3)}"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        env_file = make_env(tmp_path, name, port)
        result = run_invoke(env_file, "prod.deploy")
    refused("gateway port in use: refused, nothing started", result, f"port {port}", name)


def test_docker_daemon_down(tmp_path):
    name = f"bad{secrets.token_hex(3)}"
    env_file = make_env(tmp_path, name, free_port())
    result = run_invoke(env_file, "prod.deploy", extra_env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"})
    refused("Docker daemon unreachable: refused", result, "Docker daemon is not running", name)
