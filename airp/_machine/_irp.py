"""The IRP, its stack locations and the stack-location macros (reference sections 1, 4).

This module is part of the sans-I/O machine: it imports no event loop library.  Only awaiting a
pended IRP needs the async shell, which installs its waiter here when it is imported
(``airp._shell._waiting``), so an IRP can be built, sent through synchronous test doubles and
completed without any event loop.

Geometry (reference 1.3).  An IRP with ``stack_count`` locations numbers them 1..stack_count.
``current_location`` starts at ``stack_count + 1`` ("no current location": the IRP belongs to its
creator), :func:`~airp.call_driver` decrements it, :meth:`Irp.skip_current_stack_location`
increments it, and the completion walk climbs back up until ``stack_count + 2`` ("completed").
The creator fills the *next* location, which for a fresh IRP is location ``stack_count``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Generator
from dataclasses import dataclass
from types import CodeType as _CodeType
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from ._bugcheck import BugCheck, BugCheckCode
from ._codes import IrpMajor, StackControl
from ._status import STATUS_SUCCESS, IoStatus, NtStatus

if TYPE_CHECKING:
    from ._device import DeviceObject
    from ._file import FileObject
    from ._monitor import MonitorHooks

__all__ = [
    "CancelRoutine",
    "CompletionRoutine",
    "DeviceIoControlParameters",
    "Irp",
    "IrpStateError",
    "OtherParameters",
    "ReadWriteParameters",
    "StackLocation",
]

#: ``routine(device, irp, context) -> status``: a plain function run during the completion walk.
#: ``device`` is the device of the location that owns the routine, or ``None`` for the IRP's
#: creator.  Return ``STATUS_CONTINUE_COMPLETION`` to let the walk go on, or
#: ``STATUS_MORE_PROCESSING_REQUIRED`` to stop it and keep the IRP.
CompletionRoutine = Callable[["DeviceObject | None", "Irp", Any], int]

#: ``routine(device, irp) -> None``: a plain function run by :func:`~airp.cancel_irp`.
CancelRoutine = Callable[["DeviceObject | None", "Irp"], None]

_PENDING_RETURNED = int(StackControl.PENDING_RETURNED)
_INVOKE_ON_SUCCESS = int(StackControl.INVOKE_ON_SUCCESS)
_INVOKE_ON_ERROR = int(StackControl.INVOKE_ON_ERROR)
_INVOKE_ON_CANCEL = int(StackControl.INVOKE_ON_CANCEL)
_INVOKE_ALWAYS = _INVOKE_ON_SUCCESS | _INVOKE_ON_ERROR | _INVOKE_ON_CANCEL

#: The largest stack a CHAR StackCount can describe.
MAX_STACK_SIZE = 127


_new_tuple = tuple.__new__
_new_object = object.__new__


def _io_status(status: int, information: int) -> IoStatus:
    # IoStatus(...) through the NamedTuple constructor costs three times as much.
    if type(status) is not NtStatus:
        status = NtStatus(status)
    return _new_tuple(IoStatus, (status, information))


def _no_waiter(irp: Irp) -> Generator[Any, None, IoStatus]:
    # Runs only where no async shell was imported: the machine alone cannot wait.
    raise RuntimeError(
        f"cannot await {irp!r}: it is still pending, and waiting for a pending IRP is the async shell's"
        " job; import airp (or airp._shell._waiting), which installs the waiter"
    )


#: What ``await irp`` runs for an IRP in flight (Irp.__await__: ``yield from _await_pending(irp)``).
#: Waiting is the async shell's business: importing airp._shell._waiting installs its waiter here
#: (_install_pending_waiter), which Irp.__await__ then calls directly; until then, _no_waiter.
_await_pending: Callable[[Irp], Generator[Any, None, IoStatus]] = _no_waiter


def _install_pending_waiter(waiter: Callable[[Irp], Generator[Any, None, IoStatus]]) -> None:
    """The async shell's hook: ``await irp`` on a pending IRP runs ``yield from waiter(irp)``."""
    global _await_pending
    _await_pending = waiter


#: CO_COROUTINE | CO_ITERABLE_COROUTINE | CO_ASYNC_GENERATOR: code that cannot run synchronously.
_CO_ASYNC = inspect.CO_COROUTINE | inspect.CO_ITERABLE_COROUTINE | inspect.CO_ASYNC_GENERATOR


