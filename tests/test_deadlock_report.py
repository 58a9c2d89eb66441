"""What a deadlock on virtual time reports: the structured fields and the message.

When a run deadlocks, :class:`airp.testing.VirtualTimeDeadlock` is assembled from what holds: the
run's I/O managers (requests outstanding, PnP IRPs in flight), the devices' task groups (IRPs in
StartIo lanes and KMDF queues) and remove locks in ``release_and_wait`` (with their holders'
tags).  Each test builds one such stuck run, on both backends, and checks the error's fields and
its message.  Every run is under a hang guard: a daemon thread joined with a timeout, so that a
deadlock the clock fails to see fails the test instead of hanging the suite.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from _guarded_run import run_guarded
from _pnp_drivers import Filter, Function, Log

import airp
from airp import (
    STATUS_PENDING,
    STATUS_SUCCESS,
    DeviceObject,
    IoQueue,
    Irp,
    IrpMajor,
    Request,
    StartIoQueue,
    complete_request,
)
from airp.testing import VirtualTimeDeadlock

BACKENDS = pytest.mark.parametrize("backend", ["asyncio", "trio"])



class OpenClose(airp.Driver):
    """CREATE, CLOSE and CLEANUP succeed at once."""

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLOSE, IrpMajor.CLEANUP)
    async def open_close(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS


# -- 1. a remove lock never released ----------------------------------------------------------------


class LeakyDisk(OpenClose):
    """Acquires its remove lock for every READ and pends the READ, never releasing either."""

    def __init__(self) -> None:
        super().__init__("leaky")
        self.lock = airp.RemoveLock("leaky disk")

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        assert self.lock.acquire(irp) == STATUS_SUCCESS
        irp.mark_pending()
        return STATUS_PENDING


@BACKENDS
def test_a_remove_lock_never_released_names_its_holder(backend: str) -> None:
    seen: dict[str, Any] = {}

    async def main() -> None:
        driver = LeakyDisk()
        io = airp.IoManager()
        device = io.create_device(driver)
        irp = Irp(device.stack_size)
        irp.next_stack_location.major = IrpMajor.READ
        assert await airp.call_driver(device, irp) == STATUS_PENDING
        seen.update(lock=driver.lock, irp=irp)
        await anyio.sleep(2)
        # The REMOVE path: its own acquisition, then release_and_wait, which waits for the READ.
        driver.lock.acquire("remove")
        await driver.lock.release_and_wait("remove")

    with pytest.raises(VirtualTimeDeadlock) as caught:
        run_guarded(backend, main)
    error = caught.value
    lock, irp = seen["lock"], seen["irp"]
    assert error.now == 2.0
    assert error.remove_locks == [(lock, (irp,))]
    assert error.queued == []
    message = str(error)
    assert "1 remove lock(s) waited on by release_and_wait" in message
    assert f"{lock!r}, still held by: {irp!r}" in message
    assert "no request is outstanding" not in message


class LeakyFunction(Function):
    """The PnP function driver of ``_pnp_drivers``, except that READ and WRITE never give back the
    remove lock they acquire for the IRP (the IRP itself completes normally)."""

    @airp.dispatch(IrpMajor.READ, IrpMajor.WRITE)
    async def read_write(self, device: DeviceObject[Any], irp: Irp) -> int:
        assert device.extension.lock.acquire(irp) == STATUS_SUCCESS
        return device.extension.lane.start_packet(irp)  # type: ignore[no-any-return]


@BACKENDS
def test_a_pnp_removal_waiting_on_a_leaked_acquisition(backend: str) -> None:
    """IRP_MN_REMOVE_DEVICE's release_and_wait waits for a READ that finished without releasing:
    the report names the lock with the READ (completed) as its holder."""
    seen: dict[str, Any] = {}

    async def main() -> None:
        log = Log()
        async with airp.IoManager() as io:
            function = LeakyFunction(log)
            node = await io.add_device("test", name="\\Device\\Leaky", function=function, upper_filters=[Filter(log)])
            await io.start_device(node)
            [device] = [d for d in node.devices if d.driver is function]
            seen.update(lock=device.extension.lock, io=io)
            async with io.open("\\Device\\Leaky") as handle:
                read = await handle.read_overlapped(4)
                seen["read"] = read.irp
                assert await read == b"rrrr"  # done at t=1, the lock still held for it
            await io.remove_device(node)

    with pytest.raises(VirtualTimeDeadlock) as caught:
        run_guarded(backend, main)
    error = caught.value
    lock, read_irp = seen["lock"], seen["read"]
    assert error.now == 1.0
    assert read_irp.completed
    assert error.remove_locks == [(lock, (read_irp,))]
    assert lock.removed
    assert lock.holders == (read_irp,)
    # The REMOVE IRP itself has gone down and come back completed (the driver passes it down
    # before release_and_wait): only its dispatch routine waits, so no request is outstanding.
    assert error.outstanding == []
    assert error.queued == []
    message = str(error)
    assert f"{lock!r}, still held by: {read_irp!r}" in message
    assert "completed STATUS_SUCCESS" in message  # the holder's tag is an IRP long finished
    assert "no request is outstanding" not in message


# -- 2. a StartIo lane holding a write while another waits ----------------------------------------


class StuckLanes(OpenClose):
    """WRITE goes to a StartIo lane whose routine waits for an Event nobody sets."""

    def __init__(self) -> None:
        super().__init__("stuck lanes")
        self.in_routine: list[Irp] = []

    @airp.dispatch(IrpMajor.WRITE)
    async def write(self, device: DeviceObject, irp: Irp) -> int:
        return device.extension.start_packet(irp)  # type: ignore[no-any-return]

    async def write_start_io(self, device: DeviceObject, irp: Irp) -> None:
        self.in_routine.append(irp)
        await anyio.Event().wait()  # never set; not wait_or_cancelled: nothing wakes it


#: After the deadlock the run's shutdown closes the handle and removes the device, and the IRPs the
#: stuck driver holds may be disowned after the cancel-wait limit (on trio, where the shutdown runs
#: in the live run; asyncio's shutdown cancels the stuck routine first): not what these tests check.
IGNORE_DISOWNED = pytest.mark.filterwarnings("ignore::airp.DriverCancelTimeoutWarning")


@BACKENDS
@IGNORE_DISOWNED
def test_a_startio_lane_lists_the_irp_in_its_routine_and_the_one_queued(backend: str) -> None:
    seen: dict[str, Any] = {}

    async def main() -> None:
        driver = StuckLanes()
        io = airp.IoManager()
        device = io.create_device(driver, "\\Device\\Stuck")
        lane = device.extension = StartIoQueue(device, "write", driver.write_start_io)
        seen["driver"] = driver
        async with airp.run_device(device), io.open("\\Device\\Stuck") as handle:
            first = await handle.write_overlapped(b"one")
            second = await handle.write_overlapped(b"two")
            seen.update(first=first.irp, second=second.irp)
            await anyio.sleep(5)
            seen.update(first_repr=repr(first.irp), second_repr=repr(second.irp), lane_repr=repr(lane))
            await second  # waits behind the first, which never finishes

    with pytest.raises(VirtualTimeDeadlock) as caught:
        run_guarded(backend, main)
    error = caught.value
    first, second = seen["first"], seen["second"]
    assert seen["driver"].in_routine == [first]
    assert error.now == 5.0
    assert len(error.queued) == 2
    where = {irp: text for irp, text in error.queued}
    assert set(where) == {first, second}
    assert where[second].startswith(seen["lane_repr"])
    assert "StartIo queue 'write'" in where[second]
    assert "waiting" in where[second]
    assert "StartIo queue 'write'" in where[first]
    assert "in its StartIo routine" in where[first]
    # Both writes are outstanding requests of the handle, held by the device.
    assert sorted((id(irp) for irp, _ in error.outstanding)) == sorted((id(first), id(second)))
    assert all(holder is not None and holder.name == "\\Device\\Stuck" for _, holder in error.outstanding)
    message = str(error)
    assert "2 IRP(s) in device queues" in message
    assert f"{seen['first_repr']} in {where[first]}" in message
    assert f"{seen['second_repr']} in {where[second]}" in message
    assert "no request is outstanding" not in message


class HangingFunction(Function):
    """The PnP function driver of ``_pnp_drivers``, except that its StartIo routine holds its remove
    lock for the IRP and then waits for an Event nobody sets."""

    def __init__(self, log: Log) -> None:
        super().__init__(log, "hanging")
        self.in_routine: list[Irp] = []

    async def start_io(self, device: DeviceObject[Any], irp: Irp) -> None:
        assert device.extension.lock.acquire(("start_io", irp)) == STATUS_SUCCESS
        self.in_routine.append(irp)
        await anyio.Event().wait()


@BACKENDS
@IGNORE_DISOWNED
def test_a_lane_holding_a_write_while_remove_waits(backend: str) -> None:
    """A device removal waits for the StartIo routine that holds a WRITE (and the remove lock for
    it): the report names the WRITE in the lane's routine and the removal waiting for it."""
    seen: dict[str, Any] = {}

    async def main() -> None:
        log = Log()
        async with airp.IoManager() as io:
            function = HangingFunction(log)
            node = await io.add_device("test", name="\\Device\\Hanging", function=function)
            await io.start_device(node)
            [device] = [d for d in node.devices if d.driver is function]
            seen.update(lock=device.extension.lock, lane=device.extension.lane, function=function, device=repr(device))
            top = node.top
            for _ in range(2):
                irp = Irp(top.stack_size)
                location = irp.next_stack_location
                location.major = IrpMajor.WRITE
                location.parameters = airp.ReadWriteParameters(4, 0)
                assert await airp.call_driver(top, irp) == STATUS_PENDING
                seen.setdefault("writes", []).append(irp)
            await anyio.sleep(1)
            await io.remove_device(node)

    with pytest.raises(VirtualTimeDeadlock) as caught:
        run_guarded(backend, main)
    error = caught.value
    first, second = seen["writes"]
    lock, lane, device_repr = seen["lock"], seen["lane"], seen["device"]
    assert seen["function"].in_routine == [first]
    assert error.now == 1.0
    # The removal stops the stack's queues before REMOVE goes down: the write still queued was
    # completed, and the removal waits for the routine that holds the other (which completes in the
    # teardown after the error).
    assert second.completed
    assert [(irp, text.split(", ")[-1]) for irp, text in error.queued] == [(first, "in its StartIo routine")]
    assert error.queued[0][1].startswith(repr(lane))
    assert error.waits == [f"the removal of {device_repr} waits for its queues' routines to end: 1 IRP(s) listed above"]
    assert error.remove_locks == []  # REMOVE_DEVICE was not sent yet: its release_and_wait is not waiting
    assert not lock.removed
    message = str(error)
    assert "in its StartIo routine" in message
    assert "waits for its queues' routines to end" in message
    assert "no request is outstanding" not in message


