"""Drivers for tests/test_simulate.py, named in description files by ``module:Class`` path.

* :class:`HoldingDisk`: a function driver that pends every read and never completes it (until a
  cancel, which its cancel routine honours): a run on it loses every request.
* :class:`ThenWaitFilter`: an upper filter that forwards synchronously (``forward_and_wait``, a
  completion routine returning STATUS_MORE_PROCESSING_REQUIRED), then holds the IRP ``hold``
  seconds more before completing it: its layer time is the disk's plus ``hold``.
"""

from __future__ import annotations

import anyio

import airp
from airp import STATUS_CANCELLED, STATUS_SUCCESS, DeviceFlags, DeviceObject, Irp, IrpMajor, PnpMinor, complete_request


def _attach(driver: airp.Driver, pdo: DeviceObject) -> DeviceObject:
    device = DeviceObject(driver, flags=DeviceFlags.BUFFERED_IO)
    airp.attach_device(device, pdo)
    device.flags &= ~DeviceFlags.DEVICE_INITIALIZING
    return device


async def _pnp(device: DeviceObject, irp: Irp) -> int:
    lower = device.lower_device
    assert lower is not None
    minor = irp.current_stack_location.minor
    if minor in (PnpMinor.START_DEVICE, PnpMinor.SURPRISE_REMOVAL, PnpMinor.REMOVE_DEVICE):
        irp.status = STATUS_SUCCESS
    status = await airp.pass_down(device, irp)
    if minor == PnpMinor.REMOVE_DEVICE:
        airp.detach_device(lower)
        airp.delete_device(device)
    return status


class HoldingDisk(airp.Driver):
    """Pends reads forever; a cancel completes them with STATUS_CANCELLED."""

    def __init__(self) -> None:
        super().__init__("holding-disk")

    def add_device(self, pdo: DeviceObject) -> DeviceObject:
        return _attach(self, pdo)

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLOSE, IrpMajor.CLEANUP)
    async def create_close(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        irp.mark_pending()
        if airp.mark_irp_cancelable(irp, self._cancel) == STATUS_CANCELLED:
            complete_request(irp, STATUS_CANCELLED, 0)
        return airp.STATUS_PENDING

    def _cancel(self, device: DeviceObject | None, irp: Irp) -> None:
        complete_request(irp, STATUS_CANCELLED, 0)

    @airp.dispatch(IrpMajor.PNP)
    async def pnp(self, device: DeviceObject, irp: Irp) -> int:
        return await _pnp(device, irp)


class ThenWaitFilter(airp.Driver):
    """Forwards and waits, then holds the IRP *hold* seconds before completing it."""

    pass_through = True

    def __init__(self, hold: float = 0.5) -> None:
        super().__init__("then-wait-filter")
        self.hold = hold

    def add_device(self, pdo: DeviceObject) -> DeviceObject:
        return _attach(self, pdo)

    @airp.dispatch(IrpMajor.READ, IrpMajor.WRITE)
    async def read_write(self, device: DeviceObject, irp: Irp) -> int:
        lower = device.lower_device
        assert lower is not None
        status, information = await airp.forward_and_wait(lower, irp)
        await anyio.sleep(self.hold)
        complete_request(irp, status, information)
        return status

    @airp.dispatch(IrpMajor.PNP)
    async def pnp(self, device: DeviceObject, irp: Irp) -> int:
        return await _pnp(device, irp)
