"""IrpPool: a device's recycled IRPs (issue #3; seed 000, reference 2.4)."""

from __future__ import annotations

import dataclasses
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from _own_irp_drivers import Completer, Holder, fill_read, must, take_back
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import airp
from airp import (
    STATUS_CONTINUE_COMPLETION,
    STATUS_MORE_PROCESSING_REQUIRED,
    STATUS_PENDING,
    STATUS_SUCCESS,
    BugCheck,
    Irp,
    IrpAllocator,
    IrpPool,
    IrpPoolReport,
    VerifierCode,
    free_irp,
)


def make_pool(lower_driver: airp.Driver, **options: Any) -> tuple[IrpPool, airp.DeviceObject, airp.DeviceObject]:
    io = airp.IoManager()
    lower = io.create_device(lower_driver)
    device = io.create_device(Completer())
    airp.attach_device(device, lower)
    return IrpPool(device, **options), device, lower


def test_get_allocates_then_reuses() -> None:
    pool, _device, lower = make_pool(Completer())
    first = pool.get()
    assert first is not None
    assert first.stack_count == lower.stack_size
    assert pool.in_use == (first,)
    pool.put(first)
    again = pool.get(airp.STATUS_UNSUCCESSFUL)
    assert again is first
    assert again.status == airp.STATUS_UNSUCCESSFUL  # IoReuseIrp(Irp, Status)
    stats = pool.statistics()
    assert (stats.reused, stats.allocated, stats.in_use, stats.idle, stats.freed) == (1, 1, 1, 0, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.idle = 1  # type: ignore[misc]


def test_a_reused_irp_is_fresh() -> None:
    pool, _, _ = make_pool(Completer())
    irp = must(pool.get())
    fill_read(irp).set_completion_routine(take_back, [])
    irp.driver_context = "old"
    irp.information = 12
    pool.put(irp)
    irp = must(pool.get())
    assert (irp.driver_context, irp.information, irp.current_location) == (None, 0, irp.stack_count + 1)
    assert irp.next_stack_location.completion_routine is None
    assert irp.next_stack_location.major == 0


@pytest.mark.anyio
async def test_the_completion_routine_gives_the_irp_back() -> None:
    pool, _device, _lower = make_pool(Completer(information=7))
    results: list[int] = []

    def done(device: airp.DeviceObject | None, irp: Irp, context: Any) -> int:
        results.append(irp.information)
        pool.put(irp)
        return STATUS_MORE_PROCESSING_REQUIRED

    for _ in range(20):
        irp = fill_read(must(pool.get()))
        irp.set_completion_routine(done)
        assert await pool.send(irp) == STATUS_SUCCESS
    stats = pool.statistics()
    assert results == [7] * 20
    assert (stats.allocated, stats.reused, stats.idle, stats.in_use) == (1, 19, 1, 0)


def test_own_location_gives_the_creator_a_device() -> None:
    pool, device, lower = make_pool(Completer(), own_location=True)
    assert pool.stack_size == lower.stack_size + 1
    irp = must(pool.get())
    assert irp.current_location == irp.stack_count
    assert irp.current_stack_location.device is device
    irp.mark_pending()  # legal: the creator has a location
    pool.put(irp)
    irp = must(pool.get())
    assert irp.current_location == irp.stack_count
    assert irp.current_stack_location.control == 0


@pytest.mark.anyio
async def test_own_location_routine_runs_with_the_device() -> None:
    pool, device, _lower = make_pool(Completer(), own_location=True)
    seen: list[Any] = []
    irp = fill_read(must(pool.get()))
    irp.set_completion_routine(take_back, seen)
    await pool.send(irp)
    assert seen == [(device, STATUS_SUCCESS)]
    pool.put(irp)


def test_idle_irps_beyond_max_idle_are_freed() -> None:
    allocator = IrpAllocator()
    pool, _, _ = make_pool(Completer(), max_idle=2, allocator=allocator)
    irps = [must(pool.get()) for _ in range(4)]
    for irp in irps:
        pool.put(irp)
    stats = pool.statistics()
    assert (stats.idle, stats.freed, stats.allocated) == (2, 2, 4)
    assert allocator.statistics().outstanding == 2  # the two idle ones


def test_idle_irps_too_small_for_a_grown_target_are_replaced() -> None:
    io = airp.IoManager()
    device = io.create_device(Completer())
    target = io.create_device(Completer())
    pool = IrpPool(device, target)
    old = must(pool.get())
    pool.put(old)
    airp.attach_device(target, io.create_device(Completer()))  # the target's stack grows to 2
    new = must(pool.get())
    assert new is not old
    assert new.stack_count == 2
    assert pool.statistics().freed == 1


def test_putting_back_twice_is_bug_check_c9_01() -> None:
    pool, _, _ = make_pool(Completer())
    irp = must(pool.get())
    pool.put(irp)
    with pytest.raises(BugCheck, match=r"given back to .* twice") as info:
        pool.put(irp)
    assert info.value.parameters[0] == VerifierCode.FREE_NON_IRP


def test_putting_back_a_foreign_irp_is_refused() -> None:
    pool, _, _ = make_pool(Completer())
    with pytest.raises(ValueError, match="did not come from"):
        pool.put(Irp(1))


@pytest.mark.anyio
async def test_putting_back_an_irp_in_flight_is_bug_check_c9_310() -> None:
    holder = Holder()
    pool, _, _ = make_pool(holder)
    irp = fill_read(must(pool.get()))
    irp.set_completion_routine(take_back, [])
    assert await pool.send(irp) == STATUS_PENDING
    with pytest.raises(BugCheck, match="still in use") as info:
        pool.put(irp)
    assert info.value.parameters[0] == VerifierCode.REINITIALIZE_IRP_IN_USE
    assert pool.in_use == (irp,)  # still the driver's
    holder.complete()
    pool.put(irp)


def test_putting_back_an_irp_with_a_cancel_routine_is_refused() -> None:
    pool, _, _ = make_pool(Completer())
    irp = must(pool.get())
    irp.set_cancel_routine(lambda device, irp: None)
    with pytest.raises(BugCheck) as info:
        pool.put(irp)
    assert info.value.parameters[0] == 0x310


def test_a_pooled_irp_freed_behind_the_pools_back_is_refused_on_put() -> None:
    pool, _, _ = make_pool(Completer())
    irp = must(pool.get())
    free_irp(irp)
    with pytest.raises(BugCheck, match="has been freed") as info:
        pool.put(irp)
    assert info.value.parameters[0] == VerifierCode.REUSE_NOT_ALLOCATED_IRP


@pytest.mark.anyio
@pytest.mark.parametrize("own_location", [False, True])
async def test_an_irp_sent_without_a_completion_routine_cannot_be_given_back_while_held(own_location: bool) -> None:
    # The pool knows where its driver holds the IRP, so it sees a lower driver holding it however
    # it was sent: here with plain call_driver and no completion routine.
    holder = Holder(cancelable=False)
    pool, _device, lower = make_pool(holder, own_location=own_location)
    irp = fill_read(must(pool.get()))
    assert await airp.call_driver(lower, irp) == STATUS_PENDING
    for give_back in (pool.put, airp.reuse_irp):
        with pytest.raises(BugCheck, match="still in use") as info:
            give_back(irp)
        assert info.value.parameters[0] == VerifierCode.REINITIALIZE_IRP_IN_USE
        assert info.value.device is lower
    with pytest.raises(BugCheck) as info:
        free_irp(irp)
    assert info.value.parameters[0] == VerifierCode.FREE_IRP_IN_USE
    assert pool.in_use == (irp,)
    assert pool.get() is not irp


@pytest.mark.anyio
async def test_close_frees_idle_and_reports_in_use() -> None:
    holder = Holder()
    allocator = IrpAllocator()
    pool, _device, _ = make_pool(holder, allocator=allocator)
    idle = [must(pool.get()) for _ in range(3)]
    for irp in idle:
        pool.put(irp)
    sent = fill_read(must(pool.get()))
    sent.set_completion_routine(take_back, [])
    await pool.send(sent)
    kept = must(pool.get())
    report = pool.close()
    assert isinstance(report, IrpPoolReport)
    assert report.freed == 1
    assert set(report.in_use) == {sent, kept}
    assert not report.clean
    assert pool.closed
    with pytest.raises(RuntimeError, match="closed"):
        pool.get()
    # In-use IRPs are freed as they come back.
    holder.complete()
    pool.put(sent)
    pool.put(kept)
    assert pool.statistics().in_use == 0
    assert pool.statistics().freed == 3
    assert allocator.statistics().outstanding == 0
    assert pool.close() == IrpPoolReport(0, ())
    assert pool.close().clean


def test_constructor_errors() -> None:
    io = airp.IoManager()
    alone = io.create_device(Completer())
    with pytest.raises(ValueError, match="not attached to a lower device"):
        IrpPool(alone)
    with pytest.raises(ValueError, match="max_idle"):
        IrpPool(alone, alone, max_idle=-1)
    with pytest.raises(TypeError, match="DeviceObject"):
        IrpPool("device")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="target is a DeviceObject"):
        IrpPool(alone, "target")  # type: ignore[arg-type]
    assert "0 idle" in repr(IrpPool(alone, alone))


