"""``airp demo``: a small device stack and a mixed workload, told layer by layer."""

from __future__ import annotations

from collections.abc import Callable

import anyio

from .._iomanager._manager import FileHandle, IoManager
from .._iomanager._plugins import load_driver
from .._machine._codes import DeviceFlags
from .._machine._device import attach_device
from .._machine._errors import NtStatusError
from ._tracing import IrpMonitor, TraceRecord

__all__ = ["run_demo"]

INTRO = r"""airp demo: IRPs travelling through a stack of drivers

An application opens \Device\Demo and sends it requests.  Each request becomes an IRP (an I/O
request packet) that travels DOWN the stack of drivers below the name, until one of them completes
it; the result then travels back UP, and drivers that asked to see it on the way up (a "completion
routine") get to look at it.  A driver may also answer "pending": the request is still in flight,
and the driver finishes it later from another task.

The stack, top to bottom:
  audit-filter         watches results of reads, writes and device controls on the way up
  ramdisk              the function driver: reads at once, writes later (pended, then flushed)
  pass-through-filter  handles nothing: skips every request down
  demo-bus             the bottom: answers "get serial number", fails what it does not know

How to read a trace:  ->  the IRP goes down to a layer      <-  that layer's dispatch returns
                      ^   a completion routine runs         ==  the IRP is finished
"""


def _new_records(monitor: IrpMonitor, start: int) -> list[TraceRecord]:
    return list(monitor.records)[start:]


async def _step(
    say: Callable[[str], object], monitor: IrpMonitor, title: str, action: Callable[[], object]
) -> None:
    say(f"\n* {title}")
    start = len(monitor.records)
    try:
        result = await action()  # type: ignore[misc]
    except NtStatusError as error:
        say(f"  result: failed with {error.status.name}" + (f", data {error.data!r}" if error.data else ""))
    else:
        say(f"  result: {result!r}")
    groups: dict[int, list[TraceRecord]] = {}
    for record in _new_records(monitor, start):
        groups.setdefault(record.irp, []).append(record)
    for number, records in groups.items():
        say(f"  IRP #{number} ({records[0].major}):")
        for record in records:
            say("    " + record.describe())


async def run_demo(say: Callable[[str], object] = print, *, write_latency: float = 0.01) -> int:
    """Build the demo stack, send the workload through it, and narrate each IRP.

    :param say: where each line goes.
    :param write_latency: seconds the RAM disk's flusher takes per pended write.
    :returns: how many IRPs were traced.
    """
    say(INTRO)
    monitor = IrpMonitor(capacity=100_000)
    io = IoManager(monitor=monitor)
    bus_driver = load_driver("demo-bus")()
    bus = io.create_device(bus_driver, r"\Device\Demo", flags=DeviceFlags.BUFFERED_IO)
    attach_device(io.create_device(load_driver("pass-through-filter")()), bus)
    ramdisk = load_driver("ramdisk")(size=64, write_latency=write_latency)
    attach_device(io.create_device(ramdisk), bus)
    audit = load_driver("audit-filter")()
    attach_device(io.create_device(audit), bus)

    IOCTL_BUS_GET_SERIAL = bus_driver.IOCTL_GET_SERIAL  # noqa: N806
    IOCTL_RAMDISK_GET_SIZE = ramdisk.IOCTL_GET_SIZE  # noqa: N806
    async with anyio.create_task_group() as tg:
        tg.start_soon(ramdisk.run_flusher)
        handle: FileHandle = await io.open(r"\Device\Demo")
        say(r"Opened \Device\Demo (an IRP_MJ_CREATE went down the stack and succeeded).")
        await _step(say, monitor, "write b'hello, IRP' at offset 0 (the RAM disk pends writes)", lambda: handle.write(b"hello, IRP"))
        await _step(say, monitor, "read 10 bytes at offset 0 (completed synchronously)", lambda: handle.read(10))
        await _step(say, monitor, "read past the end of the disk (fails)", lambda: handle.read(4, offset=1000))
        await _step(
            say, monitor, "device control GET_SIZE (the RAM disk answers it)", lambda: handle.device_control(IOCTL_RAMDISK_GET_SIZE, output_length=8)
        )
        await _step(
            say,
            monitor,
            "device control GET_SERIAL (unknown to the RAM disk: passed down to the bus)",
            lambda: handle.device_control(IOCTL_BUS_GET_SERIAL, output_length=32),
        )
        await _step(
            say,
            monitor,
            "GET_SERIAL with a 4-byte buffer (a warning: the data still comes back)",
            lambda: handle.device_control(IOCTL_BUS_GET_SERIAL, output_length=4),
        )
        await _step(say, monitor, "an unknown device control (the bus fails it)", lambda: handle.device_control(0x1234_5678))

        async def three_writes() -> list[int]:
            requests = [await handle.write_overlapped(bytes([65 + i]) * 4, offset=16 + 4 * i) for i in range(3)]
            returned = ", ".join(r.status_returned.name for r in requests if r.status_returned is not None)
            say(f"  all three sent; their dispatch routines returned: {returned}")
            return [await r for r in requests]

        await _step(say, monitor, "three overlapped writes at once, then awaited", three_writes)
        await _step(say, monitor, "read the disk back", lambda: handle.read(28))
        await handle.close()
        say("\nClosed the handle (IRP_MJ_CLEANUP and IRP_MJ_CLOSE went down the stack).")
        ramdisk.stop_flusher()
    traced = len({r.irp for r in monitor.records})
    say(f"\n{traced} IRPs traced; the audit filter saw {audit.seen} results on their way up.")
    return traced
