"""IoCompleteRequest: the synchronous upward walk (reference section 5), without an event loop.

IRPs are moved down the stack by hand (``set_next_stack_location`` plus the device, exactly what
``call_driver`` does) or through real drivers whose dispatch routines never suspend, driven by a
single ``coro.send(None)``.
"""

from __future__ import annotations

import gc
import traceback
import warnings
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airp import (
    STATUS_BUFFER_OVERFLOW,
    STATUS_CANCELLED,
    STATUS_CONTINUE_COMPLETION,
    STATUS_DEVICE_NOT_READY,
    STATUS_INTERNAL_ERROR,
    STATUS_MORE_PROCESSING_REQUIRED,
    STATUS_PENDING,
    STATUS_SUCCESS,
    STATUS_UNSUCCESSFUL,
    BugCheck,
    DeviceObject,
    Driver,
    Irp,
    IrpMajor,
    IrpStateError,
    ReadWriteParameters,
    StackControl,
    attach_device,
    call_driver,
    cancel_irp,
    complete_request,
    dispatch,
    pass_down,
)

T = TypeVar("T")
Routine = Callable[[DeviceObject | None, Irp, Any], int]

PENDING_BIT = int(StackControl.PENDING_RETURNED)
INFORMATIONAL = 0x4000_0001


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that must never suspend (synchronous dispatch) to its end."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coro.close()
    raise AssertionError("the coroutine suspended: a synchronous dispatch chain must never reach the event loop")


def make_device(name: str) -> DeviceObject:
    return DeviceObject(Driver(name), name)


def descend(irp: Irp, device: DeviceObject | None = None) -> None:
    """What call_driver does before dispatching: move to the next location and record the device."""
    irp.set_next_stack_location()
    irp.current_stack_location.device = device


