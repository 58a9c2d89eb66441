"""IoCallDriver as a coroutine chain, awaiting IRPs, forward-and-wait, cancellation (reference 3, 4, 5.8, 6).

Synchronous paths are driven with a single ``coro.send(None)`` (they must never suspend); pending
paths run on asyncio and trio, coordinated with anyio Events only.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

import anyio
import pytest
import trio
import trio.testing

from airp import (
    STATUS_BUFFER_OVERFLOW,
    STATUS_CANCELLED,
    STATUS_CONTINUE_COMPLETION,
    STATUS_INVALID_DEVICE_REQUEST,
    STATUS_PENDING,
    STATUS_SUCCESS,
    BugCheck,
    DeviceObject,
    Driver,
    IoStatus,
    Irp,
    IrpMajor,
    IrpStateError,
    NtStatus,
    attach_device,
    call_driver,
    call_driver_and_wait,
    complete_request,
    dispatch,
    forward_and_wait,
    pass_down,
    set_cancel_wait_limit,
    wait_for_irp,
)
from airp._machine._device import delete_device

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that must never suspend (synchronous dispatch) to its end."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coro.close()
    raise AssertionError("the coroutine suspended: a synchronous dispatch chain must never reach the event loop")


class Completer(Driver):
    """Completes READ and WRITE at once with ``self.status``; records what it saw."""

    def __init__(self, name: str = "completer", status: int = STATUS_SUCCESS, information: int = 0) -> None:
        super().__init__(name)
        self.status = status
        self.information = information
        self.seen: list[tuple[int, DeviceObject | None, Any]] = []

    @dispatch(IrpMajor.READ, IrpMajor.WRITE)
    async def io(self, device: DeviceObject, irp: Irp) -> int:
        self.seen.append((irp.current_location, irp.current_stack_location.device, anyio_task_id()))
        complete_request(irp, self.status, self.information)
        return self.status


class Pender(Driver):
    """Marks READ pending and keeps it; ``pended`` is set once an IRP is held."""

    def __init__(self, name: str = "pender", cancel_routine: Any = None) -> None:
        super().__init__(name)
        self.held: list[Irp] = []
        self.cancel_routine = cancel_routine
        self.pended: anyio.Event | None = None

    @dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        irp.mark_pending()
        self.held.append(irp)
        if self.cancel_routine is not None:
            irp.set_cancel_routine(self.cancel_routine)
        if self.pended is not None:
            self.pended.set()
        return STATUS_PENDING


class Filter(Driver):
    """Copies the location down, arms a routine that propagates pending, and returns what is below."""

    def __init__(self, name: str = "filter") -> None:
        super().__init__(name)
        self.routine_ran = 0

    def on_complete(self, device: DeviceObject | None, irp: Irp, context: Any) -> int:
        self.routine_ran += 1
        if irp.pending_returned:
            irp.mark_pending()
        return STATUS_CONTINUE_COMPLETION

    @dispatch(IrpMajor.READ, IrpMajor.WRITE)
    async def io(self, device: DeviceObject, irp: Irp) -> int:
        irp.copy_current_stack_location_to_next()
        irp.set_completion_routine(self.on_complete)
        assert device.lower_device is not None
        return await call_driver(device.lower_device, irp)


def anyio_task_id() -> int | None:
    try:
        return anyio.get_current_task().id
    except Exception:  # no event loop: driven by run_sync
        return None


def stack(*drivers: Driver) -> list[DeviceObject]:
    """Devices for *drivers*, bottom first, each attached on top of the previous one."""
    devices: list[DeviceObject] = []
    for driver in drivers:
        device = DeviceObject(driver, driver.name)
        if devices:
            attach_device(device, devices[-1])
        devices.append(device)
    return devices


def read_irp(device: DeviceObject, extra: int = 0) -> Irp:
    irp = Irp(device.stack_size + extra)
    irp.next_stack_location.major = IrpMajor.READ
    return irp


# -- IoCallDriver (3) -----------------------------------------------------------------------------


def test_call_driver_decrements_location_and_records_device() -> None:
    """3.2-3.4: CurrentLocation -= 1 and the new current location's DeviceObject = the target."""
    bottom = Completer()
    (device,) = stack(bottom)
    irp = read_irp(device)
    assert irp.current_location == 2
    status = run_sync(call_driver(device, irp))
    assert status == STATUS_SUCCESS
    assert bottom.seen == [(1, device, None)]
    assert irp.stack_location(1).device is device


