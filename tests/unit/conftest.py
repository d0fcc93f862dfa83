"""Unit-test helpers: a MockContext wired to a generated .env, with regex command results."""

from __future__ import annotations

import re

import pytest
import yaml
from invoke import Config, MockContext, Result

from difyops import dotenv, envfile, paths


def write_env(path, **overrides):
    text = envfile.generate(paths.ENV_EXAMPLE.read_text(), {k: str(v) for k, v in overrides.items()})
    dotenv.write_private(path, text)
    return path


@pytest.fixture
def env_path(tmp_path):
    return write_env(tmp_path / ".env", DIFYOPS_STACK="unit", EXPOSE_NGINX_PORT="1")


def mock_context(env_file, results: dict[str, Result | list[Result]], stack=None) -> MockContext:
    """A MockContext whose run answers by regex (first match wins), each answer repeatable."""
    overrides = {"difyops": {"env_file": str(env_file), "stack": stack, "wait_timeout": 300}}
    # invoke matches with re.match (anchored at the start): search anywhere instead.
    table = {re.compile(".*?" + pattern): result for pattern, result in results.items()}
    return MockContext(config=Config(overrides=overrides), run=table, repeat=True)


def commands(c) -> list[str]:
    return [call.args[0] for call in c.run.call_args_list]


OK = Result("")


def fail_result(stderr="failed"):
    return Result(stdout="", stderr=stderr, exited=1)


# ---- prod.upgrade / prod.rollback through MockContext (test_rollout.py, test_rollout_release.py)
RUNNING = Result('{"Service": "x", "State": "running", "Health": "healthy"}')


@pytest.fixture
def fast_rollout(monkeypatch):
    """No probe for tools on the host, no wait for the gateway's DNS cache."""
    monkeypatch.setattr("difyops.probes.shutil.which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr("difyops.rollout.DNS_SETTLE_SECONDS", 0)


def rollout_context(env_path, at_head: Result, **extra: Result) -> MockContext:
    """A MockContext answering what an upgrade asks of a healthy host: Docker and Compose versions,
    every service running and healthy, the one-shot jobs done, the schema at `at_head`; `extra`
    first (a test's own answers win)."""
    results = {r"docker info": Result("26.1.5"), r"docker compose version": Result("2.26.1"), **extra}
    results.setdefault(r" ps (-a )?--format json", RUNNING)
    results.setdefault(r"docker image inspect", Result("sha256:x"))
    results.setdefault(r"run --rm --no-deps init_permissions", Result("storage volume: 0 entries given"))
    results.setdefault(r"run --rm --no-deps migrate", Result("Database migration successful!"))
    results.setdefault(r"-e MODE=job -e MIGRATION_ENABLED=false migrate db current", at_head)
    results.setdefault(r" up -d", OK)
    results.setdefault(r" (down|stop|kill) ", OK)
    return mock_context(env_path, results)


class ComposeLoader(yaml.SafeLoader):
    """Compose's merge tags (!reset, !override) read as plain values."""


for _tag in ("!reset", "!override"):
    ComposeLoader.add_constructor(_tag, lambda loader, node: (
        loader.construct_mapping(node) if isinstance(node, yaml.MappingNode)
        else loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode)
        else loader.construct_scalar(node)))


def load_compose(path):
    """A compose file (overlays' !reset and !override tags included) as plain YAML."""
    return yaml.load(path.read_text(), Loader=ComposeLoader)