class FakeWaker:
    """Stands in for the anyio Event of a waiting requester: the walk only calls ``set()``."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def set(self) -> None:
        self.log.append("wake")


@dataclass
class Seen:
    """What a recording completion routine observed each time it ran."""

    calls: list[tuple[str, bool, DeviceObject | None, int]] = field(default_factory=list)

    def routine(self, label: str, result: int = STATUS_CONTINUE_COMPLETION, *, propagate: bool = False) -> Routine:
        def completion(device: DeviceObject | None, irp: Irp, context: Any) -> int:
            self.calls.append((label, irp.pending_returned, device, irp.current_location))
            if propagate and irp.pending_returned:
                irp.mark_pending()
            return result

        completion.__name__ = f"routine_{label}"
        return completion

    @property
    def labels(self) -> list[str]:
        return [call[0] for call in self.calls]


# -- entry checks (5.1) -------------------------------------------------------------------------


def test_complete_request_sets_status_and_information_and_finishes() -> None:
    """5.2: the walk ends with CurrentLocation = StackCount + 2 and IoStatus as given."""
    irp = Irp(3)
    for name in ("a", "b", "c"):
        descend(irp, make_device(name))
    complete_request(irp, STATUS_SUCCESS, 512)
    assert irp.completed
    assert irp.current_location == 5
    assert irp.io_status == (STATUS_SUCCESS, 512)
    assert irp.pending_returned is False


def test_complete_request_without_arguments_keeps_the_status_the_driver_stored() -> None:
    """5.1: IoCompleteRequest does not touch IoStatus; the driver fills it in first."""
    irp = Irp(1)
    descend(irp)
    irp.status = STATUS_DEVICE_NOT_READY
    irp.information = 3
    complete_request(irp)
    assert irp.io_status == (STATUS_DEVICE_NOT_READY, 3)
    assert type(irp.io_status.status).__name__ == "NtStatus"


def test_double_completion_is_bug_check_0x44() -> None:
    """5.1: CurrentLocation > StackCount + 1 at entry -> MULTIPLE_IRP_COMPLETE_REQUESTS (0x44), P1 = IRP."""
    irp = Irp(2)
    descend(irp)
    complete_request(irp, STATUS_SUCCESS)
    with pytest.raises(BugCheck, match="completed twice") as info:
        complete_request(irp, STATUS_SUCCESS)
    assert info.value.code == 0x44
    assert info.value.parameters[0] is irp
    assert info.value.irp is irp
    assert irp.current_location == 4


@pytest.mark.parametrize("status", [STATUS_PENDING, 0xFFFF_FFFF])
def test_completing_with_pending_status_is_bug_check_c9_06(status: int) -> None:
    """5.1 / 10.2: IoCompleteRequest with STATUS_PENDING or -1 -> 0xC9, P1 = 0x06, P2 = status."""
    seen = Seen()
    irp = Irp(2)
    descend(irp)
    irp.set_completion_routine(seen.routine("upper"))
    descend(irp)
    with pytest.raises(BugCheck, match="STATUS_PENDING is what a dispatch routine returns") as info:
        complete_request(irp, status)
    assert info.value.code == 0xC9
    assert info.value.parameters[0] == 0x06
    assert info.value.parameters[1] == status
    assert info.value.parameters[2] is irp
    assert not irp.completed
    assert irp.current_location == 1
    assert seen.calls == []


def test_completing_with_cancel_routine_set_is_bug_check_c9_07() -> None:
    """5.1 / 6.3: the cancel routine must be disarmed before IoCompleteRequest -> 0xC9, P1 = 0x07."""

    def on_cancel(device: DeviceObject | None, irp: Irp) -> None:
        pass

    seen = Seen()
    irp = Irp(2)
    descend(irp)
    irp.set_completion_routine(seen.routine("upper"))
    descend(irp)
    irp.set_cancel_routine(on_cancel)
    with pytest.raises(BugCheck, match="disarm it") as info:
        complete_request(irp, STATUS_CANCELLED)
    assert info.value.code == 0xC9
    assert info.value.parameters[:3] == (0x07, on_cancel, irp)
    assert not irp.completed
    assert seen.calls == []
    irp.set_cancel_routine(None)
    complete_request(irp)
    assert irp.completed
    assert seen.labels == ["upper"]


@pytest.mark.parametrize(("status", "information"), [(True, None), ("0", None), (None, -1), (None, "5"), (None, 1.0)])
def test_complete_request_rejects_bad_status_or_information(status: object, information: object) -> None:
    """1.1: IoStatus is {NTSTATUS, ULONG_PTR}; anything else is refused before the walk starts."""
    irp = Irp(1)
    descend(irp)
    with pytest.raises(TypeError):
        complete_request(irp, status, information)  # type: ignore[arg-type]
    assert not irp.completed


# -- the walk (5.2) -------------------------------------------------------------------------------


def test_pending_returned_is_recomputed_at_every_level() -> None:
    """5.2.1: PendingReturned comes from each level's own SL_PENDING_RETURNED, not from below."""
    a, b, c = make_device("a"), make_device("b"), make_device("c")
    seen = Seen()
    irp = Irp(3)
    irp.set_completion_routine(seen.routine("creator"))
    descend(irp, a)
    irp.copy_current_stack_location_to_next()
    irp.set_completion_routine(seen.routine("A"))  # does not propagate: a buggy routine (5.4, 0x228)
    descend(irp, b)
    irp.copy_current_stack_location_to_next()
    irp.set_completion_routine(seen.routine("B", propagate=True))
    descend(irp, c)
    irp.mark_pending()
    complete_request(irp, STATUS_SUCCESS)
    assert seen.calls == [("B", True, b, 2), ("A", True, a, 3), ("creator", False, None, 4)]
    assert irp.pending_returned is False


def test_pending_propagates_automatically_only_where_no_routine_ran() -> None:
    """5.2.4: with no routine invoked, the pending mark moves up to the owner's location by itself."""
    a, b, c = make_device("a"), make_device("b"), make_device("c")
    seen = Seen()
    irp = Irp(3)
    irp.set_completion_routine(seen.routine("creator"))
    descend(irp, a)
    irp.copy_current_stack_location_to_next()  # no routine at location 2
    descend(irp, b)
    irp.copy_current_stack_location_to_next()
    irp.set_completion_routine(seen.routine("B-on-error"), on_success=False, on_error=True, on_cancel=False)
    descend(irp, c)
    irp.mark_pending()
    complete_request(irp, STATUS_SUCCESS)
    # B's routine did not match the success status, so it did not run and did not stop propagation.
    assert seen.calls == [("creator", True, None, 4)]
    assert irp.pending_returned is True


def test_an_invoked_routine_suppresses_automatic_propagation() -> None:
    """5.2.3 / 5.4: an invoked routine that does not mark pending leaves the level above unmarked."""
    a, b = make_device("a"), make_device("b")
    seen = Seen()
    irp = Irp(2)
    descend(irp, a)
    irp.copy_current_stack_location_to_next()
    irp.set_completion_routine(seen.routine("A"))
    descend(irp, b)
    irp.mark_pending()
    complete_request(irp, STATUS_SUCCESS)
    assert seen.calls == [("A", True, a, 2)]
    assert irp.pending_returned is False


