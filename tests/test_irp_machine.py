"""The IRP and the stack-location macros, without any event loop (reference sections 1.3 and 4).

Plain synchronous tests: the IRP machine is sans-I/O, so nothing here runs anyio.
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from typing import Any

import pytest

import airp
from airp import (
    STATUS_CONTINUE_COMPLETION,
    STATUS_SUCCESS,
    BugCheck,
    BugCheckCode,
    DeviceObject,
    Driver,
    FileObject,
    Irp,
    IrpMajor,
    IrpStateError,
    ReadWriteParameters,
    StackControl,
)

PENDING = int(StackControl.PENDING_RETURNED)
ON_SUCCESS = int(StackControl.INVOKE_ON_SUCCESS)
ON_ERROR = int(StackControl.INVOKE_ON_ERROR)
ON_CANCEL = int(StackControl.INVOKE_ON_CANCEL)


def routine(device: DeviceObject | None, irp: Irp, context: Any) -> int:
    return STATUS_CONTINUE_COMPLETION


def other_routine(device: DeviceObject | None, irp: Irp, context: Any) -> int:
    return STATUS_CONTINUE_COMPLETION


def cancel_routine(device: DeviceObject | None, irp: Irp) -> None:
    pass


def make_device(name: str = "dev") -> DeviceObject:
    return DeviceObject(Driver(name), name)


# -- geometry (1.3) -----------------------------------------------------------------------------


@pytest.mark.parametrize("stack_size", [1, 2, 3, 8, 127])
def test_fresh_irp_has_no_current_location(stack_size: int) -> None:
    """1.3 / 2.1: a fresh IRP has CurrentLocation = StackCount + 1 and belongs to its creator."""
    irp = Irp(stack_size)
    assert irp.stack_count == stack_size
    assert irp.current_location == stack_size + 1
    assert not irp.completed
    assert irp.io_status == (STATUS_SUCCESS, 0)
    assert irp.pending_returned is False
    assert irp.cancel is False
    assert irp.cancel_routine is None
    assert irp.master_irp is None
    assert irp._waiter is None
    assert irp._monitor is None
    with pytest.raises(IrpStateError, match="has no current stack location"):
        _ = irp.current_stack_location


@pytest.mark.parametrize("stack_size", [1, 3, 8])
def test_next_location_of_fresh_irp_is_the_last_element(stack_size: int) -> None:
    """1.3: the creator fills the "next" location, element StackCount - 1, i.e. location StackCount."""
    irp = Irp(stack_size)
    assert irp.next_stack_location is irp.stack_location(stack_size)


def test_stack_locations_are_distinct_and_fresh() -> None:
    """1.2: every location starts zeroed: no major, no control bits, no routine, no device."""
    irp = Irp(3)
    locations = [irp.stack_location(n) for n in (1, 2, 3)]
    assert len({id(loc) for loc in locations}) == 3
    for loc in locations:
        assert (loc.major, loc.minor, loc.flags, loc.control) == (0, 0, 0, 0)
        assert loc.parameters is None
        assert loc.device is None
        assert loc.file_object is None
        assert loc.completion_routine is None
        assert loc.completion_context is None


@pytest.mark.parametrize("number", [0, 4, -1])
def test_stack_location_numbers_are_one_based(number: int) -> None:
    """1.3: locations are numbered 1..StackCount, as CurrentLocation counts."""
    with pytest.raises(IndexError, match=r"this IRP has locations 1\.\.3"):
        Irp(3).stack_location(number)


@pytest.mark.parametrize("bad", [0, 128, -1, 1000])
def test_irp_stack_size_out_of_range_is_value_error(bad: int) -> None:
    """1.1: StackCount is a CHAR: 1..127 locations."""
    with pytest.raises(ValueError, match="stack_size must be between 1 and 127"):
        Irp(bad)


@pytest.mark.parametrize("bad", ["4", True, False, 4.0, None])
def test_irp_stack_size_of_wrong_type_is_type_error(bad: object) -> None:
    """1.1: the stack size is an int; a bool or a str is refused, not coerced."""
    with pytest.raises(TypeError, match="stack_size must be an int"):
        Irp(bad)  # type: ignore[arg-type]


# -- next / current / set-next (4) --------------------------------------------------------------


def test_set_next_stack_location_moves_current_down_one() -> None:
    """4 IoSetNextIrpStackLocation: CurrentLocation -= 1; the creator now has a location of its own."""
    irp = Irp(3)
    irp.set_next_stack_location()
    assert irp.current_location == 3
    assert irp.current_stack_location is irp.stack_location(3)
    assert irp.next_stack_location is irp.stack_location(2)
    irp.set_next_stack_location()
    irp.set_next_stack_location()
    assert irp.current_location == 1
    assert irp.current_stack_location is irp.stack_location(1)


def test_lowest_location_has_no_next() -> None:
    """3, 4 IoGetNextIrpStackLocation: at location 1 there is no location below: bug check 0x35."""
    irp = Irp(1)
    irp.set_next_stack_location()
    with pytest.raises(BugCheck, match="no location left for a lower driver") as info:
        _ = irp.next_stack_location
    assert info.value.code == BugCheckCode.NO_MORE_IRP_STACK_LOCATIONS
    with pytest.raises(BugCheck, match="set_next_stack_location") as info:
        irp.set_next_stack_location()
    assert info.value.code == BugCheckCode.NO_MORE_IRP_STACK_LOCATIONS


def test_next_stack_location_is_a_pure_read() -> None:
    """4: IoGetNextIrpStackLocation changes nothing."""
    irp = Irp(2)
    loc = irp.next_stack_location
    assert irp.next_stack_location is loc
    assert irp.current_location == 3


# -- skip (4) -------------------------------------------------------------------------------------


def test_skip_then_call_gives_lower_driver_the_same_location() -> None:
    """4 IoSkipCurrentIrpStackLocation: +1, so the following IoCallDriver's -1 reuses this location."""
    irp = Irp(3)
    irp.set_next_stack_location()  # as if call_driver to the top: location 3
    irp.set_next_stack_location()  # the top forwarded with copy: location 2
    mine = irp.current_stack_location
    irp.skip_current_stack_location()
    assert irp.current_location == 3
    assert irp.next_stack_location is mine
    irp.set_next_stack_location()  # what call_driver does next
    assert irp.current_stack_location is mine


