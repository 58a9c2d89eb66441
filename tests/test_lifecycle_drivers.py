"""The lifecycle-aware driver plugins (issue 12): toaster-bus, toaster, audit-filter, pass-through-filter.

Every test runs on both backends, on the virtual clock.  The plugins are loaded by their entry-point
names, so a typo in pyproject.toml fails here too.
"""

from __future__ import annotations

import runpy
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from airp_drivers.bus import ChildPdo, ToasterBus
from airp_drivers.filters import AuditFilter, FilterDevice, PassThroughFilter
from airp_drivers.toaster import Toaster, ToasterDevice
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import airp
from airp import (
    STATUS_DELETE_PENDING,
    STATUS_NO_SUCH_DEVICE,
    STATUS_SUCCESS,
    IrpMajor,
    NtStatusError,
    PnpState,
)
from airp.testing import virtual_anyio_backend

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "surprise_removal.py"
LATENCY = 0.001


@dataclass
class Rig:
    io: airp.IoManager
    bus: ToasterBus
    toaster: Toaster
    audit: AuditFilter
    bus_node: airp.DeviceNode

    async def plug(self, serial: str) -> airp.DeviceNode:
        pdo = self.bus.plug_in(serial)
        await self.io.invalidate_device_relations(self.bus_node)
        [node] = [child for child in self.bus_node.children if child.pdo is pdo]
        return node


@asynccontextmanager
async def rig(*, lower_filter: bool = False) -> AsyncIterator[Rig]:
    async with airp.IoManager() as io:
        bus = io.load_driver("toaster-bus")
        toaster = io.load_driver("toaster", size=256, latency=LATENCY)
        audit = io.load_driver("audit-filter")
        assert isinstance(bus, ToasterBus)
        assert isinstance(toaster, Toaster)
        assert isinstance(audit, AuditFilter)
        io.register_stack(
            "toaster", function=toaster, lower_filters=["pass-through-filter"] if lower_filter else [], upper_filters=[audit]
        )
        bus_node = await io.add_device("toaster-bus", name=r"\Device\ToasterBus", function=bus)
        await io.start_device(bus_node)
        yield Rig(io, bus, toaster, audit, bus_node)


def toaster_device(node: airp.DeviceNode) -> airp.DeviceObject[ToasterDevice]:
    [device] = [d for d in node.devices if isinstance(d.extension, ToasterDevice)]
    return device


async def outcome(request: airp.Overlapped[Any]) -> str:
    try:
        await request
    except NtStatusError as error:
        return error.status.name
    return "STATUS_SUCCESS"


# -- the bus -----------------------------------------------------------------------------------------


async def test_bus_enumerates_children_on_demand() -> None:
    async with rig() as r:
        assert r.bus_node.children == []  # nothing plugged in: the first enumeration found no child
        first = await r.plug("S-1")
        assert first.state is PnpState.STARTED
        assert first.hardware_id == "toaster"
        assert first.name == r"\Device\Toaster0"
        assert first.parent is r.bus_node
        assert isinstance(first.pdo.extension, ChildPdo)
        assert first.pdo.driver is r.bus
        assert [d.driver.name for d in first.devices] == ["toaster-bus", "toaster", "audit-filter"]
        second = await r.plug("S-2")
        assert second.name == r"\Device\Toaster1"
        assert second.state is PnpState.STARTED
        assert r.bus_node.children == [first, second]
        # Enumerating again with nothing changed builds nothing new.
        await r.io.invalidate_device_relations(r.bus_node)
        assert r.bus_node.children == [first, second]
        assert [pdo.extension.serial for pdo in r.bus.children()] == ["S-1", "S-2"]
        async with r.io.open(r"\Device\Toaster1") as handle:
            assert await handle.device_control(ToasterBus.IOCTL_GET_SERIAL, output_length=16) == b"S-2"


async def test_unplug_surprise_removes_then_removes_after_the_last_close() -> None:
    async with rig() as r:
        node = await r.plug("S-1")
        devices = node.devices
        handle = await r.io.open(node.name or "")
        r.bus.unplug("S-1")
        assert node.state is PnpState.STARTED  # nothing happens until the bus is enumerated again
        await r.io.invalidate_device_relations(r.bus_node)
        assert node.state is PnpState.SURPRISE_REMOVED
        assert all(d.pnp_state is PnpState.SURPRISE_REMOVED and not d.deleted for d in devices)
        assert r.bus.children() == []
        with pytest.raises(NtStatusError) as refused:
            await handle.read(4)
        assert refused.value.status == STATUS_NO_SUCH_DEVICE
        with pytest.raises(NtStatusError) as no_open:
            await r.io.open(node.name or "")
        assert no_open.value.status == STATUS_NO_SUCH_DEVICE
        await handle.close()
        await node.wait_removed()
        assert node.removed
        assert node.state is PnpState.REMOVED
        assert all(d.deleted for d in devices)  # the PDO too: its device has left the bus
        assert node not in r.io.device_nodes
        assert node not in r.bus_node.children
        assert r.io.device_nodes == [r.bus_node]
        # The serial is free again: the same toaster can come back, with a new stack.
        again = await r.plug("S-1")
        assert again is not node
        assert again.state is PnpState.STARTED


