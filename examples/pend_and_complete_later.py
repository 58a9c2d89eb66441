"""Pend an IRP and complete it later from another task; cancel it with a cancel routine.

A driver that cannot answer at once (it waits for data from its device) marks the IRP pending,
makes it cancelable, queues it and returns STATUS_PENDING::

    IoMarkIrpPending(Irp);
    InsertTailList(&ext->PendingReads, &Irp->Tail.Overlay.ListEntry);
    IoSetCancelRoutine(Irp, CancelRead);          // (re-check Irp->Cancel: reference 6.3)
    return STATUS_PENDING;

Later, when data arrives (in Windows: a DPC after an interrupt), the driver takes the oldest IRP,
disarms its cancel routine (a NULL answer would mean the cancel routine owns it), fills the buffer
and calls IoCompleteRequest.  The requester, who got STATUS_PENDING back, waits for completion.

In airp the "interrupt" is another task; ``airp.complete_request`` called there wakes the requester,
which awaits the IRP (one lazily created anyio Event).  When the requester gives up (its cancel
scope is cancelled), airp calls ``airp.cancel_irp``: the cancel routine dequeues the IRP and
completes it with STATUS_CANCELLED, and only then does the cancellation reach the requester.

Reference: irp-semantics.md sections 4 (IoMarkIrpPending, IoSetCancelRoutine), 5.4 (pending
contract), 6.1 to 6.3 (IoCancelIrp, cancel routines, the cancel races).

Run it with ``python examples/pend_and_complete_later.py [--backend trio]``.
"""

from __future__ import annotations

import argparse
from collections import deque

import anyio
from anyio.abc import ObjectReceiveStream

import airp


class Mailbox(airp.Driver):
    """READs wait until a message arrives; messages are delivered by another task."""

    def __init__(self) -> None:
        super().__init__("Mailbox")
        self.pending_reads: deque[airp.Irp] = deque()

    @airp.dispatch(airp.IrpMajor.CREATE, airp.IrpMajor.CLEANUP, airp.IrpMajor.CLOSE)
    async def open_close(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        airp.complete_request(irp, airp.STATUS_SUCCESS, 0)
        return airp.STATUS_SUCCESS

    @airp.dispatch(airp.IrpMajor.READ)
    async def read(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        irp.mark_pending()
        self.pending_reads.append(irp)
        irp.set_cancel_routine(self.cancel_read)
        if irp.cancel and irp.set_cancel_routine(None) is not None:
            # Cancelled before we armed the routine: we won the race, so we complete it ourselves.
            self.pending_reads.remove(irp)
            airp.complete_request(irp, airp.STATUS_CANCELLED, 0)
        return airp.STATUS_PENDING  # marked pending: must return STATUS_PENDING, even if completed

    def cancel_read(self, device: airp.DeviceObject | None, irp: airp.Irp) -> None:
        """The cancel routine: a plain function, called by cancel_irp with the routine already taken."""
        self.pending_reads.remove(irp)
        print("  cancel routine: dequeued the IRP, completing it with STATUS_CANCELLED")
        airp.complete_request(irp, airp.STATUS_CANCELLED, 0)

    def deliver(self, message: bytes) -> None:
        """What the DPC does: take the oldest read, disarm its cancel routine, complete it."""
        while self.pending_reads:
            irp = self.pending_reads.popleft()
            if irp.set_cancel_routine(None) is None:
                continue  # its cancel routine is running or about to: leave it alone
            count = min(len(message), irp.current_stack_location.parameters.length)
            irp.user_buffer[:count] = message[:count]  # neither I/O: the requester's own buffer
            print(f"  device task: completing a pending read with {count} bytes")
            airp.complete_request(irp, airp.STATUS_SUCCESS, count)
            return
        print("  device task: no read is waiting, message dropped")


async def device_task(driver: Mailbox, messages: ObjectReceiveStream[bytes]) -> None:
    """Stands for the hardware: every message that arrives completes one pending read."""
    async with messages:
        async for message in messages:
            driver.deliver(message)


async def run() -> None:
    io = airp.IoManager()
    driver = Mailbox()
    io.create_device(driver, "\\Device\\Mailbox")
    send, receive = anyio.create_memory_object_stream[bytes](0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(device_task, driver, receive)
        async with send, io.open("\\Device\\Mailbox") as handle:
            request = await handle.read_overlapped(16)
            assert request.status_returned is not None
            print(f"read #1: dispatch returned {request.status_returned.name}; the IRP waits in the driver's queue")
            await send.send(b"ping!")
            data = await request
            print(f"read #1 finished: {data!r} (pending_returned={request.irp.pending_returned}, io_status_block={request.io_status_block})")

            with anyio.CancelScope() as scope:
                request = await handle.read_overlapped(16)
                assert request.status_returned is not None
                print(f"read #2: dispatch returned {request.status_returned.name}")
                print("read #2: the requester gives up (its cancel scope is cancelled)")
                scope.cancel()
                await request
                print("not reached: the cancellation propagates once the IRP is back")
            print(f"read #2 came back with {airp.NtStatus(request.irp.status).name}; cancelled_caught={scope.cancelled_caught}")
            print(f"reads still queued in the driver: {len(driver.pending_reads)}")


def main(backend: str = "asyncio") -> None:
    anyio.run(run, backend=backend)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Pend an IRP and complete it later from another task.")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    main(parser.parse_args().backend)