@pytest.mark.anyio
async def test_pooled_irps_follow_the_rule_of_5_8() -> None:
    pool, _, _ = make_pool(Completer())
    irp = fill_read(must(pool.get()))
    irp.set_completion_routine(lambda device, irp, context: STATUS_CONTINUE_COMPLETION)
    with pytest.raises(BugCheck) as info:
        await pool.send(irp)
    assert info.value.code == 0x2A


@pytest.mark.anyio
async def test_pool_send_checks_the_stack_size() -> None:
    pool, _, lower = make_pool(Completer())
    airp.attach_device(io_device := airp.IoManager().create_device(Completer()), lower)
    pool2 = IrpPool(pool.device, io_device)
    with pytest.raises(BugCheck) as info:
        await pool2.send(Irp(1))
    assert info.value.parameters[0] == VerifierCode.STACK_LOCATIONS_RUNNING_OUT


@pytest.mark.anyio
async def test_concurrent_tasks_share_a_pool() -> None:
    """Many tasks, each sending and waiting; a worker completes in another task. No IRP is handed
    out twice, and the pool never holds more IRPs than were in flight at once."""
    holder = Holder()
    pool, _device, _lower = make_pool(holder)
    in_flight: set[int] = set()
    peak = 0
    done_count = 0
    tasks, rounds = 8, 25
    finished = anyio.Event()

    def done(device: airp.DeviceObject | None, irp: Irp, event: anyio.Event) -> int:
        in_flight.remove(id(irp))
        pool.put(irp)
        event.set()
        return STATUS_MORE_PROCESSING_REQUIRED

    async def sender() -> None:
        nonlocal peak, done_count
        for _ in range(rounds):
            irp = fill_read(must(pool.get()))
            assert id(irp) not in in_flight, "an IRP was handed out twice"
            in_flight.add(id(irp))
            peak = max(peak, len(in_flight))
            event = anyio.Event()
            irp.set_completion_routine(done, event)
            await pool.send(irp)
            await event.wait()
        done_count += 1
        if done_count == tasks:
            finished.set()

    async def worker() -> None:
        while not finished.is_set():
            while holder.held:
                holder.complete()
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(worker)
        for _ in range(tasks):
            tg.start_soon(sender)
    stats = pool.statistics()
    assert stats.reused + stats.allocated == tasks * rounds
    assert stats.allocated == peak <= tasks
    assert stats.in_use == 0
    assert stats.idle == stats.allocated


