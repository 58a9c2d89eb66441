"""NTSTATUS values and their predicates (reference section 11.1).

An :class:`NtStatus` is a plain ``int`` holding the unsigned 32-bit value, so it compares, hashes and
indexes like the number Windows uses; its ``repr`` and ``name`` show the symbolic name when airp
knows one.  Unknown values are representable: ``NtStatus(0xE0001234)`` is a valid (customer-defined)
status with the name ``"0xE0001234"``.

The severity is the top two bits: 00 success, 01 informational, 10 warning, 11 error.
``nt_success`` is true for success *and* informational values; warnings are neither success nor
error, which is why a warning triggers invoke-on-error completion routines and still copies
buffered data back to the requester.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from ._misuse import must_be

__all__ = [
    "IoStatus",
    "NtStatus",
    "nt_error",
    "nt_information",
    "nt_success",
    "nt_warning",
]

_NAMES: dict[int, str] = {}


class NtStatus(int):
    """An NTSTATUS value: an ``int`` in ``0 .. 0xFFFFFFFF`` with a symbolic name.

    :param value: the status as an unsigned 32-bit value, or as the signed 32-bit value C code
        prints (``-1073741536`` is ``0xC0000120``).
    :raises TypeError: if *value* is not an ``int`` (``bool`` is refused too).
    :raises ValueError: if *value* does not fit in 32 bits.
    """

    __slots__ = ()

    def __new__(cls, value: int) -> NtStatus:
        if type(value) is cls:
            return value
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(
                f"an NTSTATUS must be an int in 0..0xFFFFFFFF, got {type(value).__name__} {value!r}"
            )
        if -0x8000_0000 <= value < 0:
            value &= 0xFFFF_FFFF
        if not 0 <= value <= 0xFFFF_FFFF:
            raise ValueError(f"an NTSTATUS must fit in 32 bits, got {value:#x}")
        return super().__new__(cls, value)

    @property
    def name(self) -> str:
        """The symbolic name (``"STATUS_CANCELLED"``), or the hex value if airp knows no name."""
        return _NAMES.get(int(self), f"{int(self):#010X}".replace("0X", "0x"))

    @property
    def severity(self) -> int:
        """The severity field: 0 success, 1 informational, 2 warning, 3 error."""
        return int(self) >> 30

    def __repr__(self) -> str:
        return f"NtStatus({self.name})"

    def __str__(self) -> str:
        return f"{self.name} ({int(self):#010x})"


# The predicates mask first so that the signed form C code prints (-1073741536 for
# STATUS_CANCELLED) is judged like the unsigned value NtStatus stores.


def _not_a_status(status: object) -> TypeError:
    # Only on the error path: the test above costs nothing when it passes (a float or a str
    # fails the & with a TypeError that names neither the parameter nor what it takes).
    return must_be("status", "an NTSTATUS (an int)", status)


def nt_success(status: int) -> bool:
    """True for success and informational statuses (``NT_SUCCESS``: the signed value is >= 0).

    :raises TypeError: if *status* is not an int.
    """
    try:
        return status & 0xFFFF_FFFF < 0x8000_0000
    except TypeError:
        raise _not_a_status(status) from None


def nt_information(status: int) -> bool:
    """True for informational statuses (severity 01).

    :raises TypeError: if *status* is not an int.
    """
    try:
        return (status & 0xFFFF_FFFF) >> 30 == 1
    except TypeError:
        raise _not_a_status(status) from None


def nt_warning(status: int) -> bool:
    """True for warning statuses (severity 10): not success, and not error either.

    :raises TypeError: if *status* is not an int.
    """
    try:
        return (status & 0xFFFF_FFFF) >> 30 == 2
    except TypeError:
        raise _not_a_status(status) from None


def nt_error(status: int) -> bool:
    """True for error statuses (severity 11, ``NT_ERROR``).

    :raises TypeError: if *status* is not an int.
    """
    try:
        return (status & 0xFFFF_FFFF) >> 30 == 3
    except TypeError:
        raise _not_a_status(status) from None


def _define(name: str, value: int) -> NtStatus:
    status = NtStatus(value)
    _NAMES.setdefault(value, name)
    return status


STATUS_SUCCESS: Final = _define("STATUS_SUCCESS", 0x0000_0000)
#: Same value as STATUS_SUCCESS; what a completion routine returns to let the walk go on.
STATUS_CONTINUE_COMPLETION: Final = STATUS_SUCCESS
STATUS_USER_APC: Final = _define("STATUS_USER_APC", 0x0000_00C0)
STATUS_ALERTED: Final = _define("STATUS_ALERTED", 0x0000_0101)
STATUS_TIMEOUT: Final = _define("STATUS_TIMEOUT", 0x0000_0102)
STATUS_PENDING: Final = _define("STATUS_PENDING", 0x0000_0103)
STATUS_REPARSE: Final = _define("STATUS_REPARSE", 0x0000_0104)
STATUS_BUFFER_OVERFLOW: Final = _define("STATUS_BUFFER_OVERFLOW", 0x8000_0005)
STATUS_VERIFY_REQUIRED: Final = _define("STATUS_VERIFY_REQUIRED", 0x8000_0016)
STATUS_UNSUCCESSFUL: Final = _define("STATUS_UNSUCCESSFUL", 0xC000_0001)
STATUS_NOT_IMPLEMENTED: Final = _define("STATUS_NOT_IMPLEMENTED", 0xC000_0002)
STATUS_INVALID_PARAMETER: Final = _define("STATUS_INVALID_PARAMETER", 0xC000_000D)
STATUS_NO_SUCH_DEVICE: Final = _define("STATUS_NO_SUCH_DEVICE", 0xC000_000E)
STATUS_INVALID_DEVICE_REQUEST: Final = _define("STATUS_INVALID_DEVICE_REQUEST", 0xC000_0010)
STATUS_END_OF_FILE: Final = _define("STATUS_END_OF_FILE", 0xC000_0011)
STATUS_MORE_PROCESSING_REQUIRED: Final = _define("STATUS_MORE_PROCESSING_REQUIRED", 0xC000_0016)
STATUS_BUFFER_TOO_SMALL: Final = _define("STATUS_BUFFER_TOO_SMALL", 0xC000_0023)
STATUS_OBJECT_NAME_NOT_FOUND: Final = _define("STATUS_OBJECT_NAME_NOT_FOUND", 0xC000_0034)
STATUS_OBJECT_NAME_COLLISION: Final = _define("STATUS_OBJECT_NAME_COLLISION", 0xC000_0035)
STATUS_DELETE_PENDING: Final = _define("STATUS_DELETE_PENDING", 0xC000_0056)
STATUS_INSUFFICIENT_RESOURCES: Final = _define("STATUS_INSUFFICIENT_RESOURCES", 0xC000_009A)
STATUS_DEVICE_NOT_CONNECTED: Final = _define("STATUS_DEVICE_NOT_CONNECTED", 0xC000_009D)
STATUS_DEVICE_NOT_READY: Final = _define("STATUS_DEVICE_NOT_READY", 0xC000_00A3)
STATUS_IO_TIMEOUT: Final = _define("STATUS_IO_TIMEOUT", 0xC000_00B5)
STATUS_INTERNAL_ERROR: Final = _define("STATUS_INTERNAL_ERROR", 0xC000_00E5)
STATUS_NOT_SUPPORTED: Final = _define("STATUS_NOT_SUPPORTED", 0xC000_00BB)
STATUS_CANCELLED: Final = _define("STATUS_CANCELLED", 0xC000_0120)
STATUS_INVALID_DEVICE_STATE: Final = _define("STATUS_INVALID_DEVICE_STATE", 0xC000_0184)
STATUS_DRIVER_CANCEL_TIMEOUT: Final = _define("STATUS_DRIVER_CANCEL_TIMEOUT", 0xC000_021E)
STATUS_NOT_FOUND: Final = _define("STATUS_NOT_FOUND", 0xC000_0225)
STATUS_DEVICE_REMOVED: Final = _define("STATUS_DEVICE_REMOVED", 0xC000_02B6)
STATUS_WDF_BUSY: Final = _define("STATUS_WDF_BUSY", 0xC020_0208)

__all__ += sorted(name for name in list(globals()) if name.startswith("STATUS_"))


class IoStatus(NamedTuple):
    """The final result of an IRP (``IO_STATUS_BLOCK``): a status and a request-specific number.

    ``information`` is usually the number of bytes transferred.
    """

    status: NtStatus
    information: int

    def __repr__(self) -> str:
        return f"IoStatus({self.status.name}, information={self.information})"
