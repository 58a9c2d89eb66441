"""What the requester's boundary costs: ``FileHandle.read`` with and without it, in one process.

Issue 8 put a boundary between a requester and the drivers (``airp._shell._requester_cancel``): the requester's
effective deadline is read before each request, and, when it is finite, kept in a context variable
while the dispatch chain runs, so that airp's waits can turn the requester's cancellation into
``cancel_irp``.  This measures that against the same ``read`` with the boundary bypassed (the
I/O manager calling ``call_driver`` directly, as before issue 8), on the synchronous 4-layer stack
of bench_sync.py behind a handle, on asyncio and trio:

* no deadline (the common case): one ``current_effective_deadline()``;
* under ``move_on_after`` (a finite deadline): that plus the context variable set and reset.

Run: python benchmarks/bench_requester.py [--rounds R] [--best-of K] [--ops N]
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Ratio, arg_parser, header, interleaved, print_ratios, ratio

import airp
import airp._iomanager._manager as iomanager
from airp import STATUS_CONTINUE_COMPLETION, STATUS_SUCCESS, DeviceObject, Irp, IrpMajor, complete_request


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
    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLOSE, IrpMajor.CLEANUP)
    async def open_close(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 4)
        return STATUS_SUCCESS


def _no_deadline() -> float:
    return math.inf


async def _direct(device: DeviceObject, irp: Irp, deadline: float) -> Any:
    return await airp.call_driver(device, irp)


_SHIPPED = (iomanager.current_effective_deadline, iomanager.call_driver_for_requester)
_BYPASSED = (_no_deadline, _direct)


def _runner(handle: airp.FileHandle, ops: int, parts: tuple[Any, Any], deadline: bool) -> Callable[[], Awaitable[float]]:
    async def run() -> float:
        iomanager.current_effective_deadline, iomanager.call_driver_for_requester = parts
        try:
            with anyio.move_on_after(1e9 if deadline else math.inf):
                start = time.perf_counter()
                for _ in range(ops):
                    await handle.read(4)
                return (time.perf_counter() - start) / ops * 1e6
        finally:
            iomanager.current_effective_deadline, iomanager.call_driver_for_requester = _SHIPPED

    return run


async def _measure(rounds: int, best_of: int, ops: int) -> dict[str, list[float]]:
    io = airp.IoManager()
    below = io.create_device(_Disk(), "\\Device\\Disk", flags=airp.DeviceFlags.BUFFERED_IO)
    for _ in range(3):
        device = io.create_device(_Filter())
        airp.attach_device(device, below)
        below = device
    async with io.open("\\Device\\Disk") as handle:
        assert await handle.read(4) == b"\0\0\0\0"
        return await interleaved(
            {
                "boundary": _runner(handle, ops, _SHIPPED, deadline=False),
                "bypassed": _runner(handle, ops, _BYPASSED, deadline=False),
                "boundary+deadline": _runner(handle, ops, _SHIPPED, deadline=True),
                "bypassed+deadline": _runner(handle, ops, _BYPASSED, deadline=True),
            },
            rounds,
            best_of,
        )


def run(rounds: int = 9, best_of: int = 3, ops: int = 3_000) -> list[Ratio]:
    rows: list[Ratio] = []
    for backend in ("asyncio", "trio"):
        results = anyio.run(_measure, rounds, best_of, ops, backend=backend)
        rows += [
            ratio(f"{backend}: read, no deadline / boundary bypassed", results, "boundary", "bypassed"),
            ratio(f"{backend}: read under move_on_after / bypassed", results, "boundary+deadline", "bypassed+deadline"),
        ]
    print_ratios("requester boundary on the synchronous 4-layer path behind a handle", rows)
    return rows


def main() -> None:
    args = arg_parser(__doc__.splitlines()[0], rounds=9, best_of=3, ops=3_000).parse_args()
    header()
    run(args.rounds, args.best_of, args.ops)


if __name__ == "__main__":
    main()
