#!/usr/bin/env python3
"""Where a Spark training's CPU goes: the driver JVM vs the Python workers, cold and warm.

    python bench/spark_cpu_probe.py BUNDLE_DIR [--java-options "-XX:TieredStopAtLevel=1"]
Builds a local[2] session (with the given driver JVM options; "" for the JVM's defaults),
trains the bundle's `bench` model twice on it and prints, per training, the wall time and the
CPU seconds of the `java` and `python` processes (from /proc; Linux only).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def cpu_by_command() -> dict[str, float]:
    """CPU seconds (with reaped children) of every process, summed by command name; this process as 'self'."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        key = "self" if int(pid) == os.getpid() else name
        out[key] = out.get(key, 0.0) + sum(int(f) for f in fields[11:15]) / tick
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", type=Path)
    p.add_argument("--java-options", default=None, help="spark.driver.extraJavaOptions (default: manymodels')")
    args = p.parse_args()

    import manymodels as mm
    from manymodels.engines.spark_session import build_session

    project = mm.load_bundle(args.bundle, target="spark")
    project.runs("bench", limit=1)  # the tracking store exists before timing
    conf: dict[str, object] = {"spark.ui.enabled": False}
    if args.java_options is not None:
        conf["spark.driver.extraJavaOptions"] = args.java_options or "-Dmanymodels.jvm.defaults=1"
    start = time.perf_counter()
    spark = build_session("local[2]", None, conf)
    result: dict[str, object] = {"java_options": args.java_options, "session_s": round(time.perf_counter() - start, 2)}
    for label in ("cold", "warm"):
        before, start = cpu_by_command(), time.perf_counter()
        project.train("bench", spark=spark)
        wall, after = time.perf_counter() - start, cpu_by_command()
        result[label] = {
            "wall_s": round(wall, 2),
            **{f"{k}_cpu_s": round(after.get(k, 0) - before.get(k, 0), 1) for k in ("java", "python")},
        }
    spark.stop()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