async def test_plug_in_and_unplug_refuse_what_does_not_fit() -> None:
    async with rig() as r:
        await r.plug("S-1")
        with pytest.raises(ValueError, match="'S-1' is already on"):
            r.bus.plug_in("S-1")
        with pytest.raises(LookupError, match=r"no device with serial 'S-9' .*present: S-1"):
            r.bus.unplug("S-9")
        r.bus.unplug("S-1")
        with pytest.raises(LookupError, match="present: none"):
            r.bus.unplug("S-1")


async def test_removing_the_bus_removes_its_children_and_deletes_their_pdos() -> None:
    async with rig() as r:
        child = await r.plug("S-1")
        pdo = child.pdo
        bus_devices = r.bus_node.devices
        await r.io.remove_device(r.bus_node)
        assert child.removed
        assert r.bus_node.removed
        # The child was still plugged in: its PDO outlived its own REMOVE and went with the bus.
        assert pdo.deleted
        assert all(d.deleted for d in bus_devices)
        assert r.bus.devices == []


# -- the function driver ------------------------------------------------------------------------------


async def test_reads_return_what_writes_wrote_and_the_lock_goes_back_to_its_bias() -> None:
    async with rig(lower_filter=True) as r:
        node = await r.plug("S-1")
        lock = toaster_device(node).extension.lock
        assert lock.statistics().count == 1  # the bias only
        async with r.io.open(node.name or "") as handle:
            writes = [await handle.write_overlapped(bytes([65 + n]) * 8, offset=8 * n) for n in range(8)]
            assert [await w for w in writes] == [8] * 8
            assert await handle.read(64) == b"".join(bytes([65 + n]) * 8 for n in range(8))
            with pytest.raises(NtStatusError) as eof:
                await handle.read(4, offset=10_000)
            assert eof.value.status == airp.STATUS_END_OF_FILE
            size = await handle.device_control(Toaster.IOCTL_GET_SIZE, output_length=8)
            assert int.from_bytes(size, "little") == 256
        stats = lock.statistics()
        assert stats.count == 1
        assert not stats.removed
        assert dict(stats.holders) == {}
        assert stats.acquired > 0
        assert stats.refused == 0


async def test_surprise_removal_under_load_loses_nothing() -> None:
    async with rig() as r:
        node = await r.plug("S-1")
        device = toaster_device(node)
        handle = await r.io.open(node.name or "")
        requests = [await handle.write_overlapped(b"x" * 4, offset=4 * n) for n in range(10)]
        requests += [await handle.read_overlapped(4, offset=4 * n) for n in range(10)]
        await anyio.sleep(LATENCY * 3.5)  # three transfers done, the fourth in progress
        r.bus.unplug("S-1")
        await r.io.invalidate_device_relations(r.bus_node)
        outcomes = [await outcome(request) for request in requests]
        assert len(outcomes) == 20  # every request came back
        assert outcomes[:3] == ["STATUS_SUCCESS"] * 3
        # The one in the StartIo routine was cancelled and failed as gone; those in the lane were
        # completed by airp when it stopped the lane.
        assert outcomes[3:] == ["STATUS_NO_SUCH_DEVICE"] * 17
        assert r.io.outstanding_requests() == []
        assert r.audit.results == {("WRITE", "STATUS_SUCCESS"): 3, ("WRITE", "STATUS_NO_SUCH_DEVICE"): 7, ("READ", "STATUS_NO_SUCH_DEVICE"): 10}
        assert device.extension.lock.statistics().count == 1  # surprise removal does not touch the lock
        await handle.close()
        await node.wait_removed()
        stats = device.extension.lock.statistics()
        assert stats.count == 0
        assert stats.removed
        assert dict(stats.holders) == {}


