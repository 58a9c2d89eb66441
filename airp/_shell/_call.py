"""IoCallDriver as a coroutine chain (reference section 3).

``call_driver`` awaits the dispatch routine directly: sending an IRP down four layers is four nested
``await``s on the requester's own task, with no task, event or checkpoint of airp's making.  A
driver that completes the IRP synchronously therefore returns through the whole chain without the
event loop ever running.
"""

from __future__ import annotations

from .._machine._bugcheck import BugCheck, BugCheckCode, VerifierCode
from .._machine._codes import IrpMajor
from .._machine._completion import DROPPED_MARK, WRONG_RETURN, complete_after_error
from .._machine._device import DeviceObject
from .._machine._driver import _install_pass_down
from .._machine._irp import _UNUSED, Irp, IrpStateError, StackLocation
from .._machine._misuse import missing_await, must_be
from .._machine._monitor import current_request
from .._machine._status import STATUS_CANCELLED, STATUS_INTERNAL_ERROR, STATUS_PENDING, NtStatus

_DELETE_PENDING_MAJORS = frozenset((IrpMajor.CLEANUP, IrpMajor.CLOSE))

__all__ = ["call_driver", "pass_down"]


async def call_driver(device: DeviceObject, irp: Irp) -> NtStatus:
    """``IoCallDriver``: hand *irp* to the driver of *device* and return what its dispatch returns.

    Moves the IRP to its next stack location, records *device* there, and awaits the dispatch
    routine for that location's major function.  The status comes back unchanged: STATUS_PENDING
    means the IRP is still in flight and will be completed later; anything else is the dispatch
    routine's own answer (which should match ``irp.status``).  After the call the sender must not
    touch the IRP unless it holds it through a completion routine that returns
    STATUS_MORE_PROCESSING_REQUIRED.

    A dispatch routine that raises while it still holds the IRP (at its location, not passed on,
    not completed, not marked pending) has the IRP completed with STATUS_INTERNAL_ERROR (the
    exception kept as :attr:`~airp.Irp.routine_error`), then the exception propagates to the
    caller: nobody is left waiting for an IRP whose driver is gone.  If that completion breaks a
    rule in turn (a driver-allocated IRP whose creator kept no routine returning
    STATUS_MORE_PROCESSING_REQUIRED reaches its final stage: 0x2A), the routine's exception is
    still the one raised, the first bug check wins: the follow-on is kept as its ``follow_on``
    attribute and in its notes.

    On cancellation: this call adds nothing; whatever the dispatch routine awaits decides.  A
    requester that goes through :class:`~airp.FileHandle` never cancels driver code: its
    cancellation becomes :func:`~airp.cancel_irp` (see ``docs/cancellation.md``).  Code that calls
    ``call_driver`` directly is driver code and owns its cancel scopes: a dispatch routine
    cancelled by one while it still holds the IRP has it completed with STATUS_CANCELLED.

    :returns: the status returned by the dispatch routine.
    :raises BugCheck: 0x35 if the IRP has no stack location left; 0xC9 / 0x03 if *irp* is not an
        IRP; 0xC9 / 0x04 or 0x204 if *device* is not a live device (a deleted device still takes
        IRP_MJ_CLEANUP and IRP_MJ_CLOSE); 0xC9 / 0x203 if a cancel routine is still set.
    :raises TypeError: if the dispatch routine returns something that is not a status.
    """
    if type(irp) is not Irp and not isinstance(irp, Irp):
        raise _not_an_irp(irp, "call_driver")
    if type(device) is not DeviceObject or device.deleted:
        _bad_device(device, irp)
    index = irp._index - 1
    if not 0 <= index < irp.stack_count:
        _bad_location(irp, index, device)
    if irp.cancel_routine is not None:
        raise BugCheck(
            BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION,
            f"call_driver with cancel routine {irp.cancel_routine!r} still set: a driver must disarm its cancel routine before passing the IRP on",
            parameters=(VerifierCode.CALL_DRIVER_WITH_CANCEL_ROUTINE, irp, 0, 0),
            irp=irp,
            device=device,
            driver=device.driver,
        )
    irp._index = index
    loc = irp._stack[index]
    if loc is _UNUSED:
        loc = irp._stack[index] = StackLocation()
    loc.device = device
    routine = device.driver.major_function[loc.major]
    monitor = irp._monitor
    if monitor is None:
        try:
            status = await routine(device, irp)
        except BaseException as error:
            _dispatch_raised(irp, index, device, error)
            raise
        if type(status) is not NtStatus:
            return _checked_status(status, device)
        return status
    monitor.dispatching(irp, device)
    # An IRP the routine allocates meanwhile is this one's child (the monitor links them).
    token = current_request.set(irp)
    try:
        status = await routine(device, irp)
    except BaseException as error:
        _dispatch_raised(irp, index, device, error)
        raise
    finally:
        current_request.reset(token)
    if type(status) is not NtStatus:
        status = _checked_status(status, device)
    # Only an IRP still at or below this location, or a STATUS_PENDING, can need a note: the usual
    # synchronous return (the IRP completed past this location, another status) pays two tests.
    if (irp._index <= index or status == STATUS_PENDING) and WRONG_RETURN not in irp.__dict__:
        _note_wrong_return(irp, index, device, status)
    return monitor.dispatched(irp, device, status)


