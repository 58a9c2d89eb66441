"""Figure (d): what tracing costs on the synchronous path, off and on.

Tracing off must cost under 3% (DESIGN.md): ``call_driver`` and ``complete_request`` then pay only
their ``monitor is None`` tests.  To measure exactly that, this script recompiles both functions
from their current source twice, once as they are and once with the tracing branches taken out (an
``ast`` transformation, so the copies follow every change to the real code), and runs figure (a)'s
4-layer workload (``call_driver`` + ``await irp``) through each.  Identical code compiled into two
function objects can differ by a couple of percent (memory layout), so several copies of each are
built and each round compares their means.  The figure is with-branches / without - 1.

Tracing on must cost at most 3x tracing off (DESIGN.md, issue 13): an :class:`~airp.IrpMonitor`
watching every IRP, appending one tuple per event to its ring (records are built only when read),
no logger, against the real functions with no monitor.  Two variants are reported for information:
a monitor with a ring per device, and one whose device filter keeps none of this stack's devices
(the hooks still run; they keep nothing).  Reading the records back is timed separately, per IRP.

Run: python benchmarks/bench_tracing.py [--rounds R] [--best-of K] [--ops N] [--copies C]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Ratio,
    SyncStack,
    arg_parser,
    check_sync_stack,
    header,
    interleaved,
    make_sync_stack,
    print_ratios,
    ratio,
    recompiled,
    sync_runner,
)

import airp._machine._completion
import airp._shell._call
from airp import IrpMonitor

#: Tracing off may cost at most 3%.
OFF_GOAL = 1.03
#: Tracing on may cost at most 3x tracing off.
ON_GOAL = 3.0


def _stack(strip: bool) -> SyncStack:
    stack = make_sync_stack(
        recompiled(airp._shell._call, "call_driver", strip_monitor=strip),
        recompiled(airp._machine._completion, "complete_request", strip_monitor=strip),
    )
    check_sync_stack(stack)
    return stack


def run(rounds: int = 9, best_of: int = 5, ops: int = 3_000, copies: int = 3) -> list[Ratio]:
    real = make_sync_stack()
    monitor = IrpMonitor(capacity=1000)
    per_device = IrpMonitor(per_device=250)
    elsewhere = IrpMonitor(devices=["a device of another stack"])
    contenders = {}
    for i in range(copies):
        contenders[f"with_{i}"] = sync_runner(_stack(False), ops, await_irp=True)
        contenders[f"without_{i}"] = sync_runner(_stack(True), ops, await_irp=True)
    contenders["real"] = sync_runner(real, ops, await_irp=True)
    contenders["traced"] = sync_runner(real, ops, await_irp=True, watch=monitor.watch)
    contenders["per_device"] = sync_runner(real, ops, await_irp=True, watch=per_device.watch)
    contenders["elsewhere"] = sync_runner(real, ops, await_irp=True, watch=elsewhere.watch)
    results = asyncio.run(interleaved(contenders, rounds, best_of))
    # Per round: the mean over the copies of each variant.
    results["with"] = [statistics.fmean(v) for v in zip(*(results[f"with_{i}"] for i in range(copies)), strict=True)]
    results["without"] = [statistics.fmean(v) for v in zip(*(results[f"without_{i}"] for i in range(copies)), strict=True)]
    off = ratio(
        "tracing off: with / without the monitor tests",
        results,
        "with",
        "without",
        OFF_GOAL,
        note=f"the `monitor is None` tests of call_driver and complete_request; {copies} copies of each, recompiled from source",
    )
    check = ratio("check: real functions / recompiled copies", results, "real", "with", note="should be ~1: the copies are faithful")
    on = ratio("tracing on:  IrpMonitor watching / off", results, "traced", "real", ON_GOAL, note="one ring, no logger, records built lazily")
    rings = ratio("tracing on, a ring per device / off", results, "per_device", "real")
    filtered = ratio("tracing on, filtered to another device / off", results, "elsewhere", "real")
    rows = [off, check, on, rings, filtered]
    print_ratios("(d) tracing cost on the synchronous 4-layer path (call_driver + await irp)", rows)
    # Reading: the records of the last 1000 events' IRPs, built from the ring (per IRP traced).
    kept_irps = len({r.irp for r in monitor.records})
    t0 = time.perf_counter()
    for _ in range(5):
        monitor.records  # noqa: B018 (built on every read)
    per_irp = (time.perf_counter() - t0) / 5 / kept_irps * 1e6
    print(f"  reading the records back: {per_irp:.1f} us per IRP kept (not on the IRP's path)")
    print(f"  => tracing off costs {100 * (off.median - 1):+.1f}% (goal < 3%); tracing on costs {on.median:.2f}x (goal <= 3x)")
    return rows


def main() -> None:
    parser = arg_parser(__doc__.splitlines()[0], rounds=15, best_of=5, ops=3_000)
    parser.add_argument("--copies", type=int, default=3, help="independently compiled copies of each variant (default 3)")
    args = parser.parse_args()
    header()
    run(args.rounds, args.best_of, args.ops, args.copies)


if __name__ == "__main__":
    main()
