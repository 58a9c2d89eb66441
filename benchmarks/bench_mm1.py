"""An M/M/1 disk on virtual time: SimPy, plain anyio and airp on the same pre-drawn times, in CPU time.

The model users build to study an I/O pipeline: requests arrive by a Poisson
process at rate 0.8, one server (a StartIo lane) serves them in order with exponential service
times at rate 1.0.  The same pre-drawn inter-arrival and service times drive every contender:

* ``simpy``: ``Resource(capacity=1)``, the discrete-event simulator users would otherwise pick;
* ``anyio-sleep/<backend>``: plain anyio, an arrival task sending into a memory object stream and
  a server task sleeping each service time with ``anyio.sleep``;
* ``anyio-delay/<backend>``: the same plain anyio model sleeping with ``airp.delay`` (the sleep the
  virtual clock owns: a task parked in the clock's own timer heap);
* ``airp-today/<backend>``: the model as users write it today: a driver whose READ dispatch starts
  the packet on a ``StartIoQueue`` lane whose routine sleeps the service time with ``anyio.sleep``
  and completes the IRP; the arrival task sends overlapped reads through a ``FileHandle`` and one
  collector task awaits them;
* ``airp-delay/<backend>``: airp with the new tools: the StartIo routine and the arrivals sleep
  with ``airp.delay``, and each overlapped read gets ``Overlapped.add_done_callback`` recording its
  time in system when it completes: no task per request and no collector task.

Each backend runs on a fresh airp virtual clock per run (``airp.testing.virtual_anyio_backend``).

What is measured: the CPU time (``time.process_time``) of one whole run (``anyio.run`` of the model,
with its fresh clock and event loop, or SimPy's ``Environment`` and ``env.run``), per request.  The
rounds are interleaved: each round runs every contender once, in turn (after a ``gc.collect()``
outside the timing), so a busy machine slows all of them alike; the figure is the MEDIAN over
rounds per contender (the min-max is printed next to it), and the ratio to SimPy is the ratio of
the medians.  An untimed warm-up round on the first 500 requests comes first.  Every run's times
in system, warm-up included, are checked against SimPy's to the last bit: the script exits non-zero
naming the contender if any differ.  It prints µs per request, the ratio, each goal
with MET or MISSED, and the mean time in system against the theory (1 / (mu - lambda) = 5.0).
``--contenders a,b,...`` runs a subset (SimPy always runs: it is the reference).

``--million`` runs both airp models (today's and the delay + callback one) in streaming form,
keeping nothing per request (service times drawn as the lane asks for them), with a million
requests (or ``--requests`` N) on both backends under tracemalloc, and prints wall seconds (slowed
by tracemalloc), µs per request, the mean time in system and the memory traced at 10% and at 100%
of the arrivals, each after a ``gc.collect()`` (it must stay flat; what differs is the requests in
flight at that moment).  Its means must all be equal to the last bit, or it exits non-zero.

SimPy is a benchmark-only dependency: ``pip install -e '.[bench]'``.

Run: python benchmarks/bench_mm1.py [--requests N] [--rounds R] [--contenders a,b,...] [--million]
"""

from __future__ import annotations

import argparse
import gc
import math
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import anyio

import airp
from airp import STATUS_SUCCESS, DeviceObject, Irp, IrpMajor, complete_request
from airp.testing import virtual_anyio_backend

ARRIVAL_RATE = 0.8
SERVICE_RATE = 1.0
THEORY = 1 / (SERVICE_RATE - ARRIVAL_RATE)

Sleep = Callable[[float], Awaitable[Any]]
Model = Callable[[list[float], list[float]], Awaitable[list[float]]]
Runner = Callable[[list[float], list[float]], list[float]]


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


async def plain_anyio(gaps: list[float], services: list[float], sleep: Sleep = anyio.sleep) -> list[float]:
    """Plain anyio: an arrival task and a server task joined by a memory object stream."""
    times = [0.0] * len(gaps)
    send, receive = anyio.create_memory_object_stream[tuple[int, float]](math.inf)

    async def server() -> None:
        async with receive:
            async for i, arrived in receive:
                await sleep(services[i])
                times[i] = anyio.current_time() - arrived

    async with anyio.create_task_group() as tg:
        tg.start_soon(server)
        async with send:
            for i, gap in enumerate(gaps):
                await sleep(gap)
                send.send_nowait((i, anyio.current_time()))
    return times