def test_routine_runs_with_owner_device_and_lower_location_already_cleared() -> None:
    """5.2.3 / 5.3: the routine's location is cleared first; the owner's own location is intact."""
    a, b = make_device("a"), make_device("b")
    observed: dict[str, Any] = {}
    irp = Irp(2)
    irp.next_stack_location.major = IrpMajor.READ
    irp.next_stack_location.parameters = ReadWriteParameters(length=16)
    descend(irp, a)

    def completion(device: DeviceObject | None, irp: Irp, context: Any) -> int:
        lower = irp.stack_location(1)
        observed.update(
            device=device,
            context=context,
            lower=(lower.control, lower.completion_routine, lower.parameters, lower.file_object),
            current=(irp.current_location, irp.current_stack_location.major, irp.current_stack_location.parameters),
        )
        return STATUS_CONTINUE_COMPLETION

    irp.copy_current_stack_location_to_next()
    irp.set_completion_routine(completion, "ctx")
    descend(irp, b)
    complete_request(irp, STATUS_SUCCESS)
    assert observed["device"] is a
    assert observed["context"] == "ctx"
    assert observed["lower"] == (0, None, None, None)
    assert observed["current"] == (2, IrpMajor.READ, ReadWriteParameters(length=16))


def test_creator_routine_gets_no_device_and_cannot_mark_pending() -> None:
    """5.2.3.2 / 5.8: at CurrentLocation = StackCount + 1 the owner is the creator: DeviceObject NULL."""
    observed: list[object] = []

    def creator_routine(device: DeviceObject | None, irp: Irp, context: Any) -> int:
        observed.extend([device, irp.current_location, irp.pending_returned])
        with pytest.raises(IrpStateError):
            irp.mark_pending()
        return STATUS_MORE_PROCESSING_REQUIRED

    irp = Irp(2)
    irp.set_completion_routine(creator_routine)
    descend(irp, make_device("a"))
    descend(irp, make_device("b"))
    irp.mark_pending()
    complete_request(irp, STATUS_SUCCESS)
    assert observed == [None, 3, True]
    assert not irp.completed  # held by its creator: it frees or reuses it, never completes it again


def test_creator_with_its_own_location_gets_its_device() -> None:
    """5.8: allocating StackSize + 1 and IoSetNextIrpStackLocation gives the creator a real location."""
    creator, lower = make_device("creator"), make_device("lower")
    observed: list[object] = []

    def creator_routine(device: DeviceObject | None, irp: Irp, context: Any) -> int:
        observed.append(device)
        irp.mark_pending()  # legal now: the creator has a location
        return STATUS_MORE_PROCESSING_REQUIRED

    irp = Irp(2)
    irp.set_next_stack_location()
    irp.current_stack_location.device = creator
    irp.set_completion_routine(creator_routine)
    descend(irp, lower)
    complete_request(irp, STATUS_SUCCESS)
    assert observed == [creator]
    assert irp.current_location == 2
    assert irp.current_stack_location.control & PENDING_BIT


# -- invoke predicate (5.2.2) ----------------------------------------------------------------------

STATUS_KINDS: list[tuple[str, int, bool]] = [
    ("success", STATUS_SUCCESS, True),
    ("informational", INFORMATIONAL, True),
    ("warning", STATUS_BUFFER_OVERFLOW, False),
    ("error", STATUS_UNSUCCESSFUL, False),
]


def run_two_level(status: int, *, on_success: bool, on_error: bool, on_cancel: bool, cancel: bool) -> bool:
    """Upper driver arms a routine with the given flags; lower completes with *status*. Did it run?"""
    ran: list[bool] = []

    def completion(device: DeviceObject | None, irp: Irp, context: Any) -> int:
        ran.append(True)
        return STATUS_CONTINUE_COMPLETION

    irp = Irp(2)
    descend(irp, make_device("upper"))
    irp.copy_current_stack_location_to_next()
    irp.set_completion_routine(completion, on_success=on_success, on_error=on_error, on_cancel=on_cancel)
    descend(irp, make_device("lower"))
    if cancel:
        assert cancel_irp(irp) is False  # no cancel routine: only the sticky flag is set
    complete_request(irp, status)
    assert irp.completed
    return bool(ran)


