"""The smoke stack: a whole stack deployed with the Dify stand-in (a test double) under a unique
stack name, on a free port of 127.0.0.1 (conftest.py deploys it and tears it down)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from testkit import LOCAL_IMAGES, STANDIN_IMAGES, STANDIN_RELEASE, env_init, invoke, owned, record

from difyops import clusters as cl


@dataclass
class Stack:
    name: str
    env_file: Path
    port: int
    torn_down: bool = False

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def invoke(self, *args: str, check: bool = True, timeout: int = 900, env=None):
        return invoke(*args, env_file=self.env_file, check=check, timeout=timeout, env=env)

    def teardown(self) -> dict[str, list[str]]:
        """`prod.down all --volumes`, then whatever of this stack is still there."""
        started = time.monotonic()
        down = self.invoke("prod.down", "all", "--volumes", "--yes", check=False)
        record("teardown", time.monotonic() - started)
        self.torn_down = True
        if down.returncode != 0:
            print(down.stdout[-2000:], down.stderr[-2000:])
        return owned(self.name)


# Every service a plain `prod.deploy` runs, as (cluster, service); the one-shot jobs (migrate, the
# storage owner step) are gone once they are done.
SERVICES = sorted((c.name, s) for c in cl.CLUSTERS.values() for s in c.services)

# The shared stack's own settings: distinctive web limits (test_01 checks they reach the web) and
# one private destination the SSRF proxy lets through (the stack's own web service).
STACK_EXTRA = {"LOOP_NODE_MAX_COUNT": "77", "MAX_TREE_DEPTH": "42", "ALLOW_UNSAFE_DATA_SCHEME": "true",
               "SSRF_PROXY_ALLOW_PRIVATE_DOMAINS": "web"}


def make_env(tmp: Path, name: str, port: int, extra: dict[str, str] | None = None, url: bool = False,
             standin: dict[str, str] | None = None) -> Path:
    """A fresh .env (`env.init`) for a stack of stand-in images: `standin` the Dify images (default:
    v1, with the release it models, 1.13.3); with `standin` given, DIFY_VERSION is .env.example's
    (the default release) unless `extra` sets it."""
    # Load tests (upgrade under load) measure the stack, not the gateway's per-client limit on /v1,
    # which test_03_tls checks with its defaults.
    images = {**STANDIN_RELEASE, **STANDIN_IMAGES} if standin is None else dict(standin)
    values = {"DIFYOPS_STACK": name, "EXPOSE_NGINX_PORT": str(port), "UPLOAD_FILE_SIZE_LIMIT": "30",
              "NGINX_API_RATE": "off", **images, **LOCAL_IMAGES, **(extra or {})}
    # With url: Dify's public URLs from the one origin the stack is reached at (env.init --url).
    return env_init(tmp / ".env", values, *(["--url", f"http://127.0.0.1:{port}"] if url else []))
