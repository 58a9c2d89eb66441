"""What comes out of the end of ``async with IoManager()`` when something fails.

The block's own exception comes out as it was raised, its ``__context__`` shown: a bug
check that a handle's close turned into a :class:`~airp.DriverCancelTimeoutWarning` (under
``filterwarnings = error``, which the docs recommend) is still there to see.

A bug check while the block's end removes the devices does not stop the removal of the
others: every node is removed, every device's queues end, and then the first bug check is raised.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from _pnp_drivers import Bus, Filter, Function, Log

import airp
from airp import (
    STATUS_CANCELLED,
    STATUS_PENDING,
    BugCheck,
    BugCheckCode,
    DeviceObject,
    Irp,
    IrpMajor,
    NtStatusError,
    PnpState,
    VerifierCode,
)

pytestmark = pytest.mark.anyio


class Keeper(Filter):
    """An upper filter that keeps every read, pending, with no cancel routine: it ignores cancellation.

    Its PnP routine is a correct filter's.
    """

    def __init__(self) -> None:
        super().__init__(Log(), "keeper")
        self.kept: list[Irp] = []

    @airp.dispatch(IrpMajor.READ)
    async def keep(self, device: DeviceObject, irp: Irp) -> int:
        irp.mark_pending()
        self.kept.append(irp)
        return STATUS_PENDING


def bug(note: str) -> BugCheck:
    return BugCheck(BugCheckCode.MULTIPLE_IRP_COMPLETE_REQUESTS, note)


def chain(error: BaseException | None) -> list[BaseException]:
    """The exceptions Python shows for *error*, last first: its cause or (unless suppressed) context."""
    shown: list[BaseException] = []
    while error is not None:
        shown.append(error)
        error = error.__cause__ if error.__cause__ is not None else (None if error.__suppress_context__ else error.__context__)
    return shown


# -- the block's exception with its context intact --------------------------------------


async def test_the_block_s_exception_keeps_its_context() -> None:
    async def block() -> None:
        async with airp.IoManager() as io:
            await io.add_device("t", function=Function(Log()))
            try:
                raise KeyError("what went wrong first")
            except KeyError:
                raise bug("raised while handling it")  # noqa: B904 - the context is the point

    with pytest.raises(BugCheck) as info:
        await block()
    error = info.value
    assert not error.__suppress_context__
    assert isinstance(error.__context__, KeyError)
    assert [type(e) for e in chain(error)] == [BugCheck, KeyError]


async def test_the_block_s_exception_keeps_its_cause() -> None:
    cause = OSError("the hardware")

    async def block() -> None:
        async with airp.IoManager():
            raise bug("because of it") from cause

    with pytest.raises(BugCheck) as info:
        await block()
    assert info.value.__cause__ is cause
    assert info.value.__suppress_context__


async def test_a_bug_check_is_not_hidden_by_the_close_it_leaves_behind() -> None:
    # The case: a bug check in `async with io.open(...)`; closing the handle cancels a read a
    # filter keeps and ignores, which warns, and the warning is an error under filterwarnings=error.
    airp.set_cancel_wait_limit(5)
    original = bug("the original bug")

    async def block() -> None:
        async with airp.IoManager() as io:
            node = await io.add_device("t", name=r"\Device\Kept", function=Function(Log()), upper_filters=[Keeper()])
            await io.start_device(node)
            async with io.open(r"\Device\Kept") as handle:
                await handle.read_overlapped(4)
                raise original

    with warnings.catch_warnings():
        warnings.simplefilter("error", airp.DriverCancelTimeoutWarning)
        with pytest.raises(airp.DriverCancelTimeoutWarning) as info:
            await block()
    # pytest shows the chain from its root: the bug check first, then the warning it led to.
    assert chain(info.value) == [info.value, original]


# -- a bug check while the block's end removes the devices ------------------------------


async def two_children(io: airp.IoManager, log: Log, bugs: set[str]) -> tuple[airp.DeviceNode, list[Function]]:
    """A bus with two children, each with its own function driver; the first has *bugs*."""
    bus = Bus(log)
    functions = [Function(log, "first", bugs=bugs), Function(log, "second")]
    io.register_stack("first", function=functions[0])
    io.register_stack("second", function=functions[1], upper_filters=[Filter(log, "upper")])
    bus_node = await io.add_device("bus", function=bus)
    await io.start_device(bus_node)
    [fdo] = bus.fdos
    bus.plug(fdo, "first", r"\Device\First")
    bus.plug(fdo, "second", r"\Device\Second")
    await io.invalidate_device_relations(bus_node)
    return bus_node, functions


@pytest.mark.parametrize(
    ("bugs", "code"),
    [({"no_detach"}, VerifierCode.REMOVE_WITHOUT_DETACH), ({"fail_remove"}, VerifierCode.REMOVE_DEVICE_FAILED)],
    ids=["0x21D", "0x306"],
)
async def test_a_bug_check_at_the_end_of_the_block_does_not_stop_the_other_removals(bugs: set[str], code: VerifierCode) -> None:
    log = Log()
    seen: dict[str, Any] = {}

    async def block() -> None:
        async with airp.IoManager() as io:
            seen["bus"], seen["functions"] = await two_children(io, log, bugs)
            seen["nodes"] = io.device_nodes
            handle = await io.open(r"\Device\Second")
            seen["handle"] = handle
            seen["request"] = await handle.read_overlapped(4)  # in the second child's StartIo lane

    with pytest.raises(BugCheck) as info:
        await block()
    assert info.value.parameters[0] == code
    assert info.value.driver is seen["functions"][0]
    # Everything was removed all the same, the bus last; every device's queues ended.
    nodes: list[airp.DeviceNode] = seen["nodes"]
    assert len(nodes) == 3
    assert all(node.removed for node in nodes)
    assert seen["bus"].state is PnpState.REMOVED
    assert all(d.tasks is None or d.tasks.state is airp.DeviceState.REMOVED for n in nodes for d in n.devices)
    assert seen["handle"].file_object.device.deleted
    # The read the second child's StartIo routine was working on was cancelled and finished.
    with pytest.raises(NtStatusError) as failed:
        await seen["request"]
    assert failed.value.status == STATUS_CANCELLED


async def test_two_bug_checks_at_the_end_of_the_block_raise_the_first() -> None:
    log = Log()
    first, second = Function(log, "first", bugs={"no_delete"}), Function(log, "second", bugs={"no_detach"})
    nodes: list[airp.DeviceNode] = []

    async def block() -> None:
        async with airp.IoManager() as io:
            bus = Bus(log)
            io.register_stack("first", function=first)
            io.register_stack("second", function=second)
            bus_node = await io.add_device("bus", function=bus)
            await io.start_device(bus_node)
            bus.plug(bus.fdos[0], "first")
            bus.plug(bus.fdos[0], "second")
            await io.invalidate_device_relations(bus_node)
            nodes.extend(io.device_nodes)

    with pytest.raises(BugCheck) as info:
        await block()
    assert info.value.driver is first
    assert info.value.parameters[0] == VerifierCode.REMOVE_WITHOUT_DELETE
    assert len(nodes) == 3
    assert all(node.removed for node in nodes)


async def test_the_block_s_own_exception_still_shows_when_the_teardown_bug_checks_too() -> None:
    log = Log()
    original = KeyError("the block's own")
    nodes: list[airp.DeviceNode] = []

    async def block() -> None:
        async with airp.IoManager() as io:
            await two_children(io, log, {"no_detach"})
            nodes.extend(io.device_nodes)
            raise original

    # The removal's bug check comes out, raised while the block's exception was handled: both show.
    with pytest.raises(BugCheck) as info:
        await block()
    assert info.value.parameters[0] == VerifierCode.REMOVE_WITHOUT_DETACH
    assert chain(info.value) == [info.value, original]
    assert all(node.removed for node in nodes)


async def test_an_explicit_removal_of_a_bus_goes_on_past_a_child_s_bug_check() -> None:
    log = Log()
    async with airp.IoManager() as io:
        bus_node, functions = await two_children(io, log, {"no_detach"})
        nodes = io.device_nodes
        with pytest.raises(BugCheck) as info:
            await io.remove_device(bus_node)
        assert info.value.driver is functions[0]
        assert all(node.removed for node in nodes)