@pytest.mark.parametrize(("kind", "status", "is_success"), STATUS_KINDS, ids=[k[0] for k in STATUS_KINDS])
@pytest.mark.parametrize("on_success", [True, False], ids=["S", "-"])
@pytest.mark.parametrize("on_error", [True, False], ids=["E", "-"])
@pytest.mark.parametrize("on_cancel", [True, False], ids=["C", "-"])
@pytest.mark.parametrize("cancel", [True, False], ids=["cancelled", "not-cancelled"])
def test_invoke_predicate_uses_nt_success_and_ors_in_cancel(
    kind: str, status: int, is_success: bool, on_success: bool, on_error: bool, on_cancel: bool, cancel: bool
) -> None:
    """5.2.2: invoke = (NT_SUCCESS and ON_SUCCESS) or (!NT_SUCCESS and ON_ERROR) or (Cancel and ON_CANCEL)."""
    expected = (is_success and on_success) or (not is_success and on_error) or (cancel and on_cancel)
    assert run_two_level(status, on_success=on_success, on_error=on_error, on_cancel=on_cancel, cancel=cancel) is expected


def test_warning_triggers_on_error_routines_not_on_success_ones() -> None:
    """5.2.2 / 11.1: warnings are not NT_SUCCESS, so STATUS_BUFFER_OVERFLOW runs ON_ERROR routines."""
    assert run_two_level(STATUS_BUFFER_OVERFLOW, on_success=False, on_error=True, on_cancel=False, cancel=False)
    assert not run_two_level(STATUS_BUFFER_OVERFLOW, on_success=True, on_error=False, on_cancel=False, cancel=False)


def test_cancelled_irp_completed_with_success_runs_on_cancel_only_routine() -> None:
    """5.2.2: the cancel clause is independent of the status."""
    assert run_two_level(STATUS_SUCCESS, on_success=False, on_error=False, on_cancel=True, cancel=True)


def test_status_cancelled_is_an_error_not_a_cancel() -> None:
    """5.2.2: STATUS_CANCELLED without the Cancel flag triggers ON_ERROR routines, not ON_CANCEL-only ones."""
    assert run_two_level(STATUS_CANCELLED, on_success=False, on_error=True, on_cancel=False, cancel=False)
    assert not run_two_level(STATUS_CANCELLED, on_success=False, on_error=False, on_cancel=True, cancel=False)


@pytest.mark.parametrize(
    ("lower_sets", "upper_runs"),
    [(STATUS_UNSUCCESSFUL, True), (STATUS_SUCCESS, False)],
    ids=["success-turned-error", "error-turned-success"],
)
def test_predicate_sees_the_status_a_lower_routine_wrote(lower_sets: int, upper_runs: bool) -> None:
    """5.2.2: the predicate is evaluated with the *current* IoStatus, possibly changed by a lower routine."""
    seen = Seen()
    irp = Irp(3)
    descend(irp, make_device("a"))
    irp.copy_current_stack_location_to_next()
    irp.set_completion_routine(seen.routine("A-on-error"), on_success=False, on_error=True, on_cancel=False)
    descend(irp, make_device("b"))

    def rewrite(device: DeviceObject | None, irp: Irp, context: Any) -> int:
        irp.status = lower_sets
        return STATUS_CONTINUE_COMPLETION

    irp.copy_current_stack_location_to_next()
    irp.set_completion_routine(rewrite)
    descend(irp, make_device("c"))
    complete_request(irp, STATUS_UNSUCCESSFUL if lower_sets == STATUS_SUCCESS else STATUS_SUCCESS)
    assert (seen.labels == ["A-on-error"]) is upper_runs
    assert irp.status == lower_sets


def test_signed_status_stored_by_the_driver_is_judged_like_its_unsigned_form() -> None:
    """5.2.2 / 11.1: ``irp.status = -1073741536`` (STATUS_CANCELLED as C prints it, which NtStatus
    accepts) is an error: the walk must run ON_ERROR routines for it, as it does for 0xC0000120."""
    seen = Seen()
    irp = Irp(2)
    descend(irp, make_device("a"))
    irp.copy_current_stack_location_to_next()
    irp.set_completion_routine(seen.routine("A-on-error"), on_success=False, on_error=True, on_cancel=False)
    descend(irp, make_device("b"))
    irp.status = -1073741536
    complete_request(irp)
    assert irp.io_status.status == STATUS_CANCELLED
    assert seen.labels == ["A-on-error"]


def test_routine_result_other_than_smpr_continues_the_walk() -> None:
    """5.2.3.4: any value but SMPR continues; the value is otherwise ignored."""
    seen = Seen()
    irp = Irp(2)
    irp.set_completion_routine(seen.routine("creator"))
    descend(irp, make_device("a"))
    irp.copy_current_stack_location_to_next()
    irp.set_completion_routine(seen.routine("A", result=STATUS_UNSUCCESSFUL))
    descend(irp, make_device("b"))
    complete_request(irp, STATUS_SUCCESS)
    assert seen.labels == ["A", "creator"]
    assert irp.status == STATUS_SUCCESS
    assert irp.completed


