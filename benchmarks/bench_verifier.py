"""What the opt-in Driver Verifier costs when it is on (issue 13), in one process.

Off, it costs nothing: an I/O manager without one never calls it, and ``call_driver`` and
``complete_request`` pay the ``monitor is None`` tests that bench_tracing.py measures.  On, it
watches every IRP: this measures ``FileHandle.read`` through a 4-layer stack (three filters with
completion routines that propagate the pending mark, over a disk that completes at once) with

* no verifier (the reference);
* a verifier running every check, forcing nothing;
* the same verifier forcing pending on every call (``force_pending=True``): each read's
  completion is deferred at the top filter's call and finished on the next loop turn, so the
  requester really waits.

Run: python benchmarks/bench_verifier.py [--rounds R] [--best-of K] [--ops N] [--backend B]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import arg_parser, header, interleaved, print_ratios, ratio

import airp
from airp import STATUS_CONTINUE_COMPLETION, STATUS_SUCCESS, DeviceObject, Irp, IrpMajor, complete_request

NAME = "\\Device\\BenchDisk"


def _propagate(device: DeviceObject | None, irp: Irp, context: Any) -> int:
    if irp.pending_returned:
        irp.mark_pending()
    return STATUS_CONTINUE_COMPLETION


class _Filter(airp.Driver):
    pass_through = True

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        assert device.lower_device is not None
        irp.copy_current_stack_location_to_next()
        irp.set_completion_routine(_propagate)
        return await airp.call_driver(device.lower_device, irp)


class _Disk(airp.Driver):
    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLOSE, IrpMajor.CLEANUP, IrpMajor.READ)
    async def io(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS


def _stack(verifier: airp.Verifier | None) -> airp.IoManager:
    io = airp.IoManager(verifier=verifier)
    below = io.create_device(_Disk(), NAME)
    for _ in range(3):
        below = airp.attach_device(io.create_device(_Filter()), below)
    return io


def _runner(make_verifier: Callable[[], airp.Verifier | None], ops: int) -> Callable[[], Awaitable[float]]:
    async def run() -> float:
        verifier = make_verifier()
        io = _stack(verifier)
        async with io.open(NAME) as handle:
            start = time.perf_counter()
            for _ in range(ops):
                await handle.read(0)
            elapsed = time.perf_counter() - start
        if verifier is not None:
            verifier.check()
        return elapsed / ops * 1e6

    return run


async def _main(rounds: int, best_of: int, ops: int, backend: str) -> None:
    results = await interleaved(
        {
            "off": _runner(lambda: None, ops),
            "checks": _runner(lambda: airp.Verifier(), ops),
            "forced": _runner(lambda: airp.Verifier(force_pending=True), ops),
        },
        rounds,
        best_of,
    )
    print_ratios(
        f"Driver Verifier on the 4-layer read path ({backend})",
        [
            ratio("every check, nothing forced / no verifier", results, "checks", "off"),
            ratio("every call forced pending / no verifier", results, "forced", "off"),
        ],
    )


def main() -> None:
    parser = arg_parser(__doc__.splitlines()[0], rounds=5, best_of=3, ops=2000)
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args()
    header()
    anyio.run(_main, args.rounds, args.best_of, args.ops, args.backend, backend=args.backend)


if __name__ == "__main__":
    main()
