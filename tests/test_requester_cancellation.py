"""The anyio mapping of cancellation (reference 6.6): a requester awaiting an IRP in a cancelled scope.

The requester cancels the IRP, waits shielded (bounded by the cancel-wait limit) for its driver to
complete it, then raises the cancellation, or ``TimeoutError`` for ``fail_after``.
"""

from __future__ import annotations

import math

import anyio
import pytest
from _cancel_drivers import Deaf, HeldReads, make_io

import airp
from airp import (
    STATUS_CANCELLED,
    STATUS_CONTINUE_COMPLETION,
    STATUS_SUCCESS,
    DeviceObject,
    DriverCancelTimeoutWarning,
    Irp,
    IrpMajor,
    NtStatusError,
)
from airp.testing import VirtualClock, virtual_anyio_backend, wait_until_quiet

# -- the anyio mapping: a requester in a cancelled scope --------------------------------------


@pytest.mark.anyio
async def test_fail_after_cancels_the_irp_and_raises_timeout(virtual_clock: VirtualClock) -> None:
    driver = HeldReads()
    io, _ = make_io(driver)
    async with await io.open("\\Device\\Test") as handle:
        with pytest.raises(TimeoutError):
            with anyio.fail_after(3):
                await handle.read(8)
        assert virtual_clock.now() == pytest.approx(3)
        assert len(driver.queue) == 0
        assert io.outstanding_requests() == []


@pytest.mark.anyio
async def test_move_on_after_cancels_and_reports_cancelled_status(virtual_clock: VirtualClock) -> None:
    driver = HeldReads()
    io, _ = make_io(driver)
    async with await io.open("\\Device\\Test") as handle:
        request = await handle.read_overlapped(8)
        with anyio.move_on_after(2) as scope:
            await request
        assert scope.cancelled_caught
        assert request.irp.completed
        assert request.irp.status == STATUS_CANCELLED
        with pytest.raises(NtStatusError) as info:
            request.result()
        assert info.value.status == STATUS_CANCELLED


@pytest.mark.anyio
async def test_task_cancel_cancels_the_irp_it_awaits(virtual_clock: VirtualClock) -> None:
    driver = HeldReads()
    io, _ = make_io(driver)
    outcome: list[str] = []
    async with await io.open("\\Device\\Test") as handle:

        async def reader() -> None:
            try:
                await handle.read(4)
            except anyio.get_cancelled_exc_class():
                outcome.append("cancelled")
                raise

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            await wait_until_quiet()
            assert len(driver.queue) == 1
            irp = next(iter(driver.queue))
            tg.cancel_scope.cancel()
        assert outcome == ["cancelled"]
        assert irp.completed
        assert irp.status == STATUS_CANCELLED
    assert virtual_clock.now() == 0.0


@pytest.mark.anyio
async def test_driver_that_completes_late_keeps_the_requester_waiting(virtual_clock: VirtualClock) -> None:
    driver = Deaf()
    io, _ = make_io(driver)
    async with await io.open("\\Device\\Test") as handle, anyio.create_task_group() as tg:

        async def hardware() -> None:
            await anyio.sleep(10)  # finishes the transfer regardless of the cancel
            driver.release_all(STATUS_SUCCESS)

        tg.start_soon(hardware)
        with pytest.raises(TimeoutError):
            with anyio.fail_after(1):
                await handle.read(4)
        # Cancel never shortens the wait for the IRP to come back (6.6).
        assert virtual_clock.now() == pytest.approx(10)


@pytest.mark.anyio
async def test_wait_after_cancel_is_bounded_and_disowns(virtual_clock: VirtualClock) -> None:
    driver = Deaf()
    io, device = make_io(driver)
    previous = airp.set_cancel_wait_limit(20)
    assert previous == airp.DEFAULT_CANCEL_WAIT_LIMIT == 300
    assert airp.get_cancel_wait_limit() == 20
    async with await io.open("\\Device\\Test") as handle:
        request = await handle.read_overlapped(4)
        with pytest.warns(DriverCancelTimeoutWarning, match="Test") as record, pytest.raises(TimeoutError):
            with anyio.fail_after(1):
                await request
        assert virtual_clock.now() == pytest.approx(21)
        warning = record[0].message
        assert isinstance(warning, DriverCancelTimeoutWarning)
        assert warning.irp is request.irp
        assert warning.device is device
        assert warning.limit == 20
        assert "deaf" in str(warning)
        assert airp.is_disowned(request.irp)
        assert request.irp.owner is None
        assert not request.irp.completed
        # The driver completes it eventually: nobody is waiting, nothing breaks.
        driver.release_all(STATUS_SUCCESS)
        assert request.irp.completed