async def test_requests_during_removal_are_refused_with_delete_pending() -> None:
    async with rig() as r:
        node = await r.plug("S-1")
        device = toaster_device(node)
        lock = device.extension.lock
        # Something the driver left behind (a timer, say) still holds the lock: REMOVE must wait.
        assert lock.acquire("timer") == STATUS_SUCCESS
        removed = anyio.Event()

        async def remove() -> None:
            await r.io.remove_device(node)
            removed.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(remove)
            await airp.testing.wait_until_quiet()
            assert node.state is PnpState.REMOVED
            assert not removed.is_set()
            assert lock.statistics().removed
            assert not device.deleted
            request = airp.build_synchronous_fsd_request(IrpMajor.READ, device, length=4)
            assert request is not None
            await airp.send_irp(device, request.irp)
            assert await outcome(request) == "STATUS_DELETE_PENDING"
            assert lock.statistics().refused == 1
            lock.release("timer")
        assert removed.is_set()
        assert device.deleted
        assert device.lower_device is None
        assert lock.statistics().count == 0


async def test_a_handle_left_open_at_the_end_of_the_run_gets_delete_pending() -> None:
    async with rig() as r:
        node = await r.plug("S-1")
        handle = await r.io.open(node.name or "")
        assert await handle.write(b"toast") == 5
    # Leaving `async with io` removed the stack with the handle still open.
    assert node.removed
    assert all(d.deleted for d in node.devices)
    with pytest.raises(NtStatusError) as refused:
        await handle.read(5)
    assert refused.value.status == STATUS_DELETE_PENDING


# -- the filters ------------------------------------------------------------------------------------


async def test_filters_detach_and_delete_at_remove_and_count_on_the_way_up() -> None:
    seen: list[tuple[str, str, int]] = []
    async with rig(lower_filter=True) as r:
        r.audit.on_result = lambda major, status, information: seen.append((major, status.name, information))
        node = await r.plug("S-1")
        filters = [d for d in node.devices if isinstance(d.extension, FilterDevice)]
        assert [type(d.driver) for d in filters] == [PassThroughFilter, AuditFilter]
        assert all(d.flags & airp.DeviceFlags.BUFFERED_IO for d in filters)  # copied from below
        async with r.io.open(node.name or "") as handle:
            await handle.write(b"ab")
            with pytest.raises(NtStatusError):
                await handle.device_control(0x1234_5678)
        assert seen == [("WRITE", "STATUS_SUCCESS", 2), ("DEVICE_CONTROL", "STATUS_INVALID_DEVICE_REQUEST", 0)]
        assert all(d.extension.lock.statistics().count == 1 for d in filters)
        await r.io.remove_device(node)
        assert all(d.deleted and d.lower_device is None and d.attached_device is None for d in filters)
        assert all(d.extension.lock.statistics().count == 0 for d in filters)
        assert r.audit.devices == []


async def test_audit_filter_still_works_in_a_stack_built_by_hand() -> None:
    io = airp.IoManager()
    bottom = io.create_device(airp.load_driver("demo-bus")(), r"\Device\Demo", flags=airp.DeviceFlags.BUFFERED_IO)
    ramdisk = airp.load_driver("ramdisk")()  # answers the create; GET_SERIAL goes on down
    airp.attach_device(io.create_device(ramdisk), bottom)
    audit = AuditFilter()
    airp.attach_device(io.create_device(audit), bottom)
    async with anyio.create_task_group() as tg:
        tg.start_soon(ramdisk.run_flusher)
        async with io.open(r"\Device\Demo") as handle:
            assert await handle.device_control(ToasterBus.IOCTL_GET_SERIAL, output_length=16) == b"AIRP-0001"
        ramdisk.stop_flusher()
    assert audit.results == {("DEVICE_CONTROL", "STATUS_SUCCESS"): 1}


# -- unload -----------------------------------------------------------------------------------------


async def test_unload_is_refused_while_devices_remain_then_works() -> None:
    async with rig(lower_filter=True) as r:
        node = await r.plug("S-1")
        for name in ("toaster", "audit-filter", "pass-through-filter", "toaster-bus"):
            with pytest.raises(airp.UnloadRefused, match="its devices still exist"):
                await r.io.unload_driver(name)
        await r.io.remove_device(node)
        await r.io.unload_driver("toaster")
        await r.io.unload_driver("audit-filter")
        await r.io.unload_driver("pass-through-filter")
        assert r.toaster.unloaded
        assert r.audit.unloaded
        assert r.audit.on_result is None
        with pytest.raises(airp.UnloadRefused):
            await r.io.unload_driver("toaster-bus")  # the bus itself is still there
        await r.io.remove_device(r.bus_node)
        await r.io.unload_driver("toaster-bus")
        assert r.bus.unloaded
        assert r.io.drivers == {}


# -- the example ------------------------------------------------------------------------------------