def test_call_driver_returns_the_dispatch_status_unchanged() -> None:
    """3.5: IoCallDriver returns the dispatch routine's NTSTATUS unchanged (an int becomes an NtStatus)."""

    class Plain(Driver):
        @dispatch(IrpMajor.READ)
        async def read(self, device: DeviceObject, irp: Irp) -> int:
            complete_request(irp, STATUS_BUFFER_OVERFLOW, 2)
            return 0x8000_0005  # a plain int

    (device,) = stack(Plain())
    status = run_sync(call_driver(device, read_irp(device)))
    assert status == STATUS_BUFFER_OVERFLOW
    assert type(status) is NtStatus


def test_synchronous_three_layer_chain_never_suspends() -> None:
    """DESIGN / 3: synchronous completion never touches the event loop: one send() runs it all."""
    bottom, middle, top = Completer(information=9), Filter("middle"), Filter("top")
    devices = stack(bottom, middle, top)
    irp = read_irp(devices[-1])

    async def requester() -> IoStatus:
        status = await call_driver(devices[-1], irp)
        assert status == STATUS_SUCCESS
        return await irp

    assert run_sync(requester()) == (STATUS_SUCCESS, 9)
    assert middle.routine_ran == top.routine_ran == 1
    assert bottom.seen == [(1, devices[0], None)]
    assert irp._waiter is None


def test_synchronous_chain_has_no_checkpoint_on_trio() -> None:
    """DESIGN: no Event, no task, no checkpoint for a synchronous 3-layer call plus ``await irp``."""
    devices = stack(Completer(information=4), Filter("middle"), Filter("top"))
    irp = read_irp(devices[-1])

    async def main() -> IoStatus:
        with trio.testing.assert_no_checkpoints():
            await call_driver(devices[-1], irp)
            return await irp

    assert trio.run(main) == (STATUS_SUCCESS, 4)
    assert irp._waiter is None


@pytest.mark.anyio
async def test_dispatch_runs_on_the_requesters_own_task() -> None:
    """DESIGN: call_driver awaits the dispatch routine directly: no task per layer."""
    bottom = Completer()
    devices = stack(bottom, Filter())
    await call_driver(devices[-1], read_irp(devices[-1]))
    assert bottom.seen[0][2] == anyio.get_current_task().id


def test_out_of_stack_locations_is_bug_check_0x35() -> None:
    """3.2: CurrentLocation <= 0 after the decrement -> NO_MORE_IRP_STACK_LOCATIONS (0x35), P1 = IRP."""

    class Forwarder(Driver):
        @dispatch(IrpMajor.READ)
        async def read(self, device: DeviceObject, irp: Irp) -> int:
            assert device.lower_device is not None
            return await call_driver(device.lower_device, irp)  # no location was checked for

    devices = stack(Completer(), Forwarder())
    irp = Irp(1)  # the forwarder's device needs 2
    irp.next_stack_location.major = IrpMajor.READ
    with pytest.raises(BugCheck, match="no stack location left") as info:
        run_sync(call_driver(devices[-1], irp))
    assert info.value.code == 0x35
    assert info.value.parameters[0] is irp
    assert info.value.device is devices[0]


def test_call_driver_with_a_non_irp_is_bug_check_c9_03() -> None:
    """10.2: IoCallDriver given a non-IRP -> 0xC9 / 0x03."""
    (device,) = stack(Completer())
    with pytest.raises(BugCheck) as info:
        run_sync(call_driver(device, object()))  # type: ignore[arg-type]
    assert (info.value.code, info.value.parameters[0]) == (0xC9, 0x03)


