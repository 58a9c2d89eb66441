"""Issue 10 items 8 and 9: one vocabulary for the queue family, and one default for the cancel
routine of a started packet.  Written from the driver author's side."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from _cancel_drivers import held_irp

import airp
from airp import (
    STATUS_CANCELLED,
    STATUS_PENDING,
    STATUS_SUCCESS,
    DeviceObject,
    Driver,
    IoQueue,
    Irp,
    IrpMajor,
    IrpQueue,
    Request,
    StartIoQueue,
    cancel_irp,
    complete_request,
)
from airp.testing import VirtualClock

# -- item 8: one verb to pend, old names deprecated but working -----------------------------------


def test_cancel_safe_queue_complete_all_is_the_cleanup_loop_and_drain_is_its_old_name() -> None:
    queue = IrpQueue()
    irps = [held_irp(DeviceObject(Driver("csq"))) for _ in range(3)]
    for irp, _ in irps:
        assert queue.insert(irp) == STATUS_PENDING
    assert queue.complete_all() == 3
    assert [done for _, done in irps] == [[STATUS_CANCELLED]] * 3
    again, done = held_irp(DeviceObject(Driver("csq")))
    queue.insert(again)
    with pytest.deprecated_call(match="complete_all"):
        assert queue.drain() == 1  # the old name still works, and says what to use
    assert done == [STATUS_CANCELLED]


def test_cancel_all_counts_only_the_irps_it_cancelled() -> None:
    queue = IrpQueue()
    irps = [held_irp(DeviceObject(Driver("csq"))) for _ in range(3)]
    for irp, _ in irps:
        queue.insert(irp)
    # Someone else's cancel of the middle IRP has taken its routine and not run it yet (the window
    # IoCancelIrp opens on another CPU before the cancel routine acquires the queue lock).
    middle, _ = irps[1]
    middle.cancel = True
    taken = middle.set_cancel_routine(None)
    assert taken is not None
    assert queue.cancel_all() == 2  # not 3: the middle one was not this call's to cancel
    assert [done for _, done in irps] == [[STATUS_CANCELLED], [], [STATUS_CANCELLED]]
    taken(None, middle)  # the in-flight cancel finishes it
    assert irps[1][1] == [STATUS_CANCELLED]
    assert queue.cancel_all() == 0


def test_mark_irp_cancelable_answers_as_request_mark_cancelable_does() -> None:
    irp, done = held_irp(DeviceObject(Driver("d")))
    assert airp.mark_irp_cancelable(irp, lambda dev, irp: complete_request(irp, STATUS_CANCELLED, 0)) == STATUS_SUCCESS
    assert airp.unmark_irp_cancelable(irp) == STATUS_SUCCESS
    cancel_irp(irp)  # cancelled before it is armed again
    assert airp.mark_irp_cancelable(irp, lambda dev, irp: None) == STATUS_CANCELLED
    assert irp.cancel_routine is None  # not armed: the driver completes it
    complete_request(irp, STATUS_CANCELLED, 0)
    assert done == [STATUS_CANCELLED]


def test_the_bool_helpers_are_deprecated_aliases() -> None:
    irp, _ = held_irp(DeviceObject(Driver("d")))
    with pytest.deprecated_call(match="mark_irp_cancelable"):
        assert airp.mark_cancelable(irp, lambda dev, irp: None) is True
    with pytest.deprecated_call(match="unmark_irp_cancelable"):
        assert airp.unmark_cancelable(irp) is True
    complete_request(irp, STATUS_SUCCESS, 0)


class KmdfDriver(airp.Driver):
    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLOSE, IrpMajor.CLEANUP)
    async def create_close(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        queue: IoQueue = device.extension
        if irp.current_stack_location.parameters.byte_offset == 1:
            with pytest.deprecated_call(match=r"IoQueue\.insert"):
                return queue.add(irp)
        return queue.insert(irp)


@pytest.mark.anyio
async def test_io_queue_insert_pends_like_a_cancel_safe_queue_and_add_still_works(virtual_clock: VirtualClock) -> None:
    io = airp.IoManager()
    device = io.create_device(KmdfDriver(), "\\Device\\Kmdf")

    async def handler(queue: IoQueue, request: Request) -> None:
        await anyio.sleep(1)
        request.complete(STATUS_SUCCESS, 4)

    device.extension = IoQueue(device, handler)
    async with airp.run_device(device), io.open("\\Device\\Kmdf") as handle:
        new = await handle.read_overlapped(4, offset=0)
        old = await handle.read_overlapped(4, offset=1)
        assert new.status_returned == old.status_returned == STATUS_PENDING
        await new
        await old
    assert virtual_clock.now() == pytest.approx(2)


# -- item 9: a StartIo routine that forgets set_cancel_routine(None) ------------------------------


class ForgetfulStartIo(airp.Driver):
    """Arms the ready-made 7.5 cancel routine, then completes without disarming it."""

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLOSE, IrpMajor.CLEANUP)
    async def create_close(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        return airp.start_packet(device, irp, cancel_routine=airp.start_io_cancel_routine)

    async def start_io(self, device: DeviceObject, irp: Irp) -> None:
        await anyio.sleep(1)
        airp.complete_and_start_next(device, irp, STATUS_SUCCESS, 0, cancelable=True)  # no disarm


@pytest.mark.anyio
async def test_system_start_io_that_forgets_to_disarm_does_not_stop_the_device(virtual_clock: VirtualClock) -> None:
    io = airp.IoManager()
    device = io.create_device(ForgetfulStartIo(), "\\Device\\Forgetful")
    async with airp.run_device(device), io.open("\\Device\\Forgetful") as handle:
        # The first starts on an idle device, the others by start-next: all lose the routine.
        reads = [await handle.read_overlapped(0, offset=n) for n in range(3)]
        for read in reads:
            assert await read == b""
    assert virtual_clock.now() == pytest.approx(3)


@pytest.mark.anyio
async def test_a_lane_and_the_system_queue_treat_a_started_packet_alike(virtual_clock: VirtualClock) -> None:
    io = airp.IoManager()
    seen: list[object] = []

    class Both(ForgetfulStartIo):
        @airp.dispatch(IrpMajor.WRITE)
        async def write(self, device: DeviceObject, irp: Irp) -> int:
            lane: StartIoQueue = device.extension
            return lane.start_packet(irp)

        async def start_io(self, device: DeviceObject, irp: Irp) -> None:
            seen.append(("system", irp.cancel_routine))
            await ForgetfulStartIo.start_io(self, device, irp)

    device = io.create_device(Both(), "\\Device\\Both")

    async def lane_routine(device: DeviceObject, irp: Irp) -> None:
        seen.append(("lane", irp.cancel_routine))
        await anyio.sleep(1)
        complete_request(irp, STATUS_SUCCESS, 0)

    device.extension = StartIoQueue(device, "write", lane_routine)
    async with airp.run_device(device), io.open("\\Device\\Both") as handle:
        requests: list[airp.Overlapped[Any]] = []
        for n in range(2):
            requests.append(await handle.read_overlapped(0, offset=n))
            requests.append(await handle.write_overlapped(b"x", offset=n))
        for request in requests:
            await request
    assert sorted(seen, key=str) == sorted([("lane", None)] * 2 + [("system", None)] * 2, key=str)
