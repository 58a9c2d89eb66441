"""Requests a driver builds for another device: the IoBuild* helpers (reference 2.6 to 2.9).

The buffers are set up exactly as the I/O manager sets them up for a requester (buffered, direct or
neither, from the target's flags or the control code's method): the helpers build into an IRP from
the caller's :class:`~airp.IrpAllocator` through :mod:`airp._iomanager._requests`.  What differs is who owns
the IRP afterwards (reference 2.9):

============================================  ===================  ============================================  ==================
built by                                      on the task's list   completion must end with                      freed by
============================================  ===================  ============================================  ==================
:func:`build_synchronous_fsd_request`         yes                  normal completion (or SMPR, then complete     the I/O manager
                                                                   it again)
:func:`build_device_io_control_request`       yes                  as above                                      the I/O manager
:func:`build_asynchronous_fsd_request`        no                   the creator's routine returns SMPR            the driver
                                                                                                                 (:func:`~airp.free_irp`)
============================================  ===================  ============================================  ==================

"On the task's list" is airp's form of the thread's IRP list: the request is charged to the
current :func:`~airp.task_io` block, if any, which cancels it if the block exits first; and a task
awaiting the request cancels it when the task itself is cancelled, as for any request.
"""

from __future__ import annotations

from typing import Any, Final

from .._machine._allocation import (
    _ORIGIN_NAMES,
    IrpAllocator,
    _allocate,
    _creator_rule_violated,
    _discard,
    _freed_by_io_manager,
    _Origin,
)
from .._machine._codes import IrpMajor
from .._machine._device import DeviceObject
from .._machine._irp import Irp
from .._machine._misuse import must_be
from .._machine._status import STATUS_NOT_SUPPORTED
from .._shell._requester_cancel import charge_to_current_task
from ._requests import Overlapped, build_device_control_request, build_read_write_request, count_result

__all__ = [
    "build_asynchronous_fsd_request",
    "build_device_io_control_request",
    "build_synchronous_fsd_request",
]

#: Majors that carry no buffer (reference 2.6 step 3).
_NO_BUFFER: Final = frozenset({IrpMajor.FLUSH_BUFFERS, IrpMajor.SHUTDOWN, IrpMajor.PNP, IrpMajor.POWER})
_FSD_MAJORS: Final = frozenset({IrpMajor.READ, IrpMajor.WRITE}) | _NO_BUFFER


def _check_target(target: object, what: str) -> DeviceObject:
    if not isinstance(target, DeviceObject):
        raise TypeError(f"{what} needs the target DeviceObject, got {type(target).__name__} {target!r}")
    return target


def _build_fsd(
    major: IrpMajor | int,
    target: DeviceObject,
    length: int,
    data: bytes | bytearray | memoryview | None,
    offset: int,
    minor: int,
    allocator: IrpAllocator | None,
    origin: int,
) -> Overlapped[Any] | None:
    if major not in _FSD_MAJORS:
        names = ", ".join(sorted(m.name for m in _FSD_MAJORS))
        raise ValueError(f"{_ORIGIN_NAMES[origin]} builds {names} requests, not major {type(major).__name__} {major!r}")
    _check_target(target, _ORIGIN_NAMES[origin])
    if data is not None and not isinstance(data, (bytes, bytearray, memoryview)):
        raise must_be("data", "bytes-like (bytes, bytearray, memoryview) or None", data)
    if not isinstance(minor, int) or isinstance(minor, bool) or not 0 <= minor <= 0xFF:
        raise ValueError(f"minor must be a minor function code 0..0xFF, got {minor!r}")
    irp = _allocate(target.stack_size, False, allocator, origin, _ORIGIN_NAMES[origin])
    if irp is None:
        return None
    try:
        if major == IrpMajor.READ or major == IrpMajor.WRITE:
            request = build_read_write_request(target, IrpMajor(major), length=length, data=data, offset=offset, irp=irp)
        else:
            irp.next_stack_location.major = major
            if major == IrpMajor.PNP or major == IrpMajor.POWER:
                # Every PnP and power IRP starts as "not supported" (Verifier 0x20E / 0x20F), so that
                # a stack where nobody handles it answers that.
                irp.status = STATUS_NOT_SUPPORTED
            request = Overlapped(irp, None, count_result)
    except BaseException:
        _discard(irp)
        raise
    irp.next_stack_location.minor = minor
    return request


def _charge_to_task(irp: Irp) -> None:
    """Queue *irp* on the requester's list (the current ``task_io`` block) until it completes.

    The I/O manager frees it in its final stage (after the buffered copy-back of
    :class:`~airp.Overlapped`, which also takes it off the list): the driver must not free it.
    """
    charge_to_current_task(irp)
    finish = irp._final_stage

    def final_stage(irp: Irp) -> None:
        try:
            if finish is not None:
                finish(irp)
        finally:
            _freed_by_io_manager(irp)

    irp._final_stage = final_stage