def _note_wrong_return(irp: Irp, index: int, device: DeviceObject, status: NtStatus) -> None:
    """Note *device* if its dispatch routine just returned *status* for an IRP that says otherwise.

    Read only when the top driver's return fails its check, so a note never raises anything by
    itself; it only decides whom the bug check names.

    - The IRP is still at *device*'s location (not completed, not passed on): STATUS_PENDING there
      needs the location's pending mark (0x23D), and any other status means the routine returned
      without completing the IRP (0x226; 0x23E's case if it had marked it).  An IRP whose
      completion the Verifier holds back (forced pending) reads STATUS_PENDING and is the
      Verifier's until it resumes: no note then.
    - The IRP is below it, still in flight: a status other than STATUS_PENDING was made up (the
      lower driver's STATUS_PENDING is what goes up).
    - The IRP has completed all the way up and reads ``pending_returned`` false, with no completion
      routine noted for dropping the mark: STATUS_PENDING was returned for an IRP that was never
      marked, here or below (the innermost such routine is noted first).
    """
    at = irp._index
    if at == index:
        marked = bool(irp._stack[index].control & 0x01)
        if status != STATUS_PENDING:
            irp.__dict__[WRONG_RETURN] = (device, status, marked)
        elif not marked and irp.status != STATUS_PENDING:
            irp.__dict__[WRONG_RETURN] = (device, status, False)
    elif at < index:
        if status != STATUS_PENDING:
            irp.__dict__[WRONG_RETURN] = (device, status, None)
    elif status == STATUS_PENDING and at > irp.stack_count and not irp.pending_returned and DROPPED_MARK not in irp.__dict__:
        irp.__dict__[WRONG_RETURN] = (device, status, False)


def _dispatch_raised(irp: Irp, index: int, device: DeviceObject, error: BaseException) -> None:
    """A dispatch routine raised: complete its IRP if it still held it, so that nobody waits forever.

    It still holds the IRP if the IRP is at the location it was given, not pended: not completed
    (that moves it up), not passed on (down), not handed to a queue (marked pending; the queue will
    finish it).  An IRP handed back by a lower driver's STATUS_MORE_PROCESSING_REQUIRED routine is
    at that location again, so it is still held.  The status is STATUS_INTERNAL_ERROR, or
    STATUS_CANCELLED when the routine was cancelled (its own scope, or a device being torn down).
    """
    if irp._index != index or irp._stack[index].control & 0x01:
        return
    irp.cancel_routine = None
    # That completion may break a rule of its own (a driver-allocated IRP whose creator kept no
    # routine reaches its final stage: 0x2A); the routine's error stays the one raised, with the
    # follow-on chained to it (complete_after_error).
    if isinstance(error, Exception):
        if irp.routine_error is None:
            irp.routine_error = error
        complete_after_error(irp, error, STATUS_INTERNAL_ERROR)
    else:
        complete_after_error(irp, error, STATUS_CANCELLED)


