"""Function codes, flags and I/O control codes (reference sections 1.2, 11.2 to 11.5)."""

from __future__ import annotations

import enum
from typing import NamedTuple

__all__ = [
    "ControlCode",
    "DeviceFlags",
    "FileAccess",
    "IrpFlags",
    "IrpMajor",
    "PnpMinor",
    "PowerMinor",
    "StackControl",
    "TransferMethod",
]


class IrpMajor(enum.IntEnum):
    """``IRP_MJ_*``: the major function code that selects a driver's dispatch routine."""

    CREATE = 0x00
    CREATE_NAMED_PIPE = 0x01
    CLOSE = 0x02
    READ = 0x03
    WRITE = 0x04
    QUERY_INFORMATION = 0x05
    SET_INFORMATION = 0x06
    QUERY_EA = 0x07
    SET_EA = 0x08
    FLUSH_BUFFERS = 0x09
    QUERY_VOLUME_INFORMATION = 0x0A
    SET_VOLUME_INFORMATION = 0x0B
    DIRECTORY_CONTROL = 0x0C
    FILE_SYSTEM_CONTROL = 0x0D
    DEVICE_CONTROL = 0x0E
    INTERNAL_DEVICE_CONTROL = 0x0F
    SHUTDOWN = 0x10
    LOCK_CONTROL = 0x11
    CLEANUP = 0x12
    CREATE_MAILSLOT = 0x13
    QUERY_SECURITY = 0x14
    SET_SECURITY = 0x15
    POWER = 0x16
    SYSTEM_CONTROL = 0x17
    DEVICE_CHANGE = 0x18
    QUERY_QUOTA = 0x19
    SET_QUOTA = 0x1A
    PNP = 0x1B

    #: ``IRP_MJ_SCSI`` shares the value of INTERNAL_DEVICE_CONTROL.
    SCSI = 0x0F


#: The dispatch table has MAXIMUM_FUNCTION + 1 entries.
MAJOR_FUNCTION_COUNT = 0x1C


class PnpMinor(enum.IntEnum):
    """``IRP_MN_*`` minor codes of IRP_MJ_PNP."""

    START_DEVICE = 0x00
    QUERY_REMOVE_DEVICE = 0x01
    REMOVE_DEVICE = 0x02
    CANCEL_REMOVE_DEVICE = 0x03
    STOP_DEVICE = 0x04
    QUERY_STOP_DEVICE = 0x05
    CANCEL_STOP_DEVICE = 0x06
    QUERY_DEVICE_RELATIONS = 0x07
    QUERY_INTERFACE = 0x08
    QUERY_CAPABILITIES = 0x09
    QUERY_RESOURCES = 0x0A
    QUERY_RESOURCE_REQUIREMENTS = 0x0B
    QUERY_DEVICE_TEXT = 0x0C
    FILTER_RESOURCE_REQUIREMENTS = 0x0D
    READ_CONFIG = 0x0F
    WRITE_CONFIG = 0x10
    EJECT = 0x11
    SET_LOCK = 0x12
    QUERY_ID = 0x13
    QUERY_PNP_DEVICE_STATE = 0x14
    QUERY_BUS_INFORMATION = 0x15
    DEVICE_USAGE_NOTIFICATION = 0x16
    SURPRISE_REMOVAL = 0x17
    QUERY_LEGACY_BUS_INFORMATION = 0x18
    DEVICE_ENUMERATED = 0x19


class PowerMinor(enum.IntEnum):
    """``IRP_MN_*`` minor codes of IRP_MJ_POWER."""

    WAIT_WAKE = 0x00
    POWER_SEQUENCE = 0x01
    SET_POWER = 0x02
    QUERY_POWER = 0x03


