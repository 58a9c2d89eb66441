"""Associated IRPs: a master carried out by parts (issue #3; reference 2.5, 5.5)."""

from __future__ import annotations

import random
from typing import Any

import anyio
import pytest
from _own_irp_drivers import Holder, fill_read, make_device

import airp
from airp import (
    STATUS_CANCELLED,
    STATUS_CONTINUE_COMPLETION,
    STATUS_PENDING,
    STATUS_SUCCESS,
    BugCheck,
    Irp,
    IrpAllocator,
    IrpFlags,
    IrpMajor,
    IrpStateError,
    VerifierCode,
    arm_master_cancel,
    associated_irps,
    cancel_associated_irps,
    complete_request,
    free_irp,
    make_associated_irp,
    make_associated_irps,
    reuse_irp,
    send_irp,
)


def pended_master(owner: Any = None) -> Irp:
    """A master as its highest-level driver holds it: at its location, marked pending."""
    master = Irp(2)
    master.next_stack_location.major = IrpMajor.READ
    master.set_next_stack_location()
    master.mark_pending()
    if owner is not None:
        master.owner = owner
    return master


def cancelled_fails_master(device: airp.DeviceObject | None, part: Irp, master: Irp) -> int:
    if part.status == STATUS_CANCELLED:
        master.status = STATUS_CANCELLED
    return STATUS_CONTINUE_COMPLETION


def note_into_master(device: airp.DeviceObject | None, part: Irp, master: Irp) -> int:
    master.information += part.information
    return STATUS_CONTINUE_COMPLETION


def test_an_associated_irp_points_at_its_master() -> None:
    owner = object()
    master = pended_master(owner)
    part = make_associated_irp(master, 3)
    assert part is not None
    assert part.master_irp is master
    assert part.flags & IrpFlags.ASSOCIATED_IRP
    assert part.owner is owner  # the master's requester, recorded (not queued)
    assert part.stack_count == 3
    assert part.current_location == 4
    assert master.associated_irp_count == 0  # the caller sets it (reference 2.5)
    assert associated_irps(master) == [part]


def test_make_associated_irps_sets_the_count() -> None:
    master = pended_master()
    parts = make_associated_irps(master, 3, 1)
    assert parts is not None
    assert len(parts) == 3
    assert master.associated_irp_count == 3
    assert associated_irps(master) == parts
    with pytest.raises(ValueError, match="positive int"):
        make_associated_irps(master, 0, 1)


def test_make_associated_irps_is_all_or_nothing() -> None:
    # A seed whose first draw passes and second fails at fraction 0.5.
    seed = next(s for s in range(1000) if (r := random.Random(s)).random() >= 0.5 and r.random() < 0.5)
    allocator = IrpAllocator(low_resources=airp.LowResourcesSimulation(0.5, seed))
    master = pended_master()
    assert make_associated_irps(master, 4, 1, allocator=allocator) is None
    assert master.associated_irp_count == 0
    assert associated_irps(master) == []
    stats = allocator.statistics()
    assert stats.outstanding == 0
    assert stats.failed_allocations == 1


def test_bad_masters_are_refused() -> None:
    master = pended_master()
    part = make_associated_irp(master, 1)
    assert part is not None
    with pytest.raises(ValueError, match="itself an associated IRP"):
        make_associated_irp(part, 1)
    done = Irp(1)
    complete_request(done)
    with pytest.raises(IrpStateError, match="already completed"):
        make_associated_irp(done, 1)
    with pytest.raises(TypeError, match="master must be an Irp"):
        make_associated_irp("master", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="between 1 and 127"):
        make_associated_irp(master, 0)


@pytest.mark.anyio
async def test_the_master_completes_exactly_when_the_last_part_does() -> None:
    holder = Holder()
    lower = make_device(holder)
    master = pended_master()
    master.status = STATUS_SUCCESS
    parts = make_associated_irps(master, 3, lower.stack_size)
    assert parts is not None
    for part in parts:
        fill_read(part).set_completion_routine(note_into_master, master)
        assert await send_irp(lower, part) == STATUS_PENDING
    for remaining, part in zip((2, 1), parts[:2], strict=False):
        holder.complete(part, information=10)
        assert part.completed
        assert not master.completed
        assert master.associated_irp_count == remaining
    holder.complete(parts[2], information=5)
    assert master.completed
    assert master.associated_irp_count == 0
    assert (await master) == (STATUS_SUCCESS, 25)
    assert associated_irps(master) == []


@pytest.mark.anyio
async def test_the_masters_status_is_what_its_driver_set() -> None:
    """The I/O manager does not aggregate statuses: a failed part fails the master only if the
    driver says so."""
    holder = Holder()
    lower = make_device(holder)
    master = pended_master()
    master.status = airp.STATUS_TIMEOUT  # whatever the driver decided
    parts = make_associated_irps(master, 2, lower.stack_size)
    assert parts is not None
    for part in parts:
        await send_irp(lower, fill_read(part))  # no completion routine: parts complete normally
    holder.complete(status=airp.STATUS_DEVICE_NOT_READY)
    holder.complete(status=STATUS_SUCCESS)
    assert master.completed
    assert master.status == airp.STATUS_TIMEOUT


