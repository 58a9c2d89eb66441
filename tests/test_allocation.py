"""Driver-allocated IRPs: allocation, lookaside lists, free, reuse, the 5.8 rule and the StackSize rule
(issue #3; reference 2.2 to 2.4, 5.8, 8.3)."""

from __future__ import annotations

import dataclasses
from typing import Any

import anyio
import pytest
from _own_irp_drivers import Completer, Holder, fill_read, make_device, must, take_back
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

import airp
from airp import (
    STATUS_CONTINUE_COMPLETION,
    STATUS_MORE_PROCESSING_REQUIRED,
    STATUS_PENDING,
    STATUS_SUCCESS,
    AllocationFlags,
    BugCheck,
    BugCheckCode,
    Irp,
    IrpAllocator,
    IrpMajor,
    VerifierCode,
    allocate_irp,
    complete_request,
    free_irp,
    reuse_irp,
    send_irp,
)
from airp.testing import VirtualClock, wait_until_quiet

pytestmark = pytest.mark.filterwarnings("error")


def verifier(exc: BugCheck) -> int:
    assert exc.code == BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION
    code: int = exc.parameters[0]
    return code


# -- allocation ----------------------------------------------------------------------------------------


def test_allocation_flags_have_the_windows_values() -> None:
    assert AllocationFlags.QUOTA_CHARGED.value == 0x01
    assert AllocationFlags.ALLOCATED_MUST_SUCCEED.value == 0x02
    assert AllocationFlags.ALLOCATED_FIXED_SIZE.value == 0x04
    assert AllocationFlags.LOOKASIDE_ALLOCATION.value == 0x08
    assert airp.VerifierCode.STACK_LOCATIONS_RUNNING_OUT.value == 0x208


@pytest.mark.parametrize(
    ("stack_size", "charge_quota", "flags"),
    [
        (1, False, AllocationFlags.ALLOCATED_FIXED_SIZE),
        (8, False, AllocationFlags.ALLOCATED_FIXED_SIZE),
        (9, False, 0),
        (127, False, 0),
        (3, True, AllocationFlags.QUOTA_CHARGED),
    ],
)
def test_a_fresh_irp_belongs_to_its_creator(stack_size: int, charge_quota: bool, flags: int) -> None:
    for allocator in (None, IrpAllocator()):
        irp = allocate_irp(stack_size, charge_quota, allocator=allocator)
        assert isinstance(irp, Irp)
        assert irp.stack_count == stack_size
        assert irp.current_location == stack_size + 1  # no current location: with its creator
        assert irp.allocation_flags == flags
        assert irp.owner is None  # charged to no requester (Tail.Overlay.Thread = NULL)
        assert irp.status == STATUS_SUCCESS
        assert not irp.completed


@pytest.mark.parametrize("stack_size", [0, -1, 128, 10_000])
def test_a_stack_size_out_of_range_is_a_clear_error(stack_size: int) -> None:
    with pytest.raises(ValueError, match=r"between 1 and 127 .*StackCount is a CHAR.*got " + str(stack_size)):
        allocate_irp(stack_size)
    with pytest.raises(ValueError, match="between 1 and 127"):
        IrpAllocator().allocate_irp(stack_size)


@pytest.mark.parametrize("stack_size", ["3", 2.0, True, None])
def test_a_stack_size_that_is_not_an_int_is_a_type_error(stack_size: Any) -> None:
    with pytest.raises(TypeError, match="stack_size must be an int"):
        allocate_irp(stack_size)


def test_the_small_list_serves_one_location_irps() -> None:
    allocator = IrpAllocator()
    first = allocator.allocate_irp(1)
    assert first is not None
    stats = allocator.statistics()
    assert (stats.small.total_allocations, stats.small.allocation_misses, stats.small.depth) == (1, 1, 0)
    assert stats.large.total_allocations == 0
    assert stats.pool_allocations == 1
    assert stats.outstanding == 1
    free_irp(first)
    stats = allocator.statistics()
    assert (stats.small.total_frees, stats.small.depth, stats.outstanding) == (1, 1, 0)
    second = allocator.allocate_irp(1)
    assert second is first  # recycled
    stats = allocator.statistics()
    assert (stats.small.total_allocations, stats.small.allocation_misses, stats.small.hits, stats.small.depth) == (2, 1, 1, 0)
    assert stats.pool_allocations == 1