async def plain_delay(gaps: list[float], services: list[float]) -> list[float]:
    """:func:`plain_anyio` with every sleep an ``airp.delay``."""
    return await plain_anyio(gaps, services, airp.delay)


# -- airp as users write it today ----------------------------------------------------------------------


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


# -- airp with airp.delay and completion callbacks -----------------------------------------------------


class DelayDisk(Disk):
    """:class:`Disk` whose StartIo routine sleeps the service time with ``airp.delay``."""

    async def serve(self, device: DeviceObject, irp: Irp) -> None:
        await airp.delay(self.services[irp.current_stack_location.parameters.byte_offset])
        complete_request(irp, STATUS_SUCCESS, 0)


async def with_airp_delay(gaps: list[float], services: list[float]) -> list[float]:
    times = [0.0] * len(gaps)
    io = airp.IoManager()
    disk = DelayDisk(services)
    device = io.create_device(disk, "\\Device\\Disk")
    disk.lane = airp.StartIoQueue(device, "disk", disk.serve)
    now = anyio.current_time

    def record(i: int, arrived: float, request: airp.Overlapped[bytes]) -> None:
        times[i] = now() - arrived

    async with airp.run_device(device), io.open("\\Device\\Disk") as handle:
        request: airp.Overlapped[bytes] | None = None
        for i, gap in enumerate(gaps):
            await airp.delay(gap)
            arrived = now()
            request = await handle.read_overlapped(0, offset=i)
            request.add_done_callback(partial(record, i, arrived))
        # One lane serves in arrival order: once the last read is done, every read is (closing
        # the handle would cancel any still in flight).
        if request is not None:
            await request
    return times


# -- a million requests, memory flat -------------------------------------------------------------------


