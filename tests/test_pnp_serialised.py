"""The PnP requests of one device node go down its stack one at a time.

Closing the last handle of a surprise-removed device lets IRP_MN_REMOVE_DEVICE go; if
IRP_MN_SURPRISE_REMOVAL is still on its way down (a driver takes device time to fail what it
holds), REMOVE_DEVICE waits for it, as the PnP manager's serialised requests do, instead of
overtaking it: the drivers would detach and delete, and SURPRISE_REMOVAL would reach deleted
devices.
"""

from __future__ import annotations

import anyio
import pytest
from _pnp_drivers import Bus, Filter, Function, Log

import airp
from airp import STATUS_NO_SUCH_DEVICE, DeviceObject, Irp, IrpMajor, NtStatusError, PnpMinor, PnpState

pytestmark = pytest.mark.anyio

NAME = r"\Device\Slow"


class SlowSurprise(Function):
    """A function driver whose SURPRISE_REMOVAL takes *surprise_time* of device time before it goes on."""

    def __init__(self, log: Log, surprise_time: float = 1.0) -> None:
        super().__init__(log)
        self.surprise_time = surprise_time

    @airp.dispatch(IrpMajor.PNP)
    async def slow_pnp(self, device: DeviceObject, irp: Irp) -> int:
        if irp.current_stack_location.minor == PnpMinor.SURPRISE_REMOVAL:
            await anyio.sleep(self.surprise_time)  # failing what it holds takes time
        return await self.pnp(device, irp)


def minors_in_order(log: Log) -> list[tuple[str, PnpMinor]]:
    return [(a.driver, a.minor) for a in log.arrivals if a.minor in (PnpMinor.SURPRISE_REMOVAL, PnpMinor.REMOVE_DEVICE)]


async def test_closing_the_last_handle_during_a_surprise_removal_waits_for_it() -> None:
    log = Log()
    async with airp.IoManager() as io:
        function = SlowSurprise(log)
        node = await io.add_device("t", name=NAME, function=function, upper_filters=[Filter(log, "upper")])
        await io.start_device(node)
        handle = await io.open(NAME)
        closed_at: list[float] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(io.surprise_remove, node)
            await anyio.sleep(0.5)  # SURPRISE_REMOVAL is in the function driver's routine now
            assert node.state is PnpState.SURPRISE_REMOVED
            assert await read_status(handle) == STATUS_NO_SUCH_DEVICE
            await handle.close()  # the last handle: REMOVE_DEVICE may go, once SURPRISE_REMOVAL is back
            closed_at.append(anyio.current_time())
        assert node.removed
        assert all(device.deleted for device in node.devices[1:])
        # Each driver saw SURPRISE_REMOVAL, then REMOVE_DEVICE, and nothing reached a deleted device.
        assert minors_in_order(log) == [
            ("upper", PnpMinor.SURPRISE_REMOVAL),
            ("function", PnpMinor.SURPRISE_REMOVAL),
            ("upper", PnpMinor.REMOVE_DEVICE),
            ("function", PnpMinor.REMOVE_DEVICE),
        ]
        assert log.transition_errors() == []
        # The close returned once REMOVE_DEVICE had gone down, after the surprise removal's second.
        assert closed_at[0] >= 1.0


async def test_a_removal_asked_for_during_a_surprise_removal_comes_after_it() -> None:
    # The same race from the other side: the block's end (or io.remove_device) while
    # SURPRISE_REMOVAL is still going down, with no handle open.
    log = Log()
    async with airp.IoManager() as io:
        node = await io.add_device("t", name=NAME, function=SlowSurprise(log), upper_filters=[Filter(log, "upper")])
        await io.start_device(node)
        async with anyio.create_task_group() as tg:
            tg.start_soon(io.surprise_remove, node)
            await anyio.sleep(0.5)
            await io.remove_device(node)  # surprise-removed: waits for REMOVE, which follows the surprise
        assert node.removed
        assert minors_in_order(log) == [
            ("upper", PnpMinor.SURPRISE_REMOVAL),
            ("function", PnpMinor.SURPRISE_REMOVAL),
            ("upper", PnpMinor.REMOVE_DEVICE),
            ("function", PnpMinor.REMOVE_DEVICE),
        ]
        assert log.transition_errors() == []


async def test_closing_a_bus_child_s_last_handle_during_its_surprise_removal_waits_for_it() -> None:
    log = Log()
    async with airp.IoManager() as io:
        bus = Bus(log)
        io.register_stack("child", function=SlowSurprise(log))
        bus_node = await io.add_device("bus", function=bus)
        await io.start_device(bus_node)
        pdo = bus.plug(bus.fdos[0], "child", NAME)
        await io.invalidate_device_relations(bus_node)
        [child] = bus_node.children
        handle = await io.open(NAME)
        bus.unplug(pdo)
        async with anyio.create_task_group() as tg:
            tg.start_soon(io.invalidate_device_relations, bus_node)  # the child is surprise-removed
            await anyio.sleep(0.5)
            await handle.close()
        assert child.removed
        assert pdo.deleted
        assert [m for d, m in minors_in_order(log) if d == "function"] == [PnpMinor.SURPRISE_REMOVAL, PnpMinor.REMOVE_DEVICE]
        assert log.transition_errors() == []


async def read_status(handle: airp.FileHandle) -> object:
    try:
        return await handle.read(4)
    except NtStatusError as error:
        return error.status