@pytest.mark.anyio
async def test_the_pool_does_not_grow_with_the_count() -> None:
    pool, _, _ = make_pool(Completer())

    def done(device: airp.DeviceObject | None, irp: Irp, context: Any) -> int:
        pool.put(irp)
        return STATUS_MORE_PROCESSING_REQUIRED

    for _ in range(2000):
        irp = fill_read(must(pool.get()))
        irp.set_completion_routine(done)
        await pool.send(irp)
    stats = pool.statistics()
    assert (stats.allocated, stats.idle, stats.reused) == (1, 1, 1999)


def test_reuse_never_fails_under_low_resources() -> None:
    allocator = IrpAllocator(low_resources=airp.LowResourcesSimulation(1.0))
    pool, _, _ = make_pool(Completer(), allocator=allocator)
    assert pool.get() is None
    assert pool.statistics().failed == 1
    allocator.low_resources = None
    irp = must(pool.get())
    pool.put(irp)
    allocator.low_resources = airp.LowResourcesSimulation(1.0)
    assert pool.get() is irp  # IoReuseIrp cannot fail


class PoolMachine(RuleBasedStateMachine):
    """get / put / close in any order: counts stay consistent, no IRP is out twice or both out and idle."""

    def __init__(self) -> None:
        super().__init__()
        self.allocator = IrpAllocator()
        self.pool, _, _ = make_pool(Completer(), max_idle=3, allocator=self.allocator)
        self.out: list[Irp] = []
        self.gets = 0
        self.closed = False

    @precondition(lambda self: not self.closed)
    @rule()
    def get(self) -> None:
        irp = self.pool.get()
        assert irp is not None
        assert all(irp is not other for other in self.out), "an IRP was handed out twice"
        self.out.append(irp)
        self.gets += 1

    @precondition(lambda self: bool(self.out))
    @rule(data=st.data())
    def put(self, data: st.DataObject) -> None:
        irp = data.draw(st.sampled_from(self.out))
        self.pool.put(irp)
        self.out.remove(irp)

    @rule()
    def close(self) -> None:
        idle = self.pool.statistics().idle
        report = self.pool.close()
        assert report.freed == idle
        assert list(report.in_use) == self.out
        self.closed = True

    @invariant()
    def consistent(self) -> None:
        stats = self.pool.statistics()
        assert stats.in_use == len(self.out)
        assert 0 <= stats.idle <= stats.max_idle
        assert stats.reused + stats.allocated == self.gets
        assert not {id(i) for i in self.pool._idle} & {id(i) for i in self.out}
        assert self.allocator.statistics().outstanding == stats.in_use + stats.idle
        if self.closed:
            assert stats.idle == 0


TestPoolMachine = PoolMachine.TestCase
TestPoolMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