#: Code flags of a function whose body does not run when it is called: a coroutine function, an
#: async generator function, or a generator function (calling one only makes the object).
_CO_NOT_PLAIN = _CO_ASYNC | inspect.CO_GENERATOR


def _not_plain_function(routine: object) -> str | None:
    """Why *routine* cannot be a routine that runs synchronously to its end, or ``None`` if it can.

    A cancel routine, a completion routine or a cancel-safe queue callback is called inside a
    synchronous call (``cancel_irp``, the completion walk, a queue operation) and its work is
    expected done when it returns.  ``None`` (a routine forgotten), something not callable, a
    coroutine function (an ``async def``, also behind ``functools.partial`` or as a callable
    object's ``__call__``), an async generator function and a generator function would all be
    found out only when the routine is called, where the IRP is mid-cancel or mid-walk and nobody
    is left to complete it.

    :returns: the reason, for a TypeError that also names the parameter; ``None`` if *routine*
        is a plain function (or method, builtin, partial, class, or callable object).
    """
    # Functions, bound methods and partials of them (nearly every routine) answer from their code
    # flags at once: what a partial calls is its func.
    target = routine
    while type(target) is functools.partial:
        target = target.func
    code = getattr(target, "__code__", None)
    if type(code) is _CodeType:
        flags = code.co_flags
        if not flags & _CO_NOT_PLAIN:
            return None
        if flags & _CO_ASYNC:
            return f"got coroutine function {routine!r}, whose body would only run when awaited"
        return f"got generator function {routine!r}, whose body would never run"
    if routine is None:
        return "got None"
    if not callable(routine):
        return f"got {type(routine).__name__} {routine!r}, which is not callable"
    if inspect.iscoroutinefunction(routine) or inspect.isasyncgenfunction(routine):
        return f"got coroutine function {routine!r}, whose body would only run when awaited"
    if inspect.isgeneratorfunction(routine):
        return f"got generator function {routine!r}, whose body would never run"
    if not (inspect.isfunction(routine) or inspect.ismethod(routine) or isinstance(routine, type)):
        # A callable object: its type's __call__ decides (inspect looks only at functions).
        call = type(routine).__call__  # callable(), and neither a function nor a class: it has one
        if inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call):
            return f"got {routine!r}, whose __call__ is a coroutine function and would only run when awaited"
    return None


#: The completion routine set_completion_routine last found to be a plain function (a memo of a
#: pure check, not run state: a routine is a plain function or not, for good).  A sentinel, not
#: None, so that None itself is checked (and refused) on the first call.
_last_good_routine: object = object()


def _bad_completion_routine(routine: object) -> NoReturn:
    raise TypeError(
        "set_completion_routine(routine): a completion routine must be a plain function"
        f" (device, irp, context) -> status; {_not_plain_function(routine)}"
        " (completion routines run inside the synchronous completion walk and cannot await; hand slow"
        " work to a task)"
    )


def _out_of_locations(irp: Irp, what: str) -> NoReturn:
    """Bug check 0x35 for a driver at the bottom location that prepares the next one (reference 3, 4).

    In Windows the stack-location macros do not check: ``IoCopyCurrentIrpStackLocationToNext``,
    ``IoSetCompletionRoutine`` and ``IoGetNextIrpStackLocation`` at location 1 write below the
    array, and the ``IoCallDriver`` that follows stops with NO_MORE_IRP_STACK_LOCATIONS.  airp stops
    at the first of these calls, with the same code, naming the device whose location was the last.
    """
    device = irp._stack[0].device
    driver = getattr(device, "driver", None)
    lower = getattr(device, "lower_device", None)
    below = f" (its lower device {lower!r} would need one)" if lower is not None else ""
    raise BugCheck(
        BugCheckCode.NO_MORE_IRP_STACK_LOCATIONS,
        f"{what} on {irp!r}, whose current location is its last one (1 of {irp.stack_count}, held by"
        f" {device!r}): there is no location left for a lower driver{below}. An IRP needs the stack_size"
        " of the stack it is sent to: build it after the stack is complete, or allocate a new IRP to"
        " send to another stack",
        parameters=(irp, 0, 0, 0),
        irp=irp,
        device=device,
        driver=driver,
    )


class IrpStateError(RuntimeError):
    """An IRP was used in a way its current state does not allow (no such stack location, ...).

    Misuse that Windows answers with a bug check raises :class:`~airp.BugCheck` instead.
    """


