"""Smoke fixtures: the shared stack (smokestack.py) deployed once for the whole session, and torn
down afterwards whatever happened."""

from __future__ import annotations

import time

import pytest
from smokestack import STACK_EXTRA, Stack, make_env
from testkit import free_port, record, remove_owned, unique_name


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Stack:
    name = unique_name("smoke")
    tmp = tmp_path_factory.mktemp("stack")
    port = free_port()
    st = Stack(name, make_env(tmp, name, port, STACK_EXTRA, url=True), port)
    started = time.monotonic()
    try:
        result = st.invoke("prod.deploy", timeout=1200)
        print(result.stdout[-2000:])
        record("deploy (all clusters)", time.monotonic() - started)
        yield st
    finally:
        if not st.torn_down:
            st.teardown()
        # Leave the machine clean even when a check failed.
        remove_owned(name)
