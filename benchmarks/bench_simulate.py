"""What ``airp simulate`` costs over the M/M/1 model a user writes by hand (issue 13).

The same M/M/1 disk (one StartIo lane, Poisson arrivals at 0.8, exponential service at 1.0) is run
two ways on each virtual clock, alternately, in one process:

* **by hand**: ``bench_mm1.with_airp``, a driver created with ``io.create_device``, overlapped
  reads collected by one task, no monitor;
* **airp simulate**: ``examples/mm1_disk.toml`` through :func:`airp.simulate`, a stack built by the
  PnP manager, each request timed by the simulator's monitor hooks at every layer, queue depths
  sampled, the report computed.

It prints the ratio of the two wall times per backend (the best of ``--rounds``), and the mean time
in system of a long simulate run with its batch-means interval, against the theory's 5.0.

Run: python benchmarks/bench_simulate.py [--requests N] [--rounds R] [--long N]
"""

from __future__ import annotations

import argparse
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


def by_hand(backend: str, count: int) -> float:
    gaps, services = bench_mm1.draw(count)
    name, options = virtual_anyio_backend(backend)
    start = time.perf_counter()
    anyio.run(bench_mm1.with_airp, gaps, services, backend=name, backend_options=options)
    return time.perf_counter() - start


def simulated(backend: str, count: int) -> float:
    description = airp.load_simulation(EXAMPLE).with_options(requests=count)
    start = time.perf_counter()
    report = airp.simulate(description, backend=backend)
    seconds = time.perf_counter() - start
    if report.lost or report.completed != count:
        sys.exit(f"simulate lost requests: {report.lost}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--long", type=int, default=200_000, help="requests of the long run (0: skip it)")
    args = parser.parse_args()
    print(f"M/M/1, {args.requests} requests, best of {args.rounds}: airp simulate against the model by hand")
    for backend in ("asyncio", "trio"):
        hand = min(by_hand(backend, args.requests) for _ in range(args.rounds))
        sim = min(simulated(backend, args.requests) for _ in range(args.rounds))
        print(
            f"  {backend:<8} by hand {hand / args.requests * 1e6:6.1f} us/request, simulate"
            f" {sim / args.requests * 1e6:6.1f} us/request: {sim / hand:4.2f}x"
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
