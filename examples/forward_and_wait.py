"""Forward an IRP and wait for it to come back, then finish it: IoForwardIrpSynchronously.

A filter that must work on a request *after* the lower driver has done its part (decrypt data that
was read, look at a result) sends the IRP down with a completion routine that hands it back::

    KeInitializeEvent(&event, NotificationEvent, FALSE);
    IoCopyCurrentIrpStackLocationToNext(Irp);
    IoSetCompletionRoutine(Irp, HandBack, &event, TRUE, TRUE, TRUE);
    status = IoCallDriver(ext->LowerDevice, Irp);
    if (status == STATUS_PENDING) {
        KeWaitForSingleObject(&event, Executive, KernelMode, FALSE, NULL);
        status = Irp->IoStatus.Status;
    }
    /* the IRP is ours again: work on it */
    IoCompleteRequest(Irp, IO_NO_INCREMENT);
    return status;

    NTSTATUS HandBack(PDEVICE_OBJECT dev, PIRP Irp, PVOID event) {
        if (Irp->PendingReturned) KeSetEvent(event, IO_NO_INCREMENT, FALSE);
        return STATUS_MORE_PROCESSING_REQUIRED;   /* stop the walk: the IRP is handed back */
    }

STATUS_MORE_PROCESSING_REQUIRED stops the completion walk at the filter's level; the filter
completes the IRP a second time, and the walk resumes one level higher.  The filter did not mark
the IRP pending and returns the real status, not STATUS_PENDING.

In airp the whole pattern is ``await airp.forward_and_wait(lower, irp)`` (it creates no event at all
when the lower driver completes at once).  This example uses it for reads, and writes the idiom out
by hand for writes, against a disk whose controller completes every request later, from its own task.

Reference: irp-semantics.md sections 4 (IoForwardIrpSynchronously), 5.2.3 (SMPR stops the walk),
5.8 (a later IoCompleteRequest resumes one level higher).

Run it with ``python examples/forward_and_wait.py [--backend trio]``.
"""

from __future__ import annotations

import argparse
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

import airp

KEY = 0x5A


def scramble(data: bytes | bytearray) -> bytes:
    return bytes(b ^ KEY for b in data)


class Disk(airp.Driver):
    """Every read and write pends; the controller task performs it and completes the IRP."""

    def __init__(self, requests: MemoryObjectSendStream[airp.Irp]) -> None:
        super().__init__("Disk")
        self.storage = bytearray(32)
        self.requests = requests

    @airp.dispatch(airp.IrpMajor.CREATE, airp.IrpMajor.CLEANUP, airp.IrpMajor.CLOSE)
    async def open_close(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        airp.complete_request(irp, airp.STATUS_SUCCESS, 0)
        return airp.STATUS_SUCCESS

    @airp.dispatch(airp.IrpMajor.READ, airp.IrpMajor.WRITE)
    async def read_write(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        irp.mark_pending()
        self.requests.send_nowait(irp)
        return airp.STATUS_PENDING

    def perform(self, irp: airp.Irp) -> None:
        loc = irp.current_stack_location
        start, length = loc.parameters.byte_offset, loc.parameters.length
        assert irp.system_buffer is not None
        if loc.major == airp.IrpMajor.WRITE:
            self.storage[start : start + length] = irp.system_buffer[:length]
        else:
            irp.system_buffer[:length] = self.storage[start : start + length]
        print(f"  disk controller: {airp.IrpMajor(loc.major).name} of {length} bytes done, completing the IRP")
        airp.complete_request(irp, airp.STATUS_SUCCESS, length)


async def controller(disk: Disk, requests: MemoryObjectReceiveStream[airp.Irp]) -> None:
    async with requests:
        async for irp in requests:
            disk.perform(irp)


def hand_back(device: airp.DeviceObject | None, irp: airp.Irp, event: Any) -> int:
    """The completion routine of the by-hand idiom: signal the waiter, keep the IRP."""
    if irp.pending_returned:
        event.set()
    return airp.STATUS_MORE_PROCESSING_REQUIRED


class Encryptor(airp.Driver):
    """Scrambles data on its way to the disk and unscrambles it on its way back."""

    pass_through = True

    def __init__(self) -> None:
        super().__init__("Encryptor")

    @airp.dispatch(airp.IrpMajor.WRITE)
    async def write(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        assert device.lower_device is not None
        assert irp.system_buffer is not None
        irp.system_buffer[:] = scramble(irp.system_buffer)
        print(f"  Encryptor: scrambled {len(irp.system_buffer)} bytes, forwarding the WRITE by hand")
        event = anyio.Event()
        irp.copy_current_stack_location_to_next()
        irp.set_completion_routine(hand_back, event)
        status = await airp.call_driver(device.lower_device, irp)
        if status == airp.STATUS_PENDING:
            print("  Encryptor: the disk returned STATUS_PENDING; waiting for the completion routine's event")
            try:
                await event.wait()
            except anyio.get_cancelled_exc_class():
                # Interrupted (the requester's timeout, say): never leave the IRP below us with
                # our routine armed and nobody waiting.  Cancel it and wait for it to come back,
                # as Windows' interrupted wait does; airp then completes it as cancelled for us.
                # forward_and_wait (the READ path) does all of this itself.
                airp.cancel_irp(irp)
                with anyio.CancelScope(shield=True):
                    await event.wait()
                raise
        status = airp.NtStatus(irp.status)
        print(f"  Encryptor: the IRP is back at location {irp.current_location} ({status.name}); completing it again")
        airp.complete_request(irp)
        return status

    @airp.dispatch(airp.IrpMajor.READ)
    async def read(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        assert device.lower_device is not None
        print("  Encryptor: forwarding the READ with airp.forward_and_wait")
        result = await airp.forward_and_wait(device.lower_device, irp)
        print(f"  Encryptor: forward_and_wait returned {result!r}")
        assert irp.system_buffer is not None
        irp.system_buffer[: result.information] = scramble(irp.system_buffer[: result.information])
        print("  Encryptor: unscrambled the data; completing the IRP")
        airp.complete_request(irp, result.status, result.information)
        return result.status


async def run() -> None:
    send, receive = anyio.create_memory_object_stream[airp.Irp](8)
    io = airp.IoManager()
    disk = Disk(send)
    disk_device = io.create_device(disk, "\\Device\\Disk", flags=airp.DeviceFlags.BUFFERED_IO)
    airp.attach_device(io.create_device(Encryptor()), disk_device)
    async with anyio.create_task_group() as tg:
        tg.start_soon(controller, disk, receive)
        async with send, io.open("\\Device\\Disk") as handle:
            print("write b'attack at dawn':")
            request = await handle.write_overlapped(b"attack at dawn")
            assert request.status_returned is not None
            print(f"  -> returned {request.status_returned.name}, {await request} bytes written")
            print(f"  on the disk: {bytes(disk.storage[:14])!r}")
            print("read 14 bytes:")
            data = await handle.read(14)
            print(f"  -> {data!r}")


def main(backend: str = "asyncio") -> None:
    anyio.run(run, backend=backend)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Forward an IRP, wait for it to come back, then finish it.")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    main(parser.parse_args().backend)
