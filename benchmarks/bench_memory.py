"""Figure (c): memory per pending IRP (4 stack locations, no waiter yet).

``tracemalloc`` measures what N pending IRPs hold (default 10 000), after everything that was only
needed to get them there has been freed, divided by N.  Goal: at most 1 KiB each (DESIGN.md).

- ``Irp(4)`` as a driver holds it: a bare ``Irp(4)`` (not from the I/O manager) whose creator
  filled the top location, sent down figure (a)'s 4-deep stack (three filters with completion
  routines over a driver that marks it pending and keeps it), so all four locations are in use.
- Built by the I/O manager: ``airp._iomanager._requests.build_read_write_request`` (a READ of 0 bytes on a
  buffered-I/O device, so no data buffer counts), sent down the same stack.  This adds the
  ``Overlapped`` request, the IRP's instance dict for its cold fields, the parameters record and
  the (empty) buffers.

The list that holds the IRPs is allocated before measuring; every object reachable only from an
IRP is counted.  No event exists yet: one is created only when somebody awaits a pending IRP.

Run: python benchmarks/bench_memory.py [--count N]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import READ, header, make_sync_stack

import airp
from airp import STATUS_PENDING, DeviceFlags, DeviceObject, Irp, IrpMajor
from airp._iomanager._requests import build_read_write_request

GOAL = 1024


def bare_irp(top: DeviceObject) -> tuple[Irp, Any]:
    """A driver's own IRP: ``Irp(n)``, top location filled by hand."""
    irp = Irp(top.stack_size)
    loc = irp.next_stack_location
    loc.major = READ
    loc.parameters = airp.ReadWriteParameters(0)
    return irp, None


def io_manager_irp(top: DeviceObject) -> tuple[Irp, Any]:
    """What ``FileHandle.read_overlapped`` sends: the IRP and its ``Overlapped`` (kept alive together)."""
    request = build_read_write_request(top, IrpMajor.READ, length=0)
    return request.irp, request


def bytes_per_pending_irp(count: int, make: Callable[[DeviceObject], tuple[Irp, Any]]) -> float:
    held: list[Any] = [None] * count
    requests: list[Any] = [None] * count
    filled = 0

    def pend(irp: Irp) -> None:
        nonlocal filled
        held[filled] = irp
        filled += 1

    stack = make_sync_stack(pend=pend)
    for device in stack.devices:
        device.flags |= DeviceFlags.BUFFERED_IO
    top = stack.top

    async def send_all() -> None:
        for i in range(count):
            irp, requests[i] = make(top)
            assert await airp.call_driver(top, irp) == STATUS_PENDING

    async def warm_up() -> None:  # first-call costs (code objects, caches) are not per-IRP memory
        irp, _ = make(top)
        stack2 = make_sync_stack(pend=lambda irp: None)
        irp2, _ = make(stack2.top)
        await airp.call_driver(stack2.top, irp2)
        del irp

    asyncio.run(warm_up())
    gc.collect()
    tracemalloc.start()
    start, _ = tracemalloc.get_traced_memory()
    asyncio.run(send_all())
    gc.collect()
    end, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert filled == count
    assert all(not irp.completed and irp.current_stack_location.control & 1 for irp in held)
    assert all(irp._waiter is None for irp in held)
    return (end - start) / count


def breakdown() -> str:
    """What one pending Irp(4) is made of, by sys.getsizeof (GC header included)."""
    irp = Irp(4)
    for n in range(1, 5):
        irp.stack_location(n)
    parts = {
        "Irp": sys.getsizeof(irp),
        "list of 4": sys.getsizeof(irp._stack),
        "4 x StackLocation": 4 * sys.getsizeof(irp.stack_location(1)),
    }
    return ", ".join(f"{k} {v}" for k, v in parts.items()) + f" = {sum(parts.values())} bytes"


def run(count: int = 10_000) -> list[tuple[str, float]]:
    rows = [
        ("Irp(4), as a driver holds it", bytes_per_pending_irp(count, bare_irp)),
        ("built by the I/O manager (READ, buffered, 0 bytes)", bytes_per_pending_irp(count, io_manager_irp)),
    ]
    print(f"\n== (c) memory per pending IRP, 4 stack locations, no waiter ({count} IRPs, tracemalloc)")
    width = max(len(label) for label, _ in rows)
    for label, size in rows:
        verdict = "MET" if size <= GOAL else "NOT MET"
        print(f"  {label:<{width}}  {size:7.1f} bytes  goal <= {GOAL}  {verdict}")
    print(f"  ({breakdown()})")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000, help="pending IRPs to hold (default 10 000)")
    args = parser.parse_args()
    header()
    run(args.count)


if __name__ == "__main__":
    main()