class _Draws:
    """Service times drawn when the lane asks for them: requests are served in arrival order."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def __getitem__(self, index: int) -> float:
        return self.rng.expovariate(SERVICE_RATE)


async def airp_streaming(count: int, seed: int) -> tuple[float, int, int]:
    """Today's airp model with nothing kept per request: (mean time in system, bytes at 10%, at 100%)."""
    import tracemalloc

    arrivals = random.Random(seed)
    io = airp.IoManager()
    disk = Disk(_Draws(random.Random(seed + 1)))  # type: ignore[arg-type]
    device = io.create_device(disk, "\\Device\\Disk")
    disk.lane = airp.StartIoQueue(device, "disk", disk.serve)
    send, receive = anyio.create_memory_object_stream[tuple[float, airp.Overlapped[bytes]]](math.inf)
    total = 0.0
    marks: list[int] = []
    marked = {max(1, count // 10), count}  # after these arrivals, the memory traced is read

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
                if i + 1 in marked:
                    gc.collect()  # what is alive, not the garbage cycles not yet collected
                    marks.append(tracemalloc.get_traced_memory()[0])
    return total / count, marks[0], marks[-1]


async def airp_delay_streaming(count: int, seed: int) -> tuple[float, int, int]:
    """The delay + callback airp model with nothing kept per request: as :func:`airp_streaming`."""
    import tracemalloc

    arrivals = random.Random(seed)
    io = airp.IoManager()
    disk = DelayDisk(_Draws(random.Random(seed + 1)))  # type: ignore[arg-type]
    device = io.create_device(disk, "\\Device\\Disk")
    disk.lane = airp.StartIoQueue(device, "disk", disk.serve)
    now = anyio.current_time
    total = 0.0
    marks: list[int] = []
    marked = {max(1, count // 10), count}  # after these arrivals, the memory traced is read

    def record(arrived: float, request: airp.Overlapped[bytes]) -> None:
        nonlocal total
        total += now() - arrived

    async with airp.run_device(device), io.open("\\Device\\Disk") as handle:
        request: airp.Overlapped[bytes] | None = None
        for i in range(count):
            await airp.delay(arrivals.expovariate(ARRIVAL_RATE))
            arrived = now()
            request = await handle.read_overlapped(0, offset=i)
            request.add_done_callback(partial(record, arrived))
            if i + 1 in marked:
                gc.collect()  # what is alive, not the garbage cycles not yet collected
                marks.append(tracemalloc.get_traced_memory()[0])
        if request is not None:
            await request  # served in arrival order: the last one done means all done
    return total / count, marks[0], marks[-1]


def million(count: int) -> None:
    import tracemalloc

    models: list[tuple[str, Callable[[int, int], Awaitable[tuple[float, int, int]]]]] = [
        ("airp-today", airp_streaming),
        ("airp-delay", airp_delay_streaming),
    ]
    print(f"M/M/1 in airp, {count} requests, streaming (nothing kept per request), tracemalloc on (slows runs ~2x):")
    means: dict[str, float] = {}
    for label, model in models:
        for backend in ("asyncio", "trio"):
            name, options = virtual_anyio_backend(backend)
            gc.collect()
            tracemalloc.start()
            start = time.perf_counter()
            mean, at_tenth, at_end = anyio.run(model, count, 7, backend=name, backend_options=options)
            seconds = time.perf_counter() - start
            tracemalloc.stop()
            means[f"{label}/{backend}"] = mean
            print(
                f"  {label + '/' + backend:<19} {seconds:7.1f} s  {seconds / count * 1e6:6.1f} us/request (wall)"
                f"  mean time in system {mean:.3f}  traced memory at 10%: {at_tenth / 1024:.0f} KiB,"
                f" at 100%: {at_end / 1024:.0f} KiB ({(at_end - at_tenth) / 1024:+.0f} KiB)"
            )
    # Same seeds, same order of completion: every run must sum the same times in the same order.
    first = next(iter(means.values()))
    wrong = [name for name, mean in means.items() if mean != first]
    if wrong:
        sys.exit(f"{', '.join(wrong)}: mean time in system differs from {next(iter(means))}'s")


# -- measuring ----------------------------------------------------------------------------------------------


def on_clock(model: Model, backend: str) -> Runner:
    """A runner of *model* on a fresh airp virtual clock of *backend*."""

    def run(gaps: list[float], services: list[float]) -> list[float]:
        name, options = virtual_anyio_backend(backend)
        result: list[float] = anyio.run(model, gaps, services, backend=name, backend_options=options)
        return result

    return run


#: name -> runner, in the order of a round.
CONTENDERS: dict[str, Runner] = {
    "simpy": run_simpy,
    "anyio-sleep/asyncio": on_clock(plain_anyio, "asyncio"),
    "anyio-delay/asyncio": on_clock(plain_delay, "asyncio"),
    "airp-today/asyncio": on_clock(with_airp, "asyncio"),
    "airp-delay/asyncio": on_clock(with_airp_delay, "asyncio"),
    "anyio-sleep/trio": on_clock(plain_anyio, "trio"),
    "anyio-delay/trio": on_clock(plain_delay, "trio"),
    "airp-today/trio": on_clock(with_airp, "trio"),
    "airp-delay/trio": on_clock(with_airp_delay, "trio"),
}

#: The goals: the ratio to SimPy (of the medians of CPU time per request) not to exceed.
GOALS = {
    "airp-delay/asyncio": 1.5,
    "airp-delay/trio": 2.5,
    "anyio-delay/asyncio": 1.0,
    "airp-today/asyncio": 3.0,
    "anyio-sleep/asyncio": 1.6,
}
NO_GOAL = {"airp-today/trio": "no goal: trio.sleep itself costs ~4x"}

WARM_UP = 500


def cpu_timed(runner: Runner, gaps: list[float], services: list[float]) -> tuple[float, list[float]]:
    """(CPU seconds, times in system) of one run; garbage from earlier runs collected first."""
    gc.collect()
    start = time.process_time()
    result = runner(gaps, services)
    return time.process_time() - start, result


def check(name: str, times: list[float], reference: list[float]) -> None:
    """Exit non-zero, naming *name*, unless *times* are SimPy's to the last bit."""
    if times == reference:
        return
    if len(times) != len(reference):
        sys.exit(f"{name}: {len(times)} times in system, SimPy has {len(reference)}")
    wrong = [i for i, (a, b) in enumerate(zip(times, reference, strict=True)) if a != b]
    first = wrong[0]
    sys.exit(
        f"{name}: {len(wrong)} of {len(times)} times in system differ from SimPy's"
        f" (first: request {first}, {times[first]!r} against {reference[first]!r})"
    )


def verdict(name: str, ratio: float | None) -> str:
    """The goal column: the goal and MET / MISSED, or why there is none (*ratio* None: not run)."""
    goal = GOALS.get(name)
    if goal is None:
        return NO_GOAL.get(name, "")
    if ratio is None:
        return f"<= {goal:.1f}x  not measured"
    return f"<= {goal:.1f}x  {'MET' if ratio <= goal else 'MISSED'}"


def choose(spec: str | None, parser: argparse.ArgumentParser) -> tuple[list[str], list[str]]:
    """(the contenders to run, in round order, SimPy always: it is the reference; those skipped)."""
    if spec is None:
        chosen = list(CONTENDERS)
    else:
        chosen = [part.strip() for part in spec.split(",") if part.strip()]
        unknown = [name for name in chosen if name not in CONTENDERS]
        if unknown:
            parser.error(f"unknown contender(s) {', '.join(unknown)}; choose from {', '.join(CONTENDERS)}")
    return [name for name in CONTENDERS if name == "simpy" or name in chosen], []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=None, help="default 20000, or 10**6 with --million")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds; the median is reported (default 9)")
    parser.add_argument(
        "--contenders", default=None, help=f"comma-separated subset of: {', '.join(CONTENDERS)} (simpy always runs)"
    )
    parser.add_argument("--million", action="store_true", help="both airp models, 10**6 requests, memory traced")
    args = parser.parse_args()
    if args.million:
        million(args.requests or 1_000_000)
        return
    requests: int = args.requests or 20_000
    if requests < 1 or args.rounds < 1:
        parser.error("--requests and --rounds must be at least 1")
    try:
        import simpy  # noqa: F401
    except ImportError:
        sys.exit("bench_mm1 needs SimPy: pip install -e '.[bench]'")
    names, skipped = choose(args.contenders, parser)
    gaps, services = draw(requests)

    # Warm-up (imports, specialised bytecode, free lists), checked as well: a wrong model fails fast.
    few_gaps, few_services = gaps[:WARM_UP], services[:WARM_UP]
    few_reference = run_simpy(few_gaps, few_services)
    for name in names:
        check(name, CONTENDERS[name](few_gaps, few_services), few_reference)

    seconds: dict[str, list[float]] = {name: [] for name in names}
    reference: list[float] | None = None
    for _ in range(args.rounds):
        for name in names:
            cpu, times = cpu_timed(CONTENDERS[name], gaps, services)
            if reference is None:
                reference = times  # SimPy's, the first run of the first round
            check(name, times, reference)
            seconds[name].append(cpu)
    assert reference is not None

    mean = statistics.fmean(reference)
    # The batch-means standard error: time-in-system samples are strongly correlated.
    batches = [statistics.fmean(reference[k : k + 1000]) for k in range(0, len(reference) - 999, 1000)]
    error = statistics.stdev(batches) / math.sqrt(len(batches)) if len(batches) > 1 else math.inf
    print(
        f"M/M/1, {requests} requests, lambda={ARRIVAL_RATE}, mu={SERVICE_RATE}: all {len(names)} models agree exactly"
    )
    print(f"  mean time in system {mean:.3f} (theory {THEORY:.1f}, batch-means 95% interval +-{1.96 * error:.3f})")
    print(f"  CPU time per request (time.process_time), median of {args.rounds} interleaved rounds:")
    print(f"  {'contender':<20} {'us/request':>10} {'(min-max)':>15} {'vs SimPy':>9}  goal")
    medians = {name: statistics.median(values) / requests * 1e6 for name, values in seconds.items()}
    simpy_us = medians["simpy"]
    for name in names:
        us = medians[name]
        low, high = (value / requests * 1e6 for value in (min(seconds[name]), max(seconds[name])))
        ratio = us / simpy_us
        print(f"  {name:<20} {us:10.1f} {f'({low:.1f}-{high:.1f})':>15} {ratio:8.2f}x  {verdict(name, ratio)}")
    for name in skipped:
        print(f"  {name:<20} {'skipped':>10} {'':>15} {'':>9}  {verdict(name, None)}")


if __name__ == "__main__":
    main()
