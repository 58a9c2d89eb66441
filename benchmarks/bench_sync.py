"""Figure (a): an IRP completed synchronously at the bottom of a 4-deep stack.

Three filters copy their location down, set a completion routine that propagates the pending mark,
and call the driver below; the function driver completes the IRP at once.  A fresh ``Irp(4)`` per
iteration, as the baseline allocates a fresh ``MiniIrp``.  Ratios against ``mini_irp_chain_4``
(goal <= 2x) and ``bare_chain_4`` (goal <= 10x), for ``call_driver`` alone and for ``call_driver``
followed by ``await irp``.

Run: python benchmarks/bench_sync.py [--rounds R] [--best-of K] [--ops N]
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Ratio,
    arg_parser,
    baseline_runner,
    check_sync_stack,
    header,
    interleaved,
    make_sync_stack,
    print_ratios,
    ratio,
    sync_runner,
)

MINI_GOAL = 2.0
BARE_GOAL = 10.0


def run(rounds: int = 9, best_of: int = 5, ops: int = 5_000) -> list[Ratio]:
    stack = make_sync_stack()
    check_sync_stack(stack)
    contenders = {
        "airp": sync_runner(stack, ops, await_irp=False),
        "airp+await": sync_runner(stack, ops, await_irp=True),
        "mini_irp_chain_4": baseline_runner("mini_irp_chain", 4, ops=ops),
        "bare_chain_4": baseline_runner("bare_chain", 4, ops=ops),
    }
    results = asyncio.run(interleaved(contenders, rounds, best_of))
    rows = [
        ratio("call_driver      / mini_irp_chain_4", results, "airp", "mini_irp_chain_4", MINI_GOAL),
        ratio("call_driver+await / mini_irp_chain_4", results, "airp+await", "mini_irp_chain_4", MINI_GOAL),
        ratio("call_driver      / bare_chain_4", results, "airp", "bare_chain_4", BARE_GOAL),
        ratio("call_driver+await / bare_chain_4", results, "airp+await", "bare_chain_4", BARE_GOAL),
    ]
    print_ratios("(a) synchronous 4-layer path (fresh Irp(4), 3 filters with completion routines)", rows)
    return rows


def main() -> None:
    args = arg_parser(__doc__.splitlines()[0], rounds=15, best_of=5, ops=5_000).parse_args()
    header()
    run(args.rounds, args.best_of, args.ops)


if __name__ == "__main__":
    main()
