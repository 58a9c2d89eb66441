"""Device lifecycle (issue 12): a remove lock held around every request, and a removal's cost.

(1) Remove lock around a request: figure (a)'s synchronous 4-layer path (``_common.make_sync_stack``:
    three filters with completion routines over a function driver that completes at once), with
    the function driver's READ routine replaced by the documented dispatch pattern::

        status = lock.acquire(irp)
        if status != STATUS_SUCCESS: complete_request(irp, status, 0); return status
        try: complete_request(irp, STATUS_SUCCESS, 1); return STATUS_SUCCESS
        finally: lock.release(irp)

    against the unchanged stack.  Reported for a tracking lock (the default: tag -> count kept
    and checked), for ``call_driver`` alone and followed by ``await irp``, and for an untracked
    lock (``call_driver`` alone).
    Goal: **<= 1.10x** ("a remove lock held around a request costs at most 10% of the synchronous
    4-layer path").  A check row runs the same replacement routine without the lock against the
    unchanged stack (it should be ~1: the replacement itself costs nothing).

(2) Removal of 100,000 queued requests: a device with a :class:`airp.StartIoQueue` whose routine
    is blocked on the first IRP (it waits with ``wait_or_cancelled``), 100,000 more IRPs queued
    behind it (sent with ``call_driver`` to a one-device stack; the stock cancel routine armed on
    each), then ``airp.device_tasks(device).remove()``, which completes every queued IRP with
    STATUS_NO_SUCH_DEVICE.  Against the same device and queue drained by hand: take each IRP from
    the queue (``DeviceQueue.remove``), disarm its cancel routine, ``complete_request`` it with
    STATUS_NO_SUCH_DEVICE.  Only the removal (or the drain) is timed, after ``gc.collect()`` and
    ``gc.freeze()`` (so that a full collection landing in one side does not walk the 100,000
    IRPs); building and queueing the IRPs is not.  Goal: **<= 2x**, per IRP, on asyncio (the removal is
    synchronous: no backend code runs in the timed part).  For information, the same count of
    fresh IRPs held pending at the same depth and completed by ``complete_request``.

Run: python benchmarks/bench_lifecycle.py [--rounds R] [--best-of K] [--ops N] [--count C] [--removal-rounds M]
     [--quick] [--only lock|removal]
"""

from __future__ import annotations

import asyncio
import gc
import math
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

import airp
from airp import (
    STATUS_CANCELLED,
    STATUS_NO_SUCH_DEVICE,
    STATUS_PENDING,
    STATUS_SUCCESS,
    DeviceObject,
    Irp,
    IrpMajor,
    RemoveLock,
    StartIoQueue,
    complete_request,
)

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
    sync_runner,
)

LOCK_GOAL = 1.10
REMOVAL_GOAL = 2.0
READ = int(IrpMajor.READ)

# -- (1) a remove lock around a request --------------------------------------------------------------


def locked_stack(lock: RemoveLock | None) -> SyncStack:
    """Figure (a)'s stack with the function driver's READ routine replaced.

    With *lock*, the replacement holds it around the request (the documented dispatch pattern);
    with ``None``, it is the same routine without the lock, for the check row.
    """
    stack = make_sync_stack()
    bottom = stack.devices[0]
    complete = stack.complete_request

    if lock is None:

        async def read(device: DeviceObject, irp: Irp) -> int:
            complete(irp, STATUS_SUCCESS, 1)
            return STATUS_SUCCESS

    else:

        async def read(device: DeviceObject, irp: Irp) -> int:
            status = lock.acquire(irp)
            if status != STATUS_SUCCESS:
                complete(irp, status, 0)
                return status
            try:
                complete(irp, STATUS_SUCCESS, 1)
                return STATUS_SUCCESS
            finally:
                lock.release(irp)

    bottom.driver.major_function[READ] = read
    check_sync_stack(stack)
    if lock is not None:
        # The check's request went through the lock: acquired once, released, nothing held.
        stats = lock.statistics()
        assert stats.acquired == 1, stats
        assert stats.count == 1, stats
        assert not stats.holders, stats
    return stack


def run_lock(rounds: int, best_of: int, ops: int) -> list[Ratio]:
    plain = make_sync_stack()
    check_sync_stack(plain)
    tracked = locked_stack(RemoveLock("bench"))
    untracked = locked_stack(RemoveLock("bench", tracking=False))
    replaced = locked_stack(None)
    contenders: dict[str, Callable[[], Awaitable[float]]] = {
        "plain": sync_runner(plain, ops, await_irp=False),
        "tracked": sync_runner(tracked, ops, await_irp=False),
        "untracked": sync_runner(untracked, ops, await_irp=False),
        "replaced": sync_runner(replaced, ops, await_irp=False),
        "plain+await": sync_runner(plain, ops, await_irp=True),
        "tracked+await": sync_runner(tracked, ops, await_irp=True),
    }
    results = asyncio.run(interleaved(contenders, rounds, best_of))
    rows = [
        ratio("tracking lock  / plain (call_driver)", results, "tracked", "plain", LOCK_GOAL),
        ratio("tracking lock  / plain (+await irp)", results, "tracked+await", "plain+await", LOCK_GOAL),
        ratio("untracked lock / plain (call_driver)", results, "untracked", "plain", LOCK_GOAL),
        ratio("tracking lock  / the routine replaced, no lock", results, "tracked", "replaced", note="the lock's cost alone"),
        ratio("check: routine replaced, no lock / plain", results, "replaced", "plain", note="the replacement itself: ~1"),
    ]
    print_ratios("(1) remove lock around a request (synchronous 4-layer path, lock taken at the bottom)", rows)
    return rows


# -- (2) removal of queued requests --------------------------------------------------------------------


