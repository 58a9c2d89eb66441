"""IoCompleteRequest: the synchronous upward walk (reference section 5).

The walk runs in place, on the completer's stack, exactly like ``IofCompleteRequest``: completion
routines are plain functions called one after the other, so the whole walk is atomic with respect to
the event loop.  It never creates a task or an event and never checkpoints; the only contact with
the async shell is ``set()`` on the event of a requester that is already waiting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ._bugcheck import BugCheck, BugCheckCode, VerifierCode, chain_follow_on
from ._irp import _UNUSED, CompletionRoutine, Irp, StackLocation
from ._misuse import missing_await
from ._status import (
    STATUS_CONTINUE_COMPLETION,
    STATUS_INTERNAL_ERROR,
    STATUS_MORE_PROCESSING_REQUIRED,
    STATUS_PENDING,
    NtStatus,
)

if TYPE_CHECKING:
    from ._device import DeviceObject

__all__ = ["complete_request"]

_SMPR = int(STATUS_MORE_PROCESSING_REQUIRED)
_PENDING = int(STATUS_PENDING)
_CONTINUE = STATUS_CONTINUE_COMPLETION
_TRACED = object()
#: What an IRP's final status can never be (0xFFFFFFFF also in its signed form).
_NEVER_FINAL = frozenset((_PENDING, 0xFFFF_FFFF, -1))
_INVOKE_ALWAYS = 0xE0  # SL_INVOKE_ON_SUCCESS | SL_INVOKE_ON_ERROR | SL_INVOKE_ON_CANCEL


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

    A completion routine that raises does not strand the IRP: the walk goes on without it (its
    pending mark propagated, the status set to STATUS_INTERNAL_ERROR and the exception kept as
    :attr:`~airp.Irp.routine_error`), the final stage runs and the waiter wakes, and then the
    exception propagates to the caller of ``complete_request`` (if finishing the walk raises too, a
    0x2A from a driver-allocated IRP's final stage say, that follow-on is chained to the routine's
    exception as its ``follow_on``, never raised in its place).  Likewise a final stage that raises
    (a bug check such as 0x312, or 0x2A for a driver's own IRP that reached the top, reference 5.8)
    wakes the waiter, which raises the same exception, and so do, when they complete, the waiters
    of the IRPs still in flight given as the context of the last routine that ran (an IRP, or IRPs
    in a tuple or list).  A request given there that has already completed (the routine completed
    it, then let the walk of its driver's own IRP go on to the top) keeps its own result: the bug
    check goes to whoever called ``complete_request``.  A routine that ran with
    ``pending_returned`` set, let the walk go on and left its owner's location unmarked is noted,
    so that the I/O manager reports 0xC9 / 0x228 naming it rather than 0x23D against the top driver.

    :param irp: the IRP to complete.
    :param status: if given, stored as ``irp.status`` first.
    :param information: if given, stored as ``irp.information`` first.  Both are validated before
        either is written.
    :raises BugCheck: 0x44 if the IRP was already completed, or if a completion routine completed
        its own IRP and then returned STATUS_CONTINUE_COMPLETION, or if a driver-allocated IRP that
        had already come back to its creator is completed again by a lower driver (its code is
        seen working on the IRP) or after its creator freed it; 0x2A if it is completed again
        otherwise (the creator's own breach of reference 5.8); 0xC9 / 0x06 if the status is
        STATUS_PENDING (or 0xFFFFFFFF); 0xC9 / 0x07 if a cancel routine is still set.
    :raises TypeError: if *irp* is not an IRP, if *status* or *information* is not an int, or a
        completion routine returns something that is not a status (a coroutine, ``None``, ...).
    """
    try:
        n = irp.stack_count
        index = irp._index
    except AttributeError:
        raise TypeError(f"complete_request needs an Irp, got {type(irp).__name__} {irp!r}{missing_await(irp)}") from None
    if index > n:
        _completed_twice(irp)
    start = index  # where this walk begins, for a driver-allocated IRP's final stage (WALK_START)
    # Validate both values before writing either: a refused call leaves the IRP as it was.
    if information is not None and (type(information) is not int or information < 0):
        raise TypeError(f"information must be a non-negative int, got {information!r}")
    if status is not None:
        irp.status = status if type(status) is NtStatus else NtStatus(status)
    if information is not None:
        irp.information = information
    st = irp.status
    if st in _NEVER_FINAL or irp.cancel_routine is not None:
        _bad_completion(irp)
    monitor = irp._monitor
    usual: object
    if monitor is None:
        usual = _CONTINUE
    else:
        # No routine returns this object, so with tracing on every result takes the checked path
        # below, which reports it; with tracing off the usual result costs one identity test.
        usual = _TRACED
        monitor.completing(irp)
    stack = irp._stack
    # The last routine that ran, for the final stage of a driver-allocated IRP (the 5.8 message)
    # and for the IRPs a final-stage bug check is recorded on (its context).
    routine: CompletionRoutine | None = None
    context: object = None
    owner: DeviceObject | None = None
    result: object = None
    while index < n:
        loc = stack[index]
        # From here on the owner of loc's routine is "current" (CurrentLocation == index + 1);
        # irp._index is stored only before something can look at it (a routine, or the end).
        index += 1
        control = loc.control
        if control == _INVOKE_ALWAYS:
            # The usual case, a routine for success, error and cancel and no pending mark: no
            # predicate to evaluate.
            irp.pending_returned = False
        else:
            if control <= 1:
                # No invoke flags, at most the pending mark (a location without a routine).
                pending = irp.pending_returned = control == 1
                invoke = False
            else:
                pending = irp.pending_returned = (control & 0x01) != 0
                invoke = control & 0xC0 == 0xC0 or (control & 0xE0 != 0 and _invoke(control, irp))
            if not invoke:
                # No routine runs here: the pending mark goes up to the owner's location.
                if pending and index < n:
                    owner_loc = stack[index]
                    if owner_loc is _UNUSED:  # only if _index was moved by hand
                        owner_loc = stack[index] = StackLocation()
                    owner_loc.control |= 0x01
                if loc is not _UNUSED:
                    loc.control = 0
                    loc.completion_routine = None
                    loc.completion_context = None
                    loc.parameters = None
                    loc.file_object = None
                continue
        irp._index = index
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
        try:
            result = routine(owner, irp, context)
        except BaseException as error:
            _routine_raised(irp, index, error, routine, owner, context)
            raise
        if irp._index != index:
            # The routine completed its own IRP (the walk above it has already run) or moved it.
            if result == _SMPR:
                return
            _completed_inside_routine(irp, routine, owner)
        if control & 0x01 and index < n and not stack[index].control & 0x01 and result != _SMPR:
            # The routine ran with pending_returned set, let the walk go on and left the owner's
            # location unmarked (reference 5.4, Verifier 0x228).  Noted for the check on what the
            # top dispatch routine returned, which would otherwise blame the top driver (0x23D).
            # The usual location (0xE0, no pending mark) pays the one bit test.
            _dropped_mark(irp, routine, owner)
        if result is not usual:  # STATUS_CONTINUE_COMPLETION itself needs no check
            if type(result) is not NtStatus and type(result) is not int:
                try:
                    _check_routine_result(routine, result)
                except TypeError as error:
                    _routine_raised(irp, index, error, routine, owner, context)
                    raise
            if monitor is not None:
                monitor.routine_ran(irp, owner, routine, result)
            if result == _SMPR:
                return
    irp._index = n + 1
    master = irp.master_irp
    if master is not None:
        _complete_associated(irp, master)
    else:
        final_stage = irp._final_stage
        if final_stage is not None:
            if final_stage is _creator_final_stage:
                # A driver-allocated IRP reached the top (a breach of 5.8, never the usual path):
                # its final stage names the last routine that ran and what it returned.
                irp.__dict__[LAST_ROUTINE] = None if routine is None else (routine, result, owner)
                irp.__dict__[WALK_START] = start
            try:
                final_stage(irp)
            except BaseException as error:
                # A bug check of the final stage (the 5.8 rule, 0x312, ...) goes to the completer
                # *and* to whoever waits: the waiter is woken now and raises it.  So does the
                # waiter of every IRP the last routine was given as its context (the request a
                # driver's own IRP was serving, which that routine may already have completed).
                irp._final_error = error
                _wake(irp)
                _record_on_linked(error, context, irp)
                raise
    waiter = irp._waiter
    if waiter is not None:
        waiter.set()
    if monitor is not None:
        monitor.completed(irp)


