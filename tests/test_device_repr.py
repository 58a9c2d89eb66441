"""An unnamed device's repr says which stack it is in.

``UnloadRefused`` listed ``<DeviceObject trial-widget device>`` twice for a driver with a device in
each of two stacks.  An unnamed device is now named by the bottom of its stack (its PDO) and how far
above it it sits, or, once REMOVE_DEVICE detached it, by the stack it was in.
"""

from __future__ import annotations

import re

import pytest
from _pnp_drivers import Bus, Filter, Function, Log

import airp
from airp import BugCheck

pytestmark = pytest.mark.anyio


async def test_unload_refused_tells_the_devices_of_two_stacks_apart() -> None:
    log = Log()
    widget = Function(log, "trial-widget")
    async with airp.IoManager() as io:
        first = await io.add_device("w", name=r"\Device\Widget0", function=widget, upper_filters=[Filter(log, "audit")])
        second = await io.add_device("w", name=r"\Device\Widget1", function=widget)
        with pytest.raises(airp.UnloadRefused) as info:
            await io.unload_driver(widget)
        listed = [repr(device) for device in info.value.devices]
        assert listed == [
            r"<DeviceObject trial-widget device 1 above \Device\Widget0>",
            r"<DeviceObject trial-widget device 1 above \Device\Widget1>",
        ]
        assert ", ".join(listed) in str(info.value)
        # Where in the stack: the filter above the function device is one further up.
        assert repr(first.top) == r"<DeviceObject audit device 2 above \Device\Widget0>"
        assert repr(second.pdo) == r"<DeviceObject \Device\Widget1>"


async def test_a_device_left_behind_by_remove_names_the_stack_it_was_in() -> None:
    # A driver that detaches but never deletes its device in REMOVE_DEVICE (0x21E): the device
    # outlives its stack, and unloading names where it came from.
    log = Log()
    widget = Function(log, "trial-widget", bugs={"no_delete"})
    async with airp.IoManager() as io:
        nodes = [await io.add_device("w", name=rf"\Device\Widget{n}", function=widget) for n in range(2)]
        for node in nodes:
            await io.start_device(node)
            with pytest.raises(BugCheck):
                await io.remove_device(node)
        with pytest.raises(airp.UnloadRefused) as info:
            await io.unload_driver(widget)
        assert [repr(device) for device in info.value.devices] == [
            r"<DeviceObject trial-widget device detached from \Device\Widget0's stack>",
            r"<DeviceObject trial-widget device detached from \Device\Widget1's stack>",
        ]
        for device in info.value.devices:  # let the block end cleanly
            airp.delete_device(device)


async def test_stacks_on_unnamed_bus_children_are_told_apart_by_their_pdo() -> None:
    log = Log()
    widget = Function(log, "trial-widget")
    async with airp.IoManager() as io:
        bus = Bus(log)
        io.register_stack("w", function=widget)
        bus_node = await io.add_device("bus", name=r"\Device\Bus", function=bus)
        await io.start_device(bus_node)
        pdos = [bus.plug(bus.fdos[0], "w") for _ in range(2)]  # no names
        await io.invalidate_device_relations(bus_node)
        devices = [child.pdo.attached_device for child in bus_node.children]
        texts = [repr(device) for device in devices]
        assert texts[0] != texts[1]
        for text, pdo in zip(texts, pdos, strict=True):
            assert re.fullmatch(rf"<DeviceObject trial-widget device 1 above the bus PDO at {id(pdo):#x}>", text)
            assert repr(pdo) == f"<DeviceObject bus device, a PDO at {id(pdo):#x}>"
        assert repr(bus.fdos[0]) == r"<DeviceObject bus device 1 above \Device\Bus>"


def test_a_named_device_and_a_lone_unnamed_one_read_as_before() -> None:
    driver = airp.Driver("plain")
    io = airp.IoManager()
    assert repr(io.create_device(driver, r"\Device\Plain")) == r"<DeviceObject \Device\Plain>"
    assert repr(airp.DeviceObject(driver)) == "<DeviceObject plain device>"
