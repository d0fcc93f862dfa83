"""What a benchmark returns (our figure beside a baseline from the same run), and the stack the
benchmarks deploy: the suites' own stand-in release and images (tests/testkit/stacks.py)."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from testkit import LOCAL_IMAGES, STANDIN_IMAGES, STANDIN_RELEASE  # noqa: E402

# The Dify stand-in (a TEST DOUBLE) as the release it models, and the local builds of the rest.
STANDIN_STACK = {**STANDIN_RELEASE, **STANDIN_IMAGES, **LOCAL_IMAGES}
BACKUP_IMAGE = "difyops-local/backup:1"


@dataclass
class Measure:
    benchmark: str
    measure: str
    ours: float
    baseline: float | None
    unit: str
    ours_label: str = "difyops"
    baseline_label: str = ""
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.ours / self.baseline

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}

    def markdown_row(self) -> str:
        base = "-" if self.baseline is None else f"{self.baseline:.3g} {self.unit} ({self.baseline_label})"
        ratio = "-" if self.ratio is None else f"{self.ratio:.2f}"
        return (f"| {self.benchmark} | {self.measure} | {self.ours:.3g} {self.unit} ({self.ours_label}) | "
                f"{base} | {ratio} | {self.note} |")
