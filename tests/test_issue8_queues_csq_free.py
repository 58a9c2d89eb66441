"""Issue 8, items 8 to 10, as they were reported: one test per item, from the user's side.

- 8: cancelling a ``run_device`` block made a requester whose IRP was still queued wait out the
  cancel-wait limit; and a KMDF request the driver kept outlived its REMOVED device.
- 9: a cancel-safe queue whose ``complete_canceled_irp`` raised lost the IRP.
- 10: ``free_irp`` took back an IRP a lower driver still held, and the lookaside list handed the
  same object out again.

The detailed tests live with their subjects: ``test_device_teardown.py``, ``test_csq.py``,
``test_allocation.py`` and ``test_irp_pool.py``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import anyio
import pytest

import airp
from airp import (
    STATUS_INTERNAL_ERROR,
    STATUS_NO_SUCH_DEVICE,
    STATUS_PENDING,
    STATUS_SUCCESS,
    DeviceObject,
    DeviceState,
    Irp,
    IrpMajor,
    complete_request,
)
from airp.testing import VirtualClock, wait_until_quiet

pytestmark = pytest.mark.anyio


class Basic(airp.Driver):
    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLOSE, IrpMajor.CLEANUP)
    async def create_close(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS


# -- item 8 ---------------------------------------------------------------------------------------


class SlowStartIo(Basic):
    """Reads go to the system StartIo queue (no cancel routine); each takes 10 s."""

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        return airp.start_packet(device, irp)

    async def start_io(self, device: DeviceObject, irp: Irp) -> None:
        await anyio.sleep(10)
        airp.complete_and_start_next(device, irp, STATUS_SUCCESS, 0)


async def test_item_8_cancelling_run_device_releases_every_requester_at_once(virtual_clock: VirtualClock) -> None:
    # Reported: the first requester was released at 0.3 s with STATUS_NO_SUCH_DEVICE, the second
    # (its read still queued) only at 0.3 + 3 s, disowned, with a DriverCancelTimeoutWarning
    # (which this suite's filterwarnings would turn into an error).
    airp.set_cancel_wait_limit(3)
    io = airp.IoManager()
    device = io.create_device(SlowStartIo(), "\\Device\\Slow")
    released: dict[int, float] = {}
    sent: dict[int, airp.Overlapped[Any]] = {}

    async def requester(handle: airp.FileHandle, n: int) -> None:
        sent[n] = request = await handle.read_overlapped(1)
        try:
            await request
        finally:
            released[n] = anyio.current_time()

    async with io.open("\\Device\\Slow") as handle:
        with anyio.move_on_after(0.3):
            async with airp.run_device(device) as tasks, anyio.create_task_group() as tg:
                tg.start_soon(requester, handle, 1)
                tg.start_soon(requester, handle, 2)
        assert released == {1: pytest.approx(0.3), 2: pytest.approx(0.3)}
        assert sent[1].irp.status == STATUS_NO_SUCH_DEVICE  # the one StartIo was working on
        assert sent[2].irp.status == STATUS_NO_SUCH_DEVICE  # the queued one: at once, too
        assert not airp.is_disowned(sent[2].irp)
        assert tasks.state is DeviceState.REMOVED
        assert io.outstanding_requests() == []


async def test_item_8_a_request_the_driver_kept_is_settled_before_removed(virtual_clock: VirtualClock) -> None:
    # Reported: after the block, a KMDF request the driver still owned was neither completed nor
    # waited for, while the state said REMOVED.  Now the exit cancels it (its cancel callback
    # runs) and waits for it; the state says REMOVED once it has been let go.
    kept: list[airp.Request] = []

    class Keeps(Basic):
        @airp.dispatch(IrpMajor.DEVICE_CONTROL)
        async def ioctl(self, device: DeviceObject, irp: Irp) -> int:
            return device.extension.insert(irp)  # type: ignore[no-any-return]

    async def handler(queue: airp.IoQueue, request: airp.Request) -> None:
        kept.append(request)  # "the hardware completes it later"
        request.mark_cancelable(lambda request: request.complete(airp.STATUS_CANCELLED, 0))

    io = airp.IoManager()
    device = io.create_device(Keeps(), "\\Device\\Keeps")
    device.extension = airp.IoQueue(device, handler)
    async with io.open("\\Device\\Keeps") as handle:
        async with airp.run_device(device) as tasks:
            request = await handle.device_control_overlapped(0x222003)
            await wait_until_quiet()
            assert kept[0].owned
        assert tasks.state is DeviceState.REMOVED
        assert not kept[0].owned
        assert request.irp.status == airp.STATUS_CANCELLED
        assert io.outstanding_requests() == []


# -- item 9 ---------------------------------------------------------------------------------------


async def test_item_9_a_raising_complete_canceled_irp_does_not_lose_the_irp(virtual_clock: VirtualClock) -> None:
    # Reported: the requester got the exception, the IRP had left the queue, nothing completed it.
    class HeldInCsq(Basic):
        def __init__(self) -> None:
            super().__init__("csq")
            self.queue = airp.IrpQueue(complete_canceled_irp=self.complete_canceled)

        def complete_canceled(self, irp: Irp) -> None:
            raise KeyError("complete_canceled_irp")

        @airp.dispatch(IrpMajor.READ)
        async def read(self, device: DeviceObject, irp: Irp) -> int:
            return self.queue.insert(irp)

    driver = HeldInCsq()
    io = airp.IoManager()
    io.create_device(driver, "\\Device\\Csq")
    async with io.open("\\Device\\Csq") as handle:
        request = await handle.read_overlapped(1)
        # The exception may reach the requester, whose cancel ran the callback.
        with anyio.move_on_after(1), contextlib.suppress(KeyError):
            await request
        assert anyio.current_time() == pytest.approx(1)
        assert request.done
        assert request.irp.status == STATUS_INTERNAL_ERROR
        assert len(driver.queue) == 0
        assert io.outstanding_requests() == []
    assert anyio.current_time() == pytest.approx(1)  # close() had nothing to wait for


async def test_item_9_a_raising_complete_canceled_irp_at_insert_does_not_lose_the_irp(virtual_clock: VirtualClock) -> None:
    # The same callback, reached the other way: the IRP is cancelled (CancelIo from another task)
    # before the dispatch routine has queued it, so insert() finds it cancelled and has the
    # callback complete it at once.
    class SlowToQueue(Basic):
        def __init__(self) -> None:
            super().__init__("csq")
            self.queue = airp.IrpQueue(complete_canceled_irp=self.complete_canceled)
            self.seen: list[Irp] = []
            self.gate = anyio.Event()

        def complete_canceled(self, irp: Irp) -> None:
            raise KeyError("complete_canceled_irp")

        @airp.dispatch(IrpMajor.READ)
        async def read(self, device: DeviceObject, irp: Irp) -> int:
            self.seen.append(irp)
            await self.gate.wait()
            return self.queue.insert(irp)

    driver = SlowToQueue()
    io = airp.IoManager()
    io.create_device(driver, "\\Device\\Csq")
    errors: list[BaseException] = []

    async def requester(handle: airp.FileHandle) -> None:
        try:
            await handle.read(1)
        except Exception as error:  # whatever the failed routine becomes for the requester
            errors.append(error)

    async with io.open("\\Device\\Csq") as handle, anyio.create_task_group() as tg:
        tg.start_soon(requester, handle)
        await wait_until_quiet()
        (irp,) = driver.seen
        assert airp.cancel_irp(irp) is False  # no cancel routine yet: only the flag
        driver.gate.set()
        await wait_until_quiet()
        assert errors  # the requester was not left waiting
        assert irp.completed
        assert irp.status == STATUS_INTERNAL_ERROR
        assert len(driver.queue) == 0
        assert io.outstanding_requests() == []
    assert anyio.current_time() == 0  # and close() had nothing to wait for


# -- item 10 --------------------------------------------------------------------------------------


class Holder(Basic):
    """Pends every read and keeps it, as a slow lower driver does."""

    def __init__(self) -> None:
        super().__init__("holder")
        self.held: list[Irp] = []

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        irp.mark_pending()
        self.held.append(irp)
        return STATUS_PENDING


async def test_item_10_free_irp_refuses_an_irp_sent_without_a_completion_routine() -> None:
    # Reported: free_irp accepted it, the lookaside list handed the same object out again, and the
    # lower driver's late completion then completed the new, never-sent IRP (0x2A on the wrong
    # request).
    allocator = airp.IrpAllocator()
    lower_driver = Holder()
    lower = airp.IoManager().create_device(lower_driver)
    irp = airp.allocate_irp(lower.stack_size, allocator=allocator)
    assert irp is not None
    irp.next_stack_location.major = IrpMajor.READ
    irp.next_stack_location.parameters = airp.ReadWriteParameters(4, 0)
    assert await airp.send_irp(lower, irp) == STATUS_PENDING  # no completion routine

    with pytest.raises(airp.BugCheck) as caught:
        airp.free_irp(irp)
    assert caught.value.code == 0xC9
    assert caught.value.parameters[0] == airp.VerifierCode.FREE_IRP_IN_USE == 0x20A
    assert caught.value.device is lower

    fresh = airp.allocate_irp(lower.stack_size, allocator=allocator)
    assert fresh is not None
    assert fresh is not irp  # the list did not hand the held one out
    # The late completion is charged to the IRP that was sent, and only to it.
    with pytest.raises(airp.BugCheck) as late:
        complete_request(lower_driver.held.pop(), STATUS_SUCCESS, 0)
    assert late.value.code == 0x2A
    assert late.value.irp is irp
    assert fresh.current_location == fresh.stack_count + 1  # untouched
