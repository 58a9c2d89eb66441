"""The fault harness, long: a seeded random run of I/O and Plug and Play on both backends.

The harness is ``tests/_fault_harness.py``, which ``tests/test_fault_harness.py`` runs 2,000
operations long in the suite.  This script runs it longer (200,000 operations by default) on each
backend, on airp's virtual clocks, under :mod:`tracemalloc`, and prints for each: operations per
second (real time; tracemalloc costs about 4x, ``--no-trace`` runs without it), the requests sent
and completed (lost=0 and completed-twice=0 are the point), the final statuses, the other
operations, the verifier's counts, what was left outstanding at the end, and the traced memory at
10%, 50% and 100% of the run, taken with the system at rest (every handle closed, every toaster
pulled out) after ``gc.collect()``, with the growth from 50% to 100% and what the in-suite test
allows for it.

Exit status 1 if a run found a problem (a request lost or completed twice, a status its story does
not allow, something left outstanding, memory beyond the allowance) or raised.

Run: python benchmarks/bench_fault_harness.py [--operations N] [--seed S] [--backend B] [--no-trace]
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
import tracemalloc
from importlib.metadata import version
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _fault_harness import Config, Report, run

import airp
from airp.testing import virtual_anyio_backend


def run_one(config: Config, backend: str, trace: bool) -> Report | None:
    """Run the harness once on *backend* (a fresh virtual clock); print its report."""
    name, options = virtual_anyio_backend(backend)
    if trace:
        tracemalloc.start()
    try:
        report: Report = anyio.run(run, config, backend, backend=name, backend_options=options)
    except BaseException:
        print(f"{backend}: the run raised:")
        traceback.print_exc(file=sys.stdout)
        return None
    finally:
        if trace:
            tracemalloc.stop()
    print("\n".join(report.lines()))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--operations", type=int, default=200_000, help="operations per backend (default 200,000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the run (default 0)")
    parser.add_argument("--backend", choices=["asyncio", "trio", "both"], default="both")
    parser.add_argument("--workers", type=int, default=Config.workers, help=f"worker tasks (default {Config.workers})")
    parser.add_argument("--no-trace", action="store_true", help="run without tracemalloc: operations/s at full speed, no memory figures")
    args = parser.parse_args()
    config = Config(operations=args.operations, seed=args.seed, workers=args.workers)
    print(f"python {sys.version.split()[0]}, anyio {version('anyio')}, trio {version('trio')}, airp {airp.__version__}")
    print(
        f"fault harness: {config.operations:,} operations, seed {config.seed}, {config.workers} workers,"
        f" force_pending={config.force_pending}, low_resources={config.low_resources},"
        f" timeout={config.timeout}, open_latency={config.open_latency}, tracemalloc {'off' if args.no_trace else 'on'}"
    )
    failed = False
    started = time.perf_counter()
    for backend in ("asyncio", "trio") if args.backend == "both" else (args.backend,):
        report = run_one(config, backend, trace=not args.no_trace)
        if report is None or report.problems():
            failed = True
            continue
        growth = report.memory_growth()
        if growth is not None and growth > report.memory_allowance():
            print(f"  PROBLEM: memory grew {growth / 1024:,.1f} KiB from 50% to 100%")
            failed = True
    print(f"total {time.perf_counter() - started:,.1f} s")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
