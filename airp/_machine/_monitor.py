"""What the IRP machine and the async shell call on a tracing monitor: the ``MonitorHooks`` protocol.

An IRP carries the monitor that watches it in ``irp._monitor``, or ``None`` when tracing is off,
which costs :func:`~airp.call_driver` and :func:`~airp.complete_request` one ``is None`` test each.
The lower layers name the monitor by this protocol only, never by its class, so that they do not
import the tools: :class:`airp.IrpMonitor` (``airp._tools._tracing``) is the implementation that
:class:`~airp.IoManager` and :class:`~airp.IrpAllocator` are usually given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ._device import DeviceObject
    from ._irp import Irp

__all__ = ["MonitorHooks"]


class MonitorHooks(Protocol):
    """The calls a monitor receives about the IRPs it watches, in the order of an IRP's life."""

    def watch(self, irp: Irp) -> Irp:
        """Make *irp* report to this monitor (its allocator or the I/O manager calls it)."""
        ...

    def dispatching(self, irp: Irp, device: DeviceObject) -> None:
        """``call_driver`` is about to await the dispatch routine of *device*."""
        ...

    def dispatched(self, irp: Irp, device: DeviceObject, status: int) -> None:
        """That dispatch routine returned *status*."""
        ...

    def completing(self, irp: Irp) -> None:
        """``complete_request`` begins the walk up from the current location."""
        ...

    def routine_ran(self, irp: Irp, owner: DeviceObject | None, routine: object, result: int) -> None:
        """The completion routine of *owner*'s driver returned something other than the usual result."""
        ...

    def completed(self, irp: Irp) -> None:
        """The completion walk reached the top."""
        ...