@pytest.mark.parametrize("stack_size", [2, 5, 8])
def test_the_large_list_serves_two_to_eight_locations(stack_size: int) -> None:
    allocator = IrpAllocator()
    irp = allocator.allocate_irp(stack_size)
    assert irp is not None
    free_irp(irp)
    stats = allocator.statistics()
    assert stats.large.depth == 1
    assert stats.small.depth == 0
    assert allocator.allocate_irp(stack_size) is irp


def test_the_large_list_hands_out_only_irps_of_the_requested_size() -> None:
    """Departure (module notes): an airp IRP has exactly stack_count locations."""
    allocator = IrpAllocator()
    three = allocator.allocate_irp(3)
    assert three is not None
    free_irp(three)
    four = allocator.allocate_irp(4)
    assert four is not None
    assert four is not three
    assert four.stack_count == 4
    stats = allocator.statistics()
    assert (stats.large.total_allocations, stats.large.allocation_misses, stats.large.depth) == (2, 2, 1)


@pytest.mark.parametrize(("stack_size", "charge_quota"), [(9, False), (3, True)])
def test_pool_fallback_beyond_eight_locations_and_for_quota(stack_size: int, charge_quota: bool) -> None:
    allocator = IrpAllocator()
    irp = allocator.allocate_irp(stack_size, charge_quota)
    assert irp is not None
    free_irp(irp)
    stats = allocator.statistics()
    assert stats.small.total_allocations == stats.large.total_allocations == 0
    assert (stats.pool_allocations, stats.pool_frees, stats.large.depth, stats.outstanding) == (1, 1, 0, 0)
    assert allocator.allocate_irp(stack_size, charge_quota) is not irp


def test_a_full_list_sends_frees_to_the_pool() -> None:
    allocator = IrpAllocator(small_depth=2, large_depth=0)
    irps = [allocator.allocate_irp(1) for _ in range(3)]
    for irp in irps:
        assert irp is not None
        free_irp(irp)
    stats = allocator.statistics()
    assert (stats.small.depth, stats.small.total_frees, stats.small.free_misses, stats.pool_frees) == (2, 3, 1, 1)
    big = allocator.allocate_irp(2)
    assert big is not None
    free_irp(big)
    assert allocator.statistics().large.free_misses == 1
    assert allocator.trim() == 2
    assert allocator.statistics().small.depth == 0


def test_a_recycled_irp_is_fresh_but_keeps_its_allocation_flags() -> None:
    allocator = IrpAllocator()
    irp = allocator.allocate_irp(2)
    assert irp is not None
    irp.driver_context = "scratch"
    irp.flags = airp.IrpFlags.BUFFERED_IO
    irp.system_buffer = bytearray(10)
    fill_read(irp)
    irp.set_completion_routine(take_back, [])
    irp.cancel = True
    irp.status = airp.STATUS_UNSUCCESSFUL
    free_irp(irp)
    again: Any = allocator.allocate_irp(2)
    assert again is irp
    irp = again  # (the fields were set above: let the checker forget their types)
    assert irp.allocation_flags == AllocationFlags.ALLOCATED_FIXED_SIZE
    assert (irp.driver_context, irp.flags, irp.system_buffer, irp.cancel, irp.status) == (None, 0, None, False, STATUS_SUCCESS)
    assert irp.current_location == 3
    assert irp.next_stack_location.major == 0
    assert irp.next_stack_location.completion_routine is None


def test_statistics_are_frozen_records() -> None:
    stats = IrpAllocator().statistics()
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.outstanding = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.small.depth = 3  # type: ignore[misc]


@pytest.mark.parametrize("depth", [-1, 1.5, "2"])
def test_bad_depths_are_refused(depth: Any) -> None:
    with pytest.raises(ValueError, match="small_depth must be an int >= 0"):
        IrpAllocator(small_depth=depth)


