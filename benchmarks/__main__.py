"""Run the benchmarks and write bench-results/results.md and results.json.

Usage: python -m benchmarks [name ...]   (default: every module in benchmarks/ with a run())

A benchmark module defines ``run() -> list[Measure]``. Each Measure pairs our figure with a
baseline taken in the same run, so the table reports ratios, not absolute timings alone.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import time
import traceback
from pathlib import Path

from benchmarks.common import Measure

OUT = Path(__file__).resolve().parent.parent / "bench-results"


def discover() -> list[str]:
    here = Path(__file__).resolve().parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name not in ("common",))


def main(argv: list[str]) -> int:
    names = argv or discover()
    rows: list[Measure] = []
    failures = []
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        if not hasattr(module, "run"):
            continue
        started = time.monotonic()
        print(f"== benchmark {name}", flush=True)
        try:
            rows.extend(module.run())
        except Exception:  # one broken benchmark must not hide the others' figures
            failures.append(name)
            traceback.print_exc()
        print(f"== {name} took {time.monotonic() - started:.1f}s", flush=True)
    OUT.mkdir(exist_ok=True)
    (OUT / "results.json").write_text(json.dumps([r.as_dict() for r in rows], indent=2))
    lines = [
        "| benchmark | measure | ours | baseline | ratio (ours/baseline) | note |",
        "|---|---|---|---|---|---|",
    ]
    lines += [r.markdown_row() for r in rows]
    (OUT / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if failures:
        print(f"benchmarks that failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
