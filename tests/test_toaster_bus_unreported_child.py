"""Toaster-bus deletes a child pulled out before any enumeration saw it.

``ToasterBus.unplug`` marked the child not present and left its PDO to the child's
IRP_MN_REMOVE_DEVICE.  A child plugged in and pulled out again before the bus was enumerated was
never reported, so the PnP manager never built a stack on it and never sent it a REMOVE: its PDO
stayed in the bus's children and in ``driver.devices`` until the bus itself was removed, one more
with every such plug and unplug (the fault harness found them alive at rest).  A PDO the bus never
reported is the bus's alone: it deletes it when the device leaves.
"""

from __future__ import annotations

import pytest
from airp_drivers.bus import ToasterBus
from airp_drivers.toaster import Toaster

import airp
from airp import PnpState

pytestmark = pytest.mark.anyio


async def started_bus(io: airp.IoManager) -> tuple[ToasterBus, airp.DeviceNode]:
    bus = io.load_driver(ToasterBus)
    assert isinstance(bus, ToasterBus)
    io.register_stack("toaster", function=io.load_driver(Toaster))
    bus_node = await io.add_device("toaster-bus", name=r"\Device\ToasterBus", function=bus)
    await io.start_device(bus_node)
    return bus, bus_node


async def test_a_child_pulled_out_before_any_enumeration_is_deleted_at_once() -> None:
    async with airp.IoManager() as io:
        bus, bus_node = await started_bus(io)
        [fdo] = bus.devices
        pdo = bus.plug_in("S-1")
        bus.unplug("S-1")  # pulled out again before anyone enumerated the bus
        assert pdo.deleted
        assert bus.devices == [fdo]
        assert bus.children() == []
        await io.invalidate_device_relations(bus_node)
        assert bus_node.children == []
        # The serial is free again: plugged back in, it is a new device, reported and started.
        again = bus.plug_in("S-1")
        await io.invalidate_device_relations(bus_node)
        [child] = bus_node.children
        assert child.pdo is again
        assert child.state is PnpState.STARTED


async def test_plugging_in_and_out_without_enumerating_keeps_nothing() -> None:
    async with airp.IoManager() as io:
        bus, bus_node = await started_bus(io)
        for n in range(50):
            bus.plug_in(f"S-{n}")
            bus.unplug(f"S-{n}")
        await io.invalidate_device_relations(bus_node)
        assert len(bus.devices) == 1  # the bus's FDO alone
        assert bus_node.children == []


async def test_a_reported_child_pulled_out_stays_until_its_remove() -> None:
    async with airp.IoManager() as io:
        bus, bus_node = await started_bus(io)
        pdo = bus.plug_in("S-1")
        await io.invalidate_device_relations(bus_node)
        [child] = bus_node.children
        async with io.open(pdo.name or "") as handle:
            bus.unplug("S-1")
            # Reported: its stack is the PnP manager's now, and the PDO goes at its REMOVE_DEVICE,
            # which waits for the handle.
            assert not pdo.deleted
            await io.invalidate_device_relations(bus_node)
            assert child.state is PnpState.SURPRISE_REMOVED
            assert not pdo.deleted
            assert handle.device is pdo
        assert child.removed
        assert pdo.deleted
        assert pdo not in bus.devices
