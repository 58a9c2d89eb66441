"""The right culprit and the right code for IRP misuse.

Each test is written from the side of the people involved: a driver author whose driver breaks a
rule, and a requester (or test) that sees what comes out (reference 3, 4, 5.4, 5.8, 10.3).
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from _own_irp_drivers import Completer, Holder, fill_read, must

import airp
from airp import (
    STATUS_CONTINUE_COMPLETION,
    STATUS_MORE_PROCESSING_REQUIRED,
    STATUS_PENDING,
    STATUS_SUCCESS,
    STATUS_UNSUCCESSFUL,
    BugCheck,
    BugCheckCode,
    DeviceObject,
    Irp,
    IrpMajor,
    IrpStateError,
    VerifierCode,
    attach_device,
    complete_request,
)


class Bottom(airp.Driver):
    """Marks every read pending and returns STATUS_PENDING; completes it at once if ``at_once``."""

    def __init__(self, *, at_once: bool = False) -> None:
        super().__init__("bottom")
        self.at_once = at_once
        self.held: list[Irp] = []

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLEANUP, IrpMajor.CLOSE)
    async def simple(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        irp.mark_pending()
        if self.at_once:
            complete_request(irp, STATUS_SUCCESS, 1)
        else:
            self.held.append(irp)
        return STATUS_PENDING


class Filter(airp.Driver):
    """Forwards reads with a completion routine; ``propagate`` decides whether it follows 5.4."""

    pass_through = True

    def __init__(self, *, propagate: bool) -> None:
        super().__init__("filter")
        self.propagate = propagate

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        irp.copy_current_stack_location_to_next()
        irp.set_completion_routine(self.read_done)
        lower = device.lower_device
        assert lower is not None
        return await airp.call_driver(lower, irp)

    def read_done(self, device: DeviceObject | None, irp: Irp, context: Any) -> int:
        if self.propagate and irp.pending_returned:
            irp.mark_pending()
        return STATUS_CONTINUE_COMPLETION


async def open_stack(bottom: Bottom, upper: Filter) -> tuple[airp.FileHandle, DeviceObject]:
    io = airp.IoManager()
    device = io.create_device(bottom, "disk")
    top = io.create_device(upper)
    attach_device(top, device)
    return await io.open("disk"), top


# -- a completion routine that drops the pending mark is 0xC9 / 0x228 ------------------------


@pytest.mark.anyio
async def test_a_routine_that_drops_the_pending_mark_is_named_with_0x228() -> None:
    """5.4 / 10.3: the lower driver pends properly; the filter's routine forgets to propagate."""
    bottom, upper = Bottom(), Filter(propagate=False)
    handle, top = await open_stack(bottom, upper)
    request = await handle.read_overlapped(1)
    assert request.status_returned == STATUS_PENDING
    with pytest.raises(BugCheck, match="did not propagate the pending mark") as completed:
        complete_request(bottom.held.pop(), STATUS_SUCCESS, 1)
    with pytest.raises(BugCheck) as awaited:
        await request
    for info in (completed, awaited):
        error = info.value
        assert error.code == BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION
        assert error.verifier_code is VerifierCode.PENDING_NOT_PROPAGATED
        assert error.parameters[0] == 0x228
        assert error.device is top  # the routine's device and driver, not the dispatch routine's blame
        assert error.driver is upper
        assert "Filter.read_done" in str(error)


@pytest.mark.anyio
async def test_the_dropped_mark_is_found_when_the_lower_driver_completes_at_once() -> None:
    """The same breach when the bottom marks, completes and returns PENDING inside call_driver."""
    bottom, upper = Bottom(at_once=True), Filter(propagate=False)
    handle, _ = await open_stack(bottom, upper)
    with pytest.raises(BugCheck, match=r"Filter\.read_done") as info:
        await handle.read(1)
    assert info.value.verifier_code is VerifierCode.PENDING_NOT_PROPAGATED
    assert info.value.driver is upper