def test_skip_without_current_location_is_refused() -> None:
    """4: skip asserts CurrentLocation <= StackCount: a creator has no location to skip."""
    irp = Irp(2)
    with pytest.raises(IrpStateError, match="cannot skip"):
        irp.skip_current_stack_location()
    irp.set_next_stack_location()
    irp.skip_current_stack_location()
    with pytest.raises(IrpStateError, match="cannot skip"):
        irp.skip_current_stack_location()


# -- copy to next (4) -----------------------------------------------------------------------------


def test_copy_to_next_copies_request_fields() -> None:
    """4 IoCopyCurrentIrpStackLocationToNext: major, minor, flags, parameters, device, file object."""
    device = make_device()
    irp = Irp(2)
    irp.set_next_stack_location()
    src = irp.current_stack_location
    src.major = IrpMajor.READ
    src.minor = 7
    src.flags = 0x5
    src.parameters = ReadWriteParameters(length=512, byte_offset=4096, key=3)
    src.device = device
    src.file_object = FileObject(device)
    irp.copy_current_stack_location_to_next()
    dst = irp.next_stack_location
    assert dst is not src
    assert (dst.major, dst.minor, dst.flags) == (IrpMajor.READ, 7, 0x5)
    assert dst.parameters == ReadWriteParameters(length=512, byte_offset=4096, key=3)
    assert dst.device is device
    assert dst.file_object is src.file_object


