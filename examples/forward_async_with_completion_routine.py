"""Forward an IRP asynchronously with a completion routine that propagates PendingReturned.

A filter that only needs to *look* at the result (count bytes, log errors) does not wait: it copies
its stack location down, arms a completion routine, and returns whatever the lower driver returns,
STATUS_PENDING included::

    IoCopyCurrentIrpStackLocationToNext(Irp);
    IoSetCompletionRoutine(Irp, CountBytes, ext, TRUE, TRUE, TRUE);
    return IoCallDriver(ext->LowerDevice, Irp);

    NTSTATUS CountBytes(PDEVICE_OBJECT dev, PIRP Irp, PVOID ext) {
        if (Irp->PendingReturned) IoMarkIrpPending(Irp);   /* propagate: reference 5.4 */
        ((EXT *)ext)->BytesRead += Irp->IoStatus.Information;
        return STATUS_CONTINUE_COMPLETION;
    }

The routine runs later, inside the lower driver's IoCompleteRequest, on whatever context completes
the IRP.  Because an invoked routine suppresses the automatic propagation of the pending mark, it must
mark its own location pending when PendingReturned is set, or the requester (who got STATUS_PENDING)
would never learn that the IRP completed (Driver Verifier 0x228).

In airp the routine is a plain function (it cannot await); here it runs in the disk controller's
task for a read that pends, and nested inside ``call_driver`` for a read served from the cache.

Reference: irp-semantics.md sections 4 (IoSetCompletionRoutine), 5.2 (the walk), 5.4 (pending
propagation) and 5.9 (the worked example).

Run it with ``python examples/forward_async_with_completion_routine.py [--backend trio]``.
"""

from __future__ import annotations

import argparse
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

import airp

CONTENT = b"the quick brown fox jumps over the lazy dog"


class CachedDisk(airp.Driver):
    """Reads of cached offsets complete at once; others pend until the controller task reads them."""

    def __init__(self, requests: MemoryObjectSendStream[airp.Irp]) -> None:
        super().__init__("CachedDisk")
        self.cached: set[int] = set()
        self.requests = requests

    @airp.dispatch(airp.IrpMajor.CREATE, airp.IrpMajor.CLEANUP, airp.IrpMajor.CLOSE)
    async def open_close(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        airp.complete_request(irp, airp.STATUS_SUCCESS, 0)
        return airp.STATUS_SUCCESS

    @airp.dispatch(airp.IrpMajor.READ)
    async def read(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        offset = irp.current_stack_location.parameters.byte_offset
        if offset in self.cached:
            print("  CachedDisk: cache hit, completing at once")
            self.perform(irp)
            return airp.STATUS_SUCCESS
        print("  CachedDisk: cache miss, marking the IRP pending")
        irp.mark_pending()
        self.requests.send_nowait(irp)
        return airp.STATUS_PENDING

    def perform(self, irp: airp.Irp) -> None:
        params = irp.current_stack_location.parameters
        data = CONTENT[params.byte_offset : params.byte_offset + params.length]
        assert irp.mdl is not None  # direct I/O: the requester's own buffer
        irp.mdl[: len(data)] = data
        self.cached.add(params.byte_offset)
        airp.complete_request(irp, airp.STATUS_SUCCESS, len(data))


async def controller(disk: CachedDisk, requests: MemoryObjectReceiveStream[airp.Irp]) -> None:
    async with requests:
        async for irp in requests:
            print("  disk controller: data is in, completing the IRP")
            disk.perform(irp)


class ByteCounter(airp.Driver):
    """Counts the bytes read through it without ever waiting."""

    pass_through = True

    def __init__(self) -> None:
        super().__init__("ByteCounter")
        self.bytes_read = 0

    def count_bytes(self, device: airp.DeviceObject | None, irp: airp.Irp, context: Any) -> int:
        if irp.pending_returned:
            irp.mark_pending()
        self.bytes_read += irp.information
        print(f"  ByteCounter's completion routine: pending_returned={irp.pending_returned}, +{irp.information} bytes")
        return airp.STATUS_CONTINUE_COMPLETION

    @airp.dispatch(airp.IrpMajor.READ)
    async def read(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        assert device.lower_device is not None
        irp.copy_current_stack_location_to_next()
        irp.set_completion_routine(self.count_bytes)
        status = await airp.call_driver(device.lower_device, irp)
        print(f"  ByteCounter: returning {status.name} unchanged")
        return status


async def run() -> None:
    send, receive = anyio.create_memory_object_stream[airp.Irp](8)
    io = airp.IoManager()
    disk = CachedDisk(send)
    disk_device = io.create_device(disk, "\\Device\\CachedDisk", flags=airp.DeviceFlags.DIRECT_IO)
    counter = ByteCounter()
    airp.attach_device(io.create_device(counter), disk_device)
    async with anyio.create_task_group() as tg:
        tg.start_soon(controller, disk, receive)
        async with send, io.open("\\Device\\CachedDisk") as handle:
            for attempt in ("first", "second"):
                print(f"{attempt} read of 9 bytes at offset 4:")
                request = await handle.read_overlapped(9, offset=4)
                assert request.status_returned is not None
                print(f"  requester: dispatch returned {request.status_returned.name}")
                data = await request
                print(f"  requester: {data!r}, io_status_block={request.io_status_block}, pending_returned={request.irp.pending_returned}")
    print(f"ByteCounter counted {counter.bytes_read} bytes")


def main(backend: str = "asyncio") -> None:
    anyio.run(run, backend=backend)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Forward an IRP asynchronously with a completion routine.")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    main(parser.parse_args().backend)