@pytest.mark.anyio
async def test_a_routine_that_propagates_the_mark_is_not_blamed() -> None:
    bottom, upper = Bottom(), Filter(propagate=True)
    handle, _ = await open_stack(bottom, upper)
    request = await handle.read_overlapped(1)
    complete_request(bottom.held.pop(), STATUS_SUCCESS, 1)
    assert await request == b"\x00"


@pytest.mark.anyio
async def test_a_dispatch_that_never_marked_is_still_0x23d_against_its_own_driver() -> None:
    """No routine saw a mark, so the dispatch routine that returned PENDING is the culprit."""

    class Unmarked(Bottom):
        @airp.dispatch(IrpMajor.READ)
        async def read(self, device: DeviceObject, irp: Irp) -> int:
            complete_request(irp, STATUS_SUCCESS, 1)
            return STATUS_PENDING

    bottom, upper = Unmarked(), Filter(propagate=True)
    handle, _ = await open_stack(bottom, upper)
    with pytest.raises(BugCheck, match="without marking the IRP pending") as info:
        await handle.read(1)
    assert info.value.verifier_code is VerifierCode.PENDING_NOT_MARKED


# -- preparing a location that does not exist is bug check 0x35 ------------------------------


class Middle(airp.Driver):
    """Forwards every read the usual way: copy to next, a completion routine, call_driver."""

    def __init__(self, *, with_routine: bool = True) -> None:
        super().__init__("middle")
        self.with_routine = with_routine

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        irp.copy_current_stack_location_to_next()
        if self.with_routine:
            irp.set_completion_routine(lambda device, irp, context: STATUS_CONTINUE_COMPLETION)
        lower = device.lower_device
        assert lower is not None
        return await airp.call_driver(lower, irp)


def two_deep() -> tuple[DeviceObject, Middle, Completer]:
    io = airp.IoManager()
    completer = Completer()
    bottom = io.create_device(completer)
    middle_driver = Middle()
    middle = io.create_device(middle_driver)
    attach_device(middle, bottom)
    return middle, middle_driver, completer


@pytest.mark.anyio
async def test_copy_to_next_on_an_irp_with_too_few_locations_is_bug_check_0x35() -> None:
    """Reference 3, 4: an IRP of one location sent to a stack of two; the middle driver ran out."""
    middle, middle_driver, completer = two_deep()
    irp = fill_read(Irp(1))
    with pytest.raises(BugCheck, match="copy_current_stack_location_to_next") as info:
        await airp.call_driver(middle, irp)
    error = info.value
    assert error.code == BugCheckCode.NO_MORE_IRP_STACK_LOCATIONS
    assert error.parameters[0] is irp
    assert error.verifier_code is None
    assert (error.device, error.driver) == (middle, middle_driver)
    assert completer.seen == []  # nothing reached the bottom
    assert irp.completed  # the middle's dispatch raised holding it: completed, nobody waits


@pytest.mark.anyio
async def test_each_call_that_prepares_the_missing_location_is_bug_check_0x35() -> None:
    """set_completion_routine and next_stack_location at location 1 are the same breach."""
    middle, middle_driver, _ = two_deep()
    caught: list[BugCheck] = []

    async def prepare(device: DeviceObject, irp: Irp) -> int:
        for step in (
            lambda: irp.set_completion_routine(lambda d, i, c: STATUS_CONTINUE_COMPLETION),
            lambda: irp.next_stack_location,
        ):
            try:
                step()
            except BugCheck as error:
                caught.append(error)
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    middle_driver.set_dispatch(IrpMajor.READ, prepare)
    await airp.call_driver(middle, fill_read(Irp(1)))
    assert [(e.code, e.device) for e in caught] == [(BugCheckCode.NO_MORE_IRP_STACK_LOCATIONS, middle)] * 2


def test_copying_from_no_location_stays_an_irp_state_error() -> None:
    """A fresh IRP has no current location: that is using it wrongly, not running out."""
    irp = Irp(2)
    with pytest.raises(IrpStateError, match="cannot copy to next"):
        irp.copy_current_stack_location_to_next()
    complete_request(irp)
    with pytest.raises(IrpStateError):
        irp.set_completion_routine(lambda d, i, c: STATUS_CONTINUE_COMPLETION)