def build_synchronous_fsd_request(
    major: IrpMajor | int,
    target: DeviceObject,
    *,
    length: int = 0,
    data: bytes | bytearray | memoryview | None = None,
    offset: int = 0,
    minor: int = 0,
    allocator: IrpAllocator | None = None,
) -> Overlapped[Any] | None:
    """``IoBuildSynchronousFsdRequest``: a read, write, flush, shutdown, PnP or power request for *target*.

    The IRP has ``target.stack_size`` locations and its next location filled; buffers are set up
    from *target*'s flags (buffered, direct or neither) as for a requester's read or write.  Send
    it, then await the returned :class:`~airp.Overlapped` (the event and status block of the
    Windows call)::

        request = airp.build_synchronous_fsd_request(airp.IrpMajor.READ, lower, length=512)
        if request is None:
            ...  # STATUS_INSUFFICIENT_RESOURCES
        await airp.send_irp(lower, request.irp)
        data = await request          # raises NtStatusError if the read failed

    The request is charged to the current :func:`~airp.task_io` block, if any, and the I/O manager
    frees it when it completes: never :func:`~airp.free_irp` it.  A completion routine of the
    caller's may return STATUS_MORE_PROCESSING_REQUIRED to look at it first; the caller must then
    complete it again (:func:`~airp.complete_request`) so the I/O manager can finish.

    PnP and power requests start with status STATUS_NOT_SUPPORTED, as every such request must.

    :param major: READ, WRITE, FLUSH_BUFFERS, SHUTDOWN, PNP or POWER.
    :param length: bytes to read (READ).
    :param data: bytes to write (WRITE).
    :param offset: byte offset (READ, WRITE).
    :param minor: the minor function (PNP, POWER).
    :param allocator: where the IRP comes from (lookaside, statistics, low-resources simulation).
    :returns: the request, not yet sent; ``None`` if the IRP could not be allocated.
    :raises ValueError: for another major function or bad lengths and offsets.
    :raises TypeError: if *target* is not a device, *data* is not bytes-like (for any major), or
        *allocator* is not an IrpAllocator.
    """
    request = _build_fsd(major, target, length, data, offset, minor, allocator, _Origin.SYNCHRONOUS)
    if request is not None:
        _charge_to_task(request.irp)
    return request


def build_asynchronous_fsd_request(
    major: IrpMajor | int,
    target: DeviceObject,
    *,
    length: int = 0,
    data: bytes | bytearray | memoryview | None = None,
    offset: int = 0,
    minor: int = 0,
    allocator: IrpAllocator | None = None,
) -> Irp | None:
    """``IoBuildAsynchronousFsdRequest``: as :func:`build_synchronous_fsd_request`, owned by the driver.

    The IRP is on no requester's list and the I/O manager never finishes it: set a completion
    routine (on the next location, before sending) that reads the result, frees the IRP with
    :func:`~airp.free_irp` and returns STATUS_MORE_PROCESSING_REQUIRED.  If the walk reaches the
    top instead, bug check 0x2A is raised (reference 5.8).

    Nothing is copied back for a read: the data is where the lower driver put it, the first
    ``irp.information`` bytes of ``irp.system_buffer`` (buffered target), ``irp.mdl`` (direct) or
    ``irp.user_buffer`` (neither).

    :returns: the IRP, not yet sent; ``None`` if it could not be allocated.
    :raises ValueError: for another major function or bad lengths and offsets.
    :raises TypeError: if *target* is not a device, *data* is not bytes-like (for any major), or
        *allocator* is not an IrpAllocator.
    """
    request = _build_fsd(major, target, length, data, offset, minor, allocator, _Origin.ASYNCHRONOUS)
    if request is None:
        return None
    irp = request.irp
    # The Overlapped set the I/O manager's final stage; this IRP has none (reference 5.8).
    irp._final_stage = _creator_rule_violated
    return irp


def build_device_io_control_request(
    code: int,
    target: DeviceObject,
    input: bytes | bytearray | memoryview = b"",
    output_length: int = 0,
    *,
    internal: bool = False,
    allocator: IrpAllocator | None = None,
) -> Overlapped[bytes] | None:
    """``IoBuildDeviceIoControlRequest``: a (internal) device-control request for *target*.

    The transfer method is the low two bits of *code* (buffered, in/out direct, neither), and the
    buffers are set up as for a requester's ``DeviceIoControl``.  Send ``request.irp`` and await the
    request for the output bytes.  Ownership as :func:`build_synchronous_fsd_request`: charged to
    the current :func:`~airp.task_io` block, freed by the I/O manager, never by the driver.

    :param code: the I/O control code.
    :param input: the input bytes.
    :param output_length: how many output bytes the caller expects at most.
    :param internal: build IRP_MJ_INTERNAL_DEVICE_CONTROL instead of IRP_MJ_DEVICE_CONTROL.
    :param allocator: where the IRP comes from (lookaside, statistics, low-resources simulation).
    :returns: the request, not yet sent; ``None`` if the IRP could not be allocated.
    :raises ValueError: if *code* is not a 32-bit control code or *output_length* is negative.
    :raises TypeError: if *target* is not a device or *input* is not bytes-like.
    """
    _check_target(target, "build_device_io_control_request")
    irp = _allocate(target.stack_size, False, allocator, _Origin.DEVICE_CONTROL, "build_device_io_control_request")
    if irp is None:
        return None
    try:
        request = build_device_control_request(target, code, input, output_length, internal=internal, irp=irp)
    except BaseException:
        _discard(irp)
        raise
    _charge_to_task(irp)
    return request
