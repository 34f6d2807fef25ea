"""How long `manymodels report` takes, how much memory and how big the page is, on projects the other benches made.

    .venv/bin/python bench/report_bench.py                       # the 100,000-segment projects of memory_bench.py
    .venv/bin/python bench/report_bench.py --bundle DIR --model NAME

Each project's latest run (the champion's, when there is one) is reported by the CLI, as a user runs it.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULTS = [HERE / "out" / "bundle-mem-100000x100", HERE / "out" / "bundle-mem-100000x100-cv5"]


def measure(bundle: Path, model: str, out: Path) -> dict[str, float]:
    """One `manymodels report` in a fresh process: wall seconds, peak RSS of that process, the page's size."""
    command = [str(Path(sys.executable).with_name("manymodels")), "report", model, "-b", str(bundle), "--out", str(out)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 - our own CLI
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(done.stdout.strip())
    return {"seconds": seconds, "peak_mib": max(peak, before) / 1024, "mb": out.stat().st_size / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, action="append", help="a bundle folder (repeatable)")
    parser.add_argument("--model", default="bench")
    args = parser.parse_args()
    for bundle in args.bundle or DEFAULTS:
        if not bundle.exists():
            print(f"{bundle}: missing (make it with bench/memory_bench.py)")
            continue
        figures = measure(bundle, args.model, HERE / "out" / f"report-{bundle.name}.html")
        print(f"{bundle.name}: {figures['seconds']:.1f} s, peak RSS {figures['peak_mib']:.0f} MiB "
              f"(the largest child so far), page {figures['mb']:.2f} MB")


if __name__ == "__main__":
    main()
