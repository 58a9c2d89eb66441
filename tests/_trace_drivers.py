"""Drivers for the monitor and export tests: a disk with a StartIo lane, a filter, a splitter that
serves reads with IRPs of its own."""

from __future__ import annotations

from typing import Any

import anyio

import airp
from airp import (
    STATUS_END_OF_FILE,
    STATUS_SUCCESS,
    DeviceFlags,
    DeviceObject,
    Irp,
    IrpMajor,
    IrpMonitor,
    ReadWriteParameters,
    StartIoQueue,
    attach_device,
    call_driver,
    complete_request,
    dispatch,
)

LATENCY = 1.0


class Disk(airp.Driver):
    """READs wait their turn in a StartIo lane and take LATENCY each; past offset 100: end of file."""

    def __init__(self) -> None:
        super().__init__("Disk")

    @dispatch(IrpMajor.CREATE, IrpMajor.CLEANUP, IrpMajor.CLOSE)
    async def simple(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS)
        return STATUS_SUCCESS

    @dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        if irp.current_stack_location.parameters.byte_offset >= 100:
            complete_request(irp, STATUS_END_OF_FILE, 0)
            return STATUS_END_OF_FILE
        lane: StartIoQueue = device.extension
        return lane.start_packet(irp)

    async def start_io(self, device: DeviceObject, irp: Irp) -> None:
        await anyio.sleep(LATENCY)
        complete_request(irp, STATUS_SUCCESS, irp.current_stack_location.parameters.length)


def on_done(device: DeviceObject | None, irp: Irp, context: Any) -> int:
    if irp.pending_returned:
        irp.mark_pending()
    return 0


class Filter(airp.Driver):
    """Copies READs down with a completion routine; passes everything else through."""

    pass_through = True

    def __init__(self) -> None:
        super().__init__("Filter")

    @dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        irp.copy_current_stack_location_to_next()
        irp.set_completion_routine(on_done)
        assert device.lower_device is not None
        return await call_driver(device.lower_device, irp)


class Splitter(airp.Driver):
    """Serves a READ with an IRP of its own (allocated, sent, handed back, reused once, freed)."""

    def __init__(self, allocator: airp.IrpAllocator | None = None) -> None:
        super().__init__("Splitter")
        self.allocator = allocator
        self.children: list[int] = []

    @dispatch(IrpMajor.CREATE, IrpMajor.CLEANUP, IrpMajor.CLOSE)
    async def simple(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS)
        return STATUS_SUCCESS

    @dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        lower = device.lower_device
        assert lower is not None
        length = irp.current_stack_location.parameters.length
        child = airp.allocate_irp(lower.stack_size, allocator=self.allocator)
        assert child is not None
        for attempt in range(2):
            if attempt:
                airp.reuse_irp(child)
            self.children.append(child._trace_id)
            loc = child.next_stack_location
            loc.major = IrpMajor.READ
            loc.parameters = ReadWriteParameters(length)
            await airp.call_driver_and_wait(lower, child)
        airp.free_irp(child)
        complete_request(irp, STATUS_SUCCESS, length)
        return STATUS_SUCCESS


def build(monitor: IrpMonitor, *, disk_name: str = "disk", filter_name: str = "filter") -> tuple[airp.IoManager, DeviceObject, DeviceObject]:
    """A filter over a disk, in a new I/O manager that *monitor* watches."""
    io = airp.IoManager(monitor=monitor)
    disk = Disk()
    bottom = io.create_device(disk, disk_name, flags=DeviceFlags.BUFFERED_IO)
    bottom.extension = StartIoQueue(bottom, "io", disk.start_io)
    top = io.create_device(Filter(), filter_name)
    attach_device(top, bottom)
    return io, bottom, top
