"""One enumeration of a bus at a time.

Two tasks calling ``io.invalidate_device_relations(bus_node)`` at once (two
``IoInvalidateDeviceRelations``) used to run two enumerations side by side.  The first surprise-
removed a child that had been pulled out (it awaits there), the second reported a new child and
built its stack, and then the first built that child's stack again: two device nodes, both
STARTED, on one PDO, two function devices attached to it, and the end of the ``async with io``
block deadlocked removing them.  Windows' PnP manager enumerates a device node once at a time: an
enumeration asked for meanwhile waits for the one in progress, then asks the bus again.
"""

from __future__ import annotations

import anyio
import pytest
from _pnp_drivers import Bus, Function, Log
from airp_drivers.bus import ToasterBus
from airp_drivers.toaster import Toaster

import airp
from airp import DeviceObject, Irp, IrpMajor, PnpMinor, PnpState

pytestmark = pytest.mark.anyio


async def test_two_enumerations_at_once_build_one_stack_per_child() -> None:
    async with airp.IoManager() as io:
        bus = io.load_driver(ToasterBus)
        assert isinstance(bus, ToasterBus)
        toaster = io.load_driver(Toaster)
        io.register_stack("toaster", function=toaster)
        bus_node = await io.add_device("toaster-bus", name=r"\Device\ToasterBus", function=bus)
        await io.start_device(bus_node)
        bus.plug_in("S-1")
        await io.invalidate_device_relations(bus_node)
        # S-1 is pulled out and S-2 plugged in; two enumerations are asked for at once: the first
        # surprise-removes S-1 (which awaits) before it gets to S-2.
        bus.unplug("S-1")
        s2 = bus.plug_in("S-2")
        async with anyio.create_task_group() as tg:
            tg.start_soon(io.invalidate_device_relations, bus_node)
            tg.start_soon(io.invalidate_device_relations, bus_node)
        # One toaster plugged in: one device node on its PDO, one toaster device above it.
        [child] = bus_node.children
        assert child.pdo is s2
        assert child.state is PnpState.STARTED
        assert [node.pdo for node in io.device_nodes].count(s2) == 1
        assert [device.driver for device in child.devices] == [bus, toaster]
        assert len([device for device in toaster.devices if not device.deleted]) == 1
        # The S-1 stack is gone (no handle was open on it).
        assert [node.pdo.extension.serial for node in io.device_nodes if node.parent is bus_node] == ["S-2"]
    # Leaving the block removed everything (it used to deadlock on the second stack).
    assert child.removed
    assert s2.deleted


class SlowStart(Function):
    """A function driver whose START_DEVICE takes one second of device time."""

    @airp.dispatch(IrpMajor.PNP)
    async def slow_pnp(self, device: DeviceObject, irp: Irp) -> int:
        if irp.current_stack_location.minor == PnpMinor.START_DEVICE:
            await anyio.sleep(1.0)
        return await self.pnp(device, irp)


async def test_an_enumeration_asked_for_during_another_waits_for_its_children_to_start() -> None:
    log = Log()
    async with airp.IoManager() as io:
        bus = Bus(log)
        io.register_stack("child", function=SlowStart(log))
        bus_node = await io.add_device("bus", function=bus)
        await io.start_device(bus_node)
        [fdo] = bus.fdos
        pdo = bus.plug(fdo, "child", r"\Device\Child")
        finished: list[float] = []

        async def enumerate_bus() -> None:
            await io.invalidate_device_relations(bus_node)
            finished.append(anyio.current_time())

        async with anyio.create_task_group() as tg:
            tg.start_soon(enumerate_bus)
            await anyio.sleep(0.5)  # the first enumeration is in the child's START_DEVICE now
            [child] = bus_node.children
            assert child.state is PnpState.NOT_STARTED
            tg.start_soon(enumerate_bus)
        # The second waited for the first, child's start included, then asked the bus again and
        # found the child already built: one node, started once.
        assert [node.pdo for node in bus_node.children] == [pdo]
        assert child.state is PnpState.STARTED
        assert log.minors("function").count(PnpMinor.START_DEVICE) == 1
        queries = [a for a in log.arrivals if a.device is fdo and a.minor == PnpMinor.QUERY_DEVICE_RELATIONS]
        assert len(queries) == 3  # after the bus's start, then one per enumeration
        assert finished == [1.0, 1.0]
        assert log.transition_errors() == []