@pytest.mark.parametrize("bad", ["not a device", 42, Driver()], ids=["str", "int", "driver"])
def test_call_driver_with_an_invalid_device_is_bug_check_c9_04(bad: object) -> None:
    """10.2: IoCallDriver given an invalid device object -> 0xC9 / 0x04."""
    irp = read_irp(DeviceObject(Driver()))
    with pytest.raises(BugCheck, match="not a live DeviceObject") as info:
        run_sync(call_driver(bad, irp))  # type: ignore[arg-type]
    assert (info.value.code, info.value.parameters[0]) == (0xC9, 0x04)
    assert irp.current_location == 2


def test_call_driver_with_a_deleted_device_is_bug_check_c9_04() -> None:
    """10.2: a deleted device is not a valid target."""
    (device,) = stack(Completer())
    delete_device(device)
    with pytest.raises(BugCheck) as info:
        run_sync(call_driver(device, read_irp(device)))
    assert (info.value.code, info.value.parameters[0]) == (0xC9, 0x04)


def test_call_driver_with_no_device_is_bug_check_c9_204() -> None:
    """10.3: NULL device object -> 0xC9 / 0x204."""
    irp = Irp(1)
    with pytest.raises(BugCheck) as info:
        run_sync(call_driver(None, irp))  # type: ignore[arg-type]
    assert (info.value.code, info.value.parameters[0]) == (0xC9, 0x204)


def test_call_driver_with_cancel_routine_set_is_bug_check_c9_203() -> None:
    """10.3 / 6.3: a driver must disarm its cancel routine before passing the IRP on -> 0xC9 / 0x203."""
    (device,) = stack(Completer())
    irp = read_irp(device)
    irp.set_cancel_routine(lambda device, irp: None)
    with pytest.raises(BugCheck, match="still set") as info:
        run_sync(call_driver(device, irp))
    assert (info.value.code, info.value.parameters[0]) == (0xC9, 0x203)
    assert irp.current_location == 2  # not moved


def test_call_driver_on_a_completed_irp_is_refused() -> None:
    """1.1: a completed IRP (CurrentLocation = StackCount + 2) cannot be sent again without reuse."""
    (device,) = stack(Completer())
    irp = read_irp(device)
    run_sync(call_driver(device, irp))
    with pytest.raises(IrpStateError, match="it has completed"):
        run_sync(call_driver(device, irp))


@pytest.mark.parametrize("garbage", [None, "STATUS_SUCCESS", True, 0.0], ids=["None", "str", "bool", "float"])
def test_dispatch_returning_non_status_is_type_error_naming_the_driver(garbage: object) -> None:
    """3.5: a dispatch routine returns an NTSTATUS; anything else is a TypeError naming the driver."""

    class Broken(Driver):
        @dispatch(IrpMajor.READ)
        async def read(self, device: DeviceObject, irp: Irp) -> Any:
            complete_request(irp, STATUS_SUCCESS)
            return garbage

    (device,) = stack(Broken())
    with pytest.raises(TypeError, match=r"the dispatch routine of <Driver Broken>"):
        run_sync(call_driver(device, read_irp(device)))


def test_unhandled_major_answers_invalid_device_request() -> None:
    """DESIGN: a major the driver does not handle completes with STATUS_INVALID_DEVICE_REQUEST."""
    (device,) = stack(Completer())
    irp = Irp(1)
    irp.next_stack_location.major = IrpMajor.FLUSH_BUFFERS
    status = run_sync(call_driver(device, irp))
    assert status == STATUS_INVALID_DEVICE_REQUEST
    assert irp.completed
    assert irp.io_status == (STATUS_INVALID_DEVICE_REQUEST, 0)