class _Waker(Protocol):
    def set(self) -> None: ...


# The parameter records are frozen, slotted dataclasses (fields, equality, hash, repr and
# dataclasses.replace as usual), with a hand-written __init__: the generated one of a frozen
# dataclass stores each field through ``object.__setattr__(self, name, value)``, a global, an
# attribute and a name look-up per field, which made a record cost ~3x a plain slotted class to
# build.  Ours stores through the slot descriptors' own ``__set__``, bound once below (the
# ``_set_*`` names), which skips the frozen ``__setattr__`` the same way at about half the cost.
# The I/O manager builds one per request.  (The dataclass keeps an ``__init__`` defined in the
# class body, and so does mypy.)


@dataclass(frozen=True, slots=True)
class ReadWriteParameters:
    """``Parameters.Read`` / ``Parameters.Write`` of a stack location."""

    length: int
    byte_offset: int = 0
    key: int = 0

    def __init__(self, length: int, byte_offset: int = 0, key: int = 0) -> None:
        _set_rw_length(self, length)
        _set_rw_byte_offset(self, byte_offset)
        _set_rw_key(self, key)


@dataclass(frozen=True, slots=True)
class DeviceIoControlParameters:
    """``Parameters.DeviceIoControl`` (also used for internal device control)."""

    io_control_code: int
    input_buffer_length: int = 0
    output_buffer_length: int = 0
    #: METHOD_NEITHER only: the requester's input buffer, as given.
    type3_input_buffer: Any = None

    def __init__(
        self,
        io_control_code: int,
        input_buffer_length: int = 0,
        output_buffer_length: int = 0,
        type3_input_buffer: Any = None,
    ) -> None:
        _set_ioctl_code(self, io_control_code)
        _set_ioctl_input_length(self, input_buffer_length)
        _set_ioctl_output_length(self, output_buffer_length)
        _set_ioctl_type3(self, type3_input_buffer)


@dataclass(frozen=True, slots=True)
class OtherParameters:
    """``Parameters.Others``: four untyped arguments, for internal requests between drivers."""

    argument1: Any = None
    argument2: Any = None
    argument3: Any = None
    argument4: Any = None

    def __init__(self, argument1: Any = None, argument2: Any = None, argument3: Any = None, argument4: Any = None) -> None:
        _set_other_1(self, argument1)
        _set_other_2(self, argument2)
        _set_other_3(self, argument3)
        _set_other_4(self, argument4)


def _slot_setter(cls: type, name: str) -> Callable[[object, object], None]:
    # The slot's member descriptor, from the class the dataclass decorator made (slots=True
    # returns a new class): its __set__ writes the slot without going through __setattr__.
    setter: Callable[[object, object], None] = cls.__dict__[name].__set__
    return setter


_set_rw_length = _slot_setter(ReadWriteParameters, "length")
_set_rw_byte_offset = _slot_setter(ReadWriteParameters, "byte_offset")
_set_rw_key = _slot_setter(ReadWriteParameters, "key")
_set_ioctl_code = _slot_setter(DeviceIoControlParameters, "io_control_code")
_set_ioctl_input_length = _slot_setter(DeviceIoControlParameters, "input_buffer_length")
_set_ioctl_output_length = _slot_setter(DeviceIoControlParameters, "output_buffer_length")
_set_ioctl_type3 = _slot_setter(DeviceIoControlParameters, "type3_input_buffer")
_set_other_1 = _slot_setter(OtherParameters, "argument1")
_set_other_2 = _slot_setter(OtherParameters, "argument2")
_set_other_3 = _slot_setter(OtherParameters, "argument3")
_set_other_4 = _slot_setter(OtherParameters, "argument4")


class StackLocation:
    """One ``IO_STACK_LOCATION``: what one driver in the stack is asked to do.

    Parameter records are frozen, so :meth:`Irp.copy_current_stack_location_to_next` can share
    them between locations the way the C macro copies them by value; build a changed copy with
    :func:`dataclasses.replace`.

    The completion routine stored here belongs to the driver that owns the location *above* (the
    caller), and runs when this location is completed (reference 1.2).
    """

    __slots__ = (
        "completion_context",
        "completion_routine",
        "control",
        "device",
        "file_object",
        "flags",
        "major",
        "minor",
        "parameters",
    )

    def __init__(self) -> None:
        self.major: int = 0
        self.minor: int = 0
        self.flags: int = 0
        self.control: int = 0
        self.parameters: Any = None
        self.device: DeviceObject | None = None
        self.file_object: FileObject | None = None
        self.completion_routine: CompletionRoutine | None = None
        self.completion_context: Any = None

    def __repr__(self) -> str:
        try:
            major = IrpMajor(self.major).name
        except ValueError:
            major = hex(self.major)
        return f"<StackLocation {major} minor={self.minor:#x} control={self.control:#x} device={self.device!r}>"


