"""Waiting for IRPs: where a requester's await meets the synchronous completion walk.

A requester waits on one waiter per IRP (:mod:`airp._shell._waiter`, an ``anyio.Event`` made
cheaper), created only when the IRP is still pending at
the moment somebody awaits it; the completion walk calls ``set()`` on it.

Cancellation follows the Windows rule that cancelling never shortens the wait for an IRP to come
back (reference 6.6): a waiter whose scope is cancelled calls :func:`~airp.cancel_irp`, then
waits, shielded, until the IRP's driver has completed it, and only then lets the cancellation
propagate.  The IRP is therefore never abandoned while a driver still holds it, except past the
run's cancel-wait limit (:func:`~airp.set_cancel_wait_limit`, 300 s by default as in Windows): the
IRP is then disowned, a :class:`~airp.DriverCancelTimeoutWarning` names the device holding it, and
the requester is released.
"""

from __future__ import annotations

import types
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import anyio

from .._machine._bugcheck import chain_follow_on
from .._machine._device import DeviceObject
from .._machine._irp import Irp, _install_pending_waiter, _io_status, _new_tuple
from .._machine._misuse import missing_await
from .._machine._status import STATUS_MORE_PROCESSING_REQUIRED, IoStatus, NtStatus
from ._call import call_driver, check_call
from ._requester_cancel import requester_gave_up, wait_after_cancel
from ._waiter import Waiter, new_waiter

__all__ = ["call_driver_and_wait", "forward_and_wait", "wait_for_irp"]


async def _wait_cancelling(event: Waiter, irp: Irp) -> None:
    try:
        await event.wait()
    except anyio.get_cancelled_exc_class():
        # Cancel the IRP, wait for it shielded and bounded by the run's cancel-wait limit (past it
        # the IRP is disowned and reported: airp._shell._requester_cancel), then let the cancellation
        # go on, unless it is the requester's: then the dispatch routine waiting here gets its IRP
        # back and finishes (the requester gets its cancellation at the I/O manager's boundary).
        if not await wait_after_cancel(event, irp) or not requester_gave_up():
            raise


async def wait_for_irp(irp: Irp) -> IoStatus:
    """Wait until *irp* has been completed all the way up; ``await irp`` does the same.

    If the IRP is already complete this returns at once without a checkpoint.

    On cancellation: the IRP is cancelled with :func:`~airp.cancel_irp`, the wait continues,
    shielded, until a driver completes it, and then the cancellation exception propagates.  The
    shielded wait is bounded by the run's cancel-wait limit; past it the IRP is disowned and a
    :class:`~airp.DriverCancelTimeoutWarning` is emitted before the cancellation propagates.
    Inside a dispatch routine, when the cancellation is the requester's (its deadline passed), the
    IRP is returned instead, so that the routine can finish (see ``docs/cancellation.md``).

    :returns: the final :class:`~airp.IoStatus`.
    :raises BugCheck: the bug check the IRP's final stage raised (0x312, the 5.8 rule), which
        also reached whoever completed it.
    """
    try:
        pending = irp._index <= irp.stack_count
    except AttributeError:
        raise TypeError(f"wait_for_irp needs an Irp, got {type(irp).__name__} {irp!r}{missing_await(irp)}") from None
    if pending:
        return await _awaitable_pending(irp)
    if irp._final_error is not None:
        raise irp._final_error
    return _io_status(irp.status, irp.information)


def _await_pending(irp: Irp) -> Generator[Any, None, IoStatus]:
    # What `await irp` runs for an IRP still in flight (Irp.__await__ drives it with `yield from`),
    # and wait_for_irp too.  A generator rather than a coroutine: no coroutine wrapper between the
    # requester and the event, and no extra frame for _wait_cancelling, whose protocol it inlines.
    # Every level of that chain is paid on suspension and again on resumption, and the pended round
    # trip is held against a bare Event hand-off (DESIGN.md, performance budget).
    event: Waiter | None = irp._waiter  # type: ignore[assignment]
    if event is None:
        event = irp._waiter = new_waiter()
    try:
        yield from event._wait()
    except anyio.get_cancelled_exc_class():
        # As _wait_cancelling: cancel the IRP, wait for it shielded and bounded, then re-raise
        # unless it is the requester's cancellation reaching a dispatch routine.
        back = yield from wait_after_cancel(event, irp).__await__()
        if not back or not requester_gave_up():
            raise
    if irp._final_error is not None:
        raise irp._final_error
    status = irp.status
    return _new_tuple(IoStatus, (status if type(status) is NtStatus else NtStatus(status), irp.information))


def _await_back(irp: Irp) -> Generator[Any, None, None]:
    # _await_pending without the IoStatus: what Overlapped.__await__ runs for a request still in
    # flight, directly rather than through Irp.__await__, one frame fewer on the overlapped path;
    # the Overlapped reads the IRP itself afterwards.  The same protocol, copied rather
    # than shared, since sharing it would put a frame back.
    event: Waiter | None = irp._waiter  # type: ignore[assignment]
    if event is None:
        event = irp._waiter = new_waiter()
    try:
        yield from event._wait()
    except anyio.get_cancelled_exc_class():
        back = yield from wait_after_cancel(event, irp).__await__()
        if not back or not requester_gave_up():
            raise


# The same function, flagged so that coroutines can await what it returns (types.coroutine marks
# the generator function in place).
_awaitable_pending: Callable[[Irp], Awaitable[IoStatus]] = types.coroutine(_await_pending)

# Irp.__await__ on a pending IRP runs _await_pending: the machine cannot import the shell, so the
# shell installs it there when it is imported.
_install_pending_waiter(_await_pending)


class _Handback:
    __slots__ = ("event", "returned")

    def __init__(self) -> None:
        self.event: Waiter | None = None
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
    and then the cancellation propagates; the caller still owns the IRP afterwards.  When the
    cancellation is that of the requester whose dispatch chain this runs in (its deadline passed),
    the IRP is returned instead, so the dispatch routine finishes its work.  Past the run's
    cancel-wait limit the IRP is disowned instead (:func:`~airp.is_disowned`, with a
    :class:`~airp.DriverCancelTimeoutWarning`): it still belongs to the lower driver, and the caller
    must not touch it.

    If the lower driver raises, the IRP is got back the same way before the exception goes on;
    a cancel routine that raises meanwhile does not replace it (it is chained to it as its
    ``follow_on``).

    :returns: the IRP's status at hand-back.
    :raises BugCheck: as :func:`~airp.call_driver`, for a non-IRP or a non-device before the IRP is
        touched.
    """
    check_call(device, irp, "call_driver_and_wait")
    box = _Handback()
    irp.set_completion_routine(_hand_back, box)
    try:
        await call_driver(device, irp)
    except BaseException as error:
        # The lower driver raised but may still hold the IRP (queued, say): our routine would
        # stop its walk here with nobody left to finish it.  Get it back first (cancelled,
        # shielded, bounded), so that the caller's own frame unwinds holding it and call_driver
        # completes it for the caller.
        if not box.returned:
            box.event = new_waiter()
            try:
                await wait_after_cancel(box.event, irp)
            except Exception as follow_on:
                # Its cancel routine raised too: the first error stays the one raised.
                chain_follow_on(error, follow_on)
        raise
    if not box.returned:
        box.event = new_waiter()
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
    :raises BugCheck: as :func:`~airp.call_driver`, for a non-IRP or a non-device before the IRP is
        touched.
    """
    check_call(device, irp, "forward_and_wait")
    irp.copy_current_stack_location_to_next()
    return await call_driver_and_wait(device, irp)
