"""A driver that sends an IRP of its own for every request it serves (reference 2.2 to 2.4, 5.8).

The shape of a USB function driver (the articles behind issue #3 use a HID-like device): for each
IRP_MJ_READ from above, the driver

1. pends the read,
2. builds a new IRP for the bus driver below, an internal device-control request carrying an
   interrupt transfer (a URB) in ``Parameters.Others.Argument1`` and the control code in
   ``Argument3``, where ``IoControlCode`` lives in the Windows parameter union,
3. sends it with a completion routine, and from that routine completes the original read, gives
   the new IRP back, and returns STATUS_MORE_PROCESSING_REQUIRED (the rule of 5.8: the IRP is the
   driver's, the I/O manager must never see its completion).

Two variants of step 3's "give the IRP back":

- ``allocate``: :func:`airp.allocate_irp` per read and :func:`airp.free_irp` in the routine, through
  an :class:`airp.IrpAllocator` whose lookaside list recycles the freed IRPs;
- ``pool``: an :class:`airp.IrpPool` per device, :meth:`~airp.IrpPool.get` and
  :meth:`~airp.IrpPool.put` (``IoReuseIrp``); :meth:`~airp.IrpPool.close` when the device goes.

Under ``--low-resources`` some allocations fail and the driver completes those reads with
STATUS_INSUFFICIENT_RESOURCES, the path the simulation exists to test.

Cancelling a read cancels its transfer: :func:`airp.cancel_with` ties the pended read (the parent)
to the driver's own IRP (the child) before it is sent, so that the read's cancel cancels the
transfer, and unties them when the transfer comes back, before ``transfer_done`` completes the
read.  The bus driver honours the cancel (it completes a cancelled transfer with
STATUS_CANCELLED), so a requester that gives up gets its answer at once (reference 6.3, 6.4).

Run::

    python examples/own_irp_per_request.py allocate --reads 200
    python examples/own_irp_per_request.py pool --reads 200 --low-resources 0.2 --seed 7
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

import airp
from airp import (
    STATUS_CANCELLED,
    STATUS_INSUFFICIENT_RESOURCES,
    STATUS_INVALID_DEVICE_REQUEST,
    STATUS_MORE_PROCESSING_REQUIRED,
    STATUS_PENDING,
    STATUS_SUCCESS,
    DeviceObject,
    Irp,
    IrpMajor,
    OtherParameters,
    complete_request,
    nt_success,
)

#: ``IOCTL_INTERNAL_USB_SUBMIT_URB``: FILE_DEVICE_USB (0x22), function 0, METHOD_NEITHER.
IOCTL_INTERNAL_USB_SUBMIT_URB = airp.ControlCode.make(0x22, 0, airp.TransferMethod.NEITHER)

DEVICE_NAME = "\\Device\\Reports0"


@dataclass
class InterruptTransfer:
    """The URB of an interrupt-IN transfer: the bus fills *buffer* and sets *transferred*."""

    endpoint: int
    buffer: bytearray
    transferred: int = 0


# -- the bus driver (the host controller and the device behind it) ----------------------------------


class UsbBus(airp.Driver):
    """Takes interrupt transfers and answers each with the device's next report.

    Transfers are pended and completed by :meth:`hardware`, a task standing in for the device's
    interrupts, so the function driver's completion routine runs in another task than its read.
    """

    def __init__(self) -> None:
        super().__init__("usb-bus")
        self._send: MemoryObjectSendStream[Irp] | None = None
        self._receive: MemoryObjectReceiveStream[Irp] | None = None
        self.reports = 0

    def start(self) -> None:
        """Create the interrupt queue (inside the run: anyio streams belong to one run)."""
        self._send, self._receive = anyio.create_memory_object_stream[Irp](math.inf)

    def stop(self) -> None:
        """Close the interrupt queue."""
        for stream in (self._send, self._receive):
            if stream is not None:
                stream.close()

    @airp.dispatch(IrpMajor.INTERNAL_DEVICE_CONTROL)
    async def submit(self, device: DeviceObject, irp: Irp) -> int:
        params = irp.current_stack_location.parameters
        if not isinstance(params, OtherParameters) or params.argument3 != IOCTL_INTERNAL_USB_SUBMIT_URB:
            complete_request(irp, STATUS_INVALID_DEVICE_REQUEST, 0)
            return STATUS_INVALID_DEVICE_REQUEST
        assert self._send is not None, "call start() first"
        irp.mark_pending()
        # Cancelable while it waits for the device: arm, then recheck (reference 6.3).
        irp.set_cancel_routine(self._transfer_cancelled)
        if irp.cancel and irp.set_cancel_routine(None) is not None:
            complete_request(irp, STATUS_CANCELLED, 0)
            return STATUS_PENDING
        self._send.send_nowait(irp)
        return STATUS_PENDING

    @staticmethod
    def _transfer_cancelled(device: DeviceObject | None, irp: Irp) -> None:
        complete_request(irp, STATUS_CANCELLED, 0)

    async def hardware(self) -> None:
        """Answer each pending transfer with a report, until cancelled."""
        assert self._receive is not None, "call start() first"
        async for irp in self._receive:
            if irp.set_cancel_routine(None) is None:
                continue  # its cancel routine took it: already completed as cancelled
            transfer: InterruptTransfer = irp.current_stack_location.parameters.argument1
            self.reports += 1
            report = f"report {self.reports:05d}".encode()[: len(transfer.buffer)]
            transfer.buffer[: len(report)] = report
            transfer.transferred = len(report)
            complete_request(irp, STATUS_SUCCESS, len(report))


# -- the function driver ---------------------------------------------------------------------------


class IrpSource(Protocol):
    """Where the function driver gets its own IRPs from, and gives them back to."""

    def get(self) -> Irp | None: ...
    def give_back(self, irp: Irp) -> None: ...
    async def send(self, irp: Irp) -> int: ...


class AllocateAndFree:
    """``IoAllocateIrp`` per request, ``IoFreeIrp`` in the completion routine."""

    def __init__(self, target: DeviceObject, allocator: airp.IrpAllocator) -> None:
        self.target = target
        self.allocator = allocator

    def get(self) -> Irp | None:
        return airp.allocate_irp(self.target.stack_size, allocator=self.allocator)

    def give_back(self, irp: Irp) -> None:
        airp.free_irp(irp)

    async def send(self, irp: Irp) -> int:
        return await airp.send_irp(self.target, irp)


class Pooled:
    """An :class:`airp.IrpPool`: reuse an idle IRP if there is one, allocate otherwise."""

    def __init__(self, device: DeviceObject, allocator: airp.IrpAllocator, target: DeviceObject | None = None) -> None:
        self.pool = airp.IrpPool(device, target, allocator=allocator)

    def get(self) -> Irp | None:
        return self.pool.get()

    def give_back(self, irp: Irp) -> None:
        self.pool.put(irp)

    async def send(self, irp: Irp) -> int:
        return await self.pool.send(irp)


def transfer_done(device: DeviceObject | None, irp: Irp, context: Any) -> int:
    """The creator's completion routine: finish the original read, give the own IRP back.

    *device* is ``None``: the creator has no stack location in an IRP it allocated (reference 5.8),
    so it must not mark the IRP pending either.
    """
    source, original, transfer = context
    count = 0
    if nt_success(irp.status):
        count = transfer.transferred
        assert original.system_buffer is not None
        original.system_buffer[:count] = transfer.buffer[:count]
    complete_request(original, irp.status, count)
    source.give_back(irp)  # the last thing: after this the IRP is not ours
    return STATUS_MORE_PROCESSING_REQUIRED


class ReportReader(airp.Driver):
    """A function driver over :class:`UsbBus`: each read becomes an interrupt transfer of its own."""

    def __init__(self) -> None:
        super().__init__("report-reader")

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLEANUP, IrpMajor.CLOSE)
    async def open_close(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject[IrpSource], irp: Irp) -> int:
        source = device.extension
        own = source.get()
        if own is None:
            # IoAllocateIrp returned NULL: fail the request, do not pend it.
            complete_request(irp, STATUS_INSUFFICIENT_RESOURCES, 0)
            return STATUS_INSUFFICIENT_RESOURCES
        transfer = InterruptTransfer(endpoint=0x81, buffer=bytearray(irp.current_stack_location.parameters.length))
        loc = own.next_stack_location
        loc.major = IrpMajor.INTERNAL_DEVICE_CONTROL
        loc.parameters = OtherParameters(argument1=transfer, argument3=IOCTL_INTERNAL_USB_SUBMIT_URB)
        own.set_completion_routine(transfer_done, (source, irp, transfer))
        # Mark before sending: the transfer may complete (and complete this read) before send returns.
        irp.mark_pending()
        # Cancelling the read now cancels the transfer; untied again when the transfer comes back,
        # before transfer_done runs (so it may complete the read with no cancel routine left on it).
        airp.cancel_with(irp, own)
        await source.send(own)
        return STATUS_PENDING


# -- running it ------------------------------------------------------------------------------------


@dataclass
class Summary:
    """What a run did."""

    variant: str
    reads: int
    succeeded: int
    insufficient_resources: int
    reports: list[bytes]
    allocator: airp.AllocatorStatistics
    pool: airp.IrpPoolStatistics | None
    pool_report: airp.IrpPoolReport | None


async def run(
    variant: str = "allocate",
    *,
    reads: int = 100,
    concurrency: int = 4,
    low_resources: airp.LowResourcesSimulation | None = None,
) -> Summary:
    """Build the stack, issue *reads* reads from *concurrency* tasks, tear the stack down.

    :param variant: ``"allocate"`` (allocate and free) or ``"pool"`` (an :class:`airp.IrpPool`).
    :param low_resources: a simulation to install on the function driver's allocator.
    """
    if variant not in ("allocate", "pool"):
        raise ValueError(f"variant is 'allocate' or 'pool', not {variant!r}")
    io = airp.IoManager()
    bus_driver = UsbBus()
    bus_driver.start()
    bus = io.create_device(bus_driver, "\\Device\\UsbBus0")
    allocator = airp.IrpAllocator(low_resources=low_resources)

    def make_source(device: DeviceObject[IrpSource]) -> IrpSource:
        # Called before the reader is attached, so the pool is told its target (the bus) outright.
        return AllocateAndFree(bus, allocator) if variant == "allocate" else Pooled(device, allocator, bus)

    reader = io.create_device(ReportReader(), DEVICE_NAME, flags=airp.DeviceFlags.BUFFERED_IO, make_extension=make_source)
    airp.attach_device(reader, bus)
    source = reader.extension

    reports: list[bytes] = []
    failed = 0
    todo = iter(range(reads))

    async def requester(handle: airp.FileHandle) -> None:
        nonlocal failed
        for _ in todo:
            try:
                reports.append(await handle.read(16))
            except airp.NtStatusError as error:
                if error.status != STATUS_INSUFFICIENT_RESOURCES:
                    raise
                failed += 1

    try:
        async with anyio.create_task_group() as hardware:
            hardware.start_soon(bus_driver.hardware)
            async with io.open(DEVICE_NAME) as handle, anyio.create_task_group() as requesters:
                for _ in range(concurrency):
                    requesters.start_soon(requester, handle)
            hardware.cancel_scope.cancel()
    finally:
        bus_driver.stop()

    # The device goes away: give back what the driver kept.
    pool_stats = pool_report = None
    if isinstance(source, Pooled):
        pool_report = source.pool.close()
        pool_stats = source.pool.statistics()
    allocator.trim()
    return Summary(variant, reads, len(reports), failed, reports, allocator.statistics(), pool_stats, pool_report)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant", nargs="?", choices=["allocate", "pool"], default="allocate")
    parser.add_argument("--reads", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--low-resources", type=float, default=None, metavar="FRACTION", help="fail this fraction of allocations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args(argv)
    simulation = None if args.low_resources is None else airp.LowResourcesSimulation(args.low_resources, args.seed)

    async def go() -> Summary:
        return await run(args.variant, reads=args.reads, concurrency=args.concurrency, low_resources=simulation)

    summary = anyio.run(go, backend=args.backend)
    print(f"{summary.variant}: {summary.succeeded} of {summary.reads} reads succeeded,"
          f" {summary.insufficient_resources} failed with STATUS_INSUFFICIENT_RESOURCES")
    print(f"first reports: {summary.reports[:3]}")
    stats = summary.allocator
    print(f"allocator: {stats.pool_allocations} new IRPs, small list {stats.small.hits} hits /"
          f" {stats.small.allocation_misses} misses, {stats.failed_allocations} simulated failures,"
          f" {stats.outstanding} outstanding")
    if summary.pool is not None and summary.pool_report is not None:
        print(f"pool: {summary.pool.reused} reused, {summary.pool.allocated} allocated, {summary.pool.failed} failed,"
              f" closed with {summary.pool_report.freed} idle freed and {len(summary.pool_report.in_use)} in use")
    if simulation is not None:
        print(f"simulation: {simulation!r}")


if __name__ == "__main__":
    main()
