"""The Plug and Play manager (issue 12, reference 8): building, starting and removing stacks.

Every test runs on both backends, on the virtual clock, with the small drivers of
``tests/_pnp_drivers.py``: a :class:`Function` driver with a remove lock, a StartIo lane and a KMDF
queue; filters; a bus.  Each lifecycle check of reference 10.3 has a driver that breaks it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from _pnp_drivers import AsyncUnloadFunction, Bus, Filter, Function, Log, Plain

import airp
from airp import (
    STATUS_CANCELLED,
    STATUS_DELETE_PENDING,
    STATUS_DEVICE_NOT_READY,
    STATUS_MORE_PROCESSING_REQUIRED,
    STATUS_NO_SUCH_DEVICE,
    STATUS_NOT_SUPPORTED,
    STATUS_SUCCESS,
    STATUS_UNSUCCESSFUL,
    BugCheck,
    BugCheckCode,
    DeviceFlags,
    IrpMajor,
    NtStatusError,
    PnpMinor,
    PnpState,
    VerifierCode,
)

pytestmark = pytest.mark.anyio

NAME = r"\Device\Function"


@dataclass
class Rig:
    io: airp.IoManager
    log: Log
    function: Function
    lower: Filter
    upper: Filter
    node: airp.DeviceNode

    @property
    def device(self) -> airp.DeviceObject:
        [device] = [d for d in self.node.devices if d.driver is self.function]
        return device


@asynccontextmanager
async def rig(*, bugs: Iterable[str] = (), start: bool = True, pool: bool = False, cls: type[Function] = Function) -> AsyncIterator[Rig]:
    """A started stack: PDO (root bus), lower filter, function driver, upper filter."""
    log = Log()
    async with airp.IoManager() as io:
        function = cls(log, bugs=set(bugs), pool=pool)
        lower, upper = Filter(log, "lower"), Filter(log, "upper")
        node = await io.add_device("test", name=NAME, function=function, lower_filters=[lower], upper_filters=[upper])
        if start:
            await io.start_device(node)
        yield Rig(io, log, function, lower, upper, node)


async def read_outcome(handle: airp.FileHandle, length: int = 4) -> Any:
    """The bytes a read returns, or the status it failed with."""
    try:
        return await handle.read(length)
    except NtStatusError as error:
        return error.status


def verifier_code(info: pytest.ExceptionInfo[BugCheck]) -> int:
    assert info.value.code == BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION
    code = info.value.verifier_code
    assert code is not None
    return int(code)


# -- building and starting --------------------------------------------------------------------


async def test_add_device_builds_bottom_up_and_clears_initializing() -> None:
    async with rig(start=False) as r:
        assert r.log.add_order == ["lower", "function", "upper"]
        pdo, *devices = r.node.devices
        assert pdo is r.node.pdo
        assert [d.driver for d in devices] == [r.lower, r.function, r.upper]
        assert r.node.top is devices[-1]
        for device in r.node.devices:
            assert not device.flags & DeviceFlags.DEVICE_INITIALIZING
            assert device.pnp_state is PnpState.NOT_STARTED
        assert r.node.state is PnpState.NOT_STARTED
        with pytest.raises(NtStatusError) as info:
            await r.io.open(NAME)
        assert info.value.status == STATUS_DEVICE_NOT_READY


async def test_start_goes_down_and_completes_bottom_up() -> None:
    async with rig() as r:
        assert r.log.minors("upper")[0] == PnpMinor.START_DEVICE
        # Arrival order is top-down; each driver finishes its start after the ones below it.
        starts = [a.driver for a in r.log.arrivals if a.minor == PnpMinor.START_DEVICE]
        assert starts == ["upper", "function", "lower"]
        assert r.log.start_post == ["lower", "function", "upper"]
        assert r.node.state is PnpState.STARTED
        assert all(d.pnp_state is PnpState.STARTED for d in r.node.devices)
        async with await r.io.open(NAME) as handle:
            assert await handle.read(3) == b"rrr"


async def test_every_pnp_irp_starts_not_supported() -> None:
    async with rig() as r:
        await r.io.query_remove_device(r.node)
        await r.io.cancel_remove_device(r.node)
        await r.io.invalidate_device_relations(r.node)
        await r.io.remove_device(r.node)
        top_arrivals = [a for a in r.log.arrivals if a.driver == "upper"]
        assert {a.minor for a in top_arrivals} >= {
            PnpMinor.START_DEVICE,
            PnpMinor.QUERY_REMOVE_DEVICE,
            PnpMinor.CANCEL_REMOVE_DEVICE,
            PnpMinor.QUERY_DEVICE_RELATIONS,
            PnpMinor.REMOVE_DEVICE,
        }
        assert all(a.status == STATUS_NOT_SUPPORTED for a in top_arrivals)
        assert r.log.transition_errors() == []


class Probe(airp.Driver):
    """An upper filter that sends each PnP IRP down and keeps the status it came back with."""

    pass_through = True

    def __init__(self) -> None:
        super().__init__("probe")
        self.seen: list[tuple[PnpMinor, int]] = []

    def add_device(self, pdo: airp.DeviceObject) -> None:
        device = airp.DeviceObject(self)
        airp.attach_device(device, pdo)
        device.flags &= ~DeviceFlags.DEVICE_INITIALIZING

    @airp.dispatch(IrpMajor.PNP)
    async def pnp(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        lower = device.lower_device
        assert lower is not None
        minor = PnpMinor(irp.current_stack_location.minor)
        status, information = await airp.forward_and_wait(lower, irp)
        self.seen.append((minor, status))
        if minor == PnpMinor.REMOVE_DEVICE:
            airp.detach_device(lower)
            airp.delete_device(device)
        airp.complete_request(irp, status, information)
        return status


async def test_default_dispatch_passes_pnp_down_untouched() -> None:
    log = Log()
    probe = Probe()
    async with airp.IoManager() as io:
        node = await io.add_device("plain", function=Plain(log), upper_filters=[probe])
        await io.start_device(node)
        await io.invalidate_device_relations(node)
        # The default dispatch passes REMOVE down too, and the driver that let it never detached or
        # deleted its device: 0x21D names it.
        with pytest.raises(BugCheck) as info:
            await io.remove_device(node)
        assert verifier_code(info) == VerifierCode.REMOVE_WITHOUT_DETACH
        assert info.value.driver is node.devices[1].driver
    # Plain has no PnP routine: its default dispatch passed every IRP to the root bus's PDO, which
    # succeeds the state-changing ones and answers the others with the status they carried.
    assert probe.seen == [
        (PnpMinor.START_DEVICE, STATUS_SUCCESS),
        (PnpMinor.QUERY_DEVICE_RELATIONS, STATUS_NOT_SUPPORTED),
        (PnpMinor.QUERY_DEVICE_RELATIONS, STATUS_NOT_SUPPORTED),
        (PnpMinor.QUERY_REMOVE_DEVICE, STATUS_SUCCESS),
        (PnpMinor.REMOVE_DEVICE, STATUS_SUCCESS),
    ]
    assert node.removed


async def test_failed_start_removes_the_stack() -> None:
    async with rig(bugs={"fail_start"}, start=False) as r:
        with pytest.raises(NtStatusError) as info:
            await r.io.start_device(r.node)
        assert info.value.status == STATUS_UNSUCCESSFUL
        assert r.node.removed
        assert r.node.state is PnpState.REMOVED
        assert all(d.deleted for d in r.node.devices)
        assert r.log.minors("function") == [PnpMinor.START_DEVICE, PnpMinor.REMOVE_DEVICE]


async def test_start_twice_is_refused() -> None:
    async with rig() as r:
        with pytest.raises(airp.PnpStateError):
            await r.io.start_device(r.node)


async def test_pnp_calls_need_the_manager_running() -> None:
    io = airp.IoManager()
    with pytest.raises(RuntimeError, match="async with io"):
        await io.add_device("test", function=Plain(Log()))


# -- query, cancel and orderly removal ------------------------------------------------------


async def test_query_remove_refuses_creates_until_cancelled() -> None:
    async with rig() as r:
        await r.io.query_remove_device(r.node)
        assert r.node.state is PnpState.REMOVE_PENDING
        with pytest.raises(NtStatusError) as info:
            await r.io.open(NAME)
        assert info.value.status == STATUS_DELETE_PENDING
        await r.io.cancel_remove_device(r.node)
        assert r.node.state is PnpState.STARTED
        async with await r.io.open(NAME) as handle:
            assert await handle.read(2) == b"rr"
        assert r.log.transition_errors() == []


async def test_query_remove_is_vetoed_by_an_open_handle() -> None:
    async with rig() as r:
        handle = await r.io.open(NAME)
        with pytest.raises(airp.RemovalVetoed, match="handle"):
            await r.io.remove_device(r.node)
        assert r.node.state is PnpState.STARTED
        assert PnpMinor.QUERY_REMOVE_DEVICE not in r.log.minors("upper")
        assert await handle.read(1) == b"r"
        await handle.close()
        await r.io.remove_device(r.node)
        assert r.node.removed


async def test_query_remove_vetoed_by_a_driver_is_cancelled() -> None:
    async with rig(bugs={"veto_query"}) as r:
        with pytest.raises(airp.RemovalVetoed) as info:
            await r.io.query_remove_device(r.node)
        assert info.value.status == STATUS_UNSUCCESSFUL
        # The veto is followed by CANCEL_REMOVE: every driver that saw the query hears it is off.
        assert r.log.minors("upper")[-2:] == [PnpMinor.QUERY_REMOVE_DEVICE, PnpMinor.CANCEL_REMOVE_DEVICE]
        assert r.node.state is PnpState.STARTED
        assert r.log.transition_errors() == []
        async with await r.io.open(NAME) as handle:
            assert await handle.read(1) == b"r"


async def test_orderly_removal_completes_queued_requests_with_no_such_device() -> None:
    async with rig() as r:
        device = r.device
        top = r.node.top
        # Requests with no handle (a driver's own IRPs sent to the stack): orderly removal does not
        # wait for them, it fails what is queued and cancels what is in progress.
        irps = []
        came_back: list[airp.Irp] = []

        def creator_routine(device: airp.DeviceObject | None, irp: airp.Irp, context: Any) -> int:
            came_back.append(irp)
            return STATUS_MORE_PROCESSING_REQUIRED

        for _ in range(5):
            irp = airp.allocate_irp(top.stack_size)
            assert irp is not None
            loc = irp.next_stack_location
            loc.major = IrpMajor.READ
            loc.parameters = airp.ReadWriteParameters(length=4)
            irp.set_completion_routine(creator_routine)
            irps.append(irp)
            await airp.call_driver(top, irp)
        await anyio.sleep(0.5)  # the first is in the lane's routine, four are queued
        assert r.function.started_io == 1
        await r.io.remove_device(r.node)
        statuses = [irp.status for irp in irps]
        assert sorted(map(id, came_back)) == sorted(map(id, irps))  # each came back once
        assert statuses[0] == STATUS_CANCELLED
        assert statuses[1:] == [STATUS_NO_SUCH_DEVICE] * 4
        assert r.function.started_io == 1
        assert device.extension.lock.statistics().count == 0
        assert r.log.completions
        assert all(n == 1 for n in r.log.completions.values())
        for irp in irps:
            airp.free_irp(irp)


async def test_removal_deletes_every_device_and_frees_the_name() -> None:
    async with rig() as r:
        devices = r.node.devices
        await r.io.remove_device(r.node)
        assert r.node.removed
        assert r.node not in r.io.device_nodes
        assert all(d.deleted for d in devices)
        assert r.node.devices == devices  # a removed node keeps the stack it had, for the record
        assert NAME not in r.io.device_names
        with pytest.raises(NtStatusError):
            await r.io.open(NAME)
        with pytest.raises(ValueError, match="already been removed"):
            await r.io.remove_device(r.node)
        # The name can be taken again.
        again = await r.io.add_device("test", name=NAME, function=r.function, lower_filters=[r.lower], upper_filters=[r.upper])
        await r.io.start_device(again)
        assert again.state is PnpState.STARTED


async def test_remove_lock_waits_for_the_request_in_progress() -> None:
    async with rig() as r:
        lock = r.device.extension.lock
        handle = await r.io.open(NAME)
        async with anyio.create_task_group() as tg:
            outcomes: list[Any] = []

            async def read() -> None:
                outcomes.append(await read_outcome(handle))

            tg.start_soon(read)
            await anyio.sleep(0.25)
            stats = lock.statistics()
            assert stats.count == 2  # the bias and the StartIo routine's hold
            assert sum(stats.holders.values()) == 1
            assert stats.high_water == 1
            await r.io.surprise_remove(r.node)
        assert outcomes == [STATUS_CANCELLED]
        # REMOVE waits for the last handle, and the lock still has its bias until then.
        assert r.node.state is PnpState.SURPRISE_REMOVED
        assert lock.statistics().count == 1
        await handle.close()
        assert r.node.removed
        assert lock.statistics().count == 0
        assert lock.statistics().removed


# -- surprise removal ----------------------------------------------------------------------


async def test_surprise_removal_fails_everything_and_remove_waits_for_the_last_handle() -> None:
    async with rig() as r:
        first, second = await r.io.open(NAME), await r.io.open(NAME)
        outcomes: list[Any] = []
        async with anyio.create_task_group() as tg:
            for handle in (first, second, first, second):

                async def read(handle: airp.FileHandle = handle) -> None:
                    outcomes.append(await read_outcome(handle))

                tg.start_soon(read)
            await anyio.sleep(0.5)
            await r.io.surprise_remove(r.node)
        # One read was in the lane's routine (cancelled), three were queued (NO_SUCH_DEVICE).
        assert sorted(outcomes) == sorted([STATUS_CANCELLED] + [STATUS_NO_SUCH_DEVICE] * 3)
        assert r.node.state is PnpState.SURPRISE_REMOVED
        assert PnpMinor.REMOVE_DEVICE not in r.log.minors("function")
        # Later requests on the open handles are refused; new opens too.
        assert await read_outcome(first) == STATUS_NO_SUCH_DEVICE
        with pytest.raises(NtStatusError) as info:
            await r.io.open(NAME)
        assert info.value.status == STATUS_NO_SUCH_DEVICE
        await first.close()
        assert r.node.state is PnpState.SURPRISE_REMOVED
        assert PnpMinor.REMOVE_DEVICE not in r.log.minors("function")

        async def close_later() -> None:
            await anyio.sleep(1)
            await second.close()

        async with anyio.create_task_group() as tg:
            tg.start_soon(close_later)
            before = anyio.current_time()
            await r.io.remove_device(r.node)  # waits for REMOVE, sent at the last close
            assert anyio.current_time() - before == pytest.approx(1)
        assert r.node.removed
        assert r.log.minors("function")[-2:] == [PnpMinor.SURPRISE_REMOVAL, PnpMinor.REMOVE_DEVICE]
        assert r.device.extension.lock.statistics().count == 0
        assert r.log.transition_errors() == []


async def test_surprise_removal_fails_queued_device_controls() -> None:
    async with rig() as r:
        handle = await r.io.open(NAME)
        statuses: list[int] = []
        async with anyio.create_task_group() as tg:
            for _ in range(3):

                async def ioctl() -> None:
                    try:
                        await handle.device_control(0x222000, b"", 0)
                        statuses.append(STATUS_SUCCESS)
                    except NtStatusError as error:
                        statuses.append(error.status)

                tg.start_soon(ioctl)
            await anyio.sleep(0.5)
            await r.io.surprise_remove(r.node)
        assert sorted(statuses) == sorted([STATUS_CANCELLED, STATUS_NO_SUCH_DEVICE, STATUS_NO_SUCH_DEVICE])
        await handle.close()
        assert r.node.removed


async def test_remove_of_a_surprise_removed_node_without_handles_is_immediate() -> None:
    async with rig() as r:
        await r.io.surprise_remove(r.node)
        assert r.node.removed
        assert r.log.minors("function")[-2:] == [PnpMinor.SURPRISE_REMOVAL, PnpMinor.REMOVE_DEVICE]
        await r.io.surprise_remove(r.node)  # again: nothing more happens
        assert r.log.minors("function").count(PnpMinor.SURPRISE_REMOVAL) == 1


# -- the checks of reference 10.3 ------------------------------------------------------------


@pytest.mark.parametrize(
    ("bug", "code", "named"),
    [
        ("no_detach", VerifierCode.REMOVE_WITHOUT_DETACH, "function"),
        ("no_delete", VerifierCode.REMOVE_WITHOUT_DELETE, "function"),
        # REMOVE's final status is known only at the top: the check names the stack's top driver.
        ("fail_remove", VerifierCode.REMOVE_DEVICE_FAILED, "upper"),
        ("delete_twice", VerifierCode.DELETE_DEVICE_TWICE, "function"),
        ("delete_attached", VerifierCode.DELETE_ATTACHED_DEVICE, "function"),
    ],
)
async def test_remove_checks(bug: str, code: VerifierCode, named: str) -> None:
    async with rig(bugs={bug}) as r:
        with pytest.raises(BugCheck) as info:
            await r.io.remove_device(r.node)
        assert verifier_code(info) == code
        assert info.value.driver is {"function": r.function, "upper": r.upper}[named]
        # The node is removed all the same: nothing sends it REMOVE again, the block ends cleanly.
        assert r.node.removed


@pytest.mark.parametrize(
    ("bug", "code"),
    [
        ("detach_in_surprise", VerifierCode.DETACH_DURING_SURPRISE_REMOVAL),
        ("delete_in_surprise", VerifierCode.DELETE_DURING_SURPRISE_REMOVAL),
    ],
)
async def test_surprise_removal_checks(bug: str, code: VerifierCode) -> None:
    async with rig(bugs={bug}) as r:
        with pytest.raises(BugCheck) as info:
            await r.io.surprise_remove(r.node)
        assert verifier_code(info) == code
        assert info.value.driver is r.function


async def test_device_initializing_left_set_is_0x243() -> None:
    log = Log()
    async with airp.IoManager() as io:
        with pytest.raises(BugCheck) as info:
            await io.add_device("test", function=Function(log, bugs={"leave_initializing"}))
        assert verifier_code(info) == VerifierCode.DEVICE_INITIALIZING_NOT_CLEARED
        assert "DO_DEVICE_INITIALIZING" in str(info.value)


# -- drivers: unload -----------------------------------------------------------------------


async def test_unload_is_refused_while_devices_remain() -> None:
    async with rig() as r:
        with pytest.raises(airp.UnloadRefused) as info:
            await r.io.unload_driver(r.function)
        assert r.device in info.value.devices
        assert f"its devices still exist: {r.device!r}" in str(info.value)
        assert r.log.unloaded == []
        await r.io.remove_device(r.node)
        await r.io.unload_driver(r.function)
        assert r.log.unloaded == ["function"]
        assert r.function not in r.io.drivers.values()
        with pytest.raises(LookupError, match="no driver loaded"):
            await r.io.unload_driver("nothing")


async def test_unload_is_refused_while_pool_irps_are_out() -> None:
    async with rig(pool=True) as r:
        pool = r.device.extension.pool
        assert pool is not None
        irp = pool.get()
        assert irp is not None
        await r.io.remove_device(r.node)
        # Deleting the device closed its pool: no more IRPs from it, the one out is still owed.
        assert pool.closed
        with pytest.raises(RuntimeError, match="closed"):
            pool.get()
        with pytest.raises(airp.UnloadRefused) as info:
            await r.io.unload_driver(r.function)
        assert (irp, r.device) in info.value.irps
        assert f"never given back: {irp!r} (pool of {r.device!r})" in str(info.value)
        pool.put(irp)
        await r.io.unload_driver(r.function)
        assert r.log.unloaded == ["function"]


async def test_async_unload_runs_to_its_end() -> None:
    async with rig(cls=AsyncUnloadFunction) as r:
        await r.io.remove_device(r.node)
        before = anyio.current_time()
        await r.io.unload_driver(r.function)
        assert anyio.current_time() - before == pytest.approx(0.5)
        assert r.log.unloaded == ["function"]


# -- the I/O manager's block -------------------------------------------------------------


async def test_leaving_the_block_removes_every_node() -> None:
    async with rig() as r:
        handle = await r.io.open(NAME)
        outcomes: list[Any] = []

        async def read() -> None:
            outcomes.append(await read_outcome(handle))

        # A read still in flight when the block ends: the node is surprise-removed and removed.
        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            await anyio.sleep(0.25)
            tg.cancel_scope.cancel()
        devices = r.node.devices
    assert r.node.removed
    assert all(d.deleted for d in devices)


async def test_an_exception_in_the_block_comes_out_unwrapped() -> None:
    nodes: list[airp.DeviceNode] = []

    async def fail_inside() -> None:
        async with rig() as r:
            nodes.append(r.node)
            async with await r.io.open(NAME) as handle:
                await handle.read(1)
            raise KeyError("mine")

    with pytest.raises(KeyError, match="mine"):
        await fail_inside()
    assert nodes[0].removed


# -- a bus ------------------------------------------------------------------------------------


async def test_bus_children_come_and_go() -> None:
    log = Log()
    async with airp.IoManager() as io:
        bus = Bus(log)
        function = Function(log)
        io.register_stack("child", function=function, upper_filters=[Filter(log, "upper")])
        bus_node = await io.add_device("bus", function=bus)
        await io.start_device(bus_node)
        [fdo] = bus.fdos
        pdo = bus.plug(fdo, "child", r"\Device\Child")
        await io.invalidate_device_relations(bus_node)
        [child] = bus_node.children
        assert child.pdo is pdo
        assert child.parent is bus_node
        assert child.state is PnpState.STARTED
        handle = await io.open(r"\Device\Child")
        assert await handle.read(2) == b"rr"
        bus.unplug(pdo)
        await io.invalidate_device_relations(bus_node)
        assert child.state is PnpState.SURPRISE_REMOVED
        assert await read_outcome(handle) == STATUS_NO_SUCH_DEVICE
        await handle.close()
        assert child.removed
        assert pdo.deleted
        assert bus_node.children == []
        # Removing the bus removes its children first.
        again = bus.plug(fdo, "child")
        await io.invalidate_device_relations(bus_node)
        [child2] = bus_node.children
        await io.remove_device(bus_node)
        assert child2.removed
        assert again.deleted
        assert bus_node.removed
        order = [(a.driver, a.minor) for a in log.arrivals if a.minor == PnpMinor.REMOVE_DEVICE]
        assert order.index(("function", PnpMinor.REMOVE_DEVICE)) < order.index(("bus", PnpMinor.REMOVE_DEVICE))
        assert log.transition_errors() == []


async def test_a_child_with_open_handles_vetoes_its_bus_removal() -> None:
    log = Log()
    async with airp.IoManager() as io:
        bus = Bus(log)
        io.register_stack("child", function=Function(log))
        bus_node = await io.add_device("bus", function=bus)
        await io.start_device(bus_node)
        bus.plug(bus.fdos[0], "child", r"\Device\Child")
        await io.invalidate_device_relations(bus_node)
        handle = await io.open(r"\Device\Child")
        with pytest.raises(airp.RemovalVetoed):
            await io.remove_device(bus_node)
        assert bus_node.state is PnpState.STARTED
        assert bus_node.children[0].state is PnpState.STARTED
        await handle.close()


async def test_unload_is_refused_while_irps_it_allocated_are_not_freed() -> None:
    async with rig() as r:
        allocator = airp.IrpAllocator(owner=r.function)
        assert allocator.owner is r.function
        irps = [allocator.allocate_irp(2) for _ in range(3)]
        await r.io.remove_device(r.node)
        with pytest.raises(airp.UnloadRefused) as info:
            await r.io.unload_driver(r.function)
        assert info.value.allocators == ((allocator, 3),)
        assert f"IRPs it allocated were never freed: 3 from {allocator!r}" in str(info.value)
        for irp in irps:
            assert irp is not None
            airp.free_irp(irp)
        await r.io.unload_driver(r.function)
        assert r.log.unloaded == ["function"]


def test_an_allocator_owner_is_a_driver() -> None:
    with pytest.raises(TypeError, match=r"owner is the airp\.Driver"):
        airp.IrpAllocator(owner="function")  # type: ignore[arg-type]
