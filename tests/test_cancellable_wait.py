"""Issue 10 item 14: ``airp.wait_or_cancelled`` lets a StartIo routine or a KMDF handler abort work
under way.  A requester under ``fail_after`` gets its read back at its deadline, not when the
transfer would have ended."""

from __future__ import annotations

import math

import anyio
import pytest
from _cancel_drivers import held_irp

import airp
from airp import (
    STATUS_CANCELLED,
    STATUS_SUCCESS,
    DeviceObject,
    Driver,
    IoQueue,
    Irp,
    IrpMajor,
    IrpStateError,
    Request,
    StartIoQueue,
    complete_request,
)
from airp.testing import VirtualClock

pytestmark = pytest.mark.anyio

TRANSFER = 0.010  # the device's time for one read


class Device(airp.Driver):
    """READ goes to the system StartIo (offset 0), a lane (offset 1) or a KMDF queue (offset 2)."""

    def __init__(self) -> None:
        super().__init__("transfer")
        self.finished: list[tuple[str, object, object]] = []  # where, status, time

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLOSE, IrpMajor.CLEANUP)
    async def create_close(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        where = irp.current_stack_location.parameters.byte_offset
        if where == 0:
            return airp.start_packet(device, irp, cancel_routine=airp.start_io_cancel_routine)
        lane: StartIoQueue = device.extension[0]
        queue: IoQueue = device.extension[1]
        return lane.start_packet(irp) if where == 1 else queue.insert(irp)

    def _finish(self, where: str, irp: Irp, cancelled: bool) -> tuple[int, int]:
        status, length = (
            (STATUS_CANCELLED, 0) if cancelled else (STATUS_SUCCESS, irp.current_stack_location.parameters.length)
        )
        self.finished.append((where, status, anyio.current_time()))
        return status, length

    async def start_io(self, device: DeviceObject, irp: Irp) -> None:
        cancelled = await airp.wait_or_cancelled(irp, TRANSFER)
        airp.complete_and_start_next(device, irp, *self._finish("system", irp, cancelled))

    async def lane_start_io(self, device: DeviceObject, irp: Irp) -> None:
        cancelled = await airp.wait_or_cancelled(irp, TRANSFER)
        complete_request(irp, *self._finish("lane", irp, cancelled))

    async def handler(self, queue: IoQueue, request: Request) -> None:
        cancelled = await airp.wait_or_cancelled(request, TRANSFER)
        request.complete(*self._finish("kmdf", request.irp, cancelled))


def make() -> tuple[airp.IoManager, DeviceObject, Device]:
    io = airp.IoManager()
    driver = Device()
    device = io.create_device(driver, "\\Device\\Transfer")
    device.extension = (
        StartIoQueue(device, "read", driver.lane_start_io),
        IoQueue(device, driver.handler, dispatch="parallel"),
    )
    return io, device, driver


@pytest.mark.parametrize(("offset", "where"), [(0, "system"), (1, "lane"), (2, "kmdf")])
async def test_a_read_under_fail_after_ends_at_the_deadline(
    virtual_clock: VirtualClock, offset: int, where: str
) -> None:
    io, device, driver = make()
    async with airp.run_device(device), io.open("\\Device\\Transfer") as handle:
        with pytest.raises(TimeoutError):
            with anyio.fail_after(0.005):
                await handle.read(8, offset=offset)
        assert virtual_clock.now() == pytest.approx(0.005)  # not 0.010: the transfer was aborted
        assert driver.finished == [(where, STATUS_CANCELLED, pytest.approx(0.005))]
        # The routine's cancel routine is gone and the queue goes on: the next read is whole.
        assert await handle.read(8, offset=offset) == bytes(8)
    assert driver.finished[-1] == (where, STATUS_SUCCESS, pytest.approx(0.015))


@pytest.mark.parametrize("offset", [0, 1, 2])
async def test_an_uncancelled_wait_runs_its_time_and_leaves_no_cancel_routine(
    virtual_clock: VirtualClock, offset: int
) -> None:
    io, device, _ = make()
    async with airp.run_device(device), io.open("\\Device\\Transfer") as handle:
        read = await handle.read_overlapped(8, offset=offset)
        await anyio.sleep(TRANSFER / 2)
        assert read.irp.cancel_routine is not None  # armed for the wait
        assert await read == bytes(8)
        assert read.irp.cancel_routine is None
    assert virtual_clock.now() == pytest.approx(TRANSFER)


async def test_a_device_removal_wakes_the_wait(virtual_clock: VirtualClock) -> None:
    io, device, _ = make()

    async def forever(device: DeviceObject, irp: Irp) -> None:
        cancelled = await airp.wait_or_cancelled(irp, math.inf)  # until cancelled
        complete_request(irp, STATUS_CANCELLED if cancelled else STATUS_SUCCESS, 0)

    lane = StartIoQueue(device, "forever", forever)
    device.extension = (lane, device.extension[1])
    async with airp.run_device(device), io.open("\\Device\\Transfer") as handle:
        read = await handle.read_overlapped(8, offset=1)
        await anyio.sleep(3)
    assert read.irp.status == STATUS_CANCELLED  # removal cancelled it; the routine finished it
    assert virtual_clock.now() == pytest.approx(3)


async def test_already_cancelled_returns_at_once() -> None:
    irp, _ = held_irp(DeviceObject(Driver("d")))
    airp.cancel_irp(irp)
    assert await airp.wait_or_cancelled(irp, 10) is True
    assert irp.cancel_routine is None
    complete_request(irp, STATUS_CANCELLED, 0)


async def test_misuse_is_refused_with_what_was_expected() -> None:
    irp, _ = held_irp(DeviceObject(Driver("d")))
    with pytest.raises(ValueError, match=">= 0"):
        await airp.wait_or_cancelled(irp, -1)
    with pytest.raises(TypeError, match="number of seconds"):
        await airp.wait_or_cancelled(irp, "1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Irp or a Request"):
        await airp.wait_or_cancelled(object(), 1)  # type: ignore[arg-type]
    airp.mark_irp_cancelable(irp, lambda dev, irp: None)
    with pytest.raises(IrpStateError, match="already has cancel routine"):
        await airp.wait_or_cancelled(irp, 1)
    airp.unmark_irp_cancelable(irp)
    complete_request(irp, STATUS_SUCCESS, 0)
    with pytest.raises(IrpStateError, match="completed"):
        await airp.wait_or_cancelled(irp, 1)