# -- STATUS_MORE_PROCESSING_REQUIRED (5.2.3.4, 5.8) ---------------------------------------------------


def test_smpr_stops_the_walk_without_touching_the_irp() -> None:
    """5.2.3.4: SMPR returns at once: no upper routine, no propagation, no final stage, no wake-up."""
    a, b, c = make_device("a"), make_device("b"), make_device("c")
    log: list[str] = []
    seen = Seen()
    irp = Irp(3)
    irp._final_stage = lambda irp: log.append("final")
    irp._waiter = FakeWaker(log)
    irp.set_completion_routine(seen.routine("creator"))
    descend(irp, a)
    irp.copy_current_stack_location_to_next()
    irp.set_completion_routine(seen.routine("A"))
    descend(irp, b)
    irp.copy_current_stack_location_to_next()
    irp.set_completion_routine(seen.routine("B", result=STATUS_MORE_PROCESSING_REQUIRED))
    descend(irp, c)
    irp.mark_pending()
    complete_request(irp, STATUS_SUCCESS, 7)
    assert seen.calls == [("B", True, b, 2)]
    assert not irp.completed
    assert irp.current_location == 2  # B owns the IRP again: its own location is current
    assert irp.current_stack_location.device is b
    assert irp.current_stack_location.control & PENDING_BIT == 0  # not propagated
    assert irp.stack_location(2).completion_routine is not None  # A's routine still armed
    assert irp.io_status == (STATUS_SUCCESS, 7)
    assert log == []


def test_complete_again_after_smpr_resumes_one_level_higher() -> None:
    """5.8: a later IoCompleteRequest on an SMPR'd IRP resumes the walk at the location above the routine."""
    a, b, c = make_device("a"), make_device("b"), make_device("c")
    log: list[str] = []
    seen = Seen()
    irp = Irp(3)
    irp._final_stage = lambda irp: log.append("final")
    irp._waiter = FakeWaker(log)
    irp.set_completion_routine(seen.routine("creator"))
    descend(irp, a)
    irp.copy_current_stack_location_to_next()
    irp.set_completion_routine(seen.routine("A", propagate=True))
    descend(irp, b)
    irp.copy_current_stack_location_to_next()
    irp.set_completion_routine(seen.routine("B", result=STATUS_MORE_PROCESSING_REQUIRED))
    descend(irp, c)
    irp.mark_pending()
    complete_request(irp, STATUS_SUCCESS, 7)
    # B finishes its own work, then completes the IRP again, with a new status.
    complete_request(irp, STATUS_BUFFER_OVERFLOW, 3)
    assert seen.calls == [("B", True, b, 2), ("A", False, a, 3), ("creator", False, None, 4)]
    assert irp.completed
    assert irp.io_status == (STATUS_BUFFER_OVERFLOW, 3)
    assert log == ["final", "wake"]
    with pytest.raises(BugCheck) as info:
        complete_request(irp)
    assert info.value.code == 0x44


def test_final_stage_and_waiter_run_once_after_all_routines() -> None:
    """5.6: the final stage runs when the walk reaches the top, then the waiting requester is woken."""
    log: list[str] = []
    irp = Irp(2)
    irp._final_stage = lambda irp: log.append(f"final completed={irp.completed}")
    irp._waiter = FakeWaker(log)

    def creator(device: DeviceObject | None, irp: Irp, context: Any) -> int:
        log.append("creator routine")
        return STATUS_CONTINUE_COMPLETION

    irp.set_completion_routine(creator)
    descend(irp, make_device("a"))
    descend(irp, make_device("b"))
    complete_request(irp, STATUS_SUCCESS)
    assert log == ["creator routine", "final completed=True", "wake"]


# -- completion routines are plain functions (12.1) ----------------------------------------------------


def test_async_completion_routine_is_a_type_error_that_says_it_cannot_await() -> None:
    """12.1: completion routines run inside the synchronous walk; an ``async def`` cannot await there."""

    async def completion(device: DeviceObject | None, irp: Irp, context: Any) -> int:
        return STATUS_CONTINUE_COMPLETION

    irp = Irp(2)
    descend(irp, make_device("a"))
    irp.copy_current_stack_location_to_next()
    # Refused where it is set (issue 8.3): found out mid-walk, it would strand the IRP.
    with pytest.raises(TypeError, match="cannot await"):
        irp.set_completion_routine(completion)  # type: ignore[arg-type]
    # Stored behind set_completion_routine's back, it is still caught in the walk, which then
    # finishes without it.
    loc = irp.next_stack_location
    loc.completion_routine = completion  # type: ignore[assignment]
    loc.control = 0xE0
    descend(irp, make_device("b"))
    caught: list[warnings.WarningMessage] = []
    message = complete_and_collect_warnings(irp, caught)
    assert "cannot await" in message
    assert [w for w in caught if issubclass(w.category, RuntimeWarning)] == []  # the coroutine was closed
    assert irp.completed
    assert irp.status == STATUS_INTERNAL_ERROR