async def test_surprise_removal_example_accounts_for_every_request() -> None:
    namespace = runpy.run_path(str(EXAMPLE), run_name="airp_example_surprise_removal")
    account = await namespace["run"](200, 20)
    assert account.sent == 200
    assert account.completed == 200
    assert account.lost == 0
    assert set(account.by_status) == {"STATUS_SUCCESS", "STATUS_NO_SUCH_DEVICE"}
    assert account.by_status["STATUS_SUCCESS"] >= 200 // 3
    assert account.bad_reads == 0
    text = "\n".join(account.lines)
    assert "is surprise removed; 20 handles still open" in text
    assert "toaster's remove lock: count 0, removed True" in text
    assert r"\Device\Toaster0 removed; present: 1" in text


def test_surprise_removal_example_runs_as_a_script() -> None:
    doc = runpy.run_path(str(EXAMPLE), run_name="airp_example_surprise_removal")["__doc__"]
    assert "Reference: irp-semantics.md" in doc
    assert "python examples/surprise_removal.py [--backend trio]" in doc
    done = subprocess.run([sys.executable, str(EXAMPLE), "--backend", "trio"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "  lost                          0" in done.stdout
    assert "  requests sent               200" in done.stdout


# -- a generated life: plugging, pulling, opening, closing and I/O in any order ---------------------

Op = tuple[str, int]
OPS = st.lists(
    st.tuples(st.sampled_from(["plug", "unplug", "open", "close", "io"]), st.integers(0, 2))
    | st.tuples(st.just("wait"), st.integers(1, 4)),
    max_size=30,
)


async def _live(program: list[Op]) -> None:
    plugged = [False, False, False]
    nodes: list[airp.DeviceNode | None] = [None, None, None]
    handles: list[list[tuple[airp.DeviceNode, airp.FileHandle]]] = [[], [], []]
    sent: list[tuple[airp.Overlapped[Any], PnpState]] = []
    every_node: list[tuple[airp.DeviceNode, tuple[airp.DeviceObject, ...]]] = []
    async with rig() as r:
        for op, k in program:
            serial = f"S-{k}"
            if op == "plug":
                if plugged[k]:
                    with pytest.raises(ValueError, match="already on"):
                        r.bus.plug_in(serial)
                    continue
                node = await r.plug(serial)
                assert node.state is PnpState.STARTED
                plugged[k], nodes[k] = True, node
                every_node.append((node, node.devices))
            elif op == "unplug":
                if not plugged[k]:
                    with pytest.raises(LookupError):
                        r.bus.unplug(serial)
                    continue
                r.bus.unplug(serial)
                await r.io.invalidate_device_relations(r.bus_node)
                node = nodes[k]
                assert node is not None
                open_here = sum(1 for n, _ in handles[k] if n is node)
                assert node.handles == open_here
                assert node.state is (PnpState.SURPRISE_REMOVED if open_here else PnpState.REMOVED)
                plugged[k] = False
            elif op == "open":
                node = nodes[k]
                if node is None:
                    continue
                if node.state is not PnpState.STARTED:
                    with pytest.raises(NtStatusError) as refused:
                        await r.io.open(node.name or "")
                    # Surprise-removed: refused; removed: the PDO was deleted and its name freed.
                    assert refused.value.status in (STATUS_NO_SUCH_DEVICE, airp.STATUS_OBJECT_NAME_NOT_FOUND)
                    continue
                handles[k].append((node, await r.io.open(node.name or "")))
            elif op == "close":
                if handles[k]:
                    node, handle = handles[k].pop(0)
                    await handle.close()
                    if node.state is PnpState.SURPRISE_REMOVED or node.removed:
                        assert node.removed == (node.handles == 0)
            elif op == "io":
                for node, handle in handles[k][-1:]:
                    state = node.state
                    sent.append((await handle.write_overlapped(b"ab", offset=2 * k), state))
                    sent.append((await handle.read_overlapped(2, offset=2 * k), state))
            else:
                await anyio.sleep(LATENCY * k)
    # Leaving the block removed everything, open handles or not.
    for request, state in sent:
        assert request.irp.completed
        result = await outcome(request)
        if state is PnpState.STARTED:
            assert result in ("STATUS_SUCCESS", "STATUS_NO_SUCH_DEVICE")
        else:
            assert result == "STATUS_NO_SUCH_DEVICE"
    assert r.io.outstanding_requests() == []
    for node, devices in every_node:
        assert node.removed
        assert all(device.deleted for device in devices)
        [toaster] = [d for d in devices if isinstance(d.extension, ToasterDevice)]
        stats = toaster.extension.lock.statistics()
        assert stats.count == 0
        assert stats.removed
    assert r.bus.devices == []
    assert r.toaster.devices == []
    assert r.audit.devices == []


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=OPS)
def test_any_order_of_plugging_pulling_and_io_loses_nothing(backend: str, program: list[Op]) -> None:
    name, options = virtual_anyio_backend(backend)
    anyio.run(_live, program, backend=name, backend_options=options)
