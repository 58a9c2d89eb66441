"""What ``airp simulate`` costs over the M/M/1 model a user writes by hand.

The same M/M/1 disk (one StartIo lane, Poisson arrivals at 0.8, exponential service at 1.0) is run
three ways on each virtual clock, in interleaved rounds, in one process:

* **by hand, as written today**: ``bench_mm1.with_airp``, a driver created with
  ``io.create_device``, ``anyio.sleep`` for service and arrivals, overlapped reads collected by one
  task, no monitor;
* **by hand, with airp's tools**: ``bench_mm1.with_airp_delay``, the same with ``airp.delay`` and a
  completion callback per request instead of the collector task;
* **airp simulate**: ``examples/mm1_disk.toml`` through :func:`airp.simulate`, a stack built by the
  PnP manager, each request timed by the simulator's monitor hooks at every layer, queue depths
  sampled, the report computed.

It prints the median CPU time (``time.process_time``) of each per backend and the ratios of
``airp simulate`` to both models by hand (goal: at most 1.2x the model as written today), and the
mean time in system of a long simulate run with its batch-means interval, against the theory's 5.0.

Run: python benchmarks/bench_simulate.py [--requests N] [--rounds R] [--long N]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

import anyio

import airp
from airp.testing import virtual_anyio_backend

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_mm1  # noqa: E402  (the hand-written model, next to this script)

EXAMPLE = HERE.parent / "examples" / "mm1_disk.toml"


GOAL = 1.2


def by_hand(model: bench_mm1.Model, backend: str, count: int) -> float:
    gaps, services = bench_mm1.draw(count)
    name, options = virtual_anyio_backend(backend)
    gc.collect()
    start = time.process_time()
    anyio.run(model, gaps, services, backend=name, backend_options=options)
    return time.process_time() - start


def simulated(backend: str, count: int) -> float:
    description = airp.load_simulation(EXAMPLE).with_options(requests=count)
    gc.collect()
    start = time.process_time()
    report = airp.simulate(description, backend=backend)
    seconds = time.process_time() - start
    if report.lost or report.completed != count:
        sys.exit(f"simulate lost requests: {report.lost}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is kept")
    parser.add_argument("--long", type=int, default=200_000, help="requests of the long run (0: skip it)")
    args = parser.parse_args()
    n = args.requests
    print(f"M/M/1, {n} requests, CPU time, median of {args.rounds} interleaved rounds: airp simulate against the models by hand")
    for backend in ("asyncio", "trio"):
        today: list[float] = []
        tools: list[float] = []
        sim: list[float] = []
        for _ in range(args.rounds):
            today.append(by_hand(bench_mm1.with_airp, backend, n))
            tools.append(by_hand(bench_mm1.with_airp_delay, backend, n))
            sim.append(simulated(backend, n))
        t, d, s = (statistics.median(x) for x in (today, tools, sim))
        verdict = "MET" if s / t <= GOAL else "MISSED"
        print(
            f"  {backend:<8} by hand today {t / n * 1e6:6.1f} us/request, with delay + callbacks {d / n * 1e6:6.1f},"
            f" simulate {s / n * 1e6:6.1f}: {s / t:4.2f}x today's (goal <= {GOAL}x {verdict}), {s / d:4.2f}x the"
            " delay + callbacks model"
        )
    if args.long:
        report = airp.simulate(airp.load_simulation(EXAMPLE).with_options(requests=args.long))
        read = report.latency["read"]
        verdict = "inside" if abs(read["mean"] - 5.0) <= read["ci95"] else "OUTSIDE"
        print(
            f"  {args.long} requests: mean time in system {read['mean']:.3f} +- {read['ci95']:.3f}"
            f" (95%, batch means); theory 5.0 is {verdict} the interval"
        )


if __name__ == "__main__":
    main()