@pytest.mark.anyio
async def test_default_limit_is_five_virtual_minutes(virtual_clock: VirtualClock) -> None:
    assert airp.get_cancel_wait_limit() == 300.0
    driver = Deaf()
    io, _ = make_io(driver)
    async with await io.open("\\Device\\Test") as handle:
        with pytest.warns(DriverCancelTimeoutWarning), anyio.move_on_after(5):
            await handle.read(1)
        assert virtual_clock.now() == pytest.approx(305)
        driver.release_all()


@pytest.mark.anyio
async def test_cancel_wait_limit_validation(virtual_clock: VirtualClock) -> None:
    with pytest.raises(ValueError, match=">= 0"):
        airp.set_cancel_wait_limit(-1)
    with pytest.raises(ValueError, match=">= 0"):
        airp.set_cancel_wait_limit(math.nan)
    with pytest.raises(TypeError):
        airp.set_cancel_wait_limit("5")  # type: ignore[arg-type]
    airp.set_cancel_wait_limit(None)
    assert airp.get_cancel_wait_limit() == math.inf
    airp.set_cancel_wait_limit(0)
    assert airp.get_cancel_wait_limit() == 0


def test_cancel_wait_limit_is_per_run() -> None:
    async def set_it() -> float:
        previous = airp.set_cancel_wait_limit(1)
        return previous

    for backend in ("asyncio", "trio"):
        name, options = virtual_anyio_backend(backend)
        assert anyio.run(set_it, backend=name, backend_options=options) == 300.0
        assert anyio.run(set_it, backend=name, backend_options=options) == 300.0


@pytest.mark.anyio
async def test_call_driver_and_wait_gets_the_irp_back_after_cancel(virtual_clock: VirtualClock) -> None:
    driver = HeldReads()
    io, device = make_io(driver)
    irp = io.new_traced_irp(device.stack_size)
    loc = irp.next_stack_location
    loc.major = IrpMajor.READ
    loc.parameters = airp.ReadWriteParameters(4)
    irp.user_buffer = bytearray(4)
    with anyio.move_on_after(4) as scope:
        await airp.call_driver_and_wait(device, irp)
    assert scope.cancelled_caught
    # Handed back (STATUS_MORE_PROCESSING_REQUIRED): the caller owns it, not completed.
    assert not irp.completed
    assert irp.status == STATUS_CANCELLED
    assert irp.current_location == irp.stack_count + 1


@pytest.mark.anyio
async def test_cancelled_scope_after_completion_does_not_cancel_the_irp(virtual_clock: VirtualClock) -> None:
    driver = HeldReads()
    io, _ = make_io(driver)
    async with await io.open("\\Device\\Test") as handle:
        request = await handle.read_overlapped(4)
        assert driver.push(b"abcd")
        with anyio.CancelScope() as scope:
            scope.cancel()
            # Already complete: no checkpoint, the result is there, the IRP was not cancelled.
            assert await request == b"abcd"
        assert request.irp.cancel is False



class Filter(airp.Driver):
    """A filter that forwards reads with a completion routine (keeps the pending mark)."""

    pass_through = True

    def __init__(self) -> None:
        super().__init__("filter")
        self.routine_saw: list[tuple[int, bool]] = []

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        irp.copy_current_stack_location_to_next()
        irp.set_completion_routine(self._done)
        assert device.lower_device is not None
        return await airp.call_driver(device.lower_device, irp)

    def _done(self, device: DeviceObject | None, irp: Irp, ctx: object) -> int:
        self.routine_saw.append((int(irp.status), irp.cancel))
        if irp.pending_returned:
            irp.mark_pending()
        return STATUS_CONTINUE_COMPLETION


@pytest.mark.anyio
async def test_cancel_reaches_the_driver_below_a_filter(virtual_clock: VirtualClock) -> None:
    io = airp.IoManager()
    lower_driver = HeldReads()
    lower = io.create_device(lower_driver, None)
    flt = Filter()
    top = io.create_device(flt, "\\Device\\Filtered")
    airp.attach_device(top, lower)
    async with await io.open("\\Device\\Filtered") as handle:
        with anyio.move_on_after(1):
            await handle.read(4)
        assert flt.routine_saw == [(STATUS_CANCELLED, True)]
        assert len(lower_driver.queue) == 0


