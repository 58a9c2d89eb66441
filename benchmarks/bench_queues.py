"""Queues: a sequential queue against an anyio memory-object stream, and parallel lanes on a virtual clock.

(1) 100 000 IRPs go through ``call_driver`` to a device whose dispatch routine queues them; one
    consumer completes each.  Three ways to queue, the same work otherwise:

    - ``stream``: the dispatch routine marks the IRP pending and ``send_nowait``s it into an
      ``anyio.create_memory_object_stream``; a consumer task ``async for``s over the receive side
      and completes each IRP (the hand-written baseline);
    - ``ioqueue``: a sequential :class:`airp.IoQueue`; its handler calls ``request.complete``;
    - ``startio``: a :class:`airp.StartIoQueue` (custom StartIo lane); its routine completes the IRP.

    Reported: airp / stream per IRP, median over rounds (goal <= 1.5x), on asyncio and trio.

(2) A parallel :class:`airp.IoQueue` with a limit of 1, 4 and 64 requests, whose handler spends 10 ms
    of simulated device time per request, on the virtual clock of :mod:`airp.testing`.  Reported: the
    virtual time taken, the throughput in requests per virtual second, and the real time per request.

Run: python benchmarks/bench_queues.py [--rounds R] [--best-of K] [--ops N] [--lane-ops M]
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

import airp
from airp import STATUS_PENDING, STATUS_SUCCESS, DeviceObject, Irp, IrpMajor, call_driver, complete_request
from airp.testing import virtual_anyio_backend

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Ratio, arg_parser, bench_backends, header, interleaved, print_ratios, ratio

GOAL = 1.5
READ = int(IrpMajor.READ)


class _Driver(airp.Driver):
    """READ goes wherever ``device.extension`` (a plain function ``irp -> status``) sends it."""

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        return device.extension(irp)  # type: ignore[no-any-return]


async def _send_all(device: DeviceObject, ops: int) -> Irp:
    irp = None
    for _ in range(ops):
        irp = Irp(1)
        irp.stack_location(1).major = READ
        await call_driver(device, irp)
    assert irp is not None
    return irp


def stream_runner(ops: int) -> Callable[[], Awaitable[float]]:
    async def run() -> float:
        device = airp.IoManager().create_device(_Driver())
        send, receive = anyio.create_memory_object_stream[Irp](math.inf)

        def dispatch(irp: Irp) -> int:
            irp.mark_pending()
            send.send_nowait(irp)
            return STATUS_PENDING

        async def consumer() -> None:
            async with receive:
                async for irp in receive:
                    complete_request(irp, STATUS_SUCCESS, 0)

        device.extension = dispatch
        async with anyio.create_task_group() as tg:
            tg.start_soon(consumer)
            start = time.perf_counter()
            last = await _send_all(device, ops)
            await last
            elapsed = time.perf_counter() - start
            send.close()
        return elapsed / ops * 1e6

    run.__name__ = "stream"
    return run


def ioqueue_runner(ops: int) -> Callable[[], Awaitable[float]]:
    async def handler(queue: airp.IoQueue, request: airp.Request) -> None:
        request.complete(STATUS_SUCCESS, 0)

    async def run() -> float:
        device = airp.IoManager().create_device(_Driver())
        queue = airp.IoQueue(device, handler)
        device.extension = queue.insert
        async with airp.run_device(device):
            start = time.perf_counter()
            last = await _send_all(device, ops)
            await last
            elapsed = time.perf_counter() - start
        return elapsed / ops * 1e6

    run.__name__ = "ioqueue"
    return run


def startio_runner(ops: int) -> Callable[[], Awaitable[float]]:
    async def routine(device: DeviceObject, irp: Irp) -> None:
        complete_request(irp, STATUS_SUCCESS, 0)

    async def run() -> float:
        device = airp.IoManager().create_device(_Driver())
        lane = airp.StartIoQueue(device, "lane", routine)
        device.extension = lane.start_packet
        async with airp.run_device(device):
            start = time.perf_counter()
            last = await _send_all(device, ops)
            await last
            elapsed = time.perf_counter() - start
        return elapsed / ops * 1e6

    run.__name__ = "startio"
    return run


def run_sequential(rounds: int, best_of: int, ops: int) -> list[Ratio]:
    rows: list[Ratio] = []
    for backend in bench_backends():
        contenders = {"stream": stream_runner(ops), "ioqueue": ioqueue_runner(ops), "startio": startio_runner(ops)}
        results: dict[str, list[float]] = anyio.run(interleaved, contenders, rounds, best_of, backend=backend)
        backend_rows = [
            ratio(f"[{backend}] sequential IoQueue / memory stream", results, "ioqueue", "stream", GOAL),
            ratio(f"[{backend}] StartIoQueue lane  / memory stream", results, "startio", "stream", GOAL),
        ]
        print_ratios(f"(1) {ops} IRPs through one serial consumer, {backend}", backend_rows)
        rows.extend(backend_rows)
    return rows


# -- parallel lanes on the virtual clock ----------------------------------------------------------

LATENCY = 0.010


async def _parallel(lanes: int, ops: int) -> tuple[float, float, int]:
    async def handler(queue: airp.IoQueue, request: airp.Request) -> None:
        await anyio.sleep(LATENCY)
        request.complete(STATUS_SUCCESS, 0)

    device = airp.IoManager().create_device(_Driver())
    queue = airp.IoQueue(device, handler, dispatch=airp.DispatchType.PARALLEL, limit=lanes)
    device.extension = queue.insert
    async with airp.run_device(device) as tasks:
        wall = time.perf_counter()
        virtual = anyio.current_time()
        last = await _send_all(device, ops)
        await last
        virtual = anyio.current_time() - virtual
        wall = time.perf_counter() - wall
        workers = tasks.workers
    return virtual, wall, workers


def run_parallel(ops: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    print(f"\n== (2) parallel IoQueue, {ops} requests of {LATENCY * 1000:g} ms simulated latency, virtual clock")
    print(f"  {'backend':<8} {'lanes':>5} {'virtual s':>10} {'ideal s':>8} {'req/virtual s':>14} {'real us/req':>12} {'workers':>8}")
    for backend in bench_backends():
        for lanes in (1, 4, 64):
            name, options = virtual_anyio_backend(backend)
            virtual, wall, workers = anyio.run(_parallel, lanes, ops, backend=name, backend_options=options)
            ideal = math.ceil(ops / lanes) * LATENCY
            row = {
                "backend": backend,
                "lanes": lanes,
                "virtual_s": virtual,
                "ideal_s": ideal,
                "throughput": ops / virtual,
                "real_us": wall / ops * 1e6,
                "workers": workers,
            }
            rows.append(row)
            print(
                f"  {backend:<8} {lanes:>5} {virtual:>10.3f} {ideal:>8.3f} {ops / virtual:>14.1f}"
                f" {wall / ops * 1e6:>12.2f} {workers:>8}"
            )
    return rows


def main() -> None:
    parser = arg_parser(__doc__.splitlines()[0], rounds=5, best_of=3, ops=100_000)
    parser.add_argument("--lane-ops", type=int, default=2_000, help="requests for the parallel figures (default 2000)")
    args = parser.parse_args()
    header()
    run_sequential(args.rounds, args.best_of, args.ops)
    run_parallel(args.lane_ops)


if __name__ == "__main__":
    main()