@pytest.mark.parametrize("garbage", [None, "continue", True, 1.5, object()])
def test_completion_routine_returning_non_status_is_type_error(garbage: object) -> None:
    """5.2.3: a completion routine returns STATUS_CONTINUE_COMPLETION or STATUS_MORE_PROCESSING_REQUIRED."""

    def completion(device: DeviceObject | None, irp: Irp, context: Any) -> Any:
        return garbage

    irp = Irp(2)
    descend(irp, make_device("a"))
    irp.copy_current_stack_location_to_next()
    irp.set_completion_routine(completion)
    descend(irp, make_device("b"))
    with pytest.raises(TypeError, match="must return STATUS_CONTINUE_COMPLETION or STATUS_MORE_PROCESSING_REQUIRED"):
        complete_request(irp, STATUS_SUCCESS)


def test_invoke_flags_without_routine_is_inconsistent_irp() -> None:
    """1.2 / 10.3: a location with INVOKE_* bits but no routine is a corrupt IRP (0x2A)."""
    irp = Irp(2)
    descend(irp, make_device("a"))
    irp.next_stack_location.control = int(StackControl.INVOKE_ON_SUCCESS)
    descend(irp, make_device("b"))
    with pytest.raises(BugCheck) as info:
        complete_request(irp, STATUS_SUCCESS)
    assert info.value.code == 0x2A


# -- associated IRPs (5.5) ----------------------------------------------------------------------------


def test_master_completes_when_its_last_associated_irp_completes() -> None:
    """5.5: each associated completion decrements IrpCount; at 0 the master completes with its own status."""
    log: list[str] = []
    master = Irp(1)
    descend(master, make_device("top"))
    master._final_stage = lambda irp: log.append("master final")
    master.status = STATUS_SUCCESS  # set by the master's driver; statuses are not aggregated
    master.associated_irp_count = 2
    associated = []
    for number in (1, 2):
        irp = Irp(1)
        irp.master_irp = master
        descend(irp, make_device(f"lower{number}"))
        associated.append(irp)
    complete_request(associated[0], STATUS_UNSUCCESSFUL)
    assert associated[0].completed
    assert associated[0].master_irp is None
    assert not master.completed
    assert master.associated_irp_count == 1
    assert log == []
    complete_request(associated[1], STATUS_BUFFER_OVERFLOW)
    assert master.completed
    assert master.associated_irp_count == 0
    assert master.status == STATUS_SUCCESS
    assert log == ["master final"]


# -- the worked example (5.9) --------------------------------------------------------------------------


def test_worked_example_5_9_a_over_b_over_c() -> None:
    """5.9: A copies and arms RA, B skips, C pends then completes; RA propagates; PendingReturned at the top."""
    steps: list[tuple[Any, ...]] = []
    held: list[Irp] = []

    def ra(device: DeviceObject | None, irp: Irp, context: Any) -> int:
        steps.append(("RA", device, irp.pending_returned, irp.current_location))
        if irp.pending_returned:
            irp.mark_pending()
            steps.append(("RA marked", irp.stack_location(3).control & PENDING_BIT))
        return STATUS_CONTINUE_COMPLETION

    class A(Driver):
        @dispatch(IrpMajor.READ)
        async def read(self, device: DeviceObject, irp: Irp) -> int:
            steps.append(("A", irp.current_location))
            irp.copy_current_stack_location_to_next()
            irp.set_completion_routine(ra)
            assert device.lower_device is not None
            status = await call_driver(device.lower_device, irp)
            steps.append(("A returns", status))
            return status

    class B(Driver):
        @dispatch(IrpMajor.READ)
        async def read(self, device: DeviceObject, irp: Irp) -> int:
            steps.append(("B", irp.current_location))
            status = await pass_down(device, irp)
            steps.append(("B returns", status))
            return status

    class C(Driver):
        @dispatch(IrpMajor.READ)
        async def read(self, device: DeviceObject, irp: Irp) -> int:
            loc = irp.current_stack_location
            steps.append(("C", irp.current_location, loc.completion_routine))
            irp.mark_pending()
            held.append(irp)
            return STATUS_PENDING

    dev_c = DeviceObject(C(), "C")
    dev_b = DeviceObject(B(), "B")
    dev_a = DeviceObject(A(), "A")
    attach_device(dev_b, dev_c)
    assert attach_device(dev_a, dev_c) is dev_b  # attaches to the top of the stack
    assert (dev_a.stack_size, dev_b.stack_size, dev_c.stack_size) == (3, 2, 1)

    # 1. The I/O manager fills location 3 and calls A: CurrentLocation 4 -> 3.
    irp = Irp(dev_a.stack_size)
    irp.next_stack_location.major = IrpMajor.READ
    assert irp.current_location == 4
    status = run_sync(call_driver(dev_a, irp))
    # 2-4. A copies 3 -> 2 and arms RA, B skips, C gets location 2 which still carries RA; everyone
    # returns STATUS_PENDING unchanged.
    assert steps == [
        ("A", 3),
        ("B", 2),
        ("C", 2, ra),
        ("B returns", STATUS_PENDING),
        ("A returns", STATUS_PENDING),
    ]
    assert status == STATUS_PENDING
    assert held == [irp]
    assert irp.stack_location(1).device is None  # location 1 is never used
    assert irp.stack_location(2).device is dev_c
    assert irp.stack_location(3).device is dev_a
    assert irp.stack_location(2).control & PENDING_BIT
    steps.clear()

    # 5. C completes: RA runs with A's device, sees PendingReturned and marks location 3.
    complete_request(irp, STATUS_SUCCESS, 42)
    assert steps == [("RA", dev_a, True, 3), ("RA marked", PENDING_BIT)]
    # 6-7. Location 3 has no routine and no owner above; the walk ends with PendingReturned set.
    assert irp.current_location == 5
    assert irp.pending_returned is True
    assert irp.io_status == (STATUS_SUCCESS, 42)


