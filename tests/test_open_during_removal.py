"""An open in progress holds its device node, as a handle does.

After a surprise removal, IRP_MN_REMOVE_DEVICE goes down once no handle is open, and an open used
to count as a handle only once its IRP_MJ_CREATE had completed.  A CREATE still in a dispatch
routine (here: a filter whose CREATE takes a second of device time before it passes it down) did
not count, so REMOVE went down at once: the drivers detached and deleted their devices, and the
CREATE then went on into a detached stack (IrpStateError out of ``io.open``; in the fault harness,
bug check 0xC9/0x04).  In Windows the open in progress holds a reference on the device object
(IopParseDevice), and REMOVE after a surprise removal waits for the references to go.
"""

from __future__ import annotations

import anyio
import pytest

import airp
from airp import (
    STATUS_NO_SUCH_DEVICE,
    STATUS_SUCCESS,
    DeviceFlags,
    DeviceObject,
    Irp,
    IrpMajor,
    NtStatusError,
    PnpMinor,
    PnpState,
    RemovalVetoed,
)

pytestmark = pytest.mark.anyio

NAME = r"\Device\Slow"


class Function(airp.Driver):
    """A function driver; after SURPRISE_REMOVAL it refuses CREATE with STATUS_NO_SUCH_DEVICE if *refuse_when_gone*."""

    def __init__(self, log: list[tuple[str, str]], refuse_when_gone: bool = False) -> None:
        super().__init__("function")
        self.log = log
        self.refuse_when_gone = refuse_when_gone
        self.gone = False

    def add_device(self, pdo: DeviceObject) -> None:
        device = DeviceObject(self)
        self.lower = airp.attach_device(device, pdo)
        device.flags &= ~DeviceFlags.DEVICE_INITIALIZING

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLEANUP, IrpMajor.CLOSE)
    async def open_close(self, device: DeviceObject, irp: Irp) -> int:
        major = IrpMajor(irp.current_stack_location.major)
        self.log.append(("function", major.name))
        if major == IrpMajor.CREATE and self.gone and self.refuse_when_gone:
            airp.complete_request(irp, STATUS_NO_SUCH_DEVICE, 0)
            return STATUS_NO_SUCH_DEVICE
        airp.complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.PNP)
    async def pnp(self, device: DeviceObject, irp: Irp) -> int:
        minor = irp.current_stack_location.minor
        if minor in (PnpMinor.SURPRISE_REMOVAL, PnpMinor.REMOVE_DEVICE):
            self.log.append(("function", PnpMinor(minor).name))
            self.gone = True
            irp.status = airp.NtStatus(STATUS_SUCCESS)
        elif minor in (PnpMinor.QUERY_REMOVE_DEVICE, PnpMinor.CANCEL_REMOVE_DEVICE):
            irp.status = airp.NtStatus(STATUS_SUCCESS)
        status = await airp.pass_down(device, irp)
        if minor == PnpMinor.REMOVE_DEVICE:
            airp.detach_device(self.lower)
            airp.delete_device(device)
        return status


class SlowOpenFilter(airp.Driver):
    """An upper filter whose CREATE takes a second of device time (the device wakes up) before it goes down."""

    pass_through = True

    def __init__(self, log: list[tuple[str, str]]) -> None:
        super().__init__("slow-open")
        self.log = log

    def add_device(self, pdo: DeviceObject) -> None:
        device = DeviceObject(self)
        self.lower = airp.attach_device(device, pdo)
        device.flags &= ~DeviceFlags.DEVICE_INITIALIZING

    @airp.dispatch(IrpMajor.CREATE)
    async def create(self, device: DeviceObject, irp: Irp) -> int:
        self.log.append(("filter", "CREATE"))
        await anyio.sleep(1)
        return await airp.pass_down(device, irp)

    @airp.dispatch(IrpMajor.PNP)
    async def pnp(self, device: DeviceObject, irp: Irp) -> int:
        minor = irp.current_stack_location.minor
        if minor in (PnpMinor.SURPRISE_REMOVAL, PnpMinor.REMOVE_DEVICE):
            self.log.append(("filter", PnpMinor(minor).name))
            irp.status = airp.NtStatus(STATUS_SUCCESS)
        elif minor in (PnpMinor.QUERY_REMOVE_DEVICE, PnpMinor.CANCEL_REMOVE_DEVICE):
            irp.status = airp.NtStatus(STATUS_SUCCESS)
        status = await airp.pass_down(device, irp)
        if minor == PnpMinor.REMOVE_DEVICE:
            airp.detach_device(self.lower)
            airp.delete_device(device)
        return status