#: In a driver-allocated IRP's instance dict, for its final stage: (routine, result, device) of the
#: last completion routine that ran in the walk that reached the top, or None if none ran.
LAST_ROUTINE = "_airp_last_routine"

#: In a driver-allocated IRP's instance dict, for its final stage: the index of the location the
#: walk that reached the top began at (its current location when complete_request was called).
#: A walk that began where the IRP had already been handed back to its creator is a completion
#: after the one that handed it back: the final stage tells a lower driver's second completion
#: (0x44) from the creator's breach of 5.8 (0x2A).
WALK_START = "_airp_walk_start"

#: The final stage of a driver-allocated IRP (airp._machine._allocation installs it).
_creator_final_stage: Callable[[Irp], None] | None = None


def _install_creator_final_stage(stage: Callable[[Irp], None]) -> None:
    """The final stage for which the walk notes the last routine that ran (:data:`LAST_ROUTINE`)."""
    global _creator_final_stage
    _creator_final_stage = stage


def _record_on_linked(error: BaseException, context: object, irp: Irp) -> None:
    """Make a bug check raised while completing *irp* reach the waiters of the IRPs linked to it.

    The link is the one a driver already makes: the context of the completion routine that ran
    last, if it is an IRP or a tuple or list holding IRPs (``(parent, ...)``).  Each such IRP that
    is still in flight and has no error yet gets *error* as its final error: whoever awaits it
    raises the bug check when it completes.  A linked IRP that has already completed (the routine
    completed the request it served, then let the walk of its own IRP go on to the top) keeps its
    own result: its requester gets what its request did, and the bug check goes to whoever called
    ``complete_request``.
    """
    if isinstance(context, Irp):
        linked: tuple[object, ...] | list[object] = (context,)
    elif isinstance(context, (tuple, list)):
        linked = context
    else:
        return
    for other in linked:
        if isinstance(other, Irp) and other is not irp and other._final_error is None and other._index <= other.stack_count:
            other._final_error = error