def test_the_allocators_monitor_watches_its_irps_also_after_reuse() -> None:
    monitor = airp.IrpMonitor()
    allocator = IrpAllocator(monitor=monitor)
    irp = allocator.allocate_irp(1)
    assert irp is not None
    assert irp._monitor is monitor
    reuse_irp(irp)
    assert irp._monitor is monitor


# -- freeing ---------------------------------------------------------------------------------------------


def test_freeing_twice_is_bug_check_c9_01() -> None:
    for allocator in (None, IrpAllocator()):
        irp = allocate_irp(1, allocator=allocator)
        assert irp is not None
        free_irp(irp)
        with pytest.raises(BugCheck, match="already freed") as info:
            free_irp(irp)
        assert verifier(info.value) == VerifierCode.FREE_NON_IRP
        assert VerifierCode.FREE_NON_IRP.value == 0x01
        assert info.value.parameters[1] is irp


def test_freeing_something_that_is_not_an_irp_is_bug_check_c9_01() -> None:
    with pytest.raises(BugCheck, match="not an IRP") as info:
        free_irp("an irp")  # type: ignore[arg-type]
    assert verifier(info.value) == 0x01


@pytest.mark.anyio
async def test_freeing_an_irp_a_lower_driver_holds_is_bug_check_c9_20a() -> None:
    holder = Holder()
    lower = make_device(holder)
    irp = fill_read(must(allocate_irp(lower.stack_size)))
    irp.set_completion_routine(take_back, [])
    assert await send_irp(lower, irp) == STATUS_PENDING
    with pytest.raises(BugCheck, match="still in use") as info:
        free_irp(irp)
    assert verifier(info.value) == VerifierCode.FREE_IRP_IN_USE
    assert VerifierCode.FREE_IRP_IN_USE.value == 0x20A
    assert info.value.device is lower
    with pytest.raises(BugCheck) as info:
        reuse_irp(irp)
    assert verifier(info.value) == VerifierCode.REINITIALIZE_IRP_IN_USE
    assert VerifierCode.REINITIALIZE_IRP_IN_USE.value == 0x310
    holder.complete()
    free_irp(irp)  # handed back: now it may go


@pytest.mark.anyio
@pytest.mark.parametrize("own_location", [False, True])
async def test_an_irp_sent_without_a_completion_routine_is_in_use_until_it_comes_back(own_location: bool) -> None:
    # No routine on the lower driver's location: only the creator's location tells that the lower
    # driver holds it.  send_irp records that location.
    holder = Holder(cancelable=False)
    lower = make_device(holder)
    allocator = IrpAllocator()
    irp = must(allocator.allocate_irp(lower.stack_size + own_location))
    if own_location:
        irp.set_next_stack_location()
    fill_read(irp)
    assert await send_irp(lower, irp) == STATUS_PENDING
    with pytest.raises(BugCheck, match="still in use") as info:
        free_irp(irp)
    assert verifier(info.value) == VerifierCode.FREE_IRP_IN_USE
    assert info.value.device is lower
    with pytest.raises(BugCheck) as info:
        reuse_irp(irp)
    assert verifier(info.value) == VerifierCode.REINITIALIZE_IRP_IN_USE
    assert allocator.allocate_irp(irp.stack_count) is not irp
    with pytest.raises(BugCheck) as info:
        holder.complete()  # no routine to stop the walk: the rule of 5.8, on the right IRP
    assert info.value.code == 0x2A
    assert info.value.irp is irp


@pytest.mark.anyio
async def test_an_own_location_irp_handed_back_is_recycled() -> None:
    allocator = IrpAllocator()
    lower = make_device(Completer())
    irp = must(allocator.allocate_irp(lower.stack_size + 1))
    irp.set_next_stack_location()
    fill_read(irp).set_completion_routine(take_back, [])
    await send_irp(lower, irp)
    assert irp.current_location == irp.stack_count  # back at the creator's own location
    free_irp(irp)
    assert allocator.allocate_irp(irp.stack_count) is irp  # provably back: the list kept it


