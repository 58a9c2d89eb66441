"""Figure (b): a pended IRP's round trip against a bare anyio Event hand-off.

The requester builds an IRP and calls the driver; the dispatch routine marks it pending, hands it
to a worker task through a memory object stream and returns STATUS_PENDING; the requester awaits
the IRP (one lazily created event); the worker completes it with ``complete_request``, which wakes
the requester.  The baseline does the same hand-off with a bare ``anyio.Event``
(``anyio_event_handoff``).  Goal: <= 1.5x, on asyncio and on trio.  Also reported, for information:
the same round trip through the 4-deep stack of figure (a) (three filters with completion routines
over the pending driver).

Run: python benchmarks/bench_pending.py [--rounds R] [--best-of K] [--ops N]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    READ,
    Ratio,
    arg_parser,
    baseline_runner,
    bench_backends,
    header,
    interleaved,
    make_sync_stack,
    per_op,
    print_ratios,
    ratio,
)

import airp
from airp import STATUS_PENDING, STATUS_SUCCESS, Irp, complete_request

GOAL = 1.5


def pended_runner(layers: int, ops: int) -> Callable[[], Awaitable[float]]:
    """The airp round trip through a stack *layers* deep whose bottom driver pends every IRP."""
    send, receive = anyio.create_memory_object_stream[Irp](1000)
    stack = make_sync_stack(layers=layers, pend=send.send_nowait)
    top = stack.top
    call_driver = airp.call_driver

    async def worker() -> None:
        async for irp in receive:
            complete_request(irp, STATUS_SUCCESS, 1)

    async def run() -> float:
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker)
            t0 = time.perf_counter()
            for i in range(ops):
                irp = Irp(layers)
                loc = irp.next_stack_location
                loc.major = READ
                loc.parameters = i
                status = await call_driver(top, irp)
                await irp
            result = per_op(t0, ops)
            tg.cancel_scope.cancel()
        assert status == STATUS_PENDING
        assert irp.pending_returned
        assert irp.information == 1
        return result

    return run


def run(rounds: int = 9, best_of: int = 5, ops: int = 1_000) -> list[Ratio]:
    rows: list[Ratio] = []
    for backend in bench_backends():
        contenders = {
            "airp_1": pended_runner(1, ops),
            "airp_4": pended_runner(4, ops),
            "event": baseline_runner("anyio_event_handoff", ops=ops),
        }
        results = anyio.run(interleaved, contenders, rounds, best_of, backend=backend)
        rows.append(ratio(f"{backend:7} pended IRP, 1 layer  / anyio_event_{backend}", results, "airp_1", "event", GOAL))
        rows.append(ratio(f"{backend:7} pended IRP, 4 layers / anyio_event_{backend}", results, "airp_4", "event"))
    print_ratios("(b) pended round trip (pend, complete from a worker task, requester wakes)", rows)
    return rows


def main() -> None:
    args = arg_parser(__doc__.splitlines()[0], rounds=15, best_of=5, ops=1_000).parse_args()
    header()
    run(args.rounds, args.best_of, args.ops)


if __name__ == "__main__":
    main()