#: In an IRP's instance dict: (routine, device) of the first completion routine that let the walk
#: go on without propagating the pending mark to its owner's location (see _dropped_mark).
DROPPED_MARK = "_airp_dropped_mark"


#: In an IRP's instance dict: ``(device, status, marked)`` for the first dispatch routine (the
#: innermost: it returns first) that ``call_driver`` saw returning a status its IRP contradicts,
#: so that the I/O manager's check on what the top driver returned (0x23D, 0x226) names that
#: driver rather than the top one, which only passed the status up.  *marked* says whether its
#: location was marked pending (``None``: the IRP was below it).  Noted only for watched IRPs
#: (tracing or the Verifier on): the synchronous path with both off pays nothing for it.
WRONG_RETURN = "_airp_wrong_return"


def _dropped_mark(irp: Irp, routine: object, owner: object) -> None:
    irp.__dict__.setdefault(DROPPED_MARK, (routine, owner))


def _wake(irp: Irp) -> None:
    waiter = irp._waiter
    if waiter is not None:
        waiter.set()


def _completed_twice(irp: Irp) -> None:
    cause = irp.routine_error
    note = ""
    if cause is not None:
        note = (
            f"; airp had already completed it with STATUS_INTERNAL_ERROR because a routine raised"
            f" {type(cause).__name__}: {cause}"
        )
    raise BugCheck(
        BugCheckCode.MULTIPLE_IRP_COMPLETE_REQUESTS,
        f"an IRP was completed twice: after complete_request the IRP belongs to the I/O manager{note}",
        parameters=(irp, 0, 0, 0),
        irp=irp,
    )


def _completed_inside_routine(irp: Irp, routine: object, owner: object) -> None:
    raise BugCheck(
        BugCheckCode.MULTIPLE_IRP_COMPLETE_REQUESTS,
        f"completion routine {routine!r} completed its own IRP and then returned STATUS_CONTINUE_COMPLETION:"
        " the walk it was called from would complete the IRP a second time. A routine that completes the"
        " IRP itself must return STATUS_MORE_PROCESSING_REQUIRED",
        parameters=(irp, 0, 0, 0),
        irp=irp,
        device=owner,
        driver=getattr(owner, "driver", None),
    )