@pytest.mark.anyio
async def test_call_driver_from_the_last_location_names_the_sender() -> None:
    """A driver that skips preparing the next location: IoCallDriver itself finds 0x35."""
    io = airp.IoManager()
    target = io.create_device(Completer())
    sender_driver = Holder()

    async def send_on(device: DeviceObject, irp: Irp) -> int:
        return await airp.call_driver(target, irp)

    sender_driver.set_dispatch(IrpMajor.READ, send_on)
    sender = io.create_device(sender_driver)
    with pytest.raises(BugCheck, match="sent by") as info:
        await airp.call_driver(sender, fill_read(Irp(1)))
    assert info.value.code == BugCheckCode.NO_MORE_IRP_STACK_LOCATIONS
    assert repr(sender) in str(info.value)


# -- BugCheck.verifier_code ------------------------------------------------------------------


def test_verifier_code_is_typed_for_0xc9_and_none_for_the_others() -> None:
    irp = Irp(1)
    irp.set_next_stack_location()
    irp.set_cancel_routine(lambda device, irp: None)
    with pytest.raises(BugCheck) as c9:
        complete_request(irp, STATUS_SUCCESS, 0)
    assert c9.value.verifier_code is VerifierCode.COMPLETE_WITH_CANCEL_ROUTINE
    assert "COMPLETE_WITH_CANCEL_ROUTINE 0x7" in str(c9.value)
    assert c9.value.parameters[0] == 0x07  # parameters are unchanged
    irp.set_cancel_routine(None)
    complete_request(irp, STATUS_SUCCESS, 0)
    with pytest.raises(BugCheck) as double:
        complete_request(irp, STATUS_SUCCESS, 0)
    assert double.value.code == BugCheckCode.MULTIPLE_IRP_COMPLETE_REQUESTS
    assert double.value.verifier_code is None  # parameter 1 is the IRP there
    assert double.value.parameters[0] is irp


def test_an_unknown_verifier_code_is_kept_as_an_int() -> None:
    error = BugCheck(0xC9, "a code airp has no name for", parameters=(0x999, 0, 0, 0))
    assert error.verifier_code == 0x999
    assert not isinstance(error.verifier_code, VerifierCode)
    assert "/ 0x999" in str(error)
    assert BugCheck(0xC4, "a DDI rule", parameters=(0x0004100F, 0, 0, 0)).verifier_code == 0x0004100F


# -- the 5.8 message names the routine and its result on every path --------------------------


@pytest.mark.anyio
async def test_the_5_8_message_names_the_routine_after_plain_call_driver() -> None:
    lower = airp.IoManager().create_device(Completer(status=STATUS_UNSUCCESSFUL))

    def forgets_to_keep_it(device: DeviceObject | None, irp: Irp, context: Any) -> int:
        return STATUS_SUCCESS

    irp = fill_read(must(airp.allocate_irp(lower.stack_size)))
    irp.set_completion_routine(forgets_to_keep_it)
    with pytest.raises(BugCheck) as info:
        await airp.call_driver(lower, irp)
    message = str(info.value)
    assert info.value.code == BugCheckCode.INCONSISTENT_IRP
    assert "Its completion routine" in message
    assert "forgets_to_keep_it returned STATUS_CONTINUE_COMPLETION" in message
    assert "Final status STATUS_UNSUCCESSFUL" in message


@pytest.mark.anyio
async def test_the_5_8_message_says_when_no_routine_ran_after_plain_call_driver() -> None:
    lower = airp.IoManager().create_device(Completer())
    irp = fill_read(must(airp.allocate_irp(lower.stack_size)))
    with pytest.raises(BugCheck, match="No completion routine ran on the way up"):
        await airp.call_driver(lower, irp)


