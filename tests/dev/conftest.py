"""Fixtures of the development-environment tests: one environment (devenv.py) for the session,
stopped and removed afterwards."""

from __future__ import annotations

import time

import pytest
from devenv import make_env


@pytest.fixture(scope="session")
def devenv(tmp_path_factory):
    env = make_env(tmp_path_factory.mktemp("dev"))
    try:
        yield env
    finally:
        started = time.monotonic()
        env.cleanup()
        print(f"TIMING cleanup: {time.monotonic() - started:.1f}s")