# -- property: the completion walk against a model (5.2) -------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """One forwarding driver: skip, or copy and arm a routine with some flags and behaviour."""

    copy: bool
    on_success: bool
    on_error: bool
    on_cancel: bool
    behaviour: str  # "continue" (propagates pending), "continue-no-propagate", "smpr"
    new_status: int | None


@dataclass(frozen=True)
class Scenario:
    layers: tuple[Layer, ...]  # forwarding drivers, top first
    creator: Layer | None  # the creator's routine (never propagates: it has no location)
    extra_locations: int
    pend: bool
    cancel: bool
    status: int


FINAL_STATUSES = st.sampled_from([STATUS_SUCCESS, INFORMATIONAL, STATUS_BUFFER_OVERFLOW, STATUS_UNSUCCESSFUL, STATUS_CANCELLED])


def layers(creator: bool) -> st.SearchStrategy[Layer]:
    behaviours = ["continue-no-propagate", "smpr"] if creator else ["continue", "continue-no-propagate", "smpr"]
    return st.builds(
        Layer,
        copy=st.just(True) if creator else st.booleans(),
        on_success=st.booleans(),
        on_error=st.booleans(),
        on_cancel=st.booleans(),
        behaviour=st.sampled_from(behaviours),
        new_status=st.none() | FINAL_STATUSES,
    )


scenarios = st.builds(
    Scenario,
    layers=st.lists(layers(creator=False), min_size=0, max_size=7).map(tuple),
    creator=st.none() | layers(creator=True),
    extra_locations=st.integers(0, 1),
    pend=st.booleans(),
    cancel=st.booleans(),
    status=FINAL_STATUSES,
)


def invoked(layer: Layer, status: int, cancel: bool) -> bool:
    success = status < 0x8000_0000
    return (success and layer.on_success) or (not success and layer.on_error) or (cancel and layer.on_cancel)


@dataclass
class Prediction:
    stack_count: int
    ran: list[tuple[str, bool]]
    status: int
    pending_returned: bool
    completions: int


def predict(scenario: Scenario) -> Prediction:
    """An independent model of 5.2, written from the reference text."""
    copies = sum(layer.copy for layer in scenario.layers)
    n = 1 + copies + scenario.extra_locations
    routine_at: dict[int, tuple[str, Layer]] = {}
    if scenario.creator is not None:
        routine_at[n] = ("creator", scenario.creator)
    loc = n
    for index, layer in enumerate(scenario.layers):
        if layer.copy:
            routine_at[loc - 1] = (f"L{index}", layer)
            loc -= 1
    pending = dict.fromkeys(range(1, n + 2), False)
    pending[loc] = scenario.pend
    status = scenario.status
    ran: list[tuple[str, bool]] = []
    completions = 1
    last = False
    while loc <= n:
        owner = loc + 1
        last = pending[loc]
        entry = routine_at.get(loc)
        if entry is not None and invoked(entry[1], status, scenario.cancel):
            label, layer = entry
            ran.append((label, last))
            if layer.new_status is not None:
                status = layer.new_status
            if layer.behaviour == "smpr":
                completions += 1
            elif layer.behaviour == "continue" and last:
                pending[owner] = True
        elif last:
            pending[owner] = True
        loc += 1
    return Prediction(n, ran, status, last, completions)