# -- 3. a KMDF queue with a request presented and one waiting ---------------------------------------


class KeepingQueue(OpenClose):
    """READ goes to a sequential IoQueue whose handler keeps the request and never completes it."""

    def __init__(self) -> None:
        super().__init__("keeping queue")
        self.kept: list[Request] = []

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        queue: IoQueue = device.extension
        return queue.insert(irp)

    async def handler(self, queue: IoQueue, request: Request) -> None:
        self.kept.append(request)  # presented, owned by the driver, never completed


@BACKENDS
@IGNORE_DISOWNED
def test_a_kmdf_queue_lists_the_request_presented_and_the_one_waiting(backend: str) -> None:
    seen: dict[str, Any] = {}

    async def main() -> None:
        driver = KeepingQueue()
        io = airp.IoManager()
        device = io.create_device(driver, "\\Device\\Keeping")
        queue = device.extension = IoQueue(device, driver.handler, name="reads")
        seen["driver"] = driver
        async with airp.run_device(device), io.open("\\Device\\Keeping") as handle:
            first = await handle.read_overlapped(4)
            second = await handle.read_overlapped(4)
            seen.update(first=first.irp, second=second.irp)
            await anyio.sleep(7)
            assert [r.irp for r in driver.kept] == [first.irp]
            assert queue.waiting == 1
            seen.update(first_repr=repr(first.irp), second_repr=repr(second.irp), queue_repr=repr(queue))
            await second

    with pytest.raises(VirtualTimeDeadlock) as caught:
        run_guarded(backend, main)
    error = caught.value
    first, second = seen["first"], seen["second"]
    assert error.now == 7.0
    assert len(error.queued) == 2
    where = {irp: text for irp, text in error.queued}
    assert set(where) == {first, second}
    assert where[second].startswith(seen["queue_repr"])
    assert "waiting" in where[second]
    assert where[first].startswith(seen["queue_repr"])
    assert "owned by the driver" in where[first]
    message = str(error)
    assert "2 IRP(s) in device queues" in message
    assert f"{seen['first_repr']} in {where[first]}" in message
    assert f"{seen['second_repr']} in {where[second]}" in message
    assert "no request is outstanding" not in message