def _bad_location(irp: Irp, index: int, device: DeviceObject) -> None:
    if index < 0:
        # The device that ran out is the one holding the last location (it sends from location 1),
        # which, through a filled next location, reference 3 step 2 also finds here.
        sender = irp._stack[0].device
        by = f", sent by {sender!r}, whose location is the IRP's last one" if sender is not None else ""
        raise BugCheck(
            BugCheckCode.NO_MORE_IRP_STACK_LOCATIONS,
            f"{irp!r} has no stack location left for {device!r}{by}: allocate IRPs with at least the"
            f" target's stack_size ({device.stack_size})",
            parameters=(irp, 0, 0, 0),
            irp=irp,
            device=device,
            driver=device.driver,
        )
    raise IrpStateError(f"cannot send {irp!r}: it has completed; reuse it before sending it again")


async def pass_down(device: DeviceObject, irp: Irp) -> NtStatus:
    """Skip the current location and send *irp* to ``device.lower_device``, untouched.

    The idiom for "I have nothing to do with this request": the lower driver receives this very
    location (and the completion routine of the driver above, if any).  This driver gets no
    completion callback.

    On cancellation: as :func:`call_driver`.

    :returns: the lower driver's status, which a dispatch routine returns unchanged.
    :raises IrpStateError: if *device* has no lower device.
    :raises TypeError: if *device* is not a DeviceObject or *irp* not an IRP.
    """
    if type(device) is not DeviceObject and not isinstance(device, DeviceObject):
        raise must_be("pass_down(device, irp): device", "the DeviceObject whose dispatch routine passes the IRP down", device)
    if type(irp) is not Irp and not isinstance(irp, Irp):
        raise must_be("pass_down(device, irp): irp", "an Irp", irp)
    lower = device.lower_device
    if lower is None:
        raise IrpStateError(f"cannot pass {irp!r} down: {device!r} is not attached to a lower device")
    irp.skip_current_stack_location()
    return await call_driver(lower, irp)


# A pass-through Driver's default dispatch routine passes IRPs down with pass_down: the machine
# cannot import the shell, so the shell installs it there when it is imported.
_install_pass_down(pass_down)


def check_call(device: object, irp: object, what: str) -> None:
    """What :func:`call_driver` checks first, for a helper that calls it after touching the IRP.

    :func:`~airp.call_driver_and_wait` sets a completion routine, :func:`~airp.forward_and_wait`
    copies a location: with a non-IRP that fails as an ``AttributeError``, and with a non-device
    the IRP is left with a routine and no driver.  The bug checks are call_driver's own, named
    after *what* was called.

    :raises BugCheck: 0xC9 / 0x03 if *irp* is not an IRP; 0xC9 / 0x204 if *device* is ``None``,
        0xC9 / 0x04 if it is not a DeviceObject.
    """
    if type(irp) is not Irp and not isinstance(irp, Irp):
        raise _not_an_irp(irp, what)
    if type(device) is not DeviceObject and not isinstance(device, DeviceObject):
        _bad_device(device, irp, what)


def _not_an_irp(irp: object, what: str) -> BugCheck:
    return BugCheck(
        BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION,
        f"{what} was given {type(irp).__name__} {irp!r}, not an Irp{missing_await(irp)}",
        parameters=(VerifierCode.CALL_DRIVER_NON_IRP, irp, 0, 0),
    )


def _bad_device(device: object, irp: Irp, what: str = "call_driver") -> None:
    if device is None:
        raise BugCheck(
            BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION,
            f"{what} with no device object (device is None)",
            parameters=(VerifierCode.NULL_DEVICE_OBJECT, irp, 0, 0),
            irp=irp,
        )
    if isinstance(device, DeviceObject):
        if not device.deleted:
            return
        index = irp._index - 1
        if 0 <= index < irp.stack_count and irp._stack[index].major in _DELETE_PENDING_MAJORS:
            # IoDeleteDevice with handles still open leaves the device delete-pending: it still
            # gets the CLEANUP and CLOSE of those handles (reference 8.3).
            return
    raise BugCheck(
        BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION,
        f"{what} was given {type(device).__name__} {device!r}, which is not a live DeviceObject{missing_await(device)}",
        parameters=(VerifierCode.CALL_DRIVER_INVALID_DEVICE, device, irp, 0),
        irp=irp,
    )


def _checked_status(status: object, device: DeviceObject) -> NtStatus:
    if isinstance(status, int) and not isinstance(status, bool):
        return NtStatus(status)
    raise TypeError(
        f"the dispatch routine of {device.driver!r} for {device!r} returned {status!r}; a dispatch routine"
        " returns an NTSTATUS: the IRP's status, or STATUS_PENDING after marking it pending"
    )