@pytest.mark.anyio
async def test_the_io_manager_frees_associated_irps() -> None:
    allocator = IrpAllocator()
    holder = Holder()
    lower = make_device(holder)
    master = pended_master()
    parts = make_associated_irps(master, 2, lower.stack_size, allocator=allocator)
    assert parts is not None
    with pytest.raises(BugCheck, match="make_associated_irp") as info:
        reuse_irp(parts[0])
    assert info.value.parameters[0] == VerifierCode.REUSE_NOT_ALLOCATED_IRP
    for part in parts:
        await send_irp(lower, fill_read(part))
    holder.complete()
    assert allocator.statistics().outstanding == 1
    with pytest.raises(BugCheck, match="by the I/O manager") as info:
        free_irp(parts[0])
    assert info.value.parameters[0] == VerifierCode.FREE_NON_IRP
    with pytest.raises(BugCheck) as info:
        free_irp(parts[1])  # still held below
    assert info.value.parameters[0] == VerifierCode.FREE_IRP_IN_USE
    holder.complete()
    assert allocator.statistics().outstanding == 0
    assert master.completed


def test_an_unsent_associated_irp_may_be_freed() -> None:
    master = pended_master()
    parts = make_associated_irps(master, 2, 1)
    assert parts is not None
    free_irp(parts[0])
    master.associated_irp_count -= 1  # the driver's count, the driver's job
    assert associated_irps(master) == [parts[1]]


@pytest.mark.anyio
async def test_a_part_completing_before_the_count_was_set_is_bug_check_2a() -> None:
    holder = Holder()
    lower = make_device(holder)
    master = pended_master()
    part = make_associated_irp(master, lower.stack_size)
    assert part is not None
    await send_irp(lower, fill_read(part))
    with pytest.raises(BugCheck, match="associated_irp_count was 0") as info:
        holder.complete(part)
    assert info.value.code == 0x2A
    assert info.value.irp is master


# -- cancellation -----------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_cancelling_the_master_cancels_the_parts() -> None:
    holder = Holder()
    lower = make_device(holder)
    master = pended_master()
    master.status = STATUS_SUCCESS
    parts = make_associated_irps(master, 3, lower.stack_size)
    assert parts is not None

    arm_master_cancel(master)
    assert master.cancel_routine is cancel_associated_irps
    for part in parts:
        fill_read(part).set_completion_routine(cancelled_fails_master, master)
        await send_irp(lower, part)
    holder.complete(parts[0])  # one part is already done
    assert airp.cancel_irp(master) is True
    assert holder.held == []
    assert all(part.completed for part in parts)
    assert [p.cancel for p in parts] == [False, True, True]
    assert master.completed
    assert master.status == STATUS_CANCELLED


@pytest.mark.anyio
async def test_the_master_cancel_routine_is_disarmed_with_the_last_part() -> None:
    """Otherwise completing the master would be bug check 0xC9 / 0x07."""
    holder = Holder()
    lower = make_device(holder)
    master = pended_master()
    parts = make_associated_irps(master, 2, lower.stack_size)
    assert parts is not None
    arm_master_cancel(master)
    for part in parts:
        await send_irp(lower, fill_read(part))
    holder.complete()
    assert master.cancel_routine is cancel_associated_irps
    holder.complete()
    assert master.completed
    assert master.cancel_routine is None


def test_arming_after_the_master_was_cancelled_cancels_at_once() -> None:
    """The arm-then-recheck rule (reference 6.3)."""
    master = pended_master()
    parts = make_associated_irps(master, 2, 1)
    assert parts is not None
    airp.cancel_irp(master)  # before any cancel routine: only the flag is set
    arm_master_cancel(master)
    assert master.cancel_routine is None
    assert all(part.cancel for part in parts)


def test_arming_needs_parts_and_no_other_cancel_routine() -> None:
    master = pended_master()
    with pytest.raises(IrpStateError, match="no outstanding associated IRPs"):
        arm_master_cancel(master)
    assert make_associated_irps(master, 1, 1) is not None
    master.set_cancel_routine(lambda device, irp: None)
    with pytest.raises(IrpStateError, match="already has cancel routine"):
        arm_master_cancel(master)


@pytest.mark.anyio
async def test_a_cancelled_requester_cancels_a_split_read() -> None:
    """End to end: the requester's task is cancelled while the parts are held below; the wait
    cancels the master, the master's cancel routine cancels the parts, and the master completes."""
    holder = Holder()
    io = airp.IoManager()
    disk = io.create_device(holder, "\\Device\\Held")
    arrived = anyio.Event()
    masters: list[Irp] = []

    class Split(airp.Driver):
        pass_through = True

        @airp.dispatch(IrpMajor.READ)
        async def read(self, device: airp.DeviceObject, irp: Irp) -> int:
            lower = device.lower_device
            assert lower is not None
            masters.append(irp)
            parts = make_associated_irps(irp, 2, lower.stack_size)
            assert parts is not None
            irp.status = STATUS_SUCCESS
            irp.mark_pending()
            arm_master_cancel(irp)
            for part in parts:
                fill_read(part, 8).set_completion_routine(cancelled_fails_master, irp)
                await send_irp(lower, part)
            arrived.set()
            return STATUS_PENDING

    class Open(airp.Driver):
        @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLEANUP, IrpMajor.CLOSE)
        async def ok(self, device: airp.DeviceObject, irp: Irp) -> int:
            complete_request(irp, STATUS_SUCCESS, 0)
            return STATUS_SUCCESS

    holder.set_dispatch(IrpMajor.CREATE, Open().ok)
    holder.set_dispatch(IrpMajor.CLEANUP, Open().ok)
    holder.set_dispatch(IrpMajor.CLOSE, Open().ok)
    top = io.create_device(Split())
    airp.attach_device(top, disk)
    async with io.open("\\Device\\Held") as handle:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(handle.read, 16)
                await arrived.wait()
                assert len(holder.held) == 2
                scope.cancel()
        assert scope.cancelled_caught
    assert holder.held == []
    (master,) = masters
    assert master.completed
    assert master.status == STATUS_CANCELLED
    assert master.cancel_routine is None
