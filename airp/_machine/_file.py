"""The file object: what a handle refers to, as drivers see it in every stack location."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from ._device import DeviceObject
from ._misuse import must_be

if TYPE_CHECKING:
    from ._irp import Irp

__all__ = ["FileObject"]

_serial = itertools.count(1)


class FileObject:
    """``FILE_OBJECT``: one open of a device.

    Every IRP sent for a handle carries its file object in each stack location, so that a driver
    can find the requests of one handle (for cleanup, reference 6.5).

    :ivar device: the device that was opened (the named device, not the top of its stack).
    :ivar fs_context: scratch for the driver that completed IRP_MJ_CREATE.
    :ivar synchronous: True if opened for synchronous I/O (``FO_SYNCHRONOUS_IO``).
    :ivar requests: the requests the I/O manager sent for this open that have not reached their
        final stage yet, oldest first (what cleanup must account for, reference 6.5).
    :raises TypeError: if *device* is not a DeviceObject.
    """

    __slots__ = ("__weakref__", "closed", "device", "fs_context", "number", "requests", "synchronous")

    def __init__(self, device: DeviceObject, *, synchronous: bool = False) -> None:
        if not isinstance(device, DeviceObject):
            raise must_be("FileObject(device): device", "the DeviceObject opened", device)
        self.device = device
        self.fs_context: Any = None
        self.synchronous = synchronous
        self.closed = False
        self.number = next(_serial)
        self.requests: dict[Irp, None] = {}

    def __repr__(self) -> str:
        return f"<FileObject {self.number} on {self.device.name or self.device!r}>"