def test_copy_to_next_clears_control_routine_and_context() -> None:
    """4: the next location's Control is zeroed and the upper routine is not copied (Verifier 0x206/0x207)."""
    irp = Irp(3)
    irp.set_next_stack_location()
    irp.set_completion_routine(routine, "upper context")  # on location 2, belongs to location 3
    irp.set_next_stack_location()
    irp.mark_pending()
    src = irp.current_stack_location
    assert src.control == PENDING | ON_SUCCESS | ON_ERROR | ON_CANCEL
    stale = irp.next_stack_location
    stale.control = ON_SUCCESS | PENDING
    stale.completion_routine = other_routine
    stale.completion_context = "stale"
    irp.copy_current_stack_location_to_next()
    assert stale.control == 0
    assert stale.completion_routine is None
    assert stale.completion_context is None
    # The source location is untouched: its routine still belongs to the driver above.
    assert src.completion_routine is routine
    assert src.completion_context == "upper context"
    assert src.control == PENDING | ON_SUCCESS | ON_ERROR | ON_CANCEL


def test_parameters_are_frozen_so_copies_can_share_them() -> None:
    """4: the C macro copies Parameters by value; frozen records make sharing them equivalent."""
    params = ReadWriteParameters(length=1)
    with pytest.raises(FrozenInstanceError):
        params.length = 2  # type: ignore[misc]


def test_copy_to_next_needs_a_current_location_with_one_below() -> None:
    """4: copy needs a current location (IrpStateError) and a next one (bug check 0x35, reference 3)."""
    irp = Irp(1)
    with pytest.raises(IrpStateError, match="cannot copy to next"):
        irp.copy_current_stack_location_to_next()
    irp.set_next_stack_location()
    with pytest.raises(BugCheck, match="copy_current_stack_location_to_next") as info:
        irp.copy_current_stack_location_to_next()
    assert info.value.code == BugCheckCode.NO_MORE_IRP_STACK_LOCATIONS


# -- completion routines (4) ------------------------------------------------------------------------


@pytest.mark.parametrize("on_success", [True, False])
@pytest.mark.parametrize("on_error", [True, False])
@pytest.mark.parametrize("on_cancel", [True, False])
def test_set_completion_routine_sets_invoke_flags_on_next(on_success: bool, on_error: bool, on_cancel: bool) -> None:
    """4 IoSetCompletionRoutine: routine and context on the next location; Control = the INVOKE_* bits."""
    irp = Irp(2)
    irp.set_next_stack_location()
    nxt = irp.next_stack_location
    nxt.control = PENDING  # overwritten: Control is reset to the invoke flags
    irp.set_completion_routine(routine, 42, on_success=on_success, on_error=on_error, on_cancel=on_cancel)
    expected = (ON_SUCCESS if on_success else 0) | (ON_ERROR if on_error else 0) | (ON_CANCEL if on_cancel else 0)
    assert nxt.control == expected
    assert nxt.completion_routine is routine
    assert nxt.completion_context == 42
    assert irp.current_stack_location.control == 0


def test_set_completion_routine_defaults_to_all_three_flags() -> None:
    """4: the usual call passes TRUE, TRUE, TRUE."""
    irp = Irp(1)
    irp.set_completion_routine(routine)
    assert irp.next_stack_location.control == ON_SUCCESS | ON_ERROR | ON_CANCEL
    assert irp.next_stack_location.completion_context is None


def test_creator_may_set_a_completion_routine_on_a_fresh_irp() -> None:
    """5.8: a creator's routine sits in the top location (the fresh IRP's next location)."""
    irp = Irp(2)
    irp.set_completion_routine(routine)
    assert irp.stack_location(2).completion_routine is routine


def test_set_completion_routine_rejects_non_callable() -> None:
    """4: a completion routine is a function."""
    irp = Irp(1)
    with pytest.raises(TypeError, match="a completion routine must be a plain function"):
        irp.set_completion_routine("not a function")  # type: ignore[arg-type]


def test_set_completion_routine_needs_a_next_location() -> None:
    """4: the lowest driver has no next location to put a routine in: bug check 0x35."""
    irp = Irp(1)
    irp.set_next_stack_location()
    with pytest.raises(BugCheck, match="set_completion_routine") as info:
        irp.set_completion_routine(routine)
    assert info.value.code == BugCheckCode.NO_MORE_IRP_STACK_LOCATIONS