@pytest.mark.anyio
async def test_an_irp_a_forwarding_driver_holds_is_in_use(virtual_clock: VirtualClock) -> None:
    """Sent to a filter that forwards it synchronously and keeps it: held below the creator."""
    release = anyio.Event()

    class Keeper(airp.Driver):
        def __init__(self) -> None:
            super().__init__("keeper")
            self.set_dispatch(IrpMajor.READ, self.read)

        async def read(self, device: airp.DeviceObject, irp: Irp) -> int:
            assert device.lower_device is not None
            await airp.forward_and_wait(device.lower_device, irp)  # back at the filter's location
            await release.wait()
            complete_request(irp)
            return STATUS_SUCCESS

    io = airp.IoManager()
    bottom = io.create_device(Completer())
    top = io.create_device(Keeper())
    airp.attach_device(top, bottom)
    irp = fill_read(must(allocate_irp(top.stack_size)))
    back: list[Any] = []
    irp.set_completion_routine(take_back, back)
    async with anyio.create_task_group() as tg:
        tg.start_soon(send_irp, top, irp)
        await wait_until_quiet()
        assert irp.current_location == irp.stack_count  # the filter's location, no routine on it
        with pytest.raises(BugCheck) as info:
            free_irp(irp)
        assert verifier(info.value) == VerifierCode.FREE_IRP_IN_USE
        assert info.value.device is top
        release.set()
    assert back == [(None, STATUS_SUCCESS)]
    free_irp(irp)


def test_an_own_location_irp_may_be_freed_before_it_is_sent() -> None:
    # No false alarm: the creator's own location, never sent, is the creator's to free.
    allocator = IrpAllocator()
    me = make_device(Completer())
    irp = must(allocator.allocate_irp(3))
    irp.set_next_stack_location()
    irp.current_stack_location.device = me
    free_irp(irp)
    # Whose location is current cannot be told without a send, so the list does not keep it.
    assert allocator.statistics().large.depth == 0
    assert allocator.statistics().outstanding == 0


@pytest.mark.anyio
async def test_a_held_irp_sent_with_plain_call_driver_is_never_handed_out_again() -> None:
    # Plain call_driver, no routine, no own location: free_irp cannot tell (see its docstring),
    # but the lookaside list keeps the object out of circulation, so the late completion lands on
    # the IRP that was sent and on no other.
    holder = Holder(cancelable=False)
    lower = make_device(holder)
    allocator = IrpAllocator()
    irp = fill_read(must(allocator.allocate_irp(lower.stack_size)))
    await airp.call_driver(lower, irp)
    free_irp(irp)
    assert allocator.statistics().small.depth == 0
    fresh = must(allocator.allocate_irp(lower.stack_size))
    assert fresh is not irp
    with pytest.raises(BugCheck) as info:
        holder.complete()
    assert info.value.code == 0x2A
    assert info.value.irp is irp
    assert fresh.current_location == fresh.stack_count + 1


def test_freeing_an_irp_with_a_cancel_routine_set_is_bug_check_c9_20a() -> None:
    irp = must(allocate_irp(1))
    irp.set_cancel_routine(lambda device, irp: None)
    with pytest.raises(BugCheck, match="cancel routine is still set") as info:
        free_irp(irp)
    assert verifier(info.value) == 0x20A
    with pytest.raises(BugCheck, match="cancel routine is still set") as info:
        reuse_irp(irp)
    assert verifier(info.value) == 0x310


@pytest.mark.anyio
async def test_a_request_from_above_is_not_the_drivers_to_free_or_reuse() -> None:
    caught: list[BugCheck] = []

    class Greedy(airp.Driver):
        @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLEANUP, IrpMajor.CLOSE, IrpMajor.READ)
        async def any(self, device: airp.DeviceObject, irp: Irp) -> int:
            if irp.current_stack_location.major == IrpMajor.READ:
                for attempt in (free_irp, reuse_irp):
                    try:
                        attempt(irp)
                    except BugCheck as exc:
                        caught.append(exc)
            complete_request(irp, STATUS_SUCCESS, 0)
            return STATUS_SUCCESS

    io = airp.IoManager()
    io.create_device(Greedy(), "\\Device\\Greedy")
    async with io.open("\\Device\\Greedy") as handle:
        await handle.read(4)
    assert [verifier(exc) for exc in caught] == [VerifierCode.FREE_IRP_ON_THREAD, VerifierCode.REUSE_NOT_ALLOCATED_IRP]


