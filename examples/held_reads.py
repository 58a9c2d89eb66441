"""A driver that holds reads until data arrives, with handles closed and requests cancelled under it.

Drivers for serial ports, keyboards or pipes cannot answer a read at once: they keep it pending until
data comes in.  Held reads are where cancellation matters: a requester gives up (a timeout, its
thread exits), or closes its handle, while the driver still holds its IRPs.  A WDM driver that holds
IRPs uses a cancel-safe queue so it never writes a cancel routine, and drains the closing handle's
reads in IRP_MJ_CLEANUP::

    NTSTATUS DispatchRead(PDEVICE_OBJECT dev, PIRP Irp) {
        IoCsqInsertIrp(&ext->ReadQueue, Irp, NULL);     /* marks it pending, makes it cancelable */
        return STATUS_PENDING;
    }
    void DataArrived(EXT *ext, PUCHAR data, ULONG len) {
        PIRP Irp = IoCsqRemoveNextIrp(&ext->ReadQueue, NULL);   /* skips IRPs being cancelled */
        if (Irp) { /* copy, */ Irp->IoStatus.Status = STATUS_SUCCESS; IoCompleteRequest(Irp, 0); }
    }
    NTSTATUS DispatchCleanup(PDEVICE_OBJECT dev, PIRP Irp) {
        PFILE_OBJECT file = IoGetCurrentIrpStackLocation(Irp)->FileObject;
        while ((held = IoCsqRemoveNextIrp(&ext->ReadQueue, file)) != NULL) {
            held->IoStatus.Status = STATUS_CANCELLED; IoCompleteRequest(held, 0);
        }
        /* complete the cleanup IRP with STATUS_SUCCESS */
    }

In airp: ``airp.IrpQueue`` (``insert`` / ``remove_next(peek_context)`` / ``drain(file_object)``).
A requester's ``fail_after`` cancels the IRP it waits for; ``handle.close()`` returns only once
every read of the handle has completed; ``airp.task_io()`` cancels what a task issued when it ends.

The script runs on ``airp.testing``'s virtual clock, so the waits take no real time; pass
``--real-time`` to watch them on the wall clock.

Reference: irp-semantics.md sections 6.4 (cancel-safe queues), 6.5 (IRP_MJ_CLEANUP), 6.3 (the race
rules the queue packages) and 6.6 (the thread's IRPs; cancel never shortens the wait).

Run it with ``python examples/held_reads.py [--backend trio]``.
"""

from __future__ import annotations

import argparse
from typing import Any

import anyio
import anyio.lowlevel

import airp
from airp import IrpMajor, complete_request
from airp.testing import virtual_anyio_backend, wait_until_quiet


class Pipe(airp.Driver):
    """Holds reads until :meth:`data_arrived` delivers bytes to the oldest one."""

    def __init__(self) -> None:
        super().__init__("Pipe")
        self.reads = airp.IrpQueue()

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLOSE)
    async def create_close(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        complete_request(irp, airp.STATUS_SUCCESS, 0)
        return airp.STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        return self.reads.insert(irp)

    @airp.dispatch(IrpMajor.CLEANUP)
    async def cleanup(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        file_object = irp.current_stack_location.file_object
        count = self.reads.complete_all(file_object)
        print(f"  {now()} Pipe: IRP_MJ_CLEANUP: completed {count} held read(s) of the closing handle as cancelled")
        complete_request(irp, airp.STATUS_SUCCESS, 0)
        return airp.STATUS_SUCCESS

    def data_arrived(self, data: bytes) -> None:
        irp = self.reads.remove_next()
        if irp is None:
            print(f"  {now()} Pipe: {data!r} arrived, nobody is reading; dropped")
            return
        count = min(len(data), irp.current_stack_location.parameters.length)
        assert irp.system_buffer is not None  # DO_BUFFERED_IO
        irp.system_buffer[:count] = data[:count]
        complete_request(irp, airp.STATUS_SUCCESS, count)


_start = anyio.lowlevel.RunVar[float]("held_reads_start")


def now() -> str:
    """Seconds since the run started (virtual or real)."""
    return f"{anyio.current_time() - _start.get():4.1f}s"


async def run() -> None:
    _start.set(anyio.current_time())
    io = airp.IoManager()
    pipe = Pipe()
    io.create_device(pipe, "\\Device\\Pipe", flags=airp.DeviceFlags.BUFFERED_IO)

    print("1. a reader waits; data arrives after 2s")
    async with io.open("\\Device\\Pipe") as handle, anyio.create_task_group() as tg:

        async def sender() -> None:
            await airp.delay(2)  # the other end of the pipe writes after 2 s
            pipe.data_arrived(b"hello")

        tg.start_soon(sender)
        data = await handle.read(16)
        print(f"  {now()} requester: read -> {data!r}")

    print("2. a reader gives up after 3s (fail_after): its read is cancelled")
    async with io.open("\\Device\\Pipe") as handle:
        try:
            with anyio.fail_after(3):
                await handle.read(16)
        except TimeoutError:
            print(f"  {now()} requester: TimeoutError; reads still held by the pipe: {len(pipe.reads)}")

    print("3. two readers are blocked when their handle is closed")
    handle = await io.open("\\Device\\Pipe")
    outcomes: dict[int, str] = {}
    async with anyio.create_task_group() as tg:

        async def reader(n: int) -> None:
            try:
                await handle.read(16)
            except airp.NtStatusError as error:
                outcomes[n] = f"{now()} {error.status.name}"

        tg.start_soon(reader, 1)
        await wait_until_quiet()
        tg.start_soon(reader, 2)
        await wait_until_quiet()
        print(f"  {now()} closing the handle with {len(pipe.reads)} reads held")
        await handle.close()
        print(f"  {now()} close returned; reads still held: {len(pipe.reads)}")
    for n in sorted(outcomes):
        print(f"  reader {n}: {outcomes[n].strip()}")

    print("4. a task issues overlapped reads and leaves: task_io cancels them")
    async with io.open("\\Device\\Pipe") as handle:
        async with airp.task_io() as issued:
            requests = [await handle.read_overlapped(16) for _ in range(3)]
            pipe.data_arrived(b"first")
            print(f"  {now()} task: {len(issued.outstanding)} of its reads outstanding as it leaves")
        print(f"  {now()} after the block: {[airp.NtStatus(r.irp.status).name for r in requests]}")


def main(backend: str = "asyncio", *, real_time: bool = False) -> None:
    options: dict[str, Any] = {} if real_time else virtual_anyio_backend(backend)[1]
    anyio.run(run, backend=backend, backend_options=options)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A driver that holds reads until data arrives.")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--real-time", action="store_true", help="wait on the wall clock instead of virtual time")
    arguments = parser.parse_args()
    main(arguments.backend, real_time=arguments.real_time)