def test_pass_through_driver_skips_unhandled_majors_down() -> None:
    """8.2 / 4: a pass-through filter skips what it does not handle; the lower driver gets the same location."""
    seen: list[int] = []

    class PassThrough(Driver):
        pass_through = True

        @dispatch(IrpMajor.READ)
        async def read(self, device: DeviceObject, irp: Irp) -> int:
            seen.append(irp.current_location)
            complete_request(irp, STATUS_BUFFER_OVERFLOW)
            return STATUS_BUFFER_OVERFLOW

    bottom = Completer()
    devices = stack(bottom, PassThrough("pass"))
    write = Irp(devices[-1].stack_size)
    write.next_stack_location.major = IrpMajor.WRITE
    assert run_sync(call_driver(devices[-1], write)) == STATUS_SUCCESS
    assert bottom.seen == [(2, devices[0], None)]  # skipped: location 2, as the filter had it
    assert write.stack_location(1).device is None
    read = read_irp(devices[-1])
    assert run_sync(call_driver(devices[-1], read)) == STATUS_BUFFER_OVERFLOW
    assert seen == [2]
    flush = Irp(devices[-1].stack_size)
    flush.next_stack_location.major = IrpMajor.FLUSH_BUFFERS
    assert run_sync(call_driver(devices[-1], flush)) == STATUS_INVALID_DEVICE_REQUEST


def test_pass_down_without_a_lower_device_is_refused() -> None:
    """4: skipping needs a device below to send to."""
    (device,) = stack(Completer())
    irp = read_irp(device)
    irp.set_next_stack_location()
    with pytest.raises(IrpStateError, match="not attached to a lower device"):
        run_sync(pass_down(device, irp))


# -- awaiting IRPs -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_pended_irp_is_awaited_through_one_lazily_created_event() -> None:
    """DESIGN: the Event exists only once somebody waits on a pending IRP, and is shared by all waiters."""
    pender = Pender()
    (device,) = stack(pender)
    irp = read_irp(device)
    assert await call_driver(device, irp) == STATUS_PENDING
    assert irp._waiter is None
    results: list[tuple[str, IoStatus]] = []

    async def waiter(label: str, ready: anyio.Event) -> None:
        ready.set()
        results.append((label, await irp))

    async with anyio.create_task_group() as tg:
        first = anyio.Event()
        tg.start_soon(waiter, "first", first)
        await first.wait()
        event = irp._waiter
        # One waiter object with anyio.Event's set()/is_set() (airp._shell._waiter), not yet set.
        assert event is not None
        assert not event.is_set()  # type: ignore[attr-defined]
        second = anyio.Event()
        tg.start_soon(waiter, "second", second)
        await second.wait()
        assert irp._waiter is event
        assert results == []
        complete_request(pender.held[0], STATUS_SUCCESS, 3)
    assert sorted(results) == [("first", (STATUS_SUCCESS, 3)), ("second", (STATUS_SUCCESS, 3))]
    assert irp._waiter is event
    assert event.is_set()  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_one_waiter_cancelled_does_not_wake_or_break_the_others() -> None:
    """Two requesters await one pended IRP whose driver ignores cancel; one is cancelled.

    The cancelled one cancels the IRP and keeps waiting, shielded, on the same waiter (reference
    6.6); the other is neither woken early nor broken by that cancellation: when the driver
    completes the IRP both wake, the cancelled one with its cancellation, the other with the status.
    """
    set_cancel_wait_limit(None)  # no limit: the cancelled requester waits for the driver
    pender = Pender()
    (device,) = stack(pender)
    irp = read_irp(device)
    assert await call_driver(device, irp) == STATUS_PENDING
    outcome: dict[str, object] = {}

    async def patient() -> None:
        outcome["patient"] = await irp

    async def impatient(scope: anyio.CancelScope) -> None:
        with scope:
            await irp
            outcome["impatient"] = "not cancelled"
        outcome["impatient"] = "cancelled" if scope.cancelled_caught else "finished"

    scope = anyio.CancelScope()
    async with anyio.create_task_group() as tg:
        tg.start_soon(patient)
        tg.start_soon(impatient, scope)
        await anyio.wait_all_tasks_blocked()
        scope.cancel()
        await anyio.wait_all_tasks_blocked()
        assert irp.cancel  # the cancelled requester cancelled the IRP ...
        assert outcome == {}  # ... and both still wait: the driver has not completed it
        complete_request(pender.held[0], STATUS_SUCCESS, 5)
    assert outcome == {"patient": (STATUS_SUCCESS, 5), "impatient": "cancelled"}


