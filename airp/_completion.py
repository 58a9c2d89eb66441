"""IoCompleteRequest: the synchronous upward walk (reference section 5).

The walk runs in place, on the completer's stack, exactly like ``IofCompleteRequest``: completion
routines are plain functions called one after the other, so the whole walk is atomic with respect to
the event loop.  It never creates a task or an event and never checkpoints; the only contact with
the async shell is ``set()`` on the event of a requester that is already waiting.
"""

from __future__ import annotations

from ._bugcheck import BugCheck, BugCheckCode, VerifierCode
from ._irp import Irp
from ._status import STATUS_MORE_PROCESSING_REQUIRED, STATUS_PENDING, NtStatus

__all__ = ["complete_request"]

_SMPR = int(STATUS_MORE_PROCESSING_REQUIRED)
_PENDING = int(STATUS_PENDING)


def complete_request(irp: Irp, status: int | None = None, information: int | None = None) -> None:
    """``IoCompleteRequest``: finish the current location and walk the IRP back up the stack.

    Optionally sets ``irp.status`` and ``irp.information`` first.  Then, for each location from the
    current one upwards: ``irp.pending_returned`` is recomputed from that location's pending mark;
    its completion routine runs if its invoke flags match the *current* status (``nt_success``,
    with warnings counted as failures) or the IRP's cancel flag; if no routine ran, the pending
    mark propagates to the owner's location.  A routine returning STATUS_MORE_PROCESSING_REQUIRED
    stops the walk at once and leaves the IRP to that routine's driver; a later
    ``complete_request`` resumes one level higher.  When the walk reaches the top, the I/O
    manager's final stage runs and any task awaiting the IRP is woken.

    :param irp: the IRP to complete.
    :param status: if given, stored as ``irp.status`` first.
    :param information: if given, stored as ``irp.information`` first.
    :raises BugCheck: 0x44 if the IRP was already completed; 0xC9 / 0x06 if the status is
        STATUS_PENDING (or 0xFFFFFFFF); 0xC9 / 0x07 if a cancel routine is still set.
    :raises TypeError: if *status* or *information* is not an int, or a completion routine returns
        something that is not a status (a coroutine, ``None``, ...).
    """
    n = irp.stack_count
    index = irp._index
    if index > n:
        raise BugCheck(
            BugCheckCode.MULTIPLE_IRP_COMPLETE_REQUESTS,
            "an IRP was completed twice: after complete_request the IRP belongs to the I/O manager",
            parameters=(irp, 0, 0, 0),
            irp=irp,
        )
    if status is not None:
        irp.status = status if type(status) is NtStatus else NtStatus(status)
    if information is not None:
        if type(information) is not int or information < 0:
            raise TypeError(f"information must be a non-negative int, got {information!r}")
        irp.information = information
    st = irp.status
    if st == _PENDING or st == 0xFFFF_FFFF:
        raise BugCheck(
            BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION,
            f"complete_request with status {NtStatus(st).name}: STATUS_PENDING is what a dispatch routine returns, never an IRP's final status",
            parameters=(VerifierCode.COMPLETE_WITH_PENDING_STATUS, st, irp, 0),
            irp=irp,
        )
    if irp.cancel_routine is not None:
        raise BugCheck(
            BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION,
            f"complete_request with cancel routine {irp.cancel_routine!r} still set: disarm it with set_cancel_routine(None) first",
            parameters=(VerifierCode.COMPLETE_WITH_CANCEL_ROUTINE, irp.cancel_routine, irp, 0),
            irp=irp,
        )
    monitor = irp._monitor
    if monitor is not None:
        monitor.completing(irp)
    stack = irp._stack
    while index < n:
        loc = stack[index]
        # From here on the owner of loc's routine is "current" (CurrentLocation == index + 1).
        index += 1
        irp._index = index
        control = loc.control
        pending = irp.pending_returned = (control & 0x01) != 0
        if control & 0xE0:
            st = irp.status
            if (
                (control & 0x40 and st < 0x8000_0000)
                or (control & 0x80 and st >= 0x8000_0000)
                or (control & 0x20 and irp.cancel)
            ):
                routine = loc.completion_routine
                context = loc.completion_context
                loc.control = 0
                loc.completion_routine = None
                loc.completion_context = None
                loc.parameters = None
                loc.file_object = None
                owner = stack[index].device if index < n else None
                if routine is None:
                    raise BugCheck(
                        BugCheckCode.INCONSISTENT_IRP,
                        "a stack location has invoke flags but no completion routine",
                        parameters=(irp, index, 0, 0),
                        irp=irp,
                        device=owner,
                    )
                result = routine(owner, irp, context)
                if monitor is not None:
                    monitor.routine_ran(irp, owner, routine, result)
                if result == _SMPR:
                    return
                if type(result) is not NtStatus and type(result) is not int:
                    _check_routine_result(routine, result)
                continue
        if pending and index < n:
            stack[index].control |= 0x01
        loc.control = 0
        loc.completion_routine = None
        loc.completion_context = None
        loc.parameters = None
        loc.file_object = None
    irp._index = n + 1
    master = irp.master_irp
    if master is not None:
        _complete_associated(irp, master)
    else:
        final_stage = irp._final_stage
        if final_stage is not None:
            final_stage(irp)
    waiter = irp._waiter
    if waiter is not None:
        waiter.set()
    if monitor is not None:
        monitor.completed(irp)


def _complete_associated(irp: Irp, master: Irp) -> None:
    # Reference 5.5: the I/O manager does not aggregate statuses; the master completes with
    # whatever its own driver stored in it, once the last associated IRP is done.
    master.associated_irp_count -= 1
    irp.master_irp = None
    if master.associated_irp_count == 0:
        complete_request(master)


def _check_routine_result(routine: object, result: object) -> None:
    if isinstance(result, int) and not isinstance(result, bool):
        return
    if hasattr(result, "close") and hasattr(result, "cr_frame"):
        result.close()
        raise TypeError(
            f"completion routine {routine!r} is a coroutine function: completion routines run inside the"
            " synchronous completion walk and cannot await; make it a plain function and hand slow work"
            " to a task"
        )
    raise TypeError(
        f"completion routine {routine!r} returned {result!r}; it must return STATUS_CONTINUE_COMPLETION"
        " or STATUS_MORE_PROCESSING_REQUIRED"
    )
