"""An M/M/1 disk on virtual time: airp, plain anyio and SimPy on the same pre-drawn times.

The model users build to study an I/O pipeline (issue 11): requests arrive by a Poisson process at
rate 0.8, one server (a StartIo lane) serves them in order with exponential service times at rate
1.0.  The same pre-drawn inter-arrival and service times drive:

* **SimPy** (``Resource(capacity=1)``), the discrete-event simulator users would otherwise pick;
* **plain anyio**: an arrival task sending into a memory object stream, a server task sleeping
  each service time, on airp's virtual clocks (``airp.testing``);
* **airp**: a driver whose READ dispatch starts the packet on a ``StartIoQueue`` lane whose routine
  sleeps the service time and completes the IRP; the arrival task sends overlapped reads through a
  ``FileHandle`` and one collector task awaits them.

It checks that all of them give the same time in system for every request, to the last bit, and
that the mean is near the theory (1 / (mu - lambda) = 5.0), then prints the wall time per request
and the ratios to SimPy.  SimPy is a benchmark-only dependency: ``pip install -e '.[bench]'``.

``--million`` runs the airp model alone with a million requests on both backends (or ``--requests``
N), keeping nothing per request, and prints seconds, µs per request and the memory traced at 10%
and at 100% of the arrivals.

Run: python benchmarks/bench_mm1.py [--requests N] [--rounds R] [--million]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import anyio

import airp
from airp import STATUS_SUCCESS, DeviceObject, Irp, IrpMajor, complete_request
from airp.testing import virtual_anyio_backend

ARRIVAL_RATE = 0.8
SERVICE_RATE = 1.0
THEORY = 1 / (SERVICE_RATE - ARRIVAL_RATE)


def draw(count: int, seed: int = 20261202) -> tuple[list[float], list[float]]:
    """Pre-drawn inter-arrival and service times."""
    rng = random.Random(seed)
    return [rng.expovariate(ARRIVAL_RATE) for _ in range(count)], [rng.expovariate(SERVICE_RATE) for _ in range(count)]


# -- SimPy -------------------------------------------------------------------------------------------


def run_simpy(gaps: list[float], services: list[float]) -> list[float]:
    import simpy

    env = simpy.Environment()
    disk = simpy.Resource(env, capacity=1)
    times = [0.0] * len(gaps)

    def customer(i: int) -> Any:
        arrived = env.now
        with disk.request() as turn:
            yield turn
            yield env.timeout(services[i])
        times[i] = env.now - arrived

    def arrivals() -> Any:
        for i, gap in enumerate(gaps):
            yield env.timeout(gap)
            env.process(customer(i))

    env.process(arrivals())
    env.run()
    return times


# -- plain anyio ---------------------------------------------------------------------------------------


async def plain_anyio(gaps: list[float], services: list[float]) -> list[float]:
    times = [0.0] * len(gaps)
    send, receive = anyio.create_memory_object_stream[tuple[int, float]](math.inf)

    async def server() -> None:
        async with receive:
            async for i, arrived in receive:
                await anyio.sleep(services[i])
                times[i] = anyio.current_time() - arrived

    async with anyio.create_task_group() as tg:
        tg.start_soon(server)
        async with send:
            for i, gap in enumerate(gaps):
                await anyio.sleep(gap)
                send.send_nowait((i, anyio.current_time()))
    return times


# -- airp ------------------------------------------------------------------------------------------------


class Disk(airp.Driver):
    """One StartIo lane; the service time of request *i* is ``services[i]`` (offset = i)."""

    def __init__(self, services: list[float]) -> None:
        super().__init__("mm1-disk")
        self.services = services
        self.lane: airp.StartIoQueue | None = None

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLOSE, IrpMajor.CLEANUP)
    async def open_close(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        assert self.lane is not None
        return self.lane.start_packet(irp)

    async def serve(self, device: DeviceObject, irp: Irp) -> None:
        await anyio.sleep(self.services[irp.current_stack_location.parameters.byte_offset])
        complete_request(irp, STATUS_SUCCESS, 0)


async def with_airp(gaps: list[float], services: list[float]) -> list[float]:
    times = [0.0] * len(gaps)
    io = airp.IoManager()
    disk = Disk(services)
    device = io.create_device(disk, "\\Device\\Disk")
    disk.lane = airp.StartIoQueue(device, "disk", disk.serve)
    send, receive = anyio.create_memory_object_stream[tuple[int, float, airp.Overlapped[bytes]]](math.inf)

    async def collector() -> None:
        async with receive:
            async for i, arrived, request in receive:
                await request
                times[i] = anyio.current_time() - arrived

    async with airp.run_device(device), io.open("\\Device\\Disk") as handle, anyio.create_task_group() as tg:
        tg.start_soon(collector)
        async with send:
            for i, gap in enumerate(gaps):
                await anyio.sleep(gap)
                send.send_nowait((i, anyio.current_time(), await handle.read_overlapped(0, offset=i)))
    return times


# -- a million requests, memory flat -------------------------------------------------------------------


class _Draws:
    """Service times drawn when the lane asks for them: requests are served in arrival order."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def __getitem__(self, index: int) -> float:
        return self.rng.expovariate(SERVICE_RATE)


