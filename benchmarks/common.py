"""What a benchmark returns: our figure beside a baseline from the same run."""

from __future__ import annotations

from dataclasses import asdict, dataclass


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