class _UnusedLocation(StackLocation):
    """The shared, read-only stand-in for a stack location that nothing has used yet.

    A fresh IRP creates only its top location (the one its creator fills); the locations below are
    created when something first writes to them: :func:`~airp.call_driver`, the stack-location
    macros and the accessors (:meth:`Irp.stack_location`, :attr:`Irp.next_stack_location`, ...)
    all do.  Until then ``Irp._stack`` holds this object, whose fields read as a fresh location's.
    Reference 5.9: a location below the one a driver skips to is never used at all, and in a
    forwarded IRP the copy overwrites every field anyway, so creating it early is wasted work.
    """

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise IrpStateError(
            f"cannot set {name!r} on an unused stack location reached through Irp._stack: get it with"
            " Irp.stack_location(), next_stack_location or current_stack_location, which create it"
        )

    def __repr__(self) -> str:
        return "<StackLocation (unused)>"


_UNUSED: StackLocation = _new_object(_UnusedLocation)
for _name, _value in (
    ("major", 0),
    ("minor", 0),
    ("flags", 0),
    ("control", 0),
    ("parameters", None),
    ("device", None),
    ("file_object", None),
    ("completion_routine", None),
    ("completion_context", None),
):
    object.__setattr__(_UNUSED, _name, _value)
del _name, _value


