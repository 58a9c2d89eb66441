"""Random lives of a device (issue 12): PnP events, handles and I/O in any order, nothing lost.

Hypothesis draws a program of steps: query-remove, cancel-remove, remove, surprise removal, plug
the device back in, open and close handles, send reads, writes and device controls (left in
flight), and let virtual time pass.  A model of the device's PnP state predicts what each step must
do: succeed, be vetoed, be refused with a given status, or raise :class:`airp.PnpStateError`.
After every step each IRP sent is either still outstanding or completed exactly once (counted by
the upper filter's completion routine), every request sent to a device already gone failed with
STATUS_NO_SUCH_DEVICE, and a STARTED device's remove lock holds its bias plus one per request in
its routines.  At the end (the I/O manager's block removes whatever is left) every request has
completed, every device is deleted and every remove lock is at zero.

Runs on both backends, on the virtual clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from _pnp_drivers import Filter, Function, Log
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import airp
from airp import (
    STATUS_CANCELLED,
    STATUS_DELETE_PENDING,
    STATUS_NO_SUCH_DEVICE,
    STATUS_OBJECT_NAME_NOT_FOUND,
    STATUS_SUCCESS,
    NtStatusError,
    PnpState,
)
from airp.testing import virtual_anyio_backend

NAME = r"\Device\Life"
LATENCY = 1.0

Step = tuple[str, int]
STEPS = st.lists(
    st.tuples(st.sampled_from(["query", "cancel", "remove", "surprise", "replug", "open"]), st.just(0))
    | st.tuples(st.sampled_from(["close", "read", "write", "ioctl"]), st.integers(0, 2))
    | st.tuples(st.just("wait"), st.integers(1, 3)),
    max_size=25,
)


@dataclass
class Sent:
    request: airp.Overlapped[Any]
    state: PnpState  # the device's state when it was sent


@dataclass
class Life:
    io: airp.IoManager
    tg: anyio.abc.TaskGroup
    log: Log
    function: Function
    lower: Filter
    upper: Filter
    node: airp.DeviceNode | None = None
    handles: list[airp.FileHandle] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    nodes: list[airp.DeviceNode] = field(default_factory=list)
    #: remove_device calls waiting for a surprise-removed node's last handle.
    waiting_removers: list[tuple[airp.DeviceNode, anyio.Event]] = field(default_factory=list)

    @property
    def state(self) -> PnpState | None:
        return None if self.node is None else self.node.state

    async def plug(self) -> None:
        node = await self.io.add_device(
            "life", name=NAME, function=self.function, lower_filters=[self.lower], upper_filters=[self.upper]
        )
        await self.io.start_device(node)
        self.node = node
        self.nodes.append(node)

    def lock(self, node: airp.DeviceNode) -> airp.RemoveLock:
        [device] = [d for d in node.devices if d.driver is self.function]
        lock: airp.RemoveLock = device.extension.lock
        return lock


async def step(life: Life, op: str, k: int) -> None:
    io, node = life.io, life.node
    assert node is not None
    state = node.state
    if op == "open":
        if state is PnpState.STARTED:
            life.handles.append(await io.open(NAME))
            return
        with pytest.raises(NtStatusError) as refused:
            await io.open(NAME)
        expected = {
            PnpState.REMOVE_PENDING: STATUS_DELETE_PENDING,
            PnpState.SURPRISE_REMOVED: STATUS_NO_SUCH_DEVICE,
            PnpState.REMOVED: STATUS_OBJECT_NAME_NOT_FOUND,  # the PDO was deleted, its name freed
        }[state]
        assert refused.value.status == expected
    elif op == "close":
        if k < len(life.handles):
            await life.handles.pop(k).close()
            if state is PnpState.SURPRISE_REMOVED:
                # REMOVE goes down at the last close, and whoever waited for it is released.
                assert node.removed == (not life.handles)
    elif op in ("read", "write", "ioctl"):
        if k < len(life.handles):
            handle = life.handles[k]
            if op == "read":
                request = await handle.read_overlapped(4)
            elif op == "write":
                request = await handle.write_overlapped(b"abcd")
            else:
                request = await handle.device_control_overlapped(0x222000)
            life.sent.append(Sent(request, state))
    elif op == "query":
        if state is PnpState.STARTED and life.handles:
            with pytest.raises(airp.RemovalVetoed, match="handle"):
                await io.query_remove_device(node)
        elif state is PnpState.STARTED:
            await io.query_remove_device(node)
        else:
            with pytest.raises(airp.PnpStateError):
                await io.query_remove_device(node)
    elif op == "cancel":
        if state in (PnpState.STARTED, PnpState.REMOVE_PENDING):
            await io.cancel_remove_device(node)
            assert node.state is PnpState.STARTED
        else:
            with pytest.raises(airp.PnpStateError):
                await io.cancel_remove_device(node)
    elif op == "remove":
        if state is PnpState.REMOVED:
            with pytest.raises(ValueError, match="already been removed"):
                await io.remove_device(node)
        elif state is PnpState.STARTED and life.handles:
            with pytest.raises(airp.RemovalVetoed):
                await io.remove_device(node)
        elif state is PnpState.SURPRISE_REMOVED:
            # Waits for the last handle: let it wait in the background.
            done = anyio.Event()

            async def remove_later() -> None:
                await io.remove_device(node)
                done.set()

            life.tg.start_soon(remove_later)
            life.waiting_removers.append((node, done))
        else:
            await io.remove_device(node)
            assert node.removed
    elif op == "surprise":
        await io.surprise_remove(node)
        assert node.state is (PnpState.SURPRISE_REMOVED if life.handles else PnpState.REMOVED)
    elif op == "replug":
        if state is PnpState.REMOVED:
            life.handles.clear()
            await life.plug()
    else:
        await anyio.sleep(LATENCY * k / 2)
    await anyio.lowlevel.checkpoint()


def check_after_step(life: Life) -> None:
    """Each request is outstanding or completed exactly once, with a status its state allows."""
    outstanding = set(map(id, life.io.outstanding_requests()))
    for sent in life.sent:
        irp = sent.request.irp
        completions = life.log.completions.get(irp, 0)
        if irp.completed:
            assert completions == 1, (irp, completions)
            assert id(irp) not in outstanding
            if sent.state is PnpState.STARTED:
                assert irp.status in (STATUS_SUCCESS, STATUS_CANCELLED, STATUS_NO_SUCH_DEVICE), irp
            else:
                assert irp.status == STATUS_NO_SUCH_DEVICE, irp
        else:
            assert completions == 0
            assert id(irp) in outstanding
    for node in life.nodes:
        stats = life.lock(node).statistics()
        if node.state is PnpState.STARTED:
            # The bias, plus the routines' holds (dispatch releases its own before returning).
            assert stats.count == 1 + sum(stats.holders.values())
            assert not stats.removed
        elif node.removed:
            assert stats.count == 0
            assert stats.removed
    for node, done in life.waiting_removers:
        if done.is_set():
            assert node.removed


async def live(program: list[Step]) -> None:
    log = Log()
    function = Function(log, latency=LATENCY)
    lower, upper = Filter(log, "lower"), Filter(log, "upper")
    # The task group outside the I/O manager's block: a remove_device still waiting for a handle
    # when the program ends is released by the block's end, which removes everything.
    async with anyio.create_task_group() as tg, airp.IoManager() as io:
        life = Life(io, tg, log, function, lower, upper)
        await life.plug()
        for op, k in program:
            await step(life, op, k)
            check_after_step(life)
    # The block's end removed whatever was left, handles open or not.
    assert io.outstanding_requests() == []
    assert all(done.is_set() for _node, done in life.waiting_removers)
    for sent in life.sent:
        assert sent.request.irp.completed
        assert log.completions[sent.request.irp] == 1
        status = sent.request.irp.status
        if status == STATUS_SUCCESS:
            await sent.request
        else:
            # The requester gets the failure as NtStatusError with the IRP's status.
            with pytest.raises(NtStatusError) as failed:
                await sent.request
            assert failed.value.status == status
    for node in life.nodes:
        assert node.removed
        assert all(device.deleted for device in node.devices)
        stats = life.lock(node).statistics()
        assert stats.count == 0
        assert stats.removed
    assert function.devices == []
    assert lower.devices == []
    assert upper.devices == []
    assert life.log.transition_errors() == []


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=STEPS)
def test_any_life_of_a_device_loses_nothing(backend: str, program: list[Step]) -> None:
    name, options = virtual_anyio_backend(backend)
    anyio.run(live, program, backend=name, backend_options=options)