class _Blocked(airp.Driver):
    """READ goes to a StartIo lane whose routine holds its IRP until the IRP is cancelled."""

    def __init__(self) -> None:
        super().__init__("blocked")
        self.started = 0

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        return device.extension.start_packet(irp)  # type: ignore[no-any-return]

    async def routine(self, device: DeviceObject, irp: Irp) -> None:
        self.started += 1
        cancelled = await airp.wait_or_cancelled(irp, math.inf)
        complete_request(irp, STATUS_CANCELLED if cancelled else STATUS_SUCCESS, 0)


async def _queued_device(count: int, drain: Callable[[DeviceObject, airp.DeviceTasks], None]) -> tuple[float, list[Irp]]:
    """Seconds *drain* took to finish *count* queued IRPs, and the IRPs (checked by the caller)."""
    driver = _Blocked()
    io = airp.IoManager()
    device = io.create_device(driver)
    lane = StartIoQueue(device, "io", driver.routine)
    device.extension = lane
    irps: list[Irp] = []
    async with airp.run_device(device) as tasks:
        first = Irp(1)
        first.stack_location(1).major = READ
        assert await airp.call_driver(device, first) == STATUS_PENDING
        while not driver.started:
            await anyio.lowlevel.checkpoint()
        for _ in range(count):
            irp = Irp(1)
            irp.stack_location(1).major = READ
            await airp.call_driver(device, irp)
            irps.append(irp)
        assert len(lane.queue) == count, len(lane.queue)
        elapsed = _timed(drain, device, tasks)
    assert first.completed
    assert first.status == STATUS_CANCELLED
    return elapsed, irps


def _timed(fn: Callable[..., None], *args: Any) -> float:
    """Seconds ``fn(*args)`` took, with the collector's heap frozen first.

    The 100,000 IRPs built just before would otherwise make whichever side a full collection
    happens to land in pay for walking them all; frozen, a collection during the timed part only
    walks what that part allocated.
    """
    gc.collect()
    gc.freeze()
    try:
        t0 = time.perf_counter()
        fn(*args)
        return time.perf_counter() - t0
    finally:
        gc.unfreeze()


def _complete_all(irps: list[Irp]) -> None:
    for irp in irps:
        complete_request(irp, STATUS_NO_SUCH_DEVICE, 0)


def _remove(device: DeviceObject, tasks: airp.DeviceTasks) -> None:
    tasks.remove()


def _drain_by_hand(device: DeviceObject, tasks: airp.DeviceTasks) -> None:
    queue = device.extension.queue
    remove = queue.remove
    while True:
        irp = remove()
        if irp is None:
            break
        irp.cancel_routine = None
        complete_request(irp, STATUS_NO_SUCH_DEVICE, 0)


def _check(irps: list[Irp]) -> None:
    bad = [irp for irp in irps if not irp.completed or irp.status != STATUS_NO_SUCH_DEVICE]
    assert not bad, f"{len(bad)} IRPs not completed with STATUS_NO_SUCH_DEVICE, e.g. {bad[0]!r}"


def removal_runner(count: int, drain: Callable[[DeviceObject, airp.DeviceTasks], None]) -> Callable[[], Awaitable[float]]:
    async def run() -> float:
        elapsed, irps = await _queued_device(count, drain)
        _check(irps)
        return elapsed / count * 1e6

    run.__name__ = drain.__name__
    return run


def fresh_runner(count: int) -> Callable[[], Awaitable[float]]:
    """*count* fresh IRPs held pending at the bottom of a one-device stack, then completed."""

    class Holding(airp.Driver):
        @airp.dispatch(IrpMajor.READ)
        async def read(self, device: DeviceObject, irp: Irp) -> int:
            irp.mark_pending()
            return STATUS_PENDING

    io = airp.IoManager()
    device = io.create_device(Holding())

    async def run() -> float:
        irps = []
        for _ in range(count):
            irp = Irp(1)
            irp.stack_location(1).major = READ
            await airp.call_driver(device, irp)
            irps.append(irp)
        elapsed = _timed(_complete_all, irps)
        _check(irps)
        return elapsed / count * 1e6

    return run


def run_removal(rounds: int, count: int) -> list[Ratio]:
    contenders = {
        "remove": removal_runner(count, _remove),
        "by hand": removal_runner(count, _drain_by_hand),
        "fresh": fresh_runner(count),
    }

    async def main() -> dict[str, list[float]]:
        return await interleaved(contenders, rounds, 1)

    results = anyio.run(main, backend="asyncio")
    rows = [
        ratio(f"device_tasks(device).remove() / drain by hand   ({count:,} queued)", results, "remove", "by hand", REMOVAL_GOAL),
        ratio(f"device_tasks(device).remove() / fresh completes ({count:,} pending)", results, "remove", "fresh"),
    ]
    print_ratios(f"(2) removal of {count:,} queued requests (StartIo lane blocked on the first; per IRP)", rows)
    return rows


def main() -> None:
    parser = arg_parser(__doc__.splitlines()[0], rounds=15, best_of=5, ops=5_000)
    parser.add_argument("--count", type=int, default=100_000, help="queued IRPs removed in (2) (default 100000)")
    parser.add_argument("--removal-rounds", type=int, default=5, help="rounds of (2), each builds the queue anew (default 5)")
    parser.add_argument("--quick", action="store_true", help="fewer rounds (noisier), about a third of the time")
    parser.add_argument("--only", choices=("lock", "removal"), help="run one of the two figures")
    args = parser.parse_args()
    rounds, removal_rounds = (5, 2) if args.quick else (args.rounds, args.removal_rounds)
    header()
    if args.only != "removal":
        run_lock(rounds, args.best_of, args.ops)
    if args.only != "lock":
        run_removal(removal_rounds, args.count)


if __name__ == "__main__":
    main()
