"""Custom StartIo: a device with a read lane and a write lane (the driver books' scenario).

A device can do one read and one write at a time.  The system StartIo queue would serialise all of
its work, reads and writes mixed; a custom StartIo gives it two queues instead, each serial, running
side by side.  The book's driver keeps a ``KDEVICE_QUEUE`` per lane::

    NTSTATUS DispatchRead(PDEVICE_OBJECT dev, PIRP irp) {
        IoMarkIrpPending(irp);
        if (!KeInsertDeviceQueue(&ext->read_queue, &irp->Tail.Overlay.DeviceQueueEntry))
            ReadStartIo(dev, irp);              /* the lane was idle: start it now */
        return STATUS_PENDING;
    }
    VOID ReadStartIo(PDEVICE_OBJECT dev, PIRP irp) {
        do {
            /* ... three seconds of device time ... */
            irp->IoStatus.Status = STATUS_SUCCESS;
            IoCompleteRequest(irp, IO_NO_INCREMENT);
            entry = KeRemoveDeviceQueue(&ext->read_queue);   /* next one, or idle */
            irp = entry ? CONTAINING_RECORD(entry, IRP, Tail.Overlay.DeviceQueueEntry) : NULL;
        } while (irp);
    }

In airp each lane is an ``airp.StartIoQueue`` with a coroutine StartIo routine; its worker runs in the
device's task group (``airp.run_device``) and starts the next IRP when the routine returns.

Ten overlapped reads and ten overlapped writes arrive at once, three seconds each: reads finish at 3,
6, ... 30 seconds and so do writes, so everything is done at 30 seconds, not 60.  Every dispatch
routine returned STATUS_PENDING; what each requester gets is the IoStatus its StartIo wrote.

The script runs on ``airp.testing``'s virtual clock, so it takes no real time; pass ``--real-time``
to run it on the wall clock (with ``--scale 0.01``, say, for 30 ms instead of 3 s per IRP).

Reference: irp-semantics.md section 7 (KDEVICE_QUEUE, StartIo, custom StartIo queues); docs/queues.md.

Run it with ``python examples/read_write_lanes.py [--backend trio] [--real-time --scale 0.01]``.
"""

from __future__ import annotations

import argparse
from typing import Any

import anyio

import airp
from airp import STATUS_PENDING, STATUS_SUCCESS, DeviceFlags, DeviceObject, Irp, IrpMajor, complete_request
from airp.testing import virtual_anyio_backend

DEVICE_TIME = 3.0


class LanesDevice:
    """The device extension: one StartIo lane per direction."""

    def __init__(self, device: DeviceObject[LanesDevice], scale: float) -> None:
        self.seconds = DEVICE_TIME * scale
        self.start = 0.0
        self.read = airp.StartIoQueue(device, "read", self.read_start_io)
        self.write = airp.StartIoQueue(device, "write", self.write_start_io)

    def now(self) -> float:
        return anyio.current_time() - self.start

    async def read_start_io(self, device: DeviceObject, irp: Irp) -> None:
        params = irp.current_stack_location.parameters
        print(f"  {self.now():6.2f}s  read  #{params.byte_offset} starts ({len(self.read.queue)} waiting)")
        await airp.delay(self.seconds)  # device time
        assert irp.system_buffer is not None
        irp.system_buffer[: params.length] = f"r{params.byte_offset:02}".encode()[: params.length]
        complete_request(irp, STATUS_SUCCESS, params.length)

    async def write_start_io(self, device: DeviceObject, irp: Irp) -> None:
        params = irp.current_stack_location.parameters
        print(f"  {self.now():6.2f}s  write #{params.byte_offset} starts ({len(self.write.queue)} waiting)")
        await airp.delay(self.seconds)  # device time
        complete_request(irp, STATUS_SUCCESS, params.length)


class LanesDriver(airp.Driver):
    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLOSE, IrpMajor.CLEANUP)
    async def create_close(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject[LanesDevice], irp: Irp) -> int:
        return device.extension.read.start_packet(irp)

    @airp.dispatch(IrpMajor.WRITE)
    async def write(self, device: DeviceObject[LanesDevice], irp: Irp) -> int:
        return device.extension.write.start_packet(irp)


async def run(scale: float = 1.0) -> float:
    io = airp.IoManager()
    # The extension needs its device (each lane is a StartIoQueue of it): make_extension builds it
    # once the device exists, and the result is a DeviceObject[LanesDevice], typed end to end.
    device = io.create_device(
        LanesDriver(), "\\Device\\Lanes", flags=DeviceFlags.BUFFERED_IO, make_extension=lambda d: LanesDevice(d, scale)
    )
    lanes = device.extension
    lanes.start = anyio.current_time()
    async with airp.run_device(device), io.open("\\Device\\Lanes") as handle:
        reads = [await handle.read_overlapped(3, offset=n) for n in range(10)]
        writes = [await handle.write_overlapped(b"abc", offset=n) for n in range(10)]
        returned = {r.status_returned for r in reads + writes}
        assert returned == {STATUS_PENDING}
        print(f"  {lanes.now():6.2f}s  20 requests sent; every dispatch routine returned STATUS_PENDING")

        async def collect(kind: str, requests: list[airp.Overlapped[Any]]) -> None:
            for n, request in enumerate(requests):
                result = await request
                print(f"  {lanes.now():6.2f}s  {kind} #{n} done: {result!r}, IoStatus {request.io_status_block}")

        async with anyio.create_task_group() as tg:
            tg.start_soon(collect, "read ", reads)
            tg.start_soon(collect, "write", writes)
    total = lanes.now()
    print(f"  all done at {total:.2f}s (one lane for everything would take {20 * DEVICE_TIME * scale:.2f}s)")
    return total


def main(backend: str = "asyncio", *, real_time: bool = False, scale: float = 1.0) -> float:
    options: dict[str, Any] = {} if real_time else virtual_anyio_backend(backend)[1]
    clock = "wall clock" if real_time else "virtual clock"
    print(f"Read and write lanes on {backend}, {clock}:")
    total: float = anyio.run(run, scale, backend=backend, backend_options=options)
    return total


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A device with a read lane and a write lane (custom StartIo).")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--real-time", action="store_true", help="run on the wall clock instead of virtual time")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the 3 s of device time per IRP by this")
    args = parser.parse_args()
    main(args.backend, real_time=args.real_time, scale=args.scale)