# -- 4. a dispatch routine that pends an IRP forever -----------------------------------------------


class Pender(OpenClose):
    """Pends every READ with no cancel routine: nothing will ever complete it."""

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        irp.mark_pending()
        return STATUS_PENDING


class PassThrough(OpenClose):
    """A filter that passes READ down unchanged."""

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        return await airp.pass_down(device, irp)


@BACKENDS
def test_an_irp_pended_forever_is_outstanding_with_the_device_that_holds_it(backend: str) -> None:
    seen: dict[str, Any] = {}

    async def main() -> None:
        io = airp.IoManager(cancel_wait_limit=2)
        lower = io.create_device(Pender("pender"), "\\Device\\Pender")
        upper = io.create_device(PassThrough("pass-through"), "\\Device\\Upper")
        airp.attach_device(upper, lower)
        seen.update(lower=lower, upper=upper)
        async with io.open("\\Device\\Upper") as handle:
            read = await handle.read_overlapped(4)
            seen["read"] = read.irp
            await anyio.sleep(3)
            await read

    # The run's shutdown closes the handle, whose cleanup cancels the read; the driver ignores
    # the cancel for the 2 s limit: the warning comes along with the error.
    with pytest.warns(airp.DriverCancelTimeoutWarning), pytest.raises(VirtualTimeDeadlock) as caught:
        run_guarded(backend, main)
    error = caught.value
    read, lower = seen["read"], seen["lower"]
    assert error.now == 3.0
    assert error.outstanding == [(read, lower)]  # the lower device holds it, not the one it was sent to
    assert error.queued == []
    assert error.remove_locks == []
    message = str(error)
    assert "1 request(s) still outstanding" in message
    assert f"{read!r} held by {lower!r} (driver {lower.driver!r})" in message
    assert "no request is outstanding" not in message


