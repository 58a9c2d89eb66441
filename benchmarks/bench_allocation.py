"""Issue #3: what recycling a driver's own IRPs saves, and what allocating one costs.

(1) A driver sends 100 000 IRPs of its own to the device below, which completes each at once; the
    creator's completion routine gives the IRP back and returns STATUS_MORE_PROCESSING_REQUIRED.
    Three ways to get and give back the IRP:
      fresh      allocate_irp(n) with no allocator (a new IRP every time) / free_irp
      lookaside  allocate_irp(n, allocator=...) / free_irp: the small list recycles them
      pool       IrpPool.get() (IoReuseIrp on an idle IRP) / IrpPool.put()
    Goal: pool at least 30% cheaper per IRP than fresh (ratio <= 0.70).
(2) Allocation alone (get and give back, nothing sent), against the baseline's minimal IRP
    (``MiniIrp(n)`` of shared/bench/baseline.py, a slots object with a list of locations).
    A fresh airp IRP creates only its top location; the others are created when the IRP is sent,
    so (1) is the honest comparison of fresh against recycled; (2) is the floor.
(3) Memory: tracemalloc over 1 000 and 100 000 pooled IRPs: the pool's memory does not grow with
    the count (and neither does the fresh path's, once freed IRPs are collected).

Run: python benchmarks/bench_allocation.py [--rounds R] [--best-of K] [--ops N] [--stack N]
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Ratio, arg_parser, baseline, header, interleaved, per_op, print_ratios, ratio

import airp
from airp import (
    STATUS_MORE_PROCESSING_REQUIRED,
    STATUS_SUCCESS,
    DeviceObject,
    Irp,
    IrpMajor,
    OtherParameters,
    allocate_irp,
    complete_request,
    free_irp,
    send_irp,
)

REUSE_GOAL = 0.70
IOCTL = airp.ControlCode.make(0x22, 0, airp.TransferMethod.NEITHER)
PARAMETERS = OtherParameters(argument1="urb", argument3=IOCTL)


class Bottom(airp.Driver):
    """Completes every internal device-control request at once."""

    @airp.dispatch(IrpMajor.INTERNAL_DEVICE_CONTROL)
    async def submit(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 8)
        return STATUS_SUCCESS


class Top(airp.Driver):
    """The driver that owns the pool (it receives nothing here)."""


def _continue(device: DeviceObject | None, irp: Irp, context: Any) -> int:
    if irp.pending_returned:
        irp.mark_pending()
    return airp.STATUS_CONTINUE_COMPLETION


class Filter(airp.Driver):
    """A filter that copies its location down with a completion routine: every location is used."""

    @airp.dispatch(IrpMajor.INTERNAL_DEVICE_CONTROL)
    async def submit(self, device: DeviceObject, irp: Irp) -> int:
        irp.copy_current_stack_location_to_next()
        irp.set_completion_routine(_continue)
        lower = device.lower_device
        assert lower is not None
        return await airp.call_driver(lower, irp)


def make_target(stack: int) -> tuple[DeviceObject, DeviceObject]:
    """A device of *stack* - 1 :class:`Filter` layers over :class:`Bottom`, and a device on top."""
    io = airp.IoManager()
    target = io.create_device(Bottom())
    for _ in range(stack - 1):
        upper = io.create_device(Filter())
        airp.attach_device(upper, target)
        target = upper
    me = io.create_device(Top())
    airp.attach_device(me, target)
    assert target.stack_size == stack
    return me, target


Runner = Callable[[], Awaitable[float]]


def send_runners(stack: int, ops: int) -> dict[str, Runner]:
    me, target = make_target(stack)
    n = target.stack_size

    def free_when_done(device: DeviceObject | None, irp: Irp, context: Any) -> int:
        free_irp(irp)
        return STATUS_MORE_PROCESSING_REQUIRED

    async def fresh() -> float:
        t0 = time.perf_counter()
        for _ in range(ops):
            irp = allocate_irp(n)
            assert irp is not None
            loc = irp.next_stack_location
            loc.major = IrpMajor.INTERNAL_DEVICE_CONTROL
            loc.parameters = PARAMETERS
            irp.set_completion_routine(free_when_done)
            await send_irp(target, irp)
        return per_op(t0, ops)

    allocator = airp.IrpAllocator()

    async def lookaside() -> float:
        t0 = time.perf_counter()
        for _ in range(ops):
            irp = allocate_irp(n, allocator=allocator)
            assert irp is not None
            loc = irp.next_stack_location
            loc.major = IrpMajor.INTERNAL_DEVICE_CONTROL
            loc.parameters = PARAMETERS
            irp.set_completion_routine(free_when_done)
            await send_irp(target, irp)
        return per_op(t0, ops)

    pool = airp.IrpPool(me, target)

    def put_when_done(device: DeviceObject | None, irp: Irp, context: Any) -> int:
        pool.put(irp)
        return STATUS_MORE_PROCESSING_REQUIRED

    async def pooled() -> float:
        t0 = time.perf_counter()
        for _ in range(ops):
            irp = pool.get()
            assert irp is not None
            loc = irp.next_stack_location
            loc.major = IrpMajor.INTERNAL_DEVICE_CONTROL
            loc.parameters = PARAMETERS
            irp.set_completion_routine(put_when_done)
            await pool.send(irp)
        return per_op(t0, ops)

    return {"fresh": fresh, "lookaside": lookaside, "pool": pooled}


def lifecycle_runners(stack: int, ops: int) -> dict[str, Runner]:
    me, target = make_target(stack)
    n = target.stack_size
    mini_irp = baseline.MiniIrp

    async def mini() -> float:
        t0 = time.perf_counter()
        for _ in range(ops):
            mini_irp(n)
        return per_op(t0, ops)

    async def bare() -> float:
        t0 = time.perf_counter()
        for _ in range(ops):
            Irp(n)
        return per_op(t0, ops)

    async def fresh() -> float:
        t0 = time.perf_counter()
        for _ in range(ops):
            irp = allocate_irp(n)
            assert irp is not None
            free_irp(irp)
        return per_op(t0, ops)

    allocator = airp.IrpAllocator()

    async def lookaside() -> float:
        t0 = time.perf_counter()
        for _ in range(ops):
            irp = allocate_irp(n, allocator=allocator)
            assert irp is not None
            free_irp(irp)
        return per_op(t0, ops)

    pool = airp.IrpPool(me, target)

    async def pooled() -> float:
        t0 = time.perf_counter()
        for _ in range(ops):
            irp = pool.get()
            assert irp is not None
            pool.put(irp)
        return per_op(t0, ops)

    return {"MiniIrp": mini, "Irp()": bare, "fresh": fresh, "lookaside": lookaside, "pool": pooled}


def memory_growth(runner: Runner) -> int:
    """Bytes still allocated after *runner* finished (and garbage was collected)."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]

    async def once() -> float:
        return await runner()

    asyncio.run(once())
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return after - before