@pytest.mark.anyio
async def test_irp_completed_before_anyone_waits_needs_no_event() -> None:
    """DESIGN: a pended IRP completed before anybody awaits it is awaited without an Event."""
    pender = Pender()
    (device,) = stack(pender)
    irp = read_irp(device)
    assert await call_driver(device, irp) == STATUS_PENDING
    complete_request(pender.held[0], STATUS_SUCCESS, 1)
    assert await irp == (STATUS_SUCCESS, 1)
    assert await wait_for_irp(irp) == (STATUS_SUCCESS, 1)
    assert irp._waiter is None


@pytest.mark.anyio
async def test_awaiting_pending_irp_in_cancelled_scope_cancels_it() -> None:
    """6.1 / 6.6: cancelling the waiter calls IoCancelIrp (the cancel routine runs), waits, re-raises."""
    cancel_calls: list[DeviceObject | None] = []

    def on_cancel(device: DeviceObject | None, irp: Irp) -> None:
        cancel_calls.append(device)
        pender.held.remove(irp)
        complete_request(irp, STATUS_CANCELLED)

    pender = Pender(cancel_routine=on_cancel)
    pender.pended = anyio.Event()
    (device,) = stack(pender)
    irp = read_irp(device)
    scopes: list[anyio.CancelScope] = []
    reached: list[str] = []

    async def requester() -> None:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            await call_driver(device, irp)
            await irp
            reached.append("after await")  # must not run: the cancellation propagates
        reached.append(f"caught={scope.cancelled_caught}")

    async with anyio.create_task_group() as tg:
        tg.start_soon(requester)
        await pender.pended.wait()
        scopes[0].cancel()
    assert cancel_calls == [device]
    assert irp.cancel is True
    assert irp.cancel_routine is None
    assert irp.io_status == (STATUS_CANCELLED, 0)
    assert reached == ["caught=True"]


@pytest.mark.anyio
async def test_cancelled_waiter_waits_for_the_driver_to_complete() -> None:
    """6.6 / 6.7: cancel never shortens the wait: the waiter stays until the IRP really comes back."""
    cancel_requested = anyio.Event()
    done = anyio.Event()

    def on_cancel(device: DeviceObject | None, irp: Irp) -> None:
        cancel_requested.set()  # the driver will finish the request later (it may even succeed)

    pender = Pender(cancel_routine=on_cancel)
    pender.pended = anyio.Event()
    (device,) = stack(pender)
    irp = read_irp(device)
    scopes: list[anyio.CancelScope] = []
    reached: list[str] = []

    async def requester() -> None:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            await call_driver(device, irp)
            await irp
            reached.append("after await")
        reached.append(f"caught={scope.cancelled_caught}")
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(requester)
        await pender.pended.wait()
        scopes[0].cancel()
        await cancel_requested.wait()
        assert not done.is_set()
        assert not irp.completed
        assert reached == []
        complete_request(pender.held[0], STATUS_SUCCESS, 8)  # the driver ignored the cancel
        await done.wait()
    assert irp.io_status == (STATUS_SUCCESS, 8)
    assert reached == ["caught=True"]


# -- forward and wait (4 IoForwardIrpSynchronously, 5.8) -----------------------------------------------


class SyncForwarder(Driver):
    """Forwards synchronously, then finishes its own work and completes the IRP itself."""

    def __init__(self) -> None:
        super().__init__("sync-forwarder")
        self.observed: list[tuple[IoStatus, int, bool]] = []

    @dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        assert device.lower_device is not None
        result = await forward_and_wait(device.lower_device, irp)
        self.observed.append((result, irp.current_location, irp.completed))
        complete_request(irp, result.status, result.information + 100)
        return result.status


