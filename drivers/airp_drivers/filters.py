"""Two filter drivers: one that watches results on the way up, one that stays out of the way.

Both are Plug and Play filters (copy :class:`AuditFilter` for an upper filter with a completion
routine): ``add_device`` attaches a filter device to the stack, PnP requests go down untouched
except IRP_MN_REMOVE_DEVICE, where the filter detaches and deletes its device after the lower
drivers have seen it (a filter must, like every driver of the stack: bug checks 0xC9/0x21D and
0x21E otherwise).  Both also work in a stack built by hand (``io.create_device`` and
``attach_device``, no PnP), as ``docs/plugins.md`` shows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import airp
from airp import STATUS_SUCCESS, DeviceFlags, DeviceObject, Irp, IrpMajor, PnpMinor, complete_request

__all__ = ["AuditFilter", "FilterDevice", "PassThroughFilter"]


class FilterDevice:
    """The extension of a filter device made by ``add_device``.

    :ivar lower: the device below (what ``attach_device`` returned).
    :ivar lock: the remove lock: held from a watched request's dispatch until its completion
        routine runs, so that REMOVE_DEVICE waits for the requests still below.
    """

    def __init__(self, name: str) -> None:
        self.lower: DeviceObject | None = None
        self.lock = airp.RemoveLock(name)


def _add_filter(driver: airp.Driver, pdo: DeviceObject) -> DeviceObject[FilterDevice]:
    extension = FilterDevice(f"{driver.name} {len(driver.devices)}")
    device = DeviceObject(driver, extension=extension)
    # attach_device copies DO_BUFFERED_IO / DO_DIRECT_IO and the device type from the device
    # below: a filter must look like what it filters.
    extension.lower = airp.attach_device(device, pdo)
    device.flags &= ~DeviceFlags.DEVICE_INITIALIZING
    return device


async def _filter_pnp(device: DeviceObject, irp: Irp) -> int:
    """A filter's PnP: everything goes down untouched; REMOVE_DEVICE then detaches and deletes."""
    extension = device.extension
    if not isinstance(extension, FilterDevice):
        return await airp.pass_down(device, irp)  # a filter attached by hand: no PnP life
    if irp.current_stack_location.minor != PnpMinor.REMOVE_DEVICE:
        return await airp.pass_down(device, irp)
    lower = extension.lower
    assert lower is not None
    lock = extension.lock
    status = lock.acquire(irp)
    if status != STATUS_SUCCESS:
        complete_request(irp, status, 0)
        return status
    irp.status = STATUS_SUCCESS
    status = await airp.pass_down(device, irp)
    # Requests still below hold the lock until their completion routine runs.
    await lock.release_and_wait(irp)
    airp.detach_device(lower)
    airp.delete_device(device)
    return status


class AuditFilter(airp.Driver):
    """An upper filter that watches the results of reads, writes and device controls (plugin ``audit-filter``).

    It sets a completion routine on each watched request; the routine runs on the way back up,
    sees the final status, counts it, and propagates the pending mark (reference 5.4), which every
    routine that lets the walk go on must do.  Everything else is passed down untouched.

    :param on_result: called with ``(major name, status, information)`` for each watched request.
    :ivar seen: how many watched requests came back up.
    :ivar results: ``(major name, status name) -> count`` of the requests that came back up.
    :ivar unloaded: True once :meth:`unload` has run.
    """

    pass_through = True

    def __init__(self, on_result: Callable[[str, airp.NtStatus, int], Any] | None = None) -> None:
        super().__init__("audit-filter")
        self.on_result = on_result
        self.seen = 0
        self.results: Counter[tuple[str, str]] = Counter()
        self.unloaded = False

    def add_device(self, pdo: DeviceObject) -> DeviceObject[FilterDevice]:
        """AddDevice: attach a filter device on top of the stack built so far on *pdo*.

        :param pdo: the stack's physical device object.
        :returns: the filter device.
        """
        return _add_filter(self, pdo)

    def unload(self) -> None:
        """DriverUnload: drop the callback (the counts stay for whoever reads them)."""
        self.on_result = None
        self.unloaded = True

    @airp.dispatch(IrpMajor.READ, IrpMajor.WRITE, IrpMajor.DEVICE_CONTROL)
    async def watch(self, device: DeviceObject, irp: Irp) -> int:
        """Set the completion routine and pass the request down, holding the remove lock until it comes back.

        :returns: the lower driver's status, unchanged.
        """
        lower = device.lower_device
        assert lower is not None
        major = IrpMajor(irp.current_stack_location.major).name
        extension = device.extension
        lock = extension.lock if isinstance(extension, FilterDevice) else None
        if lock is not None:
            status = lock.acquire(irp)
            if status != STATUS_SUCCESS:
                complete_request(irp, status, 0)
                return status
        irp.copy_current_stack_location_to_next()
        irp.set_completion_routine(self._on_complete, (major, lock))
        return await airp.call_driver(lower, irp)

    def _on_complete(self, device: DeviceObject | None, irp: Irp, context: tuple[str, airp.RemoveLock | None]) -> int:
        major, lock = context
        if irp.pending_returned:
            irp.mark_pending()
        status = airp.NtStatus(irp.status)
        self.seen += 1
        self.results[major, status.name] += 1
        if self.on_result is not None:
            self.on_result(major, status, irp.information)
        if lock is not None:
            lock.release(irp)
        return airp.STATUS_CONTINUE_COMPLETION

    @airp.dispatch(IrpMajor.PNP)
    async def pnp(self, device: DeviceObject, irp: Irp) -> int:
        """PnP requests go down untouched; REMOVE_DEVICE then detaches and deletes the filter device.

        :returns: the lower driver's status.
        """
        return await _filter_pnp(device, irp)


class PassThroughFilter(airp.Driver):
    """A lower filter that handles nothing: every request is skipped down (plugin ``pass-through-filter``).

    Only IRP_MN_REMOVE_DEVICE has work for it: detaching and deleting its device.
    """

    pass_through = True

    def __init__(self) -> None:
        super().__init__("pass-through-filter")

    def add_device(self, pdo: DeviceObject) -> DeviceObject[FilterDevice]:
        """AddDevice: attach a filter device on top of the stack built so far on *pdo*.

        :param pdo: the stack's physical device object.
        :returns: the filter device.
        """
        return _add_filter(self, pdo)

    def unload(self) -> None:
        """DriverUnload: this filter keeps no global state."""

    @airp.dispatch(IrpMajor.PNP)
    async def pnp(self, device: DeviceObject, irp: Irp) -> int:
        """PnP requests go down untouched; REMOVE_DEVICE then detaches and deletes the filter device.

        :returns: the lower driver's status.
        """
        return await _filter_pnp(device, irp)