def _routine_raised(
    irp: Irp, index: int, error: BaseException, routine: object, owner: object, context: object = None
) -> None:
    """A completion routine raised: finish the walk without it, then let the error go on.

    The IRP must still complete exactly once and wake whoever waits, so the walk goes on as if the
    routine had returned STATUS_CONTINUE_COMPLETION after propagating the pending mark, with the
    status STATUS_INTERNAL_ERROR (the routine's work is unknown); the completer then gets the
    exception, and the requester an error whose cause it is (:attr:`Irp.routine_error`).
    """
    if isinstance(error, BugCheck):
        # A bug check in a completion routine (completing the request it serves twice, say)
        # reaches the waiters of the IRPs it was given as context, as a final-stage one does.
        _record_on_linked(error, context, irp)
    if irp._index != index or irp._index > irp.stack_count:
        return  # the routine completed or moved the IRP itself before raising: it is not ours
    irp.cancel_routine = None
    irp.status = STATUS_INTERNAL_ERROR
    irp.information = 0
    if irp.routine_error is None:
        irp.routine_error = error
    if irp.pending_returned and index < irp.stack_count:
        owner_loc = irp._stack[index]
        if owner_loc is _UNUSED:
            owner_loc = irp._stack[index] = StackLocation()
        owner_loc.control |= 0x01
    complete_after_error(irp, error)


def complete_after_error(irp: Irp, error: BaseException, status: int | None = None) -> None:
    """``complete_request`` on behalf of a routine that raised *error*: *error* stays the one raised.

    airp completes the IRP a raising routine leaves behind (with *status*, information 0; or as it
    stands when *status* is ``None``, to finish a walk).  That completion may break a rule of its
    own: the final stage of a driver-allocated IRP whose creator had no routine returning
    STATUS_MORE_PROCESSING_REQUIRED raises 0x2A, a routine higher up raises.  Such a follow-on
    never replaces *error*, which says what the driver did first: it is chained to it
    (``error.follow_on`` and a note, :func:`~airp._machine._bugcheck.chain_follow_on`), and this
    call returns normally so that the caller re-raises *error*.  The IRP still completes exactly
    once: the walk's own handling of a raising routine or final stage has run by then.  A
    follow-on that is not an ``Exception`` (``KeyboardInterrupt``) propagates.

    :param irp: the IRP the raising routine held.
    :param error: what the routine raised.
    :param status: the status to complete with (STATUS_INTERNAL_ERROR, STATUS_CANCELLED), or
        ``None`` to go on with the IRP's own status.
    """
    try:
        if status is None:
            complete_request(irp)
        else:
            complete_request(irp, status, 0)
    except Exception as follow_on:
        if follow_on is error:
            raise
        chain_follow_on(error, follow_on)


def _invoke(control: int, irp: Irp) -> bool:
    # The invoke predicate for a location that does not ask for both success and error.  The
    # status is judged as NT_SUCCESS judges the signed value: a driver may have stored the signed
    # form C prints (-1073741536 for STATUS_CANCELLED), which is an error, not a success.
    success = 0 <= irp.status < 0x8000_0000
    return bool(
        (control & 0x40 and success) or (control & 0x80 and not success) or (control & 0x20 and irp.cancel)
    )


def _bad_completion(irp: Irp) -> None:
    st = irp.status
    if st in _NEVER_FINAL:
        raise BugCheck(
            BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION,
            f"complete_request with status {NtStatus(st).name}: STATUS_PENDING is what a dispatch routine returns, never an IRP's final status",
            parameters=(VerifierCode.COMPLETE_WITH_PENDING_STATUS, st, irp, 0),
            irp=irp,
        )
    raise BugCheck(
        BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION,
        f"complete_request with cancel routine {irp.cancel_routine!r} still set: disarm it with set_cancel_routine(None) first",
        parameters=(VerifierCode.COMPLETE_WITH_CANCEL_ROUTINE, irp.cancel_routine, irp, 0),
        irp=irp,
    )


def _complete_associated(irp: Irp, master: Irp) -> None:
    # Reference 5.5: the I/O manager does not aggregate statuses; the master completes with
    # whatever its own driver stored in it, once the last associated IRP is done.
    master.associated_irp_count -= 1
    irp.master_irp = None
    final_stage = irp._final_stage
    if final_stage is not None:
        # The associated IRP's own final stage (airp._machine._associated): frees it and, before the last
        # one completes the master, disarms the cancel routine that cancels associated IRPs.
        final_stage(irp)
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
