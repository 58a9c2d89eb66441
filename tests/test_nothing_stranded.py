"""Issue 8: every IRP completes exactly once, whatever the requester's cancel scope or a routine does.

Each test is written from the user's side: a driver stack, a requester, and what both see.  All run
on asyncio and trio, on the virtual clock.
"""

from __future__ import annotations

from typing import Any, ClassVar

import anyio
import pytest
from _cancel_drivers import HeldReads, make_io

import airp
from airp import (
    STATUS_CANCELLED,
    STATUS_CONTINUE_COMPLETION,
    STATUS_DELETE_PENDING,
    STATUS_INTERNAL_ERROR,
    STATUS_PENDING,
    STATUS_SUCCESS,
    STATUS_UNSUCCESSFUL,
    BugCheck,
    DeviceObject,
    DriverCancelTimeoutWarning,
    Irp,
    IrpMajor,
    NtStatusError,
    VerifierCode,
    complete_request,
)
from airp.testing import VirtualClock


class BoomError(Exception):
    """What the broken routines in these tests raise."""


class Opens(airp.Driver):
    """Completes CREATE, CLEANUP and CLOSE at once; the tests' drivers add what they test."""

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLOSE, IrpMajor.CLEANUP)
    async def open_close(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS


class Bottom(Opens):
    """Pends every read with a cancel routine that completes it as cancelled."""

    def __init__(self) -> None:
        super().__init__("bottom")
        self.held: list[Irp] = []
        self.raise_in_cancel = False

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        irp.mark_pending()
        self.held.append(irp)
        irp.set_cancel_routine(self.cancel)
        return STATUS_PENDING

    def cancel(self, device: DeviceObject | None, irp: Irp) -> None:
        self.held.remove(irp)
        if self.raise_in_cancel:
            raise BoomError("cancel routine")
        complete_request(irp, STATUS_CANCELLED, 0)

    def finish(self, status: int = STATUS_SUCCESS, information: int = 0) -> None:
        irp = self.held.pop(0)
        if irp.set_cancel_routine(None) is not None:
            complete_request(irp, status, information)


class ForwardAndWaitFilter(airp.Driver):
    """The filter of docs/handling-irps.md section 4: forward, wait, then finish the IRP here."""

    pass_through = True

    def __init__(self) -> None:
        super().__init__("forward-and-wait")
        self.finished: list[int] = []

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        assert device.lower_device is not None
        st = await airp.forward_and_wait(device.lower_device, irp)
        self.finished.append(st.status)
        complete_request(irp)
        return st.status


def stack(*uppers: airp.Driver) -> tuple[airp.IoManager, Bottom]:
    io = airp.IoManager()
    bottom = Bottom()
    below = io.create_device(bottom, "\\Device\\Disk")
    for driver in uppers:
        device = io.create_device(driver)
        airp.attach_device(device, below)
        below = device
    return io, bottom


# -- 1. a requester's timeout never strands an IRP in a correct driver ------------------------------


@pytest.mark.anyio
async def test_a_timeout_cancels_the_irp_and_the_filter_still_finishes_it(virtual_clock: VirtualClock) -> None:
    upper = ForwardAndWaitFilter()
    io, _bottom = stack(upper)
    async with io.open("\\Device\\Disk") as handle:
        with anyio.move_on_after(0.1) as scope:
            await handle.read(1)
        assert scope.cancelled_caught
        assert virtual_clock.now() == pytest.approx(0.1)
        # The filter's code after forward_and_wait ran: it saw the IRP come back cancelled and
        # completed it, so nothing is left.
        assert upper.finished == [STATUS_CANCELLED]
        assert io.outstanding_requests() == []
    assert virtual_clock.now() == pytest.approx(0.1)  # close waited for nothing


@pytest.mark.anyio
async def test_fail_after_gives_timeout_error_and_leaves_nothing(virtual_clock: VirtualClock) -> None:
    upper = ForwardAndWaitFilter()
    io, bottom = stack(upper)
    async with io.open("\\Device\\Disk") as handle:
        with pytest.raises(TimeoutError):
            with anyio.fail_after(2):
                await handle.read(1)
        assert io.outstanding_requests() == []
        assert bottom.held == []


@pytest.mark.anyio
async def test_a_dispatch_routine_cancelled_in_its_own_await_still_completes_its_irp(
    virtual_clock: VirtualClock,
) -> None:
    """An await that is not one of airp's sees the requester's cancellation as its own: the routine
    is cancelled there, and the IRP it held completes as cancelled instead of being stranded."""
    reached: list[str] = []

    class Slow(Opens):
        @airp.dispatch(IrpMajor.READ)
        async def read(self, device: DeviceObject, irp: Irp) -> int:
            try:
                await anyio.sleep(5)
            finally:
                reached.append("cleanup")
            complete_request(irp, STATUS_SUCCESS, 0)
            return STATUS_SUCCESS

    io = airp.IoManager()
    io.create_device(Slow(), "\\Device\\Slow")
    async with io.open("\\Device\\Slow") as handle:
        with anyio.move_on_after(1) as scope:
            await handle.read(1)
        assert scope.cancelled_caught
        assert reached == ["cleanup"]
        assert virtual_clock.now() == pytest.approx(1)
        assert io.outstanding_requests() == []


@pytest.mark.anyio
async def test_an_explicit_cancel_of_the_requester_leaves_nothing_pending(virtual_clock: VirtualClock) -> None:
    """Without a deadline airp cannot tell the requester's cancellation from the filter's own, so
    forward_and_wait re-raises it once the IRP is back; the IRP the filter then holds completes as
    cancelled."""
    upper = ForwardAndWaitFilter()
    io, bottom = stack(upper)
    async with io.open("\\Device\\Disk") as handle:
        async with anyio.create_task_group() as tg:
            tg.start_soon(handle.read, 1)
            await anyio.sleep(1)
            assert len(bottom.held) == 1
            tg.cancel_scope.cancel()
        assert upper.finished == []  # the filter's code after the wait did not run
        assert bottom.held == []
        assert io.outstanding_requests() == []
    assert virtual_clock.now() == pytest.approx(1)


@pytest.mark.anyio
async def test_a_driver_own_irp_comes_back_when_the_requester_times_out(virtual_clock: VirtualClock) -> None:
    """Seed 002's pattern: the driver pends the request, sends its own IRP down and waits for it."""
    results: list[int] = []

    class OwnIrp(airp.Driver):
        pass_through = True

        @airp.dispatch(IrpMajor.READ)
        async def read(self, device: DeviceObject, irp: Irp) -> int:
            assert device.lower_device is not None
            child = airp.allocate_irp(device.lower_device.stack_size)
            loc = child.next_stack_location
            loc.major = IrpMajor.READ
            loc.parameters = irp.current_stack_location.parameters
            st = await airp.call_driver_and_wait(device.lower_device, child)
            results.append(st.status)
            airp.free_irp(child)
            complete_request(irp, st.status, 0)
            return st.status

    io, _bottom = stack(OwnIrp())
    async with io.open("\\Device\\Disk") as handle:
        with pytest.raises(TimeoutError), anyio.fail_after(3):
            await handle.read(1)
        assert results == [STATUS_CANCELLED]
        assert io.outstanding_requests() == []


@pytest.mark.anyio
async def test_an_already_cancelled_requester_sends_nothing(virtual_clock: VirtualClock) -> None:
    io, bottom = stack()
    async with io.open("\\Device\\Disk") as handle:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await handle.read(1)
        assert bottom.held == []
        assert io.outstanding_requests() == []


# -- 2. a routine that raises leaves its IRP completed -----------------------------------------------


@pytest.mark.anyio
async def test_a_raising_dispatch_routine_completes_its_irp(virtual_clock: VirtualClock) -> None:
    class Broken(Opens):
        @airp.dispatch(IrpMajor.READ)
        async def read(self, device: DeviceObject, irp: Irp) -> int:
            raise BoomError("dispatch")

    io = airp.IoManager()
    io.create_device(Broken(), "\\Device\\Broken")
    async with io.open("\\Device\\Broken") as handle:
        with pytest.raises(BoomError):
            await handle.read(1)
        assert io.outstanding_requests() == []
    assert virtual_clock.now() == 0  # close did not wait for a stranded IRP


@pytest.mark.anyio
async def test_a_raising_completion_routine_still_wakes_the_requester(virtual_clock: VirtualClock) -> None:
    def broken_routine(device: DeviceObject | None, irp: Irp, context: Any) -> int:
        raise BoomError("completion routine")

    class Forwarder(airp.Driver):
        pass_through = True

        @airp.dispatch(IrpMajor.READ)
        async def read(self, device: DeviceObject, irp: Irp) -> int:
            assert device.lower_device is not None
            irp.copy_current_stack_location_to_next()
            irp.set_completion_routine(broken_routine)
            return await airp.call_driver(device.lower_device, irp)

    io, bottom = stack(Forwarder())
    async with io.open("\\Device\\Disk") as handle:
        request = await handle.read_overlapped(1)
        with pytest.raises(BoomError):
            bottom.finish(STATUS_SUCCESS, 1)  # the completer gets the routine's exception
        assert request.irp.completed
        with pytest.raises(NtStatusError) as caught:
            await request  # and the requester is not left waiting
        assert caught.value.status == STATUS_INTERNAL_ERROR
        assert isinstance(caught.value.__cause__, BoomError)
        assert io.outstanding_requests() == []


@pytest.mark.anyio
async def test_a_raising_cancel_routine_completes_the_irp_and_the_requester_waits_for_it(
    virtual_clock: VirtualClock,
) -> None:
    io, bottom = stack()
    bottom.raise_in_cancel = True
    async with io.open("\\Device\\Disk") as handle:
        with pytest.raises(BoomError), anyio.move_on_after(1):
            await handle.read(1)
        assert virtual_clock.now() == pytest.approx(1)
        assert io.outstanding_requests() == []


# -- 5. a handle on a deleted device -------------------------------------------------------------


@pytest.mark.anyio
async def test_a_deleted_device_refuses_new_io_but_still_gets_cleanup_and_close(virtual_clock: VirtualClock) -> None:
    driver = HeldReads()
    io, device = make_io(driver)
    handle = await io.open("\\Device\\Test")
    pended = await handle.read_overlapped(4)
    io.delete_device(device)
    with pytest.raises(NtStatusError) as caught:
        await handle.read(4)
    assert caught.value.status == STATUS_DELETE_PENDING
    await handle.close()
    assert driver.cleanups == 1  # the delete-pending device got the handle's CLEANUP
    with pytest.raises(NtStatusError) as cancelled:
        await pended
    assert cancelled.value.status == STATUS_CANCELLED
    assert io.outstanding_requests() == []


@pytest.mark.anyio
async def test_a_raising_cleanup_routine_does_not_skip_the_rest_of_close(virtual_clock: VirtualClock) -> None:
    class BadCleanup(HeldReads):
        closes = 0

        @airp.dispatch(IrpMajor.CLEANUP)
        async def on_cleanup(self, device: DeviceObject, irp: Irp) -> int:
            raise BoomError("cleanup")

        @airp.dispatch(IrpMajor.CLOSE)
        async def on_close(self, device: DeviceObject, irp: Irp) -> int:
            self.closes += 1
            complete_request(irp, STATUS_SUCCESS, 0)
            return STATUS_SUCCESS

    driver = BadCleanup()
    io, _ = make_io(driver)
    handle = await io.open("\\Device\\Test")
    pended = await handle.read_overlapped(4)
    with pytest.raises(BoomError):
        await handle.close()
    assert handle.file_object.closed
    assert driver.closes == 1
    assert pended.irp.completed
    assert pended.irp.status == STATUS_CANCELLED
    assert io.outstanding_requests() == []


@pytest.mark.anyio
async def test_a_cleanup_that_never_completes_costs_one_limit(virtual_clock: VirtualClock) -> None:
    airp.set_cancel_wait_limit(30)

    class Forgetful(HeldReads):
        held_cleanup: ClassVar[list[Irp]] = []

        @airp.dispatch(IrpMajor.CLEANUP)
        async def on_cleanup(self, device: DeviceObject, irp: Irp) -> int:
            irp.mark_pending()
            self.held_cleanup.append(irp)
            return STATUS_PENDING

    io, _ = make_io(Forgetful())
    handle = await io.open("\\Device\\Test")
    with pytest.warns(DriverCancelTimeoutWarning):
        await handle.close()
    assert virtual_clock.now() == pytest.approx(30)
    assert handle.file_object.closed


# -- 6. completing an IRP from inside its own completion routine -----------------------------------


def test_completing_inside_its_own_completion_routine_is_0x44() -> None:
    finals: list[Irp] = []

    def completes_again(device: DeviceObject | None, irp: Irp, context: Any) -> int:
        complete_request(irp)
        return STATUS_CONTINUE_COMPLETION

    irp = Irp(2)
    irp._final_stage = finals.append
    irp.set_next_stack_location()
    irp.set_completion_routine(completes_again)
    irp.set_next_stack_location()
    with pytest.raises(BugCheck) as caught:
        complete_request(irp, STATUS_SUCCESS, 0)
    assert caught.value.code == 0x44
    assert finals == [irp]  # the final stage ran once


def test_completing_inside_its_own_routine_then_returning_smpr_is_allowed() -> None:
    finals: list[Irp] = []

    def completes_and_stops(device: DeviceObject | None, irp: Irp, context: Any) -> int:
        complete_request(irp)
        return airp.STATUS_MORE_PROCESSING_REQUIRED

    irp = Irp(2)
    irp._final_stage = finals.append
    irp.set_next_stack_location()
    irp.set_completion_routine(completes_and_stops)
    irp.set_next_stack_location()
    complete_request(irp, STATUS_SUCCESS, 0)
    assert finals == [irp]


# -- 7. a bug check in the final stage wakes the waiter ---------------------------------------------


@pytest.mark.anyio
async def test_a_final_stage_bug_check_reaches_the_waiting_requester_at_once(virtual_clock: VirtualClock) -> None:
    io, bottom = stack()
    async with io.open("\\Device\\Disk") as handle:
        results: list[BaseException] = []

        async def requester() -> None:
            with anyio.move_on_after(1000):
                try:
                    await handle.read(2)
                except BugCheck as error:
                    results.append(error)

        async with anyio.create_task_group() as tg:
            tg.start_soon(requester)
            await anyio.sleep(1)
            with pytest.raises(BugCheck) as completer_saw:
                bottom.finish(STATUS_SUCCESS, 64)  # more than the 2-byte buffer: 0x312
        assert completer_saw.value.parameters[0] == VerifierCode.INFORMATION_TOO_LARGE
        assert results == [completer_saw.value]
        assert virtual_clock.now() == pytest.approx(1)


# -- 11. bad input gets a clear error ---------------------------------------------------------------


def test_complete_request_validates_before_it_writes() -> None:
    irp = Irp(1)
    irp.set_next_stack_location()
    with pytest.raises(TypeError, match="information"):
        complete_request(irp, 0xC000_0001, -1)
    assert irp.status == STATUS_SUCCESS
    assert not irp.completed


@pytest.mark.parametrize("call", [airp.cancel_irp, complete_request])
def test_none_is_not_an_irp(call: Any) -> None:
    with pytest.raises(TypeError, match="needs an Irp, got NoneType"):
        call(None)


@pytest.mark.anyio
async def test_request_arguments_of_the_wrong_type_are_type_errors(virtual_clock: VirtualClock) -> None:
    io, _ = make_io(HeldReads())
    async with io.open("\\Device\\Test") as handle:
        with pytest.raises(TypeError, match="read length must be an int"):
            await handle.read(None)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="control code is an int"):
            await handle.device_control(True)
        with pytest.raises(ValueError, match=">= 0"):
            await handle.read(-1)
        assert io.outstanding_requests() == []


def test_a_device_name_must_be_a_string() -> None:
    io = airp.IoManager()
    with pytest.raises(TypeError, match="device name"):
        io.create_device(HeldReads(), [])  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_returning_another_status_than_the_one_completed_with_is_0x224(virtual_clock: VirtualClock) -> None:
    class Liar(Opens):
        @airp.dispatch(IrpMajor.READ)
        async def read(self, device: DeviceObject, irp: Irp) -> int:
            complete_request(irp, STATUS_SUCCESS, 0)
            return STATUS_UNSUCCESSFUL

    io = airp.IoManager()
    io.create_device(Liar(), "\\Device\\Liar")
    async with io.open("\\Device\\Liar") as handle:
        with pytest.raises(BugCheck) as caught:
            await handle.read(1)
        assert caught.value.parameters[0] == VerifierCode.DISPATCH_STATUS_MISMATCH
        assert io.outstanding_requests() == []

