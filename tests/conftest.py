"""Shared by every suite under tests/: the `testkit` package on the import path, and the
`requires` mark, a skip that fails under CI=true (testkit/require.py):

    @pytest.mark.requires(shutil.which("promtool"), "promtool is not installed", "nox -s tests in CI")
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from testkit.require import require  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "requires(condition, reason, runs_in): skip unless condition holds, "
                                       "naming where the check runs; fails under CI=true")


def pytest_runtest_setup(item):
    for mark in item.iter_markers(name="requires"):
        require(*mark.args, **mark.kwargs)
