"""Requests built by the I/O manager and their final stage (reference 2.6 to 2.8, 5.6, 5.7).

The transfer type decides what a driver finds in the IRP:

- buffered (``DO_BUFFERED_IO``, ``METHOD_BUFFERED``): ``irp.system_buffer`` is a private
  ``bytearray``; input is copied in before the request is sent, output is copied back to the
  requester at completion (``information`` bytes, also for warnings, never for errors);
- direct (``DO_DIRECT_IO``, ``METHOD_IN_DIRECT`` / ``METHOD_OUT_DIRECT``): ``irp.mdl`` is a
  ``memoryview`` of the requester's own buffer (writable for reads and OUT_DIRECT, read-only for
  writes and IN_DIRECT); nothing is copied at completion;
- neither: ``irp.user_buffer`` is the requester's buffer object itself, and for device control
  the stack location's ``type3_input_buffer`` is the requester's input.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, Generic, TypeVar

from .._machine._bugcheck import BugCheck, BugCheckCode, VerifierCode
from .._machine._codes import DeviceFlags, IrpFlags, IrpMajor, TransferMethod
from .._machine._completion import DROPPED_MARK, WRONG_RETURN
from .._machine._device import DeviceObject
from .._machine._errors import NtStatusError
from .._machine._file import FileObject
from .._machine._irp import DeviceIoControlParameters, Irp, ReadWriteParameters, _new_tuple, _not_plain_function
from .._machine._status import STATUS_PENDING, STATUS_VERIFY_REQUIRED, IoStatus, NtStatus, nt_error
from .._machine._unraisable import report_unraisable
from .._shell._requester_cancel import TaskIo
from .._shell._waiting import _await_back

__all__ = [
    "MAX_TRANSFER_LENGTH",
    "Overlapped",
    "build_device_control_request",
    "build_read_write_request",
]

#: The most bytes one read or one device control's output may ask for: a DWORD, as ReadFile's
#: ``nNumberOfBytesToRead`` and DeviceIoControl's ``nOutBufferSize``.  The I/O manager allocates the
#: requester's buffer (and, for buffered I/O, the system buffer) before the request is sent, so a
#: length from a bad computation must be refused before it exhausts memory.
MAX_TRANSFER_LENGTH = 0xFFFF_FFFF

T = TypeVar("T")


class Overlapped(Generic[T]):
    """A request that has been sent and may still be in flight (Win32's ``OVERLAPPED``).

    Returned by the ``*_overlapped`` calls of :class:`~airp.FileHandle` once the dispatch routine
    has returned.  Await it for the result, as the plain calls do, or have a plain function called
    when it completes (:meth:`add_done_callback`: Win32's completion routine of ``ReadFileEx``,
    without the alertable wait), which costs no task and no await.

    :ivar irp: the request's IRP.
    :ivar status_returned: what the top driver's dispatch routine returned (STATUS_PENDING for a
        request still in flight).  It is *not* the result: the result is the IRP's IoStatus.
    :ivar io_status_block: the requester's status block, written by the final stage following
        reference 5.7: always for success, informational and warning statuses; for an error only
        if the IRP was pended (an error returned synchronously is reported only through the call).
    """

    __slots__ = ("_output", "_result", "io_status_block", "irp", "status_returned")

    def __init__(self, irp: Irp, output: bytearray | None, result: Callable[[Overlapped[T]], T]) -> None:
        self.irp = irp
        self._output = output
        # The function that makes the result of the completed request.  Once a done callback is
        # added, a _DoneCallbacks in its place: the callbacks, holding (and calling through to)
        # that function.  So a request without callbacks carries nothing more for them, not even
        # an empty slot (the 1 KiB per pending request of DESIGN.md has 8 bytes left), and its
        # final stage pays one type test.
        self._result: Callable[[Overlapped[T]], T] = result
        self.status_returned: NtStatus | None = None
        self.io_status_block: IoStatus | None = None
        irp._final_stage = self._finish

    @property
    def done(self) -> bool:
        """True once the IRP has been completed all the way up."""
        return self.irp.completed

    def add_done_callback(self, callback: Callable[[Overlapped[T]], object]) -> None:
        """Call ``callback(request)`` once, when the request's final stage has run.

        The callback runs synchronously inside the completion walk, right after the I/O manager's
        final stage (the copy back to the requester's buffer, the status block) and before the
        task that awaits the request is woken, the way IoCompleteRequest runs things in place.  It
        is a plain function: it cannot await (start a task or set an event for slower work), and
        what it returns is ignored.  Inside it :meth:`result` gives the request's outcome.  A
        request that has already completed calls *callback* at once, before this method returns.
        Several callbacks may be added (the same one twice is called twice); they run in the order
        they were added, including those added by a callback while they run.

        A request whose final stage raises a bug check (0x312: the driver claimed more bytes than
        the requester's buffer holds, 0x228, ...) is done all the same: its callbacks run, and
        :meth:`result` raises that bug check.  A request that is disowned (still held by its
        driver when the cancel-wait limit ran out) has not completed: its callbacks run only if
        the driver completes it later.

        On cancellation of the requester (a timeout, a cancelled task): the cancellation becomes
        :func:`~airp.cancel_irp` on the IRP, so the callback still runs when the driver completes
        it, usually with STATUS_CANCELLED (:meth:`result` then raises
        :class:`~airp.NtStatusError`).

        A callback that raises an ``Exception`` does not take the IRP or whoever completes it down:
        the exception is reported through :func:`sys.unraisablehook` (a warning under pytest),
        with a message naming the request, and the other callbacks still run.  A
        ``BaseException`` that is not an ``Exception`` (``KeyboardInterrupt``) propagates to the
        completer, as an exception of the final stage does, and the callbacks after it do not run.

        :param callback: ``callback(request)``, a plain function.
        :raises TypeError: if *callback* is not callable, or is a coroutine function or a
            generator function (its body would not run when it is called).
        """
        problem = _not_plain_function(callback)
        if problem is not None:
            raise TypeError(
                f"a done callback is a plain function (request) -> None; {problem} (done callbacks run inside"
                " the synchronous completion walk and cannot await; start a task or set an event for slower work)"
            )
        callbacks = self._result
        if type(callbacks) is _DoneCallbacks:
            # Not run yet, or running now (the final stage takes each one off the front as it
            # calls it): either way it is called in its turn.
            callbacks.append(callback)
        elif self.irp._index > self.irp.stack_count:  # irp.completed, and its callbacks have run
            self._call_back(callback)
        else:
            callbacks = _DoneCallbacks(callbacks)
            callbacks.append(callback)
            self._result = callbacks

    def remove_done_callback(self, callback: Callable[[Overlapped[T]], object]) -> int:
        """Remove every registration of *callback* that has not been called yet.

        :param callback: a callback given to :meth:`add_done_callback` (compared with ``==``, so
            the same bound method of the same object matches).
        :returns: how many registrations were removed (``0`` once the request's callbacks have
            run, or if *callback* was never added).
        """
        callbacks = self._result
        if type(callbacks) is not _DoneCallbacks or not callbacks:
            return 0
        kept = [registered for registered in callbacks if registered != callback]
        removed = len(callbacks) - len(kept)
        if removed:
            # In place: the final stage may be running this very list (a callback removing one).
            callbacks[:] = kept
        return removed

    def _run_callbacks(self) -> None:
        # Called by the final stage once the request is done.  Each callback is taken off the
        # front before it is called, so one added or removed by a callback meanwhile is added to
        # or removed from what is left; at the end the result function is put back in the slot
        # (add_done_callback then calls at once).
        callbacks = self._result
        assert type(callbacks) is _DoneCallbacks
        try:
            while callbacks:
                callback = callbacks.pop(0)
                # _call_back written out: a frame fewer per callback.
                try:
                    callback(self)
                except Exception as error:
                    _report_callback_error(self, callback, error)
        finally:
            self._result = callbacks.result

    def _call_back(self, callback: Callable[[Overlapped[T]], object]) -> None:
        try:
            callback(self)
        except Exception as error:
            _report_callback_error(self, callback, error)

    def _finish(self, irp: Irp) -> None:
        # The I/O manager's final stage, then the done callbacks.  The body runs inside the try
        # rather than as a call of its own: one frame per request fewer.
        try:
            # Off the handle's list and the requester's list first, whatever the checks below find.
            file_object = irp.file_object
            if file_object is not None:
                file_object.requests.pop(irp, None)
            # release_from_task and nt_error written out: a frame each per request.
            owner = irp.owner
            if isinstance(owner, TaskIo):
                owner._release(irp)
            status = irp.status
            if self.status_returned == STATUS_PENDING and not irp.pending_returned:
                check_returned_status(irp, self.status_returned, irp._stack[irp.stack_count - 1].device)
            output = self._output
            count = irp.information
            error = (status & 0xFFFF_FFFF) >> 30 == 3
            if output is not None and count > len(output) and not error:
                # Verifier 0x312 for every transfer type: with direct and neither I/O the driver
                # wrote into the requester's buffer itself, and still may not claim more than it holds.
                raise BugCheck(
                    BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION,
                    f"information {count} is larger than the requester's output buffer ({len(output)} bytes)",
                    parameters=(VerifierCode.INFORMATION_TOO_LARGE, irp, count, len(output)),
                    irp=irp,
                )
            # The flag tests only where there is a system buffer: IntFlag's ``&`` is a Python-level call.
            if irp.system_buffer is not None:
                if (
                    output is not None
                    and irp.flags & IrpFlags.INPUT_OPERATION
                    and status != STATUS_VERIFY_REQUIRED
                    and not error
                ):
                    output[:count] = irp.system_buffer[:count]
                if irp.flags & IrpFlags.DEALLOCATE_BUFFER:
                    irp.system_buffer = None
            if not error or irp.pending_returned:
                # Built as Irp builds its IoStatus: no NamedTuple __new__ frame, and no enum call for
                # a status that is an NtStatus already.
                self.io_status_block = _new_tuple(
                    IoStatus, (status if type(status) is NtStatus else NtStatus(status), irp.information)
                )
        except BaseException as raised:
            # The request is done all the same: its callbacks run, and see the final stage's
            # error in result() (the completion walk stores it again as it re-raises it).
            if irp._final_error is None:
                irp._final_error = raised
            if type(self._result) is _DoneCallbacks:
                self._run_callbacks()
            raise
        if type(self._result) is _DoneCallbacks:
            self._run_callbacks()

    def result(self) -> T:
        """The result of a completed request.

        :raises NtStatusError: if the final status is not success (warnings included; their data
            was still copied back and is in the error's ``data``).  If a driver routine raised and
            airp completed the request with STATUS_INTERNAL_ERROR, that exception is the cause.
        :raises BugCheck: the bug check the request's final stage raised (0x312, 0x228, ...), or
            one raised, while this request was still in flight, in completing an IRP of the
            driver's own that it was linked to (the 5.8 rule: see ``docs/driver-created-irps.md``).
            A request that had completed before keeps its own result.
        :raises RuntimeError: if the request has not completed yet.
        """
        irp = self.irp
        if irp._index <= irp.stack_count:  # not irp.completed, without the property's frame
            raise RuntimeError(f"{irp!r} has not completed yet: await the Overlapped first")
        if irp._final_error is not None:
            # Before the status: a request that succeeded can still have been served by code that
            # broke a rule while completing it (a driver's own IRP that reached the top, 5.8).
            raise irp._final_error
        status = irp.status
        if status & 0xFFFF_FFFF < 0x8000_0000:  # nt_success, written out
            return self._result(self)
        data = None
        if not nt_error(status) and self._output is not None:
            data = bytes(self._output[: irp.information])
        # A routine that raised is why the request failed (STATUS_INTERNAL_ERROR): say so.
        raise NtStatusError(status, f"{_describe(irp)} failed", information=irp.information, data=data) from irp.routine_error

    def __await__(self) -> Generator[Any, None, T]:
        # Irp.__await__ inlined (its IoStatus is not needed: result() reads the IRP): a request
        # still in flight is waited for one frame nearer the event loop.
        irp = self.irp
        if irp._index <= irp.stack_count:
            yield from _await_back(irp)
        return self.result()

    def __repr__(self) -> str:
        returned = self.status_returned.name if self.status_returned is not None else "not yet returned"
        return f"<Overlapped {self.irp!r} returned {returned}>"


class _DoneCallbacks(list[Callable[[Any], object]]):
    """A request's done callbacks, in order, kept in the slot of its result function.

    It holds that function (:attr:`result`) and is called in its place: ``request.result()``
    inside a callback works as anywhere else.
    """

    __slots__ = ("result",)

    def __init__(self, result: Callable[[Any], Any]) -> None:
        super().__init__()
        self.result = result

    def __call__(self, request: Any) -> Any:
        return self.result(request)


def _report_callback_error(request: Overlapped[Any], callback: object, error: Exception) -> None:
    """Report *error*, raised by *callback* of *request*, the way an exception nobody can catch is."""
    try:
        where = f"{_describe(request.irp)} {request!r}"
    except Exception:
        where = f"<Overlapped at {id(request):#x}>"
    report_unraisable(error, f"Exception ignored in a done callback of {where}", callback)


def _describe(irp: Irp) -> str:
    loc = irp._stack[irp.stack_count - 1]
    try:
        return f"{IrpMajor(loc.major).name} request"
    except ValueError:
        return "request"


def read_result(request: Overlapped[bytes]) -> bytes:
    output = request._output
    assert output is not None
    return bytes(output[: request.irp.information])


def count_result(request: Overlapped[int]) -> int:
    return request.irp.information


# The flag words built per request, as constants: ``int & IntFlag`` and ``IntFlag | IntFlag`` are
# Python-level enum calls, four of them per read before.
_DO_BUFFERED_IO = int(DeviceFlags.BUFFERED_IO)
_DO_DIRECT_IO = int(DeviceFlags.DIRECT_IO)
_BUFFERED_READ = IrpFlags.READ_OPERATION | IrpFlags.BUFFERED_IO | IrpFlags.DEALLOCATE_BUFFER | IrpFlags.INPUT_OPERATION
_BUFFERED_WRITE = IrpFlags.WRITE_OPERATION | IrpFlags.BUFFERED_IO | IrpFlags.DEALLOCATE_BUFFER


def _new_irp(device: DeviceObject, file_object: FileObject | None, irp: Irp | None = None) -> tuple[Irp, Any]:
    if irp is None:
        irp = Irp(device.stack_size)
    irp.file_object = file_object
    loc = irp._stack[irp.stack_count - 1]
    loc.file_object = file_object
    return irp, loc


def build_read_write_request(
    device: DeviceObject,
    major: IrpMajor,
    *,
    length: int = 0,
    data: bytes | bytearray | memoryview | None = None,
    offset: int = 0,
    file_object: FileObject | None = None,
    irp: Irp | None = None,
) -> Overlapped[Any]:
    """Build a read or write IRP for *device* the way ``NtReadFile`` / ``NtWriteFile`` would.

    The transfer type comes from *device*'s flags (the top of the stack that will receive it).
    *irp*, if given, is a fresh IRP to build into (the driver-side build helpers of
    :mod:`airp._iomanager._build` pass one from their allocator); otherwise a new one is made.

    :param length: bytes to read (reads only).
    :param data: bytes to write (writes only).
    :returns: an :class:`Overlapped` not yet sent.
    """
    if major not in (IrpMajor.READ, IrpMajor.WRITE):
        raise ValueError(f"build_read_write_request builds READ or WRITE requests, not {major!r}")
    if type(offset) is not int:
        raise TypeError(f"offset must be an int, got {type(offset).__name__} {offset!r}")
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset!r}")
    # _new_irp written out: a frame and a tuple fewer per request.
    if irp is None:
        irp = Irp(device.stack_size)
    irp.file_object = file_object
    loc = irp._stack[irp.stack_count - 1]
    loc.file_object = file_object
    loc.major = major
    if major == IrpMajor.READ:
        if type(length) is not int:
            raise TypeError(f"read length must be an int, got {type(length).__name__} {length!r}")
        if length < 0:
            raise ValueError(f"read length must be >= 0, got {length!r}")
        if length > MAX_TRANSFER_LENGTH:
            raise ValueError(
                f"read length must be at most {MAX_TRANSFER_LENGTH} (a DWORD, as ReadFile's), got {length!r}:"
                " airp allocates the buffer before the request is sent"
            )
        output = bytearray(length)
        if device.flags & _DO_BUFFERED_IO:
            irp.flags = _BUFFERED_READ
            irp.system_buffer = bytearray(length)
            irp.user_buffer = output
        else:
            irp.flags = IrpFlags.READ_OPERATION
            if device.flags & _DO_DIRECT_IO:
                irp.mdl = memoryview(output)
            else:
                irp.user_buffer = output
        loc.parameters = ReadWriteParameters(length, offset)
        return Overlapped(irp, output, read_result)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"write data must be bytes-like, got {type(data).__name__}")
    if device.flags & _DO_BUFFERED_IO:
        irp.flags = _BUFFERED_WRITE
        irp.system_buffer = bytearray(data)
    else:
        irp.flags = IrpFlags.WRITE_OPERATION
        if device.flags & _DO_DIRECT_IO:
            irp.mdl = memoryview(data).toreadonly()
        else:
            irp.user_buffer = data
    loc.parameters = ReadWriteParameters(len(data), offset)
    return Overlapped(irp, None, count_result)


def build_device_control_request(
    device: DeviceObject,
    code: int,
    input: bytes | bytearray | memoryview = b"",
    output_length: int = 0,
    *,
    internal: bool = False,
    file_object: FileObject | None = None,
    irp: Irp | None = None,
) -> Overlapped[bytes]:
    """Build a device-control IRP the way ``IoBuildDeviceIoControlRequest`` does (reference 2.8).

    The transfer method is the low two bits of *code*.  *irp*, if given, is a fresh IRP to build
    into; otherwise a new one is made.

    :returns: an :class:`Overlapped` not yet sent; its result is the output bytes.
    """
    if not isinstance(code, int) or isinstance(code, bool):
        raise TypeError(f"an I/O control code is an int (see ControlCode.make), got {type(code).__name__} {code!r}")
    if not 0 <= code <= 0xFFFF_FFFF:
        raise ValueError(f"an I/O control code is a 32-bit unsigned int, got {code!r}")
    if not isinstance(input, (bytes, bytearray, memoryview)):
        raise TypeError(f"device-control input must be bytes-like, got {type(input).__name__}")
    if type(output_length) is not int:
        raise TypeError(f"output_length must be an int, got {type(output_length).__name__} {output_length!r}")
    if output_length < 0:
        raise ValueError(f"output_length must be >= 0, got {output_length!r}")
    if output_length > MAX_TRANSFER_LENGTH:
        raise ValueError(
            f"output_length must be at most {MAX_TRANSFER_LENGTH} (a DWORD, as DeviceIoControl's), got"
            f" {output_length!r}: airp allocates the output buffer before the request is sent"
        )
    irp, loc = _new_irp(device, file_object, irp)
    loc.major = IrpMajor.INTERNAL_DEVICE_CONTROL if internal else IrpMajor.DEVICE_CONTROL
    output = bytearray(output_length)
    method = code & 3
    type3 = None
    if method == TransferMethod.BUFFERED:
        size = max(len(input), output_length)
        if size:
            irp.system_buffer = bytearray(size)
            irp.system_buffer[: len(input)] = input
            irp.flags = IrpFlags.BUFFERED_IO | IrpFlags.DEALLOCATE_BUFFER
            if output_length:
                irp.flags |= IrpFlags.INPUT_OPERATION
            irp.user_buffer = output
    elif method in (TransferMethod.IN_DIRECT, TransferMethod.OUT_DIRECT):
        if input:
            irp.system_buffer = bytearray(input)
            irp.flags = IrpFlags.BUFFERED_IO | IrpFlags.DEALLOCATE_BUFFER
        if output_length:
            view = memoryview(output)
            irp.mdl = view.toreadonly() if method == TransferMethod.IN_DIRECT else view
    else:
        type3 = input
        irp.user_buffer = output
    loc.parameters = DeviceIoControlParameters(code, len(input), output_length, type3)
    return Overlapped(irp, output, read_result)


def check_returned_status(irp: Irp, status: NtStatus, device: DeviceObject | None) -> None:
    """The enhanced-verifier checks on what the top dispatch routine returned (reference 5.4, 10.3).

    Always on, because each costs one comparison per request: 0x23D (STATUS_PENDING without the
    pending mark), or 0x228 instead when the mark was there and a completion routine on the way
    up dropped it (it let the walk go on without ``if irp.pending_returned: irp.mark_pending()``;
    the completion walk notes the first such routine, and the bug check names it and its driver,
    not the top driver whose dispatch routine did nothing wrong), 0x226 (returned without completing, passing on or pending), 0x224 (completed
    synchronously with one status, returned another) and 0x23E (marked pending, returned
    something else).

    0x23D and 0x226 name the driver whose dispatch routine returned the wrong status, which is not
    always the top one: the drivers above it return what it returned.  With tracing or the
    Verifier on, ``call_driver`` notes the first (innermost) dispatch routine whose return its
    IRP contradicts (:data:`~airp._machine._completion.WRONG_RETURN`), and that driver is named.
    Otherwise 0x226 names the driver holding the IRP (the device of its current location), whose
    routine returned without completing it or marked it and returned another status, unless a
    driver above it replaced its STATUS_PENDING (the message says both); 0x23D names the top
    driver, as the IRP no longer shows who returned STATUS_PENDING.

    :param irp: the request, just returned by the top dispatch routine or just completed.
    :param status: what the top dispatch routine returned.
    :param device: the top device.
    :raises BugCheck: 0xC9 with the codes above.
    """
    if status == STATUS_PENDING:
        if irp.completed and not irp.pending_returned:
            dropped = irp.__dict__.get(DROPPED_MARK)
            if dropped is not None:
                _pending_not_propagated(irp, *dropped)
            culprit = device
            who = ""
            noted = irp.__dict__.get(WRONG_RETURN)
            if noted is not None and noted[1] == STATUS_PENDING and noted[0] is not device:
                culprit = noted[0]
                who = f" (the dispatch routine of {culprit!r}; the drivers above it returned its STATUS_PENDING)"
            raise BugCheck(
                BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION,
                f"a dispatch routine returned STATUS_PENDING without marking the IRP pending{who} (call irp.mark_pending() first)",
                parameters=(VerifierCode.PENDING_NOT_MARKED, irp, status, 0),
                irp=irp,
                device=culprit,
                driver=culprit.driver if culprit is not None else None,
            )
        return
    if not irp.completed:
        culprit = device
        who = ""
        noted = irp.__dict__.get(WRONG_RETURN)
        if noted is not None and noted[1] != STATUS_PENDING:
            culprit, returned, marked = noted
            if culprit is not device:
                who = f" (the dispatch routine of {culprit!r}, whose {returned.name} the drivers above it returned)"
            if marked:
                who += ": it had marked the IRP pending, so it must return STATUS_PENDING (0x23E's rule)"
            elif marked is None:
                who += ": the IRP was still in flight below it, and a driver returns the STATUS_PENDING it got"
        else:
            index = irp._index
            holder = irp._stack[index].device if index < irp.stack_count else None
            if holder is not None and holder is not device:
                # Without a note (tracing and the Verifier off), the IRP shows who holds it: the
                # routine that returned without completing it, or marked it and returned another
                # status, unless a driver above it replaced the STATUS_PENDING it returned.
                culprit = holder
                marked = irp._stack[index].control & 0x01
                what = "marked it pending" if marked else "did not mark it pending"
                who = (
                    f" (the IRP is held by {holder!r}, which {what}: its dispatch routine returned a status other than"
                    " STATUS_PENDING, or a driver above it replaced the STATUS_PENDING it returned)"
                )
        raise BugCheck(
            BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION,
            f"a dispatch routine returned {status.name} without completing the IRP, passing it on or returning STATUS_PENDING{who}",
            parameters=(VerifierCode.DISPATCH_RETURNED_WITHOUT_PENDING, irp, status, 0),
            irp=irp,
            device=culprit,
            driver=culprit.driver if culprit is not None else None,
        )
    if status != irp.status and status != NtStatus(irp.status) and not irp.pending_returned:
        # The requester would be told the IRP's status while the dispatch routine said another.
        final = NtStatus(irp.status)
        raise BugCheck(
            BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION,
            f"the dispatch routine returned {status.name} but the IRP completed with {final.name}: a dispatch"
            " routine that completes an IRP must return the status it completed it with",
            parameters=(VerifierCode.DISPATCH_STATUS_MISMATCH, irp, status, final),
            irp=irp,
            device=device,
            driver=device.driver if device is not None else None,
        )
    if irp.pending_returned:
        raise BugCheck(
            BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION,
            f"the IRP was marked pending but the dispatch routine returned {status.name}: a driver that marks an IRP pending must return STATUS_PENDING",
            parameters=(VerifierCode.MARKED_PENDING_NOT_RETURNED, irp, status, 0),
            irp=irp,
            device=device,
            driver=device.driver if device is not None else None,
        )


def _pending_not_propagated(irp: Irp, routine: object, device: object) -> None:
    name = getattr(routine, "__qualname__", None) or repr(routine)
    driver = getattr(device, "driver", None)
    raise BugCheck(
        BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION,
        f"completion routine {name} of {driver!r} (for {device!r}) did not propagate the pending mark: it ran"
        " with irp.pending_returned set and returned without calling irp.mark_pending(), so the dispatch"
        " routines above returned STATUS_PENDING for an IRP that reached the top unmarked. A completion"
        " routine that does not return STATUS_MORE_PROCESSING_REQUIRED must do"
        " 'if irp.pending_returned: irp.mark_pending()' (reference 5.4)",
        parameters=(VerifierCode.PENDING_NOT_PROPAGATED, irp, routine, 0),
        irp=irp,
        device=device,
        driver=driver,
    )
