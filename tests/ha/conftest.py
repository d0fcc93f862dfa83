"""HA fixtures: one stack under a unique name with DIFYOPS_DATA_HA=true (Patroni + etcd + HAProxy,
Redis with Sentinel), deployed with the Dify stand-in (a test double): data, support, api, worker.
Torn down afterwards, whatever happened. `nox -s ha` runs these.

DIFYOPS_HA_REUSE_ENV=/path/.env points the tests at a stack already deployed from that file
(development only: nothing is deployed or torn down then)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from halib import HaStack  # noqa: E402
from testkit import check, record  # noqa: E402

CLUSTERS = "data,support,api,worker"


@pytest.fixture(scope="session")
def ha_stack() -> HaStack:
    reuse = os.environ.get("DIFYOPS_HA_REUSE_ENV")
    if reuse:
        env_file = Path(reuse)
        from difyops import envfile

        yield HaStack(envfile.read(env_file)["DIFYOPS_STACK"], env_file, reused=True)
        return
    stack = HaStack.create()
    started = time.monotonic()
    try:
        result = stack.invoke("prod.deploy", "--clusters", CLUSTERS, "--timeout", "300")
        print(result.stdout[-1500:])
        record(f"deploy ({CLUSTERS}, HA data)", time.monotonic() - started)
        yield stack
    finally:
        mark = time.monotonic()
        stack.teardown()
        record("teardown", time.monotonic() - mark)
        left = stack.leftovers()
        check("teardown leaves no container, network or volume of the stack", not left, left or "none")