def check(stack: int) -> None:
    """Fail loudly if the workload does not do what it claims."""
    async def each() -> None:
        for run in send_runners(stack, 10).values():
            await run()

    asyncio.run(each())


def run(rounds: int = 5, best_of: int = 2, ops: int = 100_000, stack: int = 1) -> list[Ratio]:
    check(stack)
    results = asyncio.run(interleaved(send_runners(stack, ops), rounds, best_of))
    rows = [
        ratio("pool      / fresh", results, "pool", "fresh", REUSE_GOAL, note="goal: reuse at least 30% cheaper per IRP"),
        ratio("lookaside / fresh", results, "lookaside", "fresh"),
        ratio("pool      / lookaside", results, "pool", "lookaside"),
    ]
    print_ratios(f"(1) a driver sending {ops} IRPs of its own (stack_size {stack}), per IRP", rows)

    results = asyncio.run(interleaved(lifecycle_runners(stack, ops), rounds, best_of))
    lifecycle = [
        ratio("Irp(n)              / MiniIrp(n)", results, "Irp()", "MiniIrp"),
        ratio("allocate+free       / MiniIrp(n)", results, "fresh", "MiniIrp"),
        ratio("lookaside alloc+free / MiniIrp(n)", results, "lookaside", "MiniIrp"),
        ratio("pool get+put        / MiniIrp(n)", results, "pool", "MiniIrp"),
        ratio("pool get+put        / allocate+free", results, "pool", "fresh"),
    ]
    print_ratios(f"(2) allocation alone, stack_size {stack}, against the baseline's minimal IRP", lifecycle)

    print(f"\n== (3) memory still allocated after the run (tracemalloc), stack_size {stack}")
    for count in (1_000, 100_000):
        for name in ("pool", "fresh"):
            growth = memory_growth(send_runners(stack, count)[name])
            print(f"  {name:<5} {count:>7} IRPs: {growth:>8} bytes ({growth / count:.3f} bytes per IRP)")
    return rows + lifecycle


def main() -> None:
    parser = arg_parser(__doc__.splitlines()[0], rounds=5, best_of=2, ops=100_000)
    parser.add_argument("--stack", type=int, default=1, help="stack_size of the target (default 1: the small list)")
    args = parser.parse_args()
    header()
    run(args.rounds, args.best_of, args.ops, args.stack)


if __name__ == "__main__":
    main()