def test_bare_irps_may_be_freed_and_reused() -> None:
    """``Irp(n)`` and ``IoManager.allocate_irp`` are plain allocations by the driver."""
    for irp in (Irp(2), airp.IoManager().new_traced_irp(2)):
        irp.driver_context = 1
        reuse_irp(irp, airp.STATUS_UNSUCCESSFUL)
        assert irp.status == airp.STATUS_UNSUCCESSFUL
        assert irp.driver_context is None
        free_irp(irp)
        with pytest.raises(BugCheck):
            free_irp(irp)


# -- reuse ----------------------------------------------------------------------------------------------


def test_reuse_resets_everything_but_the_allocation_flags() -> None:
    irp = must(allocate_irp(3, True))
    irp.set_next_stack_location()
    irp.mark_pending()
    irp.information = 99
    irp.cancel = True
    irp.user_buffer = bytearray(3)
    reuse_irp(irp, airp.STATUS_TIMEOUT)
    assert irp.allocation_flags == AllocationFlags.QUOTA_CHARGED
    assert irp.status == airp.STATUS_TIMEOUT
    assert irp.information == 0
    assert (irp.cancel, irp.user_buffer, irp.current_location, irp.pending_returned) == (False, None, 4, False)
    assert irp.stack_location(3).control == 0


def test_reusing_a_freed_irp_is_refused() -> None:
    irp = must(allocate_irp(1))
    free_irp(irp)
    with pytest.raises(BugCheck, match="has been freed") as info:
        reuse_irp(irp)
    assert verifier(info.value) == VerifierCode.REUSE_NOT_ALLOCATED_IRP


assert VerifierCode.REUSE_NOT_ALLOCATED_IRP.value == 0x311


def test_reuse_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match="reuse_irp takes an Irp"):
        reuse_irp(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="status must be"):
        reuse_irp(Irp(1), "ok")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_an_irp_reused_from_its_completion_routine_can_be_sent_again() -> None:
    completer = Completer(information=5)
    lower = make_device(completer)
    irp = must(allocate_irp(1))
    rounds: list[int] = []

    def again(device: airp.DeviceObject | None, irp: Irp, context: Any) -> int:
        rounds.append(irp.information)
        reuse_irp(irp)
        return STATUS_MORE_PROCESSING_REQUIRED

    for _ in range(3):
        fill_read(irp)
        irp.set_completion_routine(again)
        assert await send_irp(lower, irp) == STATUS_SUCCESS
    assert rounds == [5, 5, 5]
    assert irp.information == 0
    assert irp.current_location == 2
    free_irp(irp)


# -- the rule of 5.8 ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_creator_routine_that_continues_the_walk_is_bug_check_2a() -> None:
    lower = make_device(Completer())
    irp = fill_read(must(allocate_irp(1, allocator=IrpAllocator())))

    def forgets_the_rule(device: airp.DeviceObject | None, irp: Irp, context: Any) -> int:
        return STATUS_CONTINUE_COMPLETION

    irp.set_completion_routine(forgets_the_rule)
    with pytest.raises(BugCheck, match="STATUS_MORE_PROCESSING_REQUIRED") as info:
        await send_irp(lower, irp)
    exc = info.value
    assert exc.code == BugCheckCode.INCONSISTENT_IRP
    assert BugCheckCode.INCONSISTENT_IRP.value == 0x2A
    assert exc.parameters[0] is irp
    assert exc.irp is irp
    assert "forgets_the_rule" in str(exc)
    assert "reference 5.8" in str(exc)


@pytest.mark.anyio
async def test_a_driver_irp_sent_without_completion_routine_is_bug_check_2a() -> None:
    lower = make_device(Completer())
    irp = fill_read(must(allocate_irp(1)))
    with pytest.raises(BugCheck, match="No completion routine was set") as info:
        await send_irp(lower, irp)
    assert info.value.code == 0x2A


