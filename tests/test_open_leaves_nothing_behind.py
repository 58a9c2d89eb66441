"""An open that fails or is cancelled leaves nothing behind.

The CREATE of an open is a request like any other, and the I/O manager kept the file object of
every request it sent until a handle's close forgot it.  An open whose CREATE failed (the driver
refused it, or the opener's timeout cancelled it in the dispatch routine) returns no handle, so
nothing ever closed that file object: it stayed in the I/O manager for good, and with it its
device and the whole stack, even after the device was removed (the fault harness saw memory grow
about 50 KiB per 1,000 operations).  And a CREATE the driver completed successfully while its
opener was being cancelled opened a file that no handle would ever close: the driver never saw
its IRP_MJ_CLEANUP and IRP_MJ_CLOSE.
"""

from __future__ import annotations

import gc
import weakref

import anyio
import anyio.abc
import pytest

import airp
from airp import (
    STATUS_PENDING,
    STATUS_SUCCESS,
    STATUS_UNSUCCESSFUL,
    DeviceObject,
    FileObject,
    Irp,
    IrpMajor,
    NtStatusError,
)

pytestmark = pytest.mark.anyio

REFUSES = r"\Device\Refuses"
SLOW = r"\Device\Slow"
LATE = r"\Device\Late"


class Opens(airp.Driver):
    """Records every file object it sees, with the requests it saw for it.

    ``\\Device\\Refuses`` fails every CREATE; ``\\Device\\Slow`` takes a second of device time in
    its CREATE routine (a requester that gives up meanwhile cancels the routine); ``\\Device\\Late``
    pends its CREATE, with no cancel routine, and completes it successfully a second later.
    """

    def __init__(self) -> None:
        super().__init__("opens")
        self.seen: list[weakref.ref[FileObject]] = []
        self.majors: dict[int, list[IrpMajor]] = {}
        #: Where ``\\Device\\Late`` completes its CREATEs (set by the test).
        self.task_group: anyio.abc.TaskGroup | None = None

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLEANUP, IrpMajor.CLOSE)
    async def open_close(self, device: DeviceObject, irp: Irp) -> int:
        location = irp.current_stack_location
        file_object = location.file_object
        assert file_object is not None
        if location.major == IrpMajor.CREATE:
            self.seen.append(weakref.ref(file_object))
        self.majors.setdefault(file_object.number, []).append(IrpMajor(location.major))
        if location.major == IrpMajor.CREATE:
            if device.name == REFUSES:
                airp.complete_request(irp, STATUS_UNSUCCESSFUL, 0)
                return STATUS_UNSUCCESSFUL
            if device.name == SLOW:
                await anyio.sleep(1)  # the device wakes up
            if device.name == LATE:
                irp.mark_pending()

                async def later() -> None:
                    await anyio.sleep(1)
                    airp.complete_request(irp, STATUS_SUCCESS, 0)

                assert self.task_group is not None
                self.task_group.start_soon(later)
                return STATUS_PENDING
        airp.complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    def alive(self) -> list[FileObject]:
        gc.collect()
        return [fo for ref in self.seen if (fo := ref()) is not None]


async def open_refused(io: airp.IoManager) -> None:
    with pytest.raises(NtStatusError) as refused:
        await io.open(REFUSES)
    assert refused.value.status == STATUS_UNSUCCESSFUL


async def open_given_up(io: airp.IoManager, name: str) -> None:
    """Open *name* and give up after half a second, in a task of its own.

    (The event loop keeps a task's last cancellation, and with it the frames it went through:
    the task ends here, so that what is checked afterwards is what airp keeps.)
    """

    async def opener() -> None:
        with anyio.move_on_after(0.5) as scope:
            await io.open(name)
        assert scope.cancelled_caught

    async with anyio.create_task_group() as tg:
        tg.start_soon(opener)


async def test_a_refused_open_leaves_no_file_object_behind() -> None:
    io = airp.IoManager()
    driver = Opens()
    io.create_device(driver, REFUSES)
    for _ in range(10):
        await open_refused(io)
    assert len(driver.seen) == 10
    assert driver.alive() == []
    assert io.outstanding_requests() == []


async def test_an_open_cancelled_in_its_create_routine_leaves_no_file_object_behind() -> None:
    io = airp.IoManager()
    driver = Opens()
    io.create_device(driver, SLOW)
    for _ in range(10):
        await open_given_up(io, SLOW)
    assert len(driver.seen) == 10
    assert driver.alive() == []
    # Only the CREATE went down: nothing was opened, so there is nothing to close.
    assert set(map(tuple, driver.majors.values())) == {(IrpMajor.CREATE,)}


async def test_a_create_that_succeeds_after_its_opener_gave_up_is_closed() -> None:
    io = airp.IoManager()
    driver = Opens()
    io.create_device(driver, LATE)
    async with anyio.create_task_group() as driver.task_group:
        for _ in range(3):
            # The opener gives up at 0.5 s; the driver ignores the cancel and opens the file at 1 s.
            await open_given_up(io, LATE)
    # No handle came back, so the I/O manager closed what the driver opened: each file saw
    # IRP_MJ_CLEANUP and IRP_MJ_CLOSE after its CREATE, and none is left.
    assert list(driver.majors.values()) == [[IrpMajor.CREATE, IrpMajor.CLEANUP, IrpMajor.CLOSE]] * 3
    assert driver.alive() == []
    assert io.outstanding_requests() == []