@pytest.mark.anyio
async def test_the_5_8_message_names_a_routine_that_took_the_irp_back_and_completed_it_again() -> None:
    lower = airp.IoManager().create_device(Completer())

    def keeps_it(device: DeviceObject | None, irp: Irp, context: Any) -> int:
        return STATUS_MORE_PROCESSING_REQUIRED

    irp = fill_read(must(airp.allocate_irp(lower.stack_size)))
    irp.set_completion_routine(keeps_it)
    await airp.send_irp(lower, irp)
    with pytest.raises(BugCheck, match=r"keeps_it did not run .* completed the IRP again"):
        complete_request(irp)


# -- the bug check goes to the completer, the request keeps its result


class Serial(airp.Driver):
    """Serves each read through StartIo with an IRP of its own sent to ``lower``.

    Its routine completes the application's read and then, wrongly, returns
    STATUS_CONTINUE_COMPLETION for its own IRP (reference 5.8).
    """

    def __init__(self, lower: DeviceObject) -> None:
        super().__init__("serial")
        self.lower = lower

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLEANUP, IrpMajor.CLOSE)
    async def simple(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        irp.mark_pending()
        airp.start_packet(device, irp, cancel_routine=None)
        return STATUS_PENDING

    async def start_io(self, device: DeviceObject, irp: Irp) -> None:
        own = fill_read(must(airp.allocate_irp(self.lower.stack_size)), 1)
        own.set_completion_routine(self.transfer_done, (device, irp))
        await airp.send_irp(self.lower, own)

    def transfer_done(self, device: DeviceObject | None, own: Irp, context: Any) -> int:
        serial, request = context
        complete_request(request, own.status, own.information)
        airp.start_next_packet(serial, False)
        return STATUS_CONTINUE_COMPLETION  # the bug: a driver's own IRP must be kept (SMPR) and freed


def serial_over(lower_driver: airp.Driver) -> tuple[airp.IoManager, DeviceObject]:
    io = airp.IoManager()
    lower = io.create_device(lower_driver)
    device = io.create_device(Serial(lower), "serial")
    return io, device


def leaves(error: BaseException) -> list[BaseException]:
    inner: tuple[BaseException, ...] = getattr(error, "exceptions", ())  # an ExceptionGroup's
    if inner:
        return [leaf for one in inner for leaf in leaves(one)]
    return [error]


@pytest.mark.anyio
async def test_a_5_8_breach_in_startio_goes_to_the_device_and_the_read_succeeds() -> None:
    """The lower driver completes the child at once, in the device's worker: the device reports
    the bug check on exit; the read, completed in that walk, gets its own result."""
    io, device = serial_over(Completer(information=1))
    at_read: list[bytes] = []

    async def run() -> None:
        async with airp.run_device(device), io.open("serial") as handle:
            at_read.append(await handle.read(1))

    with pytest.raises(Exception) as at_exit:  # noqa: PT011 - the device's ExceptionGroup, checked below
        await run()
    assert len(at_read[0]) == 1
    [bug_check] = [leaf for leaf in leaves(at_exit.value) if isinstance(leaf, BugCheck)]
    assert bug_check.code == BugCheckCode.INCONSISTENT_IRP
    assert "transfer_done returned STATUS_CONTINUE_COMPLETION" in str(bug_check)


@pytest.mark.anyio
async def test_a_5_8_breach_completed_later_goes_to_the_completer_and_the_read_succeeds(virtual_clock: Any) -> None:
    """The lower driver pends the child; whoever completes it gets the bug check, the waiting
    reader its own result."""
    holder = Holder(cancelable=False)
    io, device = serial_over(holder)
    outcome: list[object] = []
    async with airp.run_device(device), io.open("serial") as handle:

        async def reader() -> None:
            request = await handle.read_overlapped(1)
            outcome.append(len(await request))
            outcome.append(len(request.result()))

        async with anyio.create_task_group() as group:
            group.start_soon(reader)
            await anyio.sleep(1)
            with pytest.raises(BugCheck) as completer:
                complete_request(holder.held.pop(), STATUS_SUCCESS, 1)
    assert outcome == [1, 1]
    assert completer.value.code == BugCheckCode.INCONSISTENT_IRP