@pytest.mark.anyio
async def test_the_bug_check_is_raised_where_the_irp_is_completed() -> None:
    """A pended IRP: the lower driver's complete_request raises, at the creator routine's return."""
    holder = Holder(cancelable=False)
    lower = make_device(holder)
    irp = fill_read(must(allocate_irp(1)))
    irp.set_completion_routine(lambda device, irp, context: STATUS_SUCCESS)
    await airp.call_driver(lower, irp)  # plain call_driver: the rule holds all the same
    with pytest.raises(BugCheck, match=r"Its completion routine .*<lambda> returned STATUS_CONTINUE_COMPLETION") as info:
        complete_request(holder.held.pop(), STATUS_SUCCESS, 0)
    assert info.value.code == 0x2A


@pytest.mark.anyio
async def test_the_rule_also_holds_for_a_creator_with_its_own_location() -> None:
    lower = make_device(Completer())
    me = make_device(Completer())
    calls: list[Any] = []

    def mine(device: airp.DeviceObject | None, irp: Irp, context: Any) -> int:
        calls.append(device)
        if irp.pending_returned:
            irp.mark_pending()  # legal: the creator has a location
        return STATUS_MORE_PROCESSING_REQUIRED

    irp = must(allocate_irp(lower.stack_size + 1))
    irp.set_next_stack_location()
    irp.current_stack_location.device = me
    fill_read(irp).set_completion_routine(mine)
    await send_irp(lower, irp)
    assert calls == [me]  # the creator's routine gets its own device, not None
    free_irp(irp)

    irp = must(allocate_irp(lower.stack_size + 1))
    irp.set_next_stack_location()
    fill_read(irp).set_completion_routine(lambda device, irp, context: STATUS_CONTINUE_COMPLETION)
    with pytest.raises(BugCheck) as info:
        await send_irp(lower, irp)
    assert info.value.code == 0x2A


@pytest.mark.anyio
async def test_completing_a_taken_back_irp_again_is_bug_check_2a() -> None:
    lower = make_device(Completer())
    irp = fill_read(must(allocate_irp(1)))
    irp.set_completion_routine(take_back, [])
    await send_irp(lower, irp)
    with pytest.raises(BugCheck, match="completed the IRP again") as info:
        complete_request(irp)
    assert info.value.code == 0x2A


# -- sending: the StackSize rule ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_an_irp_too_small_for_its_target_is_refused_at_the_send() -> None:
    io = airp.IoManager()
    bottom = io.create_device(Completer())
    top = io.create_device(Completer())
    airp.attach_device(top, bottom)
    irp = must(allocate_irp(1))
    with pytest.raises(BugCheck, match=r"has 1 stack location\(s\) left .* needs 2") as info:
        await send_irp(top, irp)
    exc = info.value
    assert verifier(exc) == VerifierCode.STACK_LOCATIONS_RUNNING_OUT
    assert VerifierCode.STACK_LOCATIONS_RUNNING_OUT.value == 0x208
    assert exc.parameters[1:] == (irp, 2, 1)
    assert exc.device is top
    # A creator that keeps its own location needs one more.
    irp = must(allocate_irp(2))
    irp.set_next_stack_location()
    with pytest.raises(BugCheck):
        await send_irp(top, irp)
    irp = must(allocate_irp(3))
    irp.set_next_stack_location()
    fill_read(irp).set_completion_routine(take_back, [])
    assert await send_irp(top, irp) == STATUS_SUCCESS


@pytest.mark.anyio
async def test_sending_a_freed_irp_is_bug_check_c9_03() -> None:
    lower = make_device(Completer())
    irp = fill_read(must(allocate_irp(1)))
    free_irp(irp)
    with pytest.raises(BugCheck, match="has been freed") as info:
        await send_irp(lower, irp)
    assert verifier(info.value) == VerifierCode.CALL_DRIVER_NON_IRP