class IrpFlags(enum.IntFlag):
    """``IRP_*`` bits of ``Irp.flags`` (reference 11.4)."""

    NOCACHE = 0x0001
    PAGING_IO = 0x0002
    SYNCHRONOUS_API = 0x0004
    ASSOCIATED_IRP = 0x0008
    BUFFERED_IO = 0x0010
    DEALLOCATE_BUFFER = 0x0020
    INPUT_OPERATION = 0x0040
    CREATE_OPERATION = 0x0080
    READ_OPERATION = 0x0100
    WRITE_OPERATION = 0x0200
    CLOSE_OPERATION = 0x0400
    DEFER_IO_COMPLETION = 0x0800
    OB_QUERY_NAME = 0x1000
    HOLD_DEVICE_QUEUE = 0x2000
    MOUNT_COMPLETION = 0x0002
    SYNCHRONOUS_PAGING_IO = 0x0040


class DeviceFlags(enum.IntFlag):
    """``DO_*`` bits of ``DeviceObject.flags``."""

    BUFFERED_IO = 0x0004
    EXCLUSIVE = 0x0008
    DIRECT_IO = 0x0010
    DEVICE_INITIALIZING = 0x0080
    POWER_PAGABLE = 0x2000


class StackControl(enum.IntFlag):
    """``SL_*`` bits of ``StackLocation.control``."""

    PENDING_RETURNED = 0x01
    ERROR_RETURNED = 0x02
    INVOKE_ON_CANCEL = 0x20
    INVOKE_ON_SUCCESS = 0x40
    INVOKE_ON_ERROR = 0x80


class TransferMethod(enum.IntEnum):
    """How the I/O manager describes the buffers of a device-control request (``METHOD_*``)."""

    BUFFERED = 0
    IN_DIRECT = 1
    OUT_DIRECT = 2
    NEITHER = 3


class FileAccess(enum.IntFlag):
    """The access bits of a control code (``FILE_*_ACCESS``)."""

    ANY = 0
    READ = 1
    WRITE = 2


class ControlCode(NamedTuple):
    """An I/O control code split into its four fields (``CTL_CODE``, reference 11.5).

    ``int(ControlCode(...))`` is not how to get the number: use :attr:`value`, or build with
    :meth:`ControlCode.make` and parse with :meth:`ControlCode.parse`.
    """

    device_type: int
    function: int
    method: TransferMethod
    access: FileAccess

    @classmethod
    def make(
        cls,
        device_type: int,
        function: int,
        method: TransferMethod | int = TransferMethod.BUFFERED,
        access: FileAccess | int = FileAccess.ANY,
    ) -> int:
        """Build the 32-bit control code.

        :param device_type: 16 bits; 0x8000 and above are vendor types.
        :param function: 12 bits; 0x800 and above are vendor functions.
        :param method: the transfer method, 0 to 3.
        :param access: the required access, 0 to 3.
        :returns: ``(device_type << 16) | (access << 14) | (function << 2) | method``.
        :raises ValueError: if a field does not fit its width.
        """
        for label, value, limit in (
            ("device_type", device_type, 0xFFFF),
            ("function", function, 0xFFF),
            ("method", method, 3),
            ("access", access, 3),
        ):
            if not isinstance(value, int) or not 0 <= value <= limit:
                raise ValueError(f"control code {label} must be an int in 0..{limit:#x}, got {value!r}")
        return (device_type << 16) | (int(access) << 14) | (function << 2) | int(method)

    @classmethod
    def parse(cls, code: int) -> ControlCode:
        """Split a 32-bit control code into its fields.

        :raises ValueError: if *code* is not a 32-bit unsigned int.
        """
        if not isinstance(code, int) or not 0 <= code <= 0xFFFF_FFFF:
            raise ValueError(f"a control code is a 32-bit unsigned int, got {code!r}")
        return cls(
            device_type=(code & 0xFFFF_0000) >> 16,
            function=(code >> 2) & 0xFFF,
            method=TransferMethod(code & 3),
            access=FileAccess((code >> 14) & 3),
        )

    @property
    def value(self) -> int:
        """The 32-bit control code."""
        return self.make(self.device_type, self.function, self.method, self.access)
