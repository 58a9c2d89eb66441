"""``airp demo``: a device plugged in, a mixed workload told layer by layer, and the device pulled out."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Any

from .._iomanager._manager import FileHandle, IoManager
from .._machine._errors import NtStatusError
from ._trace_export import write_chrome_trace
from ._tracing import IrpMonitor, TraceRecord

__all__ = ["check_trace_path", "run_demo"]

INTRO = r"""airp demo: IRPs travelling through a stack of drivers

An application opens a device by name and sends it requests.  Each request becomes an IRP (an I/O
request packet) that travels DOWN the stack of drivers below the name, until one of them completes
it; the result then travels back UP, and drivers that asked to see it on the way up (a "completion
routine") get to look at it.  A driver may also answer "pending": the request is still in flight,
and the driver finishes it later from another task.

The device is a toaster on a toaster bus.  Its stack, top to bottom:
  audit-filter         watches results of reads, writes and device controls on the way up
  toaster              the function driver: a small store; reads and writes wait their turn in its
                       queue and take a moment each (pending, then completed)
  pass-through-filter  handles nothing: skips every request down
  toaster-bus          the bottom, made by the bus for this toaster: answers "get serial number",
                       fails what it does not know

How to read a trace:  ->  the IRP goes down to a layer      <-  that layer's dispatch returns
                      ^   a completion routine runs         ==  the IRP is finished
"""


async def _step(
    say: Callable[[str], object], monitor: IrpMonitor, title: str, action: Callable[[], object]
) -> None:
    say(f"\n* {title}")
    start = len(monitor.records)  # built from the kept events (the monitor keeps them lazily)
    try:
        result = await action()  # type: ignore[misc]
    except NtStatusError as error:
        say(f"  result: failed with {error.status.name}" + (f", data {error.data!r}" if error.data else ""))
    else:
        say(f"  result: {result!r}")
    groups: dict[int, list[TraceRecord]] = {}
    for record in list(monitor.records)[start:]:
        groups.setdefault(record.irp, []).append(record)
    for number, records in groups.items():
        say(f"  IRP #{number} ({records[0].major}):")
        for record in records:
            say("    " + record.describe())


def check_trace_path(trace: str | os.PathLike[str]) -> None:
    """Refuse, before the demo runs, a trace file that could not be written at its end.

    The demo takes a while and writes its trace last; a name that is a directory, or in a
    directory that does not exist, is found out here instead.  (A write that fails later for
    another reason, a full disk say, still raises from :func:`run_demo`.)

    :param trace: the file ``--trace`` names.
    :raises OSError: naming the file (``filename``) and what is wrong with it (``strerror``).
    """
    path = os.fspath(trace)
    if not path:
        raise FileNotFoundError(errno.ENOENT, "no file name given", path)
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "it is a directory; give a file name such as demo.json", path)
    directory = os.path.dirname(path) or os.curdir
    if not os.path.isdir(directory):
        raise FileNotFoundError(errno.ENOENT, f"its directory {directory!r} does not exist", path)
    if not os.access(directory, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise PermissionError(errno.EACCES, "it cannot be written (permission denied)", path)


async def run_demo(
    say: Callable[[str], object] = print, *, latency: float = 0.01, trace: str | os.PathLike[str] | None = None
) -> int:
    """Plug a toaster in, send the workload through its stack narrating each IRP, then pull it out.

    :param say: where each line goes.
    :param latency: seconds the toaster takes per read or write.
    :param trace: also write every IRP of the run to this file as a Chrome trace
        (:func:`~airp.write_chrome_trace`), for Perfetto or ``airp trace --svg``.
    :returns: how many IRPs were traced (Plug and Play requests included).
    :raises OSError: if the trace file cannot be written: before the demo runs for a name that is
        a directory or whose directory does not exist (:func:`check_trace_path`), at its end
        otherwise.
    """
    if trace is not None:
        check_trace_path(trace)
    say(INTRO)
    monitor = IrpMonitor(capacity=100_000)
    async with IoManager(monitor=monitor) as io:
        # The plugins are found by name (entry points): airp itself does not import airp_drivers.
        bus: Any = io.load_driver("toaster-bus")
        toaster: Any = io.load_driver("toaster", size=64, latency=latency)
        audit: Any = io.load_driver("audit-filter")
        io.register_stack("toaster", function=toaster, lower_filters=["pass-through-filter"], upper_filters=[audit])
        bus_node = await io.add_device("toaster-bus", name=r"\Device\ToasterBus", function=bus)
        await io.start_device(bus_node)

        say("== 1. Plugging the toaster in")
        bus.plug_in("AIRP-0001")
        await io.invalidate_device_relations(bus_node)
        [node] = bus_node.children
        say(
            f"The bus reported a new device; airp built its stack (each driver's add_device put its layer on)\n"
            f"and sent it START_DEVICE, which each driver finishes after the drivers below it, the bus first.\n"
            f"{node.name} is now {node.state.value}, and the toaster's queue is running."
        )

        say("\n== 2. Requests")
        IOCTL_GET_SERIAL = bus.IOCTL_GET_SERIAL  # noqa: N806
        IOCTL_GET_SIZE = toaster.IOCTL_GET_SIZE  # noqa: N806
        assert node.name is not None
        handle: FileHandle = await io.open(node.name)
        say(f"Opened {node.name} (an IRP_MJ_CREATE went down the stack and succeeded).")
        await _step(say, monitor, "write b'hello, IRP' at offset 0 (the toaster queues it: pending)", lambda: handle.write(b"hello, IRP"))
        await _step(say, monitor, "read 10 bytes at offset 0 (queued too, then completed)", lambda: handle.read(10))
        await _step(say, monitor, "read past the end of the store (refused at once)", lambda: handle.read(4, offset=1000))
        await _step(say, monitor, "device control GET_SIZE (the toaster answers it)", lambda: handle.device_control(IOCTL_GET_SIZE, output_length=8))
        await _step(
            say,
            monitor,
            "device control GET_SERIAL (unknown to the toaster: passed down to the bus)",
            lambda: handle.device_control(IOCTL_GET_SERIAL, output_length=32),
        )
        await _step(
            say,
            monitor,
            "GET_SERIAL with a 4-byte buffer (a warning: the data still comes back)",
            lambda: handle.device_control(IOCTL_GET_SERIAL, output_length=4),
        )
        await _step(say, monitor, "an unknown device control (the bus fails it)", lambda: handle.device_control(0x1234_5678))

        async def three_writes() -> list[int]:
            requests = [await handle.write_overlapped(bytes([65 + i]) * 4, offset=16 + 4 * i) for i in range(3)]
            returned = ", ".join(r.status_returned.name for r in requests if r.status_returned is not None)
            say(f"  all three sent; their dispatch routines returned: {returned}")
            return [await r for r in requests]

        await _step(say, monitor, "three overlapped writes at once, then awaited", three_writes)
        await _step(say, monitor, "read the store back", lambda: handle.read(28))

        say("\n== 3. Pulling the toaster out")
        in_flight = await handle.read_overlapped(4)
        bus.unplug("AIRP-0001")
        await io.invalidate_device_relations(bus_node)
        try:
            await in_flight
        except NtStatusError as error:
            outcome = error.status.name
        else:
            outcome = "STATUS_SUCCESS"
        say(
            f"A read was in flight when the bus stopped reporting the toaster: a surprise removal.\n"
            f"airp stopped the toaster's queue and sent SURPRISE_REMOVAL; the read came back with {outcome}.\n"
            f"{node.name} is {node.state.value}: its drivers refuse new requests, but the stack stays while a handle is open."
        )
        try:
            await handle.read(4)
        except NtStatusError as error:
            say(f"A new read fails at once with {error.status.name}.")
        await handle.close()
        say(
            f"Closing the last handle let REMOVE_DEVICE go down: each driver waited for the requests it still held,\n"
            f"took its layer off the stack and deleted it.  {node.name} is {node.state.value}."
        )
    records = monitor.records
    traced = len({r.irp for r in records})
    say(f"\n{traced} IRPs traced (Plug and Play requests included); the audit filter saw {audit.seen} results on their way up.")
    if trace is not None:
        write_chrome_trace(records, trace)
        say(f"The trace is in {os.fspath(trace)}: open it in https://ui.perfetto.dev, or draw it with `airp trace {os.fspath(trace)} --svg out.svg`.")
    return traced
