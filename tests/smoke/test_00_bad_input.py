"""Smoke, first: bad input gets one clear line, a non-zero exit, and starts nothing."""

from __future__ import annotations

import shutil
import socket

from smokestack import make_env
from testkit import ROOT, check, free_port, invoke, owned, unique_name


def run_invoke(env_file, *args, extra_env=None):
    return invoke(*args, env_file=env_file, check=False, timeout=300, env=extra_env)


def refused(name, result, needle, stack_name=None):
    last = (result.stderr.strip().splitlines() or [""])[-1]
    text = result.stdout + result.stderr
    ok = result.returncode != 0 and needle in text and "Traceback" not in text and last.startswith("error:")
    if stack_name:
        ok = ok and not any(owned(stack_name).values())
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
    name = unique_name("bad")
    env_file = make_env(tmp_path, name, free_port())
    result = run_invoke(env_file, "prod.up", "nosuchcluster")
    refused("unknown cluster: refused", result, "unknown cluster nosuchcluster", name)


def test_port_in_use(tmp_path):
    name = unique_name("bad")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        env_file = make_env(tmp_path, name, port)
        result = run_invoke(env_file, "prod.deploy")
    refused("gateway port in use: refused, nothing started", result, f"port {port}", name)


def test_docker_daemon_down(tmp_path):
    name = unique_name("bad")
    env_file = make_env(tmp_path, name, free_port())
    result = run_invoke(env_file, "prod.deploy", extra_env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"})
    refused("Docker daemon unreachable: refused", result, "Docker daemon is not running", name)


def test_mixed_release_set(tmp_path):
    # The default release (1.16.1) with the plugin daemon of 1.13.3 named in .env: refused before
    # anything is pulled or started, in one line naming both images and releases.
    name = unique_name("bad")
    env_file = make_env(tmp_path, name, free_port(), {"DIFY_VERSION": "1.16.1",
                                                        "DIFY_PLUGIN_DAEMON_IMAGE": "langgenius/dify-plugin-daemon:0.5.3-local"})
    result = run_invoke(env_file, "prod.deploy")
    refused("a plugin daemon of another release: refused as a mixed release set, nothing started", result,
            "0.5.3-local is the plugin_daemon image of Dify 1.13.3, but DIFY_VERSION=1.16.1 runs "
            "langgenius/dify-plugin-daemon:0.6.3-local", name)