# -- mark pending (4) --------------------------------------------------------------------------------


def test_mark_pending_sets_pending_returned_on_current_location_only() -> None:
    """4 IoMarkIrpPending: Control |= SL_PENDING_RETURNED on the current location; other bits kept."""
    irp = Irp(3)
    irp.set_next_stack_location()
    irp.set_completion_routine(routine, on_success=True, on_error=False, on_cancel=False)
    irp.set_next_stack_location()
    irp.mark_pending()
    assert irp.stack_location(2).control == ON_SUCCESS | PENDING
    assert irp.stack_location(1).control == 0
    assert irp.stack_location(3).control == 0
    assert irp.pending_returned is False  # PendingReturned is computed by the completion walk only
    irp.mark_pending()
    assert irp.stack_location(2).control == ON_SUCCESS | PENDING


def test_mark_pending_needs_a_current_location() -> None:
    """5.4 / 5.8: a creator has no location, so it may not mark its own IRP pending."""
    with pytest.raises(IrpStateError, match="cannot mark pending"):
        Irp(2).mark_pending()


# -- cancel routine exchange (4) ----------------------------------------------------------------------


def test_set_cancel_routine_is_an_exchange() -> None:
    """4 IoSetCancelRoutine: swap in the new routine, return the old one."""
    irp = Irp(1)
    assert irp.set_cancel_routine(cancel_routine) is None
    assert irp.cancel_routine is cancel_routine

    def second(device: DeviceObject | None, irp: Irp) -> None:
        pass

    assert irp.set_cancel_routine(second) is cancel_routine
    assert irp.set_cancel_routine(None) is second
    assert irp.cancel_routine is None
    assert irp.set_cancel_routine(None) is None


def test_set_cancel_routine_rejects_coroutine_functions() -> None:
    """12.1: cancel routines run synchronously inside cancel_irp and cannot await."""

    async def async_cancel(device: DeviceObject | None, irp: Irp) -> None:
        pass

    irp = Irp(1)
    with pytest.raises(TypeError, match="cannot await"):
        irp.set_cancel_routine(async_cancel)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="a cancel routine must be a plain function"):
        irp.set_cancel_routine(5)  # type: ignore[arg-type]
    assert irp.cancel_routine is None


# -- completed IRPs and misc ---------------------------------------------------------------------------


def test_completed_irp_has_no_locations_to_use() -> None:
    """1.1: CurrentLocation = StackCount + 2 once completed; the macros refuse to touch it."""
    irp = Irp(2)
    irp.set_next_stack_location()
    airp.complete_request(irp, STATUS_SUCCESS)
    assert irp.completed
    assert irp.current_location == 4
    with pytest.raises(IrpStateError):
        _ = irp.current_stack_location
    with pytest.raises(IrpStateError):
        _ = irp.next_stack_location
    with pytest.raises(IrpStateError):
        irp.skip_current_stack_location()
    with pytest.raises(IrpStateError):
        irp.mark_pending()
    with pytest.raises(IrpStateError):
        irp.set_next_stack_location()
    with pytest.raises(IrpStateError):
        irp.set_completion_routine(routine)


def test_irp_repr_shows_its_state() -> None:
    """1.1: the state an IRP is in: with its creator, at a location, or completed."""
    irp = Irp(3)
    assert "with its creator" in repr(irp)
    irp.next_stack_location.major = IrpMajor.READ
    irp.set_next_stack_location()
    assert "READ at location 3/3" in repr(irp)
    airp.complete_request(irp, airp.STATUS_CANCELLED)
    assert "completed STATUS_CANCELLED" in repr(irp)


def test_irp_state_error_is_a_runtime_error() -> None:
    """IrpStateError is misuse that Windows would not bug check for: a RuntimeError."""
    assert issubclass(IrpStateError, RuntimeError)