async def started(io: airp.IoManager, log: list[tuple[str, str]], *, refuse_when_gone: bool = False) -> airp.DeviceNode:
    node = await io.add_device(
        "slow", name=NAME, function=Function(log, refuse_when_gone), upper_filters=[SlowOpenFilter(log)]
    )
    await io.start_device(node)
    return node


async def test_remove_after_a_surprise_removal_waits_for_an_open_in_progress() -> None:
    log: list[tuple[str, str]] = []
    async with airp.IoManager() as io:
        node = await started(io, log)
        opened: list[airp.FileHandle] = []

        async def opener() -> None:
            opened.append(await io.open(NAME))

        async with anyio.create_task_group() as tg:
            tg.start_soon(opener)
            await anyio.sleep(0.5)  # the CREATE waits in the filter's routine
            assert node.opening == 1
            await io.surprise_remove(node)
            # The open in progress holds the device: SURPRISE_REMOVAL went down, REMOVE did not.
            assert node.state is PnpState.SURPRISE_REMOVED
            assert not node.removed
        # The CREATE went through the stack it was sent to, and the open has its handle, which
        # holds the device in turn: REMOVE goes at its close.
        [handle] = opened
        assert node.opening == 0
        assert node.handles == 1
        assert not node.removed
        await handle.close()
        assert node.removed
        assert log == [
            ("filter", "CREATE"),
            ("filter", "SURPRISE_REMOVAL"),
            ("function", "SURPRISE_REMOVAL"),
            ("function", "CREATE"),
            ("function", "CLEANUP"),
            ("function", "CLOSE"),
            ("filter", "REMOVE_DEVICE"),
            ("function", "REMOVE_DEVICE"),
        ]


async def test_an_open_in_progress_that_fails_lets_remove_go() -> None:
    log: list[tuple[str, str]] = []
    async with airp.IoManager() as io:
        node = await started(io, log, refuse_when_gone=True)

        async def opener() -> None:
            with pytest.raises(NtStatusError) as refused:
                await io.open(NAME)
            assert refused.value.status == STATUS_NO_SUCH_DEVICE
            # The failed open was the last thing holding the surprise-removed device: REMOVE
            # went down before its error came out.
            assert node.removed

        async with anyio.create_task_group() as tg:
            tg.start_soon(opener)
            await anyio.sleep(0.5)
            await io.surprise_remove(node)
            assert not node.removed
        assert node.opening == 0
        assert node.handles == 0
        assert all(device.deleted for device in node.devices[1:])
        assert log[-2:] == [("filter", "REMOVE_DEVICE"), ("function", "REMOVE_DEVICE")]


async def test_an_open_in_progress_given_up_by_its_opener_lets_remove_go() -> None:
    log: list[tuple[str, str]] = []
    async with airp.IoManager() as io:
        node = await started(io, log)

        async def opener() -> None:
            with anyio.move_on_after(0.75) as scope:
                await io.open(NAME)
            assert scope.cancelled_caught
            assert node.removed

        async with anyio.create_task_group() as tg:
            tg.start_soon(opener)
            await anyio.sleep(0.5)
            await io.surprise_remove(node)
            assert not node.removed  # until the opener gives up, at 0.75 s
        assert node.opening == 0
        assert ("function", "CREATE") not in log  # the CREATE was cancelled in the filter


async def test_an_orderly_removal_is_vetoed_while_an_open_is_in_progress() -> None:
    log: list[tuple[str, str]] = []
    async with airp.IoManager() as io:
        node = await started(io, log)

        async def open_and_close() -> None:
            async with io.open(NAME):
                pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(open_and_close)
            await anyio.sleep(0.5)
            with pytest.raises(RemovalVetoed, match=r"1 open\(s\) in progress") as vetoed:
                await io.remove_device(node)
            assert vetoed.value.status is None
            assert node.state is PnpState.STARTED
        # The open went through; with its handle closed the removal goes.
        await io.remove_device(node)
        assert node.removed