async def airp_streaming(count: int, seed: int) -> tuple[float, int, int]:
    """The airp model with nothing kept per request: (mean time in system, bytes at 10%, at 100%)."""
    import tracemalloc

    arrivals = random.Random(seed)
    io = airp.IoManager()
    disk = Disk(_Draws(random.Random(seed + 1)))  # type: ignore[arg-type]
    device = io.create_device(disk, "\\Device\\Disk")
    disk.lane = airp.StartIoQueue(device, "disk", disk.serve)
    send, receive = anyio.create_memory_object_stream[tuple[float, airp.Overlapped[bytes]]](math.inf)
    total = 0.0
    marks: list[int] = []

    async def collector() -> None:
        nonlocal total
        async with receive:
            async for arrived, request in receive:
                await request
                total += anyio.current_time() - arrived

    async with airp.run_device(device), io.open("\\Device\\Disk") as handle, anyio.create_task_group() as tg:
        tg.start_soon(collector)
        async with send:
            for i in range(count):
                await anyio.sleep(arrivals.expovariate(ARRIVAL_RATE))
                send.send_nowait((anyio.current_time(), await handle.read_overlapped(0, offset=i)))
                if i + 1 in (count // 10, count):
                    marks.append(tracemalloc.get_traced_memory()[0])
    return total / count, marks[0], marks[1]


def million(count: int) -> None:
    import tracemalloc

    print(f"M/M/1 in airp, {count} requests, tracemalloc on (it slows the run about 2x):")
    for backend in ("asyncio", "trio"):
        name, options = virtual_anyio_backend(backend)
        tracemalloc.start()
        start = time.perf_counter()
        mean, at_tenth, at_end = anyio.run(airp_streaming, count, 7, backend=name, backend_options=options)
        seconds = time.perf_counter() - start
        tracemalloc.stop()
        print(
            f"  {backend:<8} {seconds:7.1f} s  {seconds / count * 1e6:6.1f} us/request  mean time in system"
            f" {mean:.3f}  traced memory at 10%: {at_tenth / 1024:.0f} KiB, at 100%: {at_end / 1024:.0f} KiB"
        )


# -- measuring ----------------------------------------------------------------------------------------------


def timed(fn: Callable[[], list[float]]) -> tuple[float, list[float]]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def on_clock(model: Any, backend: str, gaps: list[float], services: list[float]) -> Callable[[], list[float]]:
    def run() -> list[float]:
        name, options = virtual_anyio_backend(backend)
        result: list[float] = anyio.run(model, gaps, services, backend=name, backend_options=options)
        return result

    return run


CONTENDERS = {
    "simpy": None,
    "anyio/asyncio": (plain_anyio, "asyncio"),
    "airp/asyncio": (with_airp, "asyncio"),
    "anyio/trio": (plain_anyio, "trio"),
    "airp/trio": (with_airp, "trio"),
}

GOALS = {"airp/asyncio": 3.0, "airp/trio": 5.0, "anyio/asyncio": 2.5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=None, help="default 20000, or 10**6 with --million")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each contender; the best is kept")
    parser.add_argument("--million", action="store_true", help="run the airp model with 10**6 requests and watch memory")
    args = parser.parse_args()
    if args.million:
        million(args.requests or 1_000_000)
        return
    args.requests = args.requests or 20_000
    try:
        import simpy  # noqa: F401
    except ImportError:
        sys.exit("bench_mm1 needs SimPy: pip install -e '.[bench]'")
    gaps, services = draw(args.requests)
    best: dict[str, float] = {}
    results: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for name, spec in CONTENDERS.items():
            fn = (lambda: run_simpy(gaps, services)) if spec is None else on_clock(spec[0], spec[1], gaps, services)
            seconds, times = timed(fn)
            best[name] = min(best.get(name, math.inf), seconds)
            results[name] = times
    reference = results["simpy"]
    for name, times in results.items():
        if times != reference:
            wrong = sum(1 for a, b in zip(times, reference, strict=True) if a != b)
            sys.exit(f"{name}: {wrong} of {len(times)} times in system differ from SimPy's")
    mean = statistics.fmean(reference)
    # The batch-means standard error: time-in-system samples are strongly correlated.
    batches = [statistics.fmean(reference[k : k + 1000]) for k in range(0, len(reference) - 999, 1000)]
    error = statistics.stdev(batches) / math.sqrt(len(batches)) if len(batches) > 1 else math.inf
    print(f"M/M/1, {args.requests} requests, lambda={ARRIVAL_RATE}, mu={SERVICE_RATE}: all models agree exactly")
    print(f"  mean time in system {mean:.3f} (theory {THEORY:.1f}, batch-means 95% interval +-{1.96 * error:.3f})")
    simpy_us = best["simpy"] / args.requests * 1e6
    for name in CONTENDERS:
        us = best[name] / args.requests * 1e6
        goal = GOALS.get(name)
        verdict = "" if goal is None else f"goal <= {goal:g}x  {'MET' if us / simpy_us <= goal else 'NOT MET'}"
        print(f"  {name:<14} {us:8.1f} us/request  {us / simpy_us:6.2f}x SimPy  {verdict}")
    for backend in ("asyncio", "trio"):
        overhead = best[f"airp/{backend}"] / best[f"anyio/{backend}"]
        print(f"  airp over plain anyio on {backend}: {overhead:.2f}x  goal <= 1.3x  {'MET' if overhead <= 1.3 else 'NOT MET'}")


if __name__ == "__main__":
    main()