# -- 5. a driver's own IRPs, from a pool and from an allocator ------------------------------------


class Sink(OpenClose):
    """Pends every READ and never completes it."""

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        irp.mark_pending()
        return STATUS_PENDING


class Sender(OpenClose):
    """Sends READs of its own to the device below: one from an IrpPool, one from an IrpAllocator."""

    def __init__(self) -> None:
        super().__init__("sender")
        self.allocator = airp.IrpAllocator(owner=self)

    async def send_own_irps(self, device: DeviceObject) -> list[Irp]:
        lower = device.lower_device
        assert lower is not None
        pool = airp.IrpPool(device)
        pooled = pool.get()
        allocated = self.allocator.allocate_irp(lower.stack_size)
        assert pooled is not None
        assert allocated is not None
        for irp in (pooled, allocated):
            irp.next_stack_location.major = IrpMajor.READ
            irp.next_stack_location.parameters = airp.ReadWriteParameters(4, 0)
            assert await airp.send_irp(lower, irp) == STATUS_PENDING
        return [pooled, allocated]


@BACKENDS
def test_a_drivers_own_irps_are_reported(backend: str) -> None:
    """A driver's own IRPs stuck below: the pooled one is listed with the device holding it, the
    allocated one (an allocator counts its IRPs, it does not keep them) as a count."""
    seen: dict[str, Any] = {}

    async def main() -> None:
        io = airp.IoManager()
        sender = Sender()
        bottom = io.create_device(Sink("sink"), "\\Device\\Sink")
        top = io.create_device(sender, "\\Device\\Sender")
        airp.attach_device(top, bottom)
        async with io.open("\\Device\\Sender"):
            seen["irps"] = await sender.send_own_irps(top)
            seen["bottom"] = bottom
            seen["allocator"] = repr(sender.allocator)
            seen["sender"] = repr(sender)
            await anyio.Event().wait()

    with pytest.raises(VirtualTimeDeadlock) as caught:
        run_guarded(backend, main)
    error = caught.value
    pooled, _allocated = seen["irps"]
    assert error.outstanding == [(pooled, seen["bottom"])]
    assert error.waits == [f"{seen['sender']} has 1 IRP(s) of its own out from {seen['allocator']}"]
    assert "no request is outstanding" not in str(error)