@pytest.mark.anyio
async def test_shielded_requester_is_not_cancelled(virtual_clock: VirtualClock) -> None:
    driver = HeldReads()
    io, _ = make_io(driver)
    async with await io.open("\\Device\\Test") as handle, anyio.create_task_group() as tg:

        async def later() -> None:
            await anyio.sleep(5)
            driver.push(b"late")

        tg.start_soon(later)
        with anyio.move_on_after(1) as outer:
            with anyio.CancelScope(shield=True):
                assert await handle.read(4) == b"late"
        assert outer.cancel_called
        assert virtual_clock.now() == pytest.approx(5)


@pytest.mark.anyio
async def test_cancellation_exception_is_the_backends_own(virtual_clock: VirtualClock) -> None:
    driver = HeldReads()
    io, _ = make_io(driver)
    caught: list[type[BaseException]] = []
    async with await io.open("\\Device\\Test") as handle:
        with anyio.CancelScope() as scope:
            scope.deadline = anyio.current_time() + 1
            try:
                await handle.read(4)
            except BaseException as exc:
                caught.append(type(exc))
                raise
        assert caught == [anyio.get_cancelled_exc_class()]


@pytest.mark.anyio
async def test_nested_timeouts_the_outer_one_wins(virtual_clock: VirtualClock) -> None:
    driver = HeldReads()
    io, _ = make_io(driver)
    async with await io.open("\\Device\\Test") as handle:
        inner = anyio.CancelScope()
        inner.deadline = anyio.current_time() + 10

        async def read() -> None:
            with anyio.fail_after(2), inner:
                await handle.read(4)

        with pytest.raises(TimeoutError):
            await read()
        assert not inner.cancelled_caught
        assert virtual_clock.now() == pytest.approx(2)


@pytest.mark.anyio
async def test_many_requesters_one_cancelled(virtual_clock: VirtualClock) -> None:
    driver = HeldReads()
    io, _ = make_io(driver)
    results: dict[int, object] = {}
    async with await io.open("\\Device\\Test") as handle:
        scopes = [anyio.CancelScope() for _ in range(3)]

        async def reader(i: int) -> None:
            with scopes[i]:
                try:
                    results[i] = await handle.read(3)
                except NtStatusError as exc:
                    results[i] = exc.status
                return
            results[i] = "cancelled"

        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(reader, i)
            await wait_until_quiet()
            scopes[1].cancel()
            await wait_until_quiet()
            assert driver.push(b"one")
            assert driver.push(b"two")
            assert not driver.push(b"three")
    # trio and asyncio start tasks in different orders: which reader gets which word varies.
    assert results[1] == "cancelled"
    assert sorted([results[0], results[2]]) == [b"one", b"two"]  # type: ignore[type-var]


@pytest.mark.anyio
async def test_infinite_limit_waits_for_the_driver(virtual_clock: VirtualClock) -> None:
    airp.set_cancel_wait_limit(None)
    assert airp.get_cancel_wait_limit() == math.inf
    driver = Deaf()
    io, _ = make_io(driver)
    async with await io.open("\\Device\\Test") as handle, anyio.create_task_group() as tg:

        async def hardware() -> None:
            await anyio.sleep(86_400)
            driver.release_all(STATUS_SUCCESS)

        tg.start_soon(hardware)
        with anyio.move_on_after(1):
            await handle.read(1)
        assert virtual_clock.now() == pytest.approx(86_400)


@pytest.mark.anyio
async def test_disowned_irp_in_call_driver_and_wait_releases_the_caller(virtual_clock: VirtualClock) -> None:
    airp.set_cancel_wait_limit(3)
    driver = Deaf()
    io, device = make_io(driver)
    irp = io.new_traced_irp(device.stack_size)
    irp.next_stack_location.major = IrpMajor.READ
    with pytest.warns(DriverCancelTimeoutWarning, match="deaf"), anyio.move_on_after(1) as scope:
        await airp.call_driver_and_wait(device, irp)
    assert scope.cancelled_caught
    assert airp.is_disowned(irp)
    assert virtual_clock.now() == pytest.approx(4)
    driver.release_all()


@pytest.mark.anyio
async def test_zero_limit_disowns_at_once(virtual_clock: VirtualClock) -> None:
    airp.set_cancel_wait_limit(0)
    driver = Deaf()
    io, _ = make_io(driver)
    async with await io.open("\\Device\\Test") as handle:
        with pytest.warns(DriverCancelTimeoutWarning), anyio.move_on_after(2):
            await handle.read(1)
        assert virtual_clock.now() == pytest.approx(2)
        driver.release_all()


def test_limit_outside_a_run_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        airp.get_cancel_wait_limit()
