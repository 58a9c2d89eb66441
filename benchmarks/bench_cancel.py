"""Cancelling 100 000 queued IRPs at once, against completing them normally; memory afterwards.

A driver holds N reads of one handle in an ``airp.IrpQueue`` (the requester issued them with
``read_overlapped`` and is not waiting).  Then, timed, one of:

- ``complete``: the driver completes every held read with data (``remove_next`` + ``complete_request``);
- ``close``: the requester closes the handle: IRP_MJ_CLEANUP drains the queue, every read completes
  as cancelled, and ``close`` checks nothing of the handle is left (issue #4's main case);
- ``cancel_irp``: every read is cancelled one by one with ``cancel_irp`` (the queue's cancel routine
  unlinks and completes it), as requesters giving up would;
- ``task_io``: the requester's ``airp.task_io()`` block exits with all N outstanding
  (``IoCancelThreadIo``: cancel each, then wait for all).

Figures: time per IRP of each, and its ratio to ``complete`` (median over rounds, A/B alternating,
one process, best of K runs per round; the cyclic GC is collected before and paused during each timed phase, so that a
collection of the 100 000 live requests does not land on one side at random).  Memory: traced allocations (tracemalloc) before the driver and handle exist and after
everything is closed and dropped must be back to the start; the peak per held IRP is printed too.

Run: python benchmarks/bench_cancel.py [--rounds R] [--best-of K] [--ops N]
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Ratio, arg_parser, bench_backends, header, print_ratios

import airp
from airp import STATUS_SUCCESS, DeviceObject, Irp, IrpMajor, complete_request

NAME = "\\Device\\Held"


class Held(airp.Driver):
    """Holds every read; drains the closing handle's reads in CLEANUP."""

    def __init__(self) -> None:
        super().__init__("held")
        self.queue = airp.IrpQueue()

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLOSE)
    async def create_close(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.CLEANUP)
    async def cleanup(self, device: DeviceObject, irp: Irp) -> int:
        self.queue.complete_all(irp.current_stack_location.file_object)
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        return self.queue.insert(irp)


async def _setup(n: int) -> tuple[airp.IoManager, Held, airp.FileHandle, list[airp.Overlapped[bytes]]]:
    io = airp.IoManager()
    driver = Held()
    io.create_device(driver, NAME)
    handle = await io.open(NAME)
    requests = [await handle.read_overlapped(1) for _ in range(n)]
    assert len(driver.queue) == n
    return io, driver, handle, requests


def _check(requests: list[airp.Overlapped[bytes]], status: int) -> None:
    assert all(r.irp.completed and r.irp.status == status for r in requests)


async def complete_all(n: int) -> float:
    _io, driver, handle, requests = await _setup(n)
    queue = driver.queue
    with _NoGc():
        start = time.perf_counter()
        while (irp := queue.remove_next()) is not None:
            complete_request(irp, STATUS_SUCCESS, 0)
        elapsed = time.perf_counter() - start
    _check(requests, STATUS_SUCCESS)
    await handle.close()
    return elapsed / n * 1e6


async def close_handle(n: int) -> float:
    _io, _driver, handle, requests = await _setup(n)
    with _NoGc():
        start = time.perf_counter()
        await handle.close()
        elapsed = time.perf_counter() - start
    _check(requests, airp.STATUS_CANCELLED)
    return elapsed / n * 1e6


async def cancel_each(n: int) -> float:
    _io, _driver, handle, requests = await _setup(n)
    with _NoGc():
        start = time.perf_counter()
        for request in requests:
            airp.cancel_irp(request.irp)
        elapsed = time.perf_counter() - start
    _check(requests, airp.STATUS_CANCELLED)
    await handle.close()
    return elapsed / n * 1e6


async def task_io_exit(n: int) -> float:
    io = airp.IoManager()
    driver = Held()
    io.create_device(driver, NAME)
    handle = await io.open(NAME)
    requests: list[airp.Overlapped[bytes]] = []
    block = airp.task_io()
    await block.__aenter__()
    for _ in range(n):
        requests.append(await handle.read_overlapped(1))
    with _NoGc():
        start = time.perf_counter()
        await block.__aexit__(None, None, None)
        elapsed = time.perf_counter() - start
    _check(requests, airp.STATUS_CANCELLED)
    await handle.close()
    return elapsed / n * 1e6


WORKLOADS: dict[str, Callable[[int], Awaitable[float]]] = {
    "complete": complete_all,
    "close": close_handle,
    "cancel_irp": cancel_each,
    "task_io": task_io_exit,
}


class _NoGc:
    """Collect, then pause the cyclic GC for the timed phase."""

    def __enter__(self) -> None:
        gc.collect()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        gc.enable()


async def timed(rounds: int, best_of: int, n: int) -> dict[str, list[float]]:
    names = list(WORKLOADS)
    results: dict[str, list[float]] = {name: [] for name in names}
    for name in names:  # warm-up
        await WORKLOADS[name](min(n, 2_000))
    for r in range(rounds):
        best = dict.fromkeys(names, float("inf"))
        for _ in range(best_of):
            for name in names if r % 2 == 0 else names[::-1]:
                best[name] = min(best[name], await WORKLOADS[name](n))
        for name in names:
            results[name].append(best[name])
    return results


async def memory(n: int) -> tuple[int, int, int]:
    """(bytes left over after the close, peak bytes while N reads were held, N)."""
    gc.collect()
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        io, driver, handle, requests = await _setup(n)
        held = tracemalloc.get_traced_memory()[0]
        await handle.close()
        _check(requests, airp.STATUS_CANCELLED)
        del io, driver, handle, requests
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return after - before, held - before, n


def run(rounds: int = 5, best_of: int = 2, n: int = 100_000) -> list[Ratio]:
    rows: list[Ratio] = []
    for backend in bench_backends():
        from airp.testing import virtual_anyio_backend

        name, options = virtual_anyio_backend(backend)
        results = anyio.run(timed, rounds, best_of, n, backend=name, backend_options=options)
        for workload in ("close", "cancel_irp", "task_io"):
            pairs = [a / b for a, b in zip(results[workload], results["complete"], strict=True)]
            rows.append(
                Ratio(
                    f"{backend}: {workload:<10} / complete",
                    workload,
                    "complete",
                    pairs,
                    statistics.median(results[workload]),
                    statistics.median(results["complete"]),
                    note="",
                )
            )
        left, held, count = anyio.run(memory, n, backend=name, backend_options=virtual_anyio_backend(backend)[1])
        print(
            f"{backend}: memory with {count} reads held: {held / count:.0f} B per IRP (request, IRP, queue link,"
            f" tracking); after close and release: {left:+d} B ({'back to baseline' if abs(left) < 64 * 1024 else 'NOT back'})"
        )
    print_ratios(f"cancelling {n} queued IRPs vs completing them (time per IRP; lower is better)", rows)
    return rows


def main() -> None:
    args = arg_parser(__doc__.splitlines()[0], rounds=5, best_of=2, ops=100_000).parse_args()
    header()
    run(args.rounds, args.best_of, args.ops)


if __name__ == "__main__":
    main()