class Irp:
    """An I/O request packet: a request travelling down a device stack and its result coming back.

    Awaiting an IRP returns its final :class:`~airp.IoStatus` once the completion walk has
    finished.  An IRP that is already complete is awaited without touching the event loop (no
    checkpoint, no event); a pending one is awaited through one lazily created event.

    On cancellation: a task that awaits a pending IRP inside a cancelled scope cancels the IRP
    (:func:`~airp.cancel_irp`), waits shielded for its driver to complete it, and then re-raises
    the cancellation.  See :func:`airp.wait_for_irp`.

    :param stack_size: how many stack locations, 1 to 127: at least the ``stack_size`` of the
        device it will be sent to, one more if the sender wants a location for itself.
    :raises TypeError: if *stack_size* is not an int.
    :raises ValueError: if *stack_size* is out of range.
    """

    # Hot fields live in slots and are set by __init__, and so do the transfer fields that the I/O
    # manager writes into every request it builds (flags, file object, buffers): without them in
    # slots each such IRP would carry an instance dict (~300 bytes, the difference between meeting
    # the 1 KiB-per-pending-IRP budget and not).  Cold fields (read often, written by few IRPs)
    # are class-level defaults shadowed through the instance dict only when written: a fresh IRP
    # costs a few stores fewer, and the dict is created only for IRPs that use a cold field.
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_final_stage",
        "_index",
        "_monitor",
        "_stack",
        "_waiter",
        "cancel",
        "cancel_routine",
        "file_object",
        "flags",
        "information",
        "master_irp",
        "mdl",
        "pending_returned",
        "stack_count",
        "status",
        "system_buffer",
        "user_buffer",
    )

    #: ``IRP_*`` flags (:class:`~airp.IrpFlags`).
    flags: int
    #: How the IRP was allocated (issue-specific allocators set it).
    allocation_flags: int = 0
    #: Buffered I/O: the I/O manager's private copy of the data.
    system_buffer: bytearray | None
    #: Neither I/O: the requester's buffer as given; buffered reads: where output is copied back.
    user_buffer: Any
    #: Direct I/O: a view of the requester's buffer (the MDL).
    mdl: memoryview | None
    #: The file object the request was issued for (``OriginalFileObject``).
    file_object: FileObject | None
    #: In a master IRP: how many associated IRPs are still outstanding.
    associated_irp_count: int = 0
    #: Scratch for the driver that currently owns the IRP; invalid once the IRP is completed.
    driver_context: Any = None
    #: The requester (task) the IRP is charged to, if any.
    owner: Any = None
    #: The exception a routine raised while it held this IRP, if airp completed the IRP with
    #: STATUS_INTERNAL_ERROR because of it (a dispatch, completion, cancel or queue routine).
    routine_error: BaseException | None = None
    #: An exception the final stage raised (a bug check): whoever awaits the IRP raises it.
    _final_error: BaseException | None = None
    _trace_id: int = 0

    def __init__(self, stack_size: int) -> None:
        if type(stack_size) is not int:
            raise TypeError(f"stack_size must be an int, got {type(stack_size).__name__} {stack_size!r}")
        if not 1 <= stack_size <= MAX_STACK_SIZE:
            raise ValueError(f"stack_size must be between 1 and {MAX_STACK_SIZE}, got {stack_size}")
        self.stack_count = stack_size
        # Only the creator's location exists yet; the others are made when first used (see
        # _UnusedLocation).  Every location at or above the current one is a real one.
        stack = [_UNUSED] * stack_size
        stack[-1] = StackLocation()
        self._stack = stack
        # 0-based index of the current location: stack_count means "none" (CurrentLocation =
        # StackCount + 1) and stack_count + 1 means completed (StackCount + 2).
        self._index = stack_size
        self.status: int = STATUS_SUCCESS
        self.information: int = 0
        self.pending_returned = False
        self.cancel = False
        self.cancel_routine: CancelRoutine | None = None
        self.master_irp: Irp | None = None
        self._waiter: _Waker | None = None
        self._final_stage: Callable[[Irp], None] | None = None
        self._monitor: MonitorHooks | None = None
        self.flags = 0
        self.file_object = None
        self.system_buffer = None
        self.user_buffer = None
        self.mdl = None

    def _reinitialize(self) -> None:
        """``IoInitializeIrp`` on an existing IRP: every field back to its fresh value.

        Keeps ``stack_count`` and the stack location objects (reset in place).  Callers that must
        keep something (``IoReuseIrp`` keeps ``allocation_flags``) save and restore it.
        """
        # The stores mirror __init__ rather than sharing a helper, which would cost every fresh
        # IRP a call: keep the two lists in step.
        self.__dict__.clear()
        self._index = self.stack_count
        self.status = STATUS_SUCCESS
        self.information = 0
        self.pending_returned = False
        self.cancel = False
        self.cancel_routine = None
        self.master_irp = None
        self._waiter = None
        self._final_stage = None
        self._monitor = None
        self.flags = 0
        self.file_object = None
        self.system_buffer = None
        self.user_buffer = None
        self.mdl = None
        for loc in self._stack:
            if loc is not _UNUSED:
                loc.__init__()  # type: ignore[misc]

    # -- geometry ---------------------------------------------------------------------------

    @property
    def current_location(self) -> int:
        """``CurrentLocation``: 1-based; ``stack_count + 1`` = none, ``stack_count + 2`` = completed."""
        return self._index + 1

    @property
    def completed(self) -> bool:
        """True once the completion walk has reached the top (``CurrentLocation > StackCount + 1``)."""
        return self._index > self.stack_count

    @property
    def io_status(self) -> IoStatus:
        """``IoStatus`` as a record: the status and information written so far."""
        return _io_status(self.status, self.information)

    def stack_location(self, number: int) -> StackLocation:
        """Stack location *number* (1-based, as ``CurrentLocation`` counts).

        :raises TypeError: if *number* is not an int.
        :raises IndexError: if there is no location *number*.
        """
        if type(number) is not int and (not isinstance(number, int) or isinstance(number, bool)):
            raise TypeError(f"stack location number must be an int (1-based), got {type(number).__name__} {number!r}")
        if not 1 <= number <= self.stack_count:
            raise IndexError(f"stack location {number} does not exist: this IRP has locations 1..{self.stack_count}")
        loc = self._stack[number - 1]
        if loc is _UNUSED:
            loc = self._stack[number - 1] = StackLocation()
        return loc

    @property
    def current_stack_location(self) -> StackLocation:
        """``IoGetCurrentIrpStackLocation``: the location of the driver that holds the IRP.

        :raises IrpStateError: if the IRP has no current location (fresh, back with its creator, or
            completed).
        """
        index = self._index
        if index >= self.stack_count:
            raise IrpStateError(f"{self!r} has no current stack location: it has not been sent to a driver, or it is back with its creator")
        loc = self._stack[index]
        if loc is _UNUSED:
            loc = self._stack[index] = StackLocation()
        return loc

    @property
    def next_stack_location(self) -> StackLocation:
        """``IoGetNextIrpStackLocation``: the location the next lower driver will receive.

        :raises BugCheck: 0x35 if the current location is the last one (location 1): the driver
            that holds it has no location to give a lower driver.
        :raises IrpStateError: if the IRP has completed, so it has no next location.
        """
        index = self._index - 1
        if not 0 <= index < self.stack_count:
            if index < 0:
                _out_of_locations(self, "next_stack_location")
            raise IrpStateError(f"{self!r} has no next stack location (stack_count {self.stack_count}, current location {self._index + 1})")
        loc = self._stack[index]
        if loc is _UNUSED:
            loc = self._stack[index] = StackLocation()
        return loc

    # -- the stack-location macros ------------------------------------------------------------

    def skip_current_stack_location(self) -> None:
        """``IoSkipCurrentIrpStackLocation``: give the lower driver this very location.

        The lower driver then sees whatever completion routine the caller above set here; the
        skipping driver gets no completion call.  Do not set a completion routine or mark pending
        after skipping: "next" is then the caller's own location.

        :raises IrpStateError: if the IRP has no current location.
        """
        if self._index >= self.stack_count:
            raise IrpStateError(f"cannot skip: {self!r} has no current stack location")
        self._index += 1

    def copy_current_stack_location_to_next(self) -> None:
        """``IoCopyCurrentIrpStackLocationToNext``: the lower driver gets the same request.

        Copies the major and minor function, flags, parameters, device and file object; zeroes the
        next location's control bits and completion routine, so an upper driver's routine is never
        copied down (Verifier 0x206 / 0x207 cannot happen through this call).

        :raises BugCheck: 0x35 if the current location is the last one (location 1): in Windows the
            copy writes below the array unchecked and the IoCallDriver that follows bug checks
            0x35; airp stops here, naming the device that ran out.
        :raises IrpStateError: if the IRP has no current location (fresh, with its creator, or
            completed): that is not running out of locations but copying from nothing.
        """
        index = self._index
        if not 0 < index < self.stack_count:
            if index == 0:
                _out_of_locations(self, "copy_current_stack_location_to_next")
            raise IrpStateError(f"cannot copy to next: {self!r} has no current location with a location below it")
        stack = self._stack
        src = stack[index]
        dst = stack[index - 1]
        if dst is _UNUSED:
            # Every field is written below: a bare object will do.
            dst = stack[index - 1] = _new_object(StackLocation)
        dst.major = src.major
        dst.minor = src.minor
        dst.flags = src.flags
        dst.parameters = src.parameters
        dst.device = src.device
        dst.file_object = src.file_object
        dst.control = 0
        dst.completion_routine = None
        dst.completion_context = None

    def set_completion_routine(
        self,
        routine: CompletionRoutine,
        context: Any = None,
        *,
        on_success: bool = True,
        on_error: bool = True,
        on_cancel: bool = True,
    ) -> None:
        """``IoSetCompletionRoutine``: run *routine* when the next lower driver completes the IRP.

        Stored on the *next* location; its control bits are reset to the invoke flags.  The routine
        is a plain function ``routine(device, irp, context)`` called during the synchronous
        completion walk; it must return ``STATUS_CONTINUE_COMPLETION`` or
        ``STATUS_MORE_PROCESSING_REQUIRED``.  A routine that does not stop the walk must propagate
        the pending mark: ``if irp.pending_returned: irp.mark_pending()`` (reference 5.4).

        :raises TypeError: if *routine* is ``None``, not callable, or a coroutine function (also
            behind ``functools.partial`` or an ``async def __call__``) or a generator function:
            completion routines run inside the synchronous walk and cannot await, and one found
            out only there would strand the IRP.
        :raises BugCheck: 0x35 if the current location is the last one (location 1): there is no
            next location for the routine (Windows writes below the array and IoCallDriver stops
            with 0x35).
        :raises IrpStateError: if the IRP has completed, so it has no next location.
        """
        index = self._index - 1
        if not 0 <= index < self.stack_count:
            if index < 0:
                _out_of_locations(self, "set_completion_routine")
            raise IrpStateError(f"cannot set a completion routine: {self!r} has no next stack location")
        # A coroutine function would only be found out mid-walk, where it strands the IRP: refuse it
        # here.  Functions and bound methods expose their code object; anything else takes the
        # slower general test.  The last routine found good is remembered, since a filter sets the
        # same one on every IRP it forwards.
        global _last_good_routine
        if routine is not _last_good_routine:
            if _not_plain_function(routine) is not None:
                _bad_completion_routine(routine)
            _last_good_routine = routine
        loc = self._stack[index]
        if loc is _UNUSED:
            loc = self._stack[index] = StackLocation()
        loc.completion_routine = routine
        loc.completion_context = context
        if on_success and on_error and on_cancel:
            loc.control = _INVOKE_ALWAYS
            return
        control = 0
        if on_success:
            control = _INVOKE_ON_SUCCESS
        if on_error:
            control |= _INVOKE_ON_ERROR
        if on_cancel:
            control |= _INVOKE_ON_CANCEL
        loc.control = control

    def mark_pending(self) -> None:
        """``IoMarkIrpPending``: mark the current location as having returned STATUS_PENDING.

        A dispatch routine that returns STATUS_PENDING must mark the IRP first, and one that marks
        it must return STATUS_PENDING (reference 5.4).

        :raises IrpStateError: if the IRP has no current location (a creator on its own
            driver-allocated IRP has none, unless it called :meth:`set_next_stack_location`).
        """
        index = self._index
        if index >= self.stack_count:
            raise IrpStateError(f"cannot mark pending: {self!r} has no current stack location")
        loc = self._stack[index]
        if loc is _UNUSED:
            loc = self._stack[index] = StackLocation()
        loc.control |= _PENDING_RETURNED

    def set_next_stack_location(self) -> None:
        """``IoSetNextIrpStackLocation``: move down one location without calling a driver.

        For a creator that allocated one extra location for itself, so that its completion routine
        later gets a real device and a location it may mark pending.

        :raises BugCheck: 0x35 if the current location is the last one (location 1).
        :raises IrpStateError: if the IRP has completed.
        """
        if self._index <= 0 or self._index > self.stack_count:
            if self._index == 0:
                _out_of_locations(self, "set_next_stack_location")
            raise IrpStateError(f"cannot set the next stack location: {self!r} has no location below the current one")
        index = self._index = self._index - 1
        if self._stack[index] is _UNUSED:
            self._stack[index] = StackLocation()

    def set_cancel_routine(self, routine: CancelRoutine | None) -> CancelRoutine | None:
        """``IoSetCancelRoutine``: exchange the cancel routine and return the previous one.

        The exchange is atomic with respect to :func:`~airp.cancel_irp` because both are
        synchronous and run on the event loop's single thread.  A ``None`` result when disarming
        means a cancel routine has already been taken and is running or about to run: leave the
        IRP to it (reference 6.3).

        :param routine: a plain function ``(device, irp) -> None``, or ``None`` to disarm.
        :raises TypeError: if *routine* is not callable, or is a coroutine function (also behind
            ``functools.partial`` or an ``async def __call__``) or a generator function: cancel
            routines run synchronously inside :func:`~airp.cancel_irp` and cannot await.
        """
        if routine is not None:
            problem = _not_plain_function(routine)
            if problem is not None:
                raise TypeError(
                    f"set_cancel_routine(routine): a cancel routine must be a plain function (device, irp) -> None"
                    f" (or None to disarm); {problem} (cancel routines run synchronously inside cancel_irp and"
                    " cannot await)"
                )
        old = self.cancel_routine
        self.cancel_routine = routine
        return old

    # -- awaiting -----------------------------------------------------------------------------

    def __await__(self) -> Generator[Any, None, IoStatus]:
        if self._index > self.stack_count:
            # _io_status inlined: this is the synchronous path, held to a budget per IRP.
            if self._final_error is not None:
                raise self._final_error
            status = self.status
            if type(status) is not NtStatus:
                status = NtStatus(status)
            return _new_tuple(IoStatus, (status, self.information))
        return (yield from _await_pending(self))

    def __repr__(self) -> str:
        label = f"#{self._trace_id}" if self._trace_id else hex(id(self))
        if self._index > self.stack_count:
            state = f"completed {NtStatus(self.status).name}"
        elif self._index == self.stack_count:
            state = "with its creator"
        else:
            loc = self._stack[self._index]
            try:
                major = IrpMajor(loc.major).name
            except ValueError:
                major = hex(loc.major)
            state = f"{major} at location {self._index + 1}/{self.stack_count}"
        return f"<Irp {label} {state}>"
