"""Waiting for IRPs: the only part of the IRP machinery that touches anyio.

A requester waits on one ``anyio.Event`` per IRP, created only when the IRP is still pending at
the moment somebody awaits it; the completion walk calls ``set()`` on it.

Cancellation follows the Windows rule that cancelling never shortens the wait for an IRP to come
back (reference 6.6): a waiter whose scope is cancelled calls :func:`~airp.cancel_irp`, then
waits, shielded, until the IRP's driver has completed it, and only then lets the cancellation
propagate.  The IRP is therefore never abandoned while a driver still holds it.
"""

from __future__ import annotations

import anyio

from ._call import call_driver
from ._cancel import cancel_irp
from ._device import DeviceObject
from ._irp import Irp, _io_status
from ._status import STATUS_MORE_PROCESSING_REQUIRED, IoStatus, NtStatus

__all__ = ["call_driver_and_wait", "forward_and_wait", "wait_for_irp"]


async def _wait_cancelling(event: anyio.Event, irp: Irp) -> None:
    try:
        await event.wait()
    except anyio.get_cancelled_exc_class():
        with anyio.CancelScope(shield=True):
            cancel_irp(irp)
            await event.wait()
        raise


async def wait_for_irp(irp: Irp) -> IoStatus:
    """Wait until *irp* has been completed all the way up; ``await irp`` does the same.

    If the IRP is already complete this returns at once without a checkpoint.

    On cancellation: the IRP is cancelled with :func:`~airp.cancel_irp`, the wait continues,
    shielded, until a driver completes it, and then the cancellation exception propagates.

    :returns: the final :class:`~airp.IoStatus`.
    """
    if irp._index <= irp.stack_count:
        waiter = irp._waiter
        if waiter is None:
            waiter = irp._waiter = anyio.Event()
        await _wait_cancelling(waiter, irp)  # type: ignore[arg-type]
    return _io_status(irp.status, irp.information)


class _Handback:
    __slots__ = ("event", "returned")

    def __init__(self) -> None:
        self.event: anyio.Event | None = None
        self.returned = False


def _hand_back(device: DeviceObject | None, irp: Irp, box: _Handback) -> NtStatus:
    box.returned = True
    if box.event is not None:
        box.event.set()
    return STATUS_MORE_PROCESSING_REQUIRED


async def call_driver_and_wait(device: DeviceObject, irp: Irp) -> IoStatus:
    """Send *irp* to *device* and wait until it is handed back to the caller.

    Sets a completion routine on the next location that returns STATUS_MORE_PROCESSING_REQUIRED,
    so when the lower driver completes the IRP the walk stops there and the IRP belongs to the
    caller again: it may read the result, complete the IRP again (a driver forwarding an IRP it
    received), or reuse or free it (a driver's own IRP).  Fill the next stack location first.
    No event is created unless the lower driver returns before completing the IRP.

    On cancellation: the IRP is cancelled, the wait continues, shielded, until it is handed back,
    and then the cancellation propagates; the caller still owns the IRP afterwards.

    :returns: the IRP's status at hand-back.
    """
    box = _Handback()
    irp.set_completion_routine(_hand_back, box)
    await call_driver(device, irp)
    if not box.returned:
        box.event = anyio.Event()
        await _wait_cancelling(box.event, irp)
    return _io_status(irp.status, irp.information)


async def forward_and_wait(device: DeviceObject, irp: Irp) -> IoStatus:
    """Forward the IRP this driver received to *device* and wait for it to come back.

    ``IoForwardIrpSynchronously``: copies the current location to the next and calls
    :func:`call_driver_and_wait`.  Afterwards the IRP is this driver's again, with the lower
    driver's result in it; the driver finishes its own work and must complete it with
    :func:`~airp.complete_request`.

    On cancellation: as :func:`call_driver_and_wait`.

    :returns: the lower driver's status.
    """
    irp.copy_current_stack_location_to_next()
    return await call_driver_and_wait(device, irp)
