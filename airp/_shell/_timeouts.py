"""Sending an IRP with a timeout: cancel on expiry, STATUS_IO_TIMEOUT (reference 6.7, 9.5).

The pattern a driver writes by hand in Windows (allocate, set a completion routine that signals an
event and returns STATUS_MORE_PROCESSING_REQUIRED, call the driver, wait with a timeout, on expiry
``IoCancelIrp`` and wait again without a timeout, then read the status), as one call, with the
status rule of KMDF's ``WdfRequestSend`` with a timeout: on expiry the request is cancelled and its
status becomes STATUS_IO_TIMEOUT, unless the target completed it first.
"""

from __future__ import annotations

import math

import anyio

from .._machine._device import DeviceObject
from .._machine._irp import Irp, _io_status
from .._machine._status import STATUS_CANCELLED, STATUS_IO_TIMEOUT, STATUS_MORE_PROCESSING_REQUIRED, IoStatus, NtStatus
from ._call import call_driver, check_call
from ._requester_cancel import (
    DriverCancelTimeoutError,
    _check_limit,
    get_cancel_wait_limit,
    holding_device,
    requester_gave_up,
    wait_after_cancel,
)

__all__ = ["call_driver_with_timeout", "check_timeout", "forward_with_timeout"]


def check_timeout(timeout: float | None) -> float:
    """Validate a timeout in seconds: ``None`` (no timeout) becomes ``math.inf``.

    :raises ValueError: if *timeout* is negative or NaN.
    :raises TypeError: if it is not a number.
    """
    return _check_limit(timeout, "a timeout")


class _TimedHandback:
    __slots__ = ("event", "returned")

    def __init__(self) -> None:
        self.event: anyio.Event | None = None
        self.returned = False

    def is_set(self) -> bool:
        return self.returned

    async def wait(self) -> None:
        if self.returned:
            return
        if self.event is None:
            self.event = anyio.Event()
        await self.event.wait()


def _hand_back(device: DeviceObject | None, irp: Irp, box: _TimedHandback) -> NtStatus:
    box.returned = True
    if box.event is not None:
        box.event.set()
    return STATUS_MORE_PROCESSING_REQUIRED


# ASYNC109: a timeout parameter is the point here: expiry is not an exception around the call but a
# status of the IRP (STATUS_IO_TIMEOUT), decided against what the driver did (reference 9.5).
async def call_driver_with_timeout(
    device: DeviceObject,
    irp: Irp,
    timeout: float | None,  # noqa: ASYNC109
    *,
    cancel_wait_limit: float | None = None,
) -> IoStatus:
    """Send *irp* to *device* and wait at most *timeout* seconds for it to be handed back.

    The timed form of :func:`~airp.call_driver_and_wait` (reference 6.7; ``WdfRequestSend`` with a
    timeout, 9.5).  Fill the next stack location first.  A completion routine that returns
    STATUS_MORE_PROCESSING_REQUIRED is set on it, so the IRP always comes back to the caller, who
    then owns it again (to read, reuse, free, or complete it if it was a received IRP).

    * The driver completes the IRP before the deadline: its status is returned, whatever it is.
    * The deadline passes first: the IRP is cancelled (:func:`~airp.cancel_irp`) and the call keeps
      waiting, shielded, for the driver to hand it back, for at most the cancel-wait limit.  If the
      driver then completes it with STATUS_CANCELLED, the status becomes STATUS_IO_TIMEOUT (written
      into the IRP too); if it completes it with anything else (it finished the work regardless),
      that status stands.

    The clock starts when the IRP is sent.  A dispatch routine runs in the caller's task and is not
    interrupted by the deadline (Windows' ``IoCallDriver`` is not either): the deadline is checked
    once the dispatch routine has returned STATUS_PENDING, and an already expired deadline cancels
    the IRP at once.

    On cancellation (of the caller's scope, not the timeout): the IRP is cancelled and waited for,
    shielded and bounded, as in :func:`~airp.call_driver_and_wait`, then the cancellation
    propagates; the IRP is the caller's again unless it was disowned.

    :param timeout: seconds, ``>= 0``; ``None`` for no timeout (departure from KMDF: seconds as a
        float, relative, rather than 100 ns units where 0 means "no timeout").
    :param cancel_wait_limit: overrides the run's cancel-wait limit (:func:`~airp.set_cancel_wait_limit`).
    :returns: the IRP's final :class:`~airp.IoStatus`.
    :raises ValueError: if *timeout* is negative or NaN (checked before anything is sent).
    :raises BugCheck: as :func:`~airp.call_driver`, for a non-IRP or a non-device, before the IRP is
        touched.
    :raises DriverCancelTimeoutError: if the deadline passed and the driver did not hand the
        cancelled IRP back within the cancel-wait limit: the IRP was disowned, still belongs to that
        driver, and must not be touched (a :class:`~airp.DriverCancelTimeoutWarning` is emitted too).
    """
    seconds = check_timeout(timeout)
    limit = None if cancel_wait_limit is None else _check_limit(cancel_wait_limit, "cancel_wait_limit")
    # Before the routine is set: a bad device would leave the IRP armed with nobody to send it to.
    check_call(device, irp, "call_driver_with_timeout")
    deadline = anyio.current_time() + seconds if seconds != math.inf else math.inf
    box = _TimedHandback()
    irp.set_completion_routine(_hand_back, box)
    try:
        await call_driver(device, irp)
    except BaseException:
        # As call_driver_and_wait: a lower driver that raised may still hold the IRP.
        if not box.returned:
            await wait_after_cancel(box, irp, limit)
        raise
    if not box.returned:
        event = box.event = anyio.Event()
        try:
            with anyio.move_on_at(deadline):
                await event.wait()
        except anyio.get_cancelled_exc_class():
            # Re-raised unless it is the requester's cancellation reaching a dispatch routine and
            # the IRP is back (airp._shell._requester_cancel.requester_gave_up).
            if not await wait_after_cancel(box, irp, limit) or not requester_gave_up():
                raise
        if not box.returned:
            # The deadline won: cancel, and wait (shielded, bounded) for the hand-back.
            if not await wait_after_cancel(box, irp, limit, "timeout"):
                raise DriverCancelTimeoutError(irp, holding_device(irp), get_cancel_wait_limit() if limit is None else limit)
            if irp.status == STATUS_CANCELLED:
                irp.status = STATUS_IO_TIMEOUT
    return _io_status(irp.status, irp.information)


async def forward_with_timeout(
    device: DeviceObject,
    irp: Irp,
    timeout: float | None,  # noqa: ASYNC109
    *,
    cancel_wait_limit: float | None = None,
) -> IoStatus:
    """Forward the IRP this driver received to *device*, wait at most *timeout* for it to come back.

    Copies the current stack location to the next and calls :func:`call_driver_with_timeout`.
    Afterwards the IRP is this driver's again; it must complete it with
    :func:`~airp.complete_request` (with the returned status, STATUS_IO_TIMEOUT after an expiry).

    On cancellation: as :func:`call_driver_with_timeout`.

    :raises ValueError, BugCheck: as :func:`call_driver_with_timeout`.
    """
    check_timeout(timeout)
    check_call(device, irp, "forward_with_timeout")
    irp.copy_current_stack_location_to_next()
    return await call_driver_with_timeout(device, irp, timeout, cancel_wait_limit=cancel_wait_limit)