def test_forward_and_wait_with_synchronous_lower_driver_never_suspends() -> None:
    """4 / 5.8: the SMPR routine hands the IRP back; no event is needed when the lower completed at once."""
    devices = stack(Completer(information=5), SyncForwarder())
    forwarder = devices[-1].driver
    assert isinstance(forwarder, SyncForwarder)
    irp = read_irp(devices[-1])
    assert run_sync(call_driver(devices[-1], irp)) == STATUS_SUCCESS
    assert forwarder.observed == [((STATUS_SUCCESS, 5), 2, False)]  # back at its own location, not completed
    assert irp.io_status == (STATUS_SUCCESS, 105)
    assert irp.completed
    assert irp.pending_returned is False


@pytest.mark.anyio
async def test_forward_and_wait_with_pending_lower_driver() -> None:
    """4 / 5.8: the lower driver pends; the forwarder waits, gets the IRP back, completes it again."""
    pender = Pender()
    pender.pended = anyio.Event()
    devices = stack(pender, SyncForwarder())
    forwarder = devices[-1].driver
    assert isinstance(forwarder, SyncForwarder)
    irp = read_irp(devices[-1])
    returned: list[NtStatus] = []

    async def requester() -> None:
        returned.append(await call_driver(devices[-1], irp))

    async with anyio.create_task_group() as tg:
        tg.start_soon(requester)
        await pender.pended.wait()
        assert forwarder.observed == []
        complete_request(pender.held[0], STATUS_BUFFER_OVERFLOW, 2)
    assert forwarder.observed == [((STATUS_BUFFER_OVERFLOW, 2), 2, False)]
    assert returned == [STATUS_BUFFER_OVERFLOW]  # the forwarder waited, so it returns the real status
    assert irp.io_status == (STATUS_BUFFER_OVERFLOW, 102)
    assert irp.pending_returned is False  # SMPR stopped propagation; the forwarder never marked pending


def test_call_driver_and_wait_hands_a_driver_allocated_irp_back_to_its_creator() -> None:
    """5.8: the creator's SMPR routine keeps the IRP: the walk stops at StackCount + 1, not completed."""
    (device,) = stack(Completer(information=6))
    irp = read_irp(device)
    result = run_sync(call_driver_and_wait(device, irp))
    assert result == (STATUS_SUCCESS, 6)
    assert not irp.completed
    assert irp.current_location == irp.stack_count + 1


@pytest.mark.anyio
async def test_call_driver_and_wait_with_pending_lower_driver() -> None:
    """5.8 / 6.7: the creator waits for the hand-back of a pended IRP, then owns it again."""
    pender = Pender()
    pender.pended = anyio.Event()
    (device,) = stack(pender)
    irp = read_irp(device)
    results: list[IoStatus] = []

    async def creator() -> None:
        results.append(await call_driver_and_wait(device, irp))

    async with anyio.create_task_group() as tg:
        tg.start_soon(creator)
        await pender.pended.wait()
        assert results == []
        complete_request(pender.held[0], STATUS_SUCCESS, 11)
    assert results == [(STATUS_SUCCESS, 11)]
    assert not irp.completed
    assert irp.current_location == 2
    assert irp.pending_returned is True  # as the creator's routine saw it


@pytest.mark.anyio
async def test_call_driver_and_wait_cancelled_keeps_the_irp_with_its_creator() -> None:
    """6.7: on cancel the creator cancels the IRP, waits for the hand-back, then the cancellation propagates."""

    def on_cancel(device: DeviceObject | None, irp: Irp) -> None:
        complete_request(irp, STATUS_CANCELLED)

    pender = Pender(cancel_routine=on_cancel)
    pender.pended = anyio.Event()
    (device,) = stack(pender)
    irp = read_irp(device)
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:

            async def cancel_when_pended() -> None:
                assert pender.pended is not None
                await pender.pended.wait()
                scope.cancel()

            tg.start_soon(cancel_when_pended)
            await call_driver_and_wait(device, irp)
    assert scope.cancelled_caught
    assert irp.status == STATUS_CANCELLED
    assert not irp.completed
    assert irp.current_location == irp.stack_count + 1
