"""The core performance budget of DESIGN.md, measured as ratios in one process.

Runs the four figures in turn and prints a summary:

(a) bench_sync.py     synchronous 4-layer path vs the baseline's minimal IRP and bare await chain
(b) bench_pending.py  pended round trip vs a bare anyio Event hand-off (asyncio and trio)
(c) bench_memory.py   memory per pending IRP (tracemalloc)
(d) bench_tracing.py  tracing off (and on) on the synchronous path

Each figure's own script runs it alone, with more rounds if wanted.  This one is sized to finish
in well under a minute on the 2-core development machine.

Run: python benchmarks/bench_core.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_memory
import bench_pending
import bench_sync
import bench_tracing
from _common import Ratio, header


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (noisier), about a third of the time")
    args = parser.parse_args()
    rounds = 3 if args.quick else 9
    header()
    t0 = time.perf_counter()
    rows: list[Ratio] = []
    rows += bench_sync.run(rounds=rounds)
    rows += bench_pending.run(rounds=rounds)
    memory = bench_memory.run(count=10_000)
    rows += bench_tracing.run(rounds=rounds)

    print("\n== summary (median ratio over rounds; see benchmarks/README.md)")
    for r in rows:
        if r.goal is None:
            continue
        print(f"  {r.label:<62} {r.median:7.3f}x  goal <= {r.goal:g}x  {r.verdict}")
    for label, size in memory:
        verdict = "MET" if size <= bench_memory.GOAL else "NOT MET"
        print(f"  {'memory per pending IRP: ' + label:<62} {size:7.0f} B  goal <= {bench_memory.GOAL} B  {verdict}")
    print(f"  ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