@pytest.mark.anyio
async def test_the_canonical_shape_free_in_the_routine() -> None:
    """Seed 002's shape: the routine frees the IRP and returns SMPR; the list recycles it."""
    lower = make_device(Completer(information=3))
    allocator = IrpAllocator()
    seen: list[int] = []

    def done(device: airp.DeviceObject | None, irp: Irp, context: Any) -> int:
        seen.append(irp.information)
        free_irp(irp)
        return STATUS_MORE_PROCESSING_REQUIRED

    for _ in range(10):
        irp = fill_read(must(allocator.allocate_irp(lower.stack_size)))
        irp.set_completion_routine(done)
        await send_irp(lower, irp)
    stats = allocator.statistics()
    assert seen == [3] * 10
    assert (stats.pool_allocations, stats.small.hits, stats.outstanding, stats.small.depth) == (1, 9, 0, 1)


# -- the lookaside lists as a state machine ---------------------------------------------------------------


class LookasideMachine(RuleBasedStateMachine):
    """Any sequence of allocations, frees and reuses keeps the statistics consistent."""

    live = Bundle("live")

    def __init__(self) -> None:
        super().__init__()
        self.allocator = IrpAllocator(small_depth=3, large_depth=4)
        self.out: list[Irp] = []
        self.allocations = 0
        self.frees = 0
        self.created: set[int] = set()
        self.objects: list[Irp] = []  # keep every IRP alive so ids stay unique

    @rule(target=live, stack_size=st.integers(1, 10), quota=st.booleans())
    def allocate(self, stack_size: int, quota: bool) -> Irp:
        irp = self.allocator.allocate_irp(stack_size, quota)
        assert irp is not None
        assert all(irp is not other for other in self.out), "an IRP was handed out twice"
        assert irp.stack_count == stack_size
        assert irp.current_location == stack_size + 1
        self.out.append(irp)
        self.allocations += 1
        if id(irp) not in self.created:
            self.created.add(id(irp))
            self.objects.append(irp)
        return irp

    @rule(irp=consumes(live))
    def free(self, irp: Irp) -> None:
        free_irp(irp)
        self.out.remove(irp)
        self.frees += 1

    @rule(irp=live)
    def reuse(self, irp: Irp) -> None:
        flags = irp.allocation_flags
        irp.driver_context = "x"
        reuse_irp(irp)
        assert irp.allocation_flags == flags
        assert irp.driver_context is None

    @invariant()
    def statistics_are_consistent(self) -> None:
        stats = self.allocator.statistics()
        assert stats.outstanding == len(self.out)
        for lookaside in (stats.small, stats.large):
            assert 0 <= lookaside.depth <= lookaside.maximum_depth
            assert lookaside.hits + lookaside.allocation_misses == lookaside.total_allocations
            assert lookaside.free_misses <= lookaside.total_frees
        idle = [irp for lookaside in (self.allocator._small, self.allocator._large) for bin in lookaside.idle.values() for irp in bin]
        assert len(idle) == stats.small.depth + stats.large.depth
        assert not {id(irp) for irp in idle} & {id(irp) for irp in self.out}
        # Every IRP ever created is out, idle, or was given to the pool.
        assert stats.pool_allocations == len(self.created)
        assert stats.pool_allocations - stats.pool_frees == len(self.out) + len(idle)
        assert stats.small.hits + stats.large.hits + stats.pool_allocations == self.allocations


TestLookasideMachine = LookasideMachine.TestCase
TestLookasideMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


@pytest.mark.anyio
async def test_a_timed_out_own_irp_is_cancelled_waited_for_and_freed() -> None:
    """Reference 6.7: send with an SMPR routine, time out, cancel, wait for the hand-back, free."""
    holder = Holder()
    lower = make_device(holder)
    allocator = IrpAllocator()
    irp = fill_read(must(allocator.allocate_irp(lower.stack_size)))
    with anyio.move_on_after(5) as scope:
        await airp.call_driver_and_wait(lower, irp)
    assert scope.cancelled_caught
    assert irp.status == airp.STATUS_CANCELLED
    assert holder.held == []
    free_irp(irp)  # handed back: the creator frees it
    assert allocator.statistics().outstanding == 0
