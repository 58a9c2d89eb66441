"""IoCancelIrp (reference 6.1)."""

from __future__ import annotations

from ._bugcheck import BugCheck, BugCheckCode
from ._completion import complete_after_error
from ._irp import Irp
from ._misuse import missing_await, must_be
from ._status import STATUS_INTERNAL_ERROR

__all__ = ["cancel_irp"]


def cancel_irp(irp: Irp, *, reason: str | None = None) -> bool:
    """``IoCancelIrp``: ask whoever holds *irp* to give it up.

    Sets the sticky ``irp.cancel`` flag (always), then atomically takes the cancel routine; if one
    was set it is called with the device of the current location and the IRP, and must complete the
    IRP with STATUS_CANCELLED (after removing it from wherever its driver keeps it).

    The result only says whether a cancel routine was called.  It does not mean the IRP is or
    will be cancelled: a driver without a cancel routine may still notice ``irp.cancel``, or finish
    the request with success.  Whoever cancels must still wait for the IRP to come back.

    The IRP keeps a note of the cancel routine run (or that none was armed), so that a cancelled
    IRP nobody completes is reported with what happened (:class:`~airp.DriverCancelTimeoutWarning`).

    There is no cancel spin lock to release: cancel routines are plain functions on the event loop's
    single thread, so nothing can run between taking the routine and calling it.

    A cancel routine that raises still leaves its IRP completed exactly once: if it did not
    complete the IRP before raising, airp completes it with STATUS_INTERNAL_ERROR (keeping the
    exception as :attr:`~airp.Irp.routine_error`), then the exception propagates to the caller,
    also when that completion raises in turn (its follow-on is chained to the routine's exception
    as ``follow_on``).

    :param irp: the IRP to cancel.
    :param reason: why, for the IRP's monitor (``"timeout"``, ``"handle closed"``, ...).
    :returns: True if a cancel routine was called.
    :raises BugCheck: 0x48 if a cancel routine is set on an IRP that has already completed; 0x44
        (from :func:`~airp.complete_request`) if the cancel routine completes the IRP twice.
    :raises TypeError: if *irp* is not an IRP, *reason* not a str or ``None``, or the cancel
        routine turns out to be a coroutine function (stored directly in ``irp.cancel_routine``;
        :meth:`~airp.Irp.set_cancel_routine` refuses those up front).
    """
    if not isinstance(irp, Irp):
        raise TypeError(f"cancel_irp needs an Irp, got {type(irp).__name__} {irp!r}{missing_await(irp)}")
    if reason is not None and type(reason) is not str:
        raise must_be("cancel_irp(irp, reason=...): reason", "a str or None", reason)
    irp.cancel = True
    routine = irp.cancel_routine
    monitor = irp._monitor
    if monitor is not None:
        monitor.cancelled(irp, routine, reason)
    if routine is None:
        # Noted for the report of an IRP nobody completes after it (DriverCancelTimeoutWarning):
        # "no cancel routine was armed" unless an earlier cancel ran one.
        irp.__dict__.setdefault(CANCEL_RAN, None)
        return False
    irp.__dict__[CANCEL_RAN] = routine
    irp.cancel_routine = None
    index = irp._index
    if index > irp.stack_count:
        raise BugCheck(
            BugCheckCode.CANCEL_STATE_IN_COMPLETED_IRP,
            "a cancel routine was still set on an IRP that has already completed",
            parameters=(irp, routine, 0, 0),
            irp=irp,
        )
    device = irp._stack[index].device if index < irp.stack_count else None
    try:
        result = routine(device, irp)
    except BaseException as error:
        _cancel_routine_raised(irp, index, error)
        raise
    if result is not None:
        _bad_cancel_routine_result(routine, result, irp)
    return True


#: In an IRP's instance dict once it has been cancelled: the cancel routine the last
#: :func:`cancel_irp` that found one ran, or ``None`` if none has found one armed.  Read by the
#: requester's side to say what happened to a cancelled IRP that nobody completed.
CANCEL_RAN = "_airp_cancel_ran"


def _cancel_routine_raised(irp: Irp, index: int, error: BaseException) -> None:
    # The routine was taken, so nothing else will run it: unless it completed the IRP before
    # raising, airp does, or the IRP would stay pending with nobody to finish it.  If its driver
    # still holds it somewhere and completes it later, that completion is a 0x44 whose message
    # names this exception.  An IRP that moved (its walk ran, or stopped at a caller's
    # STATUS_MORE_PROCESSING_REQUIRED routine, which now owns it) is no longer the routine's.
    if irp._index != index:
        return
    irp.cancel_routine = None
    if irp.routine_error is None:
        irp.routine_error = error
    # The routine's error stays the one raised; what that completion breaks is chained to it.
    complete_after_error(irp, error, STATUS_INTERNAL_ERROR)


def _bad_cancel_routine_result(routine: object, result: object, irp: Irp) -> None:
    # A cancel routine returns nothing.  A coroutine here means an ``async def`` routine that was
    # stored without set_cancel_routine (which refuses them): it never ran.
    close = getattr(result, "close", None)
    if hasattr(result, "cr_frame") and close is not None:
        close()
        raise TypeError(
            f"cancel routine {routine!r} of {irp!r} is a coroutine function: cancel routines run"
            " synchronously inside cancel_irp and cannot await; make it a plain function that removes"
            " the IRP from its queue and completes it with STATUS_CANCELLED"
        )