class Scripted(Driver):
    """A driver whose READ dispatch follows the device's Layer (or, at the bottom, the scenario)."""

    def __init__(self, name: str, log: list[tuple[str, bool, bool]], scenario: Scenario) -> None:
        super().__init__(name)
        self.log = log
        self.scenario = scenario

    @dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        layer: Layer | None = device.extension
        if layer is None:  # the bottom driver
            if self.scenario.cancel:
                cancel_irp(irp)
            if self.scenario.pend:
                irp.mark_pending()
                return STATUS_PENDING
            complete_request(irp, self.scenario.status)
            return self.scenario.status
        if not layer.copy:
            return await pass_down(device, irp)
        irp.copy_current_stack_location_to_next()
        irp.set_completion_routine(
            make_routine(self.name, layer, device, self.log),
            on_success=layer.on_success,
            on_error=layer.on_error,
            on_cancel=layer.on_cancel,
        )
        assert device.lower_device is not None
        return await call_driver(device.lower_device, irp)


def make_routine(label: str, layer: Layer, owner: DeviceObject | None, log: list[tuple[str, bool, bool]]) -> Routine:
    def completion(device: DeviceObject | None, irp: Irp, context: Any) -> int:
        log.append((label, irp.pending_returned, device is owner))
        if layer.new_status is not None:
            irp.status = layer.new_status
        if layer.behaviour == "smpr":
            return STATUS_MORE_PROCESSING_REQUIRED
        if layer.behaviour == "continue" and irp.pending_returned:
            irp.mark_pending()
        return STATUS_CONTINUE_COMPLETION

    return completion


@settings(max_examples=200, deadline=None)
@given(scenarios)
def test_completion_walk_matches_the_model(scenario: Scenario) -> None:
    """5.2 / 5.4 / 5.8: random stacks, routines and statuses: routines run exactly when the predicate
    says, each IRP completes exactly once, and the final PendingReturned is what the model predicts."""
    expected = predict(scenario)
    log: list[tuple[str, bool, bool]] = []
    bottom = DeviceObject(Scripted("bottom", log, scenario), "bottom")
    top = bottom
    for index, layer in reversed(list(enumerate(scenario.layers))):
        device = DeviceObject(Scripted(f"L{index}", log, scenario), f"L{index}", extension=layer)
        attach_device(device, top)
        top = device
    events: list[str] = []
    irp = Irp(expected.stack_count)
    irp._final_stage = lambda irp: events.append("final")
    irp._waiter = FakeWaker(events)
    irp.next_stack_location.major = IrpMajor.READ
    if scenario.creator is not None:
        irp.set_completion_routine(
            make_routine("creator", scenario.creator, None, log),
            on_success=scenario.creator.on_success,
            on_error=scenario.creator.on_error,
            on_cancel=scenario.creator.on_cancel,
        )
    returned = run_sync(call_driver(top, irp))
    completions = 0 if scenario.pend else 1
    if scenario.pend:
        assert returned == STATUS_PENDING
        complete_request(irp, scenario.status)
        completions += 1
    while not irp.completed:
        # A routine returned SMPR: its driver owns the IRP and completes it again.
        complete_request(irp)
        completions += 1
    assert [(label, pending) for label, pending, _ in log] == expected.ran
    assert all(owner_ok for _, _, owner_ok in log)
    assert completions == expected.completions
    assert irp.status == expected.status
    assert irp.pending_returned is expected.pending_returned
    assert irp.current_location == expected.stack_count + 2
    assert events == ["final", "wake"]
    with pytest.raises(BugCheck):
        complete_request(irp)


def complete_and_collect_warnings(irp: Irp, caught: list[warnings.WarningMessage]) -> str:
    """complete_request(irp), expecting a TypeError; return its message.

    The frames of the traceback are cleared and garbage collected inside ``catch_warnings``, so a
    coroutine left unclosed warns here (and is seen by the caller) instead of in a later test.
    """
    with warnings.catch_warnings(record=True) as recorded:
        warnings.simplefilter("always")
        try:
            complete_request(irp, STATUS_SUCCESS)
        except TypeError as error:
            message = str(error)
            traceback.clear_frames(error.__traceback__)
        else:
            message = "no TypeError"
        gc.collect()
    caught.extend(recorded)
    return message
